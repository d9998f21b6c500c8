"""Reading one YAML file at a bounded cost: bytes, then libyaml's events, then a node tree.

`compose_file` reads a file no further than `ReadLimits` allow and composes it with an
explicit stack, so nothing recurses with the input's depth. libyaml's own composer
(`CParser.get_single_node`) is not used: it recurses in C once per nesting level (35,000
`[` crash the process), and the tree it returns lets aliases repeat a node without bound.
Here every limit is checked at the event that crosses it, before anything is built from
it: the depth as each list or mapping opens, and the values and text of the whole config
as each one is read, with an alias counted as everything it repeats. Whatever goes wrong
is a `Diagnostic` at `file:line:col` (docs/security.md lists the limits and their defaults).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

from ruamel.yaml.cyaml import CParser
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from ruamel.yaml.reader import ReaderError

from engine.config.diagnostics import Diagnostic, Severity

TAG = "tag:yaml.org,2002:"
MERGE = TAG + "merge"
MIB = 1024 * 1024


@dataclass(frozen=True)
class ReadLimits:
    """What reading one config may cost; the defaults are ample for any real config."""

    file_bytes: int = 8 * MIB  # one file
    total_bytes: int = 16 * MIB  # all the files of a directory together
    files: int = 256  # *.yaml/*.yml files in a directory
    depth: int = 32  # lists and mappings nested in one another, aliases expanded
    nodes: int = 250_000  # values (keys, scalars, lists, mappings) in all, aliases expanded
    text: int = 32 * MIB  # characters of scalar text in all, aliases expanded


DEFAULT_LIMITS = ReadLimits()


@dataclass(frozen=True, order=True)
class Mark:
    """A place in a config file, 1-based like every editor."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass
class Budget:
    """What one config's files have used of the limits so far."""

    limits: ReadLimits = DEFAULT_LIMITS
    bytes: int = 0
    nodes: int = 0
    text: int = 0
    spent: bool = False  # a limit on the whole config was crossed: read no further files


