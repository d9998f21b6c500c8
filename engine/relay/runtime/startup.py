"""Which config `serve` starts with: the last one it ran, or the files, guarded like an apply.

Caddy's `--resume`: the relay keeps the config it runs in `<data_dir>/running.json`. At
start, config files that differ from it are a change like any other: planned against the
config that ran, judged by the downgrade guard, and audited. A change that loosens
protection is refused (the relay resumes the config that ran, and says why in the log and
`/v1/status`) unless `serve --allow-downgrade --reason "…"`. Without remembered state (a
first start, a new data directory) the files are used as they are and become the baseline.
A restart can therefore never serve, unseen, a config that an apply would have refused.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from engine.admin.contract import ChangeCounts
from engine.config.diagnostics import has_errors, render_text
from engine.config.load import load_config, validate_data
from engine.fsutil import private_dir
from engine.plan.build import make_plan
from engine.plan.diff import config_hash
from engine.relay.runtime import state as relay_state
from engine.relay.runtime.live import Live, provision
from engine.relay.runtime.relay import ConfigError, StartupError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """The config to start with, and what to record about the start."""

    live: Live
    result: str  # applied (the files, a change or a first start), unchanged, refused (resumed)
    from_version: int
    commit: str | None = None
    dirty: bool = False
    summary: ChangeCounts = ChangeCounts()
    allow_downgrade: bool = False
    reason: str | None = None
    held: dict | None = None  # the refused change, for /v1/status


def choose(
    path: Path,
    base_dir: Path | None = None,
    *,
    allow_downgrade: bool = False,
    reason: str | None = None,
    provenance=None,
) -> Start:
    """Validate the files at `path` and decide what to serve. Raises ConfigError when the
    files are invalid (nothing starts) or the config to resume can no longer be read."""
    result = load_config(path)
    if not result.ok:
        raise ConfigError(render_text(result.diagnostics))
    base = (base_dir or result.base_dir).resolve()
    data_dir = usable_data_dir((base / result.config.system.data_dir).resolve())
    known = relay_state.load(data_dir)
    version = known.version + 1
    commit, dirty = provenance(path) if provenance else (None, False)
    resumed = relay_state.load_running(data_dir) if known.running is not None else None
    if resumed is None or known.running.hash == config_hash(result.config):
        live = provision(result.config, base_dir=base, version=version)
        first = resumed is None
        return Start(live, "applied" if first else "unchanged", known.version, commit, dirty, reason=reason)
    plan = make_plan(result.config, resumed, base_version=known.version, desired_label=str(path))
    summary = ChangeCounts(plan.summary.add, plan.summary.change, plan.summary.destroy, plan.summary.loosening)
    if plan.loosenings and not allow_downgrade:
        why = "; ".join(f"{c.address}: {c.reason}" for c in plan.loosenings[:5])
        held = {
            "source": "start",
            "reason": f"{path} loosens protection against the config that ran last (version {known.version}): {why}",
            "hint": 'review the change with `sealrelay plan`, then apply it, or restart with --allow-downgrade --reason "…"',
        }
        log.error("config files not applied at start, the last applied config serves: %s", held["reason"])
        live = _resume(resumed, known, base, version)
        return Start(live, "refused", known.version, commit, dirty, summary, reason=reason, held=held)
    live = provision(result.config, base_dir=base, version=version)
    if plan.loosenings:
        log.warning("config files loosen protection, started with --allow-downgrade: %s", reason)
    return Start(live, "applied", known.version, commit, dirty, summary, bool(plan.loosenings), reason)


def usable_data_dir(data_dir: Path) -> Path:
    """`data_dir`, made (owner-only) when missing; StartupError when it cannot serve as one."""
    if data_dir.exists() and not data_dir.is_dir():
        raise StartupError(f"data_dir {data_dir} exists and is not a directory (system.data_dir): move it away")
    try:
        private_dir(data_dir)
    except OSError as exc:
        raise StartupError(f"data_dir {data_dir} cannot be created: {exc.strerror} (system.data_dir)") from None
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"data_dir {data_dir} is not writable by this user (uid {os.getuid()}): run as its owner")
    return data_dir


def _resume(config: dict, known: relay_state.State, base: Path, version: int) -> Live:
    resumed, diagnostics = validate_data(config)
    if resumed is None or has_errors(diagnostics):
        raise ConfigError(
            "the config that ran last (data_dir/running.json) can no longer be read, and the files loosen "
            'protection: start with --allow-downgrade --reason "…" to serve the files'
        )
    return provision(resumed, base_dir=Path(known.base_dir) if known.base_dir else base, version=version)
