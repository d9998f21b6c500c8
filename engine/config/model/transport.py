"""`tls`, `enforced_tls`, `routes`, `delivery`: how mail moves, and how safely."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import model_validator

from engine.config.model.base import F, HostOrIP, Model, Name, Secret, Tag, by_key
from engine.config.units import DurationField

TLSLevel = Literal["none", "opportunistic", "mandatory", "verify", "secure", "dane", "mta-sts"]
TLS_LEVEL_DESCRIPTION = (
    "TLS level: `none` (never STARTTLS), `opportunistic` (STARTTLS when offered, else plain), "
    "`mandatory` (TLS or no transfer), `verify` (mandatory + trusted chain), "
    "`secure` (verify + hostname match), `dane` (the MX host's DNSSEC-validated TLSA records), `mta-sts` (the domain's MTA-STS policy)"
)
Protocol = Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
CipherBits = Literal[128, 256]


class SelfSigned(Model):
    key: Literal["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"] = F(
        "ecdsa-p256", "Key type of the generated certificate", "ecdsa-p256", "rsa-2048"
    )
    valid_days: int = F(825, "Validity of the generated certificate in days", 825, ge=1, le=3650)


class SelfSignedSource(Model):
    self_signed: SelfSigned = F(
        ...,
        "Generate a self-signed certificate at first start (CN and SAN = system.fqdn)",
        {"key": "ecdsa-p256"},
    )


class Pfx(Model):
    path: str = F(
        ...,
        "PKCS#12 file with key, certificate and chain (relative to the config)",
        "secrets/relay.pfx",
    )
    password: Secret = F(..., "Password of the PFX file (at most 100 characters)", {"env": "SEAL_PFX_PASSWORD"})


class PfxSource(Model):
    pfx: Pfx = F(
        ...,
        "Use a CA-issued certificate from a PKCS#12 file",
        {"path": "secrets/relay.pfx", "password": {"env": "SEAL_PFX_PASSWORD"}},
    )


class Pem(Model):
    certificate: str = F(..., "PEM file with the certificate followed by its chain", "certs/relay.crt")
    key: str = F(..., "PEM file with the private key", "certs/relay.key")
    key_password: Secret | None = F(None, "Password of the key file, if it is encrypted", {"env": "SEAL_KEY_PASSWORD"})


class PemSource(Model):
    pem: Pem = F(
        ...,
        "Use a certificate and key from PEM files",
        {"certificate": "certs/relay.crt", "key": "certs/relay.key"},
    )


CertificateSource = Annotated[
    Annotated[SelfSignedSource, Tag("self_signed")]
    | Annotated[PfxSource, Tag("pfx")]
    | Annotated[PemSource, Tag("pem")],
    by_key("self_signed", "pfx", "pem"),
]


class MTASTSSettings(Model):
    """How the `mta-sts` level behaves where a recipient domain publishes no MTA-STS policy."""

    fallback: Literal["none", "opportunistic", "mandatory", "verify", "secure"] = F(
        "secure",
        "TLS level of `mta-sts` for a domain without an MTA-STS policy, or whose policy is in `testing` "
        "or `none` mode. `secure` keeps `mta-sts` never weaker than `secure`; `opportunistic` suits "
        "`tls.outbound_default: mta-sts`",
        "secure",
        "opportunistic",
    )


class DANESettings(Model):
    """How the `dane` level behaves where an MX host has no DNSSEC-validated TLSA records."""

    fallback: Literal["none", "opportunistic", "mandatory", "verify", "secure", "refuse"] = F(
        "secure",
        "TLS level of `dane` for an MX host without DNSSEC-validated TLSA records (no records, an "
        "unsigned zone, or `system.dns.dnssec` off). `secure` keeps `dane` never weaker than `secure`; "
        "`opportunistic` is Postfix's `dane` level (`tls.outbound_default: dane`); `refuse` is Postfix's "
        "`dane-only`: such a host gets nothing",
        "secure",
        "opportunistic",
        "refuse",
    )


class TLS(Model):
    """The relay's own certificate and how it judges its peers'."""

    certificate: CertificateSource = F(
        SelfSignedSource(self_signed=SelfSigned()),
        "The certificate the relay presents: `self_signed`, `pfx` or `pem`",
        {"self_signed": {"key": "ecdsa-p256", "valid_days": 825}},
    )
    ca_bundle: str = F(
        "system",
        "CA bundle for verifying peers: `system` or a PEM file path",
        "system",
        "certs/ca-bundle.pem",
    )
    outbound_default: TLSLevel = F(
        "opportunistic",
        "Default level of routes that do not set one. " + TLS_LEVEL_DESCRIPTION,
        "opportunistic",
    )
    mta_sts: MTASTSSettings = F(
        MTASTSSettings(),
        "The `mta-sts` level (RFC 8461): what it falls back to without a policy",
        {"fallback": "secure"},
    )
    dane: DANESettings = F(
        DANESettings(),
        "The `dane` level (RFC 7672): what it falls back to without validated TLSA records",
        {"fallback": "secure"},
    )
    server_ciphers: Literal["intermediate", "compatible"] = F(
        "intermediate",
        "Cipher suites the listeners offer with TLS 1.2: `intermediate` (Mozilla's profile: forward-secret "
        "AEAD suites only) or `compatible` (adds CBC suites for old senders). TLS 1.3 is always offered",
        "intermediate",
    )


class IPGroupMatch(Model):
    ip_group: Name = F(..., "Name of an IP group (peer addresses)", "banks")


class DomainGroupMatch(Model):
    domain_group: Name = F(
        ...,
        "Name of a domain group (recipient domains outbound, sender domains inbound)",
        "partners",
    )


GroupMatch = Annotated[
    Annotated[IPGroupMatch, Tag("ip_group")] | Annotated[DomainGroupMatch, Tag("domain_group")],
    by_key("ip_group", "domain_group"),
]


class EnforcedTLSRule(Model):
    """Connections to or from a group must meet a TLS level and strength."""

    name: Name = F(..., "Rule name", "partners-must-encrypt")
    direction: Literal["inbound", "outbound", "both"] = F(..., "Which connections the rule applies to", "outbound")
    match: GroupMatch = F(
        ...,
        "The peers the rule covers: `{ip_group: X}` or `{domain_group: Y}`",
        {"domain_group": "partners"},
    )
    level: TLSLevel = F("mandatory", TLS_LEVEL_DESCRIPTION, "mandatory", "secure")
    min_protocol: Protocol = F("TLSv1.2", "Lowest TLS protocol version accepted", "TLSv1.2")
    min_cipher_bits: CipherBits = F(128, "Lowest cipher strength: 128 (medium) or 256 (high)", 128, 256)


class NextHopHost(Model):
    host: HostOrIP = F(..., "Host name or IP address of the next hop", "smtp.partner.example", "192.0.2.10")
    port: int = F(25, "TCP port of the next hop", 25, ge=1, le=65535)
    mx_lookup: bool = F(False, "Resolve the host name's MX records (host names only)", False)


class DomainsMatch(Model):
    domains: list[Annotated[str, F(..., "A domain", "partner.example")]] = F(
        ...,
        "Recipient domains (`*.example.com` matches subdomains)",
        ["partner.example"],
        min_length=1,
    )


RouteRecipients = (
    Literal["any"]
    | Annotated[
        Annotated[DomainGroupMatch, Tag("domain_group")] | Annotated[DomainsMatch, Tag("domains")],
        by_key("domain_group", "domains"),
    ]
)


class SmtpAuth(Model):
    username: str = F(..., "SMTP AUTH user name", "relay")
    password: Secret = F(..., "SMTP AUTH password (at most 100 characters)", {"env": "SEAL_GATEWAY_PASSWORD"})


class Route(Model):
    """Where mail for some recipients goes next."""

    name: Name = F(..., "Route name", "partner-smarthost")
    recipients: RouteRecipients = F(
        ..., "`any`, `{domain_group: X}` or `{domains: [...]}`", "any", {"domain_group": "partners"}
    )
    next_hop: Literal["mx"] | NextHopHost = F(
        "mx",
        "`mx` (the recipient domain's MX) or `{host, port, mx_lookup}`",
        "mx",
        {"host": "smtp.partner.example", "port": 25},
    )
    tls: TLSLevel | None = F(
        None,
        "TLS level of this route (default: tls.outbound_default). " + TLS_LEVEL_DESCRIPTION,
        "opportunistic",
    )
    auth: SmtpAuth | None = F(
        None,
        "SMTP AUTH credentials for the next hop",
        {"username": "relay", "password": {"env": "SEAL_ROUTE_PASSWORD"}},
    )


class NDR(Model):
    enabled: bool = F(
        True,
        "Send a non-delivery report (DSN) to the sender when a message bounces or expires",
        True,
    )
    include: Literal["headers", "full", "none"] = F(
        "headers", "What of the original message the NDR carries", "headers"
    )


class DestinationConcurrency(Model):
    """Parallel deliveries to one destination (a route's next hop, or a recipient domain's MX):
    Postfix's slow start. A destination starts at `initial`; each run of successful deliveries
    as long as the current concurrency adds one, each run of connection-level failures takes
    one away, never above `limit` (nor `delivery.workers`) or below one."""

    initial: int = F(5, "Concurrency a destination starts with (Postfix: initial_destination_concurrency)", 5, ge=1)
    limit: int = F(
        20, "Most parallel deliveries to one destination (Postfix: default_destination_concurrency_limit)", 20, ge=1
    )


class Timeouts(Model):
    """Per-stage SMTP client timeouts, with Postfix's defaults (smtp_*_timeout)."""

    connect: DurationField = F("30s", "TCP connection to a next hop", "30s", validate_default=True)
    greeting: DurationField = F("5m", "The server's greeting (220) after the connection", "5m", validate_default=True)
    helo: DurationField = F(
        "5m", "The reply to EHLO (and to AUTH and QUIT, the session's other commands)", "5m", validate_default=True
    )
    starttls: DurationField = F("5m", "STARTTLS and the TLS handshake", "5m", validate_default=True)
    mail: DurationField = F("5m", "The reply to MAIL FROM", "5m", validate_default=True)
    rcpt: DurationField = F("5m", "The reply to each RCPT TO", "5m", validate_default=True)
    data: DurationField = F("2m", "The reply to DATA (354)", "2m", validate_default=True)
    data_done: DurationField = F(
        "10m",
        "Sending the content and the reply to its final dot (a timeout here may deliver the message twice)",
        "10m",
        validate_default=True,
    )


