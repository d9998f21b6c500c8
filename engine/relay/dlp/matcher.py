"""Multi-pattern matcher for DLP: every regex and phrase of a config, compiled once.

``Matcher.compile([(id, kind, text), ...])`` takes ``regex`` entries (Python ``re`` syntax)
and ``phrase`` entries (case-insensitive, word-bounded, any run of whitespace between
words). ``matcher.scan(text)`` returns, for each id that matched, the spans of its
non-empty, non-overlapping matches, exactly as ``re.finditer`` finds them.

Two backends give identical results:

- ``python``: one ``re.finditer`` per entry. The definition of the result.
- ``hyperscan``: one hyperscan database finds every position where a match can start;
  ``re.match`` at those positions, in order from the end of the previous match, then finds
  exactly what ``re.finditer`` finds. To make the candidates a guaranteed superset, each
  entry is translated from Python's own parse of it: character classes become the code
  points ``re`` itself matches (Unicode ``\\w``, case folding such as ``ſ``~``s`` and
  ASCII mode all agree); zero-width assertions (``\\b``, lookarounds, anchors) are
  dropped, which only adds candidates. The text is scanned one byte per character
  (Latin-1, ``?`` standing for any character beyond it, which classes then admit), so
  offsets need no conversion. Translation and text are both *reversed*, so every reported
  end is a possible start: this replaces HS_FLAG_SOM_LEFTMOST, which corrupts memory in
  the bundled Vectorscan 5.4.12 on AVX-512 CPUs (docs/dlp-scanning.md). Entries with no
  translation (back-references, conditionals) or that hyperscan refuses (they can match
  the empty string, or are too large) use ``re`` alone; ``python_only`` lists them.

The backend is hyperscan when it imports, unless ``SEALRELAY_DLP_BACKEND=python`` (or the
``backend`` argument) says otherwise. A compiled matcher is immutable and thread-safe.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from re import _constants as sre  # Python's own regex parser: see _translate
from re import _parser as sre_parse

from engine.relay.dlp import hsdb

try:  # the wheel exists for x86_64 only; elsewhere the Python backend serves
    import hyperscan
except ImportError:  # pragma: no cover - depends on the platform
    hyperscan = None

Span = tuple[int, int]
KINDS = ("regex", "phrase")
BACKENDS = ("hyperscan", "python")
ENV_BACKEND = "SEALRELAY_DLP_BACKEND"


def phrase_regex(phrase: str) -> str:
    """The ``re`` pattern for a phrase: case-insensitive, word-bounded, flexible spaces.

    ``\\b`` is only put where the phrase begins or ends with a word character, so phrases
    such as ``C++`` or ``#secret`` still match.
    """
    words = phrase.split()
    if not words:
        raise ValueError("empty phrase")
    body = r"\s+".join(re.escape(word) for word in words)
    head = r"\b" if re.match(r"\w", words[0]) else ""
    tail = r"\b" if re.search(r"\w$", words[-1]) else ""
    return f"(?i){head}{body}{tail}"


def hyperscan_available() -> bool:
    return hyperscan is not None


@dataclass(frozen=True)
class _Entry:
    id: str
    kind: str
    text: str

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """Compiled on first use: after a restart that loaded the translations, an entry
        no candidate ever reaches is never compiled."""
        return _regex(self.kind, self.text)


class Matcher:
    """A compiled set of patterns and phrases; see the module docstring for semantics."""

    def __init__(self, entries: tuple[_Entry, ...], backend: str, prefilter: _Prefilter | None) -> None:
        self._entries = entries
        self._prefilter = prefilter
        self.backend = backend
        self.ids = tuple(entry.id for entry in entries)
        self.python_only = self.ids if prefilter is None else prefilter.python_only

    @classmethod
    def compile(
        cls, entries: Iterable[tuple[str, str, str]], backend: str | None = None, cache_dir: Path | None = None
    ) -> Matcher:
        """Compile ``(id, kind, text)`` entries; ``kind`` is ``regex`` or ``phrase``.

        ``backend``: ``hyperscan``, ``python`` or None (hyperscan if importable, unless the
        ``SEALRELAY_DLP_BACKEND`` environment variable says ``python``). Raises ValueError
        naming the entry for an unknown kind, a duplicate id, an empty phrase or a bad regex.
        The same entries give the same (immutable) matcher back without compiling again;
        ``cache_dir`` keeps hyperscan databases on disk for the next process (hsdb.py).
        """
        entries = tuple(tuple(entry) for entry in entries)
        chosen = _choose_backend(backend)
        key = (chosen, entries)
        with _MATCHERS_LOCK:
            cached = _MATCHERS.get(key)
        if cached is not None:
            return cached
        # translations stored by an earlier process for exactly these entries were made
        # from patterns that compiled then: they are not compiled or translated again here
        sources = [(kind, text) for _, kind, text in entries]
        translations = hsdb.load_translations(cache_dir, sources) if chosen == "hyperscan" else None
        compiled = tuple(_Entry(*entry) if translations else _compile_entry(*entry) for entry in entries)
        seen: set[str] = set()
        for entry in compiled:
            if entry.id in seen:
                raise ValueError(f"duplicate pattern id {entry.id!r}")
            seen.add(entry.id)
        prefilter = None
        if chosen == "hyperscan":
            if translations is None:
                translations = [_usable(_translate(entry.regex)) for entry in compiled]
                hsdb.store_translations(cache_dir, sources, translations)
            prefilter = _Prefilter(compiled, translations, cache_dir)
        matcher = cls(compiled, chosen, prefilter)
        with _MATCHERS_LOCK:
            _MATCHERS[key] = matcher
            while len(_MATCHERS) > _MATCHERS_KEPT:
                del _MATCHERS[next(iter(_MATCHERS))]
        return matcher

    def scan(self, text: str) -> dict[str, list[Span]]:
        """Spans of the non-empty, non-overlapping matches of each id that matched."""
        if self._prefilter is not None:
            return self._prefilter.scan(text)
        return {entry.id: spans for entry in self._entries if (spans := _finditer(entry.regex, text))}

    def quiet(self, *texts: str | bytes | memoryview) -> bool:
        """Whether not even a candidate of any entry is in any of ``texts`` (then `scan`
        finds nothing in them); a text may be given as its bytes when it is ASCII (they are
        then read as they are, not encoded): one pass of the engine over the texts joined by line breaks,
        stopping at the first candidate, so its time follows their length whatever they
        hold. The translations keep no anchor or other assertion, so a candidate within one
        text is one within the joined text; one across a join only answers False. False
        whenever some entry is matched by ``re`` alone (the python backend, or an
        expression the engine refused)."""
        texts = tuple(text for text in texts if text)
        if not self._entries or not texts:
            return True
        return self._prefilter is not None and self._prefilter.quiet(texts)


# Matchers by (backend, entries): an apply that leaves DLP alone reuses the running one.
_MATCHERS: dict[tuple, Matcher] = {}
_MATCHERS_KEPT = 4
_MATCHERS_LOCK = threading.Lock()


def _compile_entry(entry_id: str, kind: str, text: str) -> _Entry:
    if kind not in KINDS:
        raise ValueError(f"pattern {entry_id!r}: unknown kind {kind!r}; use regex or phrase")
    try:
        _regex(kind, text)
        return _Entry(entry_id, kind, text)
    except (re.error, ValueError) as error:
        raise ValueError(f"pattern {entry_id!r}: invalid {kind}: {error}") from error


@functools.lru_cache(maxsize=16384)
def _regex(kind: str, text: str) -> re.Pattern[str]:
    """Compiled once per text (``re``'s own cache holds 512): one changed rule among 500
    recompiles one pattern."""
    return re.compile(phrase_regex(text) if kind == "phrase" else text)


def _choose_backend(requested: str | None) -> str:
    choice = requested or os.environ.get(ENV_BACKEND) or ("hyperscan" if hyperscan else "python")
    if choice not in BACKENDS:
        raise ValueError(f"unknown DLP backend {choice!r}; use one of {', '.join(BACKENDS)}")
    if choice == "hyperscan" and hyperscan is None:
        raise RuntimeError("the hyperscan backend was requested but hyperscan is not installed")
    return choice


def _finditer(regex: re.Pattern[str], text: str) -> list[Span]:
    return [match.span() for match in regex.finditer(text) if match.end() > match.start()]


# --- the hyperscan prefilter -----------------------------------------------------------

# Text goes to hyperscan as one byte per character: Latin-1, and "?" for every character
# beyond it (see _hs_class). Offsets then need no conversion and classes stay small.
_PLACEHOLDER = ord("?")


_Route = tuple[tuple[int, ...], ...]  # per expression id of a database: the entries it stands for


class _Prefilter:
    """Hyperscan databases over the reversed translations (hsdb.py: compiled once per set
    of expressions, reused across swaps and restarts), plus the confirmation step."""

    def __init__(
        self, entries: tuple[_Entry, ...], translations: list[str | None], cache_dir: Path | None = None
    ) -> None:
        self._entries = entries
        by_key: dict[str, list[int]] = {}
        for index, expression in enumerate(translations):
            if expression is not None:
                by_key.setdefault(expression, []).append(index)
        self._by_key = {key: tuple(indexes) for key, indexes in by_key.items()}
        layers, refused = hsdb.layers_for(tuple(sorted(by_key)), cache_dir, self._use_full)
        accepted = {index for key, indexes in by_key.items() if key not in refused for index in indexes}
        self._fallback = frozenset(range(len(entries))) - accepted
        self.python_only = tuple(entry.id for index, entry in enumerate(entries) if index in self._fallback)
        self._layers = self._routed(layers)

    def _routed(self, layers) -> tuple[tuple[hsdb.Layer, _Route, Callable], ...]:
        """Each database with the entries each of its ids stands for (none: a rule since
        removed), and `quiet`'s match handler for it, made once."""
        routed = [(layer, tuple(self._by_key.get(key, ()) for key in layer.keys)) for layer in layers]
        return tuple((layer, route, _stopper(route)) for layer, route in routed)

    def _use_full(self, layer: hsdb.Layer) -> None:
        """The full database replaces base + delta: one reference, read once per scan."""
        self._layers = self._routed((layer,))

    def scan(self, text: str) -> dict[str, list[Span]]:
        """Exact results for ``text``: candidates from hyperscan, confirmed by ``re``."""
        starts: dict[int, set[int]] = {}
        layers = self._layers
        if layers:
            data = _reversed_latin1(text)
            for layer, route, _ in layers:
                layer.database.scan(
                    data, match_event_handler=_collector(starts, len(text), route), scratch=layer.scratch()
                )
        found = {}
        for index in sorted(starts.keys() | self._fallback):
            entry = self._entries[index]
            if index in starts:
                spans = _confirm(entry.regex, text, starts[index])
            else:
                spans = _finditer(entry.regex, text)
            if spans:
                found[entry.id] = spans
        return found

    def quiet(self, texts: tuple[str, ...]) -> bool:
        if self._fallback:
            return False
        data = _reversed_latin1(*texts)
        for layer, _, stopper in self._layers:
            try:  # a report for an expression that stands for no entry (a rule since removed) goes on
                layer.database.scan(data, match_event_handler=stopper, scratch=layer.scratch())
            except hyperscan.ScanTerminated:
                return False
        return True


def _stopper(route: _Route):
    """A match handler that stops the scan at the first report of an expression in use."""

    def on_match(key: int, start: int, end: int, flags: int, context: object) -> bool:
        return bool(route[key])

    return on_match


_ENCODE_STEP = 1 << 20


def _reversed_latin1(*texts: str | bytes | memoryview) -> bytearray:
    """The texts as hyperscan reads them, joined by line breaks and reversed: one byte per
    character (Latin-1, "?" for the others), encoded a MiB at a time into one buffer and
    reversed in place, so a large text costs one copy (encoding it whole, then copying to
    reverse it, cost two). A text given as bytes (ASCII: the caller knows) is copied as is."""
    data = bytearray(sum(map(len, texts)) + len(texts) - 1)
    at = 0
    for text in texts:
        if at:
            data[at] = 0x0A
            at += 1
        if not isinstance(text, str):
            data[at : at + len(text)] = text
            at += len(text)
            continue
        for step in range(0, len(text), _ENCODE_STEP):
            piece = text[step : step + _ENCODE_STEP].encode("latin-1", errors="replace")
            data[at : at + len(piece)] = piece
            at += len(piece)
    data.reverse()
    return data


def _collector(starts: dict[int, set[int]], size: int, route: _Route):
    """A match handler filing each report under the entries its expression stands for; an
    end in the reversed text is a start in the text."""

    def on_match(key: int, start: int, end: int, flags: int, context: object) -> None:
        for index in route[key]:
            positions = starts.get(index)
            if positions is None:
                positions = starts[index] = set()
            positions.add(size - end)

    return on_match


def _usable(expression: str | None) -> str | None:
    """The translation, or None when the entry must run on ``re`` alone."""
    return None if expression is None or _matches_empty(expression) else expression


@functools.lru_cache(maxsize=16384)
def _matches_empty(expression: str) -> bool:
    """Hyperscan refuses an expression that matches the empty string; ours are in the
    subset of syntax Python's ``re`` reads the same way, so ``re`` answers without a compile."""
    try:
        return re.fullmatch(expression.encode(), b"") is not None
    except re.error:
        return False  # let the engine judge it (a refusal is found by bisection)


def _database(expressions: dict[int, str]):
    """A database of ``expressions`` reporting their keys as ids (tests probe the engine with it)."""
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[expression.encode() for expression in expressions.values()],
        ids=list(expressions),
        elements=len(expressions),
        flags=[0] * len(expressions),
    )
    return database


