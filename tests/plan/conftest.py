"""Helpers for the plan tests: load a golden case's configs and plan them, the same way
`sealrelay plan after.yaml --against before.yaml` does (with a fixed clock)."""

from __future__ import annotations

from pathlib import Path

from engine.config.load import load_config
from engine.plan.build import make_plan
from engine.plan.change import Plan
from tests.conftest import GOLDEN

CASES = GOLDEN / "plan"
CREATED_AT = "2026-01-01T00:00:00Z"


def load(path: Path):
    """A config that must be valid (files it refers to are not checked: goldens have none)."""
    result = load_config(path, check_files=False)
    assert result.ok, f"{path} must be valid: {[d.message for d in result.diagnostics]}"
    return result.config


def plan_case(case: Path) -> Plan:
    before = case / "before.yaml"
    applied = case / "applied.yaml"
    return make_plan(
        load(case / "after.yaml"),
        load(before) if before.exists() else None,
        last_applied=load(applied) if applied.exists() else None,
        created_at=CREATED_AT,
        desired_label="after.yaml",
        base_label="before.yaml" if before.exists() else "",
    )
