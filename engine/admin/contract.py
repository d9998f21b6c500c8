"""The contract between the admin API and the relay: one small Protocol and the values it exchanges.

The admin API (`engine.admin.api`) knows nothing of the relay's internals; it talks to a
`Control`, which the relay implements (and tests replace by an in-memory double). Every
value here is a frozen dataclass that travels as JSON: `to_json()` gives plain data,
`from_json()` reads it back and raises `WireError` (a `ValueError`) on a malformed document.

Who decides what:

- the **relay** (the `Control`) validates a desired config, computes the plan against its
  running config, classifies loosenings, builds and swaps; it reports every refusal as a
  value (`ApplyResult.ok=False`, `error` = one of `ErrorCode`, `detail` for people);
- the **API** authenticates, serialises applies, checks the base version against
  `running().version` before calling `apply`, writes the audit log and turns each
  `ErrorCode` into an HTTP status (see `HTTP_STATUS`).

The relay must still refuse a stale `base_version` itself (the API's check is a fast path,
the relay's is the one that holds at the moment of the swap).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "ApplyRequest",
    "ApplyResult",
    "Control",
    "ErrorCode",
    "HTTP_STATUS",
    "PlanResult",
    "Reload",
    "RunningConfig",
    "Status",
    "ChangeCounts",
    "WireError",
]


class WireError(ValueError):
    """A JSON document does not have the shape of the value it should carry."""


class ErrorCode(StrEnum):
    """Why a plan or an apply was refused: the `error` field of `PlanResult` and `ApplyResult`."""

    STALE_BASE = "stale_base"  # base_version is not the running version: re-plan
    PLAN_MISMATCH = "plan_mismatch"  # plan_hash does not match the plan the relay computes now
    INVALID = "invalid"  # the desired config has errors (see diagnostics)
    DOWNGRADE_REFUSED = "downgrade_refused"  # a loosening without allow_downgrade (and a reason)
    APPLY_FAILED = "apply_failed"  # the new config could not be built or started; the old one still serves


# One place turns a refusal into an HTTP status (the API uses it; the client reads it back).
HTTP_STATUS: dict[str, int] = {
    ErrorCode.STALE_BASE: 409,
    ErrorCode.PLAN_MISMATCH: 409,
    ErrorCode.INVALID: 422,
    ErrorCode.DOWNGRADE_REFUSED: 403,
    ErrorCode.APPLY_FAILED: 500,
}


# --- reading JSON strictly -------------------------------------------------------------------

_MISSING: Any = object()


def _get(data: Any, key: str, kind: type | tuple[type, ...], default: Any = _MISSING, *, where: str) -> Any:
    """`data[key]` checked against `kind` (bool is never an int; None only if it is in `kind`)."""
    if not isinstance(data, dict):
        raise WireError(f"{where}: expected an object")
    if key not in data:
        if default is _MISSING:
            raise WireError(f"{where}: missing `{key}`")
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        raise WireError(f"{where}.{key}: expected {_names(kinds)}, got a boolean")
    if value is None and type(None) in kinds:
        return None
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds):
        raise WireError(f"{where}.{key}: expected {_names(kinds)}, got {type(value).__name__}")
    return value


def _names(kinds: tuple[type, ...]) -> str:
    names = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number"}
    return " or ".join(names.get(k, "null") for k in kinds)


def _only(data: dict, allowed: set[str], where: str) -> None:
    extra = sorted(set(data) - allowed)
    if extra:
        raise WireError(f"{where}: unknown field(s) {', '.join(extra)}")


def _dicts(value: list, where: str) -> tuple[dict, ...]:
    if not all(isinstance(item, dict) for item in value):
        raise WireError(f"{where}: expected an array of objects")
    return tuple(value)


# --- the values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChangeCounts:
    """Counts of a plan's changes: `+` add, `~` change, `-` remove, and how many are loosenings."""

    add: int = 0
    change: int = 0
    remove: int = 0
    loosening: int = 0

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.remove)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ChangeCounts:
        w = "summary"
        return cls(*(_get(data, k, int, 0, where=w) for k in ("add", "change", "remove", "loosening")))


