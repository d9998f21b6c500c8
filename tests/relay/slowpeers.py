"""Misbehaving next hops on loopback for the scheduling tests, in the test's own event loop.

- `Tarpit`: accepts TCP and never says a word (a greeting timeout waits on it).
- `Refuser`: accepts and closes at once: each connection attempt is counted, with its time.
- `Staller`: greets and answers EHLO, then never answers MAIL FROM.
- `CountingSink`: a minimal SMTP server that counts messages and the most connections it had
  open at once (what a destination's concurrency limit bounds), optionally slow per message.

Each is an async context manager; leaving it closes the listener and every connection, so a
relay waiting on one sees the connection drop at once.
"""

from __future__ import annotations

import asyncio
import time

from tests.relay.peers import free_port


class _Peer:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.accepted: list[float] = []  # monotonic time of each connection
        self.open = 0
        self.most_open = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self):
        self._server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(time.monotonic())
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        self._writers.add(writer)
        try:
            await self.converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            writer.close()

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


class Tarpit(_Peer):
    async def converse(self, reader, writer) -> None:
        await reader.read()  # until the client gives up


class Refuser(_Peer):
    async def converse(self, reader, writer) -> None:
        return


class Staller(_Peer):
    async def converse(self, reader, writer) -> None:
        writer.write(b"220 staller ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith((b"EHLO", b"HELO")):
                writer.write(b"250 staller\r\n")
            else:
                await reader.read()  # MAIL FROM: no answer, ever
                return


class CountingSink(_Peer):
    def __init__(self, port: int | None = None, *, delay: float = 0.0) -> None:
        super().__init__(port)
        self.delay = delay
        self.messages = 0
        self.times: list[float] = []  # monotonic time each message was accepted

    async def converse(self, reader, writer) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go on\r\n")
                await reader.readuntil(b"\r\n.\r\n")
                if self.delay:
                    await asyncio.sleep(self.delay)
                self.messages += 1
                self.times.append(time.monotonic())
                writer.write(b"250 2.0.0 stored\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                return
            else:
                writer.write(b"250 ok\r\n")
