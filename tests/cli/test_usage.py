"""A usage mistake exits 64 (EX_USAGE), not click's 2: exit 2 means "changes" to plan and
simulate, and a typo in CI must not read as a plan with changes. With --detailed-exitcode
every error is 1 (Terraform's contract)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "last_line"),
    [
        (["plan", "--detailed-exitcod"], "Error: No such option: --detailed-exitcod"),
        (["simulate", "--bogus"], "Error: No such option: --bogus"),
        (["nosuch"], "Error: No such command 'nosuch'."),
        (["plan", "--detailed-exitcode", "--bogus"], "Error: No such option: --bogus"),
    ],
)
def test_usage_errors_exit_64_or_1_with_detailed_exitcode(args: list[str], last_line: str) -> None:
    done = subprocess.run([sys.executable, "-m", "engine.cli.app", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == (1 if "--detailed-exitcode" in args else 64)
    assert done.stderr.strip().splitlines()[-1].startswith(last_line), done.stderr
