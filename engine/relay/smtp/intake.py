"""Intake: from a received message to a durable queue entry, and the verdict for the client.

The order is the pipeline's: checks on the content → inbound decryption (when on:
S/MIME for internal recipients whose key is held, engine/relay/decrypt, so DLP reads what
the recipient will) → decision (direction, DLP, action) → a Received header → the durable
queue (250 only after the commit is on disk) → one structured log line → a nudge to the
delivery workers.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from email.utils import formatdate

from engine.relay.decision import Decision
from engine.relay.decrypt.inbound import decrypt_inbound
from engine.relay.delivery import ndr, requiretls
from engine.relay.dlp.decide import decide
from engine.relay.dlp.notify import notify_targets, owners_report
from engine.relay.queue import Queue, QueueWriteError
from engine.relay.queue.quarantine import Quarantine
from engine.relay.runtime import metrics
from engine.relay.runtime.decisionlog import log_decision
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message, Verdict, line_breaks

log = logging.getLogger(__name__)

MAX_RECEIVED_HEADERS = 50  # more hops than this is a mail loop (RFC 5321 §6.3)


class Intake:
    """Accepts messages into the queue; `on_queued` is called with each new queue id."""

    def __init__(self, queue: Queue, on_queued=None) -> None:
        self.queue = queue
        self.on_queued = on_queued

    async def receive(self, live: Live, message: Message) -> Verdict:
        lines = line_breaks(message.content)
        problem = content_problem(message.content, lines)
        if problem:
            return problem
        received, message = message, await decrypt_inbound(live, message)
        decision = await decide(live, message, lines if message is received else None)
        # the relay's header lines go before what the client sent; a large body is not copied to join them
        prefix = received_header(live, message) + dlp_header(decision)
        content = strip_dlp_headers(message.content)
        try:
            if decision.action == "quarantine":
                ref = await self._hold(live, message, prefix + content, decision)
                reply = f"accepted, held for review as {ref}"
            elif decision.action == "block":
                ref = await self._block(live, message, prefix + content, decision)
                reply = f"accepted, not delivered: blocked by policy ({ref})"
            else:
                ref = await self.queue.enqueue(
                    message.sender,
                    list(message.recipients),
                    content,
                    meta=_meta(live, message, decision),
                    prefix=prefix,
                )
                reply = f"queued as {ref}"
            if decision.verdict and decision.verdict.hits:
                try:  # the message is stored: a report that fails must not make the client retry
                    await self._notify(live, message, decision, ref)
                except Exception:
                    log.exception("the DLP report about %s could not be queued", ref)
        except QueueWriteError as exc:
            log.error("queue write failed: %s", exc.reason)
            if not exc.transient:
                return Verdict.reject("message could not be stored", "5.3.4", code=552)
            if exc.no_space:
                return Verdict.tempfail("insufficient system storage, try again later", "4.3.1", code=452)
            return Verdict.tempfail("local error in processing, try again later", "4.3.0", code=451)
        except OSError as exc:  # the quarantine's files
            log.error("quarantine write failed: %s", exc)
            return Verdict.tempfail("local error in processing, try again later", "4.3.0", code=451)
        log_decision("received", ref, live.version, message, decision)
        metrics.child(metrics.RECEIVED, decision.direction, decision.action).inc()
        for policy in decision.policies:
            metrics.DLP_MATCHES.labels(policy).inc()
        if decision.unscanned:
            metrics.DLP_UNSCANNABLE.labels(decision.direction).inc()
        if self.on_queued:
            self.on_queued(ref)
        return Verdict.accept(reply)

    async def _hold(self, live: Live, message: Message, content: bytes, decision: Decision) -> str:
        quarantine = Quarantine(live.data_dir)
        hits = decision.verdict.hits if decision.verdict else ()
        reason = "; ".join(f"{h.policy}/{h.rule}" for h in hits if h.action == "quarantine")
        reason = (
            reason
            or "the encryption gateway did not report the message encrypted (failure header, or no result header)"
        )
        subject = _subject(content)
        return await asyncio.to_thread(
            quarantine.put, message.sender, message.recipients, content, decision.policies, reason, subject
        )

    async def _block(self, live: Live, message: Message, content: bytes, decision: Decision) -> str:
        """Nothing is delivered; the sender gets a DSN that names the policy."""
        rules = ", ".join(f"{h.policy}/{h.rule}" for h in decision.verdict.hits if h.action == "block")
        if not ndr.should_send_dsn(message.sender):
            return "no notice to a null sender"
        now = datetime.now(UTC)
        statuses = [
            ndr.RecipientStatus(
                r, "failed", "5.7.1", f"blocked by data loss protection policy ({rules})", None, now, None
            )
            for r in message.recipients
        ]
        dsn = ndr.build_dsn(
            reporting_mta=live.config.system.fqdn,
            original_sender=message.sender,
            original_envelope_id=None,
            arrival_date=now,
            recipients=statuses,
            original_message=content,
            include="headers",
            kind="failure",
        )
        tagged = requiretls.dsn_meta({"mail_params": message.mail_params})  # REQUIRETLS in, REQUIRETLS back
        return await self.queue.enqueue(
            "", [message.sender], dsn, meta={"kind": "dsn-blocked", "config_version": live.version, **tagged}
        )

    async def _notify(self, live: Live, message: Message, decision: Decision, ref: str) -> None:
        targets = notify_targets(decision.verdict)
        if not targets:
            return
        report = owners_report(
            live.config.system.fqdn,
            targets,
            decision.verdict,
            sender=message.sender,
            recipients=message.recipients,
            subject=_subject(message.content),
            ref=ref,
        )
        await self.queue.enqueue(
            "", targets, report, meta={"kind": "dlp-report", "about": ref, "config_version": live.version}
        )


def content_problem(content: bytes, lines: int | None) -> Verdict | None:
    """Refuse what a careful MTA refuses: bare CR or LF (SMTP smuggling; `lines` is None,
    as `line_breaks` says), mail loops."""
    if lines is None:
        return Verdict.reject("message contains a bare CR or LF: only CRLF line endings are allowed", "5.5.2")
    head = _head(content).lower()
    hops = head.count(b"\r\nreceived:") + head.startswith(b"received:")
    if hops > MAX_RECEIVED_HEADERS:
        return Verdict.reject(f"mail loop: {hops} Received headers", "5.4.6", code=554)
    return None


DLP_HEADER = b"X-Sealrelay-DLP"


def dlp_header(decision: Decision) -> bytes:
    """The decision, for the downstream gateway: matched policies and the action. Stamped
    whenever DLP judged the message, so a downstream gateway never sees only a sender's."""
    if decision.verdict is None:
        return b""
    line = f"{DLP_HEADER.decode()}: action={decision.action}; policies={','.join(decision.policies)}\r\n"
    return line.encode("ascii", "replace")


