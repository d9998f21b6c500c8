"""DANE (RFC 7672) against real peers on loopback, with DNS from a DNSSEC-validating unbound.

The recipient domains live in zones a private unbound serves (tests/dnssec.py): signed ones
(answers validated: the AD bit), an unsigned one, and a bogus one. Their MX hosts are aiosmtpd
sinks on 127.0.0.1 whose certificates come from a CA the relay does not trust (`tls.ca_bundle`
stays the system's): whatever is delivered under DANE was authenticated by the TLSA records
alone. An enforced-TLS rule asks for `dane` for the partners group. Every refusal is checked
to have sent the sink nothing.
"""

from __future__ import annotations

import hashlib
import logging
import ssl

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from engine.relay.tls import tlsrpt
from tests.relay.peers import Sink, eventually
from tests.relay.test_mta_sts import deferred, delivered
from tests.relay.test_relay_flow import message, send

DOMAIN = "partner.example"
MX = "mx1.partner.example"


class Certs:
    """A CA the relay does not trust, with an intermediate; server contexts and TLSA data."""

    def __init__(self) -> None:
        self.root = trustme.CA()
        self.intermediate = self.root.create_child_ca()
        self.leaves = {name: self.intermediate.issue_cert(name) for name in (MX, "other.example.net")}

    def context(self, name: str = MX) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.leaves[name].configure_cert(context)  # sends the leaf and the intermediate
        return context

    def leaf_spki_sha256(self, name: str = MX) -> str:
        leaf = x509.load_pem_x509_certificate(self.leaves[name].cert_chain_pems[0].bytes())
        return hashlib.sha256(
            leaf.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).hexdigest()

    def intermediate_sha256(self) -> str:
        cert = x509.load_pem_x509_certificate(self.intermediate.cert_pem.bytes())
        return hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def certs() -> Certs:
    return Certs()


def config(sink_port: int, dns_port: int, *, domain: str = DOMAIN, fallback: str = "secure", dnssec: bool = True):
    """YAML pieces: the route takes `domain`'s MX on the sink's port; `dane` for the partners."""
    extra = f"""
    tls:
      outbound_default: opportunistic
      dane: {{fallback: {fallback}}}
    domain_groups:
      partners: [{domain}]
    enforced_tls:
      - {{name: partners-dane, direction: outbound, match: {{domain_group: partners}}, level: dane}}
    routes:
      - {{name: mx, recipients: any, next_hop: {{host: {domain}, port: {sink_port}, mx_lookup: true}}}}
    """
    system = f"  dns: {{nameservers: [127.0.0.1], port: {dns_port}, timeout: 2s, dnssec: {str(dnssec).lower()}}}\n"
    system += "  tls_reporting: {enabled: true, organization: Test Org, contact: tlsrpt@example.com}\n"
    return extra, system


async def relay_for(write_config, start_relay, sink: Sink, resolver, **kwargs):
    extra, system = config(sink.port, resolver.port, **kwargs)
    return await start_relay(write_config(extra, system=system))


def serve(resolver, port: int, *tlsa: str, origin: str = DOMAIN, **zone) -> None:
    """`origin` with MX mx1 (127.0.0.1) and the TLSA records of mx1's port `port`; started."""
    records = ["@ MX 10 mx1", "mx1 A 127.0.0.1", *(f"_{port}._tcp.mx1 TLSA {rdata}" for rdata in tlsa)]
    resolver.zone(origin, records, **zone)
    resolver.start()


async def refused(relay, sink: Sink, to: str = f"bob@{DOMAIN}"):
    """Send one message; it must be deferred with nothing sent. Its queue detail."""
    _, reply = await send(relay, message(to=to))
    detail = await deferred(relay, reply.split()[-1])
    assert sink.messages == []
    return detail.recipients[0]


async def accepted(relay, sink: Sink, caplog) -> tuple:
    """Send one message; it must arrive. What the sink got, and the delivery's log event."""
    await send(relay, message())
    [got] = await sink.received(1)
    return got, await delivered(caplog)


# -- authenticated by TLSA records ------------------------------------------------------------


