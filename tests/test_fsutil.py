"""The one atomic-write helper: whole files or none, exclusive creation, no temporary left."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from engine.fsutil import write_atomic


def test_replaces_whole_and_sets_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new", 0o640)
    assert target.read_bytes() == b"new" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_exclusive_never_replaces(tmp_path: Path) -> None:
    target = tmp_path / "admin.token"
    write_atomic(target, b"first\n", exclusive=True)
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second\n", exclusive=True)
    assert target.read_bytes() == b"first\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["admin.token"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    target.write_bytes(b"old")
    with pytest.raises(TypeError):
        write_atomic(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]
