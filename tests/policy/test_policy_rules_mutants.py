"""The policy rules the relay and the guard share (engine/policy/rules.py), pinned exactly:
the order of levels and protocols, which enforced-TLS rules cover a connection, and which
route a domain takes. Written against the surviving mutants of scripts/mutate
(docs/mutation-results.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.config.model.transport import DomainGroupMatch, DomainsMatch, EnforcedTLSRule, IPGroupMatch, Route
from engine.policy import rules
from engine.policy.groups import DomainSet, IPSet

LEVELS = {"none": 0, "opportunistic": 1, "mandatory": 2, "verify": 3, "secure": 4, "dane": 4, "mta-sts": 4}


@pytest.mark.parametrize(("level", "rank"), LEVELS.items())
def test_rank_and_enforced_level(level: str, rank: int) -> None:
    assert rules.rank(level) == rank
    assert rules.enforced_level(level) == ("secure" if rank == 4 else level)


def test_rank_refuses_a_name_that_is_not_a_level() -> None:
    with pytest.raises(KeyError):
        rules.rank("strict")


def test_strictest_and_strongest_take_the_first_of_equals() -> None:
    assert rules.strictest("opportunistic", "verify", "mandatory") == "verify"
    assert rules.strictest("dane", "secure") == "dane"
    assert rules.strictest("secure", "mta-sts") == "secure"
    assert rules.strongest_protocol("TLSv1.2", "TLSv1", "TLSv1.3", "TLSv1.1") == "TLSv1.3"
    assert rules.strongest_protocol("TLSv1.1", "TLSv1") == "TLSv1.1"


def _third_party(group: str | None) -> SimpleNamespace:
    third_party = SimpleNamespace(encrypted_ip_group=group) if group else None
    return SimpleNamespace(encryption=SimpleNamespace(third_party=third_party))


def test_gateway_group() -> None:
    assert rules.gateway_group(_third_party(None)) == "encryption_gateway"
    assert rules.gateway_group(_third_party("crypto_boxes")) == "crypto_boxes"


IP_GROUPS = {"banks": IPSet.of(["203.0.113.0/24"]), "lab": IPSet.of(["192.168.0.0/16"])}
DOMAIN_GROUPS = {
    "partners": DomainSet.of(["partner.example", "*.bank.example"]),
    "vendors": DomainSet.of(["vendor.example"]),
}


def _rule(name: str, direction: str, match: IPGroupMatch | DomainGroupMatch) -> EnforcedTLSRule:
    return EnforcedTLSRule(name=name, direction=direction, match=match, level="verify")


RULES = [
    _rule("banks-in", "inbound", IPGroupMatch(ip_group="banks")),
    _rule("partners-out", "outbound", DomainGroupMatch(domain_group="partners")),
    _rule("banks-both", "both", IPGroupMatch(ip_group="banks")),
    _rule("vendors-both", "both", DomainGroupMatch(domain_group="vendors")),
]


@pytest.mark.parametrize(
    ("direction", "ip", "domain", "names"),
    [
        ("inbound", "203.0.113.9", "x.example", ["banks-in", "banks-both"]),
        ("outbound", "203.0.113.9", "x.example", ["banks-both"]),
        ("outbound", "198.51.100.1", "a.bank.example", ["partners-out"]),
        ("inbound", "198.51.100.1", "a.bank.example", []),
        ("inbound", None, "vendor.example", ["vendors-both"]),
        ("outbound", "203.0.113.9", "vendor.example", ["banks-both", "vendors-both"]),
        ("outbound", None, "bank.example", []),
    ],
)
def test_enforced_rules(direction: str, ip: str | None, domain: str, names: list[str]) -> None:
    found = rules.enforced_rules(RULES, direction, ip, domain, IP_GROUPS, DOMAIN_GROUPS)
    assert [rule.name for rule in found] == names


def test_peer_matches() -> None:
    by_ip, by_domain = IPGroupMatch(ip_group="banks"), DomainGroupMatch(domain_group="partners")
    assert rules.peer_matches(by_ip, "203.0.113.1", "other.example", IP_GROUPS, DOMAIN_GROUPS) is True
    assert rules.peer_matches(by_ip, "192.168.1.1", "partner.example", IP_GROUPS, DOMAIN_GROUPS) is False
    assert rules.peer_matches(by_domain, "203.0.113.1", "partner.example", IP_GROUPS, DOMAIN_GROUPS) is True
    assert rules.peer_matches(by_domain, "203.0.113.1", "other.example", IP_GROUPS, DOMAIN_GROUPS) is False


def _route(name: str, recipients: object, tls: str | None = None) -> Route:
    return Route(name=name, recipients=recipients, tls=tls)


def test_recipients_of_a_route() -> None:
    assert rules.recipients(_route("r", "any"), DOMAIN_GROUPS) is None
    assert rules.recipients(_route("r", {"domain_group": "vendors"}), DOMAIN_GROUPS) is DOMAIN_GROUPS["vendors"]
    listed = rules.recipients(_route("r", DomainsMatch(domains=["*.Shop.Example"])), DOMAIN_GROUPS)
    assert listed == DomainSet.of(["*.shop.example"])


def test_route_level() -> None:
    assert rules.route_level("verify", "opportunistic") == "verify"
    assert rules.route_level(None, "mandatory") == "mandatory"


def _table(routes: list[Route], default: str = "opportunistic") -> list[tuple[str, str, bool]]:
    """(name, tls, has a route) per line of the routing table."""
    return [(c.name, c.tls, c.route is not None) for c in rules.routing_table(routes, DOMAIN_GROUPS, default)]


def test_routing_table_ends_with_a_route_for_every_recipient() -> None:
    vendors = _route("vendors", {"domain_group": "vendors"}, "verify")
    listed = _route("shops", {"domains": ["shop.example"]})
    assert _table([]) == [("default", "opportunistic", False)]
    assert _table([vendors, listed], "mandatory") == [
        ("vendors", "verify", True),
        ("shops", "mandatory", True),
        ("default", "mandatory", False),
    ]
    # a last route for any recipient is the default: no implicit route after it
    assert _table([vendors, _route("all", "any", "secure")]) == [("vendors", "verify", True), ("all", "secure", True)]
    assert _table([_route("all", "any"), vendors]) == [
        ("all", "opportunistic", True),
        ("vendors", "verify", True),
        ("default", "opportunistic", False),
    ]
    table = rules.routing_table([vendors], DOMAIN_GROUPS, "opportunistic")
    assert table[0].domains is DOMAIN_GROUPS["vendors"] and table[0].route is vendors and table[-1].domains is None


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("vendor.example", "vendors"),
        ("a.bank.example", "partners"),
        ("partner.example", "partners"),
        ("other.example", "default"),
        (None, "default"),  # a domain no pattern names
    ],
)
def test_route_for_first_match_wins(domain: str | None, name: str) -> None:
    table = rules.routing_table(
        [
            _route("vendors", {"domain_group": "vendors"}),
            _route("partners", {"domain_group": "partners"}),
            _route("vendors-again", {"domains": ["vendor.example"]}),
        ],
        DOMAIN_GROUPS,
        "opportunistic",
    )
    assert rules.route_for(table, domain).name == name


def test_route_for_falls_back_to_the_last_line() -> None:
    only = rules.RouteChoice("partners", DOMAIN_GROUPS["partners"], "verify", None)
    assert rules.route_for([only], "other.example") is only
    everyone = rules.RouteChoice("all", None, "secure", None)
    assert rules.route_for([only, everyone], None) is everyone


@pytest.mark.parametrize(
    ("entry", "domain", "matches"),
    [
        ("Partner.Example", "partner.example.", True),
        ("*.bank.example", "x.bank.example", True),
        ("*.bank.example", "bank.example", False),
        (".bank.example", "x.bank.example", False),
    ],
)
def test_domain_matches(entry: str, domain: str, matches: bool) -> None:
    assert rules.domain_matches(entry, domain) is matches
