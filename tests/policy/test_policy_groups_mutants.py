"""What a group entry matches and covers (engine/policy/groups.py), pinned case by case: the
relay decides which peers and domains a rule covers with it, and the guard whether an entry
removed is still covered. Written against the surviving mutants of scripts/mutate
(docs/mutation-results.md)."""

from __future__ import annotations

import ipaddress

import pytest

from engine.policy import groups
from engine.policy.groups import DomainSet, IPSet, domain_of, parse_ip

NETS = IPSet.of(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("10.1.2.3", True),
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("::ffff:10.0.0.1", True),  # IPv4-mapped IPv6 is the IPv4 peer
        ("2001:db8::1%eth0", True),  # a zone id is not part of the address
        ("2001:db9::1", False),
        ("not-an-ip", False),
        ("", False),
        (None, False),
    ],
)
def test_ipset_contains(address: str | None, inside: bool) -> None:
    assert NETS.contains(address) is inside


def test_ipset_answers_are_kept_per_address_and_bounded(monkeypatch) -> None:
    """Each address's answer is kept (the same peers ask all day), apart for each set, and
    no more than `_ANSWERS_KEPT` of them: asked again, every answer is still right."""
    monkeypatch.setattr(groups, "_ANSWERS_KEPT", 4)
    nets, other = IPSet.of(["10.0.0.0/8"]), IPSet.of(["192.0.2.0/24"])
    addresses = [f"10.0.0.{n}" for n in range(6)] + ["192.0.2.1", "::ffff:10.0.0.9", "not an ip", "10.0.0.1"]
    for _ in range(2):
        for address in addresses:
            assert nets.contains(address) is (address.startswith("10.") or address == "::ffff:10.0.0.9")
            assert other.contains(address) is (address == "192.0.2.1")
            assert len(nets._answers) <= 4 and len(other._answers) <= 4  # noqa: SLF001
    assert nets == IPSet.of(["10.0.0.0/8"])  # what is kept is no part of what the set is


def test_ipset_of_accepts_host_bits() -> None:
    assert IPSet.of(["10.1.2.3/8"]).networks == (ipaddress.ip_network("10.0.0.0/8"),)
    assert IPSet.of([]).contains("10.0.0.1") is False


@pytest.mark.parametrize(
    ("entry", "covered"),
    [
        ("10.2.0.0/16", True),
        ("10.2.3.4/16", True),  # host bits are ignored, as in the group itself
        ("10.0.0.0/8", True),
        ("10.0.0.0/7", False),
        ("192.0.2.7/32", True),
        ("192.0.2.6", False),
        ("2001:db8:1::/48", True),
        ("::ffff:10.0.0.1", False),  # an IPv6 network is never inside an IPv4 one
        ("not-a-net", False),
    ],
)
def test_ipset_covers(entry: str, covered: bool) -> None:
    assert NETS.covers(entry) is covered


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("192.0.2.1", ipaddress.IPv4Address("192.0.2.1")),
        ("::ffff:192.0.2.1", ipaddress.IPv4Address("192.0.2.1")),
        ("fe80::1%eth0", ipaddress.IPv6Address("fe80::1")),
        ("2001:db8::1", ipaddress.IPv6Address("2001:db8::1")),
        ("example.com", None),
    ],
)
def test_parse_ip(address: str, expected: object) -> None:
    assert parse_ip(address) == expected


DOMAINS = DomainSet.of(["Partner.Example.", "*.bank.example", "*.Deep.Example"])


def test_domainset_of_normalises() -> None:
    assert DOMAINS.exact == frozenset({"partner.example"})
    assert DOMAINS.suffixes == (".bank.example", ".deep.example")


@pytest.mark.parametrize(
    ("domain", "inside"),
    [
        ("partner.example", True),
        ("PARTNER.example.", True),
        ("sub.partner.example", False),  # an exact entry has no subdomains
        ("a.bank.example", True),
        ("a.b.bank.example", True),
        ("bank.example", False),  # a wildcard is not its own suffix
        ("evilbank.example", False),
        ("x.deep.example", True),
        ("other.example", False),
    ],
)
def test_domainset_contains(domain: str, inside: bool) -> None:
    assert DOMAINS.contains(domain) is inside


@pytest.mark.parametrize(
    ("entry", "covered"),
    [
        ("partner.example", True),
        ("PARTNER.EXAMPLE.", True),
        ("x.bank.example", True),
        ("*.x.bank.example", True),  # a narrower wildcard under a wider one
        ("*.bank.example", True),
        ("*.Bank.Example.", True),
        ("bank.example", False),
        ("*.example", False),  # wider than anything held
        ("*.partner.example", False),  # an exact entry does not cover subdomains
        ("other.example", False),
    ],
)
def test_domainset_covers(entry: str, covered: bool) -> None:
    assert DOMAINS.covers(entry) is covered


@pytest.mark.parametrize(
    ("address", "domain"),
    [
        ("Alice@Example.COM", "example.com"),
        ("a@b@example.com", "example.com"),
        ("postmaster@[192.0.2.1]", "192.0.2.1"),
        ("", ""),
        ("postmaster", ""),
    ],
)
def test_domain_of(address: str, domain: str) -> None:
    assert domain_of(address) == domain
