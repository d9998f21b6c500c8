"""Opening the queue's database, and putting it right after a crash or damage.

Runs on the writer thread before the queue takes any work (Postfix's discipline: an entry
that cannot be trusted is set aside, never delivered and never silently dropped).

- `open_database` opens `queue.db` with the durability settings. If SQLite says the file is
  damaged (not a database, or `PRAGMA quick_check` fails), the file and its WAL are moved
  into `corrupt/`, a fresh database takes their place, and every entry that can still be
  read and whose body matches its SHA-256 is copied into it; the rest are recorded in the
  `corrupt` table. The moved file stays for an operator (`sqlite3 ... .recover`).
- `recover` checks every entry of a sound database: body present, of the recorded size and
  SHA-256, at least one recipient; otherwise the entry is set aside with the reason. Leases
  are released: we hold the directory's lock, so whoever held them is gone.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.relay.queue import store as store

log = logging.getLogger(__name__)

_DAMAGED = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
BUSY_TIMEOUT_S = 5.0  # how long a write waits for another connection's transaction
_OPEN = "('pending', 'deferred')"
_LISTINGS = (  # where ids of a damaged database are looked for, until one scan completes
    "SELECT id FROM messages",
    "SELECT id FROM messages ORDER BY id DESC",
    "SELECT DISTINCT msg_id FROM recipients",
    "SELECT msg_id FROM bodies",
)


@dataclass
class OpenResult:
    """What `open_database` found, for the recovery report."""

    set_aside_path: str | None = None
    salvaged: int = 0
    lost: list[tuple[str, str]] = field(default_factory=list)


def connect(path: Path) -> sqlite3.Connection:
    """Open or create the database in WAL mode with synchronous=FULL and the schema in place.

    Normal (not exclusive) locking, so that an operator's `queue` command can open the same
    database `shared` beside the serving relay: WAL lets it read while the owner writes, and
    its rare writes (retry, delete) wait for the owner's transaction on the busy timeout.
    """
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    try:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"the queue database cannot use WAL (mode {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_size_limit = 67108864")
        conn.execute("BEGIN IMMEDIATE")
        store.create_schema(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.close()
        raise
    # SQLite syncs the directory when it creates the WAL, not when it creates the database.
    fsync_dir(path.parent)
    return conn


def open_database(path: Path, result: OpenResult, *, shared: bool = False) -> sqlite3.Connection:
    """Open the queue database; if it is damaged, set it aside and salvage it (see module).

    A `shared` opener (not the owner) only connects: it never judges or moves the database.
    """
    if shared:
        return connect(path)
    try:
        conn = connect(path)
        problem = _integrity_problem(conn)
        if problem is None:
            return conn
        conn.close()
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _DAMAGED:
            raise
        problem = str(exc)
    moved = _move_aside(path)
    log.error("queue: database damaged (%s); moved to %s", problem, moved)
    conn = connect(path)
    result.set_aside_path = str(moved)
    result.salvaged, result.lost = _salvage(moved, conn, problem)
    return conn


def recover(conn: sqlite3.Connection, now: float) -> tuple[list[tuple[str, str]], int]:
    """Set aside every entry that cannot be trusted; release leases. Return (set aside, leases)."""
    bad: dict[str, str] = {}
    rows = conn.execute("SELECT m.id, m.size, m.sha256, b.data FROM messages m LEFT JOIN bodies b ON b.msg_id = m.id")
    for msg_id, size, digest, body in rows:
        problem = store.body_problem(body, size, digest)
        if problem:
            bad[msg_id] = problem
    for (msg_id,) in conn.execute(
        "SELECT id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id)"
    ):
        bad.setdefault(msg_id, "no recipients")
    for (msg_id,) in conn.execute(
        "SELECT msg_id FROM recipients WHERE msg_id NOT IN (SELECT id FROM messages) "
        "UNION SELECT msg_id FROM bodies WHERE msg_id NOT IN (SELECT id FROM messages)"
    ):
        bad.setdefault(msg_id, "body or recipients without an entry")
    for msg_id, reason in bad.items():
        store.set_aside(conn, msg_id, reason, now)
    released = conn.execute("UPDATE messages SET lease_until = NULL WHERE lease_until IS NOT NULL").rowcount
    conn.execute("UPDATE recipients SET leased = 0 WHERE leased != 0")
    for (msg_id,) in conn.execute(
        f"SELECT id FROM messages m WHERE NOT EXISTS (SELECT 1 FROM recipients r "
        f"WHERE r.msg_id = m.id AND r.state IN {_OPEN})"
    ).fetchall():
        store.settle(conn, msg_id)  # every recipient final: the entry is done
    due = f"(SELECT min(next_attempt_at) FROM recipients r WHERE r.msg_id = messages.id AND r.state IN {_OPEN})"
    conn.execute(f"UPDATE messages SET next_due = {due} WHERE next_due IS NOT {due}")
    return list(bad.items()), released


def fsync_dir(path: Path) -> None:
    """Make the directory's entries (files created, renamed) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _integrity_problem(conn: sqlite3.Connection) -> str | None:
    rows = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    return None if rows == ["ok"] else "; ".join(" ".join(str(r).split()) for r in rows)


