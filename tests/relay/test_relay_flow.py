"""End to end on loopback: client -> relay -> sink, with the TLS levels the config demands."""

from __future__ import annotations

import ssl
from email.message import EmailMessage

import aiosmtplib
import pytest

from tests.relay.peers import Sink, eventually


def message(
    to: str = "bob@partner.example", sender: str = "alice@example.com", body: str = "Hello Bob\n"
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, "test"
    msg.set_content(body)
    return msg


async def send(relay, msg: EmailMessage, **kwargs):
    port = relay.ports()["mx"]
    return await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, start_tls=False, timeout=10, **kwargs)


def route(port: int, tls: str) -> str:
    return f"routes:\n  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {port}}}, tls: {tls}}}\n"


async def test_message_is_delivered_to_the_sink(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route(sink.port, "opportunistic")))
        errors, reply = await send(relay, message())
        assert errors == {} and "queued as" in reply
        [got] = await sink.received(1)
        assert got.sender == "alice@example.com" and got.recipients == ["bob@partner.example"]
        assert b"Hello Bob" in got.content
        assert got.content.startswith(b"Received: from ")


async def test_opportunistic_falls_back_to_plain_when_no_starttls(write_config, start_relay) -> None:
    with Sink(tls=None) as sink:
        relay = await start_relay(write_config(route(sink.port, "opportunistic")))
        await send(relay, message())
        [got] = await sink.received(1)
        assert got.tls is None


async def test_opportunistic_uses_starttls_when_offered(write_config, start_relay, ca) -> None:
    cert = ca.issue_cert("sink.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    with Sink(tls=ctx) as sink:
        relay = await start_relay(write_config(route(sink.port, "opportunistic")))
        await send(relay, message())
        [got] = await sink.received(1)
        assert got.tls in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("level", ["mandatory", "verify", "secure"])
async def test_required_tls_sends_nothing_to_a_peer_without_starttls(write_config, start_relay, level) -> None:
    with Sink(tls=None) as sink:
        relay = await start_relay(write_config(route(sink.port, level)))
        _, reply = await send(relay, message())
        queue_id = reply.split()[-1]
        detail = await _wait_deferred(relay, queue_id)
        assert sink.messages == []
        [rcpt] = detail.recipients
        assert "no STARTTLS" in rcpt.last_error and rcpt.state == "deferred"


async def _wait_deferred(relay, queue_id):
    async def deferred():
        d = await relay.queue.show(queue_id)
        return d if all(r.state == "deferred" for r in d.recipients) else None

    return await eventually(deferred, what=f"{queue_id} deferred")


async def test_route_auth_logs_in_over_tls_only(write_config, start_relay, ca, monkeypatch) -> None:
    monkeypatch.setenv("SEAL_TEST_ROUTE_PASSWORD", "s3cret-pass")
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    with Sink(tls=ctx, logins={"relay": "s3cret-pass"}) as sink:
        auth = "auth: {username: relay, password: {env: SEAL_TEST_ROUTE_PASSWORD}}"
        extra = f"routes:\n  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink.port}}}, tls: mandatory, {auth}}}\n"
        relay = await start_relay(write_config(extra))
        await send(relay, message())
        await sink.received(1)
        assert sink.logins == ["relay"]


async def test_route_auth_never_sends_the_password_in_clear(write_config, start_relay, monkeypatch) -> None:
    monkeypatch.setenv("SEAL_TEST_ROUTE_PASSWORD", "s3cret-pass")
    with Sink(tls=None) as sink:
        auth = "auth: {username: relay, password: {env: SEAL_TEST_ROUTE_PASSWORD}}"
        extra = f"routes:\n  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink.port}}}, tls: opportunistic, {auth}}}\n"
        relay = await start_relay(write_config(extra))
        _, reply = await send(relay, message())
        detail = await _wait_deferred(relay, reply.split()[-1])
        assert "needs TLS" in detail.recipients[0].last_error and sink.messages == []


async def test_opportunistic_retries_in_plain_text_when_the_handshake_fails(
    write_config, start_relay, ca, caplog
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    cert = ca.issue_cert("sink.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1  # below our floor: no handshake
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with Sink(tls=ctx) as sink:
        relay = await start_relay(write_config(route(sink.port, "opportunistic")))
        await send(relay, message())
        [got] = await sink.received(1)
        assert got.tls is None
        notes = [r.getMessage() for r in caplog.records if '"event":"delivery"' in r.getMessage()]
        assert any("STARTTLS failed" in n and "plain text" in n for n in notes), notes
