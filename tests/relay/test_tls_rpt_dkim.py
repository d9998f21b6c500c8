"""DKIM on mailed TLS-RPT reports (RFC 8460 §5.3): the report that arrives verifies.

A relay with TLS-RPT on delivers one message to partner.example's MX (a sink), the day ends,
and the report goes through the relay's own queue to the domain's `mailto:` rua (the same
sink). The received bytes are verified by dkimpy against the public key published in the test
DNS server (`<selector>._domainkey.example.com`, `s=tlsrpt`), queried over loopback.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import dkim
import dns.message
import dns.query
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from engine.config.model.system import DKIMKey
from engine.relay.delivery.resolve import Resolver
from engine.relay.tls import tlsrpt
from engine.relay.tls.tlsrpt_send import dkim_sign, report_message
from tests.relay.peers import Sink
from tests.relay.test_mta_sts import Clock
from tests.relay.test_relay_flow import message, send

DOMAIN = "partner.example"
SELECTOR = "tlsrpt2026"


def pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dkim_record(key) -> str:
    """The `_domainkey` TXT record of `key`'s public half, for TLS reports only (`s=tlsrpt`)."""
    public = key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; s=tlsrpt; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; s=tlsrpt; p={base64.b64encode(der).decode()}"


def txt_from(dns_server):
    """dkimpy's `dnsfunc`: the TXT record of a name, asked of the test DNS server."""

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        query = dns.message.make_query(name.decode(), "TXT")
        answer = dns.query.udp(query, dns_server.host, port=dns_server.port, timeout=timeout)
        for rrset in answer.answer:
            for rdata in rrset:
                return b"".join(rdata.strings)
        return None

    return lookup


@pytest.fixture(params=["rsa", "ed25519"])
def key(request):
    if request.param == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ed25519.Ed25519PrivateKey.generate()


async def a_day_reported(dns_server, write_config, start_relay, sink: Sink, key_file: str):
    """A relay with TLS-RPT on and a DKIM key in `key_file` delivers one message to
    partner.example (MX: `sink`), whose `_smtp._tls` record asks for reports by mail to the
    same domain; the day ends and the reports are made. The relay."""
    zone = dns_server.zone
    zone[(DOMAIN, "MX")] = [(10, f"mx1.{DOMAIN}")]
    zone[(f"mx1.{DOMAIN}", "A")] = ["127.0.0.1"]
    zone[(f"_smtp._tls.{DOMAIN}", "TXT")] = [f'"v=TLSRPTv1; rua=mailto:tlsrpt@{DOMAIN}"']
    clock = Clock(1_800_000_000.0)
    extra = f"""
    routes:
      - {{name: mx, recipients: any, next_hop: {{host: {DOMAIN}, port: {sink.port}, mx_lookup: true}}}}
    """
    system = (
        f"  dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2s}}\n"
        "  tls_reporting:\n"
        "    enabled: true\n"
        "    contact: tls-reports@example.com\n"
        f"    dkim: {{domain: example.com, selector: {SELECTOR}, private_key: {{file: {key_file}}}}}\n"
    )
    relay = await start_relay(write_config(extra, system=system), tls_reports=tlsrpt.Recorder(clock))
    await send(relay, message(to=f"bob@{DOMAIN}"))
    await sink.received(1)
    clock.now += 86400
    resolver = Resolver([dns_server.host], port=dns_server.port, timeout=2.0)
    assert await relay.tls_reporter.send_due(relay.live, resolver) == 1
    return relay


async def test_a_mailed_report_arrives_dkim_signed(key, dns_server, write_config, start_relay, tmp_path: Path) -> None:
    (tmp_path / "dkim.pem").write_bytes(pem(key))
    record = dkim_record(key)
    dns_server.zone[(f"{SELECTOR}._domainkey.example.com", "TXT")] = [
        " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    ]
    with Sink() as sink:
        await a_day_reported(dns_server, write_config, start_relay, sink, "dkim.pem")
        _, report = await sink.received(2)
    assert report.recipients == [f"tlsrpt@{DOMAIN}"]
    content = report.content
    assert content.startswith(b"DKIM-Signature: ")
    assert dkim.verify(content, dnsfunc=txt_from(dns_server), tlsrpt="strict")
    # one byte of the report changed: the signature no longer holds
    tampered = content.replace(b"TLS-Report-Domain: partner.example", b"TLS-Report-Domain: partner.exampl3")
    assert tampered != content and not dkim.verify(tampered, dnsfunc=txt_from(dns_server), tlsrpt="strict")


def test_an_unusable_key_is_refused_with_the_reason(tmp_path: Path) -> None:
    content = report_message(
        b"x", domain=DOMAIN, submitter="example.com", sender="r@example.com", to="t@x.example", report_id="1", name="n"
    )
    (tmp_path / "ec.pem").write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
    (tmp_path / "junk.pem").write_text("not a key\n")
    for name, reason in (
        ("ec.pem", "must be RSA \\(at least 1024 bits\\) or Ed25519"),
        ("junk.pem", "is not an unencrypted PEM private key"),
    ):
        key = DKIMKey(domain="example.com", selector=SELECTOR, private_key={"file": name})
        with pytest.raises(ValueError, match=reason):
            dkim_sign(content, key, tmp_path)


async def test_a_key_that_cannot_be_read_sends_no_unsigned_report(
    dns_server, write_config, start_relay, caplog
) -> None:
    caplog.set_level(logging.ERROR)
    with Sink() as sink:
        relay = await a_day_reported(dns_server, write_config, start_relay, sink, "missing.pem")
        assert await relay.queue.count() == 0  # the report was made, but not queued unsigned
    assert len(sink.messages) == 1
    assert any("DKIM signing failed" in r.getMessage() and "missing.pem" in r.getMessage() for r in caplog.records)
