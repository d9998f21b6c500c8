"""Compiled hyperscan databases: built once per set of expressions, reused across swaps and restarts.

Compiling the database is most of what a DLP config costs to provision (a policy of 500
rules, 1,500 expressions: 5–8 s), and an apply that leaves DLP alone must not pay it again.
``layers_for(keys)`` returns the database(s) for a sorted set of translated expressions:

1. **memory**: a database compiled (or loaded) for exactly these expressions, by digest;
2. **disk**: ``<cache_dir>/<digest>.hsdb``, written after every full compile, so a restart
   loads instead of compiling (``hyperscan.dumpb``/``loadb``; the file carries its own
   expressions and a SHA-256 of its bytes, and is ignored unless both check out);
3. **delta**: a database that already holds all but at most ``DELTA_MAX`` of them (in memory,
   else on disk: a relay stopped before its last change's full compile finished restarts on
   the stored database nearest to it) serves with a small database of the rest beside it
   (one rule changed: milliseconds), while one thread compiles the full database and
   ``on_full`` switches to it when ready;
4. otherwise a full compile, here and now.

Expressions the engine refuses are reported back (the caller runs them on ``re``). Our
hyperscan binding reports *that* a multi-compile failed but not *which* expression (the
index is in ``hs_compile_error_t``; ``hs_expression_info`` is not exported), so the one
refusal we can predict, matching the empty string, is checked by the caller before
compiling, and any other refusal is found by bisection: a few compiles, not one per
expression.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

try:
    import hyperscan
except ImportError:  # pragma: no cover - the Python backend serves
    hyperscan = None

log = logging.getLogger("sealrelay.dlp")

FORMAT = b"sealrelay-hsdb 1\n"
TRANSLATION = "1"  # bump when matcher._translate changes what it emits
DELTA_MAX = 64  # expressions a delta database may hold before a full compile is cheaper to serve
MEMORY = 8  # databases kept in memory (each a few MB at most)
ON_DISK = 4  # database files kept in cache_dir


@dataclass(eq=False)
class Layer:
    """One compiled database; ``keys[i]`` is the expression reported as id ``i``."""

    database: object
    keys: tuple[str, ...]
    _local: threading.local = field(default_factory=threading.local, repr=False)

    def scratch(self):
        """Hyperscan scratch space is per thread; a shared one fails under concurrency."""
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self.database)
        return scratch


_LOCK = threading.Lock()
_MEMORY: OrderedDict[str, Layer] = OrderedDict()
_REFUSED: set[str] = set()  # expressions the engine refused, so they are not tried again


def digest(keys: Sequence[str]) -> str:
    """What a database file is named after: the engine, our translation, the expressions."""
    text = json.dumps([hyperscan.__version__, TRANSLATION, list(keys)])
    return hashlib.sha256(text.encode()).hexdigest()


def layers_for(
    keys: tuple[str, ...], cache_dir: Path | None, on_full: Callable[[Layer], None]
) -> tuple[tuple[Layer, ...], frozenset[str]]:
    """The databases that together report every one of ``keys`` (sorted, unique), and the
    keys the engine refused. ``on_full`` receives the full database when a delta served."""
    with _LOCK:
        refused = frozenset(key for key in keys if key in _REFUSED)
    layers, more = _layers(tuple(key for key in keys if key not in refused), cache_dir, on_full)
    if more:
        with _LOCK:
            if len(_REFUSED) > 100_000:
                _REFUSED.clear()
            _REFUSED.update(more)
    return layers, refused | more


def _layers(keys, cache_dir, on_full) -> tuple[tuple[Layer, ...], frozenset[str]]:
    if not keys:
        return (), frozenset()
    name = digest(keys)
    with _LOCK:
        found = _MEMORY.get(name)
        if found is not None:
            _MEMORY.move_to_end(name)
            return (found,), frozenset()
    loaded = _load(cache_dir, name, keys)
    if loaded is not None:
        _remember(name, loaded)
        return (loaded,), frozenset()
    base = _best_base(keys) or _best_stored(keys, cache_dir)
    if base is not None:
        missing = tuple(sorted(set(keys) - set(base.keys)))
        delta, refused = _compile(missing)
        accepted = tuple(key for key in keys if key not in refused)
        _build_later(accepted, cache_dir, on_full)
        return tuple(layer for layer in (base, delta) if layer is not None), refused
    started = time.perf_counter()
    layer, refused = _compile(keys)
    log.info("DLP database of %d expressions compiled in %.2f s", len(keys), time.perf_counter() - started)
    if layer is not None:
        _remember(digest(layer.keys), layer)
        _store(cache_dir, digest(layer.keys), layer)
    return (() if layer is None else (layer,)), refused


def _best_base(keys: tuple[str, ...]) -> Layer | None:
    """The database in memory lacking the fewest of ``keys``, if it lacks at most DELTA_MAX."""
    wanted = set(keys)
    with _LOCK:
        candidates = list(_MEMORY.values())
    best, lacking = None, DELTA_MAX + 1
    for layer in candidates:
        missing = len(wanted - set(layer.keys))
        if missing < lacking:
            best, lacking = layer, missing
    return best


def _best_stored(keys: tuple[str, ...], cache_dir: Path | None) -> Layer | None:
    """The stored database lacking the fewest of ``keys``, if it lacks at most DELTA_MAX
    (loaded and remembered); damaged or foreign files are passed over."""
    if cache_dir is None:
        return None
    wanted = set(keys)
    best, lacking = None, DELTA_MAX + 1
    for path in cache_dir.glob("*.hsdb"):
        try:
            stored, blob = _read(path)
        except Exception:  # _load says so when it is asked for this very file
            continue
        missing = len(wanted - set(stored))
        if missing < lacking:
            best, lacking = (stored, blob), missing
    if best is None:
        return None
    try:
        layer = Layer(hyperscan.loadb(best[1], hyperscan.HS_MODE_BLOCK), best[0])
    except Exception as error:
        log.warning("ignoring a stored DLP database: %s", error)
        return None
    log.info("DLP database loaded from disk as the base of a delta (%d of %d expressions)", len(best[0]), len(keys))
    _remember(digest(layer.keys), layer)
    return layer


def _build_later(keys: tuple[str, ...], cache_dir: Path | None, on_full: Callable[[Layer], None]) -> None:
    """Have the full database compiled in the background (the binding releases the GIL
    while it compiles): remembered, stored, and handed to ``on_full``. One compile at a
    time, and only the newest request waits: a burst of applies compiles twice, not N times."""
    global _PENDING, _WORKER
    log.info("DLP database queued for a background compile (%d expressions)", len(keys))
    with _LOCK:
        _PENDING = (keys, cache_dir, on_full)
        if _WORKER is None or not _WORKER.is_alive():
            _WORKER = threading.Thread(target=_work, name="dlp-compile", daemon=True)
            _WORKER.start()


_PENDING: tuple | None = None
_WORKER: threading.Thread | None = None


def _work() -> None:
    global _PENDING, _WORKER
    while True:
        with _LOCK:
            if _PENDING is None:
                _WORKER = None
                log.info("no DLP database waits for a background compile")
                return
            (keys, cache_dir, on_full), _PENDING = _PENDING, None
            name = digest(keys)
            layer = _MEMORY.get(name)
        try:
            if layer is None:
                log.info("compiling the DLP database in the background (%d expressions)", len(keys))
                started = time.perf_counter()
                layer, _ = _compile(keys)
                log.info("DLP database compiled in the background in %.2f s", time.perf_counter() - started)
                if layer is None or layer.keys != keys:
                    continue
                _remember(name, layer)
                _store(cache_dir, name, layer)
            on_full(layer)
        except Exception:  # the delta keeps serving; the next swap compiles again
            log.exception("background compile of the DLP database failed")


def _remember(name: str, layer: Layer) -> None:
    with _LOCK:
        _MEMORY[name] = layer
        _MEMORY.move_to_end(name)
        while len(_MEMORY) > MEMORY:
            _MEMORY.popitem(last=False)


def _compile(keys: tuple[str, ...]) -> tuple[Layer | None, frozenset[str]]:
    """A database of the keys the engine accepts, and the refused ones (found by bisection)."""
    if not keys:
        return None, frozenset()
    try:
        return Layer(compile_database(keys), keys), frozenset()
    except hyperscan.error:
        pass
    refused = _refused(keys)
    accepted = tuple(key for key in keys if key not in refused)
    return (Layer(compile_database(accepted), accepted) if accepted else None), refused


def _refused(keys: tuple[str, ...]) -> frozenset[str]:
    """The keys hyperscan refuses, knowing that ``keys`` together fail: halve and retry."""
    if len(keys) == 1:
        return frozenset(keys)
    middle = len(keys) // 2
    found: set[str] = set()
    for half in (keys[:middle], keys[middle:]):
        try:
            compile_database(half)
        except hyperscan.error:
            found |= _refused(half)
    return frozenset(found)


def compile_database(expressions: Sequence[str]):
    """One block-mode database; expression ``i`` reports id ``i``. No start-of-match
    tracking (it corrupts memory in the bundled engine: see matcher.py)."""
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=[expression.encode() for expression in expressions],
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=[0] * len(expressions),
    )
    return database


# --- on disk -----------------------------------------------------------------------------


def _sources_name(sources: Sequence[tuple[str, str]]) -> str:
    text = json.dumps([TRANSLATION, sys.version, [list(source) for source in sources]])
    return hashlib.sha256(text.encode()).hexdigest()


def load_translations(cache_dir: Path | None, sources: Sequence[tuple[str, str]]) -> list[str | None] | None:
    """The translations stored for exactly these (kind, text) entries, or None. Stored only
    after every entry compiled, so a restart need not parse them again (1,500 entries:
    about half a second)."""
    if cache_dir is None or not sources:
        return None
    name = _sources_name(sources)
    try:
        data = (cache_dir / f"{name}.translations").read_bytes()
    except OSError:
        return None
    try:
        checksum, _, payload = data.partition(b"\n")
        if hashlib.sha256(payload).hexdigest().encode() != checksum:
            raise ValueError("checksum mismatch")
        stored = json.loads(payload)
        if stored["sources"] != [list(source) for source in sources] or len(stored["translations"]) != len(sources):
            raise ValueError("entries differ")
        return [t if isinstance(t, str) else None for t in stored["translations"]]
    except Exception as error:
        log.warning("ignoring DLP translations file %s: %s", name, error)
        return None


def store_translations(
    cache_dir: Path | None, sources: Sequence[tuple[str, str]], translations: Sequence[str | None]
) -> None:
    if cache_dir is None or not sources:
        return
    payload = json.dumps({"sources": [list(source) for source in sources], "translations": list(translations)})
    data = payload.encode()
    _write(
        cache_dir, f"{_sources_name(sources)}.translations", hashlib.sha256(data).hexdigest().encode() + b"\n" + data
    )


def _load(cache_dir: Path | None, name: str, keys: tuple[str, ...]) -> Layer | None:
    """The stored database for ``keys``, or None when missing, damaged or not for them."""
    if cache_dir is None:
        return None
    try:
        stored, blob = _read(cache_dir / f"{name}.hsdb")
        if stored != keys:
            raise ValueError("expressions differ")
        return Layer(hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK), keys)
    except FileNotFoundError:  # not compiled here before: nothing to say
        return None
    except Exception as error:  # a damaged or foreign file is compiled over, never trusted
        log.warning("ignoring DLP database file %s: %s", name, error)
        return None


def _read(path: Path) -> tuple[tuple[str, ...], bytes]:
    """A database file's expressions and serialized database; ValueError (or OSError) when
    it is not one of ours or its bytes are not those that were written."""
    data = path.read_bytes()
    if not data.startswith(FORMAT):
        raise ValueError("not a database file")
    checksum, _, payload = data[len(FORMAT) :].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != checksum:
        raise ValueError("checksum mismatch")
    header, _, blob = payload.partition(b"\n")
    return tuple(json.loads(header)), blob


def _store(cache_dir: Path | None, name: str, layer: Layer) -> None:
    """Write ``<name>.hsdb`` (owner-only, atomically), keeping the ON_DISK newest files."""
    if cache_dir is None:
        return
    payload = json.dumps(list(layer.keys)).encode() + b"\n" + hyperscan.dumpb(layer.database)
    _write(cache_dir, f"{name}.hsdb", FORMAT + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def _write(cache_dir: Path, name: str, data: bytes) -> None:
    """Write one cache file owner-only and atomically, keeping the ON_DISK newest of its kind."""
    try:
        cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = cache_dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, cache_dir / name)
        suffix = name[name.index(".") :]
        files = sorted(cache_dir.glob(f"*{suffix}"), key=lambda path: path.stat().st_mtime_ns)
        for old in files[:-ON_DISK]:
            old.unlink(missing_ok=True)
    except OSError as error:  # a cache: the relay serves without it
        log.warning("could not store %s in %s: %s", name, cache_dir, error)
