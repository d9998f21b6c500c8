"""`make_plan`: diff the desired config against the current one, judge it, wrap it as a Plan.

Pure: no files, no clock unless `created_at` is left out. With `last_applied` (what the
last apply set, as the relay remembers it) the plan also carries the drift: the changes
between that and what is running, judged by the same guard (a hand edit on the relay
that lowered a TLS level shows as a loosening drift).
"""

from __future__ import annotations

from datetime import UTC, datetime

from engine.config.model import RelayConfig
from engine.plan.change import Plan
from engine.plan.diff import canonical, diff_canonical, document, hash_canonical
from engine.plan.guard import classify


def now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def make_plan(
    desired: RelayConfig | dict,
    current: RelayConfig | dict | None,
    *,
    base_version: int | None = None,
    last_applied: RelayConfig | dict | None = None,
    commit: str | None = None,
    created_at: str | None = None,
    desired_label: str = "",
    base_label: str = "",
) -> Plan:
    """The plan from `current` (None: nothing yet) to `desired`."""
    want, want_hash = _document(desired)
    have, have_hash = _document(current) if current is not None else (None, None)
    changes = classify(diff_canonical(want, have), want, have)
    drift = ()
    if last_applied is not None and have is not None:
        applied, _ = _document(last_applied)
        drift = tuple(classify(diff_canonical(have, applied), have, applied))
    return Plan(
        base_version=base_version,
        base_hash=have_hash,
        desired_hash=want_hash,
        changes=tuple(changes),
        drift=drift,
        commit=commit,
        created_at=created_at or now(),
        desired_label=desired_label,
        base_label=base_label,
    )


def _document(config: RelayConfig | dict) -> tuple[dict, str]:
    """Canonical JSON and its hash; a model's are computed once (`document`), and only read here."""
    if isinstance(config, RelayConfig):
        found = document(config)
        return found.data, found.hash
    data = canonical(config)
    return data, hash_canonical(data)