_IMPLICIT = [
    (TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")),
    (TAG + "int", re.compile(r"^(?:[-+]?[0-9_]+|0o[0-7_]+|0x[0-9a-fA-F_]+)$")),
    (
        TAG + "float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
    ),
    (TAG + "null", re.compile(r"^(?:~|null|Null|NULL|)$")),
    (MERGE, re.compile(r"^<<$")),
]
_MAYBE_NOT_STR = frozenset("0123456789+-.~tTfFnN<") | {""}  # how the patterns above can start


def _scalar_tag(event: ScalarEvent) -> str:
    """The YAML 1.2 core-schema tag of a scalar (ruamel's resolver spends half the parse here)."""
    tag = event.tag
    if tag is not None and tag != "!":
        return tag
    if event.implicit[0] and event.value[:1] in _MAYBE_NOT_STR:
        for resolved, pattern in _IMPLICIT:
            if pattern.match(event.value):
                return resolved
    return TAG + "str"


class Node:
    """A composed YAML node. `size` and `chars` are the values and scalar text it stands for
    with its aliases expanded, `height` how many lists and mappings deep it reaches."""

    __slots__ = ("tag", "value", "mark", "style", "size", "chars", "height", "anchor")

    def __init__(self, tag: str, value: Any, mark: Mark, style: str | None, anchor: str | None) -> None:
        self.tag, self.value, self.mark, self.style, self.anchor = tag, value, mark, style, anchor
        self.size, self.chars, self.height = 1, 0, 0


class Scalar(Node):
    __slots__ = ()


class Seq(Node):
    __slots__ = ()


class Map(Node):
    __slots__ = ()  # value: (key, value) pairs


class _Refused(Exception):
    """Composing stopped: `diagnostic` says where and why."""

    def __init__(self, diagnostic: Diagnostic) -> None:
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


def compose_file(
    file: FsPath, budget: Budget | None = None, *, opened: str | None = None
) -> tuple[Node | None, Diagnostic | None]:
    """Parse one file into a node tree within the budget, or say where and why not.

    `opened` is the real path of a directory member: it is opened without following a
    symlink and must be a regular file, so a link swapped in after the check is not read.
    """
    budget = budget or Budget()
    name = str(file)
    raw, problem = _read(file, budget, opened)
    if problem:
        return None, problem
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, Diagnostic(
            Severity.ERROR,
            (),
            f"not UTF-8 text ({exc.reason} at byte {exc.start})",
            mark=_at_byte(raw, exc.start, name),
        )
    try:
        return _compose(raw, name, budget), None
    except _Refused as refused:
        return None, refused.diagnostic
    except MarkedYAMLError as exc:
        return None, _syntax_error(exc, name)
    except ReaderError as exc:  # a character YAML forbids (control characters, U+FFFE)
        text = f"YAML syntax error: character #x{exc.character:04x} is not allowed in YAML"
        return None, Diagnostic(Severity.ERROR, (), text, mark=_at_byte(raw, exc.position, name))


def _read(file: FsPath, budget: Budget, opened: str | None) -> tuple[bytes, Diagnostic | None]:
    """The file's bytes, read no further than the limits allow."""
    limits = budget.limits
    left = limits.total_bytes - budget.bytes
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    if opened is not None:
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        with open(os.open(opened or file, flags), "rb") as stream:
            if opened is not None and not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                return b"", file_error(str(file), "not a regular file: not read")
            raw = stream.read(min(limits.file_bytes, left) + 1)
    except OSError as exc:
        return b"", file_error(str(file), f"cannot read: {exc.strerror}")
    budget.bytes += len(raw)
    if len(raw) > limits.file_bytes:
        hint = "a config is far smaller: is this the right file? Split a large config into a directory"
        return b"", file_error(str(file), f"larger than {_size(limits.file_bytes)}: not read", hint)
    if len(raw) > left:
        budget.spent = True
        message = (
            f"the config's files together are larger than {_size(limits.total_bytes)}: this one and the rest not read"
        )
        return b"", file_error(str(file), message)
    return raw, None


def _compose(raw: bytes, file: str, budget: Budget) -> Node | None:
    """Build the node tree from libyaml's events, refusing at the event that crosses a limit.

    The parser keeps its own stacks (it does not recurse); the tree is built here with an
    explicit stack. Raises `_Refused`, or ruamel's errors for broken YAML.
    """
    limits = budget.limits
    max_nodes, max_depth = limits.nodes, limits.depth
    nodes, text = budget.nodes, budget.text
    anchors: dict[str, Node] = {}
    open_anchors: dict[str, Mark] = {}
    stack: list[Node] = []
    root: Node | None = None
    document: Mark | None = None
    next_event = CParser(raw).get_event
    try:
        while (event := next_event()) is not None:
            kind = type(event)
            if kind is ScalarEvent:
                node: Node = Scalar(_scalar_tag(event), event.value, _event_mark(event, file), event.style, None)
                node.chars = len(event.value)
                nodes += 1
                text += node.chars
                if event.anchor is not None:
                    _define(anchors, open_anchors, event.anchor, node.mark)
                    anchors[event.anchor] = node
            elif kind is AliasEvent:
                node = _target(event, file, anchors, open_anchors, len(stack), max_depth)
                nodes += node.size
                text += node.chars
                if nodes > max_nodes or text > limits.text:
                    budget.spent = True
                    raise _Refused(_too_much(_event_mark(event, file), limits, nodes > max_nodes, alias=True))
            elif kind is SequenceStartEvent or kind is MappingStartEvent:
                mark = _event_mark(event, file)
                if len(stack) >= max_depth:
                    hint = "a config needs a handful of levels: is a bracket left open, or a block indented too far?"
                    raise _Refused(_error(mark, f"nested more than {max_depth} levels deep", hint))
                cls = Seq if kind is SequenceStartEvent else Map
                tag = event.tag if event.tag not in (None, "!") else TAG + ("seq" if cls is Seq else "map")
                if event.anchor is not None:
                    _define(anchors, open_anchors, event.anchor, mark)
                    open_anchors[event.anchor] = mark
                node = cls(tag, [], mark, None, event.anchor)
                node.height = 1
                stack.append(node)
                nodes += 1
                continue
            elif kind is SequenceEndEvent or kind is MappingEndEvent:
                node = stack.pop()
                if kind is MappingEndEvent:
                    items = node.value
                    node.value = list(zip(items[0::2], items[1::2], strict=True))
                if node.anchor is not None:
                    anchors[node.anchor] = node
                    del open_anchors[node.anchor]
            elif kind is DocumentStartEvent:
                mark = _event_mark(event, file)
                if document is not None:
                    context = f"expected a single document in the stream (started at {document})"
                    raise _Refused(_error(mark, f"YAML syntax error: {context}: but found another document"))
                document = mark
                continue
            else:
                continue  # stream start and end, document end
            if nodes > max_nodes:
                budget.spent = True
                raise _Refused(_too_much(node.mark, limits, True, alias=False))
            if stack:
                parent = stack[-1]
                parent.value.append(node)
                parent.size += node.size
                parent.chars += node.chars
                parent.height = max(parent.height, node.height + 1)
            else:
                root = node
    finally:
        budget.nodes, budget.text = nodes, text
    return root


def _define(anchors: dict[str, Node], open_anchors: dict[str, Mark], name: str, mark: Mark) -> None:
    first = open_anchors.get(name) or (anchors[name].mark if name in anchors else None)
    if first is not None:
        hint = "give each anchor its own name"
        raise _Refused(_error(mark, f"YAML syntax error: duplicate anchor &{name} (first defined at {first})", hint))


def _target(
    event: AliasEvent, file: str, anchors: dict[str, Node], open_anchors: dict[str, Mark], depth: int, max_depth: int
) -> Node:
    """The node an alias repeats: defined before it, not containing it, not nesting too deep."""
    mark = _event_mark(event, file)
    name = event.anchor
    if name in open_anchors:
        message = f"the alias *{name} is inside the node it refers to (anchored at {open_anchors[name]})"
        raise _Refused(_error(mark, message, "a config value cannot contain itself"))
    node = anchors.get(name)
    if node is None:
        hint = "define the anchor (&name) before the alias"
        raise _Refused(_error(mark, f"YAML syntax error: found undefined alias *{name}", hint))
    if depth + node.height > max_depth:
        raise _Refused(_error(mark, f"the alias *{name} nests the config more than {max_depth} levels deep"))
    return node


def _too_much(mark: Mark, limits: ReadLimits, nodes: bool, *, alias: bool) -> Diagnostic:
    what = f"{limits.nodes:,} values" if nodes else f"{limits.text:,} characters of text"
    if alias:
        hint = "an alias (*name) counts everything it repeats: write large repeated blocks out once"
        return _error(mark, f"aliases expand this config to more than {what}", hint)
    return _error(mark, f"more than {what} in this config", "a config this large is a mistake: is it the right file?")


def _event_mark(event: Any, file: str) -> Mark:
    m = event.start_mark
    return Mark(file, m.line + 1, m.column + 1)


def _syntax_error(exc: MarkedYAMLError, file: str) -> Diagnostic:
    mark = exc.problem_mark or exc.context_mark
    where = Mark(file, mark.line + 1, mark.column + 1) if mark else Mark(file, 1, 1)
    text = exc.problem or "invalid YAML"
    if exc.context:
        started = exc.context_mark
        at = f" (started at {file}:{started.line + 1}:{started.column + 1})" if started and started is not mark else ""
        text = f"{exc.context}{at}: {text}"
    return Diagnostic(Severity.ERROR, (), f"YAML syntax error: {text}", mark=where)


def _at_byte(raw: bytes, offset: int, file: str) -> Mark:
    """The line and column (in characters) of a byte offset into the file."""
    offset = max(0, min(offset, len(raw)))
    start = raw.rfind(b"\n", 0, offset) + 1
    return Mark(file, raw.count(b"\n", 0, offset) + 1, len(raw[start:offset].decode("utf-8", "replace")) + 1)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n % MIB == 0 else f"{n:,} bytes"


def _error(mark: Mark, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(Severity.ERROR, (), message, hint, mark=mark)


def file_error(file: str, message: str, hint: str | None = None) -> Diagnostic:
    return _error(Mark(file, 1, 1), message, hint)
