"""Next-hop resolution: which addresses to connect to for a recipient domain or a route's host.

`Resolver.mx_hosts(domain)` follows RFC 5321 §5.1:

- MX records are tried in order of preference; hosts of equal preference are shuffled so that
  load spreads across them.
- Each MX host is resolved to its A and AAAA addresses, one `Hop` per address, A records first,
  each address exactly as DNS returned it (an address reached through two MX hosts is listed
  once, under the more preferred one). An MX host that cannot be resolved is skipped, as
  §5.1 asks, as long as another host can be.
- No MX records: the domain itself is the implicit MX (preference 0).
- A null MX (RFC 7505: a single MX whose exchange is ".") means "this domain accepts no mail".
- An address literal (`[192.0.2.1]`, `[IPv6:::1]`) and an MX whose exchange is an IP address
  (forbidden by RFC 5321, found in the wild; Postfix accepts it with a warning, and so do we)
  yield that address without a lookup. A CNAME is followed by the resolver like any other name.

`host_addresses(host)` is the lookup for a route with `mx_lookup: false` and `host_hops(host,
port, mx_lookup)` combines both for a configured next hop.

Errors are values a delivery worker can classify without knowing dnspython::

    DNSError                      base; carries `.name` and an RFC 3463 `.status`
     ├── PermanentDNSError        the name cannot receive mail: NXDOMAIN, null MX (5.1.10),
     │                            no MX host or implicit MX with an address (5.4.4). Bounce.
     └── TemporaryDNSError        SERVFAIL, REFUSED, timeout, no answer at all (4.4.3). Defer;
                                  never fall back from a failed MX lookup to the A record.

The resolver does not decide which addresses may be contacted (loopback-only in tests,
loop detection against our own addresses): that is the delivery worker's job. Lookups never
use the search list: every name is absolute.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from dataclasses import dataclass, replace

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

from engine.policy.groups import parse_ip

log = logging.getLogger(__name__)

# One try at one server waits at most this long; the whole lookup is bounded by `timeout`.
_TRY_TIMEOUT = 2.0
# EDNS0 with the DNS Flag Day 2020 buffer size: big answers come by UDP unfragmented,
# bigger ones are truncated and dnspython retries them over TCP.
_EDNS_PAYLOAD = 1232


class DNSError(Exception):
    """A lookup did not give addresses to deliver to. `.name` is the name asked about and
    `.status` the RFC 3463 status a delay notice or NDR should report."""

    status = "4.4.3"

    def __init__(self, name: str, reason: str, *, status: str | None = None) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        if status is not None:
            self.status = status


class PermanentDNSError(DNSError):
    """The name definitely cannot receive mail (NXDOMAIN, null MX, no address): bounce."""

    status = "5.4.4"


class TemporaryDNSError(DNSError):
    """DNS could not answer for now (SERVFAIL, timeout, no server reachable): defer."""

    status = "4.4.3"


@dataclass(frozen=True, slots=True)
class Hop:
    """One address to try: `host` is the MX host (or the domain for an implicit MX, or the
    configured host), which is also the name a `secure` TLS level checks the certificate
    against; `address` an IPv4 or IPv6 address as DNS gave it."""

    host: str
    address: str
    port: int = 25
    preference: int = 0
    # DNSSEC validated every answer that led here: the MX RRset (or its absence) and this
    # address (only with a resolver the config declares validating; what DANE needs)
    secure: bool = False

    def __str__(self) -> str:
        return f"{self.host}[{self.address}]:{self.port}"


def resolver_for(dns_settings) -> Resolver:
    """The resolver a config's `system.dns` asks for (None: the system's)."""
    if dns_settings is None:
        return Resolver()
    nameservers = list(dns_settings.nameservers)
    return Resolver(nameservers, dns_settings.port, float(dns_settings.timeout), dnssec=dns_settings.dnssec)


async def next_hops(resolver: Resolver, host: str, port: int, mx_lookup: bool) -> list[Hop]:
    """The hops of a configured next hop; an IP address needs no DNS at all."""
    if not mx_lookup and parse_ip(host) is not None:
        return [Hop(host, host, port)]
    return await resolver.host_hops(host, port, mx_lookup)


class Resolver:
    """MX and address lookups through `nameservers` on `port` (None: the system resolver).

    Each DNS query may take at most `timeout` seconds in total (retries included), so
    `mx_hosts` takes at most about twice that (the MX query, then the hosts in parallel).
    `rng` orders MX hosts of equal preference; pass a seeded one for reproducible order.
    There is no cache: every call asks DNS.
    """

    def __init__(
        self,
        nameservers: list[str] | None = None,
        port: int = 53,
        timeout: float = 5.0,
        *,
        rng: random.Random | None = None,
        dnssec: bool = False,
    ) -> None:
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if nameservers is not None and not nameservers:
            raise ValueError("nameservers is empty; pass None to use the system resolver")
        resolver = dns.asyncresolver.Resolver(configure=nameservers is None)
        if nameservers is not None:
            resolver.nameservers = [str(ipaddress.ip_address(server)) for server in nameservers]
            resolver.port = port
        resolver.lifetime = timeout
        resolver.timeout = min(timeout, _TRY_TIMEOUT)
        resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        if dnssec:  # RFC 6840 §5.7: the AD bit asks a validating resolver to say what it validated
            resolver.flags = dns.flags.RD | dns.flags.AD
        self.dnssec = dnssec
        self._resolver = resolver
        self._rng = rng or random.Random()

    async def mx_hosts(self, domain: str) -> list[Hop]:
        """The hops for mail to `domain`, best first (RFC 5321 §5.1; see the module docstring).

        Raises `PermanentDNSError` or `TemporaryDNSError`; never returns an empty list.
        """
        literal = _address_literal(domain)
        if literal is not None:
            return [Hop(domain, literal)]
        name = _absolute(domain)
        answer = await self._query(name, "MX")
        signed = self._validated(answer)
        records = list(answer) if answer.rrset is not None else []
        if not records:
            # RFC 5321 §5.1: no MX records, the domain itself is the implicit MX.
            host = _text(name)
            return [Hop(host, address, secure=signed and secure) for address, secure in await self._addresses(name)]
        if all(record.exchange == dns.name.root for record in records):
            # RFC 7505 §3: a single "0 ." MX; a lone "." at another preference means the same.
            raise PermanentDNSError(_text(name), "domain accepts no mail (null MX)", status="5.1.10")

        usable = [record for record in records if record.exchange != dns.name.root]
        self._rng.shuffle(usable)  # sort is stable: equal preferences keep this random order
        usable.sort(key=lambda record: record.preference)
        found = await asyncio.gather(*(self._exchange_addresses(_text(name), record.exchange) for record in usable))

        hops: list[Hop] = []
        seen: set[str] = set()
        failures: list[DNSError] = []
        for record, result in zip(usable, found, strict=True):
            if isinstance(result, DNSError):
                failures.append(result)
                continue
            for address, secure in result:
                if address not in seen:
                    seen.add(address)
                    hops.append(Hop(_text(record.exchange), address, 25, record.preference, signed and secure))
        if hops:
            return hops
        temporary = [failure for failure in failures if isinstance(failure, TemporaryDNSError)]
        detail = "; ".join(failure.reason for failure in failures)
        if temporary:
            raise TemporaryDNSError(_text(name), f"no MX host could be resolved for now ({detail})")
        raise PermanentDNSError(_text(name), f"no MX host has an address ({detail})")

    async def host_addresses(self, host: str) -> list[str]:
        """The A then AAAA addresses of `host`, as DNS gave them; an IP address (bare or as an
        address literal in brackets) is returned as is, without DNS.

        Raises `PermanentDNSError` (no such host, or no address) or `TemporaryDNSError`.
        """
        return [address for address, _ in await self._host_addresses(host)]

    async def host_hops(self, host: str, port: int = 25, mx_lookup: bool = True) -> list[Hop]:
        """The hops for a configured next hop: the MX hosts of `host` when `mx_lookup` (and
        `host` is a name), else `host`'s own addresses; every hop on `port`."""
        if mx_lookup and _address_literal(host) is None:
            return [replace(hop, port=port) for hop in await self.mx_hosts(host)]
        return [Hop(host, address, port, secure=secure) for address, secure in await self._host_addresses(host)]

    async def tlsa(self, name: str) -> tuple[list[tuple[int, int, int, bytes]], bool]:
        """The TLSA records of `name` as (usage, selector, matching type, data), and whether
        the answer was DNSSEC-validated (`engine.relay.tls.dane`). NXDOMAIN raises
        `PermanentDNSError`, a failed lookup (a bogus answer is SERVFAIL) `TemporaryDNSError`."""
        answer = await self._query(_absolute(name), "TLSA")
        rows = [(r.usage, r.selector, r.mtype, r.cert) for r in answer] if answer.rrset is not None else []
        return rows, self._validated(answer)

    def _validated(self, answer: dns.resolver.Answer) -> bool:
        """Whether a resolver the config declares validating says it validated `answer`."""
        return self.dnssec and bool(answer.response.flags & dns.flags.AD)

    async def _host_addresses(self, host: str) -> list[tuple[str, bool]]:
        literal = _address_literal(host)
        if literal is not None:
            return [(literal, False)]
        return await self._addresses(_absolute(host))

    async def txt(self, name: str) -> list[str]:
        """The TXT records of `name`, each record's strings joined (RFC 7208 §3.3 style, as
        MTA-STS reads `_mta-sts` records); an empty list when the name has none.

        Raises `PermanentDNSError` (NXDOMAIN) or `TemporaryDNSError`.
        """
        answer = await self._query(_absolute(name), "TXT")
        if answer.rrset is None:
            return []
        return [b"".join(record.strings).decode("utf-8", "replace") for record in answer]

    async def _exchange_addresses(self, domain: str, exchange: dns.name.Name) -> list[tuple[str, bool]] | DNSError:
        """An MX host's addresses, or the error as a value so one bad host does not sink the rest."""
        literal = _address_literal(_text(exchange))
        if literal is not None:
            log.warning("MX record of %s names an IP address instead of a host: %s", domain, literal)
            return [(literal, False)]
        try:
            return await self._addresses(exchange)
        except DNSError as exc:
            return exc

    async def _addresses(self, name: dns.name.Name) -> list[tuple[str, bool]]:
        """A and AAAA records of `name`, asked in parallel, each with whether its answer was
        DNSSEC-validated. What one family returns is enough; only when neither gives an
        address does a failure of either decide the error."""
        results = await asyncio.gather(self._query(name, "A"), self._query(name, "AAAA"), return_exceptions=True)
        addresses: list[tuple[str, bool]] = []
        errors: list[DNSError] = []
        for result in results:
            if isinstance(result, DNSError):
                errors.append(result)
            elif isinstance(result, BaseException):
                raise result
            elif result.rrset is not None:
                secure = self._validated(result)
                addresses.extend((record.address, secure) for record in result)
        if addresses:
            return addresses
        for error in errors:
            if isinstance(error, TemporaryDNSError):
                raise error
        if errors:
            raise errors[0]
        raise PermanentDNSError(_text(name), "host has no A or AAAA record")

    async def _query(self, name: dns.name.Name, rdtype: str) -> dns.resolver.Answer:
        """One query; an empty answer (NODATA) is returned, not raised. dnspython's errors
        become `PermanentDNSError` (NXDOMAIN) or `TemporaryDNSError` (everything else)."""
        where = _text(name)
        try:
            return await self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            raise PermanentDNSError(where, f"no such domain (NXDOMAIN for {rdtype})") from exc
        except dns.resolver.YXDOMAIN as exc:
            raise PermanentDNSError(where, "name too long after DNAME substitution") from exc
        except dns.exception.Timeout as exc:
            raise TemporaryDNSError(where, f"{rdtype} lookup timed out") from exc
        except dns.resolver.NoNameservers as exc:
            raise TemporaryDNSError(where, f"{rdtype} lookup failed: no server answered (SERVFAIL or refused)") from exc
        except dns.exception.DNSException as exc:
            raise TemporaryDNSError(where, f"{rdtype} lookup failed: {exc}") from exc


def _absolute(domain: str) -> dns.name.Name:
    """`domain` as an absolute DNS name (IDNA-encoded when it is not ASCII)."""
    text = domain.strip()
    if not text or text == ".":
        raise PermanentDNSError(domain, "empty domain name", status="5.1.2")
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:  # empty label, label too long, bad IDNA...
        raise PermanentDNSError(domain, f"invalid domain name: {exc}", status="5.1.2") from exc


def _address_literal(text: str) -> str | None:
    """The address of an IP address or RFC 5321 address literal (`[192.0.2.1]`,
    `[IPv6:2001:db8::1]`), or None for a domain name."""
    candidate = text.strip()
    if candidate.startswith("[") and candidate.endswith("]"):
        candidate = candidate[1:-1]
        if candidate[:5].lower() == "ipv6:":
            candidate = candidate[5:]
    else:
        candidate = candidate.rstrip(".")
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True)
