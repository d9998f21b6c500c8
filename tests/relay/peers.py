"""Real SMTP peers for relay tests: aiosmtpd sinks on loopback, with or without STARTTLS.

A sink runs in its own thread (aiosmtpd's Controller), records every message it accepts,
and can be told to answer a recipient with a given reply. Tests wait on what a sink has
received with `wait_for`, never with a blind sleep.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll `condition` until it is truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Received:
    sender: str
    recipients: list[str]
    content: bytes
    tls: str | None  # negotiated protocol, None for plain text


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    replies: dict[str, str] = field(default_factory=dict)  # recipient -> RCPT reply
    data_reply: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address in self.replies:
            return self.replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        ssl_object = server.transport.get_extra_info("ssl_object")
        with self.lock:
            self.messages.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    envelope.original_content,
                    ssl_object and ssl_object.version(),
                )
            )
        return "250 2.0.0 stored"


class Sink:
    """An SMTP server on 127.0.0.1 that stores what it receives."""

    def __init__(
        self, *, tls: ssl.SSLContext | None = None, port: int | None = None, logins: dict | None = None
    ) -> None:
        self.handler = SinkHandler()
        self.port = port or free_port()
        self.logins: list[str] = []
        extra = {}
        if logins is not None:  # SMTP AUTH (over TLS only, aiosmtpd's default)
            extra = {"authenticator": self._authenticator(logins), "auth_required": True}
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, tls_context=tls, ready_timeout=10, **extra
        )

    def _authenticator(self, logins: dict):
        from aiosmtpd.smtp import AuthResult

        def check(server, session, envelope, mechanism, auth_data):
            user = auth_data.login.decode()
            ok = logins.get(user) == auth_data.password.decode()
            if ok:
                self.logins.append(user)
            return AuthResult(success=ok)

        return check

    def __enter__(self) -> Sink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def messages(self) -> list[Received]:
        with self.handler.lock:
            return list(self.handler.messages)

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Block until `count` messages arrived (for threads; async tests use `received`)."""
        wait_for(lambda: len(self.messages) >= count, timeout, f"{count} message(s) at the sink")
        return self.messages

    async def received(self, count: int = 1, timeout: float = 10.0) -> list[Received]:
        """Wait, without blocking the event loop, until `count` messages arrived."""

        async def enough():
            return len(self.messages) >= count

        await eventually(enough, timeout, f"{count} message(s) at the sink")
        return self.messages


async def eventually(condition, timeout: float = 10.0, what: str = "condition"):
    """Await an async `condition()` until it returns something truthy, polling with backoff."""
    import asyncio

    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def submit(port: int, content: str | bytes, sender: str, recipients: list[str]) -> str:
    """Send raw `content` to a relay on loopback as an SMTP client would; the 250 reply's text."""
    import aiosmtplib

    _, reply = await aiosmtplib.send(
        content, sender=sender, recipients=recipients, hostname="127.0.0.1", port=port, start_tls=False, timeout=10
    )
    return reply


class RawSession:
    """A raw SMTP client session on loopback, optionally from another local address."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, source: str = "127.0.0.1") -> RawSession:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def reply(self, timeout: float = 10) -> bytes:
        """One whole reply (all lines of a multi-line one)."""
        out = b""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
            out += line
            if len(line) < 4 or line[3:4] != b"-":
                return out

    async def command(self, line: bytes) -> bytes:
        self.writer.write(line + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def closed(self, timeout: float = 10) -> bool:
        """The server closed the connection (EOF, or a reset) without saying more."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionResetError:
            return True
        assert rest == b"", rest
        return True

    async def noop_seconds(self) -> float:
        start = time.perf_counter()
        assert (await self.command(b"NOOP")).startswith(b"250")
        return time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()