async def test_dane_ee_authenticates_a_certificate_no_trusted_ca_issued(
    certs, validating_resolver, write_config, start_relay, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        got, event = await accepted(relay, sink, caplog)
        assert got.tls in ("TLSv1.2", "TLSv1.3")
    assert event["tls"].endswith(", TLSA matched (DANE)"), event["tls"]
    assert "chain verified" not in event["tls"]


async def test_dane_ee_of_another_key_refuses_the_host(certs, validating_resolver, write_config, start_relay) -> None:
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256('other.example.net')}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        rcpt = await refused(relay, sink)
    assert "DANE: no TLSA record matches the certificate chain (records: DANE-EE 3 1 1 " in rcpt.last_error
    assert rcpt.last_error.endswith(f"required by routes.mx, enforced_tls.partners-dane, DANE (_{sink.port}._tcp.{MX})")
    assert rcpt.last_tls.startswith("refused: DANE")


async def test_dane_ta_authenticates_a_chain_to_the_named_issuer(
    certs, validating_resolver, write_config, start_relay, caplog
) -> None:
    """`2 0 1` of the intermediate: a leaf it issued for the MX host is delivered to."""
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"2 0 1 {certs.intermediate_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        _, event = await accepted(relay, sink, caplog)
    assert "TLSA matched (DANE)" in event["tls"]


async def test_dane_ta_refuses_a_leaf_for_another_name(certs, validating_resolver, write_config, start_relay) -> None:
    """The same issuer, a leaf for another name: §3.2.2 wants the MX host or the recipient domain."""
    with Sink(tls=certs.context("other.example.net")) as sink:
        serve(validating_resolver, sink.port, f"2 0 1 {certs.intermediate_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        rcpt = await refused(relay, sink)
    assert "DANE: the chain does not validate to the DANE-TA certificate: validation failed: " in rcpt.last_error
    assert "leaf certificate has no matching subjectAltName" in rcpt.last_error


async def test_usable_records_and_no_starttls_send_nothing_in_clear(
    certs, validating_resolver, write_config, start_relay
) -> None:
    with Sink() as sink:  # no STARTTLS
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        rcpt = await refused(relay, sink)
    assert "peer offered no STARTTLS; dane (>= TLSv1.2, >= 128-bit) required by" in rcpt.last_error


async def test_unusable_records_mean_tls_without_authentication(
    certs, validating_resolver, write_config, start_relay, caplog
) -> None:
    """RFC 7672 §2.2: records all unusable (PKIX-EE here) still demand TLS; the certificate
    (for another name, from a CA the relay does not trust) is not checked."""
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink(tls=certs.context("other.example.net")) as sink:
        serve(validating_resolver, sink.port, f"1 1 1 {certs.leaf_spki_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        _, event = await accepted(relay, sink, caplog)
    assert "chain verified" not in event["tls"] and "TLSA" not in event["tls"]


async def test_unusable_records_still_refuse_clear_text(certs, validating_resolver, write_config, start_relay) -> None:
    with Sink() as sink:
        serve(validating_resolver, sink.port, f"1 1 1 {certs.leaf_spki_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        rcpt = await refused(relay, sink)
    assert "peer offered no STARTTLS; mandatory (>= TLSv1.2, >= 128-bit) required by" in rcpt.last_error
    assert rcpt.last_error.endswith(f"DANE (_{sink.port}._tcp.{MX}, unusable records)")


# -- where DANE does not apply: the fallback ------------------------------------------------------


async def test_no_tlsa_records_in_a_signed_zone_means_the_fallback(
    validating_resolver, write_config, start_relay, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink() as sink:
        serve(validating_resolver, sink.port)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        got, event = await accepted(relay, sink, caplog)
    assert got.tls is None and event["tls"] == "none (peer offered no STARTTLS)"


async def test_tlsa_records_in_an_unsigned_zone_are_ignored(
    certs, validating_resolver, write_config, start_relay
) -> None:
    """Records an attacker could have forged are no DANE: with fallback `opportunistic` a peer
    without STARTTLS gets the mail, though the unsigned zone publishes a TLSA record."""
    with Sink() as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}", signed=False)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        await send(relay, message())
        [got] = await sink.received(1)
    assert got.tls is None


async def test_an_unsigned_tlsa_record_does_not_vouch_for_a_certificate(
    certs, validating_resolver, write_config, start_relay
) -> None:
    """With the default fallback `secure`, a certificate from an untrusted CA is refused though
    the unsigned zone's TLSA record names it."""
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}", signed=False)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        rcpt = await refused(relay, sink)
    assert "unknown CA" in rcpt.last_error and "secure (>= TLSv1.2" in rcpt.last_error
    assert "DANE" not in rcpt.last_error


async def test_a_resolver_not_declared_validating_is_not_trusted(
    certs, validating_resolver, write_config, start_relay
) -> None:
    """`system.dns.dnssec: false`: the AD bit is not asked for nor believed; the fallback."""
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}")
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, dnssec=False)
        rcpt = await refused(relay, sink)
    assert "unknown CA" in rcpt.last_error and "DANE" not in rcpt.last_error


