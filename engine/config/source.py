"""The YAML adapter: config files in, plain data plus a source map out.

YAML is only an adapter (Caddy's word): it yields the canonical data (dicts, lists, str,
int, float, bool, None) and a `SourceMap` from every path to the file, line and column
where it was written. Files are parsed once, by libyaml's C parser (ruamel.yaml.clib),
into a node tree whose marks give the positions; round-trip loading (which keeps comments)
is reserved for rewriting files (`migrate`), because it is several times slower.

A directory is read as one config: its `*.yaml`/`*.yml` files, in name order, are merged.
Mappings merge key by key, lists concatenate, and a key set twice (in one file or in two)
is an error that names both places. YAML 1.2 rules apply, so `no` stays the string "no".
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from ruamel.yaml.cyaml import CParser
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from engine.config.diagnostics import Diagnostic, Path, Severity

YAML_SUFFIXES = (".yaml", ".yml")
_TAG = "tag:yaml.org,2002:"


@dataclass(frozen=True, order=True)
class Mark:
    """A place in a config file, 1-based like every editor."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


def _tag(node: Node) -> str:
    """The node's tag as text, without ruamel's slow URI decoding for the common case."""
    tag = node.ctag
    if tag is None or isinstance(tag, str):
        return tag or ""
    return tag.suffix if tag.handle is None else str(tag)


def _mark(node: Node) -> Mark:
    m = node.start_mark
    return Mark(str(m.name), m.line + 1, m.column + 1)


@dataclass
class SourceMap:
    """Where each path of the loaded data was written: its value, and its key."""

    values: dict[Path, Mark] = field(default_factory=dict)
    keys: dict[Path, Mark] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def find(self, path: Path, *, key: bool = False) -> Mark | None:
        """The mark of `path`, or of its nearest ancestor that was written down."""
        path = tuple(path)
        while True:
            if key and path in self.keys:
                return self.keys[path]
            if path in self.values:
                return self.values[path]
            if not path:
                return None
            path = path[:-1]
            key = True  # a missing child is best shown at its parent's key

    def with_prefix(self, path: Path) -> Iterator[Path]:
        """Every recorded path that starts with `path` (for lists of children)."""
        n = len(path)
        return (p for p in self.values if p[:n] == path)


@dataclass
class Loaded:
    """The outcome of reading the YAML: data (None if unreadable) and what went wrong."""

    data: dict[str, Any] | None
    source: SourceMap
    diagnostics: list[Diagnostic]
    base_dir: FsPath


