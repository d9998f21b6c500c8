"""`--against OTHER`: a file, a directory, or `git:REF` (the same path at a revision)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.plan.build import make_plan
from engine.plan.inputs import SourceError, load_other
from tests.plan.conftest import CASES, load
from tests.plan.gitrepo import Repo

BEFORE = (CASES / "loosen-route-tls" / "before.yaml").read_text()
AFTER = (CASES / "loosen-route-tls" / "after.yaml").read_text()


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_a_file(tmp_path: Path) -> None:
    (tmp_path / "other.yaml").write_text(BEFORE)
    config, label = load_other(str(tmp_path / "other.yaml"), "relay.yaml")
    assert config == load(CASES / "loosen-route-tls" / "before.yaml")
    assert label == str(tmp_path / "other.yaml")


def test_git_ref_reads_the_same_file_at_that_revision(repo: Repo) -> None:
    config_path = repo.write("conf/relay.yaml", BEFORE)
    repo.commit("before")
    config_path.write_text(AFTER)  # the working tree has the desired config
    other, label = load_other("git:HEAD", config_path)
    assert label == "conf/relay.yaml at git:HEAD"
    plan = make_plan(load(config_path), other)
    assert [c.address for c in plan.loosenings] == ['routes["vendors"].tls']


def test_git_ref_reads_a_directory_at_that_revision(repo: Repo) -> None:
    system, rest = BEFORE.split("\nip_groups:", 1)
    repo.write("relay.d/00-system.yaml", system)
    repo.write("relay.d/10-rest.yaml", "ip_groups:" + rest)
    repo.write("relay.d/notes.txt", "not yaml: ignored as a directory config ignores it")
    first = repo.commit("split")
    repo.write("relay.d/10-rest.yaml", "ip_groups:" + AFTER.split("\nip_groups:", 1)[1])
    repo.commit("weaken")
    other, label = load_other(f"git:{first}", repo.root / "relay.d")
    assert label == f"relay.d at git:{first}"
    plan = make_plan(load(repo.root / "relay.d"), other)
    assert [c.address for c in plan.changes] == ['routes["vendors"].tls']
    same, _ = load_other("git:HEAD", repo.root / "relay.d")
    assert make_plan(load(repo.root / "relay.d"), same).has_changes is False


def test_an_invalid_config_at_the_revision_names_ref_path_line_and_column(repo: Repo) -> None:
    config_path = repo.write(
        "relay.yaml", BEFORE.replace("outbound_default: opportunistic", "outbound_default: sometimes")
    )
    repo.commit("broken")
    config_path.write_text(AFTER)
    with pytest.raises(SourceError) as caught:
        load_other("git:HEAD", config_path)
    text = caught.value.render()
    assert "HEAD:relay.yaml:23:21: tls.outbound_default:" in text
    assert "relay.yaml at git:HEAD: invalid config" in text
    assert "sealrelay-against-" not in text  # never the temporary copy


def test_errors_are_clear(repo: Repo, tmp_path: Path) -> None:
    config_path = repo.write("relay.yaml", BEFORE)
    repo.commit()
    with pytest.raises(SourceError, match="git:nope: no such revision"):
        load_other("git:nope", config_path)
    new = repo.write("new.yaml", AFTER)
    with pytest.raises(SourceError, match="new.yaml does not exist at git:HEAD"):
        load_other("git:HEAD", new)
    with pytest.raises(SourceError, match="needs a revision"):
        load_other("git:", config_path)
    with pytest.raises(SourceError, match="no such file or directory"):
        load_other(str(tmp_path / "missing.yaml"), config_path)


def test_git_ref_outside_a_repository(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(AFTER)
    with pytest.raises(SourceError, match="not in a git work tree"):
        load_other("git:HEAD", path)


def test_git_ref_reads_a_directory_config_at_the_top_of_the_repository(repo: Repo) -> None:
    system, rest = BEFORE.split("\nip_groups:", 1)
    repo.write("00-system.yaml", system)
    repo.write("10-rest.yaml", "ip_groups:" + rest)
    repo.commit("split")
    repo.write("10-rest.yaml", "ip_groups:" + AFTER.split("\nip_groups:", 1)[1])
    other, label = load_other("git:HEAD", repo.root)
    assert label == ". at git:HEAD"
    assert [c.address for c in make_plan(load(repo.root), other).changes] == ['routes["vendors"].tls']


def test_the_error_about_an_invalid_config_names_the_command(tmp_path: Path) -> None:
    broken = tmp_path / "other.yaml"
    broken.write_text("version: 1\n")
    with pytest.raises(SourceError, match=r"other.yaml: invalid config, cannot simulate against it$"):
        load_other(str(broken), "relay.yaml", purpose="simulate")


def test_a_revision_that_git_would_read_as_an_option_is_refused(repo: Repo) -> None:
    config_path = repo.write("relay.yaml", BEFORE)
    repo.commit()
    with pytest.raises(SourceError, match="git:--output=x: a revision cannot start with '-'"):
        load_other("git:--output=x", config_path)


def test_git_ref_without_git_installed(repo: Repo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config_path = repo.write("relay.yaml", BEFORE)
    repo.commit()
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    with pytest.raises(SourceError, match="git:REF needs git, and no git command is installed"):
        load_other("git:HEAD", config_path)


def test_git_ref_of_a_link_out_of_the_work_tree_is_refused(
    repo: Repo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "relay.yaml"
    outside.write_text(AFTER)
    link = repo.root / "relay.yaml"
    link.symlink_to(outside)
    repo.commit()
    with pytest.raises(SourceError, match="relay.yaml leads out of the git work tree"):
        load_other("git:HEAD", link)
