"""Next-hop resolution against a real DNS server on loopback (tests/dnsserver.py): MX order,
implicit MX, null MX, NXDOMAIN, SERVFAIL and timeouts, literals, IPv6, truncation to TCP."""

from __future__ import annotations

import random
import time

import dnsserver
import pytest
from dnsserver import DNSServer

from engine.relay.delivery.resolve import Hop, PermanentDNSError, Resolver, TemporaryDNSError
from tests.conftest import require

dns_server = dnsserver.dns_server  # the fixture, until conftest imports it for every test


def resolver_for(server: DNSServer, timeout: float = 2.0, **kwargs) -> Resolver:
    return Resolver([server.host], port=server.port, timeout=timeout, **kwargs)


async def test_mx_hosts_in_preference_order(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("partner.example", "MX"): [(20, "mx2.partner.example"), (10, "mx1.partner.example")],
            ("mx1.partner.example", "A"): ["127.0.0.1"],
            ("mx2.partner.example", "A"): ["127.0.0.2"],
        }
    )
    hops = await resolver_for(dns_server).mx_hosts("partner.example")
    assert hops == [
        Hop("mx1.partner.example", "127.0.0.1", 25, 10),
        Hop("mx2.partner.example", "127.0.0.2", 25, 20),
    ]
    assert dns_server.queried("partner.example", "MX")


async def test_equal_preferences_are_shuffled_but_stay_within_their_rank(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("partner.example", "MX"): [
                (10, "a.partner.example"),
                (10, "b.partner.example"),
                (5, "first.partner.example"),
                (30, "last.partner.example"),
            ],
            ("a.partner.example", "A"): ["127.0.0.10"],
            ("b.partner.example", "A"): ["127.0.0.11"],
            ("first.partner.example", "A"): ["127.0.0.5"],
            ("last.partner.example", "A"): ["127.0.0.30"],
        }
    )
    resolver = resolver_for(dns_server, rng=random.Random(7))
    middles = set()
    for _ in range(20):
        hosts = [hop.host for hop in await resolver.mx_hosts("partner.example")]
        assert hosts[0] == "first.partner.example" and hosts[3] == "last.partner.example"
        assert set(hosts[1:3]) == {"a.partner.example", "b.partner.example"}
        middles.add(tuple(hosts[1:3]))
    assert len(middles) == 2, "equal-preference MX hosts were never reordered"


async def test_no_mx_means_the_domain_is_its_own_mx(dns_server: DNSServer) -> None:
    dns_server.zone[("plain.example", "A")] = ["127.0.0.3"]
    hops = await resolver_for(dns_server).mx_hosts("plain.example")
    assert hops == [Hop("plain.example", "127.0.0.3", 25, 0)]
    assert dns_server.queried("plain.example", "MX")


async def test_null_mx_is_permanent(dns_server: DNSServer) -> None:
    dns_server.zone[("nomail.example", "MX")] = [(0, ".")]
    dns_server.zone[("nomail.example", "A")] = ["127.0.0.4"]  # must not be used as implicit MX
    with pytest.raises(PermanentDNSError, match=r"domain accepts no mail \(null MX\)") as caught:
        await resolver_for(dns_server).mx_hosts("nomail.example")
    assert caught.value.status == "5.1.10"
    assert not dns_server.queried("nomail.example", "A")


async def test_nxdomain_is_permanent(dns_server: DNSServer) -> None:
    with pytest.raises(PermanentDNSError) as caught:
        await resolver_for(dns_server).mx_hosts("nowhere.example")
    assert caught.value.status.startswith("5.")


async def test_name_with_records_but_no_address_is_permanent(dns_server: DNSServer) -> None:
    dns_server.zone[("textonly.example", "TXT")] = ['"v=spf1 -all"']
    with pytest.raises(PermanentDNSError, match="no A or AAAA"):
        await resolver_for(dns_server).mx_hosts("textonly.example")


async def test_servfail_is_temporary_and_does_not_fall_back_to_a(dns_server: DNSServer) -> None:
    dns_server.zone[("broken.example", "A")] = ["127.0.0.5"]
    dns_server.servfail.add("broken.example")
    with pytest.raises(TemporaryDNSError) as caught:
        await resolver_for(dns_server).mx_hosts("broken.example")
    assert caught.value.status == "4.4.3"
    assert not dns_server.queried("broken.example", "A")


async def test_timeout_is_temporary_and_bounded(dns_server: DNSServer) -> None:
    dns_server.drop.add("slow.example")
    started = time.monotonic()
    with pytest.raises(TemporaryDNSError, match="timed out"):
        await resolver_for(dns_server, timeout=0.3).mx_hosts("slow.example")
    took = time.monotonic() - started
    # It waited for the answer (at least the timeout) and gave up long before dnspython's own
    # 5 s lifetime would have: the bound is ours. The margin is for a loaded machine.
    assert 0.3 <= took < 3.5, took
    assert dns_server.queried("slow.example", "MX")


async def test_unreachable_nameserver_is_temporary() -> None:
    with DNSServer() as server:
        port = server.port
    # Nothing listens any more: UDP gets "port unreachable" or no answer, either is temporary.
    with pytest.raises(TemporaryDNSError):
        await Resolver(["127.0.0.1"], port=port, timeout=0.3).mx_hosts("partner.example")


