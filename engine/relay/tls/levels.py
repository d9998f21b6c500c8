"""TLS policy in one place: levels, the SSL contexts they mean, and why a handshake failed.

Outbound, a level says what the relay demands of the next hop before it sends a byte of
message content; inbound, the same level says what a matched peer must have done before
MAIL FROM. Everything here takes plain values (level names, paths, numbers) so the config
layer can build the contexts once, before a config swap, and hand them to sessions.

    none           no TLS at all
    opportunistic  STARTTLS when offered, else plain; certificate not checked
    mandatory      TLS or no transfer; certificate not checked
    verify         mandatory + a chain to a trusted CA (no name check)
    secure         verify + the host name in the certificate's DNS SANs (never the CN)
    mta-sts        the recipient domain's MTA-STS policy (`mtasts`): `secure` to the MX hosts
                   it names, those only; without one `tls.mta_sts.fallback`. Delivery replaces
                   it per MX host (`Live.outbound_policy`); anywhere else it acts as `secure`
    dane           the MX host's DNSSEC-validated TLSA records (`dane`): TLS whose chain matches
                   them; `mandatory` for records all unusable; without any `tls.dane.fallback`.
                   Delivery replaces it per MX host, like `mta-sts`; elsewhere it acts as `secure`

The order of the levels is `engine/policy/rules.py`'s, which the downgrade guard uses too.

Python's `ssl` can restrict TLS 1.2 cipher lists but not the TLS 1.3 suites, so a minimum
cipher strength is enforced twice: by the cipher string where possible, and after every
handshake by `check_negotiated`, whose refusal the caller must honour (close, no transfer).
"""

from __future__ import annotations

import enum
import os
import ssl
import warnings

from engine.policy import rules

PROTOCOLS = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
# Deprecated by RFC 8996; allowed only when a rule asks for them (the config warns).
LEGACY_PROTOCOLS = ("TLSv1", "TLSv1.1")
CIPHER_BITS = (128, 256)

# Forward secrecy first, then plain RSA key transport that many mail servers still need.
# Every TLS 1.2 suite left has a key of at least 128 (or 256) bits.
_EXCLUDED = "!aNULL:!eNULL:!MD5:!DSS:!PSK:!SRP:!AESCCM:!CAMELLIA:!ARIA"
_CIPHERS = {
    128: "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES:RSA+AES:" + _EXCLUDED,
    256: "ECDHE+AES256:ECDHE+CHACHA20:DHE+AES256:DHE+CHACHA20:RSA+AES256:" + _EXCLUDED,
}


# What listeners offer. `intermediate` follows Mozilla's "intermediate" profile for TLS 1.2:
# forward-secret AEAD suites only (no CBC, no SHA-1 MACs, no static RSA); TLS 1.3 suites are
# OpenSSL's and always AEAD. `compatible` adds the CBC suites old senders may still need.
SERVER_CIPHERS = {
    "intermediate": "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:" + _EXCLUDED,
    "compatible": _CIPHERS[128],
}


class TLSLevel(enum.StrEnum):
    """How much the relay demands of a peer's TLS, ordered from nothing to everything."""

    NONE = "none"
    OPPORTUNISTIC = "opportunistic"
    MANDATORY = "mandatory"
    VERIFY = "verify"
    SECURE = "secure"
    DANE = "dane"
    MTA_STS = "mta-sts"

    @classmethod
    def parse(cls, name: str | TLSLevel) -> TLSLevel:
        """The level called `name`; a ValueError lists the valid names."""
        try:
            return cls(name)
        except ValueError:
            names = ", ".join(level.value for level in cls)
            raise ValueError(f"unknown TLS level {name!r}; choose one of {names}") from None

    @property
    def rank(self) -> int:
        """Position in the order none < opportunistic < mandatory < verify < secure (`rules.rank`)."""
        return rules.rank(self)

    @property
    def enforced(self) -> TLSLevel:
        """The level actually enforced today (the reserved levels act as `secure`)."""
        return TLSLevel(rules.enforced_level(self))

    @property
    def requires_tls(self) -> bool:
        """No STARTTLS or a failed handshake means no transfer."""
        return self.rank >= rules.rank(TLSLevel.MANDATORY)

    @property
    def verifies_chain(self) -> bool:
        return self.rank >= rules.rank(TLSLevel.VERIFY)

    @property
    def checks_hostname(self) -> bool:
        return self.rank >= rules.rank(TLSLevel.SECURE)

    def at_least(self, other: TLSLevel | str) -> bool:
        return self.rank >= TLSLevel.parse(other).rank

    @staticmethod
    def strictest(*levels: TLSLevel | str) -> TLSLevel:
        """The most demanding of `levels` (e.g. a route's level and an enforced-TLS rule's)."""
        return TLSLevel(rules.strictest(*(TLSLevel.parse(level) for level in levels)))

    # StrEnum would otherwise compare the names alphabetically.
    def __lt__(self, other: object) -> bool:
        return self.rank < TLSLevel.parse(other).rank  # type: ignore[arg-type]

    def __le__(self, other: object) -> bool:
        return self.rank <= TLSLevel.parse(other).rank  # type: ignore[arg-type]

    def __gt__(self, other: object) -> bool:
        return self.rank > TLSLevel.parse(other).rank  # type: ignore[arg-type]

    def __ge__(self, other: object) -> bool:
        return self.rank >= TLSLevel.parse(other).rank  # type: ignore[arg-type]


