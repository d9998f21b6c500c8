"""The queue's tables and the SQL that reads and changes them.

Every function takes the writer thread's connection and runs inside the transaction the
`GroupCommitter` opened: none of them commits, and each leaves the tables consistent on its
own, so a job can be rolled back alone.

Tables:

- `messages`: one row per entry (sender, meta as JSON, creation time, body size and
  SHA-256, delay-warning flag, `next_due` = earliest retry time of its open recipients, the
  lease, and `held_at`: when an operator put it on hold, NULL when not held).
- `bodies`: the message bytes as one BLOB per entry, apart from `messages` so that scans of
  the metadata never page through message content.
- `recipients`: one row per recipient with its state, attempts, retry time, last error, last
  TLS result and whether the current lease covers it.
- `corrupt`: entries set aside because they could not be trusted, with the reason and
  whatever could still be read. Nothing there is ever delivered.

A held entry (`queue hold`, Postfix's `postsuper -h`) is never leased; everything else about
it (its recipients' retry times, `next_due`) is kept as it was, so `unhold` gives it back to
the schedule it had. The lease scan reads the partial index `messages_due_unheld`, which has
no held entry in it: a thousand entries on hold cost the scheduler's question nothing.

Schema versions (`PRAGMA user_version`): 1 the tables above without `held_at`; 2 adds
`held_at` and its index (`MIGRATIONS`). A database of an older version is brought up to date
when opened, additively (old rows read as not held); one of a newer version is refused.

Invariants: `bodies` and `recipients` rows exist only with their `messages` row (foreign
keys, ON DELETE CASCADE); an entry with no open recipient does not exist (it is removed,
body included, by the same transaction that closes its last recipient).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import secrets
import sqlite3

from engine.relay.queue.types import (
    STATES,
    CorruptEntry,
    Entry,
    EntryDetail,
    EntrySummary,
    Leased,
    NotQueued,
    QueueWriteError,
    Recipient,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS messages (
        id          TEXT PRIMARY KEY,
        sender      TEXT NOT NULL,
        meta        TEXT NOT NULL,
        created_at  REAL NOT NULL,
        size        INTEGER NOT NULL,
        sha256      BLOB NOT NULL,
        warned      INTEGER NOT NULL DEFAULT 0,
        next_due    REAL NOT NULL,
        lease_until REAL
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (next_due)",
    """CREATE TABLE IF NOT EXISTS bodies (
        msg_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        data   BLOB NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS recipients (
        msg_id          TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        rcpt            TEXT NOT NULL,
        position        INTEGER NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        leased          INTEGER NOT NULL DEFAULT 0,
        last_error      TEXT,
        last_tls        TEXT,
        detail          TEXT,
        updated_at      REAL,
        PRIMARY KEY (msg_id, rcpt)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS corrupt (
        seq          INTEGER PRIMARY KEY,
        id           TEXT NOT NULL,
        set_aside_at REAL NOT NULL,
        reason       TEXT NOT NULL,
        sender       TEXT,
        recipients   TEXT NOT NULL,
        meta         TEXT,
        created_at   REAL,
        body         BLOB
    )""",
)

# What each version adds to the one before; the tables of SCHEMA are version 1's. Additive only:
# a relay of the older version keeps working beside the new columns (it names its columns).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE messages ADD COLUMN held_at REAL DEFAULT NULL",
        "CREATE INDEX IF NOT EXISTS messages_due_unheld ON messages (next_due) WHERE held_at IS NULL",
    ),
}

MESSAGE_COLUMNS = "id, sender, meta, created_at, size, sha256, warned, next_due, lease_until"
RECIPIENT_COLUMNS = (
    "msg_id, rcpt, position, state, attempts, next_attempt_at, leased, last_error, last_tls, detail, updated_at"
)
_OPEN = "('pending', 'deferred')"  # OPEN_STATES, spelled out for SQL
_RCPT_FIELDS = "rcpt, state, attempts, next_attempt_at, last_error, last_tls, detail"


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables if missing, or bring an older schema up to date (`MIGRATIONS`, in
    the caller's transaction); refuse a queue written by a newer schema."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"queue schema {version} is newer than this program ({SCHEMA_VERSION})")
    if version == SCHEMA_VERSION:
        return  # nothing to write: opening a full disk must not need free space
    if version == 0:
        for statement in SCHEMA:
            conn.execute(statement)
    for target in range(max(version, 1) + 1, SCHEMA_VERSION + 1):
        for statement in MIGRATIONS[target]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


_SEQUENCE = itertools.count(secrets.randbelow(1 << 16))


def new_id(now: float) -> str:
    """An entry id: 12 hex characters, the arrival second then a sequence number (Postfix's
    long queue ids also start with the time). Ids in arrival order put every insert at the
    end of the tables' B-trees; random ids scattered them over the whole table, and with
    100,000 entries queued each commit read and rewrote pages all over it: intake fell to
    0.6x of an empty queue's rate. Unique while fewer than 65,536 arrive in one second (a
    clash is drawn again)."""
    return f"{int(now) & 0xFFFFFFFF:08x}{next(_SEQUENCE) & 0xFFFF:04x}"


def insert(
    conn: sqlite3.Connection,
    sender: str,
    recipients: list[str],
    body: bytes,
    meta_json: str,
    now: float,
    prefix: bytes = b"",
) -> str:
    """Add one entry with every recipient pending and due at `now`; return its new id.

    The stored body is `prefix + body`, with its SHA-256 computed here (on the writer, off
    the event loop) (the relay's own header lines before what the
    client sent). A large one is written into its BLOB a MiB at a time (SQLite's incremental
    BLOB I/O): neither the joined body nor SQLite's private copy of a bound value is made."""
    size = len(prefix) + len(body)
    sha = hashlib.sha256(prefix)
    sha.update(body)
    digest = sha.digest()
    for _ in range(8):
        msg_id = new_id(now)
        try:
            conn.execute(
                f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, 0, ?, NULL)",
                (msg_id, sender, meta_json, now, size, digest, now),
            )
        except sqlite3.IntegrityError:  # 48-bit id already taken: draw again
            continue
        break
    else:
        raise QueueWriteError(True, "could not allocate a queue id")
    if size <= BLOB_CHUNK:
        conn.execute("INSERT INTO bodies (msg_id, data) VALUES (?, ?)", (msg_id, prefix + body if prefix else body))
    else:
        row = conn.execute("INSERT INTO bodies (msg_id, data) VALUES (?, zeroblob(?))", (msg_id, size)).lastrowid
        with conn.blobopen("bodies", "data", row, readonly=False) as blob:
            blob.write(prefix)
            view = memoryview(body)
            for at in range(0, len(view), BLOB_CHUNK):
                blob.write(view[at : at + BLOB_CHUNK])
    conn.executemany(
        "INSERT INTO recipients (msg_id, rcpt, position, state, next_attempt_at) VALUES (?, ?, ?, 'pending', ?)",
        [(msg_id, rcpt, position, now) for position, rcpt in enumerate(recipients)],
    )
    return msg_id