@dataclass(frozen=True)
class RunningConfig:
    """The config the relay serves now. `config` is canonical JSON (read-only by convention)."""

    version: int  # increases by one on every successful swap, from 1 at start
    config: dict
    hash: str  # engine.plan.diff.config_hash(config): the API's ETag and the audit log's `hash`
    commit: str | None  # the git commit it came from, when known
    applied_at: float  # Unix time of the swap
    source: str  # "api", "file-watch" (a reload of the watched files) or "start"
    last_applied: dict | None = None  # the config the last reviewed change set, when it is not what runs (drift)
    dirty: bool = False  # the config's files had uncommitted changes (`commit` is the HEAD they are based on)
    who: str = ""  # a token id (api), or what made the change (file-watch, start)
    applied: dict | None = None  # the record of the last reviewed change (version, hash, commit, who, at)

    def to_json(self) -> dict:
        """The fields as they are: the config dicts are shared, not deep-copied as `asdict`
        would (38 ms for a 250 KB config on every GET /v1/config); callers serialise them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Any) -> RunningConfig:
        w = "running"
        return cls(
            version=_get(data, "version", int, where=w),
            config=_get(data, "config", dict, where=w),
            hash=_get(data, "hash", str, where=w),
            commit=_get(data, "commit", (str, type(None)), None, where=w),
            applied_at=_get(data, "applied_at", float, where=w),
            source=_get(data, "source", str, where=w),
            last_applied=_get(data, "last_applied", (dict, type(None)), None, where=w),
            dirty=_get(data, "dirty", bool, False, where=w),
            who=_get(data, "who", str, "", where=w),
            applied=_get(data, "applied", (dict, type(None)), None, where=w),
        )

    @property
    def drift(self) -> bool:
        return self.last_applied is not None


@dataclass(frozen=True)
class Reload:
    """The outcome of the last attempt to change the running config (file reload or apply)."""

    at: float  # Unix time
    ok: bool
    source: str  # as RunningConfig.source
    error: str | None = None  # why it failed; the old config still serves

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Reload:
        w = "last_reload"
        return cls(
            at=_get(data, "at", float, where=w),
            ok=_get(data, "ok", bool, where=w),
            source=_get(data, "source", str, where=w),
            error=_get(data, "error", (str, type(None)), None, where=w),
        )


@dataclass(frozen=True)
class Status:
    """What `GET /v1/status` shows. `queue` and `listeners` are the relay's own plain data."""

    version: int
    last_reload: Reload | None
    uptime_s: float
    queue: dict = field(default_factory=dict)  # e.g. {"active": 3, "deferred": 1}
    listeners: tuple[dict, ...] = ()  # e.g. [{"name": "mx", "address": "127.0.0.1", "port": 2525}]
    held: dict | None = None  # a config change refused at start: {"source", "reason", "hint"}
    overrides: dict = field(default_factory=dict)  # `serve --listen`: {"smtp": "127.0.0.1:2625", "admin": ":18025"}
    destinations: tuple[dict, ...] = ()  # the delivery scheduler's destinations (engine.relay.delivery.destinations)

    def __post_init__(self) -> None:
        object.__setattr__(self, "listeners", tuple(self.listeners))
        object.__setattr__(self, "destinations", tuple(self.destinations))

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "last_reload": self.last_reload.to_json() if self.last_reload else None,
            "uptime_s": self.uptime_s,
            "queue": dict(self.queue),
            "listeners": [dict(item) for item in self.listeners],
            "held": self.held,
            "overrides": dict(self.overrides),
            "destinations": [dict(item) for item in self.destinations],
        }

    @classmethod
    def from_json(cls, data: Any) -> Status:
        w = "status"
        last = _get(data, "last_reload", (dict, type(None)), None, where=w)
        return cls(
            version=_get(data, "version", int, where=w),
            last_reload=Reload.from_json(last) if last is not None else None,
            uptime_s=_get(data, "uptime_s", float, where=w),
            queue=_get(data, "queue", dict, {}, where=w),
            listeners=_dicts(_get(data, "listeners", list, [], where=w), f"{w}.listeners"),
            held=_get(data, "held", (dict, type(None)), None, where=w),
            overrides=_get(data, "overrides", dict, {}, where=w),
            destinations=_dicts(_get(data, "destinations", list, [], where=w), f"{w}.destinations"),
        )


@dataclass(frozen=True)
class PlanResult:
    """What `Control.plan` returns: the relay's plan of `desired` against its running config.

    `plan` is the plan engine's JSON (changes with action, path, before, after, loosening);
    the admin layer passes it through untouched. On refusal `ok` is False, `plan` is None.
    """

    ok: bool
    base_version: int  # the running version the plan was computed against
    plan: dict | None = None
    summary: ChangeCounts = field(default_factory=ChangeCounts)
    error: str | None = None  # an ErrorCode value when not ok
    detail: str | None = None
    diagnostics: tuple[dict, ...] = ()  # engine.config.diagnostics.to_json(...) of each finding

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnostics", tuple(self.diagnostics))

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "base_version": self.base_version,
            "plan": self.plan,
            "summary": self.summary.to_json(),
            "error": self.error,
            "detail": self.detail,
            "diagnostics": list(self.diagnostics),
        }

    @classmethod
    def from_json(cls, data: Any) -> PlanResult:
        w = "plan_result"
        return cls(
            ok=_get(data, "ok", bool, where=w),
            base_version=_get(data, "base_version", int, where=w),
            plan=_get(data, "plan", (dict, type(None)), None, where=w),
            summary=ChangeCounts.from_json(_get(data, "summary", dict, {}, where=w)),
            error=_get(data, "error", (str, type(None)), None, where=w),
            detail=_get(data, "detail", (str, type(None)), None, where=w),
            diagnostics=_dicts(_get(data, "diagnostics", list, [], where=w), f"{w}.diagnostics"),
        )


