"""The config-repo kit as an adopter meets it: the pre-commit hooks, and the CI workflow's own
review step run against a sample config repo with git history (a change that tightens, one
that loosens and changes a sample's decision, one that is invalid).

The hooks run through `pre-commit try-repo` on a committed copy of this tree (the working
tree may hold uncommitted files, which try-repo would leave out); its virtualenv sees this
machine's site-packages, so only sealrelay itself is built, nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "examples" / "ci"

CONFIG = """version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners:
    - {name: mx, address: 127.0.0.1, port: 2525}
ip_groups:
  internal_servers: [127.0.0.0/8]
tls:
  outbound_default: opportunistic
dlp:
  action_plans:
    - {name: encrypt-sensitive, email: encrypt}
  policies:
    - name: payment-cards
      rules:
        - name: cards
          conditions:
            any:
              - classifier: credit_card
          action_plan: encrypt-sensitive
          destination: {direction: outbound}
tests:
  - name: card number is encrypted
    message: samples/card.eml
    expect: {direction: outbound, action: encrypt, policies: [payment-cards]}
"""


def load(path: Path):
    return YAML(typ="safe").load(path.read_text())


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def config_repo(tmp_path: Path) -> Path:
    """A config repo on branch `change`, one commit ahead of `main` (the reviewed base)."""
    repo = tmp_path / "relay-config"
    (repo / "samples").mkdir(parents=True)
    (repo / "ci").mkdir()
    for name in ("card.eml", "newsletter.eml"):
        shutil.copy(ROOT / "examples" / "messages" / name, repo / "samples" / name)
    shutil.copy(CI / "sealrelay-review.sh", repo / "ci" / "sealrelay-review.sh")
    (repo / "relay.yaml").write_text(CONFIG)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the relay config")
    git(repo, "checkout", "-q", "-b", "change")
    return repo


def commit(repo: Path, *edits: tuple[str, str]) -> None:
    """Commit relay.yaml with each (old, new) replaced: the pull request's change."""
    path = repo / "relay.yaml"
    text = path.read_text()
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    git(repo, "commit", "-q", "-am", "a change")


