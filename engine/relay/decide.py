"""The policy decision for one received message: direction, DLP, action, method.

This is the seam where the DLP engine plugs in: `decide` is called once per message at
intake, under the config the session started with, and its `Decision` travels with the
message in the queue. Until DLP lands, no policy matches and every message is permitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.relay.groups import domain_of
from engine.relay.live import Live
from engine.relay.message import Message


@dataclass(frozen=True)
class Decision:
    direction: str  # inbound | outbound | internal
    action: str = "permit"  # permit | encrypt | block | quarantine
    method: str = "none"  # the encryption method when action is encrypt
    policies: tuple[str, ...] = field(default=())
    already_encrypted: bool = False

    @property
    def encrypt(self) -> bool:
        return self.action == "encrypt"


def direction(live: Live, message: Message) -> str:
    """outbound: a trusted peer sends to an external domain; internal: internal to internal;
    inbound: everything else (an outside peer, or an outside sender, to our domains)."""
    external = [r for r in message.recipients if not live.is_internal(domain_of(r))]
    if external:
        return "outbound"  # the edge only accepted them from a peer that may relay
    if live.may_relay(message.peer_ip) and live.is_internal(domain_of(message.sender)):
        return "internal"
    return "inbound"


def decide(live: Live, message: Message) -> Decision:
    """Classify and apply policy. Mail from the encryption gateway is already encrypted."""
    return Decision(
        direction=direction(live, message),
        already_encrypted=live.gateway.contains(message.peer_ip),
    )
