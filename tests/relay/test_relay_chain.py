"""Relay to relay: A hands mail to B, whose edge refuses some of it the way a real MTA would."""

from __future__ import annotations

from tests.relay.conftest import HEAD
from tests.relay.peers import Sink, eventually, free_port, submit


def b_config(tmp_path, sink_port: int, extra: str = "") -> object:
    """Relay B: trusts nobody on loopback (so it takes only mail for example.com)."""
    directory = tmp_path / "b"
    directory.mkdir()
    text = HEAD.replace("PORT", str(free_port())).replace("SYSTEM\n", "").replace("GROUPS\n", "")
    text = text.replace("internal_servers: [127.0.0.0/8]", "internal_servers: [192.0.2.0/24]")
    text += (
        f"routes:\n  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink_port}}}, tls: none}}\n"
        + extra
    )
    path = directory / "relay.yaml"
    path.write_text(text)
    return path


async def test_pipelined_envelope_with_one_recipient_refused(tmp_path, write_config, start_relay) -> None:
    with Sink() as sink:
        relay_b = await start_relay(b_config(tmp_path, sink.port))
        b_port = relay_b.ports()["mx"]
        relay_a = await start_relay(
            write_config(
                f"routes:\n  - {{name: b, recipients: any, next_hop: {{host: 127.0.0.1, port: {b_port}}}, tls: none}}\n"
            )
        )
        msg = "From: alice@example.com\r\nTo: good@example.com, bad@elsewhere.example\r\nSubject: two\r\n\r\nhello\r\n"
        await submit(relay_a.ports()["mx"], msg, "alice@example.com", ["good@example.com", "bad@elsewhere.example"])
        got = await sink.received(2)  # the message for good@, and the DSN for bad@ (to alice@)
        by_rcpt = {tuple(m.recipients): m for m in got}
        assert b"hello" in by_rcpt[("good@example.com",)].content
        dsn = by_rcpt[("alice@example.com",)].content
        assert b"bad@elsewhere.example" in dsn and b"Relay access denied" in dsn and b"5.7.1" in dsn


async def test_pipelined_mail_refusal_defers(tmp_path, write_config, start_relay) -> None:
    rule = "ip_groups:\n  peers: [127.0.0.0/8]\nenforced_tls:\n  - {name: tls-in, direction: inbound, match: {ip_group: peers}, level: mandatory}\n"
    with Sink() as sink:
        path = b_config(tmp_path, sink.port)
        path.write_text(
            path.read_text().replace(
                "  internal_servers: [192.0.2.0/24]\n", "  internal_servers: [192.0.2.0/24]\n  peers: [127.0.0.0/8]\n"
            )
            + rule.split("\n", 2)[2]
        )
        relay_b = await start_relay(path)
        relay_a = await start_relay(
            write_config(
                f"routes:\n  - {{name: b, recipients: any, next_hop: {{host: 127.0.0.1, port: {relay_b.ports()['mx']}}}, tls: none}}\n"
            )
        )
        reply = await submit(
            relay_a.ports()["mx"], "Subject: x\r\n\r\ny\r\n", "alice@example.com", ["good@example.com"]
        )
        queue_id = reply.split()[-1]

        async def deferred():
            d = await relay_a.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(deferred, what="the message to wait")
        assert "530" in detail.recipients[0].last_error and sink.messages == []
