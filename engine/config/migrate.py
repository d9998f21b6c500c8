"""`sealrelay migrate`: rewrite config files to the newest format version, in place.

Migrations are functions registered per source version (`MIGRATIONS[1]` turns a version-1
document into version 2, and so on); they edit ruamel's round-trip tree, so the admin's
comments, key order and quoting survive. Version 1 is the newest format today, so the
registry is empty and `migrate` only confirms that; the machinery is here so that the
first format change comes with its migration instead of a breaking release.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

from ruamel.yaml import YAML

from engine.config.compose import compose_file
from engine.config.model import LATEST_VERSION
from engine.config.source import config_files
from engine.fsutil import write_atomic

Migration = Callable[[dict], None]
MIGRATIONS: dict[int, Migration] = {}


@dataclass
class MigrateReport:
    lines: list[str] = field(default_factory=list)
    changed: bool = False
    failed: bool = False


def migrate_text(text: str) -> tuple[str, int, int]:
    """Migrate one YAML document; returns (new text, from version, to version)."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    doc = yaml.load(text)
    start = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(start, int) or isinstance(start, bool):
        raise ValueError("no `version` key: cannot tell which migrations apply")
    if start > LATEST_VERSION:
        raise ValueError(f"version {start} is newer than this sealrelay ({LATEST_VERSION})")
    version = start
    while version < LATEST_VERSION:
        MIGRATIONS[version](doc)
        version += 1
        doc["version"] = version
    if version == start:
        return text, start, version
    out = StringIO()
    yaml.dump(doc, out)
    return out.getvalue(), start, version


def migrate_path(path: Path, *, write: bool) -> MigrateReport:
    report = MigrateReport()
    for file in config_files(Path(path)):
        _, problem = compose_file(file)  # the loader's budgets first: ruamel's round trip has none
        if problem is not None:
            where = f"{problem.mark.line}:{problem.mark.column}: " if problem.mark else ""
            report.lines.append(f"{file}:{where}{problem.message}")
            report.failed = True
            continue
        try:
            text = file.read_text(encoding="utf-8")
            if "version" not in text:
                report.lines.append(f"{file}: no `version` key (part of a directory config): left alone")
                continue
            new, start, end = migrate_text(text)
        except (OSError, ValueError) as exc:
            report.lines.append(f"{file}: {exc}")
            report.failed = True
            continue
        if start == end:
            report.lines.append(f"{file}: already at version {end}")
            continue
        report.changed = True
        if write:
            write_atomic(file, new.encode("utf-8"), stat.S_IMODE(file.stat().st_mode))
        report.lines.append(f"{file}: version {start} -> {end}" + ("" if write else " (not written: --check)"))
    return report