_IMPLICIT = [
    (_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    (_TAG + "int", re.compile(r"^(?:[-+]?[0-9_]+|0o[0-7_]+|0x[0-9a-fA-F_]+)$")),
    (
        _TAG + "float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
    ),
    (_TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$")),
    (_TAG + "merge", re.compile(r"^<<$")),
]


class _Composer(CParser):
    """libyaml's parser and composer, with YAML 1.2 core-schema tags resolved here.

    ruamel's own VersionedResolver works too, but spends half of the parse deciding, per
    scalar, which YAML version applies; a config is always YAML 1.2.
    """

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: Any) -> str:
        if kind is ScalarNode:
            if implicit and implicit[0]:
                for tag, pattern in _IMPLICIT:
                    if pattern.match(value):
                        return tag
            return _TAG + "str"
        return _TAG + ("seq" if kind is SequenceNode else "map")


def config_files(path: FsPath) -> list[FsPath]:
    """The files that make up the config at `path` (a file, or a directory's YAML files)."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in YAML_SUFFIXES and p.is_file())
    return [path]


def load_path(path: str | FsPath) -> Loaded:
    """Read a config file or directory. Never raises for bad input: it reports."""
    path = FsPath(path)
    base_dir = path if path.is_dir() else path.parent
    source = SourceMap()
    if not path.exists():
        return Loaded(None, source, [_file_error(str(path), "no such file or directory")], base_dir)
    files = config_files(path)
    if not files:
        return Loaded(None, source, [_file_error(str(path), "no *.yaml files in this directory")], base_dir)
    diags: list[Diagnostic] = []
    roots: list[MappingNode] = []
    for file in files:
        source.files.append(str(file))
        node, problem = compose_file(file)
        if problem:
            diags.append(problem)
        elif node is None:
            continue  # an empty file adds nothing
        elif not isinstance(node, MappingNode):
            diags.append(_at(node, (), "the top level of a config file must be a mapping of sections"))
        else:
            roots.append(node)
    if diags:
        return Loaded(None, source, diags, base_dir)
    builder = _Builder(source)
    data: dict[str, Any] = {}
    for root in roots:
        builder.merge_mapping(data, root, ())
    return Loaded(data, source, builder.diagnostics, base_dir)


def compose_file(file: FsPath) -> tuple[Node | None, Diagnostic | None]:
    """Parse one file into a node tree, or say where its YAML is broken."""
    try:
        with open(file, encoding="utf-8") as stream:
            return _Composer(stream).get_single_node(), None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = Mark(str(file), mark.line + 1, mark.column + 1) if mark else None
        text = exc.problem or "invalid YAML"
        if exc.context:
            started = exc.context_mark
            at = (
                f" (started at {file}:{started.line + 1}:{started.column + 1})"
                if started and started is not mark
                else ""
            )
            text = f"{exc.context}{at}: {text}"
        return None, Diagnostic(Severity.ERROR, (), f"YAML syntax error: {text}", mark=where)
    except UnicodeDecodeError as exc:
        return None, _file_error(str(file), f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    except OSError as exc:
        return None, _file_error(str(file), f"cannot read: {exc.strerror}")


def _file_error(file: str, message: str) -> Diagnostic:
    return Diagnostic(Severity.ERROR, (), message, mark=Mark(file, 1, 1))


def _at(node: Node, path: Path, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(Severity.ERROR, path, message, hint, mark=_mark(node))


class _Builder:
    """Turns node trees into plain data, recording every position and duplicate."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def merge_mapping(self, target: dict, node: MappingNode, path: Path) -> None:
        """Add the pairs of `node` to `target`: maps merge, lists extend, twice is an error."""
        self.source.values.setdefault(path, _mark(node))
        for key_node, value_node in self._pairs(node, path):
            key = self.scalar_key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            if key in target:
                self._merge_existing(target, key, key_node, value_node, child)
                continue
            self.source.keys[child] = _mark(key_node)
            target[key] = self.build(value_node, child)

    def _merge_existing(self, target: dict, key: str, key_node: Node, value_node: Node, path: Path) -> None:
        old = target[key]
        if isinstance(old, dict) and isinstance(value_node, MappingNode) and self._from_other_file(path, key_node):
            self.merge_mapping(old, value_node, path)
        elif isinstance(old, list) and isinstance(value_node, SequenceNode) and self._from_other_file(path, key_node):
            offset = len(old)
            for i, item in enumerate(value_node.value):
                old.append(self.build(item, (*path, offset + i)))
        else:
            first = self.source.keys[path]
            self.diagnostics.append(
                Diagnostic(
                    Severity.ERROR,
                    path,
                    f"duplicate key `{key}` (first set at {first})",
                    "remove one of the two, or merge them into one",
                    mark=_mark(key_node),
                    related=(first,),
                )
            )

    def _from_other_file(self, path: Path, key_node: Node) -> bool:
        return self.source.keys[path].file != str(key_node.start_mark.name)

    def _pairs(self, node: MappingNode, path: Path) -> Iterator[tuple[Node, Node]]:
        """The mapping's pairs, with YAML merge keys (`<<: *anchor`) expanded in place."""
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if _tag(key_node) == _TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for src in sources:
                    if isinstance(src, MappingNode):
                        merged.extend(src.value)
                    else:
                        self.diagnostics.append(_at(src, path, "a merge key `<<` takes a mapping"))
            else:
                own.append((key_node, value_node))
        own_keys = {k.value for k, _ in own if isinstance(k, ScalarNode)}
        seen: set = set()
        for key_node, value_node in merged:
            if key_node.value not in own_keys and key_node.value not in seen:
                seen.add(key_node.value)
                yield key_node, value_node
        yield from own

    def scalar_key(self, node: Node, path: Path) -> str | None:
        if isinstance(node, ScalarNode):
            value = node.value
            return value if isinstance(value, str) else str(value)
        self.diagnostics.append(_at(node, path, "a key must be a plain word, not a list or mapping"))
        return None

    def build(self, node: Node, path: Path) -> Any:
        self.source.values[path] = _mark(node)
        if isinstance(node, MappingNode):
            out: dict[str, Any] = {}
            self.merge_mapping(out, node, path)
            return out
        if isinstance(node, SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        tag = _tag(node)
        text = node.value
        if node.style and node.style in "'\"|>":
            return text  # quoted or block scalars are always strings
        try:
            if tag == _TAG + "int":
                return _to_int(text)
            if tag == _TAG + "float":
                return _to_float(text)
        except ValueError:
            self.diagnostics.append(_at(node, path, f"cannot read {text!r} as a number"))
            return text
        if tag == _TAG + "bool":
            return text.lower() == "true"
        if tag == _TAG + "null":
            return None
        return text


def _to_int(text: str) -> int:
    text = text.replace("_", "")
    try:
        return int(text)
    except ValueError:
        return int(text, 0)


def _to_float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered.lstrip("+-") in (".inf", "inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered in (".nan", "nan"):
        return math.nan
    return float(lowered)
