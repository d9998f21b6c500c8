"""The structural diff of two configs' canonical JSON: a pure function, keyed by names.

`diff(desired, current)` walks both canonical JSON documents together and returns the
changes, in section order:

- maps (sections, groups) give a change per key created, deleted or updated, recursing
  into nested maps down to the leaves;
- lists of named items (listeners, enforced_tls, routes, dlp.classifiers,
  dlp.action_plans, dlp.policies and their rules, tests) are matched by `name`: a reorder
  is not a change, a rename is a delete and a create. Where order matters (`routes` are
  first-match, third-party `servers` and DNS `nameservers` are tried in order) a reorder
  is one `order` change;
- lists of unnamed items (the conditions of `all`/`any`, third-party servers) are matched
  by a derived identity (a condition's kind and what it looks for, a server's host:port),
  so editing one condition shows as an update inside it; what cannot be paired is a
  member removed and a member added;
- lists of plain values (domains, CIDRs, phrases, scopes) are sets: members added and
  removed;
- a value whose kind changed (`mx` -> a host, `{ip_group}` -> `{domain_group}`, one
  condition kind -> another, `self_signed` -> `pfx`) is one update of the whole value.

Secrets (the fields the models type as `{env}`/`{file}` references) are compared whole
and never leave this module as anything but `(sensitive value)`.
"""

from __future__ import annotations

import hashlib
import json
import threading
import typing
import weakref
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from engine.config.model import EnvSecret, FileSecret, RelayConfig
from engine.config.model.dlp import CONDITION_KINDS
from engine.config.secrets import REDACTED
from engine.plan.change import Action, Change, Key, Path

ORDERED: dict[tuple[str, ...], str] = {
    ("routes",): "routes are first-match: the first route whose recipients match is taken",
    ("encryption", "third_party", "servers"): "encryption servers are tried in order",
    ("system", "dns", "nameservers"): "nameservers are asked in order",
}
"""Lists whose order matters, by their path without item keys, and why."""

# Keys that pick an alternative of a tagged union: if two maps hold different ones, the
# value changed kind and is shown as one update rather than as unrelated leaves.
_DISCRIMINATORS = frozenset(CONDITION_KINDS) | {
    "self_signed",
    "pfx",
    "pem",
    "ip_group",
    "domain_group",
    "domains",
    "env",
    "file",
}
SECTIONS: tuple[str, ...] = tuple(f.alias or name for name, f in RelayConfig.model_fields.items())


def _types_in(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)


def _secret_fields(model: type[BaseModel] = RelayConfig) -> frozenset[str]:
    """Names of the fields the models type as secret references (`password`, …)."""
    found: set[str] = set()
    seen: set[type] = set()

    def visit(cls: type[BaseModel]) -> None:
        if cls in seen:
            return
        seen.add(cls)
        for name, info in cls.model_fields.items():
            for tp in _types_in(info.annotation):
                if tp in (EnvSecret, FileSecret):
                    found.add(info.alias or name)
                elif isinstance(tp, type) and issubclass(tp, BaseModel):
                    visit(tp)

    visit(model)
    return frozenset(found)


SECRET_FIELDS = _secret_fields()


def canonical(config: RelayConfig | dict | None) -> dict:
    """The canonical JSON of a config. A dict is read back through the models first, so a
    config missing its defaults compares equal to the same config with them written out."""
    if config is None:
        return {}
    if isinstance(config, RelayConfig):
        return config.model_dump(mode="json", by_alias=True, exclude_none=True)
    from engine.config.load import validate_data

    model, diags = validate_data(config)
    if model is None:
        problems = "; ".join(f"{d.dotted}: {d.message}" for d in diags[:3])
        raise ValueError(f"not a valid config: {problems}")
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def config_hash(config: RelayConfig | dict) -> str:
    """SHA-256 (hex) of the config's canonical JSON with sorted keys: equal configs, equal hash."""
    if isinstance(config, RelayConfig):
        return document(config).hash
    return hash_canonical(canonical(config))


def hash_canonical(data: dict) -> str:
    """`config_hash` of data that is already canonical JSON (not read back through the models)."""
    return hashlib.sha256(canonical_bytes(data)).hexdigest()


def canonical_bytes(data: Any) -> bytes:
    """Canonical JSON as hashed: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True, eq=False)
class Document:
    """A config's canonical JSON (`data`), that JSON as hashed (`text`) and its hash."""

    data: dict  # shared by every user of the same config object: read it, never change it
    text: bytes
    hash: str


_MEMO: dict[int, Any] = {}
_MEMO_LOCK = threading.Lock()


