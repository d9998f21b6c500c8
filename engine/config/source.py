"""The YAML adapter: config files in, plain data plus a source map out, at a bounded cost.

YAML is only an adapter (Caddy's word): it yields the canonical data (dicts, lists, str,
int, float, bool, None) and a `SourceMap` from every path to the file, line and column
where it was written. `compose.py` parses each file once, with libyaml's C parser
(ruamel.yaml.clib), into a node tree whose marks give the positions; round-trip loading
(which keeps comments) is reserved for rewriting files (`migrate`), because it is several
times slower.

A directory is read as one config: its `*.yaml`/`*.yml` files, in name order, are merged.
Mappings merge key by key, lists concatenate, and a key set twice (in one file or in two)
is an error that names both places. YAML 1.2 rules apply, so `no` stays the string "no".

A file with a top-level `extends: ../base` is one node of a fleet: its values laid over the
shared config it names (`overlay.py`).

A file that cannot be read (a YAML syntax error, not a mapping, a link out of the directory)
is reported and left out; the other files of a directory are still merged and checked, and
`Loaded.left_out` names what is missing, so later stages know which of their findings may
be echoes of it (load.py). Crossing a read limit stops the reading: nothing is checked.

Reading costs at most what `ReadLimits` allows (bytes, files, depth, values with aliases
expanded: docs/security.md); crossing a limit is a located error, never a crash. Only
regular files inside a config directory are read: a symlink out of it is an error.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from engine.config import overlay
from engine.config.compose import (
    DEFAULT_LIMITS,
    MERGE,
    TAG,
    Budget,
    Map,
    Mark,
    Node,
    ReadLimits,
    Scalar,
    Seq,
    compose_file,
    file_error,
)
from engine.config.diagnostics import Diagnostic, Path, Severity

YAML_SUFFIXES = (".yaml", ".yml")


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
    """The outcome of reading the YAML: data (None if nothing could be read) and what went
    wrong; `left_out` are the files whose content is missing from `data`, `unread_words` the
    words of those that were opened (a finding naming one may be an echo of their absence)."""

    data: dict[str, Any] | None
    source: SourceMap
    diagnostics: list[Diagnostic]
    base_dir: FsPath
    left_out: tuple[str, ...] = ()
    unread_words: frozenset[str] = frozenset()


def config_files(path: FsPath, limits: ReadLimits = DEFAULT_LIMITS) -> list[FsPath]:
    """The files that make up the config at `path` (a file, or a directory's YAML files that may be read)."""
    if path.is_dir():
        return [link for link, _ in _members(path, limits)[0]]
    return [path]


def _members(directory: FsPath, limits: ReadLimits) -> tuple[list[tuple[FsPath, str]], list[Diagnostic]]:
    """The directory's YAML files as (path shown, real path to open), and why any may not be read.

    Only regular files whose real path is inside the directory count: a symlink out of it
    would let whoever adds files to the directory (a pull request) print any file on the
    machine. A dangling link inside is skipped, as before (editors' lock files are ones).
    """
    names: list[str] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if FsPath(entry.name).suffix in YAML_SUFFIXES:
                    names.append(entry.name)
                    if len(names) > limits.files:
                        hint = "merge some of them: a config is read as one from at most this many files"
                        return [], [file_error(str(directory), f"more than {limits.files} *.yaml files", hint)]
    except OSError as exc:
        return [], [file_error(str(directory), f"cannot read the directory: {exc.strerror}")]
    inside = os.path.realpath(directory)
    members: list[tuple[FsPath, str]] = []
    diags: list[Diagnostic] = []
    for name in sorted(names):
        link = directory / name
        real = os.path.realpath(link)
        if os.path.commonpath([inside, real]) != inside:
            message = "a symbolic link to a file outside the config directory: not read"
            diags.append(file_error(str(link), message, "copy the file into the directory, or remove the link"))
            continue
        try:
            if stat.S_ISREG(os.stat(real).st_mode):
                members.append((link, real))
        except (OSError, ValueError):
            continue  # a dangling link or a loop: not a file, as `Path.is_file` says
    return members, diags


def load_path(path: str | FsPath, *, limits: ReadLimits = DEFAULT_LIMITS, nodes: bool = True) -> Loaded:
    """Read a config file or directory. Never raises for bad input: it reports.

    A file with a top-level `extends:` is a node file, laid over the config it names
    (`overlay.py`); `nodes=False` reads it as it is (a base, which must not be one)."""
    path = FsPath(path)
    source = SourceMap()
    try:
        is_dir = stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError) as exc:
        missing = isinstance(exc, (FileNotFoundError, NotADirectoryError, ValueError))
        message = "no such file or directory" if missing else f"cannot read: {exc.strerror}"
        return Loaded(None, source, [file_error(str(path), message)], path.parent)
    base_dir = path if is_dir else path.parent
    members, diags = _members(path, limits) if is_dir else ([(path, str(path))], [])
    if not members and not diags:
        return Loaded(None, source, [file_error(str(path), "no *.yaml files in this directory")], base_dir)
    budget = Budget(limits)
    roots: list[Map] = []
    left_out = [str(d.mark.file) for d in diags if d.mark]  # links out of the directory
    words: set[str] = set()
    for shown, real in members:
        source.files.append(str(shown))
        node, problem = compose_file(shown, budget, opened=real if is_dir else None)
        if problem or (node is not None and not isinstance(node, Map)):
            diags.append(problem or _at(node, (), "the top level of a config file must be a mapping of sections"))
            left_out.append(str(shown))
            words |= _words_of(real if is_dir else str(shown), limits.file_bytes)
        elif node is None:
            pass  # an empty file adds nothing
        else:
            roots.append(node)
        if budget.spent:
            return Loaded(None, source, diags, base_dir)  # a limit crossed: nothing more is read
    if not roots and diags:
        return Loaded(None, source, diags, base_dir)
    builder = _Builder(source)
    data: dict[str, Any] = {}
    for root in roots:
        builder.merge_mapping(data, root, ())
    source.values.setdefault((), Mark(source.files[0], 1, 1))  # empty files: the config starts there
    loaded = Loaded(data, source, diags + builder.diagnostics, base_dir, tuple(left_out), frozenset(words))
    if nodes and not is_dir and overlay.KEY in data and not loaded.diagnostics:
        return overlay.extend(loaded, path, limits, load_path)
    return loaded


