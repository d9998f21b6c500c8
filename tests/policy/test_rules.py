"""engine/policy/rules.py: the rules the relay and the downgrade guard share.

Tables pin each rule (level order, strictest-of, which enforced-TLS rules cover a connection,
first-match routing, what a domain or IP entry matches and covers, the special group names).
Two Hypothesis properties then check that the guard judges a change as the relay carries it
out, on random config pairs that differ in one TLS level, one route or one group entry:

- the guard calls a change a loosening whenever the relay, for some (domain, ip), would
  demand a weaker TLS level after it (nothing weaker slips through);
- where every connection has one demand (its route's level outbound, at most one
  enforced-TLS rule inbound) and the changed setting is in use, the guard calls a change a
  loosening exactly then. Elsewhere it may flag more: it judges each setting by what it asks
  for, so a lowered level stays a loosening while a stricter setting hides it.
"""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from engine.config.model import RelayConfig
from engine.config.model.encryption import ThirdParty
from engine.plan.build import make_plan
from engine.plan.change import LOOSENING, NEUTRAL
from engine.plan.render import label
from engine.policy import rules
from engine.policy.groups import DomainSet, IPSet
from engine.relay.runtime.live import provision
from engine.relay.tls.levels import TLSLevel

HEAD = {
    "version": 1,
    "system": {"fqdn": "mail.example.com", "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 2525}]},
}


def config(**sections) -> RelayConfig:
    return RelayConfig.model_validate({**copy.deepcopy(HEAD), **sections})


# -- TLS levels ----------------------------------------------------------------------------

LEVELS = ("none", "opportunistic", "mandatory", "verify", "secure", "dane", "mta-sts")


@pytest.mark.parametrize(
    ("level", "rank"),
    [("none", 0), ("opportunistic", 1), ("mandatory", 2), ("verify", 3), ("secure", 4), ("dane", 4), ("mta-sts", 4)],
)
def test_rank(level: str, rank: int) -> None:
    assert rules.rank(level) == rank
    assert TLSLevel(level).rank == rank  # the relay's enum ranks by the same table


def test_rank_knows_every_level_of_the_model_and_no_other() -> None:
    assert tuple(rules.LEVEL_RANK) == LEVELS == tuple(level.value for level in TLSLevel)
    with pytest.raises(KeyError):
        rules.rank("strict")


@pytest.mark.parametrize(
    ("levels", "strictest"),
    [
        (("none",), "none"),
        (("none", "opportunistic"), "opportunistic"),
        (("mandatory", "opportunistic"), "mandatory"),
        (("verify", "mandatory", "none"), "verify"),
        (("opportunistic", "secure", "verify"), "secure"),
        (("secure", "dane"), "secure"),  # equally strict: the first
        (("dane", "secure"), "dane"),
        (("mta-sts", "verify"), "mta-sts"),
    ],
)
def test_strictest(levels: tuple[str, ...], strictest: str) -> None:
    assert rules.strictest(*levels) == strictest
    assert TLSLevel.strictest(*levels) is TLSLevel(strictest)


@pytest.mark.parametrize(
    ("level", "enforced"),
    [("none", "none"), ("mandatory", "mandatory"), ("verify", "verify"), ("secure", "secure"), ("dane", "secure")]
    + [("mta-sts", "secure")],
)
def test_reserved_levels_are_enforced_as_secure(level: str, enforced: str) -> None:
    assert rules.enforced_level(level) == enforced
    assert TLSLevel(level).enforced is TLSLevel(enforced)


@pytest.mark.parametrize(
    ("protocols", "strongest"),
    [
        (("TLSv1.2", "TLSv1.3"), "TLSv1.3"),
        (("TLSv1.2", "TLSv1"), "TLSv1.2"),
        (("TLSv1", "TLSv1.1"), "TLSv1.1"),
        (("TLSv1.1", "TLSv1.2", "TLSv1"), "TLSv1.2"),
    ],
)
def test_strongest_protocol(protocols: tuple[str, ...], strongest: str) -> None:
    assert rules.strongest_protocol(*protocols) == strongest


# -- enforced-TLS rules --------------------------------------------------------------------

ENFORCED = config(
    ip_groups={"banks": ["198.51.100.0/24"], "partners-ip": ["192.0.2.10"]},
    domain_groups={"partners": ["partner.example", "*.bank.example"]},
    enforced_tls=[
        {"name": "banks-in", "direction": "inbound", "match": {"ip_group": "banks"}, "level": "mandatory"},
        {"name": "partners-out", "direction": "outbound", "match": {"domain_group": "partners"}, "level": "secure"},
        {"name": "ip-both", "direction": "both", "match": {"ip_group": "partners-ip"}, "level": "verify"},
    ],
)
IP_GROUPS = {name: IPSet.of(entries) for name, entries in ENFORCED.ip_groups.items()}
DOMAIN_GROUPS = {name: DomainSet.of(entries) for name, entries in ENFORCED.domain_groups.items()}


@pytest.mark.parametrize(
    ("direction", "ip", "domain", "names"),
    [
        ("inbound", "198.51.100.7", "anyone.example", ["banks-in"]),
        ("outbound", "198.51.100.7", "anyone.example", []),  # an inbound rule
        ("outbound", "203.0.113.1", "partner.example", ["partners-out"]),
        ("outbound", "203.0.113.1", "mx.bank.example", ["partners-out"]),
        ("inbound", "203.0.113.1", "partner.example", []),  # an outbound rule
        ("outbound", "203.0.113.1", "bank.example", []),  # `*.bank.example` is subdomains only
        ("inbound", "192.0.2.10", "x.example", ["ip-both"]),
        ("outbound", "192.0.2.10", "partner.example", ["partners-out", "ip-both"]),  # config order
        ("outbound", "::ffff:192.0.2.10", "x.example", ["ip-both"]),  # IPv4-mapped
        ("inbound", "", "", []),
    ],
)
def test_enforced_rules(direction: str, ip: str, domain: str, names: list[str]) -> None:
    found = rules.enforced_rules(ENFORCED.enforced_tls, direction, ip, domain, IP_GROUPS, DOMAIN_GROUPS)
    assert [rule.name for rule in found] == names


def test_the_relay_demands_the_strictest_of_the_rules_and_the_route() -> None:
    live = provision(ENFORCED, base_dir=Path(), version=1, tls=False)
    route = live.route_for("partner.example")
    assert live.outbound_policy(route, "partner.example", "192.0.2.10").level is TLSLevel.SECURE
    assert live.outbound_policy(route, "x.example", "192.0.2.10").level is TLSLevel.VERIFY
    assert live.outbound_policy(route, "x.example", "203.0.113.1").level is TLSLevel.OPPORTUNISTIC
    assert live.inbound_policy("198.51.100.7", "x.example").level is TLSLevel.MANDATORY
    assert live.inbound_policy("203.0.113.1", "partner.example") is None


# -- routes --------------------------------------------------------------------------------

ROUTED = config(
    tls={"outbound_default": "mandatory"},
    domain_groups={"partners": ["partner.example", "*.bank.example"]},
    routes=[
        {"name": "partners", "recipients": {"domain_group": "partners"}, "tls": "secure"},
        {"name": "one-bank", "recipients": {"domains": ["mx.bank.example", "Other.Example"]}, "tls": "none"},
        {"name": "plain", "recipients": {"domains": ["*.plain.example"]}},
    ],
)


@pytest.mark.parametrize(
    ("domain", "route", "level"),
    [
        ("partner.example", "partners", "secure"),
        ("mx.bank.example", "partners", "secure"),  # first match wins over the exact entry below
        ("other.example", "one-bank", "none"),  # entries match in any case
        ("OTHER.example.", "one-bank", "none"),
        ("a.plain.example", "plain", "mandatory"),  # no `tls`: tls.outbound_default
        ("plain.example", "default", "mandatory"),  # wildcard: subdomains only
        ("bank.example", "default", "mandatory"),
        ("nowhere.example", "default", "mandatory"),  # the implicit default route
        (None, "default", "mandatory"),  # a domain no entry names
    ],
)
def test_first_match_routing(domain: str | None, route: str, level: str) -> None:
    groups = {name: DomainSet.of(entries) for name, entries in ROUTED.domain_groups.items()}
    table = rules.routing_table(ROUTED.routes, groups, ROUTED.tls.outbound_default)
    choice = rules.route_for(table, domain)
    assert (choice.name, choice.tls) == (route, level)
    if domain is not None:  # the relay routes by the same table
        live = provision(ROUTED, base_dir=Path(), version=1, tls=False)
        assert (live.route_for(domain).name, live.route_for(domain).tls.value) == (route, level)


@pytest.mark.parametrize(
    ("routes", "names"),
    [
        ([], ["default"]),
        ([{"name": "all", "recipients": "any"}], ["all"]),
        ([{"name": "p", "recipients": {"domains": ["p.example"]}}], ["p", "default"]),
        (  # only the last route counts: the default is unreachable here, but still there
            [{"name": "all", "recipients": "any"}, {"name": "p", "recipients": {"domains": ["p.example"]}}],
            ["all", "p", "default"],
        ),
    ],
)
def test_the_implicit_default_route_comes_last_unless_the_last_route_takes_any(routes, names) -> None:
    table = rules.routing_table(config(routes=routes).routes, {}, "opportunistic")
    assert [choice.name for choice in table] == names
    assert (table[-1].route is None) is (len(table) > len(routes))


def test_the_catch_all_takes_what_no_entry_names() -> None:
    table = rules.routing_table(
        config(routes=[{"name": "all", "recipients": "any", "tls": "verify"}]).routes, {}, "none"
    )
    assert rules.route_for(table, None).name == "all"
    assert rules.route_for(table, "x.example").tls == "verify"


# -- domain and IP entries -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "domain", "matches"),
    [
        ("example.com", "example.com", True),
        ("example.com", "EXAMPLE.com.", True),  # case and a trailing dot do not matter
        ("Example.COM", "example.com", True),
        ("example.com", "sub.example.com", False),  # exact is exact
        ("*.example.com", "sub.example.com", True),
        ("*.example.com", "a.b.example.com", True),  # any depth
        ("*.example.com", "example.com", False),  # subdomains only, not the domain itself
        ("*.example.com", "badexample.com", False),  # a label boundary, not a string suffix
        ("*.Example.com.", "x.example.COM", True),
        (".example.com", "sub.example.com", False),  # not a wildcard: compared exactly
        (".example.com", "example.com", False),
        ("*example.com", "badexample.com", False),  # no globbing either
    ],
)
def test_domain_matching(entry: str, domain: str, matches: bool) -> None:
    assert rules.domain_matches(entry, domain) is matches
    assert DomainSet.of(["unrelated.example", entry]).contains(domain) is matches


