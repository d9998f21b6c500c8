"""`plan --probe` where the levels are `dane` and `mta-sts`: each MX host met as delivery would.

The recipient domain's DNS comes from a private DNSSEC-validating unbound (`dane`, through the
CLI) or from the small DNS server with an HTTPS policy server beside it (`mta-sts`, in
process: the probe is given an `MTASTS` that knows the policy server's port). The MX hosts are
aiosmtpd sinks on loopback that record every EHLO and MAIL: the probe never sends MAIL, and
a hop the policy refuses is not connected to at all. Lines are compared exactly, with the
negotiated protocol and cipher written `TLS`.
"""

from __future__ import annotations

import re
import ssl
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from engine.config.load import load_config
from engine.plan.diff import diff
from engine.relay.delivery import probe
from engine.relay.delivery.resolve import Resolver
from engine.relay.runtime.live import provision
from engine.relay.tls.dane import TLSA
from engine.relay.tls.mtasts import MTASTS
from tests.cli.test_probe import plan_probe_output
from tests.relay.peers import Sink, SinkHandler
from tests.relay.test_dane import DOMAIN, MX, Certs, serve
from tests.relay.test_mta_sts import ENFORCE, Clock, PolicyServer

HEADER = "Probe (the peers the TLS changes affect, as the relay would meet them after apply):"
FAILING = "  1 peer(s) would not get mail under the new config: it would wait in the queue."
AT_DANE = "dane (>= TLSv1.2, >= 128-bit)"
AT_SECURE = "secure (>= TLSv1.2, >= 128-bit)"


@dataclass
class Watched(SinkHandler):
    """A sink's handler that also records every EHLO (a session) and every MAIL FROM."""

    ehlos: list[str] = field(default_factory=list)
    mails: list[str] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: N802 - aiosmtpd's name
        session.host_name = hostname
        self.ehlos.append(hostname)
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        self.mails.append(address)
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"


def watched(sink: Sink) -> Watched:
    """Give a sink that has not started a `Watched` handler."""
    sink.handler = sink.controller.handler = Watched()
    return sink.handler


def write(path: Path, level: str, dns_port: int, sink_port: int, *, dnssec: bool = True, tls: str = "") -> Path:
    """A config whose route takes partner.example's MX on the sink's port, and an enforced-TLS
    rule at `level` for the partners group."""
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        system:
          fqdn: relay.test.example
          listeners: [{{name: mx, address: 127.0.0.1, port: 2525}}]
          dns: {{nameservers: [127.0.0.1], port: {dns_port}, timeout: 2s, dnssec: {str(dnssec).lower()}}}
        tls: {{outbound_default: opportunistic{tls}}}
        domain_groups:
          partners: [{DOMAIN}]
        enforced_tls:
          - {{name: partners, direction: outbound, match: {{domain_group: partners}}, level: {level}}}
        routes:
          - {{name: mx, recipients: any, next_hop: {{host: {DOMAIN}, port: {sink_port}, mx_lookup: true}}}}
        """)
    )
    return path


def probed(text: str) -> list[str]:
    """The probe's lines of a plan's output, the negotiated protocol and cipher as `TLS`."""
    lines = text[text.index(HEADER) :].rstrip("\n").split("\n")
    return [re.sub(r"TLSv1\.[23] \S+ \(\d+-bit\)", "TLS", line) for line in lines]


def plan_probe(before: Path, after: Path) -> list[str]:
    """`sealrelay plan AFTER --against BEFORE --probe`: the probe's lines."""
    return probed(plan_probe_output(before, after))


def changes(before: Path, after: Path):
    desired, current = load_config(after), load_config(before)
    assert desired.ok and current.ok, desired.diagnostics + current.diagnostics
    return desired, diff(desired.config, current.config)


# -- dane ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def tlsa(certs: Certs, name: str = MX) -> tuple[str, str]:
    """A DANE-EE record of `name`'s key, as written in the zone and as the probe describes it."""
    digest = certs.leaf_spki_sha256(name)
    return f"3 1 1 {digest}", TLSA(3, 1, 1, bytes.fromhex(digest)).describe()


