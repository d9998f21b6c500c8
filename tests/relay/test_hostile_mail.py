"""Hostile mail through a real relay on loopback: its cost is bounded and other sessions do
not wait for it; what DLP cannot read is acted on (`dlp.unscannable`), never sent as is.

The NOOP bound is the one tests/relay/test_limits.py uses: within 100 ms, or five times the
session's own baseline on a loaded machine.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.relay.dlp import decide
from tests.relay.peers import RawSession, Sink
from tests.relay.test_retries import routes

CARD_WORDS = "=?utf-8?q?4111?= =?utf-8?q?_1111?= =?utf-8?q?_1111?= =?utf-8?q?_1111?="


def dlp(unscannable: str = "encrypt") -> str:
    return f"""
dlp:
  unscannable: {unscannable}
  action_plans:
    - {{name: encrypt, email: encrypt}}
  policies:
    - name: cards
      rules:
        - {{name: card, conditions: {{classifier: credit_card, scope: [subject, body]}}, action_plan: encrypt}}
"""


def encoded_words_message(words: int = 18_000) -> bytes:
    """A Subject of `words` RFC 2047 encoded words (about 250 KB, under the default 256 KiB
    header limit) in folded lines, a card number split across four of them in the middle."""
    lines = [" ".join(["=?utf-8?q?w?="] * 50)] * (words // 100)
    subject = "\r\n ".join([*lines, f"card {CARD_WORDS} end", *lines])  # folded: SMTP lines are <= 1000 bytes
    return (
        "From: alice@example.com\r\nTo: bob@partner.example\r\n"
        f"Subject: {subject}\r\nMIME-Version: 1.0\r\n\r\nhello\r\n"
    ).encode()


def deeply_nested_message(depth: int = 1000) -> bytes:
    head = "From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opened = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    closed = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
    return (head + opened + "Content-Type: text/plain\r\n\r\nnothing to see\r\n" + closed).encode()


class Session(RawSession):
    """A raw SMTP session on loopback (optionally from another local address), greeted."""

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> Session:
        session = await super().open(port, source)
        assert (await session.reply()).startswith(b"220")
        assert (await session.command(b"EHLO client.example")).startswith(b"250")
        return session

    async def reply(self, timeout: float = 60) -> bytes:
        return await super().reply(timeout)

    async def noop(self) -> tuple[float, float]:
        """(seconds the NOOP took, monotonic time its answer came)."""
        start = time.monotonic()
        assert (await self.command(b"NOOP")).startswith(b"250")
        done = time.monotonic()
        return done - start, done

    async def send(self, content: bytes) -> asyncio.Task:
        """MAIL, RCPT, DATA and the content; the final reply, as a task still running."""
        assert (await self.command(b"MAIL FROM:<alice@example.com>")).startswith(b"250")
        assert (await self.command(b"RCPT TO:<bob@partner.example>")).startswith(b"250")
        assert (await self.command(b"DATA")).startswith(b"354")
        self.writer.write(content + b".\r\n")
        await self.writer.drain()
        return asyncio.create_task(self.reply())


@pytest.fixture
def judged(monkeypatch) -> list[tuple[float, float]]:
    """When each full DLP judgement ran (monotonic start and end; not the quick path's try,
    which a message this large does not pass: docs/dlp-scanning.md)."""
    windows: list[tuple[float, float]] = []
    real = decide.judge

    def timed(*args, **kwargs):
        if kwargs.get("quick"):
            return real(*args, **kwargs)
        start = time.monotonic()
        try:
            return real(*args, **kwargs)
        finally:
            windows.append((start, time.monotonic()))

    monkeypatch.setattr(decide, "judge", timed)
    return windows


async def test_20000_encoded_words_are_decoded_while_other_sessions_are_served(
    write_config, start_relay, judged
) -> None:
    with Sink() as home, Sink() as partner:
        relay = await start_relay(write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp()))
        port = relay.ports()["mx"]
        other = await Session.open(port, "127.0.0.2")
        baseline = min([(await other.noop())[0] for _ in range(3)])
        sender = await Session.open(port)
        content = encoded_words_message()
        assert 240_000 < len(content) < 262_000
        reply = await sender.send(content)
        noops = []
        while not reply.done():
            if len(noops) % 90 == 89:  # the relay closes a session after 100 NOOPs
                other.close()
                other = await Session.open(port, "127.0.0.2")
            noops.append(await other.noop())
            await asyncio.sleep(0.005)  # pacing, not waiting for anything
        answer = await reply
        assert answer.startswith(b"250") and b"queued as" in answer, answer
        [(start, end)] = judged
        assert end - start < 2.0, f"judging took {end - start:.2f} s (6.6 s before the fix)"
        during = [took for took, done in noops if start <= done <= end]
        assert during, "no NOOP was answered while the message was judged"
        worst = max(took for took, _ in noops)
        assert worst < max(0.1, 5 * baseline), f"a NOOP in another session took {worst * 1000:.1f} ms"
        entry = await relay.queue.show(answer.split()[-1].decode())
        decision = entry.meta["decision"]  # the card split across encoded words was found
        assert (decision["action"], decision["policies"], decision["unscanned"]) == ("encrypt", ["cards"], [])
        other.close()
        sender.close()


@pytest.mark.parametrize(("unscannable", "reply_says"), [("encrypt", b"queued as"), ("quarantine", b"held for review")])
async def test_a_message_nested_1000_deep_is_acted_on_not_sent_as_is(
    write_config, start_relay, unscannable, reply_says
) -> None:
    with Sink() as home, Sink() as partner:
        config = routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp(unscannable)
        relay = await start_relay(write_config(config))
        sender = await Session.open(relay.ports()["mx"])
        started = time.monotonic()
        answer = await (await sender.send(deeply_nested_message()))
        assert time.monotonic() - started < 5.0
        assert answer.startswith(b"250") and reply_says in answer, answer
        if unscannable == "encrypt":
            decision = (await relay.queue.show(answer.split()[-1].decode())).meta["decision"]
            assert decision["action"] == "encrypt" and decision["policies"] == []
            [problem] = decision["unscanned"]
            assert problem in decision["problems"] and "nested deeper than 20" in problem
        else:
            from engine.relay.queue.quarantine import Quarantine

            [held] = Quarantine(relay.live.data_dir).list()
            assert held.reason == "dlp/unscannable"
        sender.close()
