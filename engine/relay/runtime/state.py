"""What the relay remembers about its config across restarts, in `<data_dir>`:

- `state.json`: the version counter (it only ever grows: a plan made before a restart must be
  stale after it), the record of the change that made the running config (`running`) and of
  the last change that went through review (`applied`: an apply through the admin API, or
  the very first start), and the directory relative paths of the running config resolve from;
- `running.json`: the canonical config that runs (or ran last): what `serve` resumes;
- `applied.json`: the canonical config of `applied`: what drift is measured against.

Every change of the running config, whatever its source, is a `Change`: the version it made,
the config's hash, its source (`api`, `file-watch`, `start`), the git commit its files were
at and whether the work tree was dirty, who made it (a token id) and when. Drift is the
running config differing from the last reviewed one: a file reload, or a start on other files.

Each file is written atomically (temporary file, fsync, rename); state.json last, so a crash
between the writes leaves a state that names a config no newer than the files hold. The
configs are written as `engine.plan.diff.Document` holds them (the bytes the hash is taken
of), not serialised again; applied.json, when an apply makes it running.json's twin, is a
hard link to that file (a later running.json replaces its own name, not the link).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from engine.fsutil import write_atomic

STATE_FILE = "state.json"
RUNNING_FILE = "running.json"
APPLIED_FILE = "applied.json"
SOURCES = ("api", "file-watch", "start")


@dataclass(frozen=True)
class Change:
    """One change of the running config (or the start that set it)."""

    version: int
    hash: str
    source: str  # one of SOURCES
    commit: str | None = None  # the git commit the config's files were at (HEAD), when in git
    dirty: bool = False  # the work tree had uncommitted changes to the config's files
    who: str = ""  # a token id for `api`; `file-watch` or `start` otherwise
    at: float = 0.0
    reason: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Change | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        except TypeError:
            return None


@dataclass(frozen=True)
class State:
    version: int = 0
    running: Change | None = None
    applied: Change | None = None
    base_dir: str | None = None  # where the running config's relative paths resolve from

    @property
    def drift(self) -> bool:
        """The running config is not the last one applied through review."""
        return self.running is not None and self.applied is not None and self.running.hash != self.applied.hash

    def to_json(self) -> dict:
        return {
            "version": self.version,
            "running": asdict(self.running) if self.running else None,
            "applied": asdict(self.applied) if self.applied else None,
            "base_dir": self.base_dir,
        }


def load(data_dir: Path) -> State:
    """The remembered state; an empty one when there is none or it cannot be read."""
    try:
        data = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return State()
    if not isinstance(data, dict):
        return State()
    version = data.get("version")
    base_dir = data.get("base_dir")
    return State(
        version=version if isinstance(version, int) and not isinstance(version, bool) else 0,
        running=Change.from_json(data.get("running")),
        applied=Change.from_json(data.get("applied")),
        base_dir=base_dir if isinstance(base_dir, str) else None,
    )


def save(data_dir: Path, state: State) -> None:
    write_atomic(data_dir / STATE_FILE, json.dumps(state.to_json(), sort_keys=True).encode())


def record(
    data_dir: Path,
    state: State,
    change: Change,
    config: dict | bytes,
    *,
    reviewed: bool,
    base_dir: Path | None = None,
) -> State:
    """Remember that `config` (canonical JSON, or its bytes as `engine.plan.diff.Document`
    holds them: then it is written as it is, not serialised again) now runs because of
    `change` (and, when `reviewed`, that it is the new drift base); returns the new state,
    already on disk."""
    text = config if isinstance(config, bytes) else json.dumps(config, sort_keys=True).encode()
    write_atomic(data_dir / RUNNING_FILE, text)
    new = replace(state, version=max(state.version, change.version), running=change)
    if base_dir is not None:
        new = replace(new, base_dir=str(base_dir))
    if reviewed:
        _same_file(data_dir / RUNNING_FILE, data_dir / APPLIED_FILE, text)
        new = replace(new, applied=change)
    save(data_dir, new)
    return new


def _same_file(source: Path, target: Path, text: bytes) -> None:
    """`target` with the content of `source`, just written and synced: a hard link renamed
    over it, so the bytes are neither written nor synced twice. The rename is made durable
    by the directory sync of state.json's write, which comes next, in the same directory."""
    link = target.with_name(f".{target.name}.{os.getpid()}.link")
    try:
        link.unlink(missing_ok=True)
        os.link(source, link)
        os.replace(link, target)
    except OSError:  # no hard links here: write it
        link.unlink(missing_ok=True)
        write_atomic(target, text)


def load_running(data_dir: Path) -> dict | None:
    """The canonical config that ran last (what a restart resumes), or None."""
    return _load_config(data_dir / RUNNING_FILE)


def load_applied(data_dir: Path) -> dict | None:
    """The canonical config the last reviewed change set (what drift is measured against)."""
    return _load_config(data_dir / APPLIED_FILE)


def _load_config(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
