"""The command line as an admin runs it: real processes, real exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "validate"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_validate_valid_example_exits_0() -> None:
    proc = run("validate", "examples/minimal.yaml")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "examples/minimal.yaml: valid"


def test_validate_broken_config_exits_65_with_positions() -> None:
    case = GOLDEN / "many-errors-at-once"
    proc = run("validate", "relay.yaml", cwd=case)
    assert proc.returncode == 65
    assert proc.stderr == (case / "expected.txt").read_text(encoding="utf-8")
    assert proc.stdout.strip() == "relay.yaml: invalid (4 errors)"


def test_validate_json_format_for_machines() -> None:
    proc = run("validate", "relay.yaml", "--format", "json", cwd=GOLDEN / "typo-enum-method")
    assert proc.returncode == 65
    doc = json.loads(proc.stdout)
    assert doc["valid"] is False and doc["errors"] == 1
    [diag] = doc["diagnostics"]
    assert (diag["file"], diag["line"], diag["column"], diag["path"]) == ("relay.yaml", 8, 11, "encryption.method")
    assert diag["hint"] == "did you mean `tls`?"


def test_schema_export_check_detects_drift(tmp_path: Path) -> None:
    assert run("schema", "export", "--check").returncode == 0
    shutil.copy(ROOT / "schemas" / "relay.schema.json", tmp_path / "relay.schema.json")
    with open(tmp_path / "relay.schema.json", "a", encoding="utf-8") as f:
        f.write(" ")
    proc = run("schema", "export", "--check", "--out", str(tmp_path))
    assert proc.returncode == 1 and "out of date" in proc.stderr
    assert run("schema", "export", "--out", str(tmp_path)).returncode == 0
    assert run("schema", "export", "--check", "--out", str(tmp_path)).returncode == 0


def test_every_command_has_help_with_an_example() -> None:
    for command in (["validate"], ["schema", "export"], ["migrate"]):
        proc = run(*command, "--help")
        assert proc.returncode == 0 and "Example:" in proc.stdout, command
