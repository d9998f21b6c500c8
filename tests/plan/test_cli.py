"""`sealrelay plan` end to end, through a real subprocess: output, exit codes, plan file."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from engine.plan import planfile
from tests.conftest import ROOT
from tests.plan.conftest import CASES
from tests.plan.gitrepo import FORMS, SCRAMBLE_ERROR, Repo, against_forms, break_base, form

APP = "import typer; from engine.cli.plan import plan_command; app = typer.Typer(); app.command()(plan_command); app()"
SECRET_NAMES = ("SEAL_OLD_PFX_PASSWORD", "SEAL_NEW_PFX_PASSWORD", "old-route-password", "SEAL_NEW_ROUTE_SECRET")


def plan(*args: str | Path, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SEALRELAY_TOKEN"}
    return subprocess.run(
        [sys.executable, "-c", APP, *map(str, args)],
        cwd=ROOT,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def case(name: str, file: str) -> Path:
    return CASES / name / file


def test_no_changes_exits_0_with_detailed_exitcode() -> None:
    done = plan(case("no-change", "after.yaml"), "--against", case("no-change", "before.yaml"), "--detailed-exitcode")
    assert done.returncode == 0, done.stderr
    assert "No changes" in done.stdout and "0 to add, 0 to change, 0 to destroy; 0 loosening" in done.stdout


def test_changes_exit_2_with_detailed_exitcode_else_0() -> None:
    args = (case("loosen-route-tls", "after.yaml"), "--against", case("loosen-route-tls", "before.yaml"))
    done = plan(*args, "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    assert '~ routes["vendors"].tls: "verify" -> "opportunistic"' in done.stdout
    assert "! loosening: TLS level of the route lowered: verify -> opportunistic" in done.stdout
    assert plan(*args).returncode == 0


def test_an_invalid_desired_config_exits_1_with_its_diagnostics(tmp_path: Path) -> None:
    broken = tmp_path / "relay.yaml"
    broken.write_text(case("no-change", "after.yaml").read_text().replace("level: secure", "level: strong"))
    done = plan(broken, "--against", case("no-change", "before.yaml"), "--detailed-exitcode")
    assert done.returncode == 1
    assert f"{broken}:35:12: enforced_tls[1].level:" in done.stderr
    assert "invalid config, no plan" in done.stderr and done.stdout == ""


def test_an_invalid_other_config_exits_1(tmp_path: Path) -> None:
    broken = tmp_path / "other.yaml"
    broken.write_text("version: 1\nsystem: {fqdn: x}\n")
    done = plan(case("no-change", "after.yaml"), "--against", broken, "--detailed-exitcode")
    assert done.returncode == 1
    assert f"{broken}: invalid config, cannot plan against it" in done.stderr


@pytest.mark.parametrize("fmt", ["text", "markdown", "json"])
def test_secrets_never_reach_the_output(tmp_path: Path, fmt: str) -> None:
    # the desired side is checked with its files: keep its certificate self-signed
    desired = tmp_path / "relay.yaml"
    text = case("secrets", "after.yaml").read_text()
    desired.write_text(
        text.replace("  certificate:\n    pfx: {path: secrets/relay.pfx, password: {env: SEAL_NEW_PFX_PASSWORD}}\n", "")
    )
    done = plan(desired, "--against", case("secrets", "before.yaml"), "--format", fmt)
    assert done.returncode == 0, done.stderr
    assert "(sensitive value)" in done.stdout
    for name in SECRET_NAMES:
        assert name not in done.stdout


def test_json_and_markdown_formats() -> None:
    args = (case("tighten-tls", "after.yaml"), "--against", case("tighten-tls", "before.yaml"))
    doc = json.loads(plan(*args, "--format", "json").stdout)
    assert doc["summary"] == {
        "add": 0,
        "change": 4,
        "destroy": 0,
        "loosening": 0,
        "tightening": 4,
    }  # a member added: its list changes
    assert doc["has_changes"] is True and doc["base_version"] is None
    markdown = plan(*args, "--format", "markdown").stdout
    assert markdown.startswith("### sealrelay plan:") and "```diff" in markdown


def test_out_saves_a_plan_file_with_the_commit(tmp_path: Path) -> None:
    repo = Repo(tmp_path / "repo")
    config = repo.write("relay.yaml", case("loosen-dlp-mode", "before.yaml").read_text())
    repo.commit("before")
    config.write_text(case("loosen-dlp-mode", "after.yaml").read_text())
    head = repo.commit("monitor only")
    out = tmp_path / "plan.json"
    done = plan(config, "--against", "git:HEAD~1", "--out", out, "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    assert "relay.yaml at git:HEAD~1" in done.stdout and "! loosening: DLP only records matches" in done.stdout
    saved = planfile.load(out)
    assert saved.plan.commit == head
    assert [c.address for c in saved.plan.loosenings] == ["dlp.mode"]
    assert f"Saved the plan to {out}" in done.stderr and "records no commit" not in done.stderr


def test_out_without_a_commit_warns(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    config = tmp_path / "relay.yaml"
    config.write_text(case("scalar", "after.yaml").read_text())
    done = plan(config, "--against", case("scalar", "before.yaml"), "--out", out)
    assert done.returncode == 0
    assert "not in a git work tree: the plan records no commit" in done.stderr
    assert planfile.load(out).plan.commit is None


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_relay_mode_errors_are_clear_and_have_their_exit_codes() -> None:
    desired = case("no-change", "after.yaml")
    done = plan(desired, "--relay", f"http://127.0.0.1:{_closed_port()}", env={"SEALRELAY_TOKEN": "t"})
    assert done.returncode == 69  # EX_UNAVAILABLE
    error = done.stderr.splitlines()[-1]
    assert error.startswith("error: cannot connect to http://127.0.0.1:") and error.endswith("--against OTHER)")
    no_token = plan(desired, "--token-file", "/nonexistent/admin.token")
    assert no_token.returncode == 78 and no_token.stdout == ""  # EX_CONFIG: no token set up
    assert no_token.stderr.splitlines()[-1] == (
        "error: no admin token: no token file at /nonexistent/admin.token "
        "(given by --token-file; $SEALRELAY_TOKEN is not set) (to plan without a relay: --against OTHER)"
    )


# -- `--against` in every form: a file, a directory, git:REF of each ---------------------------

PLANNED = {  # config -> (the change line, its judgement line, the address in JSON)
    "full.yaml": (
        '  ~ dlp.action_plans["encrypt-sensitive"].email: "encrypt" -> "block"',
        "      (tightening: action raised: encrypt -> block for payment-cards/cards)",
        'dlp.action_plans["encrypt-sensitive"].email',
    ),
    "split": (
        '  ~ dlp.action_plans["encrypt"].email: "encrypt" -> "block"',
        "      (tightening: action raised: encrypt -> block for payment-cards/cards, us-pii/ssn)",
        'dlp.action_plans["encrypt"].email',
    ),
}


@pytest.mark.parametrize("name", FORMS)
def test_against_every_form_plans_the_change_and_exits_2(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, against, label = form(name, repo, base)
    change, judged, address = PLANNED[desired.name]
    done = plan(desired, "--against", against, "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    head = repo.git("rev-parse", "HEAD")
    assert lines[0] == f"sealrelay plan: {desired} compared with {label} (commit {head[:12]})"
    at, verdict = lines[lines.index(change) + 1 : lines.index(change) + 3]
    assert verdict == judged
    file, line, column = at.removeprefix("      at ").rsplit(":", 2)  # where the desired config writes it
    assert Path(file).is_relative_to(desired) or Path(file) == desired
    assert Path(file).read_text().splitlines()[int(line) - 1][int(column) - 1 :].startswith("email: block")
    assert lines[-1] == "Plan: 0 to add, 1 to change, 0 to destroy; 0 loosening."
    doc = json.loads(plan(desired, "--against", against, "--format", "json").stdout)
    assert doc["base_label"] == label and doc["has_changes"] is True
    assert [(c["address"], c["before"], c["after"], c["effect"]) for c in doc["changes"]] == [
        (address, "encrypt", "block", "tightening")
    ]
    assert plan(desired, "--against", against).returncode == 0  # changes, without --detailed-exitcode


@pytest.mark.parametrize("name", FORMS)
def test_against_every_form_without_a_change_exits_0(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, against, _ = form(name, repo, base)
    same = "git:block-cards" if name.startswith("git-") else str(desired)
    done = plan(desired, "--against", same, "--detailed-exitcode")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "Plan: 0 to add, 0 to change, 0 to destroy; 0 loosening."
    assert json.loads(plan(desired, "--against", same, "--format", "json").stdout)["has_changes"] is False


@pytest.mark.parametrize("name", FORMS)
def test_against_an_invalid_base_in_every_form_names_its_place_and_exits_1(tmp_path: Path, name: str) -> None:
    repo, base = against_forms(tmp_path)
    desired, _, _ = form(name, repo, base)
    against, where = break_base(name, repo, base)
    done = plan(desired, "--against", against, "--detailed-exitcode")
    assert done.returncode == 1
    assert done.stdout == ""
    errors = done.stderr.splitlines()
    label = against if not name.startswith("git-") else f"{desired.name} at {against}"
    assert errors[-2:] == [f"{where}: {SCRAMBLE_ERROR}", f"{label}: invalid config, cannot plan against it"]
    assert "Traceback" not in done.stderr and "sealrelay-against-" not in done.stderr


def test_against_a_revision_that_does_not_exist_exits_1(tmp_path: Path) -> None:
    repo, base = against_forms(tmp_path)
    for name in ("git-file", "git-directory"):
        desired, _, _ = form(name, repo, base)
        done = plan(desired, "--against", "git:no-such-branch", "--detailed-exitcode")
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr.splitlines()[-1] == f"git:no-such-branch: no such revision in {repo.root.resolve()}"
