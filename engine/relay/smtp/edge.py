"""The SMTP edge: aiosmtpd sessions in, `Message`s out, `Verdict`s back as SMTP replies.

Only this module knows reply codes. Each connection takes the live config current when it
was accepted and keeps it to the end (a swap never changes the rules mid-session), its
`system.limits` included. What it enforces before DATA: the listener's `starttls: required`,
enforced-TLS rules for inbound peers (530 until STARTTLS, then the protocol and cipher
floor), relay permission (external recipients only from trusted peers) and the recipient
limit. `RCPT TO:<postmaster>` without a domain (RFC 5321 4.5.1) is the postmaster of the
first internal domain. After DATA: the header limits, then `Intake` decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from engine.config.model.system import Limits, Listener
from engine.policy.groups import domain_of
from engine.relay.runtime import metrics
from engine.relay.runtime.live import Live
from engine.relay.smtp.intake import Intake
from engine.relay.smtp.message import Message, TLSInfo, Verdict, VerdictKind
from engine.relay.smtp.protocol import Connections, RelaySMTP
from engine.relay.tls.levels import check_negotiated

log = logging.getLogger(__name__)

_DEFAULT_CODES = {VerdictKind.ACCEPT: 250, VerdictKind.REJECT: 550, VerdictKind.TEMPFAIL: 451}


def reply(verdict: Verdict) -> str:
    code = verdict.code or _DEFAULT_CODES[verdict.kind]
    return f"{code} {verdict.status} {verdict.text}".replace("\r", " ").replace("\n", " ")


def tls_info(server: SMTP) -> TLSInfo:
    ssl_object = server.transport.get_extra_info("ssl_object") if server.transport else None
    if ssl_object is None:
        return TLSInfo()
    name, _, bits = ssl_object.cipher() or (None, None, None)
    return TLSInfo(ssl_object.version(), name, bits)


class EdgeHandler:
    """aiosmtpd hooks for one connection, bound to the live config it started with."""

    def __init__(self, live: Live, listener: Listener, intake: Intake) -> None:
        self.live = live
        self.listener = listener
        self.intake = intake
        self.limits = live.config.system.limits
        self.excess_recipients = 0  # RCPTs over max_recipients in this session

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        peer_ip = session.peer[0] if session.peer else ""
        policy = self.live.inbound_policy(peer_ip, domain_of(address))
        if policy is not None and policy.level.requires_tls:
            ssl_object = server.transport.get_extra_info("ssl_object")
            if ssl_object is None:
                return "530 5.7.0 Must issue a STARTTLS command first"
            weak = check_negotiated(ssl_object, policy.min_bits, policy.min_protocol)
            if weak:
                return f"530 5.7.0 TLS too weak for this peer: {weak}"
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd reads "" as "no MAIL yet"
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.limits.max_recipients:
            metrics.LIMIT_HITS.labels("max_recipients").inc()
            self.excess_recipients += 1
            if self.excess_recipients > self.limits.max_recipients:  # the client ignores the 452s
                return f"421 4.5.3 {server.hostname} Error: too many recipients"
            return "452 4.5.3 Too many recipients"
        domain = domain_of(address)
        if not domain and address.lower() == "postmaster":
            address = postmaster(self.live.config.system.internal_domains) or address
            domain = domain_of(address)
        if not domain:
            return "550 5.1.3 Recipient address must have a domain"
        if sender_routed(address):
            return f"550 5.7.1 <{address}>: sender-routed addresses (%, !, a quoted @) are not accepted"
        peer_ip = session.peer[0] if session.peer else ""
        if not self.live.is_internal(domain) and not self.live.may_relay(peer_ip):
            return f"554 5.7.1 <{address}>: Relay access denied"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        problem = header_problem(envelope.original_content or b"", self.limits)
        if problem:
            return reply(problem)
        message = Message(
            sender="" if envelope.mail_from == "<>" else envelope.mail_from or "",  # "" is the null sender inside
            recipients=tuple(envelope.rcpt_tos),
            content=bytes(envelope.original_content or b""),
            peer_ip=session.peer[0] if session.peer else "",
            helo=session.host_name or "",
            listener=self.listener.name,
            tls=tls_info(server),
            received_at=time.time(),
            mail_params=tuple(envelope.mail_options),
        )
        try:
            verdict = await self.intake.receive(self.live, message)
        except Exception:  # the relay never crashes on input: log it, let the client retry
            log.exception("intake failed for a message from %s", message.peer_ip)
            verdict = Verdict.tempfail("local error in processing, try again later")
        return reply(verdict)


def postmaster(internal_domains: list[str]) -> str | None:
    """Where `RCPT TO:<postmaster>` goes: postmaster at the first internal domain that is
    not a wildcard (None when there is none, and the recipient is refused)."""
    domain = next((d for d in internal_domains if not d.startswith("*.")), None)
    return f"postmaster@{domain}" if domain else None


def header_problem(content: bytes, limits: Limits) -> Verdict | None:
    """The verdict on a header section over `max_header_size` or `max_header_count`, else None.

    The header section runs to the first empty line (the whole message when there is none);
    only as much of the content as the size limit allows is searched."""
    if content.startswith(b"\r\n"):
        return None  # no header fields at all
    max_size = int(limits.max_header_size)
    end = content.find(b"\r\n\r\n", 0, max_size + 2)
    if end < 0 and len(content) > max_size:
        metrics.LIMIT_HITS.labels("max_header_size").inc()
        return Verdict.reject(f"message header larger than {limits.max_header_size}", "5.3.4", code=552)
    head = content if end < 0 else content[: end + 2]
    fields = head.count(b"\r\n") - head.count(b"\r\n ") - head.count(b"\r\n\t") + (not head.endswith(b"\r\n"))
    if fields > limits.max_header_count:
        metrics.LIMIT_HITS.labels("max_header_count").inc()
        return Verdict.reject(f"too many header fields (more than {limits.max_header_count})", "5.3.4", code=552)
    return None


def session_factory(
    current: Callable[[], Live], listener: Listener, intake: Intake, connections: Connections | None = None
) -> Callable[[], SMTP]:
    """A protocol factory for `loop.create_server`: each connection gets the live config
    current when it was accepted, and that config's settings for this address and port and
    its `system.limits`; `connections` counts the relay's open connections against them."""
    where = (listener.address, listener.port)

    def make() -> SMTP:
        live = current()
        listener_now = next((lst for lst in live.config.system.listeners if (lst.address, lst.port) == where), listener)
        return RelaySMTP(
            EdgeHandler(live, listener_now, intake),
            data_size_limit=int(live.config.system.message_size_limit),
            hostname=live.config.system.fqdn,
            tls_context=live.server_tls,
            require_starttls=listener_now.starttls == "required",
            limits=live.config.system.limits,
            connections=connections,
            loop=asyncio.get_running_loop(),
            spool_dir=live.data_dir / "spool",
        )

    return make


def sender_routed(address: str) -> bool:
    """An address whose local part routes on (`bob%partner.example@example.com`, a bang path
    `partner!bob@example.com`, `"bob@partner.example"@example.com`): a next hop that honours
    the old percent hack would send it outside although its domain is internal, past DLP and
    the relay check (Postfix's `allow_percent_hack`, `swap_bangpath`). Refused, as Postfix's
    reject_unauth_destination does for such forms."""
    local = address.strip("<>").rpartition("@")[0]
    return "%" in local or "!" in local or (local.startswith('"') and "@" in local)
