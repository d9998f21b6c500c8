"""The policy decision for one received message: direction, DLP, action, method.

Called once per message at intake, under the config the session started with; the
`Decision` (engine.relay.decision) travels with the message in the queue. DLP acts on outbound mail only; on
inbound and internal mail it records what it would have done (the log says `would`).
Mail from the encryption gateway is already encrypted and is never encrypted again.
Content DLP could not fully read is judged by `dlp.unscannable` (policy.py), so it too is
acted on for outbound mail only.

Where a message is judged. Scanning may cost milliseconds to seconds of CPU (a 50 MB
archive budget, a large HTML body, a text full of candidates for the classifiers' Python),
and every other session on the loop would wait for it: such work runs in `SCANNERS`, a
small pool of its own threads (scanpool.py), so a burst of scans cannot hold up the other
work sent to threads (the queue's digests, quarantine writes). Python threads share the
interpreter lock, so the pool bounds memory and concurrency, not CPU: while a worker
scans, the loop runs only when the worker lets the lock go, at the latest after the switch
interval (5 ms). A scan shorter than that holds the loop off in a worker as long as it
would on the loop, and the hand-off to a worker and back cost more of the lock than the
whole of a quiet message's judgement (docs/benchmarks.md). So the usual message is judged
where it arrives, by a path whose time is bounded by construction (`quick`): at most
`QUICK_BYTES` and `QUICK_LINES`, plain text parts only, decided by one pass of the pattern engine that stops
at its first candidate. Everything else, and every message that pass finds a candidate in,
goes to the pool, which takes over what was read.
"""

from __future__ import annotations

import functools
import os
from dataclasses import replace

from engine.policy.groups import domain_of
from engine.relay.decision import Decision
from engine.relay.dlp import mimetree
from engine.relay.dlp.extract import Extracted, extract, plain_ascii
from engine.relay.dlp.policy import Facts
from engine.relay.dlp.scanpool import ScanPool
from engine.relay.methods.smime import already_encrypted
from engine.relay.methods.third_party import gateway_result
from engine.relay.runtime import metrics
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message

SCANNERS = ScanPool(min(4, (os.cpu_count() or 1) + 1), "dlp-scan")
# The most a message judged on the loop may hold (`judge`'s quick path): what parsing costs
# follows the header fields and parts, so lines are bounded as well as bytes. The costliest
# shapes within both (1,000 header fields, 250 parts, a folded Subject of encoded words) take
# 1-3 ms here, under the interpreter's 5 ms switch interval (docs/dlp-scanning.md).
QUICK_BYTES = 32 * 1024
QUICK_LINES = 1000
QUICK_PARTS = 16  # plain-text parts: each is decoded and walked on its own


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


async def decide(live: Live, message: Message, lines: int | None = None) -> Decision:
    """Classify and apply policy: the usual message on the loop (`judge`'s `quick`), anything
    whose judgement its size does not bound in a worker (`SCANNERS`). `lines`: the content's
    line count, when intake has counted it."""
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
    envelope = (live, message.content, message.sender, message.recipients, message.peer_ip)
    decision = judge(*envelope, direction=direction, quick=True, lines=lines)
    if isinstance(decision, Decision):
        metrics.child(metrics.DLP_JUDGED, "loop").inc()
    else:  # not decided quickly: in a worker, from what was read
        metrics.child(metrics.DLP_JUDGED, "pool").inc()
        decision = await SCANNERS.run(functools.partial(judge, *envelope, direction=direction, read=decision))
    if message.origin == "portal" and decision.direction == "outbound" and decision.action == "permit":
        # written in the secure portal to someone outside: it leaves as it came, protected
        decision = replace(decision, action="encrypt", method=live.config.encryption.method)
    return decision


def portal_direction(live: Live, recipients) -> str:
    """Mail written in the secure portal: to anyone outside it is outbound (DLP acts, and it
    is protected); to internal addresses only it arrives like any mail from outside."""
    return "outbound" if any(not live.is_internal(domain_of(r)) for r in recipients) else "inbound"


Read = tuple[mimetree.Part | None, Extracted | None]  # a message's tree, and its content if extracted


def judge(
    live: Live,
    content: bytes,
    sender: str,
    recipients,
    peer_ip: str | None,
    *,
    direction: str | None = None,
    quick: bool = False,
    read: Read | None = None,
    lines: int | None = None,
) -> Decision | Read | None:
    """The whole decision for given content and envelope (shared by the relay and `simulate`);
    `direction` when the origin decides it (the secure portal), else from the envelope.

    `quick`: only what is decided in time bounded by the message's size (the module's
    docstring): a Decision, else what was read so far (`read`, for the full judgement to
    go on from) or None when nothing was. `lines`: the content's line count, when the
    caller has counted it already (intake, checking its line breaks)."""
    facts, gateway = _envelope(live, sender, tuple(recipients), peer_ip, direction)
    direction = facts.direction
    limits = live.policies.limits
    if quick and (len(content) > QUICK_BYTES or (content.count(b"\n") if lines is None else lines) > QUICK_LINES):
        return None
    plain = extracted = None
    if read is not None:
        tree, extracted = read
    else:
        try:  # one parse for DLP and the encryption check
            tree = mimetree.parse(content, limits.max_mime_depth)
        except Exception:  # extract reads it as text and says so; the check answers "not encrypted"
            tree = None
        # the usual plain ASCII message is scanned as it was sent (a plain one, by `_plain`)
        plain = plain_ascii(tree, limits) if quick and tree is not None else None
        if quick and plain is None and (tree is None or not _plain(tree)):
            return None
    if quick:
        if plain is None:
            extracted = extract(content, limits, tree)
        verdict = live.policies.quick(plain or extracted, facts)
        if verdict is None:
            return tree, extracted
    else:
        extracted = extracted or extract(content, limits, tree)
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


def _envelope(
    live: Live, sender: str, recipients: tuple[str, ...], peer_ip: str | None, direction: str | None
) -> tuple[Facts, bool]:
    """What DLP's rules are asked about an envelope (its `Facts`, direction included) and
    whether it came from the encryption gateway; kept per envelope by the config version
    (`Live.envelopes`): a relay sees the same senders, recipients and peers all day."""
    key = (sender, recipients, peer_ip, direction)
    known = live.envelopes.get(key)
    if known is None:
        direction = direction or direction_of(live, sender, recipients, peer_ip)
        gateway = peer_ip is not None and live.gateway.contains(peer_ip)
        known = live.envelopes.keep(key, (Facts(sender, recipients, peer_ip or "", direction), gateway))
    return known


def _plain(tree: mimetree.Part) -> bool:
    """Whether every leaf is a plain-text body (multiparts of them, no attachment, no other
    type, no nested message), `QUICK_PARTS` at most: what the quick path reads in time its
    size bounds (HTML's conversion to text and every file type are left to the pool)."""
    parts, leaves = [tree], 0
    while parts:
        part = parts.pop()
        if part.too_deep:
            return False
        if part.is_multipart():
            if part.get_content_maintype() != "multipart":
                return False
            parts.extend(part.get_payload())
            continue
        leaves += 1
        if leaves > QUICK_PARTS or part.get_content_type() != "text/plain":
            return False
        if part.get_filename() or part.is_attachment():
            return False
    return True


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