def lease_due(conn: sqlite3.Connection, now: float, limit: int, lease_s: float) -> list[Entry]:
    """Lease up to `limit` entries that have open recipients due at `now`, with their bodies.

    An entry is skipped while another lease on it runs. A body that fails its size or
    SHA-256 check is set aside instead of being handed out.
    """
    return [leased.with_body(leased.body) for leased in lease(conn, now, limit, lease_s, bodies=limit)]


def lease(conn: sqlite3.Connection, now: float, limit: int, lease_s: float, bodies: int = 0) -> list[Leased]:
    """Lease up to `limit` entries that have open recipients due at `now`; the first `bodies`
    of them come with their body (checked: a damaged one is set aside and its entry not
    leased), the others without (`load_body` reads one when it is needed). The scan walks
    only entries that are due, not leased and not held: a lease moves `next_due` to its end,
    so mail that waits in a scheduler's memory costs nothing here, and held mail is not in
    the index the scan reads (`messages_due_unheld`).
    """
    rows = conn.execute(
        "SELECT id, sender, meta, created_at, size, warned FROM messages "
        "WHERE held_at IS NULL AND next_due <= ? AND (lease_until IS NULL OR lease_until <= ?) "
        "ORDER BY next_due LIMIT ?",
        (now, now, limit),
    ).fetchall()
    lease_until = now + lease_s
    entries = []
    for msg_id, sender, meta, created_at, size, warned in rows:
        due = [
            _recipient(row)
            for row in conn.execute(
                f"SELECT {_RCPT_FIELDS} FROM recipients WHERE msg_id = ? "
                f"AND state IN {_OPEN} AND next_attempt_at <= ? ORDER BY position",
                (msg_id, now),
            )
        ]
        if not due:  # next_due was stale; put it right and move on
            settle(conn, msg_id)
            continue
        body = None
        if len(entries) < bodies:
            body = load_body(conn, msg_id, now)
            if body is None:  # set aside
                continue
        conn.execute(
            f"UPDATE recipients SET leased = (state IN {_OPEN} AND next_attempt_at <= ?) WHERE msg_id = ?",
            (now, msg_id),
        )
        conn.execute(
            "UPDATE messages SET lease_until = ?, next_due = max(next_due, ?) WHERE id = ?",
            (lease_until, lease_until, msg_id),
        )
        entries.append(
            Leased(msg_id, sender, tuple(due), json.loads(meta), created_at, bool(warned), lease_until, size, body)
        )
    return entries


