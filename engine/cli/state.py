"""`sealrelay state backup FILE | restore FILE`: everything in data_dir that is state, in one
file, taken while the relay runs, and put back only whole and only into a stopped relay.

What a backup holds (a gzipped tar, owner-only, `manifest.json` as its last member):

- SQLite databases (the queue's `queue/queue.db`, the portal's `portal/portal.db`, any file
  with SQLite's header) as **online snapshots**: SQLite's backup API copies the database as
  one read transaction sees it, the write-ahead log included (a copy of the file alone misses
  every commit not yet checkpointed), while the relay goes on writing (WAL: a reader never
  blocks the writer). Each snapshot passes `PRAGMA quick_check` before it is stored, in
  rollback-journal mode (one self-contained file).
- Every other regular file as it is: state.json, running.json, applied.json, admin.token,
  audit.log (append-only: the length it had when opened), the quarantine, `tls/` (the
  certificate and its key), the portal key and the portal's blob files.
- Left out: `-wal`/`-shm` files (inside the snapshots), `queue/queue.lock`, the temporary
  files of atomic writes (`.name.*`), `dlp/` (a cache of compiled patterns, rebuilt at start).
  A PostgreSQL portal store is not in data_dir: the backup says so (use pg_dump).

Order, so that a backup taken under load restores to at most a duplicate, never a loss
(the queue's own rule): the relay's state files first (state.json before the configs it
names), then the quarantine (a release queues the message, then deletes the files), then the
queue, then the portal (mail the queue hands to the portal is marked delivered after the
portal stored it), and the portal's database before its blobs (a blob is written before the
row that names it).

The manifest names the format, when and by which relay version the backup was made, the
data_dir it came from, and every member's path, size, mode and SHA-256 (and for a
database its `user_version`, e.g. the queue's schema). `restore` checks all of them before
it writes anything, refuses while a relay holds the data_dir's queue lock, unpacks into a
new directory beside data_dir and swaps it in with one rename (the data_dir it replaces is
kept beside it, renamed, never deleted).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import shutil
import sqlite3
import tarfile
import tempfile
import time
import zlib
from calendar import timegm
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath

import typer

from engine.cli import exits
from engine.cli.exits import Exit
from engine.fsutil import fsync_dir, private_dir

FORMAT_NAME = "sealrelay-state-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MAGIC = b"SQLite format 3\x00"
LOCK = PurePosixPath("queue/queue.lock")
SKIP_DIRS = {"dlp": "a cache of compiled DLP patterns, rebuilt at start"}
# state first, then the quarantine, the queue, the portal (database before blobs): see above
ORDER = ("state.json", "running.json", "applied.json", "quarantine", "queue", "portal/portal.db", "portal")
_CHUNK = 1 << 20


class BackupError(Exception):
    """The backup or restore cannot be done; the message is one line for the operator, `code`
    the exit code (engine/cli/exits.py)."""

    def __init__(self, message: str, code: Exit = Exit.DATAERR) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Member:
    path: str  # relative to data_dir, POSIX
    size: int
    sha256: str
    mode: int
    kind: str  # "sqlite" (an online snapshot) or "file"
    user_version: int | None = None

    def to_json(self) -> dict:
        data = {"path": self.path, "size": self.size, "sha256": self.sha256, "mode": oct(self.mode), "kind": self.kind}
        if self.user_version is not None:
            data["user_version"] = self.user_version
        return data


@dataclass
class Manifest:
    created_at: float
    relay_version: str
    data_dir: str
    members: list[Member] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "why"}
    notes: list[str] = field(default_factory=list)  # what is state but not in data_dir
    queue_entries: int | None = None

    def to_json(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "relay_version": self.relay_version,
            "data_dir": self.data_dir,
            "queue_entries": self.queue_entries,
            "members": [m.to_json() for m in self.members],
            "skipped": self.skipped,
            "notes": self.notes,
        }


# -- backup ---------------------------------------------------------------------------------


def backup(data_dir: Path, target: Path, notes: list[str] | None = None) -> Manifest:
    """Write a backup of `data_dir` to `target` (0600, replaced atomically when it exists).

    Runs beside a serving relay. Raises BackupError when data_dir is missing or a database
    cannot be snapshot (then `target` is left as it was).
    """
    if not data_dir.is_dir():
        raise BackupError(f"data_dir {data_dir} is not a directory: nothing to back up", Exit.NOINPUT)
    manifest = Manifest(time.time(), relay_version(), str(data_dir), notes=list(notes or []))
    target = target.resolve()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o600)  # before a byte of it is written: keys and mail go in
        with os.fdopen(fd, "wb") as raw:
            with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=int(manifest.created_at)) as zipped:
                with tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    with tempfile.TemporaryDirectory(prefix="sealrelay-backup-") as scratch:
                        for path in _walk(data_dir, manifest, exclude=target):
                            _add(tar, data_dir, path, Path(scratch), manifest)
                    body = json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode()
                    info = _info(MANIFEST, len(body), 0o600, manifest.created_at)
                    tar.addfile(info, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(target.parent)
    return manifest


def _walk(data_dir: Path, manifest: Manifest, exclude: Path) -> Iterator[Path]:
    """Every file to back up, in the order of ORDER (then the rest, sorted); never `exclude`
    (the backup itself, when it is written into data_dir)."""
    found: list[Path] = []
    for root, dirs, files in os.walk(data_dir):
        here = Path(root)
        rel_dir = here.relative_to(data_dir)
        for name in sorted(dirs):
            if rel_dir == Path(".") and name in SKIP_DIRS:
                manifest.skipped.append({"path": f"{name}/", "why": SKIP_DIRS[name]})
                dirs.remove(name)
        dirs.sort()
        for name in files:
            path = here / name
            rel = PurePosixPath(path.relative_to(data_dir).as_posix())
            why = "" if path.absolute() == exclude else _skip(rel, path)
            if why is None:
                found.append(path)
            elif why:
                manifest.skipped.append({"path": rel.as_posix(), "why": why})

    def rank(path: Path) -> tuple[int, str]:
        rel = path.relative_to(data_dir).as_posix()
        for index, prefix in enumerate(ORDER):
            if rel == prefix or rel.startswith(prefix + "/"):
                return index, rel
        return len(ORDER), rel

    return iter(sorted(found, key=rank))


def _skip(rel: PurePosixPath, path: Path) -> str | None:
    """Why this file is left out ("" to leave it out without a word), or None to keep it."""
    name = rel.name
    if path.is_symlink() or not path.is_file():
        return "not a regular file"
    if "corrupt" in rel.parts[:-1]:
        return None  # damaged databases set aside for an operator: kept as they are, WAL too
    if name.endswith(("-wal", "-shm", "-journal")):
        return ""  # part of the database beside it, which goes in as a snapshot
    if rel == LOCK:
        return ""
    if name.startswith("."):
        return ""  # an atomic write's temporary file
    return None


def _add(tar: tarfile.TarFile, data_dir: Path, path: Path, scratch: Path, manifest: Manifest) -> None:
    rel = path.relative_to(data_dir).as_posix()
    try:
        handle = path.open("rb")
    except FileNotFoundError:  # removed since the walk (a delivered blob, a released quarantine)
        return
    with handle:
        mode = os.fstat(handle.fileno()).st_mode & 0o777
        set_aside = "corrupt" in PurePosixPath(rel).parts[:-1]  # copied as they are, never opened
        is_db = not set_aside and handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
        handle.seek(0)
        if not is_db:
            size = os.fstat(handle.fileno()).st_size  # an appended log: what it held when opened
            _store(tar, manifest, Member(rel, size, "", mode, "file"), handle)
            return
    snapshot = scratch / "snapshot.db"
    user_version, entries = _snapshot(path, snapshot)
    if rel == "queue/queue.db":
        manifest.queue_entries = entries
    with snapshot.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        _store(tar, manifest, Member(rel, size, "", mode, "sqlite", user_version), handle)
    snapshot.unlink()


def _store(tar: tarfile.TarFile, manifest: Manifest, member: Member, handle) -> None:
    reader = _Hashing(handle, member.size)
    tar.addfile(_info(f"data/{member.path}", member.size, member.mode, manifest.created_at), reader)
    member.sha256 = reader.digest.hexdigest()
    manifest.members.append(member)


def _snapshot(source: Path, target: Path) -> tuple[int, int | None]:
    """Copy the database at `source` as one transaction sees it (SQLite's backup API, all
    pages in one step: it never restarts under a writer); return its user_version and, for
    a queue, how many entries it holds. Raises BackupError when it cannot be read."""
    try:
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(target, isolation_level=None)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                problems = [row[0] for row in dst.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    raise BackupError(f"{source} is damaged ({'; '.join(problems)}): not backed up")
                user_version = dst.execute("PRAGMA user_version").fetchone()[0]
                entries = None
                if dst.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'messages'").fetchone():
                    entries = dst.execute("SELECT count(*) FROM messages").fetchone()[0]
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error as exc:
        raise BackupError(f"cannot snapshot {source}: {exc}", Exit.IOERR) from None
    return user_version, entries


class _Hashing(io.RawIOBase):
    """Reads exactly `size` bytes of `handle` and hashes them as tarfile copies them."""

    def __init__(self, handle, size: int) -> None:
        self._handle = handle
        self._left = size
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._handle.read(n)
        self._left -= len(data)
        self.digest.update(data)
        return data


def _info(name: str, size: int, mode: int, when: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, int(when)
    info.uname = info.gname = ""
    return info


# -- restore --------------------------------------------------------------------------------


def read_manifest(source: Path) -> Manifest:
    """Check the backup at `source` through: the manifest, and every member against its size
    and SHA-256, nothing more and nothing less. Writes nothing. Raises BackupError."""
    try:
        with tarfile.open(source, mode="r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members:
                raise BackupError(f"{source} is not a sealrelay state backup (no {MANIFEST})")
            manifest = _parse_manifest(tar.extractfile(members[MANIFEST]).read(), source)
            expected = {f"data/{m.path}": m for m in manifest.members}
            extra = sorted(set(members) - set(expected) - {MANIFEST})
            if extra:
                raise BackupError(f"backup {source} is damaged: {extra[0]} is not in its manifest")
            for name, member in expected.items():
                info = members.get(name)
                if info is None or not info.isfile():
                    raise BackupError(f"backup {source} is damaged: {member.path} is missing")
                digest = hashlib.sha256()
                with tar.extractfile(info) as data:
                    for chunk in iter(lambda: data.read(_CHUNK), b""):
                        digest.update(chunk)
                if info.size != member.size or digest.hexdigest() != member.sha256:
                    raise BackupError(
                        f"backup {source} is damaged: {member.path} does not match its SHA-256 in the manifest"
                    )
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise BackupError(f"backup {source} cannot be read: {why}") from None
    except OSError as exc:
        raise BackupError(f"backup {source} cannot be read: {exc.strerror or exc}", exits.for_oserror(exc)) from None
    return manifest


def _parse_manifest(raw: bytes, source: Path) -> Manifest:
    try:
        data = json.loads(raw)
        if data.get("format") != FORMAT_NAME:
            raise ValueError("not a sealrelay state backup")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"backup format {data.get('format_version')} (this relay reads {FORMAT_VERSION})")
        members = [
            Member(m["path"], int(m["size"]), m["sha256"], int(m["mode"], 8), m["kind"], m.get("user_version"))
            for m in data["members"]
        ]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BackupError(f"backup {source} has an unusable manifest: {exc}") from None
    for member in members:
        parts = PurePosixPath(member.path).parts
        if not parts or member.path.startswith("/") or any(p in ("..", ".", "") for p in parts):
            raise BackupError(f"backup {source} is damaged: unsafe path {member.path!r} in its manifest")
    manifest = Manifest(0.0, data.get("relay_version", "?"), data.get("data_dir", "?"), members)
    manifest.queue_entries = data.get("queue_entries")
    manifest.skipped = data.get("skipped", [])
    manifest.notes = data.get("notes", [])
    manifest.created_at = _parse_time(data.get("created_at"))
    return manifest


def _parse_time(text) -> float:
    try:
        return float(timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return 0.0


def restore(source: Path, data_dir: Path) -> tuple[Manifest, Path | None]:
    """Put the backup at `source` in place of `data_dir`; return its manifest and where the
    data_dir it replaced now is (None when there was none).

    Checks the whole backup before writing anything; refuses while a relay holds data_dir's
    queue (its lock is held through the restore, so none can start meanwhile). Unpacks into
    a new directory beside data_dir and swaps it in with one rename. Raises BackupError.
    """
    manifest = read_manifest(source)
    data_dir = data_dir.absolute()
    lock_fd = _lock_out_relays(data_dir)
    staging = None
    try:
        private_dir(data_dir.parent)
        staging = Path(tempfile.mkdtemp(dir=data_dir.parent, prefix=f".{data_dir.name}.restore-"))
        _unpack(source, staging, manifest)
        replaced = None
        if data_dir.exists():
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            replaced = data_dir.parent / f"{data_dir.name}.before-restore-{stamp}"
            _swap_in(staging, data_dir, replaced)
        else:
            os.rename(staging, data_dir)
        staging = None
        fsync_dir(data_dir.parent)
        return manifest, replaced
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if lock_fd is not None:
            os.close(lock_fd)


def _lock_out_relays(data_dir: Path) -> int | None:
    """Take data_dir's queue lock (what a serving relay holds); BackupError if one has it."""
    lock = data_dir / LOCK
    if not lock.exists():
        return None  # no queue was ever opened there: no relay runs on it
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise BackupError(
            f"a relay is running on {data_dir} (it holds {lock}): stop it first; nothing restored", Exit.FAILED
        ) from None
    return fd


