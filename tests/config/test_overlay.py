"""Node files (`extends:`): a fleet from one repo. The node's values win, the source map names
the file and line of the winning value, and `plan --against git:REF` reads the node and its base
at that revision, symbolic links followed as on disk."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.config.load import load_config
from engine.plan.inputs import SourceError, load_other

ROOT = Path(__file__).resolve().parents[2]

BASE = """version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners:
    - {name: mx, address: 127.0.0.1, port: 2525}
    - {name: submission, address: 127.0.0.1, port: 2587}
  data_dir: ./var
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
  - {name: out, recipients: any, next_hop: {host: 127.0.0.1, port: 2526}, tls: opportunistic}
"""

NODE = """extends: ../base
system:
  fqdn: relay-0.example.com
  data_dir: /var/lib/sealrelay/relay-0
  listeners:
    - {name: mx, address: 10.0.0.5, port: 25}
  admin: {port: 18025}
"""


def fleet(tmp_path: Path, node: str = NODE) -> Path:
    """base/ (two files) and nodes/relay-0.yaml; returns the node file."""
    (tmp_path / "base").mkdir()
    (tmp_path / "nodes").mkdir()
    system, rest = BASE.split("ip_groups:")
    (tmp_path / "base" / "00-system.yaml").write_text(system)
    (tmp_path / "base" / "10-routes.yaml").write_text("ip_groups:" + rest)
    path = tmp_path / "nodes" / "relay-0.yaml"
    path.write_text(textwrap.dedent(node))
    return path


def test_the_node_wins_mappings_merge_and_lists_are_replaced(tmp_path: Path) -> None:
    result = load_config(fleet(tmp_path))
    assert result.ok, result.diagnostics
    system = result.config.system
    assert system.fqdn == "relay-0.example.com"
    assert [(x.name, x.address, x.port) for x in system.listeners] == [("mx", "10.0.0.5", 25)]  # replaced whole
    assert (system.admin.address, system.admin.port) == ("127.0.0.1", 18025)  # merged: the address is the default
    assert system.internal_domains == ["example.com"] and result.config.routes[0].name == "out"  # from the base
    assert "extends" not in result.data
    assert result.base_dir == tmp_path / "base"  # relative paths are the base's, where the shared files are


def test_the_source_map_names_the_winning_file_and_line(tmp_path: Path) -> None:
    node = fleet(tmp_path)
    source = load_config(node).source
    assert str(source.find(("system", "fqdn"))) == f"{node}:3:9"
    assert str(source.find(("system", "listeners", 0, "port"))) == f"{node}:6:43"
    assert str(source.find(("routes", 0, "name"))) == f"{tmp_path / 'base' / '10-routes.yaml'}:4:12"
    assert source.find(("system", "listeners", 1)) is None or source.find(("system", "listeners", 1)).file == str(node)
    assert source.files == [str(tmp_path / "base" / f) for f in ("00-system.yaml", "10-routes.yaml")] + [str(node)]


def test_errors_are_located_in_the_file_that_set_the_value(tmp_path: Path) -> None:
    node = fleet(tmp_path, NODE.replace("port: 18025", "port: lots"))
    (tmp_path / "base" / "10-routes.yaml").write_text(
        (tmp_path / "base" / "10-routes.yaml").read_text().replace("tls: opportunistic", "tls: sometimes")
    )
    lines = sorted(f"{d.mark}: {d.dotted}" for d in load_config(node).diagnostics)
    assert lines == sorted(
        [f"{node}:7:17: system.admin.port", f"{tmp_path / 'base' / '10-routes.yaml'}:4:80: routes[0].tls"]
    )


@pytest.mark.parametrize(
    ("extends", "message"),
    [
        ("../nowhere", "the shared config {tmp}/nowhere does not exist"),
        ("[a, b]", "`extends` names the shared config: a file or a directory"),
        ("../other.yaml", "the shared config {tmp}/other.yaml extends another one: a base cannot extend a base"),
    ],
)
def test_an_extends_that_cannot_be_followed_is_an_error_at_its_line(tmp_path: Path, extends: str, message: str) -> None:
    (tmp_path / "other.yaml").write_text("extends: base\n")
    node = fleet(tmp_path, NODE.replace("extends: ../base", f"extends: {extends}"))
    [diag] = load_config(node).diagnostics
    assert (str(diag.mark), diag.message) == (f"{node}:1:10", message.format(tmp=tmp_path))


def test_errors_of_the_base_are_shown_at_their_own_place(tmp_path: Path) -> None:
    node = fleet(tmp_path)
    (tmp_path / "base" / "00-system.yaml").write_text(BASE.split("ip_groups:")[0] + "nosuch: 1\n")
    diags = load_config(node).diagnostics
    assert [(d.mark.file, d.dotted) for d in diags] == [
        (str(tmp_path / "base" / "00-system.yaml"), "nosuch"),
    ]


def git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t"}
    subprocess.run(["git", *args], cwd=repo, env=env | {"GIT_COMMITTER_EMAIL": "t@e"}, check=True, capture_output=True)


def committed(tmp_path: Path) -> Path:
    node = fleet(tmp_path)
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "fleet")
    return node


def test_git_ref_reads_the_node_and_its_base_at_the_revision(tmp_path: Path) -> None:
    node = committed(tmp_path)
    routes = tmp_path / "base" / "10-routes.yaml"
    routes.write_text(routes.read_text().replace("tls: opportunistic", "tls: mandatory"))  # the shared base
    node.write_text(NODE.replace("relay-0.example.com", "mx0.example.com"))  # and the node
    before, label = load_other("git:HEAD", node)
    assert label == "nodes/relay-0.yaml at git:HEAD"
    assert before.system.fqdn == "relay-0.example.com" and before.routes[0].tls == "opportunistic"
    planned = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", str(node), "--against", "git:HEAD"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert planned.returncode == 0, planned.stderr
    assert '~ system.fqdn: "relay-0.example.com" -> "mx0.example.com"' in planned.stdout
    assert '~ routes["out"].tls: "opportunistic" -> "mandatory"' in planned.stdout


def test_git_ref_locates_errors_of_the_base_at_the_revision(tmp_path: Path) -> None:
    node = committed(tmp_path)
    routes = tmp_path / "base" / "10-routes.yaml"
    routes.write_text(routes.read_text().replace("tls: opportunistic", "tls: sometimes"))
    git(tmp_path, "commit", "-q", "-am", "broken")
    with pytest.raises(SourceError) as caught:
        load_other("git:HEAD", node)
    assert [f"{d.mark}" for d in caught.value.diagnostics] == ["HEAD:base/10-routes.yaml:4:80"]


def test_git_ref_follows_symbolic_links_inside_a_config_directory(tmp_path: Path) -> None:
    config = tmp_path / "config"
    (config / "shared").mkdir(parents=True)
    (config / "shared" / "routes.yaml").write_text("ip_groups:" + BASE.split("ip_groups:")[1])
    (config / "00-system.yaml").write_text(BASE.split("ip_groups:")[0])
    (config / "10-routes.yaml").symlink_to("shared/routes.yaml")
    assert load_config(config).ok
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "linked")
    before, _ = load_other("git:HEAD", config)  # the link's target, not its text "shared/routes.yaml"
    assert before.routes[0].name == "out"

    (config / "20-out.yaml").symlink_to("../outside.yaml")
    (tmp_path / "outside.yaml").write_text("tests: []\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "a link out")
    with pytest.raises(
        SourceError, match="HEAD:config/20-out.yaml: a symbolic link to a file outside the config directory"
    ):
        load_other("git:HEAD", config)
    [diag] = load_config(config).diagnostics  # as on disk
    assert "a symbolic link to a file outside the config directory" in diag.message


def test_an_uncommitted_base_makes_the_node_dirty(tmp_path: Path) -> None:
    from engine.plan.planfile import git_commit, git_provenance

    node = committed(tmp_path)
    assert git_commit(node)[0] is not None and git_provenance(node)[1] is False
    routes = tmp_path / "base" / "10-routes.yaml"
    routes.write_text(routes.read_text().replace("tls: opportunistic", "tls: mandatory"))  # only the base
    commit, warning = git_commit(node)
    assert commit is None and "uncommitted changes" in warning
    assert git_provenance(node)[1] is True


@pytest.mark.parametrize("node", ["relay-0.yaml", "relay-1.yaml"])
def test_the_example_fleet_validates(node: str) -> None:
    result = load_config(ROOT / "examples" / "fleet" / "nodes" / node)
    assert result.ok, result.diagnostics
    assert result.config.system.fqdn == f"{node.removesuffix('.yaml')}.example.com"
    assert result.base_dir == ROOT / "examples" / "split"