def _memo(model: BaseModel, make: typing.Callable[[], Any]) -> Any:
    """`make()`, once per model object (models are frozen); forgotten with the object."""
    key = id(model)
    found = _MEMO.get(key)
    if found is not None:
        return found
    made = make()
    with _MEMO_LOCK:  # provisioning and planning run in worker threads
        if key not in _MEMO:
            _MEMO[key] = made
            # runs while the object is freed, before its id can be given to another one
            weakref.finalize(model, _MEMO.pop, key, None)
        return _MEMO[key]


def document(config: RelayConfig) -> Document:
    """The `Document` of `config`, computed once per config object.

    A 500-rule config is 250 KB of canonical JSON: dumping and hashing it took ~15 ms, and
    one apply did it five times (plan, hash, switch, state, the API's snapshot). The `dlp`
    section, nearly all of it, is dumped once per section object, and configs validated
    from the same `dlp` data share that object (`engine.config.model.dlp.DLP`): a change
    elsewhere dumps only the rest. Callers that change the data must use `canonical`,
    which returns a fresh copy.
    """
    return _memo(config, lambda: _document(config))


def _document(config: RelayConfig) -> Document:
    rest = config.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"dlp"})
    dlp_data, dlp_text = _memo(config.dlp, lambda: _dlp_document(config.dlp))
    data = {key: dlp_data if key == "dlp" else rest[key] for key in SECTIONS if key == "dlp" or key in rest}
    # canonical_bytes(data), with the dlp section's bytes as they are: sorted keys, no spaces
    text = b"{%s}" % b",".join(
        canonical_bytes(key) + b":" + (dlp_text if key == "dlp" else canonical_bytes(value))
        for key, value in sorted(data.items())
    )
    return Document(data, text, hashlib.sha256(text).hexdigest())


def _dlp_document(dlp: BaseModel) -> tuple[dict, bytes]:
    data = dlp.model_dump(mode="json", by_alias=True, exclude_none=True)
    return data, canonical_bytes(data)


