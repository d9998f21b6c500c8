"""One SMTP transaction to one next hop, at the TLS level its policy demands.

The rule that matters most lives here: under a level that requires TLS, MAIL FROM is
never sent unless STARTTLS succeeded and the negotiated protocol and cipher meet the
floor. Under `opportunistic`, a failed handshake is retried in plain text (as Postfix's
`may` level does) and the result says so. Every error becomes a `Failure` through
`failures.classify`; a failure of the whole hop (`site_failure`) lets the caller try the
next hop, per-recipient failures stay per recipient.

A message received with REQUIRETLS (RFC 8689, `requiretls`) raises the level to at least
`secure`, needs REQUIRETLS in the EHLO answer after STARTTLS, and carries the parameter on its
MAIL FROM; a hop that falls short of that raises `RequireTLSUnmet` before MAIL FROM.

Every stage has its own timeout (`delivery.timeouts`, Postfix's `smtp_*_timeout`): the TCP
connection, the greeting, EHLO, STARTTLS, MAIL, each RCPT, DATA, and the content with the
reply to its final dot. A stage that times out raises `StageTimeout`, so the reason says where
the peer stopped answering, and the scheduler can tell a tarpit (no greeting) from a slow
transaction. Once the content's final dot is sent the message may already be accepted:
the task's `Progress` (a context variable the scheduler sets per delivery task) says so, and
a relay that stops lets such a delivery finish rather than cancel it (a duplicate), while
the others are cancelled at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

import aiosmtplib

from engine.config.secrets import resolve
from engine.relay.delivery import pipelining, requiretls
from engine.relay.delivery.failures import Failure, RequireTLSUnmet, StageTimeout, TLSRequiredError, classify
from engine.relay.delivery.pool import ConnectionPool
from engine.relay.delivery.resolve import Hop
from engine.relay.queue import Entry
from engine.relay.runtime.live import Live, TLSPolicy
from engine.relay.smtp.message import crlf_only
from engine.relay.tls import dane, tlsrpt
from engine.relay.tls.levels import DANEMismatch, NoStartTLS, TLSLevel, check_negotiated, describe_failure


@dataclass
class Attempt:
    site_failure: Failure | None = None
    results: dict[str, str | Failure] = field(default_factory=dict)  # rcpt -> reply text or Failure
    tls: str | None = None
    stale: bool = False  # a reused session was found closed before anything was sent
    # for TLS-RPT (`engine.relay.tls.tlsrpt`): "success", an RFC 8460 result type, or None
    # (no TLS asked for, or no session got that far), its short reason, and our address
    tls_result: str | None = None
    tls_reason: str = ""
    local_ip: str = ""


@dataclass
class Progress:
    """What a delivery task has done that cancelling it could not undo: `committed` once some
    content's final dot went out (the peer may have the message, whatever we hear next)."""

    committed: bool = False


PROGRESS: ContextVar[Progress | None] = ContextVar("delivery_progress", default=None)


async def transfer(
    live: Live,
    hop: Hop,
    policy: TLSPolicy,
    entry: Entry,
    rcpts: list[str],
    pool: ConnectionPool | None = None,
    *,
    auth=None,
) -> Attempt:
    """Deliver `entry` to `rcpts` through `hop`. Never raises for a peer's behaviour.

    With a `pool`, a session left by an earlier clean transaction to the same hop under the
    same policy is reused; if it turns out to be gone, one fresh session is tried instead.
    """
    tagged = requiretls.requested(entry.meta)
    if tagged:  # the sender's demand only tightens what the relay's policy asks
        policy = requiretls.tighten(policy)
    # a session is reused only for the same hop, policy, config version and login, and a
    # REQUIRETLS message only on a session whose peer was checked for REQUIRETLS
    login = (auth.username, auth.password.model_dump_json()) if auth is not None else None
    key = (live.version, hop.address, hop.port, hop.host, policy.level, policy.min_protocol, policy.min_bits, login)
    key += (tagged, policy.dane)
    cached = pool.take(key) if pool else None
    if cached is not None:
        attempt = await _transaction(live, hop, policy, entry, rcpts, pool, key, cached, auth)
        if not attempt.stale:
            return attempt
    return await _transaction(live, hop, policy, entry, rcpts, pool, key, None, auth)


