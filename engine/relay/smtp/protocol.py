"""Our aiosmtpd protocol: the same SMTP, without per-connection reflection or per-line DATA.

aiosmtpd's `SMTP` is correct but costly per connection: its constructor rebuilds its command
and hook tables with `inspect.getmembers`/`dir`, the address parser of every MAIL and RCPT
goes through the `email` header parser, EHLO writes one packet per line, and DATA is read
line by line. A relay that takes a new connection per message pays all of that every time.
`RelaySMTP` keeps aiosmtpd's state machine and replies and changes only those costs:

- the tables are computed once per class, and bound per instance by a dict comprehension;
- `<local@domain>` is parsed by a strict regex, anything unusual falls back to aiosmtpd;
- EHLO answers in one write; PIPELINING is advertised (replies are still sent in order);
- REQUIRETLS (RFC 8689) is advertised once TLS is up, on every listener, and only then is
  `MAIL FROM:<..> REQUIRETLS` taken (it lands in the envelope's `mail_options`); before
  STARTTLS the parameter is refused as unknown, `555 5.5.4`;
- DATA is read in one `readuntil(b"\\r\\n.\\r\\n")` with the reader's limit raised to the
  message size limit, then un-dot-stuffed with `bytes.replace`.

It also holds a session to `system.limits` (docs/security.md, "SMTP limits"): connections in
total and per client address (`Connections`, one per relay), the idle timeout (for each
command, and within DATA for more of the message, so a slow but steady message is not cut
off), how often a command may be repeated (aiosmtpd's `command_call_limit`) and how many
error replies a session may collect. Every 421 reply closes the connection at once, and
commands the client pipelined after it are not executed; a client that does not read it is
cut off after another idle timeout.

It offers no SMTP AUTH (the relay authorises by IP group). Pinned to aiosmtpd 1.4.x, whose
constructor it mirrors; `tests/relay/test_smtpd.py` runs aiosmtpd's own behaviours against it.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import re
import sys
import tempfile
from typing import Any

from aiosmtpd.smtp import MISSING, SMTP, syntax

from engine.config.model.system import Limits
from engine.fsutil import private_dir
from engine.relay.runtime import metrics

log = logging.getLogger(__name__)

_ADDR = re.compile(r"^<([^<>()\[\]\\,;:\s@\"]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)>(.*)$")
_NULL = re.compile(r"^<>(.*)$")
# the client waits for these, or the connection closes after them
_FLUSH_NOW = (b"220", b"221", b"354", b"502")
MAX_LINE = 1000  # a line with its CR, before un-stuffing: aiosmtpd's 1001-octet limit (RFC 5321 4.5.3.1.6 + the dot)
DEFAULT_LIMITS = Limits()
# a mail transaction's commands are bounded by max_errors and max_recipients, not by repetition:
# a session may carry any number of messages
_TRANSACTION = {"MAIL": sys.maxsize, "RCPT": sys.maxsize, "DATA": sys.maxsize}
_ERROR = (b"4", b"5")
_NOT_AN_ERROR = b"452 4.5.3"  # a recipient over max_recipients: the client sends it again later


class Connections:
    """The SMTP connections open now, in total and per client address.

    One per relay, shared by its listeners and by every config version: a connection is
    admitted against the limits of the config that accepted it, counting all that are open.
    Used from the event loop's thread only.
    """

    def __init__(self) -> None:
        self.total = 0
        self.by_client: dict[str, int] = {}
        self._warned: set[str] = set()  # one warning per crowd, not one per refused connection

    def admit(self, client: str, limits: Limits) -> str | None:
        """Count a new connection from `client`, or say which limit refuses it: "total" or "client"."""
        if self.total >= limits.max_connections:
            return self._refuse("", "total", f"{self.total} SMTP connections are open (max_connections)")
        count = self.by_client.get(client, 0)
        if count >= limits.max_connections_per_client:
            return self._refuse(client, "client", f"{count} connections from {client} (max_connections_per_client)")
        self.total += 1
        self.by_client[client] = count + 1
        return None

    def release(self, client: str) -> None:
        self.total -= 1
        count = self.by_client[client] - 1
        if count:
            self.by_client[client] = count
        else:
            del self.by_client[client]
        self._warned.discard(client)
        self._warned.discard("")

    def _refuse(self, key: str, which: str, what: str) -> str:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("refusing SMTP connections: %s", what)
        return which


class RelaySMTP(SMTP):
    """aiosmtpd's SMTP with per-connection work done once per class (see the module doc)."""

    _smtp_names: frozenset[str] | None = None

    def __init__(
        self,
        handler: Any,
        *,
        data_size_limit: int,
        hostname: str,
        tls_context=None,
        require_starttls: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        connections: Connections | None = None,
        loop: asyncio.AbstractEventLoop,
        spool_dir=None,
    ) -> None:
        # Mirrors aiosmtpd 1.4 SMTP.__init__ for the options we use, without reflection.
        self.__ident__ = "sealrelay"
        self.loop = loop
        asyncio.StreamReaderProtocol.__init__(
            self,
            asyncio.StreamReader(loop=loop, limit=self.line_length_limit),
            client_connected_cb=self._cb_client_connected,
            loop=loop,
        )
        self.event_handler = handler
        self.data_size_limit = data_size_limit
        self.spool_dir = spool_dir  # where a large message is kept while it arrives (None: in memory)
        self.enable_SMTPUTF8 = False
        self._decode_data = False
        self.hostname = hostname
        self.tls_context = tls_context
        self.require_starttls = bool(tls_context) and require_starttls
        self._timeout_duration = int(limits.idle_timeout)
        self._timeout_handle = None
        self._tls_handshake_okay = True
        self._tls_protocol = None
        self._original_transport = None
        self.session = None
        self.envelope = None
        self.transport = None
        self._handler_coroutine = None
        self._auth_require_tls = True
        self._proxy_timeout = None
        self._authenticator = None
        self._auth_callback = None
        self._auth_required = False
        self._auth_methods = {}
        self._handle_hooks = _Bound(handler, "handle_", _hook_names(type(handler)))
        self._ehlo_hook_ver = None
        self._smtp_methods = _Bound(self, "smtp_", type(self)._smtp_names or _smtp_names(type(self)))
        self._enforce_call_limit = True  # aiosmtpd's per-session budget of each command word
        self._call_limit_default = limits.max_command_repeats
        self._call_limit_base = _TRANSACTION
        self._limits = limits
        self._connections = connections
        self._client: str | None = None  # the address counted in `connections`, until released
        self._refusal: bytes | None = None
        self._errors = 0
        self._closing = False
        self._in_data = False  # reading a message within the size limit: input is activity
        self._last_input = 0.0
        self._pending: list[bytes] = []
        # aiosmtpd keeps this table on the class and clears it per connection; ours is per
        # connection, so command words a client makes up cannot pile up in the process
        self.command_size_limits = collections.defaultdict(lambda: self.command_size_limit)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None  # not the TLS transport that replaces it after STARTTLS
        super().connection_made(transport)
        if not first:
            return
        self._last_input = self.loop.time()
        if self._connections is None:
            return
        client = self.session.peer[0] if self.session.peer else ""
        over = self._connections.admit(client, self._limits)
        if over is None:
            self._client = client
        elif over == "client":
            metrics.LIMIT_HITS.labels("max_connections_per_client").inc()
            self._refusal = f"421 4.7.0 {self.hostname} Error: too many connections from {client}".encode()
        else:
            metrics.LIMIT_HITS.labels("max_connections").inc()
            self._refusal = f"421 4.3.2 {self.hostname} Error: too many connections, try again later".encode()

    def connection_lost(self, error: Exception | None) -> None:
        if self._client is not None:
            self._connections.release(self._client)
            self._client = None
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        self._last_input = self.loop.time()
        super().data_received(data)

    async def _handle_client(self) -> None:
        if self._refusal is not None:  # over a connection limit: no greeting, only the 421
            self._pending.append(self._refusal)
            self._close()
            return
        await super()._handle_client()

    def _timeout_cb(self) -> None:
        """The idle timeout. aiosmtpd re-arms the timer per command, so in the command phase
        it bounds each command line (an endless one too); within DATA, input re-arms it."""
        idle = self.loop.time() - self._last_input
        if self._in_data and idle < self._timeout_duration:
            self._timeout_handle = self.loop.call_later(self._timeout_duration - idle, self._timeout_cb)
            return
        if self.transport is None or self._closing:
            return
        log.info("%s: closing an SMTP session idle for %.0fs", self.session.peer, idle)
        metrics.LIMIT_HITS.labels("idle_timeout").inc()
        self._pending.append(f"421 4.4.2 {self.hostname} Error: timeout exceeded".encode())
        self._close()

    def _close(self) -> None:
        """Send the held replies (the last a 421) and close; pipelined input is not executed.
        A client that does not read the reply is cut off after another idle timeout."""
        self._closing = True
        self._reader._buffer.clear()  # noqa: SLF001 - commands sent after the 421 are void
        out, self._pending = self._pending, []
        if self.transport is not None:
            self._writer.write(b"\r\n".join(out) + b"\r\n")
            self.transport.close()
            if self._timeout_handle is not None:
                self._timeout_handle.cancel()
            self._timeout_handle = self.loop.call_later(self._timeout_duration, self._abort)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _hold(self, reply: bytes) -> bool:
        """Hold `reply`, counting error replies; True when the session must close now (a 421)."""
        if reply[:1] in _ERROR and not reply.startswith(_NOT_AN_ERROR):
            self._errors += 1
            if self._errors > self._limits.max_errors and reply[:3] != b"421":
                self._pending.append(reply)
                metrics.LIMIT_HITS.labels("max_errors").inc()
                reply = f"421 4.7.0 {self.hostname} Error: too many errors".encode()
        self._pending.append(reply)
        return reply[:3] == b"421"

    def _getaddr(self, arg: str):
        text = arg.strip()
        match = _ADDR.match(text)
        if match:
            return match.group(1), match.group(2)
        match = _NULL.match(text)
        if match:
            return "<>", match.group(1)
        return super()._getaddr(arg)

    async def push(self, status: str | bytes) -> None:
        """Send a reply, or hold it while the client has pipelined more commands.

        As Postfix's smtpd does: replies are written in order, and flushed when the input
        holds no further complete command, so a pipelined MAIL/RCPT/DATA gets one packet.
        """
        if self._closing:
            return
        reply = status.encode("ascii", "replace") if isinstance(status, str) else status
        if reply.startswith(b"421 4.7.0 ") and reply.endswith(b" sent too many times"):  # aiosmtpd's own
            metrics.LIMIT_HITS.labels("max_command_repeats").inc()
        if self._hold(reply):
            self._close()
            return
        if reply[:3] not in _FLUSH_NOW and b"\n" in self._reader._buffer:  # noqa: SLF001 - more commands wait
            return
        await self.push_lines()

    async def push_lines(self, lines: list[str] = ()) -> None:
        """Flush held replies, then `lines`, in one write."""
        if self._closing:
            return
        out = self._pending + [line.encode("ascii") for line in lines]
        self._pending = []
        self._writer.write(b"\r\n".join(out) + b"\r\n")
        await self._writer.drain()

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.push("501 Syntax: EHLO hostname")
            return
        self._set_rset_state()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        self.command_size_limits["MAIL"] = self.command_size_limit + 26  # room for SIZE=, as aiosmtpd
        lines = [f"250-{self.hostname}", f"250-SIZE {self.data_size_limit}", "250-8BITMIME", "250-PIPELINING"]
        if self.tls_context and not self._tls_protocol:
            lines.append("250-STARTTLS")
        if self._tls_active():
            lines.append(f"250-{REQUIRETLS}")
        lines.append("250 HELP")
        await self.push_lines(lines)

    def _tls_active(self) -> bool:
        """TLS is up on this session: REQUIRETLS may be offered (RFC 8689 §2, after STARTTLS)."""
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        """aiosmtpd's MAIL, which knows SIZE, BODY and SMTPUTF8, plus REQUIRETLS (RFC 8689):
        taken where offered (TLS up), kept in `envelope.mail_options` for intake; elsewhere
        refused as an unknown parameter (RFC 5321 4.1.1.11), with our enhanced code."""
        params, wanted = _take_requiretls(arg)
        if wanted is None:
            await super().smtp_MAIL(arg)
            return
        if await self.check_helo_needed():
            return
        if wanted != REQUIRETLS:
            await self.push(f"501 5.5.4 Syntax: {REQUIRETLS} takes no value")
            return
        if not (self.session.extended_smtp and self._tls_active()):
            await self.push(f"555 5.5.4 MAIL FROM parameter {REQUIRETLS} not offered on this session (STARTTLS first)")
            return
        before = self.envelope.mail_from
        await super().smtp_MAIL(params)
        if self.envelope.mail_from and not before:  # taken: the handler said 250
            self.envelope.mail_options.append(REQUIRETLS)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, problem = await self._read_data()
        if problem:
            await self.push(problem)
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        reply = ("250 OK" if status is MISSING else status).encode("ascii", "replace")
        if reply[:3] == b"250":
            self._errors = 0  # as Postfix: a message accepted forgives the errors before it
        if self._closing:
            return
        if self._hold(reply):
            self._close()
            return
        # the reply to DATA is the durability promise: it is never held behind pipelined input
        await self.push_lines()

    async def _read_data(self) -> tuple[bytes, str | None]:
        """The message up to the lone dot, un-dot-stuffed; or the reply for a refusal.

        Read as it arrives, in whole lines: each piece is un-dot-stuffed and checked for
        over-long lines on its own, kept in memory up to SPOOL_AFTER bytes and past that
        spooled to an unlinked file under `spool_dir`, read back at the end into one bytes
        object. A large message is held once, not as the reader's buffer and its copies.
        Over the size limit, or after a line too long, the rest is only drained to the dot.
        """
        reader = self._reader
        limit = (self.data_size_limit or 0) + 5  # the size limit, and the terminator
        spool = _Spool(self.spool_dir)
        problem: str | None = None
        draining = False
        received = 0
        text = b""  # input not yet taken; while reading (not draining) it starts at a line start
        self._in_data = True
        try:
            while True:
                if problem is not None and not draining:
                    draining = True
                    self._in_data = False  # draining: the idle timer no longer waits for more
                    spool.drop()
                    text = b"\r\n" + text  # at a line start: a dot line right here ends it
                if draining:  # only the terminator matters now
                    end = text.find(b"\r\n.\r\n")
                    if end >= 0:
                        text = text[end + 5 :]
                        break
                    text = text[-4:]
                else:
                    dot = text.find(b"\r\n.\r\n")
                    cut = 0 if text.startswith(b".\r\n") else dot + 2 if dot >= 0 else -1
                    if cut >= 0:
                        problem = spool.add(text[:cut]) or problem
                        text = text[cut + 3 :]
                        break
                    last = text.rfind(b"\r\n")
                    if last >= 0:
                        problem = spool.add(text[: last + 2])
                        text = text[last + 2 :]
                    if problem is None and len(text) > MAX_LINE:
                        problem = _LINE_TOO_LONG
                    if problem is not None:
                        continue
                chunk = await reader.read(_READ)
                if not chunk:
                    raise asyncio.IncompleteReadError(text, None)
                received += len(chunk)
                if received > limit and problem is None:
                    problem = "552 5.3.4 Error: Too much mail data"
                text += chunk
        finally:
            self._in_data = False
            if text:  # pipelined input after the dot: back to the reader for the next command
                reader._buffer[0:0] = text  # noqa: SLF001 - StreamReader exposes no unread()
        if problem is not None:
            spool.drop()
            return b"", problem
        return spool.content(), None