def load_body(conn: sqlite3.Connection, msg_id: str, now: float) -> bytes | None:
    """The entry's body once checked against its size and SHA-256; None when the entry is gone
    or its body failed the check (the entry is then set aside with the reason)."""
    row = conn.execute(
        "SELECT m.size, m.sha256, b.rowid, CASE WHEN length(b.data) <= ? THEN b.data END"
        " FROM messages m LEFT JOIN bodies b ON b.msg_id = m.id WHERE m.id = ?",
        (BLOB_CHUNK, msg_id),
    ).fetchone()
    if row is None:
        return None
    size, digest, body_row, data = row
    body = bytes(data) if data is not None else None if body_row is None else read_blob(conn, body_row)
    problem = body_problem(body, size, digest)
    if problem:
        set_aside(conn, msg_id, problem, now)
        return None
    return body


def mark(
    conn: sqlite3.Connection,
    msg_id: str,
    rcpts: list[str],
    state: str,
    now: float,
    *,
    error: str | None = None,
    detail: str | None = None,
    tls: str | None = None,
    next_attempt_at: float | None = None,
) -> int:
    """Record one delivery attempt's outcome for open recipients; return how many changed.

    Recipients already final are left alone (a late report never undoes a delivery). The
    lease ends for the recipients reported; the entry goes once none is open.
    """
    changed = 0
    for rcpt in rcpts:
        cursor = conn.execute(
            "UPDATE recipients SET state = ?, attempts = attempts + 1, leased = 0, "
            "last_error = coalesce(?, last_error), last_tls = coalesce(?, last_tls), "
            "detail = coalesce(?, detail), "
            "next_attempt_at = coalesce(?, next_attempt_at), updated_at = ? "
            f"WHERE msg_id = ? AND rcpt = ? AND state IN {_OPEN}",
            (state, error, tls, detail, next_attempt_at, now, msg_id, rcpt),
        )
        changed += cursor.rowcount
    if changed:
        settle(conn, msg_id)
    return changed


def postpone(
    conn: sqlite3.Connection, items: list[tuple[str, list[str]]], reason: str, until: float, now: float
) -> int:
    """Defer open recipients to `until` without counting an attempt (none was made: their
    destination is dead). `items` are (entry id, recipients). Returns recipients changed."""
    changed = 0
    for msg_id, rcpts in items:
        count = 0
        for rcpt in rcpts:
            count += conn.execute(
                "UPDATE recipients SET state = 'deferred', leased = 0, last_error = ?, next_attempt_at = ?, "
                f"updated_at = ? WHERE msg_id = ? AND rcpt = ? AND state IN {_OPEN}",
                (reason, until, now, msg_id, rcpt),
            ).rowcount
        if count:
            settle(conn, msg_id)
        changed += count
    return changed


def settle(conn: sqlite3.Connection, msg_id: str) -> None:
    """Bring `next_due` and the lease up to date, or remove the entry if nothing is open.
    While some recipient is still leased the entry is not due before the lease ends."""
    count, next_due, leased = conn.execute(
        f"SELECT count(*), min(next_attempt_at), max(leased) FROM recipients WHERE msg_id = ? AND state IN {_OPEN}",
        (msg_id,),
    ).fetchone()
    if count == 0:
        conn.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
        return
    conn.execute(
        "UPDATE messages SET next_due = CASE WHEN ? THEN max(?, coalesce(lease_until, 0)) ELSE ? END, "
        "lease_until = CASE WHEN ? THEN lease_until ELSE NULL END WHERE id = ?",
        (leased, next_due, next_due, leased, msg_id),
    )


def release(conn: sqlite3.Connection, msg_id: str) -> None:
    """End the lease on an entry without reporting anything (a worker giving it back)."""
    conn.execute("UPDATE recipients SET leased = 0 WHERE msg_id = ?", (msg_id,))
    conn.execute("UPDATE messages SET lease_until = NULL WHERE id = ?", (msg_id,))
    settle(conn, msg_id)  # due again when its recipients are


def mark_warned(conn: sqlite3.Connection, msg_id: str) -> None:
    """Remember that the sender got a delay warning for this entry."""
    _require(conn.execute("UPDATE messages SET warned = 1 WHERE id = ?", (msg_id,)), msg_id)


