"""The policy decision for one received message: direction, DLP, action, method.

Called once per message at intake, under the config the session started with; the
`Decision` (engine.relay.decision) travels with the message in the queue. DLP acts on outbound mail only; on
inbound and internal mail it records what it would have done (the log says `would`).
Mail from the encryption gateway is already encrypted and is never encrypted again.
Content DLP could not fully read is judged by `dlp.unscannable` (policy.py), so it too is
acted on for outbound mail only.

The scan never runs on the event loop: parsing and matching one message costs
milliseconds to seconds of CPU (a 50 MB archive budget, a large HTML body), and every
other session on the loop would wait for it. It runs in `SCANNERS`, a small pool of its
own, so a burst of scans cannot hold up the other work sent to threads (the queue's
digests, quarantine writes). Python threads share the GIL, so the pool bounds memory and
concurrency, not CPU; the loop still gets the GIL every switch interval (5 ms).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from engine.policy.groups import domain_of
from engine.relay.decision import Decision
from engine.relay.dlp import mimetree
from engine.relay.dlp.extract import extract
from engine.relay.dlp.policy import Facts
from engine.relay.methods.smime import already_encrypted
from engine.relay.methods.third_party import gateway_result
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message

SCANNERS = ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1), thread_name_prefix="dlp-scan")


def direction_of(live: Live, sender: str, recipients, peer_ip: str | None) -> str:
    """outbound: a trusted peer sends to an external domain; internal: internal to internal
    from a trusted peer; inbound: everything else. With `peer_ip=None` (simulation), an
    internal sender stands for a trusted peer."""
    trusted = live.may_relay(peer_ip) if peer_ip is not None else live.is_internal(domain_of(sender))
    if any(not live.is_internal(domain_of(r)) for r in recipients):
        return "outbound" if trusted else "inbound"
    if trusted and live.is_internal(domain_of(sender)):
        return "internal"
    return "inbound"


async def decide(live: Live, message: Message) -> Decision:
    """Classify and apply policy; the scan runs in a worker thread, never on the event loop."""
    direction = portal_direction(live, message.recipients) if message.origin == "portal" else None
    if (
        direction is None
        and live.policies.empty
        and not (
            live.gateway.contains(message.peer_ip) and gateway_result(live, message.content) in ("failure", "none")
        )
    ):
        return Decision(
            direction_of(live, message.sender, message.recipients, message.peer_ip),
            already_encrypted=live.gateway.contains(message.peer_ip),
        )
    call = functools.partial(
        judge, live, message.content, message.sender, message.recipients, message.peer_ip, direction=direction
    )
    context = contextvars.copy_context()  # as asyncio.to_thread does
    decision = await asyncio.get_running_loop().run_in_executor(SCANNERS, context.run, call)
    if message.origin == "portal" and decision.direction == "outbound" and decision.action == "permit":
        # written in the secure portal to someone outside: it leaves as it came, protected
        decision = replace(decision, action="encrypt", method=live.config.encryption.method)
    return decision


def portal_direction(live: Live, recipients) -> str:
    """Mail written in the secure portal: to anyone outside it is outbound (DLP acts, and it
    is protected); to internal addresses only it arrives like any mail from outside."""
    return "outbound" if any(not live.is_internal(domain_of(r)) for r in recipients) else "inbound"


def judge(
    live: Live, content: bytes, sender: str, recipients, peer_ip: str | None, *, direction: str | None = None
) -> Decision:
    """The whole decision for given content and envelope (shared by the relay and `simulate`);
    `direction` when the origin decides it (the secure portal), else from the envelope."""
    direction = direction or direction_of(live, sender, recipients, peer_ip)
    gateway = peer_ip is not None and live.gateway.contains(peer_ip)
    facts = Facts(sender, tuple(recipients), peer_ip or "", direction)
    limits = live.policies.limits
    try:  # one parse for DLP and the encryption check
        tree = mimetree.parse(content, limits.max_mime_depth)
    except Exception:  # extract reads it as text and says so; the check answers "not encrypted"
        tree = None
    extracted = extract(content, limits, tree)
    verdict = live.policies.evaluate(extracted, facts)
    action = verdict.action if direction == "outbound" else "permit"
    encrypted = tree is not None and _already_encrypted(content, tree)
    if encrypted and action == "encrypt" and not gateway:
        # The backstop: a message whose body DLP could read is not encrypted, whatever its
        # structure says. Only when the same verdict follows from the parts that stay
        # readable in encrypted mail anyway (subject, headers) is it left as it is; else it
        # is recorded as not encrypted, so delivery still sends it through the method chain.
        readable = replace(
            extracted, texts=tuple(t for t in extracted.texts if t.origin == "subject"), attachments=(), unscanned=()
        )
        encrypted = live.policies.evaluate(readable, facts).would == verdict.would
    if action == "encrypt" and (gateway or encrypted):
        action = "permit"  # already encrypted (by the gateway, S/MIME or PGP): never twice
    if gateway and gateway_result(live, content) in ("failure", "none"):
        action = "quarantine"  # the gateway did not say it encrypted it: it must not go out in clear
    method = live.config.encryption.method if action == "encrypt" else "none"
    return Decision(
        direction,
        action,
        method,
        verdict.policies,
        gateway or encrypted,
        verdict,
        verdict.would,
        verdict.problems,
        verdict.unscanned,
        _delivery(verdict.hits) if action == "encrypt" else "",
    )


def _delivery(hits) -> str:
    """The advanced delivery the matched encrypt plans ask for: revocable over offline."""
    asked = {h.advanced_delivery for h in hits if h.action == "encrypt" and h.advanced_delivery}
    return "revocable" if "revocable" in asked else "offline" if asked else ""


def _already_encrypted(content: bytes, tree: mimetree.Part | None = None) -> bool:
    """`already_encrypted` (methods/smime.py: a linear parse, no recursion); any failure
    answers "not encrypted", the safe answer (DLP still acts)."""
    try:
        return bool(already_encrypted(content, tree))
    except Exception:
        return False
