"""DANE for SMTP (RFC 7672): an MX host's TLSA records, published under DNSSEC, say which
certificate (or which issuer) its STARTTLS must present.

Delivery asks for the `dane` level per MX host (`lookup`, then `verdict`):

    usable TLSA     DANE-EE(3) or DANE-TA(2) records, DNSSEC-validated: TLS is mandatory and
                    the peer's chain must match one (`check`); no PKIX CA is consulted
    unusable TLSA   validated records that are all unusable (PKIX-TA/EE, unknown selectors or
                    matching types, a digest of the wrong length): TLS is still mandatory, the
                    certificate unchecked (RFC 7672 §2.2, "encrypt")
    no TLSA         validated denial, or an MX RRset, address or TLSA answer not signed: DANE
                    does not apply; `tls.dane.fallback` does (`refuse`: the host gets nothing)
    lookup failed   SERVFAIL, a timeout, a bogus answer: this host gets nothing (§2.2: the
                    attacker who can break a lookup must not be able to skip DANE)

What RFC 7672 asks and where it is done here:

- §2.1/§2.2 DNSSEC: only answers the resolver validated count (the AD bit of a resolver the
  config declares validating, `system.dns.dnssec`); the MX RRset and the host's address
  records must be secure too (`Hop.secure`, `engine.relay.delivery.resolve`), else an
  attacker could point delivery at a host of their own with no TLSA records.
- §3.1.1 DANE-EE(3): the leaf's certificate (selector 0) or public key (selector 1) matches
  exactly (type 0) or by SHA-256 (1) or SHA-512 (2); names and dates are not checked.
- §3.1.2 DANE-TA(2): a certificate of the presented chain (or the record's own full
  certificate, `2 0 0`) matches, and the leaf chains to it with a DNS name matching the MX host
  or the recipient domain (§3.2.2), within its validity dates (`cryptography`'s verifier, with
  that certificate as the only trust anchor).
- §3.1.3 PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.
- §8.1 SNI: the client names the MX host (the TLSA base domain) in its handshake.

Not done: a CNAME'd MX host's expanded name as a second TLSA base domain (§2.2.3: the
unexpanded name is looked up, which the RFC allows as the fallback); a DANE-TA record of
a bare public key not present in the chain (`2 1 0` with the key absent from the chain).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ssl
from _ssl import ENCODING_DER  # what `_ssl.Certificate.public_bytes` takes
from dataclasses import dataclass
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.verification import Criticality, ExtensionPolicy, PolicyBuilder, Store, VerificationError

from engine.relay.delivery.resolve import DNSError, PermanentDNSError
from engine.relay.tls.levels import TLSLevel

DANE_TA, DANE_EE = 2, 3
PKIX_TA, PKIX_EE = 0, 1
_USAGES = {PKIX_TA: "PKIX-TA", PKIX_EE: "PKIX-EE", DANE_TA: "DANE-TA", DANE_EE: "DANE-EE"}
_DIGESTS = {1: ("sha256", 32), 2: ("sha512", 64)}

State = Literal["usable", "unusable", "none", "failed"]
# What a DANE-TA chain is held to beyond a path, dates and a name: a CA says it is one, a
# leaf carries a SAN; nothing of the Web PKI's extension rules (mail servers break them)
_CA_POLICY = ExtensionPolicy.permit_all().require_present(x509.BasicConstraints, Criticality.AGNOSTIC, None)
_EE_POLICY = ExtensionPolicy.permit_all().require_present(x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)


@dataclass(frozen=True, slots=True)
class TLSA:
    """One TLSA record: certificate usage, selector, matching type and the association data."""

    usage: int
    selector: int
    mtype: int
    data: bytes

    @property
    def usable(self) -> bool:
        """Whether SMTP may use it (RFC 7672 §3.1): DANE-TA or DANE-EE, a known selector, a
        known matching type, and a digest of the length its type says."""
        if self.usage not in (DANE_TA, DANE_EE) or self.selector not in (0, 1):
            return False
        if self.mtype == 0:
            return bool(self.data)
        return self.mtype in _DIGESTS and len(self.data) == _DIGESTS[self.mtype][1]

    def matches(self, cert: x509.Certificate) -> bool:
        """Whether `cert` (its DER, or its public key's for selector 1) is what the record names."""
        if self.selector == 0:
            selected = cert.public_bytes(Encoding.DER)
        else:
            selected = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        if self.mtype == 0:
            return selected == self.data
        return hashlib.new(_DIGESTS[self.mtype][0], selected).digest() == self.data

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()}"

    def describe(self) -> str:
        """Short for logs: `DANE-EE 3 1 1 8cb0…e3f1`."""
        text = self.data.hex()
        short = text if len(text) <= 16 else f"{text[:8]}…{text[-8:]}"
        return f"{_USAGES.get(self.usage, 'usage')} {self.usage} {self.selector} {self.mtype} {short}"


