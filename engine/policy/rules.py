"""The policy rules, written once: how strict a TLS level is, which enforced-TLS rules cover a
connection, which route a recipient domain takes, what a domain entry matches, and the IP
group names that mean something.

What lives here and who uses it: the relay and the downgrade guard must read a config the
same way, or the guard would pass a change that the relay then carries out less strictly;
so both ask this module instead of keeping their own copy. The relay:
`engine/relay/tls/levels.py` (`TLSLevel.rank`, `.strictest`, `.enforced`) and
`engine/relay/runtime/live.py` (`Live.route_for`, `_routes`, `inbound_policy`,
`outbound_policy`, `TLSPolicy.tighten`, `TRUSTED_GROUP`). The guard: `engine/plan/guard.py`
(the order of levels, protocols and cipher strengths, enforced-TLS directions, a route's
level), `guard_groups.py` (the routing table and first match, the special group names) and
`guard_dlp.py` (the order of DLP actions, DLP directions). What one domain or IP entry
matches, and whether other entries already cover it, is `engine/policy/groups.py`'s
`DomainSet` and `IPSet`, which this module builds on: `example.com` is that domain,
`*.example.com` its subdomains at any depth (not itself), anything else (`.example.com`
too) is compared exactly. tests/policy/test_rules.py checks that the guard's verdicts and
the relay's decisions agree.

Pure: plain values and the typed config model (`engine/config/model`) in, answers out; no
I/O, no network, no clock, no asyncio. Levels are the config's strings; the relay's
`TLSLevel` is a `str` enum, so it can be passed wherever a level is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, TypeVar

from engine.config.model import RelayConfig
from engine.config.model.transport import DomainGroupMatch, DomainsMatch, EnforcedTLSRule, IPGroupMatch, Route
from engine.policy.groups import DomainSet, IPSet

# -- the IP groups whose names mean something ----------------------------------------------

TRUSTED_GROUP = "internal_servers"  # peers that may relay mail out (Postfix's mynetworks)
GATEWAY_GROUP = "encryption_gateway"  # mail from there counts as already encrypted (the default name)


def gateway_group(config: RelayConfig) -> str:
    """The IP group whose mail counts as already encrypted: the third-party method's
    `encrypted_ip_group`, else `encryption_gateway`."""
    third_party = config.encryption.third_party
    return third_party.encrypted_ip_group if third_party else GATEWAY_GROUP


# -- TLS levels, protocols, cipher strength ------------------------------------------------

LEVEL_RANK: Mapping[str, int] = MappingProxyType(
    {"none": 0, "opportunistic": 1, "mandatory": 2, "verify": 3, "secure": 4, "dane": 4, "mta-sts": 4}
)
# `tls.dane.fallback`: a level, or `refuse` (no delivery without TLSA records), above them all
DANE_FALLBACK_RANK: Mapping[str, int] = MappingProxyType({**LEVEL_RANK, "refuse": max(LEVEL_RANK.values()) + 1})
PROTOCOL_RANK: Mapping[str, int] = MappingProxyType({"TLSv1": 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3})
CIPHER_RANK: Mapping[int, int] = MappingProxyType({128: 0, 256: 1})


def rank(level: str) -> int:
    """Position of `level` in none < opportunistic < mandatory < verify < secure = dane = mta-sts.
    A KeyError for a name that is not a level."""
    return LEVEL_RANK[level]


def strictest(*levels: str) -> str:
    """The most demanding of `levels`; of equally strict ones, the first."""
    return max(levels, key=rank)


def enforced_level(level: str) -> str:
    """The level enforced today: the reserved `dane` and `mta-sts` act as `secure`."""
    return "secure" if rank(level) == rank("secure") else level


def level_range(level: str, mta_sts_fallback: str, dane_fallback: str = "secure") -> tuple[int, int] | None:
    """The ranks a level can mean, weakest and strongest: `mta-sts` is `secure` for a domain
    with an MTA-STS policy in enforce mode and `tls.mta_sts.fallback` for the others, `dane`
    is `secure`-strong for an MX host with validated TLSA records, `mandatory` for one whose
    records are all unusable, and `tls.dane.fallback` for the others (the relay's
    `Live.outbound_policy`); any other level is itself. None for an unknown name."""
    if level not in LEVEL_RANK or mta_sts_fallback not in LEVEL_RANK or dane_fallback not in DANE_FALLBACK_RANK:
        return None
    if level == "mta-sts":
        return min(rank(mta_sts_fallback), rank("secure")), rank("secure")
    if level == "dane":
        return min(DANE_FALLBACK_RANK[dane_fallback], rank("mandatory")), rank("secure")
    return rank(level), rank(level)


def strongest_protocol(*protocols: str) -> str:
    """The highest of `protocols` (TLSv1 < TLSv1.1 < TLSv1.2 < TLSv1.3); of equal ones, the first."""
    return max(protocols, key=PROTOCOL_RANK.__getitem__)


# -- enforced-TLS rules --------------------------------------------------------------------

# The connections an enforced-TLS rule's `direction` covers.
DIRECTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {"inbound": frozenset({"inbound"}), "outbound": frozenset({"outbound"}), "both": frozenset({"inbound", "outbound"})}
)


def peer_matches(
    match: IPGroupMatch | DomainGroupMatch,
    ip: str | None,
    domain: str,
    ip_groups: Mapping[str, IPSet],
    domain_groups: Mapping[str, DomainSet],
) -> bool:
    """Whether a rule's `match` covers the peer at `ip` for `domain` (the recipient domain
    outbound, the sender domain inbound). The groups must hold every name the rule uses."""
    if isinstance(match, IPGroupMatch):
        return ip_groups[match.ip_group].contains(ip)
    return domain_groups[match.domain_group].contains(domain)


def enforced_rules(
    rules: Iterable[EnforcedTLSRule],
    direction: str,
    ip: str | None,
    domain: str,
    ip_groups: Mapping[str, IPSet],
    domain_groups: Mapping[str, DomainSet],
) -> list[EnforcedTLSRule]:
    """The rules that apply to an `inbound` or `outbound` connection with the peer at `ip`
    about `domain`, in config order. The relay demands the strictest of them all."""
    return [
        rule
        for rule in rules
        if direction in DIRECTIONS[rule.direction] and peer_matches(rule.match, ip, domain, ip_groups, domain_groups)
    ]


# -- routes --------------------------------------------------------------------------------

DEFAULT_ROUTE = "default"  # the implicit last route: the recipient domain's MX at tls.outbound_default


def recipients(route: Route, domain_groups: Mapping[str, DomainSet]) -> DomainSet | None:
    """The recipient domains `route` takes; None for `recipients: any`."""
    if isinstance(route.recipients, DomainGroupMatch):
        return domain_groups[route.recipients.domain_group]
    if isinstance(route.recipients, DomainsMatch):
        return DomainSet.of(route.recipients.domains)
    return None


def route_level(tls: str | None, outbound_default: str) -> str:
    """A route's TLS level: its own `tls`, else `tls.outbound_default`."""
    return tls or outbound_default


