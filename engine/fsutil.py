"""Files that are either wholly old or wholly new: the one atomic-write helper.

Used wherever a crash must not leave half a file: certificates and keys, the relay's state
and running and applied configs, quarantined messages, saved plans, migrated config files,
the exported schema and the admin token. Write to a unique temporary file in the same
directory, fsync it, rename it over the target (or, `exclusive`, link it to a name that must
not exist yet), fsync the directory. `private_dir` makes the owner-only (0700) directories
they live in, whatever the process's umask.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: str | os.PathLike, data: bytes, mode: int = 0o600, *, exclusive: bool = False) -> Path:
    """Replace `path` with `data` so a reader sees the old or the new file, never a mixture.

    `exclusive`: create `path` only if it does not exist (FileExistsError otherwise), so two
    processes creating the same file at once never replace each other's."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a directory's entries (a rename, a deletion) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(directory: str | os.PathLike) -> Path:
    """Make `directory` and its missing parents owner-only (0700), whatever the umask.

    `Path.mkdir(mode, parents=True)` gives the parents it makes the umask's default mode;
    this gives each 0700. Directories that exist already are left as they are (an admin may
    have chosen their mode)."""
    directory = Path(directory)
    missing = []
    here = directory
    while not here.exists():
        missing.append(here)
        here = here.parent
    for made in reversed(missing):
        made.mkdir(mode=0o700, exist_ok=True)  # exists meanwhile: made by another process
    return directory