class Delivery(Model):
    """How queued mail goes out: parallelism per destination, dead destinations, timeouts,
    and the non-delivery options (retries, lifetime, warnings, bounces)."""

    retry_interval: DurationField = F("15m", "Delay before the first retry", "15m", validate_default=True)
    max_retry_interval: DurationField = F(
        "4h", "Longest delay between retries (backoff cap)", "4h", validate_default=True
    )
    backoff: float = F(2.0, "Factor by which the retry delay grows after each attempt", 2.0, ge=1.0, le=10.0)
    max_queue_lifetime: DurationField = F(
        "5d", "After this, the message bounces with an NDR", "5d", validate_default=True
    )
    delay_warning_after: DurationField | None = F(
        "4h",
        "Send the sender a delay warning after this long (null: never)",
        "4h",
        validate_default=True,
    )
    ndr: NDR = F(NDR(), "Bounce (NDR) behaviour", {"enabled": True, "include": "headers"})
    workers: int = F(
        20, "Parallel deliveries in all (the total over every destination; Postfix's process limit)", 20, ge=1, le=1000
    )
    destination_concurrency: DestinationConcurrency = F(
        DestinationConcurrency(),
        "Parallel deliveries per destination: where they start and how far they may grow",
        {"initial": 5, "limit": 20},
    )
    dead_after: int = F(
        5,
        "Consecutive connection-level failures (refused, timed out, no greeting, TLS handshake failed) after "
        "which a destination is dead: its mail waits without attempts until the destination's retry time, "
        "when one delivery probes it",
        5,
        ge=1,
        le=1000,
    )
    timeouts: Timeouts = F(
        Timeouts(),
        "How long delivery waits on a next hop at each stage of the SMTP conversation",
        {"connect": "30s", "greeting": "5m"},
    )
    connect_timeout: DurationField | None = F(
        None,
        "Deprecated (configs written before `timeouts`): the same as `timeouts.connect`, which wins when both are set",
        "30s",
        validate_default=True,
    )
    command_timeout: DurationField | None = F(
        None,
        "Deprecated (configs written before `timeouts`): every command stage of `timeouts` "
        "(greeting, helo, starttls, mail, rcpt, data, data_done) not set there",
        "5m",
        validate_default=True,
    )

    @model_validator(mode="after")
    def _deprecated_timeouts(self) -> Delivery:
        """A config written before `timeouts` keeps its meaning (validate warns about it)."""
        if self.connect_timeout is None and self.command_timeout is None:
            return self
        given = self.timeouts.model_fields_set
        update = {}
        if self.connect_timeout is not None and "connect" not in given:
            update["connect"] = self.connect_timeout
        if self.command_timeout is not None:
            for stage in ("greeting", "helo", "starttls", "mail", "rcpt", "data", "data_done"):
                if stage not in given:
                    update[stage] = self.command_timeout
        if update:  # the model is frozen once built; this is its building
            object.__setattr__(self, "timeouts", self.timeouts.model_copy(update=update))
        return self