@dataclass(frozen=True)
class Lookup:
    """What DNS said of one MX host's TLSA records (`_<port>._tcp.<host>`)."""

    host: str
    port: int
    state: State
    records: tuple[TLSA, ...] = ()
    reason: str = ""  # why DANE does not apply (none), or what failed (failed)

    @property
    def usable(self) -> tuple[TLSA, ...]:
        return tuple(record for record in self.records if record.usable)

    @property
    def name(self) -> str:
        return f"_{self.port}._tcp.{self.host}"


@dataclass(frozen=True)
class Requirement:
    """What the peer's chain must match: the usable records and the names a DANE-TA chain's
    leaf may carry (the MX host, then the recipient domain)."""

    records: tuple[TLSA, ...]
    names: tuple[str, ...]

    def __str__(self) -> str:
        return ", ".join(record.describe() for record in self.records)


@dataclass(frozen=True)
class Verdict:
    """What the `dane` level means at one hop: the level to deliver at (None: not at all),
    the records the chain must match at level `dane`, and why (for notes and refusals)."""

    level: TLSLevel | None
    requirement: Requirement | None = None
    reason: str = ""
    source: str = ""


class TLSAResolver(Protocol):
    """What the lookup needs of DNS (`engine.relay.delivery.resolve.Resolver`)."""

    async def tlsa(self, name: str) -> tuple[list[tuple[int, int, int, bytes]], bool]: ...


async def lookup(resolver: TLSAResolver, host: str, port: int = 25) -> Lookup:
    """The TLSA records of `host`'s SMTP port. A DNS failure (SERVFAIL, which is also what a
    validating resolver answers for a bogus signature, or a timeout) is `failed`; an answer
    that is not DNSSEC-validated counts as no records (RFC 7672 §2.2.1)."""
    name = f"_{port}._tcp.{host.rstrip('.')}"
    try:
        rows, secure = await resolver.tlsa(name)
    except PermanentDNSError:  # NXDOMAIN: no records (insecure or not, DANE does not apply)
        return Lookup(host, port, "none", reason=f"no TLSA records at {name}")
    except DNSError as exc:
        return Lookup(host, port, "failed", reason=f"TLSA lookup of {name} failed: {exc.reason}")
    if not secure:
        return Lookup(host, port, "none", reason=f"TLSA answer for {name} is not DNSSEC-signed")
    if not rows:
        return Lookup(host, port, "none", reason=f"no TLSA records at {name}")
    records = tuple(TLSA(*row) for row in rows)
    state: State = "usable" if any(record.usable for record in records) else "unusable"
    return Lookup(host, port, state, records)


def fallback_of(setting: str) -> TLSLevel | None:
    """`tls.dane.fallback` as `verdict` takes it: a level, or None for `refuse`."""
    return None if setting == "refuse" else TLSLevel.parse(setting)


