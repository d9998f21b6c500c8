"""What the relay remembers about its config across restarts: `<data_dir>/state.json`.

The version counter only ever grows (a plan made before a restart must be stale after it),
and the last apply's hash and commit let `plan` report drift: the running config is not
what the last apply set (a file edited by hand, a certificate command, a restart on other
files). Written atomically (temporary file, fsync, rename).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.fsutil import write_atomic


@dataclass(frozen=True)
class State:
    version: int = 0
    applied_hash: str | None = None  # the config the last apply (or start) set
    applied_commit: str | None = None
    applied_at: float = 0.0
    applied_source: str = ""


def load(data_dir: Path) -> State:
    try:
        data = json.loads((data_dir / "state.json").read_text(encoding="utf-8"))
        return State(**{k: data[k] for k in State.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError):
        return State()


def save(data_dir: Path, state: State) -> None:
    write_atomic(data_dir / "state.json", json.dumps(asdict(state)).encode())


def save_applied(data_dir: Path, config: dict) -> None:
    """The canonical config the last apply set (what drift is measured against)."""
    write_atomic(data_dir / "applied.json", json.dumps(config, sort_keys=True).encode())


def load_applied(data_dir: Path) -> dict | None:
    try:
        return json.loads((data_dir / "applied.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