@dataclass(frozen=True)
class ApplyRequest:
    """The body of `POST /v1/apply`: a desired config and the version it was planned against.

    `reason` is required with `allow_downgrade` (it goes into the audit log); `plan_hash`,
    when given, binds the apply to a saved plan: the relay refuses with `plan_mismatch` if
    the plan it computes now has another hash.
    """

    config: dict
    base_version: int
    commit: str | None = None
    reason: str | None = None
    allow_downgrade: bool = False
    plan_hash: str | None = None
    dirty: bool = False  # the config's files had uncommitted changes when it was sent

    def __post_init__(self) -> None:
        if self.allow_downgrade and not (self.reason and self.reason.strip()):
            raise WireError("allow_downgrade needs a reason (it goes into the audit log)")
        if self.base_version < 0:
            raise WireError("base_version must be >= 0")

    def to_json(self) -> dict:
        """The fields as they are, the config shared (as `RunningConfig.to_json`): `asdict`
        deep-copied it before it was serialised, 24 ms of every apply of a 250 KB config."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Any) -> ApplyRequest:
        """Strict: the body of a request from the network; unknown fields are refused."""
        w = "apply"
        if isinstance(data, dict):
            _only(data, {"config", "base_version", "commit", "reason", "allow_downgrade", "plan_hash", "dirty"}, w)
        return cls(
            config=_get(data, "config", dict, where=w),
            base_version=_get(data, "base_version", int, where=w),
            commit=_get(data, "commit", (str, type(None)), None, where=w),
            reason=_get(data, "reason", (str, type(None)), None, where=w),
            allow_downgrade=_get(data, "allow_downgrade", bool, False, where=w),
            plan_hash=_get(data, "plan_hash", (str, type(None)), None, where=w),
            dirty=_get(data, "dirty", bool, False, where=w),
        )


@dataclass(frozen=True)
class ApplyResult:
    """What `Control.apply` returns. `changed=False` with `ok=True` is the idempotent no-op.

    On success `version` is the running version after the apply (== `previous_version` when
    nothing changed). On refusal `ok` is False, `error` is an `ErrorCode` value, `version`
    is the running version (unchanged) and `detail` says why in words.
    """

    ok: bool
    version: int
    previous_version: int
    changed: bool = False
    error: str | None = None
    detail: str | None = None
    diagnostics: tuple[dict, ...] = ()
    summary: ChangeCounts = field(default_factory=ChangeCounts)

    def __post_init__(self) -> None:
        object.__setattr__(self, "diagnostics", tuple(self.diagnostics))

    @classmethod
    def refused(
        cls,
        code: ErrorCode | str,
        detail: str,
        *,
        version: int,
        diagnostics: tuple[dict, ...] | list[dict] = (),
        summary: ChangeCounts | None = None,
    ) -> ApplyResult:
        """A refusal: nothing changed, `version` is still running."""
        return cls(
            ok=False,
            version=version,
            previous_version=version,
            changed=False,
            error=str(code),
            detail=detail,
            diagnostics=tuple(diagnostics),
            summary=summary or ChangeCounts(),
        )

    def to_json(self) -> dict:
        return {
            "ok": self.ok,
            "version": self.version,
            "previous_version": self.previous_version,
            "changed": self.changed,
            "error": self.error,
            "detail": self.detail,
            "diagnostics": list(self.diagnostics),
            "summary": self.summary.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ApplyResult:
        w = "apply_result"
        return cls(
            ok=_get(data, "ok", bool, where=w),
            version=_get(data, "version", int, where=w),
            previous_version=_get(data, "previous_version", int, where=w),
            changed=_get(data, "changed", bool, False, where=w),
            error=_get(data, "error", (str, type(None)), None, where=w),
            detail=_get(data, "detail", (str, type(None)), None, where=w),
            diagnostics=_dicts(_get(data, "diagnostics", list, [], where=w), f"{w}.diagnostics"),
            summary=ChangeCounts.from_json(_get(data, "summary", dict, {}, where=w)),
        )


@runtime_checkable
class Control(Protocol):
    """What the admin API needs from the relay. Implemented by the relay's runtime.

    `running` and `status` are cheap, synchronous snapshots. `plan` and `apply` may take
    time (validation, building TLS contexts and DLP patterns) and must not block the loop.
    The API calls `apply` one at a time; `who` is the caller's token id (`token:ab12cd34`),
    for the relay's own log.
    """

    def running(self) -> RunningConfig: ...

    def status(self) -> Status: ...

    async def plan(self, desired: dict) -> PlanResult: ...

    async def apply(self, request: ApplyRequest, who: str) -> ApplyResult: ...

    def portal_events(self, since: float, address: str | None, event: str | None, limit: int) -> list[dict] | None:
        """The secure portal's audit events (None: no portal runs in this relay). Blocking."""
        ...
