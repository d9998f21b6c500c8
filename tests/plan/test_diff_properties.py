"""Properties of the plan diff, on configs made from the examples and the golden plans by edits.

- `diff(a, a)` is empty: a config is no change against itself.
- Replaying the changes of `diff(b, a)` (what turns `a` into `b`) on `a` gives `b`. Nothing
  in the engine applies a `Change` (an apply swaps whole configs), so `replay` below does it
  on canonical JSON from each change's path, action, kind and before/after values, by the
  rules diff.py documents. The result equals `b` up to what the diff leaves out on purpose:
  the order of named items (except routes), plain lists compared as sets, and secrets,
  which both sides show as `(sensitive value)`.
- Routes are first-match, so a change in their relative order is exactly one `order`
  change that lists both orders.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.config.diagnostics import has_errors
from engine.config.load import load_config, validate_data
from engine.config.semantic import run_checks
from engine.plan.change import Action, Change, Key
from engine.plan.diff import canonical, diff, item_key, node_at, redact
from tests.conftest import GOLDEN

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sources() -> list[dict]:
    paths = [*sorted((ROOT / "examples").glob("*.yaml")), ROOT / "examples" / "split"]
    paths += sorted((GOLDEN / "plan").glob("*/*.yaml"))
    configs = []
    for path in paths:
        result = load_config(path, check_files=False)
        if result.ok:
            configs.append(canonical(result.config))
    return configs


SOURCES = _sources()


def _shape(path: tuple) -> tuple:
    return tuple("#" if isinstance(p, int) else p for p in path)


def _leaves(value: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, value) in canonical JSON, containers included."""
    out = [(path, value)]
    if isinstance(value, dict):
        for key, child in value.items():
            out += _leaves(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            out += _leaves(child, (*path, i))
    return out


POOL: dict[tuple, list] = {}  # values seen at each shape of path, for edits that stay valid
for _config in SOURCES:
    for _path, _value in _leaves(_config):
        if _path:
            POOL.setdefault(_shape(_path), []).append(_value)


def _parent(data: Any, path: tuple) -> Any:
    for part in path:
        data = data[part]
    return data


@st.composite
def edited(draw: st.DrawFn, base: dict) -> dict:
    """`base` after one to four edits; only edits the models accept are kept."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        path, value = draw(st.sampled_from([pv for pv in _leaves(data) if pv[0]]))
        parent, last = _parent(data, path[:-1]), path[-1]
        edit = draw(st.sampled_from(["replace", "delete", "duplicate", "reverse", "section", "routes"]))
        if edit == "routes" and len(data.get("routes", [])) > 1:
            data["routes"] = draw(st.permutations(data["routes"]))
        elif edit == "replace":
            parent[last] = copy.deepcopy(draw(st.sampled_from(POOL[_shape(path)])))
        elif edit == "delete":
            del parent[last]
        elif edit == "duplicate" and isinstance(value, dict) and isinstance(parent, list):
            twin = copy.deepcopy(value)
            if isinstance(twin.get("name"), str):
                twin["name"] += "-2"
            parent.append(twin)
        elif edit == "reverse" and isinstance(value, list):
            value.reverse()
        elif edit == "section":
            section = path[0]
            other = draw(st.sampled_from(SOURCES))
            data[section] = copy.deepcopy(other.get(section, data[section]))
    config, diags = validate_data(data)
    assume(config is not None and not has_errors(run_checks(config, base_dir=ROOT, check_files=False)))
    return canonical(config)  # a config the relay would take: unique names, no dangling references


@st.composite
def pairs(draw: st.DrawFn) -> tuple[dict, dict]:
    a = draw(st.sampled_from(SOURCES))
    if draw(st.booleans()):
        a = draw(edited(a))
    b = draw(edited(a)) if draw(st.booleans()) else draw(st.sampled_from(SOURCES))
    return a, b


# -- replaying a diff -------------------------------------------------------------------------


def _index(items: list, key: Key) -> int:
    """Where the item `key` names stands: by `name`, else by its derived identity."""
    for i, item in enumerate(items):
        if isinstance(item, dict) and (item.get("name") == key.value or item_key(item) == key.value):
            return i
    raise AssertionError(f"no item {key} in {items}")


def _typed_equal(x: Any, y: Any) -> bool:
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def replay(data: dict, changes: list[Change]) -> dict:
    out = copy.deepcopy(data)
    for change in changes:
        if change.kind == "order":
            continue  # checked on its own below: the position of created items is not in a plan
        *head, last = change.path
        if change.kind == "member":
            items = node_at(out, change.path)
            if change.action is Action.CREATE:
                items.append(copy.deepcopy(change.after))
            else:  # plain lists are sets: every copy goes; a dict member goes once
                gone = [i for i, item in enumerate(items) if _typed_equal(item, change.before)]
                for i in reversed(gone if not isinstance(change.before, dict) else gone[:1]):
                    del items[i]
            continue
        parent = node_at(out, tuple(head)) if head else out
        if isinstance(last, Key):
            if change.action is Action.CREATE:
                parent.append(copy.deepcopy(change.after))
            elif change.action is Action.DELETE:
                del parent[_index(parent, last)]
            else:
                parent[_index(parent, last)] = copy.deepcopy(change.after)
        elif change.action is Action.DELETE:
            del parent[last]
        else:
            parent[last] = copy.deepcopy(change.after)
    return out


def normal(value: Any, *, routes_in_order: bool = False) -> Any:
    """Canonical JSON as the diff compares it: named items by name, plain lists as sets, and
    (if asked) the order of the routes."""
    if isinstance(value, dict):
        out = {k: normal(v) for k, v in value.items()}
        if routes_in_order and "routes" in value:
            out["route order"] = [r["name"] for r in value["routes"]]
        return out
    if isinstance(value, list):
        if all(isinstance(v, dict) and isinstance(v.get("name"), str) for v in value) and value:
            return {"named": {v["name"]: normal(v) for v in value}}
        if all(not isinstance(v, dict | list) for v in value):
            return {"set": sorted({json.dumps(v) for v in value})}
        return {"items": sorted(json.dumps(normal(v), sort_keys=True) for v in value)}
    return value


# -- the properties ----------------------------------------------------------------------------


@SETTINGS
@given(st.sampled_from(SOURCES).flatmap(lambda c: st.just(c) | edited(c)))
def test_a_config_against_itself_is_no_change(config: dict) -> None:
    assert diff(config, copy.deepcopy(config)) == []


@SETTINGS
@given(pairs())
def test_replaying_the_changes_turns_before_into_after(pair: tuple[dict, dict]) -> None:
    a, b = pair
    changes = diff(b, a)
    assert (changes == []) == (normal(redact(a), routes_in_order=True) == normal(redact(b), routes_in_order=True))
    assert normal(redact(replay(a, changes))) == normal(redact(b))


@SETTINGS
@given(pairs())
def test_a_new_route_order_is_one_order_change(pair: tuple[dict, dict]) -> None:
    a, b = pair
    names_a = [r["name"] for r in a.get("routes", [])]
    names_b = [r["name"] for r in b.get("routes", [])]
    common_a = [n for n in names_a if n in names_b]
    common_b = [n for n in names_b if n in names_a]
    orders = [c for c in diff(b, a) if c.kind == "order" and c.path == ("routes",)]
    if common_a == common_b:
        assert orders == []
    else:
        assert [(o.before, o.after) for o in orders] == [(common_a, common_b)]


def test_the_sources_cover_the_examples_and_goldens() -> None:
    assert len(SOURCES) >= 20 and len(POOL) > 100
