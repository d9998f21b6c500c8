"""The plan corpus: each case's plan, in every format, must equal its expected files.

Each case is `tests/golden/plan/<case>/` with `before.yaml` (the current config; absent
for a first config), `after.yaml` (the desired one), optionally `applied.yaml` (what the
last apply set, for drift), and `expected.txt`, `expected.md`, `expected.json`.
Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/plan/test_golden.py`,
then read the diff: it is the review. The guard's verdicts are also pinned in
`test_guard.py`, so a regenerated golden cannot silently flip one.
"""

from __future__ import annotations

import os

import pytest

from engine.plan.render import render
from tests.plan.conftest import CASES, plan_case

NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())
FORMATS = [("text", "expected.txt"), ("markdown", "expected.md"), ("json", "expected.json")]


@pytest.mark.parametrize("fmt,file", FORMATS)
@pytest.mark.parametrize("name", NAMES)
def test_golden_plan(name: str, fmt: str, file: str) -> None:
    actual = render(plan_case(CASES / name), fmt)
    expected = CASES / name / file
    if os.environ.get("UPDATE_GOLDEN"):
        expected.write_text(actual, encoding="utf-8")
    assert actual == expected.read_text(encoding="utf-8")


def test_corpus_covers_every_kind() -> None:
    assert len(NAMES) >= 50
    assert sum(n.startswith("loosen-") for n in NAMES) >= 35