async def _transaction(live, hop, policy, entry, rcpts, pool, key, cached, auth) -> Attempt:
    attempt = Attempt(tls="none")
    client = None
    uses = 0
    try:
        if cached is not None:
            client, attempt.tls, uses = cached.client, cached.tls, cached.uses
        else:
            client, attempt.tls = await _open(live, hop, policy, requiretls.requested(entry.meta), attempt)
            if auth is not None:
                await _login(live, client, auth)
        timeouts = live.config.delivery.timeouts
        try:
            accepted = await _envelope_and_data(client, entry, rcpts, attempt, timeouts, hop)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError):
            if cached is not None:  # the peer closed the idle session: not a delivery failure
                client.close()
                attempt.stale = True
                return attempt
            raise
        if not (accepted and pool and pool.give(key, client, attempt.tls, uses + 1)):
            await _quit(client, float(timeouts.helo))
    except Exception as exc:  # noqa: BLE001 - every failure is classified, none escapes
        failure = classify(None, exc)
        if isinstance(exc, TLSRequiredError):
            attempt.tls = f"refused: {exc}"
            if attempt.tls_result is None:  # not a session that had its TLS before (a login)
                attempt.tls_result, attempt.tls_reason = tlsrpt.failure_type(exc)
        failure = failure.located(hop)
        if failure.kind == "defer_site":
            attempt.site_failure = failure
        else:  # MAIL or DATA refused: every recipient without its own answer shares it
            for rcpt in rcpts:
                attempt.results.setdefault(rcpt, failure)
        if client is not None:
            client.close()
    return attempt


async def _envelope_and_data(client, entry: Entry, rcpts: list[str], attempt: Attempt, timeouts, hop: Hop):
    """MAIL, RCPTs, DATA and the content; per-recipient refusals go into `attempt.results`.

    Returns the accepted recipients. A MAIL or DATA refusal raises. Where the peer offers
    PIPELINING, the three go out in one write (`pipelining`, RFC 2920).
    """
    if pipelining.usable(client) and in_wire_form(entry.body):
        accepted, response = await _pipelined(client, entry, rcpts, attempt, timeouts)
    else:
        accepted = await _one_by_one(client, entry, rcpts, attempt, timeouts)
        response = (
            await send_data(client, entry.body, float(timeouts.data_done), float(timeouts.data)) if accepted else None
        )
    if response is not None:
        for rcpt in accepted:
            attempt.results[rcpt] = f"{hop}: {response.code} {response.message}"
    return accepted


async def _one_by_one(client, entry: Entry, rcpts: list[str], attempt: Attempt, timeouts) -> list[str]:
    """MAIL and each RCPT, each waiting for its reply; returns the accepted recipients."""
    with stage("mail", timeouts.mail) as seconds:
        await client.mail(entry.sender, options=requiretls.mail_options(entry.meta), timeout=seconds)
    accepted = []
    for rcpt in rcpts:
        try:
            with stage("rcpt", timeouts.rcpt) as seconds:
                await client.rcpt(rcpt, timeout=seconds)
            accepted.append(rcpt)
        except aiosmtplib.SMTPRecipientRefused as exc:
            attempt.results[rcpt] = classify(exc.code, exc)
    return accepted


async def _pipelined(client, entry: Entry, rcpts: list[str], attempt: Attempt, timeouts):
    """MAIL, every RCPT and DATA in one write, then their replies in order, each within its
    stage's timeout. Returns the accepted recipients and the reply to the content, which is
    sent when DATA is answered 354 with a recipient accepted (None when it was not sent). A
    refused MAIL, or DATA refused with a recipient accepted, raises as `send_data` does."""
    protocol = client.protocol
    commands = [pipelining.command(b"MAIL FROM:", entry.sender, requiretls.mail_options(entry.meta))]
    commands += [pipelining.command(b"RCPT TO:", rcpt) for rcpt in rcpts]
    accepted = []
    with protocol.group(len(commands) + 1):
        protocol.send_group([*commands, b"DATA"])
        with stage("mail", timeouts.mail) as seconds:
            reply = await protocol.next_reply(seconds)
        if reply.code != 250:
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, entry.sender)
        for rcpt in rcpts:
            with stage("rcpt", timeouts.rcpt) as seconds:
                reply = await protocol.next_reply(seconds)
            if reply.code in (250, 251):
                accepted.append(rcpt)
            else:
                attempt.results[rcpt] = classify(
                    reply.code, aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, rcpt)
                )
        with stage("data", timeouts.data) as seconds:
            reply = await protocol.next_reply(seconds)
        if protocol.leftover:  # more replies than commands: nothing read can be trusted
            raise aiosmtplib.SMTPServerDisconnected("the peer answered more than it was asked (PIPELINING)")
    if reply.code != 354:
        if accepted:
            raise aiosmtplib.SMTPDataError(reply.code, reply.message)
        return accepted, None  # every recipient refused: DATA's refusal is expected (RFC 2920)
    if not accepted:  # a 354 with no recipient: end it with no content
        with stage("data_done", timeouts.data_done) as seconds:
            await client.execute_command(b".", timeout=seconds)
        return accepted, None
    return accepted, await send_content(client, entry.body, float(timeouts.data_done))


