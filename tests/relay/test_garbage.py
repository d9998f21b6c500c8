"""The relay never crashes on input: random bytes, broken MIME, absurd commands."""

from __future__ import annotations

import asyncio
import random

import aiosmtplib

from tests.relay.peers import Sink, submit
from tests.relay.test_edge import route_to
from tests.relay.test_relay_flow import message, send

DLP = """
dlp:
  action_plans: [{name: enc, email: encrypt}]
  policies: [{name: p, rules: [{name: r, conditions: {any: [{classifier: credit_card}, {attachment: {type: [exe]}}]}, action_plan: enc}]}]
"""


async def _garbage_session(port: int, rng: random.Random) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.readline(), 5)
        for _ in range(rng.randint(1, 6)):
            choice = rng.random()
            if choice < 0.4:
                chunk = rng.randbytes(rng.randint(1, 3000))
            elif choice < 0.7:
                chunk = (
                    rng.choice([b"EHLO ", b"MAIL FROM:", b"RCPT TO:", b"DATA", b"STARTTLS", b"AUTH PLAIN", b"\x00\xff"])
                    + rng.randbytes(rng.randint(0, 80))
                    + b"\r\n"
                )
            else:
                chunk = (
                    b"\r\n".join(rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 30))) + b"\r\n.\r\n"
                )
            writer.write(chunk)
            await writer.drain()
        writer.close()
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
        pass  # the relay may hang up on garbage: that is fine, crashing is not


async def test_random_bytes_and_commands_never_take_the_relay_down(write_config, start_relay) -> None:
    rng = random.Random(20261129)
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port) + DLP))
        port = relay.ports()["mx"]
        await asyncio.gather(*(_garbage_session(port, rng) for _ in range(150)))
        await send(relay, message())  # still serving, and still delivering
        await sink.received(1)


async def test_broken_mime_is_accepted_and_judged(write_config, start_relay) -> None:
    rng = random.Random(7)
    broken = [
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: application/zip\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64!!!\r\n',
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
        b'Content-Type: text/plain; charset="no-such-charset"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=ZZ=\r\n',
        b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n" * 20,
        b"Subject: =?utf-8?B?////?=\r\n\r\n"
        + b"\r\n".join(rng.randbytes(70).replace(b"\r", b"").replace(b"\n", b"") for _ in range(30))
        + b"\r\n",
    ]
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port) + DLP))
        for n, part in enumerate(broken):
            content = b"From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n" + part
            reply = await submit(relay.ports()["mx"], content, "a@example.com", ["b@example.com"])
            assert "queued as" in reply, (n, reply)
        await sink.received(len(broken))


async def test_an_overlong_line_gets_a_proper_refusal(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1)))
    content = b"From: a@example.com\r\nTo: b@example.com\r\n\r\n" + b"x" * 5000 + b"\r\n"
    try:
        await submit(relay.ports()["mx"], content, "a@example.com", ["b@example.com"])
    except aiosmtplib.SMTPDataError as exc:
        assert exc.code == 500 and "Line too long" in exc.message
    else:
        raise AssertionError("a 5,000-octet line must be refused")
    assert await relay.queue.count() == 0
