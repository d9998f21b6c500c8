"""The admin API's bearer token: created once under data_dir, read by the CLI, never logged.

`ensure_token(data_dir)` is called by the relay at start: it creates `<data_dir>/admin.token`
(32 random bytes, URL-safe base64, mode 0600) the first time and returns the existing one
afterwards. Creation is atomic and never overwrites: the token is written to a temporary
file, fsynced, then hard-linked to its final name (which fails if another process won the
race, and then that process's token is used). The audit log names a caller by
`token_id(token)` (`token:` + the first 8 hex digits of its SHA-256), never by the token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from engine.fsutil import private_dir, write_atomic

__all__ = ["TOKEN_FILE", "TokenError", "ensure_token", "read_token", "same_token", "token_id"]

TOKEN_FILE = "admin.token"

log = logging.getLogger(__name__)


class TokenError(Exception):
    """The token file is missing, empty or unreadable."""


def read_token(path: str | os.PathLike) -> str:
    """The token in `path` (surrounding whitespace removed). Raises `TokenError`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenError(f"no token file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(f"cannot read the token file {path}: {exc}") from None
    token = text.strip()
    if not token:
        raise TokenError(f"the token file {path} is empty")
    return token


def ensure_token(data_dir: str | os.PathLike) -> str:
    """Return the token of `<data_dir>/admin.token`, creating both (0700, 0600) if missing."""
    directory = Path(data_dir)
    if not directory.is_dir():
        private_dir(directory)
    path = directory / TOKEN_FILE
    if path.exists():
        _warn_if_open(path)
        return read_token(path)
    token = secrets.token_urlsafe(32)
    try:  # never replaces a token another process just wrote
        write_atomic(path, (token + "\n").encode("ascii"), 0o600, exclusive=True)
    except FileExistsError:
        return read_token(path)
    log.info("created the admin token %s (%s)", path, token_id(token))
    return token


def token_id(token: str) -> str:
    """How the audit log names the holder of `token`: `token:` + 8 hex digits of its SHA-256."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def same_token(presented: str, expected: str) -> bool:
    """Constant-time comparison (over digests, so the length is not revealed either)."""
    a = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(a, b)


def _warn_if_open(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("the admin token %s is readable by others (mode %o): chmod 600 it", path, mode)