class stage:  # lower case: used as `with stage(...)`, like a function
    """One stage of the conversation: gives the timeout to pass to aiosmtplib's call, and
    turns its timeout into `StageTimeout(name)`. (aiosmtplib's own per-call timeout, not
    `asyncio.wait_for`: a call wrapped in a task starts a loop turn late, and aiosmtplib drops
    a reply that arrives before its read has begun as unsolicited.)"""

    __slots__ = ("name", "seconds")

    def __init__(self, name: str, seconds: float) -> None:
        self.name, self.seconds = name, float(seconds)

    def __enter__(self) -> float:
        return self.seconds

    def __exit__(self, kind, exc, tb) -> None:
        if exc is not None and isinstance(exc, TimeoutError | aiosmtplib.SMTPTimeoutError):
            raise StageTimeout(self.name, self.seconds) from exc


WRITE_CHUNK = 256 * 1024


def in_wire_form(body: bytes) -> bool:
    """CRLF line endings only (what intake queues): no bare CR or LF to normalise."""
    return crlf_only(body)


def wire_pieces(body: bytes) -> Iterator[bytes | memoryview]:
    """The content as DATA sends it (dots doubled, CRLF at the end), in pieces of about
    WRITE_CHUNK cut after line breaks: a piece with no line to stuff is a view of the body,
    so a large message is not copied to be sent."""
    view, size, at = memoryview(body), len(body), 0
    while at < size:
        stop = size
        if size - at > WRITE_CHUNK:
            cut = body.rfind(b"\r\n", at, at + WRITE_CHUNK)
            cut = cut if cut >= 0 else body.find(b"\r\n", at + WRITE_CHUNK)  # a line longer than a piece
            stop = size if cut < 0 else cut + 2
        dot = body.startswith(b".", at)  # every piece starts a line
        if dot or body.find(b"\r\n.", at, stop) >= 0:
            yield (b"." if dot else b"") + body[at:stop].replace(b"\r\n.", b"\r\n..")
        else:
            yield view[at:stop]
        at = stop
    if not body.endswith(b"\r\n"):
        yield b"\r\n"


async def send_data(client: aiosmtplib.SMTP, body: bytes, timeout: float, data_timeout: float | None = None):
    """DATA with the content as it is on the wire: CRLF line endings, dots doubled.

    `data_timeout` bounds the reply to DATA, `timeout` the content and the reply to its end.
    Queued content already has CRLF line endings only (intake refuses bare CR and LF), so
    only the dots need work, done piece by piece (`wire_pieces`) with the transport's flow
    control between pieces: what waits in memory to be sent is a piece, not the message
    (aiosmtplib's `data()` runs regular expressions over a copy of the whole; that path
    remains for content that is not in wire form).
    """
    if not in_wire_form(body):
        progress = PROGRESS.get()
        if progress is not None:
            progress.committed = True
        with stage("data_done", timeout) as seconds:
            return await client.data(body, timeout=seconds)
    with stage("data", data_timeout or timeout) as seconds:
        response = await client.execute_command(b"DATA", timeout=seconds)
    if response.code != 354:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return await send_content(client, body, timeout)