def _words_of(file: str, limit: int) -> set[str]:
    """The words of a file that could not be parsed (names it may define), read within `limit`."""
    try:
        with open(file, "rb") as f:
            text = f.read(limit).decode("utf-8", "replace")
    except OSError:
        return set()
    return set(_WORD.findall(text))


# A top-level `$schema: ../schemas/relay.schema.json` lets editors that read JSON Schema
# from the document (VS Code's YAML extension, JetBrains) complete and check the file; it is
# read as nothing, like the `# yaml-language-server: $schema=` comment.
SCHEMA_KEY = "$schema"
_WORD = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@*+-]*")


def _at(node: Node, path: Path, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(Severity.ERROR, path, message, hint, mark=node.mark)


class _Builder:
    """Turns node trees into plain data, recording every position and duplicate.

    It recurses once per level, which `ReadLimits.depth` keeps far from Python's limit.
    """

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.diagnostics: list[Diagnostic] = []

    def merge_mapping(self, target: dict, node: Map, path: Path) -> None:
        """Add the pairs of `node` to `target`: maps merge, lists extend, twice is an error."""
        self.source.values.setdefault(path, node.mark)
        for key_node, value_node in self._pairs(node, path):
            key = self.scalar_key(key_node, path)
            if key is None:
                continue
            if not path and key == SCHEMA_KEY:
                continue  # an editor's pointer to the JSON Schema, in any file: not config
            child = (*path, key)
            if key in target:
                self._merge_existing(target, key, key_node, value_node, child)
                continue
            self.source.keys[child] = key_node.mark
            target[key] = self.build(value_node, child)

    def _merge_existing(self, target: dict, key: str, key_node: Node, value_node: Node, path: Path) -> None:
        old = target[key]
        if isinstance(old, dict) and isinstance(value_node, Map) and self._from_other_file(path, key_node):
            self.merge_mapping(old, value_node, path)
        elif isinstance(old, list) and isinstance(value_node, Seq) and self._from_other_file(path, key_node):
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
                    mark=key_node.mark,
                    related=(first,),
                )
            )

    def _from_other_file(self, path: Path, key_node: Node) -> bool:
        return self.source.keys[path].file != key_node.mark.file

    def _pairs(self, node: Map, path: Path) -> Iterator[tuple[Node, Node]]:
        """The mapping's pairs, with YAML merge keys (`<<: *anchor`) expanded in place."""
        merged: list[tuple[Node, Node]] = []
        own: list[tuple[Node, Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == MERGE:
                sources = value_node.value if isinstance(value_node, Seq) else [value_node]
                for src in sources:
                    if isinstance(src, Map):
                        merged.extend(src.value)
                    else:
                        self.diagnostics.append(_at(src, path, "a merge key `<<` takes a mapping"))
            else:
                own.append((key_node, value_node))
        own_keys = {k.value for k, _ in own if isinstance(k, Scalar)}
        seen: set = set()
        for key_node, value_node in merged:
            if not isinstance(key_node, Scalar):
                yield key_node, value_node  # reported as a key that is not a word
            elif key_node.value not in own_keys and key_node.value not in seen:
                seen.add(key_node.value)
                yield key_node, value_node
        yield from own

    def scalar_key(self, node: Node, path: Path) -> str | None:
        if isinstance(node, Scalar):
            return node.value
        self.diagnostics.append(_at(node, path, "a key must be a plain word, not a list or mapping"))
        return None

    def build(self, node: Node, path: Path) -> Any:
        self.source.values[path] = node.mark
        if isinstance(node, Map):
            out: dict[str, Any] = {}
            self.merge_mapping(out, node, path)
            return out
        if isinstance(node, Seq):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self.scalar(node, path)

    def scalar(self, node: Node, path: Path) -> Any:
        tag = node.tag
        text = node.value
        if node.style and node.style in "'\"|>":
            return text  # quoted or block scalars are always strings
        try:
            if tag == TAG + "int":
                return _to_int(text)
            if tag == TAG + "float":
                return _to_float(text)
        except ValueError:
            shown = text if len(text) <= 40 else f"{text[:40]}..."
            self.diagnostics.append(_at(node, path, f"cannot read {shown!r} as a number"))
            return text
        if tag == TAG + "bool":
            return text.lower() == "true"
        if tag == TAG + "null":
            return None
        return text


def _to_int(text: str) -> int:
    text = text.replace("_", "")
    try:
        value = int(text)
    except ValueError:
        value = int(text, 0)
    if value.bit_length() > 64:  # nothing in a config is this large; huge ints cannot even be printed
        raise ValueError(text)
    return value


def _to_float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    if lowered.lstrip("+-") in (".inf", "inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered in (".nan", "nan"):
        return math.nan
    return float(lowered)
