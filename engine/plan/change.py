"""The plan's values: `Action`, `Change` and `Plan` (Terraform's plans.Plan, for a relay).

A `Plan` is what `sealrelay plan` computes and what `apply` carries out: the changes that
turn the current config into the desired one, each with its action (`+ ~ -`), its path,
the values before and after, and the downgrade guard's verdict (`effect` and `reason`).
It also records what it was computed against (base version and base config hash), so a
saved plan can be refused once the relay has moved on, and the drift between the running
config and what the last apply set. Plans are frozen values: renderers (`render.py`) and
the plan file (`planfile.py`) read them, nothing mutates them.

Paths are tuples of dict keys (str), list positions (int) and list-item identities
(`Key`): `("dlp", "policies", Key("payment-cards"), "rules", Key("cards"), "enabled")`
is written `dlp.policies["payment-cards"].rules["cards"].enabled`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Literal

Effect = Literal["tightening", "neutral", "loosening"]
TIGHTENING: Effect = "tightening"
NEUTRAL: Effect = "neutral"
LOOSENING: Effect = "loosening"
EFFECTS: tuple[Effect, ...] = (TIGHTENING, NEUTRAL, LOOSENING)

Kind = Literal["value", "member", "order"]
"""`value`: the value at `path` is created, updated or deleted. `member`: one member of the
set at `path` is added (`after`) or removed (`before`). `order`: the order of the list at
`path` changed where order matters (`before`/`after` are the item keys in order)."""


class Action(str, Enum):
    """What a change does, with Terraform's markers."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    NOOP = "no-op"

    @property
    def marker(self) -> str:
        return _MARKERS[self]


_MARKERS = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-", Action.NOOP: " "}


@dataclass(frozen=True, order=True)
class Key:
    """The identity of an item in a list: a named item's `name`, else a derived key."""

    value: str

    def __str__(self) -> str:
        return self.value


PathPart = str | int | Key
Path = tuple[PathPart, ...]


def address(path: Sequence[PathPart]) -> str:
    """`("routes", Key("partners"), "tls")` -> `routes["partners"].tls`; `()` -> `(root)`."""
    out = ""
    for part in path:
        if isinstance(part, Key):
            out += f"[{json.dumps(part.value, ensure_ascii=False)}]"
        elif isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "(root)"


def shape(path: Sequence[PathPart]) -> str:
    """The path with item identities and positions as `#`: what guard rules match on."""
    return ".".join("#" if isinstance(p, Key | int) else p for p in path)


def path_to_json(path: Sequence[PathPart]) -> list:
    return [{"key": p.value} if isinstance(p, Key) else p for p in path]


def path_from_json(items: Iterable[Any]) -> Path:
    return tuple(Key(p["key"]) if isinstance(p, dict) else p for p in items)


@dataclass(frozen=True)
class Change:
    """One difference between the current and the desired config, with the guard's verdict.

    `before`/`after` are canonical JSON values (None where absent), with every secret
    already replaced by `(sensitive value)`. Treat them as read-only.
    """

    action: Action
    path: Path
    before: Any = None
    after: Any = None
    effect: Effect = NEUTRAL
    reason: str = ""
    kind: Kind = "value"
    at: str | None = None  # file:line:col in the desired config (locate.py), when known

    @property
    def address(self) -> str:
        return address(self.path)

    @property
    def section(self) -> str:
        return str(self.path[0]) if self.path else "(root)"

    def judged(self, effect: Effect, reason: str) -> Change:
        return replace(self, effect=effect, reason=reason)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "marker": self.action.marker,
            "address": self.address,
            "path": path_to_json(self.path),
            "kind": self.kind,
            "before": self.before,
            "after": self.after,
            "effect": self.effect,
            "reason": self.reason,
            **({"at": self.at} if self.at else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        effect = data.get("effect", NEUTRAL)
        kind = data.get("kind", "value")
        if effect not in EFFECTS or kind not in ("value", "member", "order"):
            raise ValueError(f"unknown effect {effect!r} or kind {kind!r}")
        return cls(
            action=Action(data["action"]),
            path=path_from_json(data["path"]),
            before=data.get("before"),
            after=data.get("after"),
            effect=effect,
            reason=data.get("reason", ""),
            kind=kind,
            at=data.get("at") if isinstance(data.get("at"), str) else None,
        )


@dataclass(frozen=True)
class Summary:
    add: int
    change: int
    destroy: int
    loosening: int
    tightening: int

    def line(self) -> str:
        return f"{self.add} to add, {self.change} to change, {self.destroy} to destroy; {self.loosening} loosening"


def summarize(changes: Iterable[Change]) -> Summary:
    """The counts of the summary line, as the plan shows the changes: members added to or
    removed from a list that stays (`~ ip_groups.banks` with `+ 192.0.2.128/25` under it)
    change that list, once however many members move; they are not things added."""
    changes = list(changes)
    values = [c for c in changes if c.kind != "member"]
    count = {a: sum(c.action is a for c in values) for a in Action}
    lists = {c.path for c in changes if c.kind == "member"}
    return Summary(
        add=count[Action.CREATE],
        change=count[Action.UPDATE] + len(lists),
        destroy=count[Action.DELETE],
        loosening=sum(c.effect == LOOSENING for c in changes),
        tightening=sum(c.effect == TIGHTENING for c in changes),
    )


@dataclass(frozen=True)
class Plan:
    """The changes from a base config to a desired one, and what they were computed against.

    `base_version` is the relay's config version (None without a relay), `base_hash` the
    `config_hash` of the base (None when there was none), `desired_hash` that of the desired
    config, `commit` the git commit the desired config came from (None when unknown),
    `drift` the changes between what the last apply set and what is running, `warnings`
    what the relay says about the change beyond the config (queued mail it would send to a
    dead destination); they inform, they never refuse.
    """

    base_version: int | None
    base_hash: str | None
    desired_hash: str
    changes: tuple[Change, ...]
    drift: tuple[Change, ...] = ()
    commit: str | None = None
    created_at: str = ""
    desired_label: str = ""
    base_label: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def has_changes(self) -> bool:
        return bool(self.changes)

    @property
    def loosenings(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.effect == LOOSENING)

    @property
    def tightenings(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.effect == TIGHTENING)

    @property
    def summary(self) -> Summary:
        return summarize(self.changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_version": self.base_version,
            "base_hash": self.base_hash,
            "desired_hash": self.desired_hash,
            "commit": self.commit,
            "created_at": self.created_at,
            "desired_label": self.desired_label,
            "base_label": self.base_label,
            "changes": [c.to_dict() for c in self.changes],
            "drift": [c.to_dict() for c in self.drift],
            **({"warnings": list(self.warnings)} if self.warnings else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(
            base_version=data.get("base_version"),
            base_hash=data.get("base_hash"),
            desired_hash=data["desired_hash"],
            changes=tuple(Change.from_dict(c) for c in data.get("changes", [])),
            drift=tuple(Change.from_dict(c) for c in data.get("drift", [])),
            commit=data.get("commit"),
            created_at=data.get("created_at", ""),
            desired_label=data.get("desired_label", ""),
            base_label=data.get("base_label", ""),
            warnings=tuple(data.get("warnings", ())),
        )
