"""`simulate`, `explain` and the config's `tests:` block, as an admin runs them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plan.gitrepo import FORMS, SCRAMBLE_ERROR, against_forms, break_base, form

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
    assert "(credit_card: high)" in proc.stdout  # each classifier match says how confident it is


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
    assert proc.returncode == 65  # EX_DATAERR, as for any invalid config
    assert "tests[1].expect.action: test `newsletter passes`: expected action encrypt, got permit" in proc.stderr
    assert "full.yaml:" in proc.stderr


# -- `--against` in every form: a file, a directory, git:REF of each ---------------------------

SIMULATED = {  # config -> what the change does to the card sample
    "full.yaml": ["  card.eml:", "    action: encrypt -> block", "    method: tls -> none"],
    "split": [
        "  card.eml:",
        "    action: encrypt -> block",
        "    method: tls -> none",
        "    tls: mandatory (>= TLSv1.2, >= 128-bit) -> opportunistic (>= TLSv1.2, >= 128-bit)",
    ],
}


def simulate(desired: Path, *args: str) -> subprocess.CompletedProcess:
    return run("simulate", str(desired), "--messages", str(desired.parent / "messages"), *args)


@pytest.mark.parametrize("name", FORMS)
def test_simulate_against_every_form_shows_the_changed_decisions_and_exits_2(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, against, label = form(name, repo, base)
    done = simulate(desired, "--against", against, "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    assert done.stdout.splitlines() == [
        f"1 of 2 sample message(s) change decision ({label} -> {desired}):",
        *SIMULATED[desired.name],
    ]
    as_json = simulate(desired, "--against", against, "--format", "json", "--detailed-exitcode")
    assert as_json.returncode == 2, as_json.stderr
    assert [
        (d["message"], d["before"]["action"], d["after"]["action"], d["before"]["method"], d["after"]["method"])
        for d in json.loads(as_json.stdout)
    ] == [("card.eml", "encrypt", "block", "tls", "none")]
    assert simulate(desired, "--against", against).returncode == 0  # changes, without --detailed-exitcode


@pytest.mark.parametrize("name", FORMS)
def test_simulate_against_every_form_without_a_change_exits_0(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, _, _ = form(name, repo, base)
    same, label = (
        ("git:block-cards", f"{desired.name} at git:block-cards") if name.startswith("git-") else (str(desired),) * 2
    )
    done = simulate(desired, "--against", same, "--detailed-exitcode")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"0 of 2 sample message(s) change decision ({label} -> {desired})."]
    as_json = simulate(desired, "--against", same, "--format", "json", "--detailed-exitcode")
    assert as_json.returncode == 0 and json.loads(as_json.stdout) == []


@pytest.mark.parametrize("name", FORMS)
def test_simulate_against_an_invalid_base_names_its_place_and_exits_1(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, _, _ = form(name, repo, base)
    against, where = break_base(name, repo, base)
    done = simulate(desired, "--against", against, "--detailed-exitcode")
    assert done.returncode == 1
    assert done.stdout == ""
    label = f"{desired.name} at {against}" if name.startswith("git-") else against
    assert done.stderr.splitlines() == [
        f"{where}: {SCRAMBLE_ERROR}",
        f"{label}: invalid config, cannot simulate against it",
    ]


def test_simulate_against_a_revision_that_does_not_exist_exits_1(tmp_path: Path) -> None:
    repo, base = against_forms(tmp_path)
    for name in ("git-file", "git-directory"):
        desired, _, _ = form(name, repo, base)
        done = simulate(desired, "--against", "git:no-such-branch", "--detailed-exitcode")
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.splitlines() == [f"git:no-such-branch: no such revision in {repo.root.resolve()}"]


def test_simulate_detailed_exitcode_needs_a_base_and_samples(tmp_path: Path) -> None:
    alone = run("simulate", "examples/full.yaml", "--messages", "examples/messages", "--detailed-exitcode")
    assert alone.returncode == 1 and alone.stdout == ""
    assert alone.stderr.splitlines() == [
        "error: --detailed-exitcode compares two configs: give the other one with --against"
    ]
    # a wrong --messages must not pass as "no decision changes"
    empty = tmp_path / "samples"
    empty.mkdir()
    for messages, error in (
        (empty, f"error: {empty} holds no .eml messages: nothing to simulate"),
        (
            tmp_path / "nowhere",
            f"error: {tmp_path / 'nowhere'}: no such directory (--messages names a directory of .eml files)",
        ),
    ):
        args = ("--messages", str(messages), "--against", "examples/full.yaml", "--detailed-exitcode")
        done = run("simulate", "examples/full.yaml", *args)
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.splitlines() == [error]