@pytest.mark.parametrize(
    ("entries", "entry", "covered"),
    [
        (["a.example"], "a.example", True),
        (["A.example"], "a.example.", True),
        (["*.a.example"], "x.a.example", True),
        (["*.a.example"], "*.x.a.example", True),  # a narrower wildcard
        (["*.a.example"], "a.example", False),
        (["x.a.example"], "*.a.example", False),  # no list of names covers a wildcard
        (["*.x.a.example"], "*.a.example", False),
        (["*.a.example"], "*.ba.example", False),
        ([], "a.example", False),
    ],
)
def test_domain_covers(entries: list[str], entry: str, covered: bool) -> None:
    assert DomainSet.of(entries).covers(entry) is covered


@pytest.mark.parametrize(
    ("entries", "entry", "covered"),
    [
        (["10.0.0.0/8"], "10.1.0.0/16", True),
        (["10.0.0.0/8"], "10.1.2.3", True),
        (["10.1.0.0/16"], "10.0.0.0/8", False),
        (["192.0.2.0/25", "192.0.2.128/25"], "192.0.2.0/24", True),  # together
        (["192.0.2.0/25", "192.0.2.192/26"], "192.0.2.0/24", False),
        (["2001:db8::/32"], "2001:db8:1::/48", True),
        (["0.0.0.0/0"], "2001:db8::/32", False),  # another family
        (["10.0.0.0/8"], "not an address", False),
    ],
)
def test_ip_covers(entries: list[str], entry: str, covered: bool) -> None:
    assert IPSet.of(entries).covers(entry) is covered


