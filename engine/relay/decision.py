"""The intake decision: a typed, versioned record that travels with the message in the queue.

`decide` (engine.relay.dlp.decide) makes it once, at intake, under the config the session
started with: direction, action, method, the policies that matched, whether the message is
already encrypted, what enforcement would have done (monitor mode), and the problems met
while scanning (`problems`; those that left content unread, an archive too deep or a part
that could not be decoded, also in `unscanned`: `dlp.unscannable` acted on them, and the
matched rules then include `dlp/unscannable`). The queue keeps it
as `meta["decision"]` (`to_record`); delivery reads it back with `of_meta`, which also reads
the flat keys of entries queued before the record had a format.

What delivery takes from the record and what it re-evaluates, and why:

- **kept from intake**: the action and whether to encrypt. DLP judged the content once; the
  decision must not change under a message because a policy was edited while it waited
  (a loosened policy must not release mail that was flagged; a tightened one is for new mail).
- **re-evaluated at delivery**: the method chain, the routes and every TLS level (the config
  current at delivery time). Those are about getting the mail out safely now: a route moved
  or a TLS level raised applies to mail already queued, as an MTA's reload means too, and a
  method changed after intake delivers through the method that exists now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.relay.dlp.policy import Findings

FORMAT = 1
ACTIONS = ("permit", "encrypt", "block", "quarantine")
DIRECTIONS = ("inbound", "outbound", "internal")


class DecisionError(ValueError):
    """A stored decision that cannot be read (a newer format, a damaged entry)."""


@dataclass(frozen=True)
class Decision:
    direction: str  # inbound | outbound | internal
    action: str = "permit"  # permit | encrypt | block | quarantine
    method: str = "none"  # the encryption method named at intake when action is encrypt
    policies: tuple[str, ...] = field(default=())
    already_encrypted: bool = False
    verdict: Findings | None = None  # the DLP findings, in memory only (not stored)
    would: str = "permit"  # what enforcement would have done (monitor mode, inbound mail)
    problems: tuple[str, ...] = ()  # what the scan met: notes, and what it could not read
    unscanned: tuple[str, ...] = ()  # the problems that left content unread (dlp.unscannable)
    delivery: str = ""  # the matched plans' advanced delivery (offline | revocable); "": the config's

    @property
    def encrypt(self) -> bool:
        return self.action == "encrypt"

    @property
    def needs_protection(self) -> bool:
        """Delivery must send it through the method chain (flagged, not encrypted already)."""
        return self.encrypt and not self.already_encrypted

    def to_record(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "direction": self.direction,
            "action": self.action,
            "method": self.method,
            "policies": list(self.policies),
            "already_encrypted": self.already_encrypted,
            "would": self.would,
            "problems": list(self.problems),
            "unscanned": list(self.unscanned),
            **({"delivery": self.delivery} if self.delivery else {}),
        }

    @classmethod
    def from_record(cls, data: Any) -> Decision:
        if not isinstance(data, dict):
            raise DecisionError("the stored decision is not an object")
        if data.get("format") != FORMAT:
            raise DecisionError(f"stored decision format {data.get('format')!r}, this relay reads {FORMAT}")
        action = data.get("action")
        direction = data.get("direction")
        if action not in ACTIONS or direction not in DIRECTIONS:
            raise DecisionError(f"stored decision has action {action!r}, direction {direction!r}")
        return cls(
            direction,
            action,
            str(data.get("method", "none")),
            tuple(str(p) for p in data.get("policies", ())),
            bool(data.get("already_encrypted", False)),
            None,
            str(data.get("would", action)),
            tuple(str(p) for p in data.get("problems", ())),
            tuple(str(p) for p in data.get("unscanned", ())),
            str(data.get("delivery", "")) if data.get("delivery") in ("offline", "revocable") else "",
        )


def of_meta(meta: dict[str, Any]) -> Decision:
    """The decision stored with a queue entry. Entries without one (DSNs, reports, entries
    queued before the record had a format) are read from their flat keys: `encrypt`, when
    set, still means encrypt, so no flagged mail ever loses its flag."""
    if "decision" in meta:
        return Decision.from_record(meta["decision"])
    encrypt = bool(meta.get("encrypt"))
    direction = meta.get("direction") if meta.get("direction") in DIRECTIONS else "inbound"
    return Decision(
        direction,
        "encrypt" if encrypt else str(meta.get("action", "permit")),
        str(meta.get("method", "none")),
        tuple(meta.get("policies", ())),
        bool(meta.get("already_encrypted", False)),
    )