def verdict(found: Lookup, domain: str, fallback: TLSLevel | None, *, hop_secure: bool) -> Verdict:
    """The level `dane` stands for at one hop (see the module docstring's table).

    `hop_secure`: the MX RRset and the host's address records were DNSSEC-validated; without
    that the TLSA records (if any) say nothing about this host. `fallback` None (`refuse`,
    Postfix's `dane-only`): a host DANE does not cover gets nothing."""
    if not hop_secure:
        return _fallback(fallback, f"MX or address records of {found.host} not DNSSEC-validated; DANE not used")
    if found.state == "failed":
        return Verdict(None, reason=found.reason, source=f"DANE ({found.name})")
    if found.state == "none":
        return _fallback(fallback, found.reason)
    if found.state == "unusable":
        reason = f"TLSA records at {found.name} are all unusable for SMTP; TLS required, certificate unchecked"
        return Verdict(TLSLevel.MANDATORY, reason=reason, source=f"DANE ({found.name}, unusable records)")
    names = tuple(dict.fromkeys(name.lower().rstrip(".") for name in (found.host, domain)))
    requirement = Requirement(found.usable, names)
    return Verdict(TLSLevel.DANE, requirement, source=f"DANE ({found.name})")


def _fallback(fallback: TLSLevel | None, reason: str) -> Verdict:
    if fallback is None:
        return Verdict(None, reason=f"{reason}; `tls.dane.fallback: refuse` sends only to hosts DANE covers")
    return Verdict(fallback, reason=reason)


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The certificates the peer presented, leaf first, as DER. Python 3.11's `ssl` has this
    only privately (public from 3.13); without it, the leaf alone (enough for DANE-EE)."""
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    get_chain = getattr(inner, "get_unverified_chain", None)
    if get_chain is not None:
        chain = get_chain() or []
        return [cert.public_bytes(ENCODING_DER) for cert in chain]  # type: ignore[attr-defined]
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def check(chain_der: list[bytes], requirement: Requirement, now: dt.datetime | None = None) -> str | None:
    """Why the peer's chain (`peer_chain`) does not satisfy `requirement`, or None when a
    record matches (DANE-EE the leaf; DANE-TA an issuer the leaf chains to, with a name)."""
    if not chain_der:
        return "the peer presented no certificate"
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as exc:
        return f"the peer's certificate could not be read: {exc}"
    leaf = chain[0]
    ta_failures: list[str] = []
    for record in requirement.records:
        if record.usage == DANE_EE:
            if record.matches(leaf):
                return None
            continue
        for anchor in _anchors(record, chain):
            failure = _chains_to(leaf, chain[1:], anchor, requirement.names, now)
            if failure is None:
                return None
            ta_failures.append(failure)
    if ta_failures:
        return f"the chain does not validate to the DANE-TA certificate: {ta_failures[0]}"
    return f"no TLSA record matches the certificate chain (records: {requirement})"


def _anchors(record: TLSA, chain: list[x509.Certificate]) -> list[x509.Certificate]:
    """The trust anchors a DANE-TA record names: issuers in the presented chain that match
    it, and the record's own certificate when it carries one whole (`2 0 0`)."""
    anchors = [cert for cert in chain[1:] if record.matches(cert)]
    if not anchors and record.selector == 0 and record.mtype == 0:
        try:
            anchors.append(x509.load_der_x509_certificate(record.data))
        except ValueError:
            pass
    return anchors


def _chains_to(
    leaf: x509.Certificate,
    intermediates: list[x509.Certificate],
    anchor: x509.Certificate,
    names: tuple[str, ...],
    now: dt.datetime | None,
) -> str | None:
    """Whether `leaf` chains to `anchor` through `intermediates` and names one of `names`.

    Mail servers' certificates are not held to the Web PKI's extension rules (a critical SAN
    beside a subject, say), only to a path to the anchor, dates and a DNS name in the SAN."""
    builder = PolicyBuilder().store(Store([anchor])).extension_policies(ca_policy=_CA_POLICY, ee_policy=_EE_POLICY)
    if now is not None:
        builder = builder.time(now)
    failure = ""
    for name in names:
        try:
            builder.build_server_verifier(x509.DNSName(name)).verify(leaf, intermediates)
            return None
        except VerificationError as exc:
            failure = str(exc).split(" (encountered", 1)[0]
        except ValueError as exc:  # a name the verifier cannot take
            failure = str(exc)
    return failure or "no reference name"