# -- the group names -----------------------------------------------------------------------


def test_group_names() -> None:
    assert rules.TRUSTED_GROUP == "internal_servers"
    assert rules.GATEWAY_GROUP == "encryption_gateway"
    # The model's default for the gateway group is the same name.
    assert ThirdParty.model_fields["encrypted_ip_group"].default == rules.GATEWAY_GROUP


def test_gateway_group_follows_the_third_party_method() -> None:
    assert rules.gateway_group(config()) == "encryption_gateway"
    third_party = {
        "servers": [{"host": "127.0.0.1", "port": 10025}],
        "encrypted_ip_group": "gw",
        "headers": {"encrypt": "X-E: yes", "success": "X-R: success", "failure": "X-R: failure"},
    }
    assert rules.gateway_group(config(encryption={"third_party": third_party})) == "gw"


def test_the_relay_and_the_guard_read_the_trusted_group_alike() -> None:
    before = config(ip_groups={"internal_servers": ["10.0.0.0/8"]})
    after = config(ip_groups={"internal_servers": ["10.0.0.0/8", "192.0.2.0/24"]})
    assert provision(after, base_dir=Path(), version=1, tls=False).may_relay("192.0.2.7")
    assert not provision(before, base_dir=Path(), version=1, tls=False).may_relay("192.0.2.7")
    assert _loosenings(before, after) == ['+ ip_groups.internal_servers "192.0.2.0/24"']


