"""Files that are either wholly old or wholly new: the one atomic-write helper.

Used wherever a crash must not leave half a file: certificates and keys, the relay's state
and last applied config, quarantined messages. Write to a unique temporary file in the same
directory, fsync it, rename it over the target, fsync the directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o600) -> Path:
    """Replace `path` with `data` so a reader sees the old or the new file, never a mixture."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a directory's entries (a rename, a deletion) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