def retry(conn: sqlite3.Connection, msg_id: str, now: float) -> int:
    """Make every open recipient due at `now`; return how many there are."""
    _require(conn.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)), msg_id)
    cursor = conn.execute(
        f"UPDATE recipients SET next_attempt_at = ? WHERE msg_id = ? AND state IN {_OPEN}",
        (now, msg_id),
    )
    settle(conn, msg_id)
    return cursor.rowcount


def delete(conn: sqlite3.Connection, msg_id: str) -> None:
    """Remove an entry, body and recipients, without any notice to the sender."""
    _require(conn.execute("DELETE FROM messages WHERE id = ?", (msg_id,)), msg_id)


def hold(conn: sqlite3.Connection, msg_id: str, now: float) -> bool:
    """Put an entry on hold (no lease until `unhold`); False if it already was. A lease that
    runs now is left to end: a delivery already started records its outcome as usual."""
    _require(conn.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)), msg_id)
    return conn.execute("UPDATE messages SET held_at = ? WHERE id = ? AND held_at IS NULL", (now, msg_id)).rowcount > 0


def unhold(conn: sqlite3.Connection, msg_id: str) -> bool:
    """Take an entry off hold; its recipients keep their retry times (those past are due at
    once). False if it was not held."""
    _require(conn.execute("SELECT 1 FROM messages WHERE id = ?", (msg_id,)), msg_id)
    return (
        conn.execute("UPDATE messages SET held_at = NULL WHERE id = ? AND held_at IS NOT NULL", (msg_id,)).rowcount > 0
    )


def set_aside(conn: sqlite3.Connection, msg_id: str, reason: str, now: float) -> None:
    """Move an entry into `corrupt` with `reason` and whatever of it can be read."""
    row = conn.execute("SELECT sender, meta, created_at FROM messages WHERE id = ?", (msg_id,)).fetchone()
    sender, meta, created_at = row if row else (None, None, None)
    recipients = conn.execute(
        "SELECT rcpt, state FROM recipients WHERE msg_id = ? ORDER BY position", (msg_id,)
    ).fetchall()
    record_corrupt(conn, msg_id, reason, now, sender, recipients, meta, created_at, _body(conn, msg_id))
    for table, column in (("messages", "id"), ("bodies", "msg_id"), ("recipients", "msg_id")):
        conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (msg_id,))


def record_corrupt(
    conn: sqlite3.Connection,
    msg_id: str,
    reason: str,
    now: float,
    sender: str | None,
    recipients: list[tuple[str, str]],
    meta: str | None,
    created_at: float | None,
    body: bytes | None,
) -> None:
    """Write one row of `corrupt` (recipients as (address, state) pairs)."""
    conn.execute(
        "INSERT INTO corrupt (id, set_aside_at, reason, sender, recipients, meta, created_at, "
        "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (msg_id, now, reason, sender, json.dumps(recipients), meta, created_at, body),
    )
    log.error("queue: entry %s set aside: %s", msg_id, reason)


def body_problem(body: bytes | None, size: int, digest: bytes) -> str | None:
    """Say what is wrong with a stored body, or None if it matches its size and SHA-256."""
    if body is None:
        return "body missing"
    if len(body) < size:
        return f"body truncated: {len(body)} of {size} bytes"
    if len(body) != size:
        return f"body has {len(body)} bytes, {size} expected"
    if hashlib.sha256(body).digest() != digest:
        return "body checksum mismatch"
    return None


def show(conn: sqlite3.Connection, msg_id: str) -> EntryDetail:
    """Everything about one entry."""
    row = conn.execute(
        "SELECT sender, created_at, size, sha256, warned, meta, next_due, lease_until, held_at "
        "FROM messages WHERE id = ?",
        (msg_id,),
    ).fetchone()
    if row is None:
        raise NotQueued(msg_id)
    sender, created_at, size, digest, warned, meta, next_due, lease_until, held_at = row
    recipients = tuple(
        _recipient(r)
        for r in conn.execute(f"SELECT {_RCPT_FIELDS} FROM recipients WHERE msg_id = ? ORDER BY position", (msg_id,))
    )
    return EntryDetail(
        msg_id, sender, created_at, size, digest.hex(), bool(warned), json.loads(meta),
        recipients, next_due, lease_until, held_at,
    )  # fmt: skip


