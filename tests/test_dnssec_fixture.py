"""The validating resolver the DANE tests use (tests/dnssec.py): secure, insecure and bogus
answers, denials of existence, nothing beyond loopback, zones replaced by a restart."""

from __future__ import annotations

import ipaddress
import re
import socket
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.dnssec import ValidatingResolver

TLSA = "3 1 1 " + "ab" * 32
PARTNER = ["@ MX 10 mx1", "mx1 A 127.0.0.1", f"_25._tcp.mx1 TLSA {TLSA}", "away CNAME www.elsewhere.example."]
MX_ONLY = ["@ MX 10 mx1", "mx1 A 127.0.0.1"]


def ask(resolver: ValidatingResolver, name: str, rdtype: str) -> dns.message.Message:
    """A query as a validating stub sends it: EDNS0, the AD bit asking for the AD bit back."""
    query = dns.message.make_query(name, rdtype, use_edns=0)
    query.flags |= dns.flags.AD
    return dns.query.udp(query, resolver.host, port=resolver.port, timeout=2.0)


def answer(response: dns.message.Message) -> list[str]:
    return sorted(rdata.to_text() for rrset in response.answer for rdata in rrset)


def secure(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.AD)


@pytest.fixture
def resolver(validating_resolver: ValidatingResolver) -> ValidatingResolver:
    validating_resolver.zone("partner.example", PARTNER)
    validating_resolver.zone("plain.example", MX_ONLY, signed=False)
    validating_resolver.zone("broken.example", MX_ONLY, bogus=True)
    return validating_resolver.start()


def test_a_signed_zone_answers_securely(resolver: ValidatingResolver) -> None:
    for name, rdtype, expected in [
        ("partner.example", "MX", ["10 mx1.partner.example."]),
        ("mx1.partner.example", "A", ["127.0.0.1"]),
        ("_25._tcp.mx1.partner.example", "TLSA", [TLSA]),
    ]:
        response = ask(resolver, name, rdtype)
        assert response.rcode() == dns.rcode.NOERROR, (name, rdtype)
        assert answer(response) == expected
        assert secure(response), (name, rdtype)
    query = dns.message.make_query("_25._tcp.mx1.partner.example", "TLSA", use_edns=0)
    query.flags |= dns.flags.AD
    over_tcp = dns.query.tcp(query, resolver.host, port=resolver.port, timeout=2.0)
    assert (answer(over_tcp), secure(over_tcp)) == ([TLSA], True)


def test_a_signed_zone_denies_securely(resolver: ValidatingResolver) -> None:
    nxdomain = ask(resolver, "mx2.partner.example", "A")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert secure(nxdomain)
    for name, rdtype in [
        ("mx1.partner.example", "AAAA"),
        ("_25._tcp.mx1.partner.example", "A"),
        ("_tcp.mx1.partner.example", "TLSA"),
    ]:
        nodata = ask(resolver, name, rdtype)  # the last one an empty non-terminal
        assert (nodata.rcode(), answer(nodata)) == (dns.rcode.NOERROR, []), (name, rdtype)
        assert secure(nodata), (name, rdtype)


def test_an_unsigned_zone_answers_insecurely(resolver: ValidatingResolver) -> None:
    response = ask(resolver, "plain.example", "MX")
    assert answer(response) == ["10 mx1.plain.example."]
    assert not secure(response)
    nxdomain = ask(resolver, "mx2.plain.example", "A")
    assert nxdomain.rcode() == dns.rcode.NXDOMAIN
    assert not secure(nxdomain)


def test_a_bogus_zone_fails(resolver: ValidatingResolver) -> None:
    for name, rdtype in [("broken.example", "MX"), ("mx1.broken.example", "A"), ("mx2.broken.example", "A")]:
        response = ask(resolver, name, rdtype)
        assert response.rcode() == dns.rcode.SERVFAIL, (name, rdtype)
        assert answer(response) == []


def test_zones_below_a_signed_zone_are_delegated(validating_resolver: ValidatingResolver) -> None:
    validating_resolver.zone("example", ["partner MX 10 mx1.partner", "mx1.partner A 127.0.0.1"])
    validating_resolver.zone("signed.example", MX_ONLY)
    validating_resolver.zone("plain.example", MX_ONLY, signed=False)
    validating_resolver.zone("broken.example", MX_ONLY, bogus=True)
    resolver = validating_resolver.start()
    assert secure(ask(resolver, "partner.example", "MX"))
    assert secure(ask(resolver, "signed.example", "MX"))
    ds = ask(resolver, "signed.example", "DS")  # from the parent, signed by it
    assert len(answer(ds)) == 1 and secure(ds)
    plain = ask(resolver, "plain.example", "MX")  # no DS, provably: an insecure delegation
    assert (answer(plain), secure(plain)) == (["10 mx1.plain.example."], False)
    no_ds = ask(resolver, "plain.example", "DS")
    assert (no_ds.rcode(), answer(no_ds), secure(no_ds)) == (dns.rcode.NOERROR, [], True)
    assert ask(resolver, "broken.example", "MX").rcode() == dns.rcode.SERVFAIL


def test_nothing_leaves_loopback(resolver: ValidatingResolver) -> None:
    started = time.monotonic()
    outside = ask(resolver, "www.elsewhere.example", "A")
    escaped = ask(resolver, "away.partner.example", "A")  # the CNAME's target is outside the zones
    assert time.monotonic() - started < 1.0
    assert outside.rcode() == dns.rcode.REFUSED
    assert escaped.rcode() == dns.rcode.SERVFAIL
    # Every query unbound sent went to itself (the root stub) or nowhere: none left loopback.
    targets = re.findall(r"sending to target: <[^>]*> (\S+)#(\d+)", resolver.log.read_text())
    assert targets, "the CNAME's target was looked up upstream"
    assert {(ipaddress.ip_address(host).is_loopback, int(port)) for host, port in targets} == {(True, resolver.port)}


def test_a_replaced_zone_is_served_after_a_restart(resolver: ValidatingResolver) -> None:
    assert answer(ask(resolver, "mx1.plain.example", "A")) == ["127.0.0.1"]
    port = resolver.port
    resolver.zone("plain.example", ["@ MX 10 mx1", "mx1 A 127.0.0.2"])
    resolver.restart()
    assert resolver.port == port
    response = ask(resolver, "mx1.plain.example", "A")
    assert answer(response) == ["127.0.0.2"]
    assert secure(response), "the zone is signed now"


def test_a_failed_start_says_why(resolver: ValidatingResolver) -> None:
    resolver.stop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((resolver.host, resolver.port))
        with pytest.raises(RuntimeError, match="could not bind"):
            resolver.restart()