def _unpack(source: Path, staging: Path, manifest: Manifest) -> None:
    """Write every member under `staging`, checked again against its SHA-256 as it is written
    (the file may have changed since `read_manifest`), each fsynced, directories 0700."""
    wanted = {f"data/{m.path}": m for m in manifest.members}
    try:
        with tarfile.open(source, mode="r:gz") as tar:
            for info in tar:
                member = wanted.pop(info.name, None)
                if member is None:
                    continue
                target = staging / member.path
                private_dir(target.parent)
                digest = hashlib.sha256()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out, tar.extractfile(info) as data:
                    os.fchmod(out.fileno(), member.mode & 0o700)  # owner-only, whatever the archive says
                    for chunk in iter(lambda: data.read(_CHUNK), b""):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                if digest.hexdigest() != member.sha256:
                    raise BackupError(f"backup {source} changed while being restored: {member.path}; nothing restored")
    except (tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        raise BackupError(f"backup {source} cannot be read: {why}; nothing restored") from None
    if wanted:
        raise BackupError(f"backup {source} changed while being restored; nothing restored")
    for root, _dirs, _files in os.walk(staging, topdown=False):
        fsync_dir(root)


def _swap_in(staging: Path, data_dir: Path, replaced: Path) -> None:
    """`staging` becomes `data_dir` and the old one `replaced`: with renameat2's exchange where
    the kernel and file system have it (one atomic step), else two renames."""
    if _exchange(staging, data_dir):
        os.rename(staging, replaced)  # the old data_dir, now at the staging name
        return
    os.rename(data_dir, replaced)
    os.rename(staging, data_dir)


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    if ctypes.get_errno() in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), str(b))


