"""Diagnostics are values: checks report a path, one place attaches the file and line.

Modelled on Terraform's tfdiags: a validator knows only the attribute path
(`encryption.third_party.servers[0].host`); `locate` turns every path into
`file:line:col` through the source map, and `render_text` prints them the same way for
every command. Nothing here raises: errors are collected, all of them, then reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.config.source import Mark, SourceMap

Path = tuple[str | int, ...]


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about the config. `at_key` points at the key rather than its value."""

    severity: Severity
    path: Path
    message: str
    hint: str | None = None
    at_key: bool = False
    mark: Mark | None = None
    related: tuple[Mark, ...] = field(default=())
    see: tuple[Path, ...] = field(default=())

    @property
    def dotted(self) -> str:
        return dotted(self.path)


def error(
    path: Path,
    message: str,
    hint: str | None = None,
    *,
    at_key: bool = False,
    see: tuple[Path, ...] = (),
) -> Diagnostic:
    """An error at `path`; `see` names other paths involved (shown as related places)."""
    return Diagnostic(Severity.ERROR, tuple(path), message, hint, at_key, see=see)


def warning(
    path: Path,
    message: str,
    hint: str | None = None,
    *,
    at_key: bool = False,
    see: tuple[Path, ...] = (),
) -> Diagnostic:
    return Diagnostic(Severity.WARNING, tuple(path), message, hint, at_key, see=see)


def dotted(path: Sequence[str | int]) -> str:
    """`("routes", 0, "next_hop")` -> `routes[0].next_hop`; the empty path is `(root)`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(root)"


def locate(diags: Iterable[Diagnostic], source: SourceMap | None) -> list[Diagnostic]:
    """Attach a source mark to each diagnostic that has none, then sort by position."""
    located = []
    for diag in diags:
        if diag.mark is None and source is not None:
            diag = replace(diag, mark=source.find(diag.path, key=diag.at_key))
        if diag.see and source is not None:
            marks = tuple(m for p in diag.see if (m := source.find(p)) is not None)
            diag = replace(diag, related=diag.related + marks, see=())
        located.append(diag)
    return sorted(located, key=_order)


def _order(diag: Diagnostic) -> tuple:
    mark = diag.mark
    if mark is None:
        return ("", 0, 0, diag.dotted)
    return (mark.file, mark.line, mark.column, diag.dotted)


def has_errors(diags: Iterable[Diagnostic]) -> bool:
    return any(d.severity is Severity.ERROR for d in diags)


def render_line(diag: Diagnostic) -> str:
    """`file:line:col: dotted.path: message`, warnings say so after the path."""
    where = str(diag.mark) if diag.mark else "<config>"
    prefix = "warning: " if diag.severity is Severity.WARNING else ""
    path = f"{diag.dotted}: " if diag.path else ""
    return f"{where}: {path}{prefix}{diag.message}"


def render_text(diags: Sequence[Diagnostic]) -> str:
    lines = []
    for diag in diags:
        lines.append(render_line(diag))
        for mark in diag.related:
            lines.append(f"    {mark}: (other place)")
        if diag.hint:
            lines.append(f"    hint: {diag.hint}")
    return "\n".join(lines)


class LocatedError(Exception):
    """A failure explained by diagnostics located at file:line:col (`render` shows them,
    then the message)."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or []

    def render(self) -> str:
        details = render_text(self.diagnostics)
        return f"{details}\n{self}" if details else str(self)


def render_one_line(diags: Sequence[Diagnostic]) -> str:
    """Every diagnostic on one line (`; ` between them, hints in parentheses): for a log."""
    return "; ".join(render_line(d) + (f" (hint: {d.hint})" if d.hint else "") for d in diags)


def to_json(diag: Diagnostic) -> dict:
    mark = diag.mark
    return {
        "severity": diag.severity.value,
        "path": diag.dotted,
        "message": diag.message,
        "hint": diag.hint,
        "file": mark.file if mark else None,
        "line": mark.line if mark else None,
        "column": mark.column if mark else None,
        "related": [{"file": m.file, "line": m.line, "column": m.column} for m in diag.related],
    }
