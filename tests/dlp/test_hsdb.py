"""Compile once (hsdb.py): the same DLP patterns are not compiled again across swaps, a
restart loads the database from disk, one changed rule is served by a small delta at
once, and results are exactly those of the Python backend whichever way the database came.
"""

from __future__ import annotations

import threading
import time

import pytest

from engine.relay.dlp import hsdb, matcher
from engine.relay.dlp.matcher import Matcher

pytestmark = pytest.mark.skipif(not matcher.hyperscan_available(), reason="hyperscan is not installed")

TEXT = "Ref REF-0031234567, project 3-1 and codename 4 2; CODENAME 4  2 again; brand new words x" * 3


def entries(rules: int, tag: str = "", extra: tuple = ()) -> list[tuple[str, str, str]]:
    found = []
    for n in range(rules):
        found += [
            (f"c{n}", "regex", rf"\bREF-{n:03d}\d{{6}}\b{tag}"),
            (f"c{n}.0", "phrase", f"project {n // 10}-{n % 10}"),
            (f"c{n}.1", "phrase", f"codename {n // 10} {n % 10}"),
        ]
    return found + list(extra)


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Each test starts with nothing compiled in this process."""
    monkeypatch.setattr(hsdb, "_MEMORY", type(hsdb._MEMORY)())
    monkeypatch.setattr(hsdb, "_REFUSED", set())
    monkeypatch.setattr(matcher, "_MATCHERS", {})


def counting(monkeypatch) -> list[int]:
    sizes: list[int] = []
    real = hsdb.compile_database

    def compile_database(expressions):
        sizes.append(len(expressions))
        return real(expressions)

    monkeypatch.setattr(hsdb, "compile_database", compile_database)
    return sizes


def exact(compiled: Matcher, items) -> None:
    assert compiled.scan(TEXT) == Matcher.compile(items, backend="python").scan(TEXT)


def test_the_same_entries_are_not_compiled_twice(monkeypatch, tmp_path):
    sizes = counting(monkeypatch)
    items = entries(50)
    first = Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path)
    assert Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path) is first
    assert sizes == [150]
    exact(first, items)


def test_a_restart_loads_the_database_from_disk(monkeypatch, tmp_path):
    items = entries(50)
    Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path)
    (stored,) = tmp_path.glob("*.hsdb")
    assert {path.stat().st_mode & 0o777 for path in tmp_path.iterdir()} == {0o600}
    monkeypatch.setattr(hsdb, "_MEMORY", type(hsdb._MEMORY)())  # a new process
    monkeypatch.setattr(matcher, "_MATCHERS", {})
    sizes = counting(monkeypatch)
    monkeypatch.setattr(matcher, "_translate", lambda regex: pytest.fail("translated again"))
    exact(Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path), items)
    assert sizes == []


def test_a_damaged_database_file_is_compiled_over(monkeypatch, tmp_path):
    items = entries(20)
    Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path)
    (stored,) = tmp_path.glob("*.hsdb")
    data = bytearray(stored.read_bytes())
    data[-100] ^= 0xFF
    stored.write_bytes(bytes(data))
    monkeypatch.setattr(hsdb, "_MEMORY", type(hsdb._MEMORY)())
    monkeypatch.setattr(matcher, "_MATCHERS", {})
    sizes = counting(monkeypatch)
    exact(Matcher.compile(items, backend="hyperscan", cache_dir=tmp_path), items)
    assert sizes == [60]


def test_one_changed_rule_is_served_by_a_delta_then_by_the_full_database(monkeypatch, tmp_path):
    before = entries(50)
    Matcher.compile(before, backend="hyperscan", cache_dir=tmp_path)
    sizes = counting(monkeypatch)
    after = [entry for entry in before if entry[0] != "c31.0"] + [("c99", "phrase", "brand new words")]
    changed = Matcher.compile(after, backend="hyperscan", cache_dir=tmp_path)
    assert sizes[0] == 1  # the delta: the one new expression, compiled before the swap
    exact(changed, after)  # base + delta: the removed phrase's reports are dropped
    deadline = time.monotonic() + 60
    while len(changed._prefilter._layers) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(changed._prefilter._layers) == 1  # the full database replaced base + delta
    exact(changed, after)
    assert len(list(tmp_path.glob("*.hsdb"))) == 2


def test_a_restart_whose_database_was_never_stored_starts_on_the_nearest_stored_one(monkeypatch, tmp_path, caplog):
    """A relay stopped before its last change's full compile finished: the restart serves
    the stored database of the change before plus a delta, and compiles the full one behind."""
    before = entries(50)
    Matcher.compile(before, backend="hyperscan", cache_dir=tmp_path)
    farther = [(f"f{n}", "phrase", f"far phrase {n}") for n in range(hsdb.DELTA_MAX + 1)]
    Matcher.compile(farther, backend="hyperscan", cache_dir=tmp_path)  # stored too, and a full compile of its own
    monkeypatch.setattr(hsdb, "_MEMORY", type(hsdb._MEMORY)())  # a new process
    monkeypatch.setattr(matcher, "_MATCHERS", {})
    sizes = counting(monkeypatch)
    after = before + [("c99", "phrase", "brand new words")]
    caplog.set_level("INFO", logger="sealrelay.dlp")
    restarted = Matcher.compile(after, backend="hyperscan", cache_dir=tmp_path)
    assert sizes[0] == 1  # only the delta before serving
    assert "loaded from disk as the base of a delta (150 of 151 expressions)" in caplog.text
    exact(restarted, after)
    deadline = time.monotonic() + 60
    while len(restarted._prefilter._layers) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sizes[1:] == [151]  # the full database, in the background
    exact(restarted, after)


def test_no_stored_database_near_enough_is_a_full_compile(monkeypatch, tmp_path):
    Matcher.compile(entries(30), backend="hyperscan", cache_dir=tmp_path)
    monkeypatch.setattr(hsdb, "_MEMORY", type(hsdb._MEMORY)())
    monkeypatch.setattr(matcher, "_MATCHERS", {})
    sizes = counting(monkeypatch)
    far = entries(30) + [(f"n{n}", "phrase", f"another phrase {n}") for n in range(hsdb.DELTA_MAX + 1)]
    exact(Matcher.compile(far, backend="hyperscan", cache_dir=tmp_path), far)
    assert sizes == [90 + hsdb.DELTA_MAX + 1]


def test_a_new_rule_is_compiled_alone(monkeypatch, tmp_path):
    before = entries(40)
    Matcher.compile(before, backend="hyperscan")
    sizes = counting(monkeypatch)
    after = before + [("new", "regex", r"\bcodename\s+4\b")]
    exact(Matcher.compile(after, backend="hyperscan"), after)
    assert sizes[0] == 1


def test_refused_expressions_are_found_without_compiling_one_by_one(monkeypatch):
    sizes: list[int] = []
    real = hsdb.compile_database

    def picky(expressions):  # an engine that refuses anything with a "Q", say for size
        if any("\\x51" in expression for expression in expressions):
            raise hsdb.hyperscan.error("Pattern is too large")
        return real(expressions)

    here = threading.current_thread()

    def counted(expressions):  # only this test's compiles: an earlier test's background build may still run
        if threading.current_thread() is here:
            sizes.append(len(expressions))
        return picky(expressions)

    monkeypatch.setattr(hsdb, "compile_database", counted)
    items = [(f"p{n}", "phrase", f"word{n}") for n in range(64)] + [("q", "regex", "xQy")]
    compiled = Matcher.compile(items, backend="hyperscan")
    assert compiled.python_only == ("q",)
    assert len(sizes) <= 16  # bisection: two per halving, not one per expression
    assert compiled.scan("a word7 xQy") == {"p7": [(2, 7)], "q": [(8, 11)]}


def test_an_expression_matching_the_empty_string_goes_to_re_without_a_compile(monkeypatch):
    sizes = counting(monkeypatch)
    compiled = Matcher.compile([("a", "regex", r"\bab\b"), ("opt", "regex", r"(?:x|\b)y?")], backend="hyperscan")
    assert compiled.python_only == ("opt",)
    assert sizes == [1]