def test_moving_partners_to_dane_names_the_matching_tlsa_record(tmp_path: Path, certs, validating_resolver) -> None:
    record, described = tlsa(certs)
    with Sink(tls=certs.context()) as sink:
        handler = watched(sink)
        serve(validating_resolver, sink.port, record)
        before = write(tmp_path / "before.yaml", "mandatory", validating_resolver.port, sink.port)
        after = write(tmp_path / "after.yaml", "dane", validating_resolver.port, sink.port)
        lines = plan_probe(before, after)
    assert lines == [
        HEADER,
        f"  ok   {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_DANE}: TLS, TLSA matched (DANE)",
        f"       dane: TLSA usable: {described} at _{sink.port}._tcp.{MX}; level dane",
    ]
    assert handler.mails == [] and handler.ehlos  # met, never sent MAIL


def test_a_tlsa_record_of_another_key_fails_with_the_dane_reason(tmp_path: Path, certs, validating_resolver) -> None:
    record, described = tlsa(certs, "other.example.net")
    with Sink(tls=certs.context()) as sink:
        handler = watched(sink)
        serve(validating_resolver, sink.port, record)
        before = write(tmp_path / "before.yaml", "mandatory", validating_resolver.port, sink.port)
        after = write(tmp_path / "after.yaml", "dane", validating_resolver.port, sink.port)
        lines = plan_probe(before, after)
    assert lines == [
        HEADER,
        f"  FAIL {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_DANE}: "
        f"DANE: no TLSA record matches the certificate chain (records: {described})",
        f"       dane: TLSA usable: {described} at _{sink.port}._tcp.{MX}; level dane",
        FAILING,
    ]
    assert handler.mails == [] and handler.ehlos == ["relay.test.example"]  # refused after the handshake


def test_an_unsigned_zone_is_probed_at_the_dane_fallback(tmp_path: Path, certs, validating_resolver) -> None:
    """The unsigned zone publishes a TLSA record of the right key: DANE does not apply all the
    same, and the MX host is probed at `tls.dane.fallback` (secure: the CA file trusts it)."""
    record, _ = tlsa(certs)
    ca_file = tmp_path / "ca.pem"
    certs.root.cert_pem.write_to_path(str(ca_file))
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, record, signed=False)
        tls = f", ca_bundle: {ca_file}"
        before = write(tmp_path / "before.yaml", "mandatory", validating_resolver.port, sink.port, tls=tls)
        after = write(tmp_path / "after.yaml", "dane", validating_resolver.port, sink.port, tls=tls)
        lines = plan_probe(before, after)
    assert lines == [
        HEADER,
        f"  ok   {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_SECURE}: TLS, chain verified, name checked",
        f"       dane: not DNSSEC-validated: the MX or address records of {MX}; DANE does not apply, fallback secure",
    ]


def test_fallback_refuse_fails_a_host_dane_does_not_cover_without_connecting(
    tmp_path: Path, certs, validating_resolver
) -> None:
    """`tls.dane.fallback: refuse` (Postfix's `dane-only`): the unsigned zone's host is a FAIL,
    and no connection is made."""
    record, _ = tlsa(certs)
    with Sink(tls=certs.context()) as sink:
        handler = watched(sink)
        serve(validating_resolver, sink.port, record, signed=False)
        tls = ", dane: {fallback: refuse}"
        before = write(tmp_path / "before.yaml", "mandatory", validating_resolver.port, sink.port, tls=tls)
        after = write(tmp_path / "after.yaml", "dane", validating_resolver.port, sink.port, tls=tls)
        lines = plan_probe(before, after)
    assert lines[2] == (
        f"       dane: not DNSSEC-validated: the MX or address records of {MX}; DANE does not apply, "
        "fallback refuse: not sent"
    )
    assert lines[1].startswith(f"  FAIL {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at ")
    assert lines[1].endswith(
        "`tls.dane.fallback: refuse` sends only to hosts DANE covers; not sent; no connection made"
    )
    assert handler.ehlos == []