async def test_a_bogus_zone_delivers_nothing(certs, validating_resolver, write_config, start_relay) -> None:
    """A signature that does not validate is a SERVFAIL: nothing is looked up further, and
    nothing is sent, whatever the fallback."""
    with Sink() as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}", bogus=True)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        rcpt = await refused(relay, sink)
    assert "SERVFAIL" in rcpt.last_error


async def test_a_failed_tlsa_lookup_refuses_the_host(certs, validating_resolver, write_config, start_relay) -> None:
    """The MX host's addresses are validated, but its TLSA records sit in a zone whose
    signatures do not validate: §2.2 forbids skipping DANE then. Nothing is sent."""
    with Sink() as sink:
        validating_resolver.zone(DOMAIN, ["@ MX 10 mx1", "mx1 A 127.0.0.1"])
        validating_resolver.zone(f"_tcp.{MX}", [f"_{sink.port} TLSA 3 1 1 {certs.leaf_spki_sha256()}"], bogus=True)
        validating_resolver.start()
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="opportunistic")
        rcpt = await refused(relay, sink)
    assert f"TLSA lookup of _{sink.port}._tcp.{MX} failed" in rcpt.last_error
    assert "not sent (DANE cannot be skipped)" in rcpt.last_error


# -- TLS-RPT ---------------------------------------------------------------------------------


async def test_tls_rpt_counts_a_tlsa_mismatch_under_the_hosts_records(
    certs, validating_resolver, write_config, start_relay
) -> None:
    published = f"3 1 1 {certs.leaf_spki_sha256('other.example.net')}"
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, published)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver)
        await refused(relay, sink)
        recorder = relay.deliverer.tls_reports

        async def counted():
            day = tlsrpt.day_of(relay.deliverer.clock())
            found = await recorder.call(relay.live.data_dir, lambda store: store.sessions(day, DOMAIN))
            return found or None

        [(session, count)] = await eventually(counted, what="the session to be counted")
    assert session.result == "tlsa-invalid" and count >= 1
    assert session.policy == {"policy-type": "tlsa", "policy-string": [published], "mx-host": [MX]}
    assert session.mx == MX and session.reason.startswith("no TLSA record matches the certificate chain")


async def test_dane_as_the_outbound_default(certs, validating_resolver, write_config, start_relay, caplog) -> None:
    """`tls.outbound_default: dane` (Postfix's `dane` with fallback `opportunistic`): no rule
    needed; a route without `tls` delivers under the MX host's TLSA records."""
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}")
        extra = f"""
        tls:
          outbound_default: dane
          dane: {{fallback: opportunistic}}
        routes:
          - {{name: mx, recipients: any, next_hop: {{host: {DOMAIN}, port: {sink.port}, mx_lookup: true}}}}
        """
        system = f"  dns: {{nameservers: [127.0.0.1], port: {validating_resolver.port}, timeout: 2s, dnssec: true}}\n"
        relay = await start_relay(write_config(extra, system=system))
        _, event = await accepted(relay, sink, caplog)
    assert event["tls"].endswith(", TLSA matched (DANE)")


async def test_fallback_refuse_sends_only_where_dane_applies(
    certs, validating_resolver, write_config, start_relay
) -> None:
    """`tls.dane.fallback: refuse` (Postfix's `dane-only`): a host in an unsigned zone gets
    nothing, even with STARTTLS and a certificate; TLS-RPT counts it as `dane-required`."""
    with Sink(tls=certs.context()) as sink:
        serve(validating_resolver, sink.port, f"3 1 1 {certs.leaf_spki_sha256()}", signed=False)
        relay = await relay_for(write_config, start_relay, sink, validating_resolver, fallback="refuse")
        rcpt = await refused(relay, sink)
        recorder = relay.deliverer.tls_reports

        async def counted():
            day = tlsrpt.day_of(relay.deliverer.clock())
            return await recorder.call(relay.live.data_dir, lambda store: store.sessions(day, DOMAIN)) or None

        [(session, _)] = await eventually(counted, what="the session to be counted")
    assert rcpt.last_error == (
        f"{MX}[127.0.0.1]:{sink.port}: MX or address records of {MX} not DNSSEC-validated; DANE not used; "
        "`tls.dane.fallback: refuse` sends only to hosts DANE covers; not sent"
    )
    assert session.result == "dane-required" and session.policy["policy-type"] == "no-policy-found"