def relay_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sealrelay")
    except PackageNotFoundError:
        return "unknown"


# -- the commands ---------------------------------------------------------------------------

state_app = typer.Typer(help="Back up and restore the relay's state (queue, portal store, keys).", no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="The relay's config (default: ./relay.yaml, else the embedded one)")


class Format(str, Enum):
    text = "text"
    json = "json"


def _where(config: Path | None) -> tuple[Path, list[str]]:
    """data_dir of the config, and what is state but not in it (a PostgreSQL portal, a key file)."""
    from engine.config.load import load_config
    from engine.relay.runtime.relay import config_location

    path, base_dir = config_location(config)
    result = load_config(path, check_files=False)
    if result.config is None:
        typer.echo(f"error: {path}: invalid config: run `sealrelay validate {path}`", err=True)
        raise typer.Exit(exits.for_config(path))
    base = base_dir or result.base_dir
    notes = []
    portal = _portal_settings(result.config)
    if portal is not None and portal.database:
        notes.append("the portal store is in PostgreSQL (encryption.secure_portal.database): back it up with pg_dump")
    if portal is not None and portal.master_key:
        notes.append(
            "the portal key is outside data_dir (encryption.secure_portal.master_key): keep it with your secrets"
        )
    return (base / result.config.system.data_dir).resolve(), notes