def list_entries(
    conn: sqlite3.Connection, limit: int, state: str | None, after: str | None = None, held: bool | None = None
) -> list[EntrySummary]:
    """The oldest `limit` entries after the entry id `after` (the last of the previous page; it
    may have left the queue since), optionally only those with a recipient in `state`, and
    only the held (`held=True`) or only those not held (`held=False`). Each comes with its
    open recipients (state, attempts, last error, next attempt: `postqueue -p`'s lines).

    Ids follow arrival (`new_id`), so the table's own key is the order: a page walks it from
    the cursor and stops when it is full, and costs what it shows whatever the queue holds
    (with a filter, entries that do not match are skipped on the way).
    """
    if state is not None and state not in STATES:
        raise ValueError(f"unknown recipient state {state!r}; expected one of {STATES}")
    where, params = [], []
    if after is not None:
        where.append("id > ?")
        params.append(after)
    if state is not None:
        where.append("EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = messages.id AND r.state = ?)")
        params.append(state)
    if held is not None:
        where.append("held_at IS NOT NULL" if held else "held_at IS NULL")
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT id, sender, created_at, size, held_at FROM messages {clause} ORDER BY id LIMIT ?", (*params, limit)
    ).fetchall()
    summaries = []
    for msg_id, sender, created_at, size, held_at in rows:
        counts = conn.execute(
            f"SELECT state, count(*), min(CASE WHEN state IN {_OPEN} THEN next_attempt_at END) "
            "FROM recipients WHERE msg_id = ? GROUP BY state",
            (msg_id,),
        ).fetchall()
        due = [row[2] for row in counts if row[2] is not None]
        last = conn.execute(
            "SELECT last_error FROM recipients WHERE msg_id = ? AND last_error IS NOT NULL "
            "ORDER BY updated_at DESC LIMIT 1",
            (msg_id,),
        ).fetchone()
        waiting = tuple(
            _recipient(r)
            for r in conn.execute(
                f"SELECT {_RCPT_FIELDS} FROM recipients WHERE msg_id = ? AND state IN {_OPEN} ORDER BY position",
                (msg_id,),
            )
        )
        states = {row[0]: row[1] for row in counts}
        summaries.append(
            EntrySummary(
                msg_id, sender, created_at, size, states, min(due, default=0.0), last and last[0], held_at, waiting
            )
        )
    return summaries


def open_recipients(conn: sqlite3.Connection) -> list[str]:
    """Every open recipient's address (for counting queued mail by domain: a full scan)."""
    return [row[0] for row in conn.execute(f"SELECT rcpt FROM recipients WHERE state IN {_OPEN}")]


def count(conn: sqlite3.Connection) -> int:
    """Number of entries in the queue."""
    return conn.execute("SELECT count(*) FROM messages").fetchone()[0]


def corrupt_entries(conn: sqlite3.Connection, limit: int) -> list[CorruptEntry]:
    """The most recently set-aside entries, newest first."""
    rows = conn.execute(
        "SELECT id, reason, set_aside_at, sender, recipients FROM corrupt ORDER BY seq DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        CorruptEntry(msg_id, reason, at, sender, tuple(tuple(r) for r in json.loads(rcpts)))
        for msg_id, reason, at, sender, rcpts in rows
    ]


def totals(conn: sqlite3.Connection) -> tuple[int, int, dict[str, int], int, int]:
    """(entries, body bytes, recipients per state, set-aside entries, held entries)."""
    entries, size, held = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0), count(held_at) FROM messages"
    ).fetchone()
    per_state = dict.fromkeys(STATES, 0)
    per_state.update(conn.execute("SELECT state, count(*) FROM recipients GROUP BY state"))
    corrupt = conn.execute("SELECT count(*) FROM corrupt").fetchone()[0]
    return entries, size, per_state, corrupt, held


BLOB_CHUNK = 1 << 20


def read_blob(conn: sqlite3.Connection, row: int) -> bytes:
    """A large body by its row, through incremental BLOB I/O straight into one bytes object
    (a SELECT of a BLOB spanning overflow pages assembles it in a buffer of SQLite's
    first, then copies it)."""
    with conn.blobopen("bodies", "data", row) as blob:
        return blob.read()


def _body(conn: sqlite3.Connection, msg_id: str) -> bytes | None:
    row = conn.execute("SELECT data FROM bodies WHERE msg_id = ?", (msg_id,)).fetchone()
    return None if row is None else bytes(row[0])


def _recipient(row: tuple) -> Recipient:
    return Recipient(*row)


def _require(cursor: sqlite3.Cursor, msg_id: str) -> None:
    if cursor.rowcount == 0 or (cursor.rowcount < 0 and cursor.fetchone() is None):
        raise NotQueued(msg_id)