def _confirm(regex: re.Pattern[str], text: str, starts: set[int]) -> list[Span]:
    """Replay ``re.finditer`` at the candidate starts only.

    Every ``re`` match starts at a candidate, so the first candidate at or after the end of
    the previous match where ``re.match`` succeeds is where ``finditer`` finds the next one.
    """
    found: list[Span] = []
    position = 0
    for start in sorted(starts):
        if start < position:
            continue
        match = regex.match(text, start)
        if match is None:
            continue
        if match.end() == match.start():  # hyperscan ruled this out; never guess
            return _finditer(regex, text)
        found.append(match.span())
        position = match.end()
    return found


# --- translation: a Python regex into a hyperscan superset -----------------------------

_CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
}
_CLASS_FLAGS = re.IGNORECASE | re.DOTALL | re.ASCII
_ZERO_WIDTH = (sre.AT, sre.ASSERT, sre.ASSERT_NOT)
_REPEATS = (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT)


class _Untranslatable(Exception):
    """The entry has no useful regular superset; it is scanned with ``re`` alone."""


@functools.lru_cache(maxsize=16384)
def _translate(regex: re.Pattern[str], reverse: bool = True) -> str | None:
    """A hyperscan expression for a superset of ``regex``, read backwards, or None.

    With ``reverse`` the expression matches the reversed text of every ``regex`` match, so
    scanning the reversed text reports where matches can start.
    """
    try:
        parsed = sre_parse.parse(regex.pattern, regex.flags)
        return _emit(parsed.data, parsed.state.flags, reverse)
    except Exception:  # a private parser and a best-effort translation: re is always right
        return None