# -- the guard and the relay agree ---------------------------------------------------------

DOMAIN_ENTRIES = ("a.example", "sub.a.example", "*.a.example", "*.sub.a.example", "b.example", "x.b.example")
DOMAIN_ENTRIES += ("*.b.example", "B.Example")
IP_ENTRIES = ("192.0.2.0/25", "192.0.2.128/25", "192.0.2.0/24", "198.51.100.7", "2001:db8::/64")
# One domain and one address of every kind the entries tell apart (each entry itself; under
# each wildcard a name no entry gives), and one that no entry names.
DOMAIN_PROBES = tuple(
    dict.fromkeys(
        [e.lower() for e in DOMAIN_ENTRIES if not e.startswith("*.")]
        + ["zz" + e[1:] for e in DOMAIN_ENTRIES if e.startswith("*.")]
        + ["other.invalid"]
    )
)
IP_PROBES = ("192.0.2.1", "192.0.2.129", "198.51.100.7", "2001:db8::1", "203.0.113.9")
INBOUND_LEVELS = ("opportunistic", "mandatory", "verify")  # what semantic checks allow inbound


def _loosenings(before: RelayConfig, after: RelayConfig) -> list[str]:
    """The guard's loosenings in the plan from `before` to `after`, by label."""
    plan = make_plan(after, before, created_at="2026-01-01T00:00:00Z")
    return [label(change) for change in plan.changes if change.effect == LOOSENING]


def _dns_states(cfg: RelayConfig) -> list[dict[TLSLevel, tuple[TLSLevel, str]]]:
    """Every way delivery can resolve the per-domain levels at a hop: `mta-sts` as an enforced
    policy (`secure`) or its fallback; `dane` as matched TLSA records, records all unusable
    (`mandatory`) or its fallback (`engine.relay.tls.mtasts.verdict`, `dane.verdict`)."""
    mta_sts = (TLSLevel.SECURE, TLSLevel.parse(cfg.tls.mta_sts.fallback))
    dane = (TLSLevel.DANE, TLSLevel.MANDATORY, TLSLevel.parse(cfg.tls.dane.fallback))
    return [{TLSLevel.MTA_STS: (m, ""), TLSLevel.DANE: (d, "")} for m, d in itertools.product(mta_sts, dane)]


def _demands(cfg: RelayConfig) -> dict[tuple[str, str, str], tuple[int, ...]]:
    """The rank of the TLS level the relay demands of every probed connection (no demand:
    none), outbound in each DNS state (`_dns_states`)."""
    live = provision(cfg, base_dir=Path(), version=1, tls=False)
    states = _dns_states(cfg)
    out = {}
    for domain in DOMAIN_PROBES:
        route = live.route_for(domain)
        for ip in IP_PROBES:
            ranks = (live.outbound_policy(route, domain, ip, None, state).level.rank for state in states)
            out["outbound", domain, ip] = tuple(ranks)
            inbound = live.inbound_policy(ip, domain)
            out["inbound", domain, ip] = (inbound.level.rank if inbound else 0,)
    return out


def _weaker(before: RelayConfig, after: RelayConfig) -> list[tuple[str, str, str]]:
    """The connections the relay demands less of after the change, in some DNS state."""
    old, new = _demands(before), _demands(after)
    return [key for key in old if any(n < o for n, o in zip(new[key], old[key], strict=True))]