def test_a_failed_tlsa_lookup_fails_without_connecting(tmp_path: Path, certs, validating_resolver) -> None:
    record, _ = tlsa(certs)
    with Sink(tls=certs.context()) as sink:
        handler = watched(sink)
        validating_resolver.zone(DOMAIN, ["@ MX 10 mx1", "mx1 A 127.0.0.1"])
        validating_resolver.zone(f"_tcp.{MX}", [f"_{sink.port} TLSA {record}"], bogus=True)
        validating_resolver.start()
        before = write(tmp_path / "before.yaml", "mandatory", validating_resolver.port, sink.port)
        after = write(tmp_path / "after.yaml", "dane", validating_resolver.port, sink.port)
        lines = plan_probe(before, after)
    name = f"_{sink.port}._tcp.{MX}"
    failed = f"TLSA lookup of {name} failed: TLSA lookup failed: no server answered (SERVFAIL or refused)"
    assert lines == [
        HEADER,
        f"  FAIL {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_DANE}: "
        f"{failed}; not sent (DANE cannot be skipped); no connection made",
        f"       dane: lookup failed at {name} (the hop's line says why); not sent (DANE cannot be skipped)",
        FAILING,
    ]
    assert handler.ehlos == []


# -- mta-sts ------------------------------------------------------------------------------------