async def send_content(client: aiosmtplib.SMTP, body: bytes, timeout: float):
    """The content after DATA's 354, in wire form (`in_wire_form`), and the reply to its end."""
    progress = PROGRESS.get()
    if progress is not None:
        progress.committed = True
    protocol = client.protocol
    with stage("data_done", timeout) as seconds:
        try:
            async with asyncio.timeout(seconds):
                if len(body) <= WRITE_CHUNK:  # the content and its end in one write (a system call less)
                    protocol.write(b"".join([*wire_pieces(body), b".\r\n"]))
                else:
                    for piece in wire_pieces(body):
                        protocol.write(piece)
                        await protocol._drain_helper()  # noqa: SLF001 - the transport's flow control
                    protocol.write(b".\r\n")
        except ConnectionError as exc:
            raise aiosmtplib.SMTPServerDisconnected(f"connection lost while sending the message: {exc}") from exc
        response = await protocol.read_response(timeout=seconds)  # at once: the reply may already be here
    if response.code != 250:
        raise aiosmtplib.SMTPDataError(response.code, response.message)
    return response


async def _open(
    live: Live, hop: Hop, policy: TLSPolicy, tagged: bool = False, attempt: Attempt | None = None
) -> tuple[aiosmtplib.SMTP, str]:
    """Connect, EHLO, and STARTTLS as the policy demands. Returns the client and a TLS note.

    `tagged`: the message was received with REQUIRETLS (`policy` is already tightened): a
    refusal by the peer or by our policy raises `RequireTLSUnmet`, and the EHLO after
    STARTTLS must offer REQUIRETLS. `attempt` learns what TLS-RPT reports of the session."""
    client = await _connect(live, hop)
    if attempt is not None:
        attempt.local_ip = _local_ip(client)
    client, note = await _secure(live, hop, policy, tagged, client)
    if attempt is not None:
        attempt.tls_result = _session_result(client, policy)
    return client, note


def _local_ip(client: aiosmtplib.SMTP) -> str:
    """Our end of the connection: TLS-RPT's `sending-mta-ip`."""
    sockname = client.get_transport_info("sockname")
    return str(sockname[0]) if sockname else ""


def _session_result(client: aiosmtplib.SMTP, policy: TLSPolicy) -> str | None:
    """What TLS-RPT counts for a session that is up: "success" with TLS, the RFC's
    `starttls-not-supported` for a peer that offered none, nothing where no TLS was asked for
    (a route at level `none`) or a failed STARTTLS fell back to plain text (opportunistic)."""
    if client.get_transport_info("ssl_object") is not None:
        return "success"
    if policy.level is not TLSLevel.NONE and not client.supports_extension("starttls"):
        return "starttls-not-supported"
    return None


async def _secure(
    live: Live, hop: Hop, policy: TLSPolicy, tagged: bool, client: aiosmtplib.SMTP
) -> tuple[aiosmtplib.SMTP, str]:
    """STARTTLS on a connected `client` as the policy demands (see `_open`)."""
    level = policy.level
    if level is TLSLevel.NONE:
        return client, "none (route says no TLS)"
    if not client.supports_extension("starttls"):
        if level.requires_tls:
            client.close()
            unmet = RequireTLSUnmet if tagged else TLSRequiredError
            raise unmet(f"{NoStartTLS().reason}; {policy} required by {', '.join(policy.sources)}") from NoStartTLS()
        return client, "none (peer offered no STARTTLS)"
    timeouts = live.config.delivery.timeouts
    try:
        with stage("starttls", timeouts.starttls) as seconds:
            await client.starttls(server_hostname=hop.host, tls_context=live.client_context(policy), timeout=seconds)
    except Exception as exc:  # noqa: BLE001 - any handshake failure
        reason = describe_failure(exc)
        client.close()
        if level.requires_tls:
            broken = _broken_handshake(exc)
            unmet = RequireTLSUnmet if tagged and not broken else TLSRequiredError  # a broken one may heal
            raise unmet(f"{reason}; {policy} required by {', '.join(policy.sources)}", handshake=broken) from exc
        client = await _connect(live, hop)  # opportunistic: try again in plain text
        return client, f"none (STARTTLS failed: {reason}; sent in plain text as opportunistic allows)"
    ssl_object = client.get_transport_info("ssl_object")
    if policy.dane is not None:  # RFC 7672: the chain must match the MX host's TLSA records
        mismatch = dane.check(dane.peer_chain(ssl_object), policy.dane)
        if mismatch is not None:
            client.close()
            unmet = RequireTLSUnmet if tagged else TLSRequiredError
            raise unmet(f"DANE: {mismatch}; {policy} required by {', '.join(policy.sources)}") from DANEMismatch(
                mismatch
            )
    weak = check_negotiated(ssl_object, policy.min_bits, policy.min_protocol)
    if not weak or not level.requires_tls:
        with stage("helo", timeouts.helo) as seconds:
            await client.ehlo(timeout=seconds)  # RFC 3207: forget what was said in clear, ask again
    if weak and level.requires_tls:
        client.close()
        raise TLSRequiredError(f"{weak}; {policy} required by {', '.join(policy.sources)}")
    if tagged and not client.supports_extension(requiretls.KEYWORD):
        client.close()
        raise RequireTLSUnmet("peer does not offer REQUIRETLS after STARTTLS; the message was received with it")
    name, _, bits = ssl_object.cipher()
    pkix = live.client_context(policy).verify_mode == ssl.CERT_REQUIRED
    checks = ", chain verified" if pkix else ""
    checks += ", name checked" if pkix and level.checks_hostname else ""
    checks += ", TLSA matched (DANE)" if policy.dane is not None else ""
    checks += ", REQUIRETLS" if tagged else ""
    return client, f"{ssl_object.version()} {name} ({bits}-bit){checks}"