async def test_an_mx_host_that_fails_is_skipped_when_another_resolves(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("partner.example", "MX"): [
                (10, "gone.partner.example"),
                (20, "flaky.partner.example"),
                (30, "ok.partner.example"),
            ],
            ("flaky.partner.example", "A"): ["127.0.0.20"],
            ("ok.partner.example", "A"): ["127.0.0.30"],
        }
    )
    dns_server.servfail.add("flaky.partner.example")
    hops = await resolver_for(dns_server).mx_hosts("partner.example")
    assert hops == [Hop("ok.partner.example", "127.0.0.30", 25, 30)]


async def test_mx_hosts_none_of_which_resolve(dns_server: DNSServer) -> None:
    dns_server.zone[("partner.example", "MX")] = [(10, "gone.partner.example")]
    with pytest.raises(PermanentDNSError, match="no MX host has an address"):
        await resolver_for(dns_server).mx_hosts("partner.example")
    dns_server.zone[("partner.example", "MX")] = [(10, "gone.partner.example"), (20, "flaky.partner.example")]
    dns_server.zone[("flaky.partner.example", "A")] = ["127.0.0.20"]
    dns_server.servfail.add("flaky.partner.example")
    with pytest.raises(TemporaryDNSError, match="no MX host could be resolved for now"):
        await resolver_for(dns_server).mx_hosts("partner.example")


async def test_ip_literals_need_no_dns(dns_server: DNSServer) -> None:
    resolver = resolver_for(dns_server)
    assert await resolver.host_addresses("127.0.0.1") == ["127.0.0.1"]
    assert await resolver.host_addresses("::1") == ["::1"]
    assert await resolver.mx_hosts("[127.0.0.1]") == [Hop("[127.0.0.1]", "127.0.0.1")]
    assert await resolver.mx_hosts("[IPv6:::1]") == [Hop("[IPv6:::1]", "::1")]
    assert await resolver.host_hops("127.0.0.1", 2525, mx_lookup=True) == [Hop("127.0.0.1", "127.0.0.1", 2525)]
    assert dns_server.queries == []


async def test_mx_naming_an_ip_address_is_used_as_is(dns_server: DNSServer) -> None:
    dns_server.zone[("sloppy.example", "MX")] = [(10, "127.0.0.9")]
    hops = await resolver_for(dns_server).mx_hosts("sloppy.example")
    assert hops == [Hop("127.0.0.9", "127.0.0.9", 25, 10)]


async def test_mx_host_behind_a_cname(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("alias.example", "MX"): [(10, "mail.alias.example")],
            ("mail.alias.example", "CNAME"): ["real.hosting.example"],
            ("real.hosting.example", "A"): ["127.0.0.7"],
        }
    )
    hops = await resolver_for(dns_server).mx_hosts("alias.example")
    # The hop keeps the MX host's name: that is the name a certificate is checked against.
    assert hops == [Hop("mail.alias.example", "127.0.0.7", 25, 10)]


async def test_aaaa_and_multiple_a_records(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("dual.example", "A"): ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
            ("dual.example", "AAAA"): ["::1"],
            ("v6only.example", "AAAA"): ["::1"],
        }
    )
    resolver = resolver_for(dns_server)
    addresses = await resolver.host_addresses("dual.example")
    assert sorted(addresses[:3]) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert addresses[3:] == ["::1"]
    assert await resolver.host_addresses("v6only.example") == ["::1"]
    hops = await resolver.mx_hosts("v6only.example")
    assert hops == [Hop("v6only.example", "::1", 25, 0)]


async def test_host_hops_with_and_without_mx_lookup(dns_server: DNSServer) -> None:
    dns_server.zone.update(
        {
            ("smarthost.example", "MX"): [(10, "mx.smarthost.example")],
            ("smarthost.example", "A"): ["127.0.0.40"],
            ("mx.smarthost.example", "A"): ["127.0.0.41"],
        }
    )
    resolver = resolver_for(dns_server)
    assert await resolver.host_hops("smarthost.example", 2525, mx_lookup=True) == [
        Hop("mx.smarthost.example", "127.0.0.41", 2525, 10)
    ]
    assert await resolver.host_hops("smarthost.example", 2525, mx_lookup=False) == [
        Hop("smarthost.example", "127.0.0.40", 2525, 0)
    ]
    with pytest.raises(PermanentDNSError):
        await resolver.host_hops("missing.example", 25, mx_lookup=False)


async def test_large_answer_is_truncated_over_udp_and_fetched_over_tcp(dns_server: DNSServer) -> None:
    many = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(200)]  # ~3.2 KB of answers
    dns_server.zone[("big.example", "A")] = many
    addresses = await resolver_for(dns_server).host_addresses("big.example")
    assert sorted(addresses) == sorted(many)
    assert dns_server.queried("big.example", "A", "udp")
    assert dns_server.queried("big.example", "A", "tcp")


async def test_server_on_ipv6_loopback() -> None:
    server, why = None, ""
    try:
        server = DNSServer({("partner.example", "A"): ["127.0.0.1"]}, host="::1").start()
    except OSError as exc:
        why = str(exc)
    require(server, f"no IPv6 loopback here: {why}")
    try:
        assert await Resolver(["::1"], port=server.port, timeout=2.0).host_addresses("partner.example") == ["127.0.0.1"]
    finally:
        server.stop()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Resolver([], port=53)
    with pytest.raises(ValueError):
        Resolver(["127.0.0.1"], timeout=0)
    with pytest.raises(ValueError):
        Resolver(["not-an-ip"])


async def test_invalid_domain_is_permanent(dns_server: DNSServer) -> None:
    with pytest.raises(PermanentDNSError, match="invalid domain name"):
        await resolver_for(dns_server).mx_hosts("a..b")
    with pytest.raises(PermanentDNSError, match="empty domain"):
        await resolver_for(dns_server).mx_hosts("")