@pytest.fixture
def pki(ca, tmp_path: Path) -> dict:
    """The test CA's file, a context for the MX hosts that records the names asked for (SNI),
    and one for the policy host."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    mx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(MX, "mx2.partner.example").configure_cert(mx)
    asked: list[str] = []
    mx.sni_callback = lambda _obj, name, _ctx: asked.append(name)
    policy_host = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(f"mta-sts.{DOMAIN}").configure_cert(policy_host)
    return {"ca": ca_file, "mx": mx, "asked": asked, "https": policy_host}


@pytest.fixture
def policies(pki):
    with PolicyServer(pki["https"]) as server:
        yield server


@pytest.fixture
def partner_dns(dns_server):
    """partner.example: MX mx1, its policy host, `_mta-sts` with an id; mx2 has an address."""
    dns_server.zone[(DOMAIN, "MX")] = [(10, MX)]
    dns_server.zone[(MX, "A")] = ["127.0.0.1"]
    dns_server.zone[("mx2.partner.example", "A")] = ["127.0.0.2"]  # nothing listens there
    dns_server.zone[(f"mta-sts.{DOMAIN}", "A")] = ["127.0.0.1"]
    dns_server.zone[(f"_mta-sts.{DOMAIN}", "TXT")] = ['"v=STSv1; id=20260101T000000"']
    return dns_server


async def sts_probe(tmp_path: Path, pki, dns_server, policies: PolicyServer, sink: Sink) -> list[str]:
    """The probe of a plan moving the partners from `secure` to `mta-sts`, in process."""
    tls = f", ca_bundle: {pki['ca']}"
    before = write(tmp_path / "before.yaml", "secure", dns_server.port, sink.port, dnssec=False, tls=tls)
    after = write(tmp_path / "after.yaml", "mta-sts", dns_server.port, sink.port, dnssec=False, tls=tls)
    desired, found = changes(before, after)
    results = await probe.probe(
        desired.config, found, desired.base_dir, mta_sts=MTASTS(https_port=policies.port, clock=Clock())
    )
    return probed(probe.render(results))


async def test_an_enforce_policy_not_naming_the_mx_host_fails_without_connecting(
    tmp_path: Path, pki, partner_dns, policies
) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("mx1", "mx9"))
    with Sink(tls=pki["mx"]) as sink:
        handler = watched(sink)
        lines = await sts_probe(tmp_path, pki, partner_dns, policies, sink)
    assert lines == [
        HEADER,
        f"  FAIL {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at mta-sts (>= TLSv1.2, >= 128-bit): "
        f"MX host {MX} is not in the MTA-STS policy of {DOMAIN} (mx: mx9.partner.example); "
        "not sent (policy fetched); no connection made",
        f"       mta-sts: enforce policy, mx mx9.partner.example (policy fetched): {MX} is not named; not sent",
        FAILING,
    ]
    assert handler.ehlos == [] and pki["asked"] == []
    assert policies.requests == [(f"mta-sts.{DOMAIN}", "/.well-known/mta-sts.txt")]


async def test_the_relays_cached_policy_holds_while_its_server_is_down(
    tmp_path: Path, pki, partner_dns, policies
) -> None:
    """The relay cached an enforce policy naming mx9 (in the config's data_dir); the policy
    server now answers 404. The probe starts from a copy of that cache, as the relay would
    enforce it, and leaves the relay's files as they were."""
    policies.publish(DOMAIN, ENFORCE.replace("mx1", "mx9"))
    cache = tmp_path / "var" / "mta-sts"  # the data_dir of the configs `write` makes: ./var
    relay_side = MTASTS(https_port=policies.port, clock=Clock())
    resolver = Resolver([partner_dns.host], port=partner_dns.port, timeout=2.0)
    cached = await relay_side.lookup(DOMAIN, resolver=resolver, ca_bundle=str(pki["ca"]), cache_dir=cache)
    assert cached.policy is not None and cached.policy.mx == ("mx9.partner.example",)
    files = {path.name: path.read_bytes() for path in cache.iterdir()}
    policies.answers.clear()  # the policy server is down
    with Sink(tls=pki["mx"]) as sink:
        lines = await sts_probe(tmp_path, pki, partner_dns, policies, sink)
    assert lines[1].startswith(f"  FAIL {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at mta-sts")
    assert f"MX host {MX} is not in the MTA-STS policy of {DOMAIN} (mx: mx9.partner.example)" in lines[1]
    assert len(policies.requests) == 1  # the relay's fetch; the probe used the cached copy
    assert {path.name: path.read_bytes() for path in cache.iterdir()} == files


async def test_each_mx_host_is_met_as_the_policy_says(tmp_path: Path, pki, partner_dns, policies) -> None:
    """Two MX hosts, one named by the enforce policy: a line each; the named one is met at
    `secure` (the SNI the sink saw), the other (where nothing listens) is not connected to;
    the policy is fetched once."""
    partner_dns.zone[(DOMAIN, "MX")] = [(10, MX), (20, "mx2.partner.example")]
    policies.publish(DOMAIN, ENFORCE)
    with Sink(tls=pki["mx"]) as sink:
        handler = watched(sink)
        lines = await sts_probe(tmp_path, pki, partner_dns, policies, sink)
    policy = "enforce policy, mx mx1.partner.example (policy fetched)"
    assert lines == [
        HEADER,
        f"  ok   {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_SECURE}: TLS, chain verified, name checked",
        f"       mta-sts: {policy}: {MX} is named; level secure",
        f"  FAIL {DOMAIN}: mx2.partner.example[127.0.0.2]:{sink.port} at mta-sts (>= TLSv1.2, >= 128-bit): "
        f"MX host mx2.partner.example is not in the MTA-STS policy of {DOMAIN} (mx: mx1.partner.example); "
        "not sent (policy fetched); no connection made",
        f"       mta-sts: {policy}: mx2.partner.example is not named; not sent",
        FAILING,
    ]
    assert pki["asked"] == [MX] and handler.mails == []
    assert len(policies.requests) == 1


async def test_a_domain_without_a_policy_is_probed_at_the_fallback(tmp_path: Path, pki, partner_dns, policies) -> None:
    del partner_dns.zone[(f"_mta-sts.{DOMAIN}", "TXT")]
    with Sink(tls=pki["mx"]) as sink:
        lines = await sts_probe(tmp_path, pki, partner_dns, policies, sink)
    assert lines == [
        HEADER,
        f"  ok   {DOMAIN}: {MX}[127.0.0.1]:{sink.port} at {AT_SECURE}: TLS, chain verified, name checked",
        "       mta-sts: no policy (_mta-sts TXT lookup failed: no such domain (NXDOMAIN for TXT)); fallback secure",
    ]
    assert policies.requests == []


# -- what the settings of the per-domain levels touch --------------------------------------------


@pytest.mark.parametrize(
    ("edit", "level", "touched"),
    [
        (("fallback: secure}", "fallback: opportunistic}"), "dane", [("mx", DOMAIN)]),  # tls.dane
        (("fallback: secure}", "fallback: opportunistic}"), "mandatory", []),  # nobody uses dane
        (("timeout: 2s", "timeout: 3s"), "mta-sts", [("mx", DOMAIN)]),  # system.dns
        (("timeout: 2s", "timeout: 3s"), "secure", []),
    ],
)
def test_settings_of_the_levels_touch_their_users(tmp_path: Path, edit, level, touched) -> None:
    tls = ", dane: {fallback: secure}"
    before = write(tmp_path / "before.yaml", level, 53, 25, tls=tls)
    after = tmp_path / "after.yaml"
    after.write_text(before.read_text().replace(*edit))
    desired, found = changes(before, after)
    assert found, "the edit is a change"
    live = provision(desired.config, base_dir=desired.base_dir, version=0, tls=False)
    assert [(route.name, domain) for route, domain in probe.targets(found, desired.config, live)] == touched