def _route(draw, name: str) -> dict:
    kind = draw(st.sampled_from(["any", "group", "domains"]))
    if kind == "any":
        recipients = "any"
    elif kind == "group":
        recipients = {"domain_group": draw(st.sampled_from(["d1", "d2"]))}
    else:
        recipients = {"domains": draw(st.lists(st.sampled_from(DOMAIN_ENTRIES), min_size=1, max_size=3, unique=True))}
    tls = draw(st.sampled_from(LEVELS) | st.none())
    return {"name": name, "recipients": recipients} | ({"tls": tls} if tls else {})


def _rule(draw, name: str, directions: tuple[str, ...]) -> dict:
    direction = draw(st.sampled_from(directions))
    match = draw(st.sampled_from([{"ip_group": "i1"}, {"ip_group": "i2"}, {"domain_group": "d1"}]))
    level = draw(st.sampled_from(LEVELS if direction == "outbound" else INBOUND_LEVELS))
    return {"name": name, "direction": direction, "match": match, "level": level}


@st.composite
def configs(draw, *, one_demand: bool = False) -> dict:
    """A config of groups, routes and enforced-TLS rules; with `one_demand`, at most one rule,
    inbound: every connection then has one TLS demand."""
    domains = st.lists(st.sampled_from(DOMAIN_ENTRIES), max_size=4, unique=True)
    ips = st.lists(st.sampled_from(IP_ENTRIES), max_size=3, unique=True)
    n_rules = draw(st.integers(0, 1 if one_demand else 2))
    directions = ("inbound",) if one_demand else ("inbound", "outbound", "both")
    return {
        **copy.deepcopy(HEAD),
        "tls": {"outbound_default": draw(st.sampled_from(LEVELS))},
        "ip_groups": {"i1": draw(ips), "i2": draw(ips)},
        "domain_groups": {"d1": draw(domains), "d2": draw(domains)},
        "routes": [_route(draw, f"r{i}") for i in range(draw(st.integers(0, 4)))],
        "enforced_tls": [_rule(draw, f"e{i}", directions) for i in range(n_rules)],
    }


def _other(draw, values, current):
    return draw(st.sampled_from([v for v in values if v != current]))


def _toggle(entries: list[str], entry: str) -> list[str]:
    return [e for e in entries if e != entry] if entry in entries else [*entries, entry]


@st.composite
def changes(draw, base: dict) -> tuple[str, dict]:
    """`base` with one TLS level, one route or one group entry changed: (what, the new config)."""
    new = copy.deepcopy(base)
    routes, enforced = new["routes"], new["enforced_tls"]
    # Hypothesis leans towards the first choices: the route changes, which need the most luck.
    kinds = ["route_recipients", "route_moved", "route_removed", "route_tls"] if routes else []
    kinds += ["domain_group", "route_added", "ip_group"] + (["rule_level"] if enforced else []) + ["outbound_default"]
    kind = draw(st.sampled_from(kinds))
    if kind == "outbound_default":
        new["tls"]["outbound_default"] = _other(draw, LEVELS, base["tls"]["outbound_default"])
    elif kind == "domain_group":
        group = draw(st.sampled_from(["d1", "d2"]))
        new["domain_groups"][group] = _toggle(new["domain_groups"][group], draw(st.sampled_from(DOMAIN_ENTRIES)))
    elif kind == "ip_group":
        group = draw(st.sampled_from(["i1", "i2"]))
        new["ip_groups"][group] = _toggle(new["ip_groups"][group], draw(st.sampled_from(IP_ENTRIES)))
    elif kind == "route_added":
        routes.insert(draw(st.integers(0, len(routes))), _route(draw, "added"))
    elif kind == "route_tls":
        route = draw(st.sampled_from(routes))
        tls = _other(draw, (None, *LEVELS), route.pop("tls", None))
        route.update({"tls": tls} if tls else {})
    elif kind == "route_removed":
        routes.pop(draw(st.integers(0, len(routes) - 1)))
    elif kind == "route_moved":
        route = routes.pop(draw(st.integers(0, len(routes) - 1)))
        routes.insert(draw(st.integers(0, len(routes))), route)
    elif kind == "route_recipients":
        route = draw(st.sampled_from(routes))
        route["recipients"] = _route(draw, route["name"])["recipients"]
    else:
        rule = draw(st.sampled_from(enforced))
        rule["level"] = _other(draw, LEVELS if rule["direction"] == "outbound" else INBOUND_LEVELS, rule["level"])
    return kind, new