def redact(value: Any) -> Any:
    """`value` with every secret field's value replaced by `(sensitive value)`."""
    if isinstance(value, dict):
        return {k: (REDACTED if k in SECRET_FIELDS else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def item_key(item: Any) -> str | None:
    """The identity of an unnamed list item: a condition's kind and what it looks for
    (`classifier:credit_card`, `pattern:\\bACCT…`, `header:X-Classification`, `any`), a
    server's `host:port`. None when the item has no natural identity."""
    if not isinstance(item, dict):
        return None
    kind = next((k for k in CONDITION_KINDS if k in item), None)
    if kind in ("classifier", "pattern"):
        return f"{kind}:{item[kind]}"
    if kind == "header" and isinstance(item[kind], dict):
        return f"header:{item[kind].get('name')}"
    if kind is not None:
        return kind
    if "host" in item and "port" in item:
        return f"{item['host']}:{item['port']}"
    return None


def _named(items: list) -> bool:
    return bool(items) and all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _keys(items: list, named: bool) -> list[str | None]:
    """Each item's key, or None where it has none or shares it with another item."""
    keys = [i["name"] if named else item_key(i) for i in items]
    counts = Counter(keys)
    return [k if k is not None and counts[k] == 1 else None for k in keys]


def node_at(data: Any, path: Path) -> Any:
    """The value at `path` in canonical JSON, None where there is none."""
    node = data
    for part in path:
        if isinstance(part, Key):
            if not isinstance(node, list):
                return None
            named = _named(node)
            node = next((i for i, k in zip(node, _keys(node, named), strict=True) if k == part.value), None)
        elif isinstance(part, int):
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        else:
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return None
    return node


def diff(desired: RelayConfig | dict, current: RelayConfig | dict | None) -> list[Change]:
    """The changes that turn `current` into `desired` (every effect still `neutral`: the
    guard judges them). `current=None` is the empty config: every section is created."""
    return diff_canonical(canonical(desired), canonical(current) if current is not None else None)


def diff_canonical(after: dict, before: dict | None) -> list[Change]:
    """`diff` of data that is already canonical JSON (as `canonical` returns it)."""
    before = before or {}
    out: list[Change] = []
    _walk((), before, after, out)
    order = {name: i for i, name in enumerate(SECTIONS)}
    return sorted(out, key=lambda c: order.get(c.section, len(order)))  # stable within a section


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _variant(value: dict) -> frozenset[str]:
    return frozenset(value) & _DISCRIMINATORS


def _walk(path: Path, before: Any, after: Any, out: list[Change]) -> None:
    if _same(before, after):
        return
    if path and path[-1] in SECRET_FIELDS:
        out.append(Change(Action.UPDATE, path, REDACTED, REDACTED))
    elif isinstance(before, dict) and isinstance(after, dict) and _variant(before) == _variant(after):
        for key, value in after.items():
            if key in before:
                _walk((*path, key), before[key], value, out)
            else:
                out.append(Change(Action.CREATE, (*path, key), None, _redacted(key, value)))
        for key, value in before.items():
            if key not in after:
                out.append(Change(Action.DELETE, (*path, key), _redacted(key, value), None))
    elif isinstance(before, list) and isinstance(after, list):
        _walk_list(path, before, after, out)
    else:
        out.append(Change(Action.UPDATE, path, redact(before), redact(after)))


def _redacted(key: str, value: Any) -> Any:
    return REDACTED if key in SECRET_FIELDS else redact(value)


def _walk_list(path: Path, before: list, after: list, out: list[Change]) -> None:
    ordered = tuple(p for p in path if isinstance(p, str)) in ORDERED
    if all(not isinstance(v, dict | list) for v in before + after):
        _walk_set(path, before, after, out, ordered)
        return
    if not all(isinstance(v, dict) for v in before + after):
        out.append(Change(Action.UPDATE, path, redact(before), redact(after)))
        return
    named = _named(before + after)
    if named:
        pairs, gone, new = _pair_by_key(before, after)
        walk = pairs
    else:
        pairs, walk, gone, new = _pair_unnamed(before, after)
    for key, b, a in walk:
        _walk((*path, Key(key)), b, a, out)
    kind = "value" if named else "member"
    for key, item in gone:
        out.append(Change(Action.DELETE, (*path, Key(key)) if named else path, redact(item), None, kind=kind))
    for key, item in new:
        out.append(Change(Action.CREATE, (*path, Key(key)) if named else path, None, redact(item), kind=kind))
    if ordered:
        order_before = [k for k, b, _ in sorted(pairs, key=lambda p: _index(before, p[1]))]
        order_after = [k for k, _, a in sorted(pairs, key=lambda p: _index(after, p[2]))]
        if order_before != order_after:
            out.append(Change(Action.UPDATE, path, order_before, order_after, kind="order"))


def _index(items: list, item: Any) -> int:
    return next(i for i, x in enumerate(items) if x is item)


def _pair_by_key(before: list, after: list) -> tuple[list, list, list]:
    """Named items: pairs (name, before, after) with the same name; the rest created or gone."""
    names_b = {item["name"] for item in before}
    names_a = {item["name"] for item in after}
    by_name = {item["name"]: item for item in before}
    pairs = [(item["name"], by_name[item["name"]], item) for item in after if item["name"] in names_b]
    new = [(item["name"], item) for item in after if item["name"] not in names_b]
    gone = [(item["name"], item) for item in before if item["name"] not in names_a]
    return pairs, gone, new


def _pair_unnamed(before: list, after: list) -> tuple[list, list, list, list]:
    """Unnamed items: equal items pair first (wherever they stand), then items whose
    identity (`item_key`, unique in both whole lists) is the same; those are walked into.
    Returns (all pairs, for order; keyed pairs, to walk into; gone; new)."""
    kb, ka = _keys(before, named=False), _keys(after, named=False)
    free_b = list(range(len(before)))
    pairs, rest_a = [], []
    for ia, item in enumerate(after):
        ib = next((i for i in free_b if _same(before[i], item)), None)
        if ib is None:
            rest_a.append(ia)
        else:
            free_b.remove(ib)
            pairs.append((ka[ia] or _compact(item), before[ib], item))
    by_key = {kb[i]: i for i in free_b if kb[i] is not None}
    walk, new = [], []
    for ia in rest_a:
        ib = by_key.pop(ka[ia], None) if ka[ia] is not None else None
        if ib is None:
            new.append((None, after[ia]))
        else:
            free_b.remove(ib)
            walk.append((ka[ia], before[ib], after[ia]))
    gone = [(None, before[i]) for i in free_b]
    return pairs + walk, walk, gone, new


def _walk_set(path: Path, before: list, after: list, out: list[Change], ordered: bool) -> None:
    """Plain values as sets (hashed: a group of thousands of CIDRs stays linear)."""
    in_before = {_typed(v) for v in before}
    in_after = {_typed(v) for v in after}
    for value in dict.fromkeys(before):
        if _typed(value) not in in_after:
            out.append(Change(Action.DELETE, path, value, None, kind="member"))
    for value in dict.fromkeys(after):
        if _typed(value) not in in_before:
            out.append(Change(Action.CREATE, path, None, value, kind="member"))
    if ordered:
        common_b = [v for v in before if _typed(v) in in_after]
        common_a = [v for v in after if _typed(v) in in_before]
        if common_b != common_a:
            out.append(Change(Action.UPDATE, path, common_b, common_a, kind="order"))


def _typed(value: Any) -> tuple[str, Any]:
    return type(value).__name__, value


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
