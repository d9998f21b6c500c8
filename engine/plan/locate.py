"""Where the desired config writes each change of a plan: `file:line:col` for the reviewer.

A plan compares canonical JSON, where a named list item is addressed by its name
(`routes["vendors"].tls`); the config's source map knows the data as it was read, by list
index. A change's path is followed through the data as read (a name to the index of the
item with that name, a set member to the index of the equal item) and the deepest point
written down is the change's place: a default that is not written points at the section
that holds it; a removed item at the list it left. Changes the desired files do not hold
(a plan against a relay's running config: the base side) keep no place.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from engine.config.source import SourceMap
from engine.plan.change import Change, Key, Plan
from engine.plan.diff import _keys, _named


def locate(plan: Plan, data: dict, source: SourceMap) -> Plan:
    """`plan` with each change's `at` set from the desired config's `data` and `source`."""
    return replace(plan, changes=tuple(replace(c, at=where(c, data, source)) for c in plan.changes))


def where(change: Change, data: dict, source: SourceMap) -> str | None:
    path = _data_path(data, change.path)
    if change.kind == "member" and change.after is not None and len(path) == len(change.path):
        items = _at(data, path)
        if isinstance(items, list) and change.after in items:
            path = (*path, items.index(change.after))
    mark = source.find(path, key=True) if path else None
    return str(mark) if mark is not None else None


def _data_path(data: Any, path: tuple) -> tuple:
    """As much of `path` as the data as read holds, with names turned into list indexes."""
    node, out = data, []
    for part in path:
        if isinstance(part, Key):
            if not isinstance(node, list):
                break
            keys = _keys(node, _named(node))
            if part.value not in keys:
                break
            index = keys.index(part.value)
            node, out = node[index], [*out, index]
        elif isinstance(part, int):
            if not (isinstance(node, list) and 0 <= part < len(node)):
                break
            node, out = node[part], [*out, part]
        else:
            if not (isinstance(node, dict) and part in node):
                break
            node, out = node[part], [*out, part]
    return tuple(out)


def _at(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data