def _portal_settings(config):
    from engine.portal.service import portal_settings

    return portal_settings(config)


@state_app.command("backup")
def backup_command(
    file: Path = typer.Argument(..., help="The backup file to write (replaced if it exists; mode 0600)"),
    config: Path = CONFIG,
    fmt: Format = typer.Option(Format.text, "--format", help="text, or json (the manifest)"),
) -> None:
    """A consistent snapshot of data_dir, taken while the relay runs: the queue and the
    portal's SQLite databases (online backups, WAL included), state.json and the configs it
    names, the quarantine, TLS keys and certificates, the portal key and blobs, the admin
    token and audit log. One file, owner-only, with a manifest (versions, SHA-256 per member).

    Example: sealrelay state backup /var/backups/sealrelay-$(date +%F).tar.gz --config relay.yaml
    """
    data_dir, notes = _where(config)
    try:
        manifest = backup(data_dir, file, notes)
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    except OSError as exc:
        typer.echo(f"error: cannot write {file}: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.for_oserror(exc)) from None
    if fmt is Format.json:
        typer.echo(json.dumps(manifest.to_json(), indent=2, sort_keys=True))
        return
    total = sum(m.size for m in manifest.members)
    typer.echo(f"backup of {data_dir} written to {file} (0600): {len(manifest.members)} files, {total} bytes")
    for line in _summary(manifest):
        typer.echo(f"  {line}")


def _summary(manifest: Manifest) -> list[str]:
    by_top: dict[str, list[Member]] = {}
    for member in manifest.members:
        by_top.setdefault(member.path.split("/", 1)[0], []).append(member)
    lines = []
    for top, members in by_top.items():
        dbs = [m for m in members if m.kind == "sqlite"]
        what = f"{len(members)} file(s)"
        if dbs:
            what += ", snapshot of " + ", ".join(f"{m.path} (user_version {m.user_version})" for m in dbs)
        if top == "queue" and manifest.queue_entries is not None:
            what += f", {manifest.queue_entries} message(s) queued"
        lines.append(f"{top}: {what}")
    lines += [f"not included: {s['path']} ({s['why']})" for s in manifest.skipped]
    lines += [f"not included: {note}" for note in manifest.notes]
    return lines


@state_app.command("restore")
def restore_command(
    file: Path = typer.Argument(..., help="A backup written by `sealrelay state backup`"),
    config: Path = CONFIG,
    data_dir: Path = typer.Option(None, "--data-dir", help="Restore here instead of the config's data_dir"),
) -> None:
    """Put a backup in place of data_dir. The relay must be stopped (a running one holds
    data_dir's queue lock: refused). Every member is checked against the manifest's SHA-256
    before anything is written; the restored data_dir replaces the old one in one rename,
    and the old one is kept beside it (`<data_dir>.before-restore-<time>`).

    Example: sealrelay state restore /var/backups/sealrelay-2026-11-30.tar.gz --config relay.yaml
    """
    target = data_dir if data_dir is not None else _where(config)[0]
    try:
        manifest, replaced = restore(file, target)
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.code) from None
    except OSError as exc:
        typer.echo(f"error: cannot restore into {target}: {exc.strerror or exc}; nothing restored", err=True)
        raise typer.Exit(exits.for_oserror(exc)) from None
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(manifest.created_at))
    typer.echo(
        f"restored {len(manifest.members)} files into {target} "
        f"(backup of {manifest.data_dir}, {made}, sealrelay {manifest.relay_version})"
    )
    if replaced is not None:
        typer.echo(f"the data_dir it replaced is kept at {replaced}")
    for note in manifest.notes:
        typer.echo(f"not in the backup: {note}")