REQUIRETLS = "REQUIRETLS"


def _take_requiretls(arg: str | None) -> tuple[str | None, str | None]:
    """`arg` of MAIL without a REQUIRETLS parameter, and that parameter as written (upper
    case, `REQUIRETLS=x` included so it can be refused), or None when there is none. Only
    what follows the address's closing `>` is searched, so no address is cut."""
    if not arg or ">" not in arg:
        return arg, None
    at = arg.rindex(">") + 1
    kept, found = [], None
    for word in arg[at:].split():
        upper = word.upper()
        if upper == REQUIRETLS or upper.startswith(REQUIRETLS + "="):
            found = upper
        else:
            kept.append(word)
    return " ".join([arg[:at], *kept]), found


_READ = 256 * 1024
SPOOL_AFTER = 1 << 20  # a message larger than this goes to a file while it arrives
_LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"


def long_line(data: bytes, limit: int) -> bool:
    """Whether a line of `data` has more than `limit` bytes before its LF (or before the end).
    Each step finds the last line break in the next `limit` + 1 bytes (memrchr, from the
    window's end), so the text is read a window at a time, not a line at a time."""
    start, size = 0, len(data)
    while size - start > limit:
        last = data.rfind(b"\n", start, start + limit + 1)
        if last < 0:
            return True
        start = last + 1
    return False


