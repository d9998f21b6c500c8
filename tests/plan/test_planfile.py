"""Saved plans: a round trip keeps everything; an edited or unknown file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.plan import planfile
from engine.plan.build import make_plan
from engine.plan.diff import canonical
from engine.plan.planfile import PlanFileError, StalePlanError
from tests.plan.conftest import CASES, load, plan_case
from tests.plan.gitrepo import Repo

CASE = CASES / "loosen-route-tls"


def saved(tmp_path: Path) -> tuple[Path, object]:
    plan = plan_case(CASE)
    path = planfile.save(tmp_path / "plan.json", plan, load(CASE / "after.yaml"))
    return path, plan


def rewrite(path: Path, edit, *, rehash: bool = False) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    if rehash:  # a careful forger: only the version check can stop this one
        content = {k: v for k, v in doc.items() if k != "sha256"}
        doc["sha256"] = planfile._digest(content)
    path.write_text(json.dumps(doc, indent=2))


def test_round_trip(tmp_path: Path) -> None:
    path, plan = saved(tmp_path)
    loaded = planfile.load(path)
    assert loaded.plan == plan
    assert loaded.desired == canonical(load(CASE / "after.yaml"))
    assert loaded.plan.loosenings and loaded.plan.loosenings[0].address == 'routes["vendors"].tls'
    doc = json.loads(path.read_text())
    assert doc["format"] == "sealrelay-plan" and doc["format_version"] == 1 and len(doc["sha256"]) == 64


def test_the_desired_config_is_the_one_planned(tmp_path: Path) -> None:
    plan = plan_case(CASE)
    with pytest.raises(ValueError, match="not the one this plan was made for"):
        planfile.save(tmp_path / "plan.json", plan, load(CASE / "before.yaml"))


def test_an_edited_verdict_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)

    def hide_the_loosening(doc: dict) -> None:
        doc["plan"]["changes"][0]["effect"] = "neutral"

    rewrite(path, hide_the_loosening)
    with pytest.raises(PlanFileError, match="changed after it was saved"):
        planfile.load(path)


def test_an_edited_desired_config_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    rewrite(path, lambda doc: doc["desired"]["tls"].update(outbound_default="none"))
    with pytest.raises(PlanFileError, match="changed after it was saved"):
        planfile.load(path)


def test_a_rehashed_desired_config_still_does_not_match_the_plan(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    rewrite(path, lambda doc: doc["desired"]["tls"].update(outbound_default="none"), rehash=True)
    with pytest.raises(PlanFileError, match="does not match the plan's hash"):
        planfile.load(path)


def test_an_unknown_format_version_is_refused(tmp_path: Path) -> None:
    path, _ = saved(tmp_path)
    rewrite(path, lambda doc: doc.update(format_version=2), rehash=True)
    with pytest.raises(PlanFileError, match="format version 2 is unknown"):
        planfile.load(path)


@pytest.mark.parametrize(
    "text,message",
    [("{not json", "invalid JSON"), ('{"format": "other"}', "not a sealrelay plan file"), ("[]", "not a sealrelay")],
)
def test_what_is_not_a_plan_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(text)
    with pytest.raises(PlanFileError, match=message):
        planfile.load(path)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match="cannot read"):
        planfile.load(tmp_path / "nope.json")


def test_a_stale_base_is_refused(tmp_path: Path) -> None:
    plan = make_plan(load(CASE / "after.yaml"), load(CASE / "before.yaml"), base_version=7)
    planfile.save(tmp_path / "plan.json", plan, load(CASE / "after.yaml"))
    saved_plan = planfile.load(tmp_path / "plan.json")
    planfile.check_base(saved_plan, version=7, config=load(CASE / "before.yaml"))  # still current: no error
    with pytest.raises(StalePlanError, match="version 7, the relay now runs version 8"):
        planfile.check_base(saved_plan, version=8, config=load(CASE / "before.yaml"))
    with pytest.raises(StalePlanError, match="not the one running"):
        planfile.check_base(saved_plan, version=7, config=load(CASE / "after.yaml"))


def test_the_commit_is_recorded_only_for_committed_files(tmp_path: Path) -> None:
    repo = Repo(tmp_path)
    config = repo.write("relay/relay.yaml", (CASE / "after.yaml").read_text())
    assert planfile.git_commit(config)[0] is None  # no commit yet
    head = repo.commit()
    assert planfile.git_commit(config) == (head, None)
    assert planfile.git_commit(config.parent) == (head, None)  # a directory config
    config.write_text(config.read_text() + "\n# edited\n")
    commit, warning = planfile.git_commit(config)
    assert commit is None and "uncommitted changes" in warning
    repo.commit()
    repo.write("relay/extra.yaml", "# new, untracked\n")
    assert planfile.git_commit(config.parent)[1] is not None  # the directory has an untracked file
    assert planfile.git_commit(config)[0] is not None  # the file alone is clean


def test_outside_git_there_is_no_commit(tmp_path: Path) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text((CASE / "after.yaml").read_text())
    commit, warning = planfile.git_commit(config)
    assert commit is None and "not in a git work tree" in warning
