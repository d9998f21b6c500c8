"""The portal's data, every operation one transaction on `db.Database`.

What is kept, and how:

- `messages`: one row per copy (each recipient's, each sender's Sent copy). The raw message
  is a blob sealed under the copy's own key (AES-256-GCM, the id as associated data); the
  row holds that key wrapped by the portal key and a sealed `head` (from, to, subject, date,
  attachment names, a snippet) so a mailbox page opens without reading blobs. `origin`
  (queue id + recipient) makes storing idempotent: a delivery retried after a crash finds
  the copy it stored before. Blobs: files under `data_dir/portal/blobs` (SQLite) or the
  `blobs` table (PostgreSQL, shared by every relay).
- `terms`: the blind search index (crypto.PortalKey.tokens).
- `accounts`: argon2id hash, TOTP secret and security phrase (both sealed), a registered
  browser key pair (public key; private key as the browser wrapped it).
- `codes`, `sessions`: only SHA-256 digests of what the user holds.
- `events`: timestamps of failures and sends, per key, for rate limits.
- `audit`: every open, code sent, login, failed login, key release, deletion.
- `held_keys`: message keys the relay holds for the advanced method, until released,
  revoked or expired.

Times are floats (seconds since the epoch) from the injectable `clock`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.fsutil import private_dir, write_atomic
from engine.portal import crypto
from engine.portal.crypto import PortalKey, PortalKeyError
from engine.portal.db import Database, Tx

SCHEMA_VERSION = 1
FOLDERS = ("inbox", "sent", "trash")
PAGE = 50

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    address TEXT PRIMARY KEY, password TEXT, totp {BLOB}, phrase {BLOB}, created DOUBLE PRECISION NOT NULL,
    public_key TEXT, private_key TEXT, key_created DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, folder TEXT NOT NULL, restore_to TEXT,
    created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, seen INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL, attachments INTEGER NOT NULL, wrapped {BLOB} NOT NULL, head {BLOB} NOT NULL,
    origin TEXT UNIQUE, notified INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS messages_folder ON messages (owner, folder, created);
CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires);
CREATE TABLE IF NOT EXISTS terms (message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    token TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS terms_token ON terms (token);
CREATE INDEX IF NOT EXISTS terms_message ON terms (message_id);
CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, data {BLOB} NOT NULL);
CREATE TABLE IF NOT EXISTS codes (
    id TEXT PRIMARY KEY, address TEXT NOT NULL, scope TEXT NOT NULL, digest TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    used INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS codes_address ON codes (address, scope);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, address TEXT, stage TEXT NOT NULL, csrf TEXT NOT NULL, authn TEXT,
    created DOUBLE PRECISION NOT NULL, seen DOUBLE PRECISION NOT NULL, login_at DOUBLE PRECISION, pending TEXT);
CREATE INDEX IF NOT EXISTS sessions_address ON sessions (address);
CREATE TABLE IF NOT EXISTS events (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS events_key ON events (key, at);
CREATE TABLE IF NOT EXISTS audit (
    id {SERIAL}, at DOUBLE PRECISION NOT NULL, event TEXT NOT NULL, address TEXT, message_id TEXT,
    ip TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE TABLE IF NOT EXISTS held_keys (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, wrapped {BLOB} NOT NULL, created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION, released INTEGER NOT NULL DEFAULT 0,
    data_id TEXT);
"""


@dataclass(frozen=True)
class Head:
    """What a mailbox row shows (sealed at rest with the message's key)."""

    sender: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    subject: str
    date: float
    attachments: tuple[str, ...]
    snippet: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "from": self.sender,
                "to": list(self.to),
                "cc": list(self.cc),
                "subject": self.subject,
                "date": self.date,
                "attachments": list(self.attachments),
                "snippet": self.snippet,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Head:
        d = json.loads(data)
        return cls(
            d["from"], tuple(d["to"]), tuple(d["cc"]), d["subject"], d["date"], tuple(d["attachments"]), d["snippet"]
        )


@dataclass(frozen=True)
class Row:
    id: str
    owner: str
    folder: str
    created: float
    expires: float
    seen: bool
    size: int
    head: Head


@dataclass(frozen=True)
class Account:
    address: str
    password: str | None
    totp: str | None  # the base32 secret, opened
    phrase: str | None
    public_key: str | None
    private_key: str | None
    key_created: float | None = None


