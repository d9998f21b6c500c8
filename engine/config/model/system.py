"""`system`, `ip_groups`, `domain_groups`: who the relay is and the names it gives to peers."""

from __future__ import annotations

from typing import Literal

from engine.config.model.base import DomainPattern, F, Hostname, IPAddress, Model, Name
from engine.config.units import DurationField, SizeField


class Listener(Model):
    """An SMTP port the relay listens on."""

    name: Name = F(..., "Name of the listener, used in logs and metrics", "mx", "outbound")
    address: IPAddress = F(..., "IP address to listen on", "127.0.0.1", "::1")
    port: int = F(..., "TCP port", 2525, 25, ge=1, le=65535)
    reuse_port: bool = F(
        False,
        "Bind with SO_REUSEPORT, so several relay processes on one host can share this port "
        "(the kernel spreads connections between them)",
        False,
    )
    starttls: Literal["offered", "required"] = F(
        "offered",
        "STARTTLS on this listener: `offered` (clients may use it) or `required` "
        "(MAIL FROM is refused with 530 until the client has issued STARTTLS)",
        "offered",
        "required",
    )


class Endpoint(Model):
    """An HTTP endpoint the relay serves (admin API, portal, metrics)."""

    address: IPAddress = F("127.0.0.1", "IP address to listen on (loopback by default)", "127.0.0.1")
    port: int = F(..., "TCP port", 8025, ge=1, le=65535)


class DNS(Model):
    """The resolver used for MX and address lookups."""

    nameservers: list[IPAddress] = F(
        ...,
        "IP addresses of the DNS servers to ask (instead of /etc/resolv.conf)",
        ["127.0.0.1"],
        min_length=1,
    )
    port: int = F(53, "UDP/TCP port of the DNS servers", 53, 5353, ge=1, le=65535)
    timeout: DurationField = F("5s", "How long one lookup may take", "5s", validate_default=True)


class System(Model):
    """Identity, listeners and local resources of the relay."""

    fqdn: Hostname = F(
        ...,
        "Fully qualified domain name of the relay; the certificate's CN must equal it",
        "mail.example.com",
    )
    internal_domains: list[DomainPattern] = F(
        [],
        "Domains of the organisation: mail between them is internal, to others outbound, "
        "from others inbound (`*.example.com` matches subdomains)",
        ["example.com", "*.corp.example.com"],
    )
    listeners: list[Listener] = F(
        ..., "SMTP listeners", [{"name": "mx", "address": "127.0.0.1", "port": 2525}], min_length=1
    )
    message_size_limit: SizeField = F(
        "50MB",
        "Largest message accepted (SIZE extension and DATA); KB/MB/GB are decimal, KiB/MiB/GiB binary",
        "50MB",
        "25MiB",
        validate_default=True,
    )
    data_dir: str = F(
        "./var",
        "Directory for the queue (SQLite), certificates, portal store and audit log, relative to the config",
        "./var",
        "/var/lib/sealrelay",
    )
    admin: Endpoint = F(
        Endpoint(port=8025),
        "Admin API (token in <data_dir>/admin.token)",
        {"address": "127.0.0.1", "port": 8025},
    )
    portal: Endpoint = F(
        Endpoint(port=8443),
        "Secure portal and password registration",
        {"address": "127.0.0.1", "port": 8443},
    )
    metrics: Endpoint = F(Endpoint(port=9025), "Prometheus /metrics", {"address": "127.0.0.1", "port": 9025})
    dns: DNS | None = F(
        None,
        "DNS resolver; when absent the system's resolver is used",
        {"nameservers": ["127.0.0.1"], "port": 5353},
    )
