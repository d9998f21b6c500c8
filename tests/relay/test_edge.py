"""The SMTP edge answers every bad command or message properly, and enforces inbound TLS."""

from __future__ import annotations

import asyncio
import ssl

import aiosmtplib
import pytest

from tests.relay.peers import Sink


async def raw_session(port: int, lines: list[bytes]) -> list[bytes]:
    """Speak raw SMTP: send each element (a command, or a whole DATA body), read one reply each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await _reply(reader)]
    for line in lines:
        writer.write(line)
        await writer.drain()
        replies.append(await _reply(reader))
    writer.close()
    return replies


async def _reply(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 10)
        out += line
        if len(line) < 4 or line[3:4] != b"-":
            return out


def route_to(port: int) -> str:
    return f"routes:\n  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {port}}}, tls: none}}\n"


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        (b"Subject: x\r\n\r\nbare LF here\nsmuggled\r\n.\r\n", b"550 5.5.2"),
        (b"Subject: x\r\n\r\nbare CR here\rsmuggled\r\n.\r\n", b"550 5.5.2"),
    ],
)
async def test_bare_line_endings_are_refused(write_config, start_relay, body: bytes, expect: bytes) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        port = relay.ports()["mx"]
        replies = await raw_session(
            port,
            [
                b"EHLO client.test\r\n",
                b"MAIL FROM:<a@example.com>\r\n",
                b"RCPT TO:<b@example.com>\r\n",
                b"DATA\r\n",
                body,
            ],
        )
        assert replies[-1].startswith(expect), replies
        assert await relay.queue.count() == 0


async def test_smuggled_end_of_data_is_not_an_end(write_config, start_relay) -> None:
    """`\\n.\\n` inside DATA must not end the message (SMTP smuggling); the whole is refused."""
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        smuggle = b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@example.com>\r\n.\r\n"
        replies = await raw_session(
            relay.ports()["mx"],
            [b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n", smuggle],
        )
        assert replies[-1].startswith(b"550 5.5.2")
        assert await relay.queue.count() == 0


async def test_relay_access_denied_for_untrusted_peer(write_config, start_relay) -> None:
    path = write_config(route_to(1))
    path.write_text(path.read_text().replace("internal_servers: [127.0.0.0/8]", "internal_servers: [192.0.2.0/24]"))
    relay = await start_relay(path)
    replies = await raw_session(
        relay.ports()["mx"],
        [
            b"EHLO c\r\n",
            b"MAIL FROM:<a@outside.example>\r\n",
            b"RCPT TO:<x@elsewhere.example>\r\n",
            b"RCPT TO:<b@example.com>\r\n",
        ],
    )
    assert replies[3].startswith(b"554 5.7.1") and b"Relay access denied" in replies[3]
    assert replies[4].startswith(b"250")


async def test_oversized_message_is_refused(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system="  message_size_limit: 1KB\n"))
    port = relay.ports()["mx"]
    replies = await raw_session(port, [b"EHLO c\r\n", b"MAIL FROM:<a@example.com> SIZE=5000\r\n"])
    assert replies[2].startswith(b"552")
    big = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
    replies = await raw_session(
        port,
        [
            b"EHLO c\r\n",
            b"MAIL FROM:<a@example.com>\r\n",
            b"RCPT TO:<b@example.com>\r\n",
            b"DATA\r\n",
            big * 20 + b".\r\n",
        ],
    )
    assert replies[-1].startswith(b"552")
    assert await relay.queue.count() == 0


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"HELLO there\r\n", b"500"),
        (b"MAIL FROM:<a@example.com>\r\n", b"503"),  # before EHLO
        (b"EHLO\r\n", b"501"),
        (b"RCPT TO:<b@example.com>\r\n", b"503"),
        (b"DATA\r\n", b"503"),
        (b"X" * 2000 + b"\r\n", b"500"),
    ],
)
async def test_bad_commands_get_proper_replies(write_config, start_relay, line: bytes, code: bytes) -> None:
    relay = await start_relay(write_config(route_to(1)))
    replies = await raw_session(relay.ports()["mx"], [line, b"NOOP\r\n"])
    assert replies[1].startswith(code), replies
    assert replies[2].startswith(b"250")  # the session goes on


async def test_inbound_enforced_tls_demands_starttls_first(write_config, start_relay) -> None:
    extra = (
        route_to(1)
        + "enforced_tls:\n  - {name: banks, direction: inbound, match: {ip_group: banks}, level: mandatory}\n"
    )
    path = write_config(extra)
    path.write_text(
        path.read_text().replace(
            "  internal_servers: [127.0.0.0/8]\n", "  internal_servers: [127.0.0.0/8]\n  banks: [127.0.0.0/8]\n"
        )
    )
    relay = await start_relay(path)
    port = relay.ports()["mx"]
    replies = await raw_session(port, [b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n"])
    assert replies[2].startswith(b"530 5.7.0 Must issue a STARTTLS command first")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, tls_context=ctx, timeout=10)
    await client.connect()
    await client.starttls()
    response = await client.mail("a@example.com")
    assert response.code == 250
    await client.quit()