def _emit(items, flags: int, reverse: bool) -> str:
    out = []
    for op, arg in items:
        if op is sre.LITERAL and not flags & re.IGNORECASE:
            out.append(_hs_byte(min(arg, 0x100)))
        elif op in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
            out.append(_hs_class(_char_ranges(_class_source(op, arg), flags & _CLASS_FLAGS)))
        elif op is sre.BRANCH:
            branches = [_emit(branch, flags, reverse) for branch in arg[1]]
            optional = "?" if "" in branches else ""  # (?:|x) is spelled (?:x)?
            out.append("(?:" + "|".join(branch for branch in branches if branch) + ")" + optional)
        elif op is sre.SUBPATTERN:
            _group, add_flags, del_flags, body = arg
            out.append(_group_of(_emit(body, (flags | add_flags) & ~del_flags, reverse)))
        elif op is sre.ATOMIC_GROUP:  # atomic matches are a subset of the plain group's
            out.append(_group_of(_emit(arg, flags, reverse)))
        elif op in _REPEATS:  # laziness and possessiveness change which match, not the language
            low, high, body = arg
            upper = "" if high is sre.MAXREPEAT else str(high)
            if inner := _emit(body, flags, reverse):
                out.append(f"(?:{inner}){{{low},{upper}}}")
        elif op in _ZERO_WIDTH:
            continue  # dropping an assertion only admits more candidates
        else:  # back-references, conditionals: no regular superset worth having
            raise _Untranslatable(str(op))
    return "".join(reversed(out) if reverse else out)


