"""`migrate` rewrites files in place through registered migrations, keeping comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import migrate


def test_current_version_is_left_alone(tmp_path: Path) -> None:
    f = tmp_path / "relay.yaml"
    f.write_text("# mine\nversion: 1\nsystem: {fqdn: a.example.com}\n", encoding="utf-8")
    report = migrate.migrate_path(f, write=True)
    assert not report.changed and not report.failed
    assert report.lines == [f"{f}: already at version 1"]


def test_a_registered_migration_runs_and_keeps_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def rename_queue_lifetime(doc: dict) -> None:
        delivery = doc.get("delivery", {})
        if "max_queue_lifetime" in delivery:
            delivery.insert(
                list(delivery).index("max_queue_lifetime"), "expire_after", delivery.pop("max_queue_lifetime")
            )

    monkeypatch.setattr(migrate, "LATEST_VERSION", 2)
    monkeypatch.setitem(migrate.MIGRATIONS, 1, rename_queue_lifetime)
    f = tmp_path / "relay.yaml"
    f.write_text(
        "version: 1   # format\ndelivery:\n  # keep mail five days\n  max_queue_lifetime: 5d\n", encoding="utf-8"
    )
    check = migrate.migrate_path(f, write=False)
    assert check.changed and "not written" in check.lines[0]
    assert "max_queue_lifetime" in f.read_text(encoding="utf-8")
    migrate.migrate_path(f, write=True)
    assert (
        f.read_text(encoding="utf-8")
        == "version: 2   # format\ndelivery:\n  # keep mail five days\n  expire_after: 5d\n"
    )


def test_newer_version_fails(tmp_path: Path) -> None:
    f = tmp_path / "relay.yaml"
    f.write_text("version: 9\n", encoding="utf-8")
    report = migrate.migrate_path(f, write=True)
    assert report.failed and "newer than this sealrelay" in report.lines[0]


def test_migrate_refuses_a_hostile_file_with_a_located_error(tmp_path) -> None:
    """ruamel's round trip has no budget: the loader's limits are checked first, so a file
    nested 35,000 deep is a located error, not a RecursionError (or a crash)."""
    from engine.config.migrate import migrate_path

    deep = tmp_path / "relay.yaml"
    deep.write_text("version: 1\nx: " + "[" * 35000 + "\n")
    report = migrate_path(deep, write=True)
    assert report.failed and report.lines == [f"{deep}:2:35: nested more than 32 levels deep"]
