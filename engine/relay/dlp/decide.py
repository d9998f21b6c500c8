"""The policy decision for one received message: direction, DLP, action, method.

Called once per message at intake, under the config the session started with; the
`Decision` (engine.relay.decision) travels with the message in the queue. DLP acts on outbound mail only; on
inbound and internal mail it records what it would have done (the log says `would`).
Mail from the encryption gateway is already encrypted and is never encrypted again.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from engine.policy.groups import domain_of
from engine.relay.decision import Decision
from engine.relay.dlp.extract import extract
from engine.relay.dlp.policy import Facts
from engine.relay.methods.smime import already_encrypted
from engine.relay.methods.third_party import gateway_result
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message

OFF_LOOP_BYTES = 256 * 1024  # larger messages are scanned in a worker thread


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
    """Classify and apply policy (the DLP scan runs off the event loop for big messages)."""
    if live.policies.empty and not (
        live.gateway.contains(message.peer_ip) and gateway_result(live, message.content) in ("failure", "none")
    ):
        return Decision(
            direction_of(live, message.sender, message.recipients, message.peer_ip),
            already_encrypted=live.gateway.contains(message.peer_ip),
        )
    if len(message.content) > OFF_LOOP_BYTES:
        return await asyncio.to_thread(
            judge, live, message.content, message.sender, message.recipients, message.peer_ip
        )
    return judge(live, message.content, message.sender, message.recipients, message.peer_ip)


def judge(live: Live, content: bytes, sender: str, recipients, peer_ip: str | None) -> Decision:
    """The whole decision for given content and envelope (shared by the relay and `simulate`)."""
    direction = direction_of(live, sender, recipients, peer_ip)
    gateway = peer_ip is not None and live.gateway.contains(peer_ip)
    facts = Facts(sender, tuple(recipients), peer_ip or "", direction)
    extracted = extract(content)
    verdict = live.policies.evaluate(extracted, facts)
    action = verdict.action if direction == "outbound" else "permit"
    encrypted = bool(already_encrypted(content)) if action == "encrypt" and not gateway else False
    if encrypted:
        # The backstop: a message whose body DLP could read is not encrypted, whatever its
        # structure says. Only when the same verdict follows from the parts that stay
        # readable in encrypted mail anyway (subject, headers) is it left as it is.
        readable = replace(extracted, texts=tuple(t for t in extracted.texts if t.origin == "subject"), attachments=())
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
        gateway or bool(already_encrypted(content)),
        verdict,
        verdict.would,
        verdict.problems,
    )
