"""Semantic checks: what the schema cannot say (references, exclusions, cross-field rules).

Each check is a function `(ctx) -> Iterable[Diagnostic]` registered with `@check`; checks
know only paths, never files or lines (`locate` attaches those). They run on a config that
already passed the schema and the models, and they collect every finding.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path as FsPath

from engine.config.diagnostics import Diagnostic
from engine.config.model import RelayConfig


@dataclass(frozen=True)
class Context:
    config: RelayConfig
    base_dir: FsPath
    check_files: bool

    def file(self, relative: str) -> FsPath:
        path = FsPath(relative)
        return path if path.is_absolute() else self.base_dir / path


Check = Callable[[Context], Iterable[Diagnostic]]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    CHECKS.append(fn)
    return fn


def run_checks(config: RelayConfig, *, base_dir: FsPath, check_files: bool = True) -> list[Diagnostic]:
    from engine.config.semantic import (  # noqa: F401
        certificate,
        dlp,
        encryption,
        limits,
        names,
        system,
        transport,
        usage,
    )

    ctx = Context(config, base_dir, check_files)
    return [diag for fn in CHECKS for diag in fn(ctx)]