@st.composite
def pairs(draw, *, one_demand: bool = False) -> tuple[str, RelayConfig, RelayConfig]:
    base = draw(configs(one_demand=one_demand))
    kind, new = draw(changes(base))
    assume(new != base)
    return kind, RelayConfig.model_validate(base), RelayConfig.model_validate(new)


# Pairs the properties found, where the guard used to disagree with the relay: each runs as an
# example of both properties, and below with what the guard must say.

_SUB_ROUTES = [
    {"name": "sub", "recipients": {"domains": ["sub.a.example"]}, "tls": "secure"},
    {"name": "rest", "recipients": {"domains": ["*.a.example"]}, "tls": "secure"},
]
# `*.a.example` was probed as `sub.a.example`, which the route above names exactly: removing
# `rest` sent the other subdomains to the default route unnoticed.
ROUTE_BEHIND_AN_EXACT_NAME = ("route_removed", config(routes=_SUB_ROUTES), config(routes=_SUB_ROUTES[:1]))

_GROUP_ROUTES = [
    {"name": "group", "recipients": {"domain_group": "g"}, "tls": "secure"},
    {"name": "one", "recipients": {"domains": ["x.b.example"]}, "tls": "none"},
]
# Only the changed entry was probed: `x.b.example` now falling through to `one` went unnoticed.
WILDCARD_LEAVES_A_GROUP = (
    "domain_group",
    config(tls={"outbound_default": "secure"}, domain_groups={"g": ["*.b.example", "c.example"]}, routes=_GROUP_ROUTES),
    config(tls={"outbound_default": "secure"}, domain_groups={"g": ["c.example"]}, routes=_GROUP_ROUTES),
)

_INBOUND = [{"name": "in", "direction": "inbound", "match": {"ip_group": "g"}, "level": "mandatory"}]
# A network was "still covered" only inside one other entry, not by two together.
COVERED_BY_TWO = (
    "ip_group",
    config(ip_groups={"g": ["192.0.2.0/25", "192.0.2.0/24", "192.0.2.128/25"]}, enforced_tls=_INBOUND),
    config(ip_groups={"g": ["192.0.2.0/25", "192.0.2.128/25"]}, enforced_tls=_INBOUND),
)


