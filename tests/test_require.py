"""`require`: a missing tool skips a test on a laptop and fails it under CI (CI=true)."""

from __future__ import annotations

import pytest

from tests.conftest import require


def test_a_met_requirement_lets_the_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    require("/usr/bin/swaks", "swaks is installed by scripts/test")  # returns: nothing raised


@pytest.mark.parametrize("ci", [None, "false", "1"])
def test_outside_ci_a_missing_requirement_skips(monkeypatch: pytest.MonkeyPatch, ci: str | None) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception) as skipped:
        require(None, "swaks is installed by scripts/test")
    assert skipped.value.msg == "swaks is installed by scripts/test"


def test_under_ci_a_missing_requirement_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception) as failed:
        require(False, "no IPv6 loopback here")
    assert failed.value.msg == "no IPv6 loopback here (CI=true: this test must run in CI)"
