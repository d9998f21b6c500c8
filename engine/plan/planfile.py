"""Saved plans (`sealrelay plan --out plan.json`): tamper-evident, bound to their base.

A plan file holds the Plan (base version, base config hash, the changes as judged), the
desired config's canonical JSON (what `apply` will send), the git commit that config came
from, and a SHA-256 over all of it. `load` refuses a file whose hash does not match (it
was edited), an unknown format version, or a desired config that does not match the
plan's own hash; `check_base` refuses a plan whose base moved (a stale plan). The hash
makes edits evident, not impossible: whoever can rewrite the file can recompute it; the
relay's base-version check and review of the plan are what stop a forged one.

The desired config in the file carries its secret *references* (`{env: NAME}`), as the
YAML in git does; secret values are never in a config, so never in a plan file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config.model import RelayConfig
from engine.fsutil import write_atomic
from engine.plan.change import Plan
from engine.plan.diff import canonical, config_hash
from engine.plan.inputs import git

FORMAT = "sealrelay-plan"
FORMAT_VERSION = 1


class PlanFileError(Exception):
    """A plan file that cannot be used; the message says why and what to do."""


class StalePlanError(PlanFileError):
    """The plan was made against a config that is no longer the relay's."""


@dataclass(frozen=True)
class SavedPlan:
    plan: Plan
    desired: dict[str, Any]  # canonical JSON of the desired config


def git_commit(config_path: str | Path) -> tuple[str | None, str | None]:
    """(HEAD's commit, None) when the config is in a git work tree and its files are
    committed; else (None, a warning saying why no commit is recorded)."""
    path = Path(config_path).resolve()
    where = path if path.is_dir() else path.parent
    if not where.is_dir() or git(where, "rev-parse", "--is-inside-work-tree").returncode != 0:
        return None, f"{config_path} is not in a git work tree: the plan records no commit"
    head = git(where, "rev-parse", "--verify", "--quiet", "HEAD")
    if head.returncode != 0:
        return None, f"{config_path}: the git repository has no commit yet: the plan records no commit"
    status = git(where, "status", "--porcelain", "--untracked-files=all", "--", *_paths(path))
    if status.returncode != 0 or status.stdout.strip():
        return None, f"{config_path} has uncommitted changes: the plan records no commit (commit them first)"
    return head.stdout.decode().strip(), None


def git_provenance(config_path: str | Path) -> tuple[str | None, bool]:
    """(HEAD's commit or None when not in git, whether the config's files have uncommitted
    changes). Unlike `git_commit`, a dirty tree still names the commit it is based on, and
    says it is dirty: what the relay records for a start or a file reload."""
    path = Path(config_path).resolve()
    where = path if path.is_dir() else path.parent
    if not where.is_dir() or git(where, "rev-parse", "--is-inside-work-tree").returncode != 0:
        return None, False
    head = git(where, "rev-parse", "--verify", "--quiet", "HEAD")
    status = git(where, "status", "--porcelain", "--untracked-files=all", "--", *_paths(path))
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return (head.stdout.decode().strip() if head.returncode == 0 else None), dirty


def _paths(path: Path) -> list[str]:
    """The config's paths for `git status`: a node file's shared base is part of it."""
    from engine.config.overlay import extends_of

    base = extends_of(path) if path.is_file() else None
    return [str(path)] + ([str((path.parent / base).resolve())] if base else [])


def _digest(content: dict[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def dumps(plan: Plan, desired: RelayConfig | dict) -> str:
    """The plan file's text. Raises ValueError if `desired` is not the plan's config."""
    config = canonical(desired)
    if config_hash(config) != plan.desired_hash:
        raise ValueError("the desired config is not the one this plan was made for")
    content = {"format": FORMAT, "format_version": FORMAT_VERSION, "plan": plan.to_dict(), "desired": config}
    return json.dumps({**content, "sha256": _digest(content)}, indent=2, ensure_ascii=False) + "\n"


def save(path: str | Path, plan: Plan, desired: RelayConfig | dict) -> Path:
    """Write the plan file atomically (a reader never sees half of it)."""
    return write_atomic(path, dumps(plan, desired).encode("utf-8"), 0o644)


def load(path: str | Path) -> SavedPlan:
    """Read a plan file, refusing one that was edited or that this sealrelay cannot read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlanFileError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PlanFileError(f"{path}: not a plan file (not UTF-8 text)") from None
    return loads(text, str(path))


def loads(text: str, name: str = "plan file") -> SavedPlan:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PlanFileError(f"{name}: not a plan file (invalid JSON at line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PlanFileError(f"{name}: not a sealrelay plan file (no `format: {FORMAT}`)")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise PlanFileError(
            f"{name}: plan file format version {version!r} is unknown: this sealrelay reads version "
            f"{FORMAT_VERSION}; make the plan again with this sealrelay"
        )
    content = {k: v for k, v in doc.items() if k != "sha256"}
    if doc.get("sha256") != _digest(content):
        raise PlanFileError(
            f"{name} was changed after it was saved (its content hash does not match): "
            "make a new plan with `sealrelay plan --out`"
        )
    try:
        plan = Plan.from_dict(doc["plan"])
        desired = canonical(doc["desired"])
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanFileError(f"{name}: the plan inside is malformed: {exc}") from None
    if config_hash(desired) != plan.desired_hash:
        raise PlanFileError(f"{name}: the desired config does not match the plan's hash of it")
    return SavedPlan(plan, desired)


def check_base(saved: SavedPlan, *, version: int | None, config: RelayConfig | dict | None) -> None:
    """Refuse (StalePlanError) a plan whose base is not `version`/`config` any more."""
    plan = saved.plan
    if plan.base_version is not None and version != plan.base_version:
        raise StalePlanError(
            f"stale plan: it was made against config version {plan.base_version}, the relay now runs "
            f"version {version}: make a new plan"
        )
    current = config_hash(config) if config is not None else None
    if plan.base_hash is not None and current != plan.base_hash:
        raise StalePlanError("stale plan: the config it was made against is not the one running: make a new plan")