def _move_aside(path: Path) -> Path:
    folder = path.parent / "corrupt"
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = folder / f"{path.stem}-{stamp}-{secrets.token_hex(3)}{path.suffix}"
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    fsync_dir(folder)
    fsync_dir(path.parent)
    return target


def _salvage(source: Path, conn: sqlite3.Connection, problem: str) -> tuple[int, list]:
    """Copy every sound entry of a damaged database into `conn`; record the others."""
    now = time.time()
    lost: list[tuple[str, str]] = []
    salvaged = 0
    try:
        old = sqlite3.connect(source, isolation_level=None)
    except sqlite3.Error as exc:
        log.error("queue: damaged database %s cannot be opened: %s", source, exc)
        return 0, lost
    ids: dict[str, None] = {}
    for query in _LISTINGS:
        try:
            for (msg_id,) in old.execute(query):
                ids.setdefault(msg_id)
        except sqlite3.Error as exc:  # a damaged page cut the scan short: look elsewhere
            log.error("queue: %r on %s stopped after %d ids: %s", query, source, len(ids), exc)
            continue
        if query == _LISTINGS[0]:
            break  # the entries table was read in full
    conn.execute("BEGIN IMMEDIATE")
    for msg_id in ids:
        reason = _copy_entry(old, conn, msg_id, now, problem)
        if reason is None:
            salvaged += 1
        else:
            lost.append((msg_id, reason))
    conn.execute("COMMIT")
    old.close()
    return salvaged, lost


def _copy_entry(old: sqlite3.Connection, conn: sqlite3.Connection, msg_id: str, now: float, problem: str) -> str | None:
    """Copy one entry, or record it in `corrupt` and return why it could not be copied."""
    message = body = None
    recipients: list = []
    try:
        message = old.execute(f"SELECT {store.MESSAGE_COLUMNS} FROM messages WHERE id = ?", (msg_id,)).fetchone()
        recipients = old.execute(
            f"SELECT {store.RECIPIENT_COLUMNS} FROM recipients WHERE msg_id = ?", (msg_id,)
        ).fetchall()
        row = old.execute("SELECT data FROM bodies WHERE msg_id = ?", (msg_id,)).fetchone()
        body = row and row[0]
        reason = store.body_problem(body, message[4], message[5]) or (None if recipients else "no recipients")
    except (sqlite3.Error, TypeError, IndexError) as exc:
        reason = f"unreadable: {exc}"
    if reason is None:
        conn.execute(
            f"INSERT INTO messages ({store.MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            message[:8],
        )
        conn.execute("INSERT INTO bodies (msg_id, data) VALUES (?, ?)", (msg_id, body))
        conn.executemany(
            f"INSERT INTO recipients ({store.RECIPIENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)",
            [r[:6] + r[7:] for r in recipients],
        )
        held_at = _held_at(old, msg_id)
        if held_at is not None:  # held mail stays held through a salvage
            conn.execute("UPDATE messages SET held_at = ? WHERE id = ?", (held_at, msg_id))
        return None
    reason = f"database damaged ({problem}); {reason}"
    pairs = [(r[1], r[3]) for r in recipients]
    sender, meta, created = (message[1], message[2], message[3]) if message else (None,) * 3
    store.record_corrupt(conn, msg_id, reason, now, sender, pairs, meta, created, body)
    return reason


def _held_at(old: sqlite3.Connection, msg_id: str) -> float | None:
    """When the entry was put on hold in the damaged database (None: not held, not readable,
    or a version-1 database without the column)."""
    try:
        row = old.execute("SELECT held_at FROM messages WHERE id = ?", (msg_id,)).fetchone()
    except sqlite3.Error:
        return None
    return row and row[0]
