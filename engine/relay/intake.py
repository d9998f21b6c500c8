"""Intake: from a received message to a durable queue entry, and the verdict for the client.

The order is the pipeline's: checks on the content → decision (direction, DLP, action) →
a Received header → the durable queue (250 only after the commit is on disk) → one
structured log line → a nudge to the delivery workers.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate

from engine.relay.decide import Decision, decide
from engine.relay.decisionlog import log_decision
from engine.relay.live import Live
from engine.relay.message import Message, Verdict
from engine.relay.queue import Queue, QueueWriteError

log = logging.getLogger(__name__)

MAX_RECEIVED_HEADERS = 50  # more hops than this is a mail loop (RFC 5321 §6.3)


class Intake:
    """Accepts messages into the queue; `on_queued` is called with each new queue id."""

    def __init__(self, queue: Queue, on_queued=None) -> None:
        self.queue = queue
        self.on_queued = on_queued

    async def receive(self, live: Live, message: Message) -> Verdict:
        problem = content_problem(message.content)
        if problem:
            return problem
        decision = decide(live, message)
        content = received_header(live, message) + message.content
        meta = _meta(live, message, decision)
        try:
            queue_id = await self.queue.enqueue(message.sender, list(message.recipients), content, meta=meta)
        except QueueWriteError as exc:
            log.error("queue write failed: %s", exc.reason)
            if not exc.transient:
                return Verdict.reject("message could not be stored", "5.3.4", code=552)
            if exc.no_space:
                return Verdict.tempfail("insufficient system storage, try again later", "4.3.1", code=452)
            return Verdict.tempfail("local error in processing, try again later", "4.3.0", code=451)
        log_decision("received", queue_id, live.version, message, decision)
        if self.on_queued:
            self.on_queued(queue_id)
        return Verdict.accept(f"queued as {queue_id}")


def content_problem(content: bytes) -> Verdict | None:
    """Refuse what a careful MTA refuses: bare CR or LF (SMTP smuggling), mail loops."""
    crlf = content.count(b"\r\n")
    if content.count(b"\n") != crlf or content.count(b"\r") != crlf:
        return Verdict.reject("message contains a bare CR or LF: only CRLF line endings are allowed", "5.5.2")
    head = content.split(b"\r\n\r\n", 1)[0].lower()
    hops = head.count(b"\r\nreceived:") + head.startswith(b"received:")
    if hops > MAX_RECEIVED_HEADERS:
        return Verdict.reject(f"mail loop: {hops} Received headers", "5.4.6", code=554)
    return None


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
        "direction": decision.direction,
        "action": decision.action,
        "method": decision.method,
        "encrypt": decision.encrypt,
        "already_encrypted": decision.already_encrypted,
        "policies": list(decision.policies),
        "listener": message.listener,
        "peer": message.peer_ip,
        "tls_in": str(message.tls),
        "received_at": message.received_at,
    }