def _group_of(body: str) -> str:
    return f"(?:{body})" if body else ""


def _hs_byte(code: int) -> str:
    """The byte a character becomes in the scanned text; beyond Latin-1, the placeholder."""
    return f"\\x{code if code < 0x100 else _PLACEHOLDER:02x}"


def _class_source(op, arg) -> str:
    """A one-character ``re`` pattern equivalent to a parsed class node."""
    if op is sre.LITERAL:
        return _py_char(arg)
    if op is sre.NOT_LITERAL:
        return f"[^{_py_char(arg)}]"
    if op is sre.ANY:
        return "."
    pieces = []
    for item, value in arg:
        if item is sre.NEGATE:
            pieces.append("^")
        elif item is sre.LITERAL:
            pieces.append(_py_char(value))
        elif item is sre.RANGE:
            pieces.append(f"{_py_char(value[0])}-{_py_char(value[1])}")
        elif item is sre.CATEGORY and value in _CATEGORIES:
            pieces.append(_CATEGORIES[value])
        else:
            raise _Untranslatable(str(item))
    return "[" + "".join(pieces) + "]"


def _py_char(code: int) -> str:
    return f"\\U{code:08x}"


@functools.cache
def _every_character() -> str:
    """All code points except surrogates, in order: the universe classes are measured on."""
    return "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, 0x110000)))


@functools.lru_cache(maxsize=4096)
def _char_ranges(source: str, flags: int) -> tuple[Span, ...]:
    """The code point ranges ``re`` itself matches with a one-character pattern."""

    def code(index: int) -> int:
        return index if index < 0xD800 else index + 0x800

    regex = re.compile(f"(?:{source})+", flags)
    return tuple((code(m.start()), code(m.end() - 1)) for m in regex.finditer(_every_character()))


def _hs_class(ranges: tuple[Span, ...]) -> str:
    """A byte class admitting the bytes of every character in ``ranges`` (a superset)."""
    if not ranges:
        raise _Untranslatable("a class that matches nothing")
    narrow = [(low, min(high, 0xFF)) for low, high in ranges if low <= 0xFF]
    if ranges[-1][1] > 0xFF:
        narrow.append((_PLACEHOLDER, _PLACEHOLDER))
    if len(narrow) == 1 and narrow[0][0] == narrow[0][1]:
        return _hs_byte(narrow[0][0])
    body = "".join(_hs_byte(low) if low == high else f"{_hs_byte(low)}-{_hs_byte(high)}" for low, high in narrow)
    return f"[{body}]"
