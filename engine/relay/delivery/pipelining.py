"""Client-side PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one write, their replies
read in order.

Without it a delivery waits for three round trips before the content goes out, and each costs
the relay a write, a wake-up of the event loop and a reply parsed on it. Postfix's SMTP client
pipelines the same way whenever the peer's EHLO offers PIPELINING.

aiosmtplib's protocol reads one reply per command and drops bytes that arrive while no command
waits (a guard against replies being paired with the wrong command). Replies to a pipelined
group arrive together or split anywhere, so `PipeliningProtocol` keeps every byte while a group
is read (`group`) and hands out the replies one by one, in order; outside a group it behaves as
aiosmtplib's own. `PipeliningSMTP` is aiosmtplib's client making its connection with that
protocol (on a socket we connected, the only way `transfer` connects).

What a peer says is handled as RFC 2920 §3.1 asks: a refused MAIL ends the transaction (the
session is closed, as before); refused recipients are recorded one by one; DATA's reply decides
whether the content goes (354 with a recipient accepted), and a 354 after every recipient was
refused gets a lone "." (no content is sent). Bytes left after the last reply of a group mean
the peer answered more than it was asked: the session is not reused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import COMMAND_INJECTION_REGEX, MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse

KEYWORD = "pipelining"


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol; while a pipelined group is read, no byte is dropped."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._expected = 0  # replies of the current group not yet handed out (0: not in a group)

    def data_received(self, data: bytes) -> None:
        if not self._expected:
            super().data_received(data)
            return
        waiter = self._response_waiter
        if waiter is None:  # the connection is gone
            return
        self._buffer.extend(data)
        if len(self._buffer) > MAX_RESPONSE_LENGTH * self._expected:
            del self._buffer[:]
            if not waiter.done():
                self._set_response_exception(waiter, aiosmtplib.SMTPResponseException(500, "Response too long"))
            return
        if self._response_pending and not waiter.done():
            self._hand_out(waiter)

    def _hand_out(self, waiter: asyncio.Future) -> None:
        try:
            response = self._read_response_from_buffer()
        except Exception as exc:  # noqa: BLE001 - a malformed reply fails the read that waits for it
            self._set_response_exception(waiter, exc)
            return
        if response is not None:
            waiter.set_result(response)

    def send_group(self, commands: list[bytes]) -> None:
        """Write `commands` (without line ends) in one write; their replies are read with
        `next_reply`, one per command, inside `group`."""
        self.write(b"".join(command + b"\r\n" for command in commands))

    async def next_reply(self, timeout: float) -> SMTPResponse:
        """The next reply of the group: from what already arrived, or the next to arrive.
        (Replies are handed to aiosmtplib's waiter only while a read waits for one; until
        then they stay in the buffer, in order.)"""
        waiter = self._response_waiter
        response = None
        if waiter is None or not waiter.done():
            try:
                response = self._read_response_from_buffer()
            except Exception:
                del self._buffer[:]
                raise
        if response is None:
            response = await self.read_response(timeout=timeout)
        self._expected -= 1
        return response

    @property
    def leftover(self) -> bool:
        """Bytes beyond the replies that were asked for."""
        return bool(self._buffer)

    @contextmanager
    def group(self, replies: int) -> Iterator[PipeliningProtocol]:
        """Read `replies` replies of a pipelined group: no byte is dropped meanwhile."""
        self._expected = replies
        try:
            yield self
        finally:
            self._expected = 0


class PipeliningSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, its connection made with `PipeliningProtocol`."""

    async def _create_connection(self, timeout: float | None) -> SMTPResponse:
        if self.sock is None or self.use_tls:  # not how `transfer` connects: aiosmtplib's own way
            return await super()._create_connection(timeout)
        protocol = PipeliningProtocol(loop=self.loop, connection_lost_callback=self._on_connection_lost)
        try:
            transport, _ = await asyncio.wait_for(
                self.loop.create_connection(lambda: protocol, sock=self.sock), timeout=timeout
            )
        except TimeoutError as exc:
            raise aiosmtplib.SMTPConnectTimeoutError("Timed out connecting") from exc
        except OSError as exc:
            raise aiosmtplib.SMTPConnectError(f"Error connecting: {exc}") from exc
        self.protocol, self.transport = protocol, transport
        try:
            response = await protocol.read_response(timeout=timeout)
        except aiosmtplib.SMTPServerDisconnected as exc:
            raise aiosmtplib.SMTPConnectError(f"Error connecting: {exc}") from exc
        except aiosmtplib.SMTPTimeoutError as exc:
            raise aiosmtplib.SMTPConnectTimeoutError("Timed out waiting for server ready message") from exc
        if response.code != 220:
            raise aiosmtplib.SMTPConnectResponseError(response.code, response.message)
        return response


def usable(client: aiosmtplib.SMTP) -> bool:
    """Whether a transaction on `client` may be pipelined: the peer offers it, and the
    session's protocol can read a group of replies."""
    return isinstance(client.protocol, PipeliningProtocol) and client.supports_extension(KEYWORD)


def command(verb: bytes, address: str, options: list[str] | None = None) -> bytes:
    """`MAIL FROM:<a>` or `RCPT TO:<a>` with its options, as aiosmtplib's `mail` and `rcpt`
    spell them (ASCII only; a control character is refused as there)."""
    args = [verb + quote_address(address).encode("ascii"), *(option.encode("ascii") for option in options or ())]
    for arg in args:
        if COMMAND_INJECTION_REGEX.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(args)
