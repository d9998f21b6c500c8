"""A top-level `$schema` (an editor's pointer to the JSON Schema) is read as nothing."""

from __future__ import annotations

from pathlib import Path

from engine.config.load import load_config

BODY = (
    "version: 1\nsystem:\n  fqdn: relay.example.com\n  internal_domains: [example.com]\n"
    "  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]\n"
)


def test_a_top_level_schema_key_is_not_config(tmp_path: Path) -> None:
    plain, marked = tmp_path / "plain.yaml", tmp_path / "marked.yaml"
    plain.write_text(BODY)
    marked.write_text("$schema: ../schemas/relay.schema.json\n" + BODY)
    a, b = load_config(plain), load_config(marked)
    assert (a.ok, b.ok) == (True, True), b.diagnostics
    assert a.config == b.config


def test_every_file_of_a_directory_may_carry_one(tmp_path: Path) -> None:
    (tmp_path / "00-system.yaml").write_text("$schema: ../schemas/relay.schema.json\n" + BODY)
    (tmp_path / "10-groups.yaml").write_text(
        "$schema: ../schemas/relay.schema.json\nip_groups: {office: [10.0.0.0/8]}\n"
    )
    loaded = load_config(tmp_path)
    assert loaded.ok, loaded.diagnostics
    assert loaded.config.ip_groups == {"office": ["10.0.0.0/8"]}


def test_only_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(BODY + "  $schema: x\n")
    [diag] = [d for d in load_config(path).diagnostics if "$schema" in d.message]
    assert (str(diag.mark), diag.message) == (f"{path}:6:3", "unknown key `$schema`")