def review_step(repo: Path) -> tuple[int, str]:
    """Run the GitHub workflow's own review step (its `run` line, with its env) in `repo`."""
    workflow = load(CI / "github-actions.yml")
    [step] = [s for s in workflow["jobs"]["review"]["steps"] if s.get("id") == "review"]
    env = {**os.environ, **workflow["env"], "BASE": "main"}  # what `origin/${{ github.base_ref }}` names
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(["sh", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    comment = (repo / "sealrelay-comment.md").read_text()
    assert done.stdout == comment  # the step's log shows what the comment says
    return done.returncode, comment


def test_the_workflows_post_what_the_review_script_writes() -> None:
    github = load(CI / "github-actions.yml")
    steps = github["jobs"]["review"]["steps"]
    [review] = [s for s in steps if s.get("id") == "review"]
    assert review["run"] == "sh ci/sealrelay-review.sh" and review["continue-on-error"] is True
    [post] = [s for s in steps if s.get("uses", "").startswith("actions/github-script")]
    assert "sealrelay-comment.md" in post["with"]["script"] and "<!-- sealrelay-review -->" in post["with"]["script"]
    assert steps.index(post) > steps.index(review) and steps[-1]["if"] == "steps.review.outcome == 'failure'"
    assert "sealrelay apply" in github["jobs"]["apply"]["steps"][-1]["run"]
    gitlab = load(CI / "gitlab-ci.yml")
    script = "\n".join(gitlab["review"]["script"])
    assert "sh ci/sealrelay-review.sh" in script and "body@sealrelay-comment.md" in script
    assert gitlab["review"]["script"][-1] == 'exit "$code"'
    assert "sealrelay apply" in gitlab["apply"]["script"][-1]


def test_a_tightening_change_is_planned_and_passes(config_repo: Path) -> None:
    card = "              - classifier: credit_card\n"
    commit(config_repo, (card, card + "              - pattern: '\\bACCT-\\d{8}\\b'\n"))
    code, comment = review_step(config_repo)
    assert code == 0, comment
    assert comment.startswith("<!-- sealrelay-review -->")
    assert "**validate:** `relay.yaml` is valid." in comment
    assert "### sealrelay plan: `relay.yaml` compared with `relay.yaml at git:main`" in comment
    assert "| 0 | 1 | 0 | 0 | 1 |" in comment  # a condition added to the rule's list: one change, tightening
    assert "no sample message in `samples` changes decision" in comment


def test_a_loosening_that_changes_a_decision_is_flagged_for_review(config_repo: Path) -> None:
    commit(
        config_repo,
        ("action_plan: encrypt-sensitive\n", "action_plan: encrypt-sensitive\n          enabled: false\n"),
        ("action: encrypt, policies: [payment-cards]}", "action: permit, policies: []}"),  # its policy test too
    )
    code, comment = review_step(config_repo)
    assert code == 0, comment  # reviewers decide; apply refuses it without --allow-downgrade
    assert "> [!WARNING]" in comment and "loosening" in comment
    assert "> **simulate:** some sample messages change decision" in comment
    assert "card.eml" in comment


def test_an_invalid_config_fails_with_every_finding_in_the_comment(config_repo: Path) -> None:
    commit(config_repo, ("outbound_default: opportunistic", "outbound_default: sometimes"))
    code, comment = review_step(config_repo)
    assert code == 1
    assert "**validate:** `relay.yaml` has errors." in comment
    assert "### sealrelay plan: `relay.yaml`: no plan" in comment
    assert "- **error** `relay.yaml:10:21` `tls.outbound_default`: 'sometimes' is not allowed" in comment


@pytest.fixture(scope="module")
def hook_repo(tmp_path_factory) -> Path:
    """This tree, committed into a repository of its own (pre-commit installs hooks from commits)."""
    repo = tmp_path_factory.mktemp("hooks") / "sealrelay"
    junk = shutil.ignore_patterns(
        ".git", "build", "*.egg-info", "var", "__pycache__", ".hypothesis", "mutants", ".*cache"
    )
    shutil.copytree(ROOT, repo, ignore=junk, symlinks=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "sealrelay")
    return repo


def try_repo(hook_repo: Path, config_repo: Path, hook: str, *args: str) -> subprocess.CompletedProcess:
    pre_commit = shutil.which("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    env = {**os.environ, "PRE_COMMIT_HOME": str(hook_repo.parent / "pre-commit-home")}
    env["VIRTUALENV_SYSTEM_SITE_PACKAGES"] = "1"  # the dependencies from this machine: nothing downloaded
    env["PIP_NO_BUILD_ISOLATION"] = "0"  # pip reads this switch inverted: "0" builds with setuptools from here
    env["PIP_NO_DEPS"] = "1"
    return subprocess.run(
        [pre_commit, "try-repo", str(hook_repo), hook, "--all-files", "--color", "never", *args],
        cwd=config_repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_hooks_manifest_is_valid() -> None:
    pre_commit = shutil.which("pre-commit")
    if pre_commit is None:
        pytest.skip("pre-commit is not installed (pip install pre-commit)")
    done = subprocess.run([pre_commit, "validate-manifest", str(ROOT / ".pre-commit-hooks.yaml")], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr
    hooks = {hook["id"]: hook for hook in load(ROOT / ".pre-commit-hooks.yaml")}
    assert hooks["sealrelay-validate"]["entry"] == "sealrelay validate"
    assert hooks["sealrelay-plan"]["entry"] == "sealrelay plan --against git:HEAD"


@pytest.mark.slow
def test_the_hooks_validate_and_plan_a_config_repo(hook_repo: Path, config_repo: Path) -> None:
    passed = try_repo(hook_repo, config_repo, "sealrelay-validate")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "sealrelay validate" in passed.stdout and "Passed" in passed.stdout

    (config_repo / "relay.yaml").write_text(CONFIG.replace("opportunistic", "mandatory"))  # not committed yet
    planned = try_repo(hook_repo, config_repo, "sealrelay-plan")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "tls.outbound_default" in planned.stdout and "tightening" in planned.stdout

    (config_repo / "relay.yaml").write_text(CONFIG.replace("opportunistic", "sometimes"))
    failed = try_repo(hook_repo, config_repo, "sealrelay-validate")
    assert failed.returncode == 1
    assert "relay.yaml:10:21: tls.outbound_default: 'sometimes' is not allowed" in failed.stdout


@pytest.mark.parametrize(
    ("fmt", "expected"), [("markdown", "> git:nosuch: no such revision in "), ("json", '"ok": false')]
)
def test_a_plan_that_cannot_be_made_still_writes_its_document(config_repo: Path, fmt: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", "relay.yaml", "--against", "git:nosuch", "--format", fmt],
        cwd=config_repo,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 66 and expected in done.stdout, done.stdout + done.stderr  # EX_NOINPUT
    assert "git:nosuch: no such revision" in done.stderr  # and the terminal says so too