async def _login(live: Live, client: aiosmtplib.SMTP, auth) -> None:
    """SMTP AUTH with the route's credentials, over TLS only: a password never goes in clear."""
    if client.get_transport_info("ssl_object") is None:
        client.close()
        raise TLSRequiredError(
            "the route's SMTP AUTH needs TLS, and the session has none: the password is not sent in clear"
        )
    password = resolve(auth.password, live.base_dir)
    with stage("helo", live.config.delivery.timeouts.helo) as seconds:
        await client.login(auth.username, password, timeout=seconds)


def _broken_handshake(exc: BaseException) -> bool:
    """Whether a failed STARTTLS means the peer's TLS is broken (connection-level), rather than
    a refusal (a reply to STARTTLS) or a certificate our policy does not accept."""
    if isinstance(exc, aiosmtplib.SMTPResponseException | ssl.SSLCertVerificationError):
        return False
    return isinstance(exc, ssl.SSLError | OSError | TimeoutError | aiosmtplib.SMTPServerDisconnected)


async def _connect(live: Live, hop: Hop) -> aiosmtplib.SMTP:
    """A TCP connection within `timeouts.connect`, the greeting within `timeouts.greeting`,
    then EHLO within `timeouts.helo` (aiosmtplib would give connect and greeting one timeout)."""
    timeouts = live.config.delivery.timeouts
    sock = await _tcp(hop, float(timeouts.connect))
    client = pipelining.PipeliningSMTP(
        local_hostname=live.config.system.fqdn,
        timeout=float(timeouts.helo),  # what aiosmtplib's own calls default to; ours pass a stage
        start_tls=False,
        use_tls=False,
    )
    try:
        with stage("greeting", timeouts.greeting) as seconds:
            await client.connect(sock=sock, timeout=seconds)
    except BaseException:
        sock.close()
        raise
    with stage("helo", timeouts.helo) as seconds:
        await client.ehlo(timeout=seconds)
    return client


async def _tcp(hop: Hop, seconds: float) -> socket.socket:
    """A connected, non-blocking socket to the hop. A refusal raises aiosmtplib's
    `SMTPConnectError` (as its own connect would), a timeout `StageTimeout("connect")`."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(hop.address).version == 6 else socket.AF_INET
    except ValueError:  # not an address: let the resolver pick
        infos = await asyncio.get_running_loop().getaddrinfo(hop.address, hop.port, type=socket.SOCK_STREAM)
        family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (hop.address, hop.port)), seconds)
    except TimeoutError as exc:
        sock.close()
        raise StageTimeout("connect", seconds) from exc
    except OSError as exc:
        sock.close()
        raise aiosmtplib.SMTPConnectError(f"Error connecting to {hop.address} on port {hop.port}: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    return sock


async def _quit(client: aiosmtplib.SMTP, seconds: float) -> None:
    try:
        await client.quit(timeout=seconds)
    except (aiosmtplib.SMTPException, TimeoutError):
        client.close()
