"""The YAML adapter: positions, YAML 1.2 scalars, duplicates, merging a directory."""

from __future__ import annotations

from pathlib import Path

from engine.config.source import Mark, load_path


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_values_keep_file_line_and_column(tmp_path: Path) -> None:
    f = write(
        tmp_path / "r.yaml", "version: 1\nsystem:\n  fqdn: mail.example.com\n  listeners:\n    - {name: mx, port: 25}\n"
    )
    loaded = load_path(f)
    assert loaded.diagnostics == []
    assert loaded.source.values[("system", "fqdn")] == Mark(str(f), 3, 9)
    assert loaded.source.keys[("system", "fqdn")] == Mark(str(f), 3, 3)
    assert loaded.source.values[("system", "listeners", 0, "port")] == Mark(str(f), 5, 24)


def test_missing_path_falls_back_to_nearest_parent_key(tmp_path: Path) -> None:
    f = write(tmp_path / "r.yaml", "version: 1\nsystem:\n  fqdn: a.example\n")
    loaded = load_path(f)
    assert loaded.source.find(("system", "listeners")) == Mark(str(f), 2, 1)


def test_yaml_1_2_scalars(tmp_path: Path) -> None:
    f = write(
        tmp_path / "r.yaml",
        "a: yes\nb: no\nc: true\nd: 0o17\ne: 0x1F\nf: 1_000\ng: 1.5\nh: ~\ni: '25'\nj: 017\nk: .inf\nl: on\n",
    )
    data = load_path(f).data
    assert data == {
        "a": "yes",
        "b": "no",
        "c": True,
        "d": 15,
        "e": 31,
        "f": 1000,
        "g": 1.5,
        "h": None,
        "i": "25",
        "j": 17,
        "k": float("inf"),
        "l": "on",
    }


def test_duplicate_key_in_one_file_names_both_places(tmp_path: Path) -> None:
    f = write(tmp_path / "r.yaml", "a: 1\nb: 2\na: 3\n")
    loaded = load_path(f)
    [diag] = loaded.diagnostics
    assert diag.mark == Mark(str(f), 3, 1)
    assert diag.related == (Mark(str(f), 1, 1),)
    assert "duplicate key `a`" in diag.message


def test_directory_merges_maps_and_appends_lists(tmp_path: Path) -> None:
    write(tmp_path / "00.yaml", "system: {fqdn: a.example}\ndlp:\n  policies: [{name: p1}]\n")
    write(tmp_path / "10.yml", "system: {internal_domains: [a.example]}\ndlp:\n  policies: [{name: p2}]\n")
    write(tmp_path / "README.txt", "not yaml")
    loaded = load_path(tmp_path)
    assert loaded.diagnostics == []
    assert loaded.data == {
        "system": {"fqdn": "a.example", "internal_domains": ["a.example"]},
        "dlp": {"policies": [{"name": "p1"}, {"name": "p2"}]},
    }
    assert loaded.source.values[("dlp", "policies", 1, "name")].file == str(tmp_path / "10.yml")


def test_scalar_set_in_two_files_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "00.yaml", "system: {fqdn: a.example}\n")
    write(tmp_path / "10.yaml", "system:\n  fqdn: b.example\n")
    [diag] = load_path(tmp_path).diagnostics
    assert diag.mark == Mark(str(tmp_path / "10.yaml"), 2, 3)
    assert diag.related == (Mark(str(tmp_path / "00.yaml"), 1, 10),)


def test_merge_keys_expand_and_own_keys_win(tmp_path: Path) -> None:
    f = write(tmp_path / "r.yaml", "base: &b {port: 25, tls: none}\nhop:\n  <<: *b\n  tls: mandatory\n")
    assert load_path(f).data["hop"] == {"port": 25, "tls": "mandatory"}


def test_syntax_error_points_at_the_problem(tmp_path: Path) -> None:
    f = write(tmp_path / "r.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    [diag] = load_path(f).diagnostics
    assert diag.mark is not None and diag.mark.file == str(f) and diag.mark.line == 3
    assert diag.message.startswith("YAML syntax error")


def test_unreadable_inputs_are_reported_not_raised(tmp_path: Path) -> None:
    assert "no such file" in load_path(tmp_path / "missing.yaml").diagnostics[0].message
    assert "no *.yaml files" in load_path(tmp_path).diagnostics[0].message
    (tmp_path / "bin.yaml").write_bytes(b"a: \xff\xfe\n")
    assert "not UTF-8" in load_path(tmp_path / "bin.yaml").diagnostics[0].message
    write(tmp_path / "list.yaml", "- a\n- b\n")
    assert "must be a mapping" in load_path(tmp_path / "list.yaml").diagnostics[0].message
    write(tmp_path / "multi.yaml", "a: 1\n---\nb: 2\n")
    assert "YAML syntax error" in load_path(tmp_path / "multi.yaml").diagnostics[0].message


def test_empty_file_adds_nothing(tmp_path: Path) -> None:
    write(tmp_path / "00.yaml", "a: 1\n")
    write(tmp_path / "10.yaml", "# only a comment\n")
    assert load_path(tmp_path).data == {"a": 1}
