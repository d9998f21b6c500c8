"""Outbound TLS levels against real certificates: what each level delivers or holds back.

The next hop is named (mx.test.example), resolved by a DNS server on loopback, and served
by an aiosmtpd sink presenting each certificate of the test PKI. A refused certificate
means nothing reaches the sink and the message waits in the queue with the reason.
"""

from __future__ import annotations

import logging
import ssl

import pytest

from tests.pki import build_pki
from tests.relay.peers import Sink, eventually
from tests.relay.test_relay_flow import message, send

FQDN = "mx.test.example"

# (case, level) -> the reason expected in the queue, or None when it must be delivered
MATRIX = {
    ("good", "verify"): None,
    ("good", "secure"): None,
    ("wrong_san", "verify"): None,
    ("wrong_san", "secure"): "hostname mismatch",
    ("cn_only", "verify"): None,
    ("cn_only", "secure"): "hostname mismatch",
    ("expired", "verify"): "certificate has expired",
    ("expired", "secure"): "certificate has expired",
    ("untrusted", "verify"): "unknown CA",
    ("untrusted", "secure"): "unknown CA",
    ("self_signed", "verify"): "self-signed certificate",
    ("self_signed", "secure"): "self-signed certificate",
    ("expired", "mandatory"): None,
    ("self_signed", "mandatory"): None,
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return build_pki(tmp_path_factory.mktemp("pki"), FQDN)


def server_tls(pki, case: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pki[case])
    return ctx


@pytest.mark.parametrize(("case", "level"), list(MATRIX), ids=[f"{c}-{lv}" for c, lv in MATRIX])
async def test_certificate_matrix(case, level, pki, dns_server, write_config, start_relay, caplog) -> None:
    dns_server.zone[(FQDN, "A")] = ["127.0.0.1"]
    with Sink(tls=server_tls(pki, case)) as sink:
        extra = f"""
        tls:
          ca_bundle: {pki["ca"][0]}
        routes:
          - {{name: mx, recipients: any, next_hop: {{host: {FQDN}, port: {sink.port}}}, tls: {level}}}
        """
        dns = f"  dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2s}}\n"
        relay = await start_relay(write_config(extra, system=dns))
        caplog.set_level(logging.INFO, logger="sealrelay.decisions")
        _, reply = await send(relay, message())
        queue_id = reply.split()[-1]
        expected = MATRIX[(case, level)]
        if expected is None:
            [got] = await sink.received(1)
            assert got.tls in ("TLSv1.2", "TLSv1.3")
            return

        async def deferred():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(deferred, what="the message to be deferred")
        assert sink.messages == []
        assert expected in detail.recipients[0].last_error
        assert "refused" in (detail.recipients[0].last_tls or "")
        assert any(expected in r.getMessage() and '"result":"defer"' in r.getMessage() for r in caplog.records)
