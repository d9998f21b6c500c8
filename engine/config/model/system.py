"""`system`, `ip_groups`, `domain_groups`: who the relay is and the names it gives to peers."""

from __future__ import annotations

from typing import Literal

from engine.config.model.base import DomainPattern, F, Hostname, IPAddress, Model, Name, Secret
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
    dnssec: bool = F(
        False,
        "The servers validate DNSSEC and are trusted to say so (the AD bit): what the `dane` level needs. "
        "Name only a validating resolver on this host or a trusted network (RFC 7672 §2.1)",
        True,
    )


class Limits(Model):
    """What one SMTP client may cost the relay: connections, time, commands, recipients, headers.

    Over a limit the client gets an SMTP reply that says which (421 and the connection closed
    for the connection, time and command limits; 452 or 552 for a message) and other sessions
    are unaffected. Each connection is held to the limits of the config version that accepted it.
    """

    max_connections: int = F(
        500,
        "SMTP connections open at once, over all listeners; a connection beyond it gets "
        "`421 4.3.2` and is closed (Postfix: default_process_limit = 100 smtpd processes, "
        "the rest wait in the listen backlog)",
        500,
        ge=1,
    )
    max_connections_per_client: int = F(
        50,
        "SMTP connections open at once from one client IP address; one beyond it gets "
        "`421 4.7.0 too many connections from <address>` and is closed. Applies to internal "
        "servers too (Postfix: smtpd_client_connection_count_limit = 50)",
        50,
        ge=1,
    )
    idle_timeout: DurationField = F(
        "5m",
        "How long the relay waits for a client's next command, or within DATA for more of the "
        "message, before it answers `421 4.4.2` and closes the connection; RFC 5321 4.5.3.2.7 "
        "asks for at least 5 minutes (Postfix: smtpd_timeout = 300s)",
        "5m",
        validate_default=True,
    )
    max_command_repeats: int = F(
        100,
        "How often one session may send the same command other than MAIL, RCPT and DATA "
        "(NOOP, RSET, EHLO, HELO, VRFY, HELP, ...); the next one gets `421 4.7.0` and the "
        "connection is closed. Unlike Postfix's count it is not reset by a delivered message "
        "(Postfix: smtpd_junk_command_limit = 100)",
        100,
        ge=1,
    )
    max_errors: int = F(
        20,
        "Error replies (4xx and 5xx) one session may get without a message being accepted; the "
        "next error is followed by `421 4.7.0 too many errors` and the connection is closed. "
        "Recipients over `max_recipients` do not count (Postfix: smtpd_hard_error_limit = 20)",
        20,
        ge=1,
    )
    max_recipients: int = F(
        1000,
        "Recipients of one message; each one over it gets `452 4.5.3` (the client sends it "
        "again in a later transaction), and once a session has sent as many again over the limit "
        "it is closed with `421 4.5.3` (Postfix: smtpd_recipient_limit = 1000, "
        "smtpd_recipient_overshoot_limit = 1000)",
        1000,
        ge=1,
    )
    max_header_size: SizeField = F(
        "256KiB",
        "Size of a message's header section (all header fields together); a message with a "
        "larger one is refused with `552 5.3.4` (Postfix: header_size_limit = 102400 bytes, "
        "per header field)",
        "256KiB",
        validate_default=True,
    )
    max_header_count: int = F(
        1000,
        "Header fields in one message; a message with more is refused with `552 5.3.4` "
        "(Postfix has no such limit; its hopcount_limit = 50 Received headers is enforced apart)",
        1000,
        ge=1,
    )


class DKIMKey(Model):
    """A DKIM signing key: the domain and selector its public key is published under."""

    domain: Hostname = F(..., "Signing domain (`d=`); the contact address's domain is usual", "example.com")
    selector: str = F(
        ...,
        "Selector (`s=`): the public key is the TXT record `<selector>._domainkey.<domain>`, best with "
        "`s=tlsrpt` (RFC 8460 §5.3)",
        "tlsrpt2026",
        pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$",
    )
    private_key: Secret = F(
        ..., "The private key, PEM (RSA of at least 1024 bits, or Ed25519)", {"file": "secrets/tlsrpt-dkim.pem"}
    )


class TLSReporting(Model):
    """TLS-RPT (RFC 8460): daily reports to recipient domains about the TLS of our deliveries.

    Off by default: a report tells the domain's operator which of our sessions to their MX hosts
    failed and why; it loosens nothing about how mail is sent."""

    enabled: bool = F(
        False,
        "Record the outcome of each TLS session to a domain's MX hosts and send each domain that "
        "publishes a `_smtp._tls` TXT record a daily report (mailto through the queue, or HTTPS POST)",
        True,
    )
    organization: str | None = F(
        None,
        "`organization-name` of the reports (RFC 8460 §4.4); the relay's fqdn when absent",
        "Example Corp",
        min_length=1,
        max_length=200,
    )
    contact: str | None = F(
        None,
        "`contact-info` of the reports and the From of mailed reports; `postmaster@<fqdn>` when absent",
        "tls-reports@example.com",
        pattern=r"^[^@\s]+@[^@\s]+$",
    )
    send_at: str = F(
        "01:00",
        "Hour and minute of day (UTC) at which the previous UTC day's reports are sent",
        "01:00",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
    )
    dkim: DKIMKey | None = F(
        None,
        "DKIM key that signs mailed reports (RFC 8460 §5.3 asks for a signature); unsigned when absent",
        {"domain": "example.com", "selector": "tlsrpt2026", "private_key": {"file": "secrets/tlsrpt-dkim.pem"}},
    )


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
    limits: Limits = F(
        Limits(),
        "What one SMTP client may cost: connections, idle time, commands, recipients, headers",
        {"max_connections_per_client": 20, "idle_timeout": "5m"},
    )
    dns: DNS | None = F(
        None,
        "DNS resolver; when absent the system's resolver is used",
        {"nameservers": ["127.0.0.1"], "port": 5353},
    )
    tls_reporting: TLSReporting = F(
        TLSReporting(),
        "TLS-RPT (RFC 8460): daily reports of TLS session outcomes to the recipient domains that ask for them",
        {"enabled": True, "organization": "Example Corp", "contact": "tls-reports@example.com"},
    )
