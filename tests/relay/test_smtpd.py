"""RelaySMTP keeps aiosmtpd's SMTP behaviour where it reads DATA and parses addresses its own way."""

from __future__ import annotations

import asyncio

import pytest

from tests.relay.peers import Sink
from tests.relay.test_edge import raw_session, route_to


async def _one(
    write_config, start_relay, data: bytes, sender: bytes = b"<a@example.com>"
) -> tuple[list[bytes], Sink, object]:
    sink = Sink().__enter__()
    relay = await start_relay(write_config(route_to(sink.port)))
    replies = await raw_session(
        relay.ports()["mx"],
        [b"EHLO c\r\n", b"MAIL FROM:" + sender + b"\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n", data],
    )
    return replies, sink, relay


async def test_dot_stuffing_is_undone(write_config, start_relay) -> None:
    replies, sink, _ = await _one(
        write_config, start_relay, b"Subject: dots\r\n\r\n..leading\r\n...two\r\nmid.dle\r\n.\r\n"
    )
    try:
        assert replies[-1].startswith(b"250")
        [got] = await sink.received(1)
        assert got.content.endswith(b"Subject: dots\r\n\r\n.leading\r\n..two\r\nmid.dle\r\n")
    finally:
        sink.__exit__()


async def test_empty_message_and_first_line_dot(write_config, start_relay) -> None:
    replies, sink, relay = await _one(write_config, start_relay, b".\r\n")
    try:
        assert replies[-1].startswith(b"250")
        [got] = await sink.received(1)
        assert got.content.endswith(b"\r\n")  # only our Received header
    finally:
        sink.__exit__()


async def test_line_longer_than_rfc_limit_is_refused(write_config, start_relay) -> None:
    replies, sink, relay = await _one(write_config, start_relay, b"Subject: long\r\n\r\n" + b"a" * 1000 + b"\r\n.\r\n")
    try:
        assert replies[-1].startswith(b"500"), replies
        assert await relay.queue.count() == 0
    finally:
        sink.__exit__()


async def test_line_at_the_limit_is_accepted(write_config, start_relay) -> None:
    replies, sink, relay = await _one(write_config, start_relay, b"Subject: ok\r\n\r\n" + b"a" * 998 + b"\r\n.\r\n")
    try:
        assert replies[-1].startswith(b"250"), replies
    finally:
        sink.__exit__()


async def test_null_sender_is_accepted_and_kept_null(write_config, start_relay) -> None:
    replies, sink, relay = await _one(write_config, start_relay, b"Subject: bounce\r\n\r\nx\r\n.\r\n", sender=b"<>")
    try:
        assert replies[2].startswith(b"250") and replies[-1].startswith(b"250")
        [got] = await sink.received(1)
        assert got.sender == "<>"
    finally:
        sink.__exit__()


@pytest.mark.parametrize("sender", [b'<"quoted local"@example.com>', b"<a@[127.0.0.1]>", b"a@example.com"])
async def test_unusual_addresses_fall_back_to_aiosmtpd(write_config, start_relay, sender: bytes) -> None:
    relay = await start_relay(write_config(route_to(1)))
    replies = await raw_session(relay.ports()["mx"], [b"EHLO c\r\n", b"MAIL FROM:" + sender + b"\r\n"])
    assert replies[2].startswith(b"250"), replies


async def test_malformed_address_gets_553(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1)))
    replies = await raw_session(relay.ports()["mx"], [b"EHLO c\r\n", b"MAIL FROM:<a@b@c>\r\n"])
    assert replies[2][:3] in (b"553", b"501"), replies


async def test_pipelined_commands_get_replies_in_order_in_one_packet(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.ports()["mx"])
        await reader.readline()
        writer.write(b"EHLO c\r\n")
        ehlo = b""
        while not ehlo.endswith(b"250 HELP\r\n"):
            ehlo += await reader.readline()
        assert b"250-PIPELINING" in ehlo
        writer.write(b"MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        batch = await asyncio.wait_for(reader.readuntil(b"354 End data with <CR><LF>.<CR><LF>\r\n"), 10)
        assert batch.count(b"250") == 3
        writer.write(b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        rest = await asyncio.wait_for(reader.read(), 10)
        assert rest.startswith(b"250 2.0.0 queued as") and b"221" in rest
        writer.close()
        [got] = await sink.received(1)
        assert sorted(got.recipients) == ["b@example.com", "c@example.com"]
