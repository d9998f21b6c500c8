"""`simulate`, `explain` and the config's `tests:` block, as an admin runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_simulate_json_has_one_object_per_message() -> None:
    proc = run("simulate", "examples/full.yaml", "--messages", "examples/messages", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = {o["message"]: o for o in json.loads(proc.stdout)}
    assert set(got) == {"card.eml", "newsletter.eml"}
    card = got["card.eml"]
    assert (card["direction"], card["action"], card["method"], card["policies"]) == (
        "outbound",
        "encrypt",
        "tls",
        ["payment-cards"],
    )
    assert card["route"] == "partner-smarthost" and card["tls"].startswith("secure")
    assert all("4111 1111 1111 1111" not in json.dumps(r) for r in card["rules"])  # evidence is redacted
    assert got["newsletter.eml"]["action"] == "permit" and got["newsletter.eml"]["policies"] == []


def test_simulate_against_shows_the_impact_of_a_change(tmp_path: Path) -> None:
    changed = tmp_path / "full.yaml"
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    text = changed.read_text().replace(
        "      email: encrypt                   # encrypt | block | quarantine | permit", "      email: block"
    )
    changed.write_text(text)
    proc = run("simulate", str(changed), "--messages", "examples/messages", "--against", "examples/full.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "1 of 2 sample message(s) change decision" in proc.stdout
    assert (
        "card.eml" in proc.stdout and "action: encrypt -> block" in proc.stdout and "newsletter.eml" not in proc.stdout
    )
    as_json = json.loads(
        run(
            "simulate",
            str(changed),
            "--messages",
            "examples/messages",
            "--against",
            "examples/full.yaml",
            "--format",
            "json",
        ).stdout
    )
    assert [(d["message"], d["before"]["action"], d["after"]["action"]) for d in as_json] == [
        ("card.eml", "encrypt", "block")
    ]


def test_explain_names_the_rule_and_its_place() -> None:
    proc = run("explain", "examples/full.yaml", "examples/messages/card.eml")
    assert proc.returncode == 0, proc.stderr
    assert "payment-cards/cards (high) -> plan encrypt-sensitive: encrypt  [examples/full.yaml:" in proc.stdout
    assert "4. action: encrypt" in proc.stdout and "6. route: partner-smarthost" in proc.stdout


def test_validate_runs_the_policy_tests_and_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "full.yaml"
    assert run("validate", str(config)).returncode == 0
    config.write_text(
        config.read_text().replace(
            "expect: {direction: outbound, action: permit, policies: []}",
            "expect: {direction: outbound, action: encrypt, policies: []}",
        )
    )
    proc = run("validate", str(config))
    assert proc.returncode == 1
    assert "tests[1].expect.action: test `newsletter passes`: expected action encrypt, got permit" in proc.stderr
    assert "full.yaml:" in proc.stderr