PROPERTY = settings(max_examples=1000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(pairs())
@example(ROUTE_BEHIND_AN_EXACT_NAME)
@example(WILDCARD_LEAVES_A_GROUP)
def test_the_guard_flags_every_change_the_relay_would_carry_out_less_strictly(pair) -> None:
    kind, before, after = pair
    weaker = _weaker(before, after)
    event(f"{kind}: {'weaker' if weaker else 'not weaker'}")
    if weaker:
        assert _loosenings(before, after), (
            f"{kind}: the relay demands less of {weaker[:3]}, the guard sees no loosening"
        )


def _in_use(kind: str, before: RelayConfig, after: RelayConfig) -> bool:
    """Whether the setting `kind` changed decides some probed connection's level before."""
    live = provision(before, base_dir=Path(), version=1, tls=False)
    taken = [live.route_for(domain) for domain in DOMAIN_PROBES]
    if kind == "outbound_default":
        return any(route.route is None or route.route.tls is None for route in taken)
    if kind == "route_tls":
        changed = {b.name for b, a in zip(before.routes, after.routes, strict=True) if b.tls != a.tls}
        return any(route.name in changed for route in taken)
    if kind == "rule_level":
        return any(live.inbound_policy(ip, domain) for domain in DOMAIN_PROBES for ip in IP_PROBES)
    return True


@PROPERTY
@given(pairs(one_demand=True))
@example(ROUTE_BEHIND_AN_EXACT_NAME)
@example(WILDCARD_LEAVES_A_GROUP)
@example(COVERED_BY_TWO)
def test_where_one_setting_decides_each_connection_the_guard_flags_exactly_what_the_relay_weakens(pair) -> None:
    kind, before, after = pair
    assume(_in_use(kind, before, after))
    weaker, loosenings = _weaker(before, after), _loosenings(before, after)
    event(f"{kind}: {'weaker' if weaker else 'not weaker'}")
    assert bool(loosenings) == bool(weaker), f"{kind}: guard {loosenings}, relay weaker for {weaker[:3]}"


def test_a_route_removed_is_judged_for_the_subdomains_no_entry_names() -> None:
    _, before, after = ROUTE_BEHIND_AN_EXACT_NAME
    assert ("outbound", "zz.a.example", "192.0.2.1") in _weaker(before, after)
    assert _loosenings(before, after) == ['- routes["rest"]']


def test_a_wildcard_leaving_a_group_is_judged_for_the_domains_a_later_route_names() -> None:
    _, before, after = WILDCARD_LEAVES_A_GROUP
    assert ("outbound", "x.b.example", "192.0.2.1") in _weaker(before, after)
    assert _loosenings(before, after) == ['- domain_groups.g "*.b.example"']


def test_an_entry_covered_by_two_others_removes_nobody() -> None:
    _, before, after = COVERED_BY_TWO
    assert not _weaker(before, after)
    plan = make_plan(after, before, created_at="2026-01-01T00:00:00Z")
    assert [(c.effect, c.reason) for c in plan.changes] == [
        (NEUTRAL, "192.0.2.0/24 adds or removes nothing: other entries of g cover the same")
    ]


def test_removing_an_opportunistic_rule_under_a_plain_route() -> None:
    """Under a `tls: none` route the rule was what made the relay try STARTTLS: a loosening."""
    rule = {"name": "try", "direction": "outbound", "match": {"ip_group": "g"}, "level": "opportunistic"}
    before = config(tls={"outbound_default": "none"}, ip_groups={"g": ["192.0.2.0/24"]}, enforced_tls=[rule])
    after = config(tls={"outbound_default": "none"}, ip_groups={"g": ["192.0.2.0/24"]})
    assert _weaker(before, after)
    assert _loosenings(before, after)


def test_removing_an_opportunistic_rule_where_every_route_has_it_is_neutral() -> None:
    rule = {"name": "try", "direction": "outbound", "match": {"ip_group": "g"}, "level": "opportunistic"}
    before = config(tls={"outbound_default": "opportunistic"}, ip_groups={"g": ["192.0.2.0/24"]}, enforced_tls=[rule])
    after = config(tls={"outbound_default": "opportunistic"}, ip_groups={"g": ["192.0.2.0/24"]})
    assert not _weaker(before, after)
    assert not _loosenings(before, after)


@pytest.mark.parametrize(
    ("before", "after", "loosens"),
    [
        ("secure", "refuse", False),
        ("refuse", "secure", True),
        ("refuse", "opportunistic", True),
        ("opportunistic", "mandatory", False),
    ],
)
def test_lowering_what_dane_falls_back_to_is_a_loosening(before: str, after: str, loosens: bool) -> None:
    """`refuse` (no delivery without TLSA records) ranks above every level."""
    tls = {"outbound_default": "dane", "dane": {"fallback": before}}
    old, new = config(tls=tls), config(tls=tls | {"dane": {"fallback": after}})
    assert (_loosenings(old, new) == ["~ tls.dane.fallback"]) is loosens, _loosenings(old, new)


@pytest.mark.parametrize(
    ("before", "after", "effect"),
    [
        ({"nameservers": ["127.0.0.1"], "dnssec": True}, {"nameservers": ["127.0.0.1"]}, "loosening"),
        ({"nameservers": ["127.0.0.1"]}, {"nameservers": ["127.0.0.1"], "dnssec": True}, "tightening"),
        (None, {"nameservers": ["127.0.0.1"], "dnssec": True}, "tightening"),
        ({"nameservers": ["127.0.0.1"], "dnssec": True}, None, "loosening"),
    ],
)
def test_turning_dnssec_validation_off_is_a_loosening(before, after, effect: str) -> None:
    """Without a validating resolver `dane` reads no TLSA records: every host gets the fallback."""

    def with_dns(dns):
        head = copy.deepcopy(HEAD)
        if dns is not None:
            head["system"]["dns"] = dns
        return RelayConfig.model_validate({**head, "tls": {"outbound_default": "dane"}})

    plan = make_plan(with_dns(after), with_dns(before), created_at="2026-01-01T00:00:00Z")
    judged = {label(change): change.effect for change in plan.changes}
    assert effect in judged.values() and all(e in (effect, "neutral") for e in judged.values()), judged
