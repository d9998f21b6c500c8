"""Secret references: `{env: NAME}` and `{file: path}`, resolved only when needed.

A secret's value never enters the config model, the plan or a log line: the model holds
the reference, `resolve` reads the value at the moment of use, and `redact` is what every
renderer shows instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.config.model.base import EnvSecret, FileSecret

REDACTED = "(sensitive value)"
MAX_PASSWORD_LENGTH = 100


class SecretError(Exception):
    """A secret reference that cannot be resolved; the message says why."""


def resolve(ref: EnvSecret | FileSecret, base_dir: Path) -> str:
    """The secret's value. A file's single trailing newline is not part of it."""
    if isinstance(ref, EnvSecret):
        value = os.environ.get(ref.env)
        if value is None:
            raise SecretError(f"environment variable {ref.env} is not set")
        return value
    path = Path(ref.file)
    if not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(f"cannot read secret file {ref.file}: {exc.strerror}") from None
    return text[:-1] if text.endswith("\n") else text


def describe(ref: EnvSecret | FileSecret) -> str:
    return f"env {ref.env}" if isinstance(ref, EnvSecret) else f"file {ref.file}"