@dataclass(frozen=True)
class RouteChoice:
    """One line of a routing table: which domains, at which level, and the route (None for
    the implicit default route)."""

    name: str
    domains: DomainSet | None  # None: every recipient
    tls: str
    route: Route | None


def routing_table(
    routes: Sequence[Route], domain_groups: Mapping[str, DomainSet], outbound_default: str
) -> tuple[RouteChoice, ...]:
    """The routes in order, then the implicit default route unless the last one takes every
    recipient: so a lookup always finds one."""
    table = [RouteChoice(r.name, recipients(r, domain_groups), route_level(r.tls, outbound_default), r) for r in routes]
    if not table or table[-1].domains is not None:
        table.append(RouteChoice(DEFAULT_ROUTE, None, outbound_default, None))
    return tuple(table)


class _Routed(Protocol):
    @property
    def domains(self) -> DomainSet | None: ...


R = TypeVar("R", bound=_Routed)


def route_for(table: Sequence[R], domain: str | None) -> R:
    """The route mail to `domain` takes: the first whose domains hold it (first match wins).
    `domain=None` stands for a domain no pattern names: only a route for every recipient
    takes it. `table` ends with such a route (see `routing_table`)."""
    for route in table:
        if route.domains is None or (domain is not None and route.domains.contains(domain)):
            return route
    return table[-1]


# -- domains -------------------------------------------------------------------------------


def domain_matches(entry: str, domain: str) -> bool:
    """Whether a domain-group or route entry matches `domain` (the relay's `DomainSet` rule)."""
    return DomainSet.of((entry,)).contains(domain)


# -- DLP -----------------------------------------------------------------------------------

# The relay applies the strongest action of the rules a message matches.
ACTION_STRENGTH: Mapping[str, int] = MappingProxyType({"permit": 0, "encrypt": 1, "quarantine": 2, "block": 3})
# The mail directions a DLP rule's `destination.direction` covers.
DLP_DIRECTIONS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "inbound": frozenset({"inbound"}),
        "outbound": frozenset({"outbound"}),
        "internal": frozenset({"internal"}),
        "any": frozenset({"inbound", "outbound", "internal"}),
    }
)