def _spool_file(directory):
    try:
        return tempfile.TemporaryFile(dir=directory, buffering=0)
    except FileNotFoundError:  # the first large message since data_dir was made
        return tempfile.TemporaryFile(dir=private_dir(directory), buffering=0)


class _Spool:
    """A message's lines as they arrive: un-dot-stuffed, in memory while small, then in an
    unlinked temporary file (gone with the process, whatever happens to it)."""

    def __init__(self, directory) -> None:
        self.directory = directory
        self.pieces: list[bytes] = []
        self.size = 0
        self.file = None

    def add(self, lines: bytes) -> str | None:
        """Take whole lines; the reply that refuses the message when they cannot be kept."""
        if not lines:
            return None
        if lines.startswith(b"."):  # RFC 5321 4.5.2: the dot that starts a line goes (each piece starts one)
            lines = lines[1:]
        lines = lines.replace(b"\r\n.", b"\r\n")
        if long_line(lines, MAX_LINE):
            return _LINE_TOO_LONG
        self.size += len(lines)
        try:
            if self.file is None and self.directory is not None and self.size > SPOOL_AFTER:
                self.file = _spool_file(self.directory)
                for piece in self.pieces:
                    self.file.write(piece)
                self.pieces = []
            if self.file is not None:
                self.file.write(lines)
            else:
                self.pieces.append(lines)
        except OSError as exc:
            log.error("spooling a message failed: %s", exc)
            self.drop()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                return "452 4.3.1 Insufficient system storage"
            return "451 4.3.0 Local error in processing"
        return None

    def content(self) -> bytes:
        if self.file is None:
            return b"".join(self.pieces)
        try:
            self.file.seek(0)
            return self.file.readall()
        finally:
            self.drop()

    def drop(self) -> None:
        self.pieces = []
        if self.file is not None:
            self.file.close()
            self.file = None


class _Bound:
    """aiosmtpd's name -> bound method table, binding only the names actually used."""

    __slots__ = ("_owner", "_prefix", "_names")

    def __init__(self, owner: object, prefix: str, names: frozenset[str]) -> None:
        self._owner, self._prefix, self._names = owner, prefix, names

    def get(self, name: str, default: Any = None) -> Any:
        return getattr(self._owner, self._prefix + name) if name in self._names else default

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def items(self):
        return ((name, getattr(self._owner, self._prefix + name)) for name in self._names)


def _hook_names(handler_type: type) -> frozenset[str]:
    cached = _HOOKS.get(handler_type)
    if cached is None:
        cached = _HOOKS[handler_type] = frozenset(
            m[len("handle_") :] for m in dir(handler_type) if m.startswith("handle_")
        )
    return cached


def _smtp_names(cls: type) -> frozenset[str]:
    cls._smtp_names = frozenset(m[len("smtp_") :] for m in dir(cls) if m.startswith("smtp_"))
    return cls._smtp_names


_HOOKS: dict[type, frozenset[str]] = {}
