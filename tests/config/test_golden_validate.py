"""The broken-config corpus: each case's diagnostics must equal its expected.txt exactly.

Each case is `tests/golden/validate/<case>/` with `relay.yaml` (or a directory `relay.d/`)
and `expected.txt`. Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest
tests/config/test_golden_validate.py`, then read the diff: it is the review.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config.diagnostics import render_text
from engine.config.load import load_config

CASES = Path(__file__).resolve().parent.parent / "golden" / "validate"
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def _input(case: Path) -> str:
    return "relay.d" if (case / "relay.d").is_dir() else "relay.yaml"


@pytest.mark.parametrize("name", NAMES)
def test_broken_config(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    case = CASES / name
    monkeypatch.chdir(case)
    monkeypatch.delenv("SEAL_GATEWAY_PASSWORD", raising=False)
    result = load_config(_input(case))
    assert not result.ok, "a broken config must not validate"
    assert result.config is None, "a broken config must not yield a config"
    actual = render_text(result.diagnostics) + "\n"
    expected_file = case / "expected.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        expected_file.write_text(actual, encoding="utf-8")
    assert actual == expected_file.read_text(encoding="utf-8")


def test_corpus_is_large_enough() -> None:
    assert len(NAMES) >= 40