_FORGED = re.compile(rb"^" + re.escape(DLP_HEADER.lower()) + rb"[ \t]*:")


def strip_dlp_headers(content: bytes) -> bytes:
    """Remove DLP headers a sender put in (only the relay's own may reach the next hop),
    including the obsolete `Name :` spelling that other parsers still accept."""
    head = _head(content)
    if DLP_HEADER.lower() not in head.lower():
        return content
    sep, body = content[len(head) : len(head) + 4], content[len(head) + 4 :]
    kept, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and skipping:
            continue
        skipping = bool(_FORGED.match(line.lower()))
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def _head(content: bytes) -> bytes:
    """The header section (to the first empty line; all of it when there is none), without
    copying the body as `split`/`partition` would."""
    end = content.find(b"\r\n\r\n")
    return content if end < 0 else content[:end]


def _subject(content: bytes) -> str:
    head = _head(content)
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"subject:"):
            return line[8:].strip().decode("utf-8", "replace")[:200]
    return ""


def received_header(live: Live, message: Message) -> bytes:
    protocol = "ESMTPS" if message.tls.active else "ESMTP"
    tls = f" ({message.tls})" if message.tls.active else ""
    helo = "".join(ch for ch in message.helo if 32 < ord(ch) < 127)[:100] or "unknown"
    line = (
        f"Received: from {helo} ([{message.peer_ip}])\r\n\tby {live.config.system.fqdn} (sealrelay) with {protocol}{tls};\r\n"
        f"\t{formatdate(message.received_at or time.time())}\r\n"
    )
    return line.encode("ascii", "replace")


def _meta(live: Live, message: Message, decision: Decision) -> dict:
    return {
        "config_version": live.version,
        "decision": decision.to_record(),
        "listener": message.listener,
        "peer": message.peer_ip,
        "tls_in": str(message.tls),
        "received_at": message.received_at,
        **requiretls.receipt_meta(message.mail_params, message.content),  # survives restarts
    }