@dataclass(frozen=True)
class Session:
    id: str  # the digest (the cookie holds the token)
    address: str | None
    stage: str  # anonymous | password (second factor due) | enroll (TOTP enrolment due) | full
    csrf: str
    authn: str | None  # password | code | password+totp | code+totp
    created: float
    seen: float
    login_at: float | None
    pending: str | None  # JSON: a login in progress (the address a code went to, where to go next)


@dataclass(frozen=True)
class HeldKey:
    id: str
    owner: str
    key: bytes | None  # None once revoked or expired
    expires: float
    revoked: bool
    data_id: str | None


class Store:
    def __init__(self, db: Database, key: PortalKey, blob_dir: Path | None, clock: Callable[[], float] = time.time):
        self.db = db
        self.key = key
        self.blob_dir = blob_dir  # None: blobs in the database
        self.clock = clock
        self._create()

    # -- schema ----------------------------------------------------------------------------

    def _create(self) -> None:
        serial = "BIGSERIAL PRIMARY KEY" if self.db.dialect == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
        ddl = _SCHEMA.replace("{BLOB}", self.db.blob_type()).replace("{SERIAL}", serial)
        with self.db.transaction() as tx:
            if self.db.dialect == "postgresql":  # two relays starting at once create it once
                tx.run("SELECT pg_advisory_xact_lock(7336021)")
            for statement in filter(str.strip, ddl.split(";")):
                tx.run(statement)
            found = tx.value("SELECT value FROM meta WHERE name = 'key_check'")
            if found is None:
                tx.run("INSERT INTO meta (name, value) VALUES ('key_check', ?)", (self.key.check,))
                tx.run("INSERT INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif found != self.key.check:
                raise PortalKeyError(
                    "the portal key is not the one this portal's messages were sealed with "
                    "(relays that share a portal database must share encryption.secure_portal.master_key)"
                )

    # -- messages --------------------------------------------------------------------------

    def put(
        self,
        owner: str,
        folder: str,
        raw: bytes,
        head: Head,
        *,
        expires: float,
        origin: str | None = None,
        text: str | None = None,
    ) -> tuple[str, bool]:
        """Store a copy of `raw` for `owner`; returns (id, created). With an `origin` already
        stored, nothing is written and the stored copy's id is returned."""
        owner = owner.lower()
        if origin is not None:
            with self.db.transaction() as tx:
                found = tx.value("SELECT id FROM messages WHERE origin = ?", (origin,))
            if found:
                return found, False
        msg_id = crypto.random_id()
        message_key = crypto.new_key()
        sealed = crypto.seal(message_key, raw, msg_id.encode())
        sealed_head = crypto.seal(message_key, head.to_json(), b"head:" + msg_id.encode())
        readable = text if text is not None else _text_of(raw)  # the caller's parse, when it has one
        tokens = self.key.tokens(owner, " ".join((head.sender, *head.to, *head.cc, head.subject, readable)))
        now = self.clock()
        if self.blob_dir is not None:
            self._write_blob(msg_id, sealed)
        try:
            with self.db.transaction() as tx:
                if self.blob_dir is None:
                    tx.run("INSERT INTO blobs (id, data) VALUES (?, ?)", (msg_id, sealed))
                tx.run(
                    "INSERT INTO messages (id, owner, folder, created, expires, size, attachments, wrapped, head, origin)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        msg_id,
                        owner,
                        folder,
                        now,
                        expires,
                        len(raw),
                        len(head.attachments),
                        self.key.wrap(message_key, msg_id),
                        sealed_head,
                        origin,
                    ),
                )
                tx.many("INSERT INTO terms (message_id, token) VALUES (?, ?)", [(msg_id, t) for t in sorted(tokens)])
        except Exception:
            if origin is not None:  # a concurrent store of the same origin won: use its copy
                with self.db.transaction() as tx:
                    found = tx.value("SELECT id FROM messages WHERE origin = ?", (origin,))
                if found:
                    self._drop_blob(msg_id)
                    return found, False
            self._drop_blob(msg_id)
            raise
        return msg_id, True

    def folder(self, owner: str, folder: str, *, page: int = 0, size: int = PAGE) -> tuple[list[Row], int]:
        """One page of a folder, newest first, and the folder's total count."""
        with self.db.transaction() as tx:
            total = tx.value("SELECT COUNT(*) FROM messages WHERE owner = ? AND folder = ?", (owner.lower(), folder))
            rows = tx.rows(
                f"SELECT {_COLUMNS} FROM messages WHERE owner = ? AND folder = ? ORDER BY created DESC, id LIMIT ? OFFSET ?",
                (owner.lower(), folder, size, page * size),
            )
        return [self._row(r) for r in rows], int(total)

    def search(self, owner: str, query: str, *, limit: int = PAGE) -> list[Row]:
        """The owner's messages (any folder) holding every word of `query`, newest first."""
        tokens = sorted(self.key.tokens(owner.lower(), query))[:20]
        if not tokens:
            return []
        marks = ",".join("?" * len(tokens))
        # from the terms to the messages (SQLite's CROSS JOIN keeps that order): the cost
        # follows the hits, not the size of the mailbox
        with self.db.transaction() as tx:
            rows = tx.rows(
                f"SELECT {_COLUMNS} FROM ("
                f" SELECT message_id FROM terms WHERE token IN ({marks})"
                " GROUP BY message_id HAVING COUNT(DISTINCT token) = ?) AS hits"
                " CROSS JOIN messages WHERE messages.id = hits.message_id AND messages.owner = ?"
                " ORDER BY messages.created DESC, messages.id LIMIT ?",
                (*tokens, len(tokens), owner.lower(), limit),
            )
        return [self._row(r) for r in rows]

    def get(self, owner: str, msg_id: str) -> tuple[Row, bytes] | None:
        """The owner's message and its raw content; None for another owner's or no message."""
        with self.db.transaction() as tx:
            found = tx.row(f"SELECT {_COLUMNS} FROM messages WHERE id = ? AND owner = ?", (msg_id, owner.lower()))
            blob = None
            if found is not None and self.blob_dir is None:
                blob = tx.value("SELECT data FROM blobs WHERE id = ?", (msg_id,))
        if found is None:
            return None
        row, key = self._opened(found)  # one unwrap for the head and the body
        if self.blob_dir is not None:
            blob = self._read_blob(msg_id)
        return row, crypto.open_sealed(key, bytes(blob), msg_id.encode())

    def exists(self, msg_id: str) -> str | None:
        """The owner of message `msg_id`, or None."""
        with self.db.transaction() as tx:
            return tx.value("SELECT owner FROM messages WHERE id = ?", (msg_id,))

    def notified(self, msg_id: str) -> bool:
        with self.db.transaction() as tx:
            return bool(tx.value("SELECT notified FROM messages WHERE id = ?", (msg_id,), 0))

    def set_notified(self, msg_id: str) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE messages SET notified = 1 WHERE id = ?", (msg_id,))

    def mark_seen(self, owner: str, msg_id: str) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE messages SET seen = 1 WHERE id = ? AND owner = ?", (msg_id, owner.lower()))

    def trash(self, owner: str, msg_id: str) -> bool:
        with self.db.transaction() as tx:
            return (
                tx.run(
                    "UPDATE messages SET restore_to = folder, folder = 'trash' WHERE id = ? AND owner = ? AND folder <> 'trash'",
                    (msg_id, owner.lower()),
                )
                > 0
            )

    def restore(self, owner: str, msg_id: str) -> bool:
        with self.db.transaction() as tx:
            return (
                tx.run(
                    "UPDATE messages SET folder = COALESCE(restore_to, 'inbox'), restore_to = NULL"
                    " WHERE id = ? AND owner = ? AND folder = 'trash'",
                    (msg_id, owner.lower()),
                )
                > 0
            )

    def delete(self, owner: str, msg_id: str) -> bool:
        """Delete for good (only from the trash)."""
        with self.db.transaction() as tx:
            gone = self._delete_rows(tx, "id = ? AND owner = ? AND folder = 'trash'", (msg_id, owner.lower()))
        for found in gone:
            self._drop_blob(found)
        return bool(gone)

    def _delete_rows(self, tx: Tx, where: str, params: tuple) -> list[str]:
        ids = [r[0] for r in tx.rows(f"SELECT id FROM messages WHERE {where}", params)]
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            tx.run(f"DELETE FROM terms WHERE message_id IN ({marks})", chunk)
            tx.run(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
            if self.blob_dir is None:
                tx.run(f"DELETE FROM blobs WHERE id IN ({marks})", chunk)
        return ids

    def _row(self, r: tuple) -> Row:
        return self._opened(r)[0]

    def _opened(self, r: tuple) -> tuple[Row, bytes]:
        """A row of `_COLUMNS` with its head opened, and the message key that opened it."""
        msg_id, owner, folder, created, expires, seen, size, sealed_head, wrapped = r
        key = self.key.unwrap(bytes(wrapped), msg_id)
        head = Head.from_json(crypto.open_sealed(key, bytes(sealed_head), b"head:" + msg_id.encode()))
        return Row(msg_id, owner, folder, created, expires, bool(seen), size, head), key

    # -- blobs -----------------------------------------------------------------------------

    def _blob_path(self, msg_id: str) -> Path:
        assert self.blob_dir is not None
        return self.blob_dir / msg_id[:2] / msg_id

    def _write_blob(self, msg_id: str, data: bytes) -> None:
        path = self._blob_path(msg_id)
        private_dir(path.parent)
        write_atomic(path, data, mode=0o600)

    def _read_blob(self, msg_id: str) -> bytes:
        return self._blob_path(msg_id).read_bytes()

    def _drop_blob(self, msg_id: str) -> None:
        if self.blob_dir is not None:
            self._blob_path(msg_id).unlink(missing_ok=True)

    def blob_count(self) -> int:
        """Stored blobs (files or rows): what retention must bring down with the rows."""
        if self.blob_dir is not None:
            return sum(1 for p in self.blob_dir.glob("*/*") if p.is_file())
        with self.db.transaction() as tx:
            return int(tx.value("SELECT COUNT(*) FROM blobs"))

    # -- accounts --------------------------------------------------------------------------

    def account(self, address: str) -> Account | None:
        address = address.lower()
        with self.db.transaction() as tx:
            found = tx.row(
                "SELECT address, password, totp, phrase, public_key, private_key, key_created FROM accounts WHERE address = ?",
                (address,),
            )
        return None if found is None else self._account(found)

    def _account(self, found: tuple) -> Account:
        address = found[0]
        totp = self.key.open_field(bytes(found[2]), "totp:" + address).decode() if found[2] else None
        phrase = self.key.open_field(bytes(found[3]), "phrase:" + address).decode() if found[3] else None
        return Account(found[0], found[1], totp, phrase, found[4], found[5], found[6])

    def set_password(self, address: str, password_hash: str, phrase: str | None = None) -> None:
        address = address.lower()
        sealed_phrase = self.key.seal_field(phrase.encode(), "phrase:" + address) if phrase else None
        with self.db.transaction() as tx:
            if tx.value("SELECT 1 FROM accounts WHERE address = ?", (address,)) is None:
                tx.run(
                    "INSERT INTO accounts (address, password, phrase, created) VALUES (?, ?, ?, ?)",
                    (address, password_hash, sealed_phrase, self.clock()),
                )
            else:
                tx.run("UPDATE accounts SET password = ? WHERE address = ?", (password_hash, address))
                if sealed_phrase is not None:
                    tx.run("UPDATE accounts SET phrase = ? WHERE address = ?", (sealed_phrase, address))

    def ensure_account(self, address: str) -> None:
        """An account row for `address` (a code-only user enrolling a second factor)."""
        with self.db.transaction() as tx:
            if tx.value("SELECT 1 FROM accounts WHERE address = ?", (address.lower(),)) is None:
                tx.run("INSERT INTO accounts (address, created) VALUES (?, ?)", (address.lower(), self.clock()))

    def set_totp(self, address: str, secret: str | None) -> None:
        address = address.lower()
        sealed = self.key.seal_field(secret.encode(), "totp:" + address) if secret else None
        with self.db.transaction() as tx:
            tx.run("UPDATE accounts SET totp = ? WHERE address = ?", (sealed, address))

    def set_browser_key(self, address: str, public_key: str, private_key: str) -> None:
        with self.db.transaction() as tx:
            tx.run(
                "UPDATE accounts SET public_key = ?, private_key = ?, key_created = ? WHERE address = ?",
                (public_key, private_key, self.clock(), address.lower()),
            )

    def known(self, address: str) -> bool:
        """Whether the portal has anything for `address` (an account, a message, a held key)."""
        address = address.lower()
        with self.db.transaction() as tx:
            return (
                tx.value("SELECT 1 FROM accounts WHERE address = ?", (address,)) is not None
                or tx.value("SELECT 1 FROM messages WHERE owner = ? LIMIT 1", (address,)) is not None
                or tx.value("SELECT 1 FROM held_keys WHERE owner = ? LIMIT 1", (address,)) is not None
            )

    # -- one-time codes --------------------------------------------------------------------

    def new_code(self, address: str, scope: str, code: str, lifetime: float) -> str:
        """Store a code (its digest) for `address`; earlier unused codes of the scope die."""
        code_id = crypto.random_id()
        now = self.clock()
        with self.db.transaction() as tx:
            tx.run("UPDATE codes SET used = 1 WHERE address = ? AND scope = ? AND used = 0", (address.lower(), scope))
            tx.run(
                "INSERT INTO codes (id, address, scope, digest, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (code_id, address.lower(), scope, self.key.code_digest(code), now, now + lifetime),
            )
        return code_id

    def use_code(self, address: str, scope: str, code: str, *, max_attempts: int = 5) -> str:
        """ "ok" (the code is spent), "wrong", "expired" (or spent, or too many attempts)."""
        now = self.clock()
        with self.db.transaction() as tx:
            found = tx.row(
                "SELECT id, digest, expires, attempts FROM codes WHERE address = ? AND scope = ? AND used = 0"
                " ORDER BY created DESC LIMIT 1",
                (address.lower(), scope),
            )
            if found is None or found[2] < now or found[3] >= max_attempts:
                return "expired"
            if not _same(found[1], self.key.code_digest(code.strip())):
                tx.run("UPDATE codes SET attempts = attempts + 1 WHERE id = ?", (found[0],))
                return "wrong"
            tx.run("UPDATE codes SET used = 1 WHERE id = ?", (found[0],))
            return "ok"

    # -- sessions --------------------------------------------------------------------------

    def new_session(self, token: str, address: str | None, stage: str, csrf: str, authn: str | None = None) -> None:
        now = self.clock()
        with self.db.transaction() as tx:
            tx.run(
                "INSERT INTO sessions (id, address, stage, csrf, authn, created, seen, login_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    crypto.digest(token),
                    address.lower() if address else None,
                    stage,
                    csrf,
                    authn,
                    now,
                    now,
                    now if address else None,
                ),
            )

    def session(self, token: str, *, idle: float, lifetime: float) -> Session | None:
        """The live session of `token` (its last use updated), or None: unknown, idle too
        long, or older than `lifetime` since login (then it is deleted)."""
        now = self.clock()
        sid = crypto.digest(token)
        with self.db.transaction() as tx:
            found = tx.row(
                "SELECT id, address, stage, csrf, authn, created, seen, login_at, pending FROM sessions WHERE id = ?",
                (sid,),
            )
            if found is None:
                return None
            session = Session(*found)
            if now - session.seen > idle or now - (session.login_at or session.created) > lifetime:
                tx.run("DELETE FROM sessions WHERE id = ?", (sid,))
                return None
            tx.run("UPDATE sessions SET seen = ? WHERE id = ?", (now, sid))
        return session

    def set_pending(self, session_id: str, pending: str | None) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE sessions SET pending = ? WHERE id = ?", (pending, session_id))

    def set_stage(self, session_id: str, stage: str, authn: str | None = None) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE sessions SET stage = ?, authn = COALESCE(?, authn) WHERE id = ?", (stage, authn, session_id))

    def end_session(self, session_id: str) -> None:
        with self.db.transaction() as tx:
            tx.run("DELETE FROM sessions WHERE id = ?", (session_id,))

    def end_sessions_of(self, address: str, *, keep: str | None = None) -> None:
        with self.db.transaction() as tx:
            tx.run("DELETE FROM sessions WHERE address = ? AND id <> ?", (address.lower(), keep or ""))

    def session_count(self) -> int:
        with self.db.transaction() as tx:
            return int(tx.value("SELECT COUNT(*) FROM sessions"))

    # -- rate limits -----------------------------------------------------------------------

    def note(self, *keys: str) -> None:
        now = self.clock()
        with self.db.transaction() as tx:
            tx.many("INSERT INTO events (key, at) VALUES (?, ?)", [(k, now) for k in keys])

    def recent(self, key: str, window: float) -> tuple[int, float | None]:
        """How many events `key` had in the last `window` seconds, and when the last was."""
        with self.db.transaction() as tx:
            found = tx.row(
                "SELECT COUNT(*), MAX(at) FROM events WHERE key = ? AND at > ?", (key, self.clock() - window)
            )
        return (int(found[0]), found[1]) if found else (0, None)

    def forget(self, key: str) -> None:
        with self.db.transaction() as tx:
            tx.run("DELETE FROM events WHERE key = ?", (key,))

    # -- audit -----------------------------------------------------------------------------

    def audit(
        self,
        event: str,
        *,
        address: str | None = None,
        message_id: str | None = None,
        ip: str | None = None,
        detail: str = "",
    ) -> None:
        with self.db.transaction() as tx:
            tx.run(
                "INSERT INTO audit (at, event, address, message_id, ip, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (self.clock(), event, address.lower() if address else None, message_id, ip, detail[:500]),
            )

    def audit_events(
        self, *, since: float = 0.0, address: str | None = None, event: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        where, params = ["at >= ?"], [since]
        if address:
            where.append("address = ?")
            params.append(address.lower())
        if event:
            where.append("event = ?")
            params.append(event)
        with self.db.transaction() as tx:
            rows = tx.rows(
                f"SELECT at, event, address, message_id, ip, detail FROM audit WHERE {' AND '.join(where)}"
                " ORDER BY id DESC LIMIT ?",
                (*params, limit),
            )
        keys = ("at", "event", "address", "message_id", "ip", "detail")
        return [dict(zip(keys, r, strict=True)) for r in reversed(rows)]

    # -- held keys (the advanced method) ---------------------------------------------------

    def hold_key(
        self, owner: str, key: bytes, expires: float, data_id: str | None = None, key_id: str | None = None
    ) -> str:
        key_id = key_id or crypto.random_id()
        with self.db.transaction() as tx:
            tx.run(
                "INSERT INTO held_keys (id, owner, wrapped, created, expires, data_id) VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, owner.lower(), self.key.wrap(key, "held:" + key_id), self.clock(), expires, data_id),
            )
        return key_id

    def hold_keys(self, keys: list[tuple[str, str, bytes, float, str | None]]) -> None:
        """Hold several keys in one transaction: (key id, owner, key, expires, data id) each."""
        now = self.clock()
        with self.db.transaction() as tx:
            tx.many(
                "INSERT INTO held_keys (id, owner, wrapped, created, expires, data_id) VALUES (?, ?, ?, ?, ?, ?)",
                [(k, o.lower(), self.key.wrap(key, "held:" + k), now, exp, d) for k, o, key, exp, d in keys],
            )

    def accounts(self, addresses: list[str]) -> dict[str, Account]:
        """The accounts of those of `addresses` that have one (one query)."""
        wanted = sorted({a.lower() for a in addresses})
        if not wanted:
            return {}
        with self.db.transaction() as tx:
            rows = tx.rows(
                "SELECT address, password, totp, phrase, public_key, private_key, key_created FROM accounts"
                f" WHERE address IN ({','.join('?' * len(wanted))})",
                wanted,
            )
        return {r[0]: self._account(r) for r in rows}

    def audit_many(self, events: list[tuple[str, str | None, str | None, str]]) -> None:
        """Several audit events in one transaction: (event, address, message id, detail) each."""
        now = self.clock()
        with self.db.transaction() as tx:
            tx.many(
                "INSERT INTO audit (at, event, address, message_id, ip, detail) VALUES (?, ?, ?, ?, NULL, ?)",
                [(now, e, a.lower() if a else None, m, d[:500]) for e, a, m, d in events],
            )

    def held_key(self, key_id: str) -> HeldKey | None:
        with self.db.transaction() as tx:
            found = tx.row(
                "SELECT id, owner, wrapped, expires, revoked, data_id FROM held_keys WHERE id = ?", (key_id,)
            )
        if found is None:
            return None
        # an erased key (swept by a relay whose clock runs ahead) is gone whatever this clock says
        usable = found[4] is None and found[3] > self.clock() and len(bytes(found[2])) > 0
        key = self.key.unwrap(bytes(found[2]), "held:" + key_id) if usable else None
        return HeldKey(found[0], found[1], key, found[3], found[4] is not None, found[5])

    def put_data(self, data_id: str, data: bytes) -> None:
        """An envelope's ciphertext too large to travel in it (advanced.max_envelope_size)."""
        if self.blob_dir is not None:
            self._write_blob(data_id, data)
            return
        with self.db.transaction() as tx:
            tx.run("INSERT INTO blobs (id, data) VALUES (?, ?)", (data_id, data))

    def get_data(self, key_id: str) -> bytes | None:
        """The ciphertext stored for held key `key_id`, while the key is usable."""
        held = self.held_key(key_id)
        if held is None or held.key is None or not held.data_id:
            return None
        if self.blob_dir is not None:
            try:
                return self._read_blob(held.data_id)
            except FileNotFoundError:
                return None
        with self.db.transaction() as tx:
            found = tx.value("SELECT data FROM blobs WHERE id = ?", (held.data_id,))
        return bytes(found) if found is not None else None

    def _drop_data_of(self, tx: Tx, where: str, params: tuple) -> list[str]:
        ids = [r[0] for r in tx.rows(f"SELECT data_id FROM held_keys WHERE data_id IS NOT NULL AND {where}", params)]
        for chunk in _chunks(ids, 500):
            if self.blob_dir is None:
                tx.run(f"DELETE FROM blobs WHERE id IN ({','.join('?' * len(chunk))})", chunk)
        return ids

    def mark_released(self, key_id: str) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE held_keys SET released = released + 1 WHERE id = ?", (key_id,))

    def revoke(self, key_or_message: str) -> int:
        """Revoke a held key (its key erased, its stored ciphertext deleted), or delete one
        portal message by id: the count (0: no such key or message, or revoked already)."""
        with self.db.transaction() as tx:
            data = self._drop_data_of(tx, "id = ? AND revoked IS NULL", (key_or_message,))
            count = tx.run(
                "UPDATE held_keys SET revoked = ?, wrapped = ? WHERE id = ? AND revoked IS NULL",
                (self.clock(), b"", key_or_message),
            )
            gone = [] if count else self._delete_rows(tx, "id = ?", (key_or_message,))
        for msg_id in gone + data:
            self._drop_blob(msg_id)
        return count or len(gone)

    # -- retention -------------------------------------------------------------------------

    def sweep(self, *, events_window: float = 86400.0) -> dict[str, int]:
        """Delete what has expired: messages (rows, index and blobs), codes, sessions, old
        rate-limit events, and held keys past their expiry (their wrapped keys erased)."""
        now = self.clock()
        with self.db.transaction() as tx:
            gone = self._delete_rows(tx, "expires < ?", (now,))
            codes = tx.run("DELETE FROM codes WHERE expires < ? OR used = 1", (now - 3600,))
            events = tx.run("DELETE FROM events WHERE at < ?", (now - events_window,))
            data = self._drop_data_of(tx, "expires < ? AND data_id IS NOT NULL", (now,))
            tx.run("UPDATE held_keys SET data_id = NULL WHERE expires < ?", (now,))
            keys = tx.run("UPDATE held_keys SET wrapped = ? WHERE expires < ? AND wrapped <> ?", (b"", now, b""))
        for msg_id in gone + data:
            self._drop_blob(msg_id)
        orphans = self._sweep_orphans()
        return {"messages": len(gone), "codes": codes, "events": events, "keys": keys, "orphans": orphans}

    def expire_sessions(self, idle: float, lifetime: float) -> int:
        now = self.clock()
        with self.db.transaction() as tx:
            return tx.run(
                "DELETE FROM sessions WHERE seen < ? OR COALESCE(login_at, created) < ?", (now - idle, now - lifetime)
            )

    def _sweep_orphans(self) -> int:
        """Blob files with no row (a crash between the row's delete and the file's)."""
        if self.blob_dir is None or not self.blob_dir.exists():
            return 0
        files = {p.name: p for p in self.blob_dir.glob("*/*") if p.is_file()}
        if not files:
            return 0
        old = self.clock() - 3600  # a file being stored right now has no row yet
        with self.db.transaction() as tx:
            known = {r[0] for r in tx.rows("SELECT id FROM messages")}
        count = 0
        for name, path in files.items():
            if name not in known and path.stat().st_mtime < old:
                path.unlink(missing_ok=True)
                count += 1
        return count

    def close(self) -> None:
        self.db.close()


_COLUMNS = "id, owner, folder, created, expires, seen, size, head, wrapped"


def _chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _same(a: str, b: str) -> bool:
    import hmac

    return hmac.compare_digest(a, b)


def _text_of(raw: bytes) -> str:
    """The readable text of a message for the search index (bounded)."""
    from engine.portal.mail import readable_text

    return readable_text(raw)[:200_000]
