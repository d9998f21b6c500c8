"""What `serve --watch` follows: the config's files wherever they really are, and when they changed.

A config's files are its directory's YAML files (or the one file), a node file's shared base
(`extends:`), and, through symbolic links, the files they point at. A Kubernetes ConfigMap
mounts each key as `relay.yaml -> ..data/relay.yaml` and `..data -> ..2024_01_01_12_00_00.1`
and updates by renaming a new `..data` link over the old one: no `*.yaml` name changes,
only a link. So the watcher does not judge events by name. Any change in a watched
directory, and a quiet second too (events can be missed: a change before the watch was set
up, a network filesystem), makes it take the config's `Snapshot` again (each file's path,
where it really is, its inode, size and modification time); only a snapshot that differs
reloads, and a reload whose config hash is the running one changes nothing. A README edited
beside the config costs a few `stat`s.

Watched directories: each config directory, the directory of each file as named, and the
directory each file really lives in when that is not inside one already watched (a single
`relay.yaml` linked to a shared checkout). Watches are not recursive; when the set changes
(a node file now extends another base) the watcher starts over on the new set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.config.overlay import extends_of, files_of, real

Snapshot = tuple[tuple[str, str, int, int, int], ...]  # (as named, really, inode, size, mtime_ns)


@dataclass(frozen=True)
class Watched:
    directories: frozenset[Path]
    snapshot: Snapshot


def follow(path: Path) -> Watched:
    """The directories to watch for the config at `path`, and what its files hold now."""
    path = Path(path).absolute()
    files = files_of(path, extends=_extends_of)
    configs = {path} if path.is_dir() else set()
    configs |= {f.parent for f in files}
    directories = set(configs)
    for file in files:
        where = real(file).parent
        if not any(where == d or d in where.parents for d in configs):
            directories.add(where)
    return Watched(frozenset(d for d in directories if d.is_dir()), _snapshot(files))


_EXTENDS: dict[str, tuple[tuple[int, int, int, int], str | None]] = {}


def _extends_of(file: Path) -> str | None:
    """`extends_of(file)`, read again only when the file changed (its inode, size, mtime or
    ctime, as the file really is). Finding that one key composes the whole file: 50 ms for a
    500-rule config, and the watcher looks after every change in a watched directory (a log
    written beside the config: many a second) and every quiet second, holding the GIL an
    apply needs. The stat comes first: a file changed while it is read is read again."""
    try:
        st = os.stat(file)
    except OSError:
        return extends_of(file)  # unreadable: the reload says why
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _EXTENDS.get(str(file))
    if known is not None and known[0] == stamp:
        return known[1]
    target = extends_of(file)
    _EXTENDS[str(file)] = (stamp, target)
    return target


def _snapshot(files: list[Path]) -> Snapshot:
    out = []
    for file in files:
        try:
            st = os.stat(file)
            out.append((str(file), os.path.realpath(file), st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((str(file), "", 0, -1, 0))  # gone or unreadable: the reload says why
    return tuple(out)