class TLSPolicyError(Exception):
    """A session broke the TLS policy; `reason` is the short text for the log and `queue show`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DANEMismatch(TLSPolicyError):
    """The peer's certificate chain matches none of the MX host's TLSA records (`dane.check`)."""


class NoStartTLS(TLSPolicyError):
    """The peer did not offer STARTTLS, and the level requires TLS."""

    def __init__(self, reason: str = "peer offered no STARTTLS") -> None:
        super().__init__(reason)


def server_context(
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    min_protocol: str = "TLSv1.2",
    ciphers: str = "intermediate",
) -> ssl.SSLContext:
    """The context a listener uses for STARTTLS, presenting the relay's certificate, offering
    the `SERVER_CIPHERS` profile named by `ciphers` (`tls.server_ciphers`).

    Per-peer demands (an enforced-TLS rule's cipher strength or protocol) are checked after
    the handshake with `check_negotiated`, since one listener serves every peer.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _set_floor(context, min_protocol, 128)
    context.set_ciphers(SERVER_CIPHERS[ciphers])
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION
    context.load_cert_chain(cert_file, key_file)
    return context


def client_context(
    level: TLSLevel | str,
    *,
    ca_bundle: str | os.PathLike[str] = "system",
    min_protocol: str = "TLSv1.2",
    min_cipher_bits: int = 128,
) -> ssl.SSLContext | None:
    """The context for STARTTLS to a next hop at `level`; None for `none` (no TLS).

    `ca_bundle` is "system" (the platform's trust store) or a PEM file or hashed directory;
    it is read only for levels that verify. Hostname checks use the DNS SANs only.
    """
    level = TLSLevel.parse(level).enforced
    if level is TLSLevel.NONE:
        return None
    if min_cipher_bits not in CIPHER_BITS:
        raise ValueError(f"min_cipher_bits must be 128 or 256, not {min_cipher_bits}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _set_floor(context, min_protocol, min_cipher_bits)
    context.options |= ssl.OP_NO_COMPRESSION
    # Set before verify_mode: CERT_NONE is refused while check_hostname is on.
    context.check_hostname = level.checks_hostname
    context.hostname_checks_common_name = False
    if level.verifies_chain:
        context.verify_mode = ssl.CERT_REQUIRED
        _load_ca_bundle(context, ca_bundle)
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def check_negotiated(ssl_object: ssl.SSLObject | ssl.SSLSocket, min_cipher_bits: int, min_protocol: str) -> str | None:
    """Why the finished handshake on `ssl_object` is too weak, or None when it is enough."""
    floor = _protocol(min_protocol)
    version = ssl_object.version()
    if version is None or version not in PROTOCOLS:
        return f"protocol {version or 'unknown'} is below the required {min_protocol}"
    if PROTOCOLS[version] < floor:
        return f"protocol {version} is below the required {min_protocol}"
    cipher = ssl_object.cipher()
    if cipher is None:
        return "no cipher was negotiated"
    name, _, bits = cipher
    if bits < min_cipher_bits:
        return f"cipher {name} is {bits}-bit, {min_cipher_bits}-bit required"
    return None


# OpenSSL X509_V_ERR_* codes that admins meet, in their words.
_VERIFY_REASONS = {
    2: "unknown CA",  # unable to get issuer certificate
    7: "bad certificate signature",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in chain (untrusted root)",
    20: "unknown CA",  # unable to get local issuer certificate
    21: "unknown CA",  # unable to verify the first certificate
    23: "certificate has been revoked",
    24: "invalid CA certificate",
    26: "certificate is not for server use",
    62: "hostname mismatch",
    66: "certificate key too small",
    67: "CA certificate key too small",
    68: "certificate signature too weak",
}

# OpenSSL error reasons (ssl.SSLError.reason) for handshakes that never got to the certificate.
_SSL_REASONS = {
    "UNSUPPORTED_PROTOCOL": "no common TLS protocol version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no common TLS protocol version",
    "NO_PROTOCOLS_AVAILABLE": "no common TLS protocol version",
    "WRONG_VERSION_NUMBER": "peer did not answer with TLS",
    "NO_SHARED_CIPHER": "no shared cipher",
    "NO_CIPHERS_AVAILABLE": "no shared cipher",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "no shared cipher (handshake failure alert)",
    "TLSV1_ALERT_INSUFFICIENT_SECURITY": "no shared cipher (peer wants stronger security)",
    "TLSV1_ALERT_UNKNOWN_CA": "peer rejected our certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "peer rejected our certificate",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during TLS handshake",
}


def describe_failure(exc: BaseException) -> str:
    """One short reason for a failed STARTTLS, handshake or verification, for log and queue.

    Looks through the exception's causes, since SMTP clients wrap the `ssl` error.
    """
    for error in causes(exc):
        if isinstance(error, TLSPolicyError):
            return error.reason
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = _VERIFY_REASONS.get(error.verify_code)
            if reason is None:
                return f"certificate verification failed: {error.verify_message}"
            if error.verify_code == 62:  # "Hostname mismatch, certificate is not valid for 'x'."
                return f"{reason}: {error.verify_message.split(', ', 1)[-1].rstrip('.')}"
            return reason
        if isinstance(error, ssl.SSLZeroReturnError | ssl.SSLEOFError):
            return "connection closed during TLS handshake"
        if isinstance(error, ssl.SSLError):
            return _SSL_REASONS.get(error.reason or "", f"TLS error: {error.reason or error}")
        if "STARTTLS extension not supported" in str(error):  # aiosmtplib's wording
            return "peer offered no STARTTLS"
        if isinstance(error, ConnectionResetError):
            return "connection reset during TLS handshake"
        if isinstance(error, TimeoutError):
            return "TLS handshake timed out"
    return f"TLS failure: {type(exc).__name__}: {exc}"


def causes(exc: BaseException) -> list[BaseException]:
    """`exc` and what caused it, outermost first (each once, a loop in the chain ends it)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _protocol(name: str) -> ssl.TLSVersion:
    try:
        return PROTOCOLS[name]
    except KeyError:
        names = ", ".join(PROTOCOLS)
        raise ValueError(f"min_protocol must be one of {names}, not {name!r}") from None


def _set_floor(context: ssl.SSLContext, min_protocol: str, min_cipher_bits: int) -> None:
    """Set the lowest protocol and the cipher list; legacy protocols need OpenSSL level 0."""
    version = _protocol(min_protocol)
    ciphers = _CIPHERS[min_cipher_bits]
    if min_protocol in LEGACY_PROTOCOLS:
        # OpenSSL 3 refuses TLS 1.0/1.1 above security level 0, and Python warns on them.
        ciphers += ":@SECLEVEL=0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = version
    else:
        context.minimum_version = version
    context.set_ciphers(ciphers)


def _load_ca_bundle(context: ssl.SSLContext, ca_bundle: str | os.PathLike[str]) -> None:
    if os.fspath(ca_bundle) == "system":
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    elif os.path.isdir(ca_bundle):
        context.load_verify_locations(capath=ca_bundle)
    elif os.path.isfile(ca_bundle):
        context.load_verify_locations(cafile=ca_bundle)
    else:
        raise ValueError(f"CA bundle {os.fspath(ca_bundle)!r} is neither a file nor a directory")
