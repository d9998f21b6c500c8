"""The rest of a config without its bad parts, so later stages can still check what is left.

`validate` reports every stage's findings in one run (load.py): a schema error in one
section must not hide a dangling reference in another. The later stages need data the
schema accepts, so the values the schema (or an earlier stage) refused are cut out — the
key, the list entry, and, when that leaves its parent invalid, the parent — and the models
and the semantic checks run on what remains. What they find is reported only when it cannot
be an echo of a cut: not at or around a removed path, and not naming anything (a key, a
value) that was removed (a reference to an IP group whose definition was cut is no finding).

Paths of what the later stages report are in the pruned data's terms (a list shorter by
the entries cut out); `original` maps them back to the file's, so they are located right.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from engine.config.diagnostics import Diagnostic, Path

_QUOTED = re.compile(r"`([^`]+)`|'([^']+)'|\"([^\"]+)\"")


@dataclass
class Pruned:
    """`data` without the cut paths; `removed` in the original's terms."""

    data: Any
    removed: list[Path] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # every key and string value cut out
    _cuts: list[tuple[Path, int]] = field(default_factory=list)  # list entries, in order of cutting

    def cut(self, paths: Iterable[Path]) -> bool:
        """Remove each path (in this data's current terms); False if one is the root."""
        chosen = _outermost({tuple(p) for p in paths})
        if () in chosen:
            return False
        for path in sorted(chosen, key=_removal_order):
            parent = _get(self.data, path[:-1])
            last = path[-1]
            if isinstance(parent, dict) and last in parent:
                value = parent.pop(last)
            elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                value = parent.pop(last)
            else:
                continue  # a missing key (reported at its parent): nothing here to cut
            self.removed.append(self.original(path))
            self.names.update(_words(last, value))
            if isinstance(last, int):
                self._cuts.append((path[:-1], last))
        return True

    def original(self, path: Path) -> Path:
        """`path` in the pruned data, in the original data's terms."""
        out = list(path)
        for prefix, index in reversed(self._cuts):
            n = len(prefix)
            if tuple(out[:n]) == prefix and len(out) > n and isinstance(out[n], int) and out[n] >= index:
                out[n] += 1
        return tuple(out)

    def restore(self, diag: Diagnostic) -> Diagnostic:
        return replace(diag, path=self.original(diag.path), see=tuple(self.original(p) for p in diag.see))

    def echoes(self, diag: Diagnostic) -> bool:
        """Could `diag` (already in the original's terms) be caused by a cut?"""
        for path in (diag.path, *diag.see):
            for gone in self.removed:
                n = min(len(path), len(gone))
                if path[:n] == gone[:n]:
                    return True
        quoted = {next(g for g in m.groups() if g) for m in _QUOTED.finditer(diag.message)}
        return bool(quoted & self.names)


def start(data: Any) -> Pruned:
    return Pruned(copy.deepcopy(data))


def _outermost(paths: set[Path]) -> set[Path]:
    """The paths that have no ancestor in the set (cutting the ancestor cuts them too)."""
    return {p for p in paths if not any(p[:i] in paths for i in range(len(p)))}


def _removal_order(path: Path) -> tuple:
    """Later list entries first, so an index still means the same entry when its turn comes."""
    return tuple((1, -part) if isinstance(part, int) else (0, part) for part in path)


def _get(data: Any, path: Path) -> Any:
    node = data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _words(key: Any, value: Any) -> set[str]:
    """The names a cut takes with it: its key and every key and string inside it."""
    out = {key} if isinstance(key, str) else set()
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.update(k for k in node if isinstance(k, str))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            out.add(node)
    return out
