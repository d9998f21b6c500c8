"""The admin token: created once with safe modes, reused, compared in constant time, resolved by the CLI."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from engine.admin.client import TOKEN_ENV, TokenNotFound, token_from
from engine.admin.token import TokenError, ensure_token, read_token, same_token, token_id


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_the_token_0600_in_a_0700_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "var" / "lib"
    token = ensure_token(data_dir)
    path = data_dir / "admin.token"
    assert mode(path) == 0o600
    assert mode(data_dir) == 0o700
    assert len(token) >= 43  # 32 bytes, URL-safe base64
    assert read_token(path) == token
    assert [p.name for p in data_dir.iterdir()] == ["admin.token"]  # no temporary file left


def test_an_existing_directory_keeps_its_mode(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    ensure_token(tmp_path)
    assert mode(tmp_path) == 0o755


def test_later_starts_reuse_the_token(tmp_path: Path) -> None:
    first = ensure_token(tmp_path)
    assert ensure_token(tmp_path) == first
    assert ensure_token(tmp_path) != ensure_token(tmp_path / "other")


def test_racing_starts_agree_on_one_token(tmp_path: Path) -> None:
    tokens: list[str] = []
    barrier = threading.Barrier(8)

    def start() -> None:
        barrier.wait()
        tokens.append(ensure_token(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(tokens)) == 1 and len(tokens) == 8
    assert read_token(tmp_path / "admin.token") == tokens[0]


def test_read_token_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="no token file"):
        read_token(tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(TokenError, match="empty"):
        read_token(tmp_path / "empty")


def test_token_id_names_without_revealing() -> None:
    ident = token_id("s3cret-token")
    assert ident.startswith("token:") and len(ident) == 14
    assert "s3cret" not in ident
    assert token_id("s3cret-token") == ident != token_id("other")


def test_same_token() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("abc", "abcd")
    assert not same_token("", "abc")


def test_token_from_prefers_the_environment(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("from-file\n")
    (tmp_path / "admin.token").write_text("from-data-dir\n")
    env = {TOKEN_ENV: "from-env"}
    assert token_from(tmp_path / "file", tmp_path, environ=env) == "from-env"
    assert token_from(tmp_path / "file", tmp_path, environ={}) == "from-file"
    assert token_from(None, tmp_path, environ={TOKEN_ENV: "  "}) == "from-data-dir"


def test_token_from_reads_the_real_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "env-token")
    assert token_from(None, tmp_path) == "env-token"
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(TokenNotFound):
        token_from(None, tmp_path)


def test_token_from_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(TokenNotFound) as caught:
        token_from(None, tmp_path, environ={})
    message = str(caught.value)
    assert TOKEN_ENV in message and "--token-file" in message and str(tmp_path / "admin.token") in message
    with pytest.raises(TokenNotFound, match="--token-file"):
        token_from(tmp_path / "nope", tmp_path, environ={})  # an explicit file does not fall back
    with pytest.raises(TokenNotFound, match="no data_dir"):
        token_from(None, None, environ={})


def test_the_token_file_is_not_world_readable_even_with_a_loose_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        ensure_token(tmp_path / "d")
    finally:
        os.umask(old)
    assert mode(tmp_path / "d" / "admin.token") == 0o600 and mode(tmp_path / "d") == 0o700
