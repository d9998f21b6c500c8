"""The portal's Store against both backends: SQLite (blobs as files) and PostgreSQL (blobs as rows).

Every test runs twice through the `store` fixture: once on a SQLite file in tmp_path, once on
a fresh PostgreSQL database of its own. Time is a `FakeClock` the test moves by hand.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.portal import crypto
from engine.portal.crypto import PortalKey, PortalKeyError
from engine.portal.db import open_database
from engine.portal.mail import read
from engine.portal.store import Head, Store

DAY = 86400.0
START = 1_750_000_000.0


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    url: str | None  # PostgreSQL's URL, None for SQLite
    data_dir: Path
    key: bytes

    @property
    def blob_dir(self) -> Path | None:
        return self.data_dir / "portal" / "blobs" if self.url is None else None

    def open(self, clock: FakeClock, key: bytes | None = None) -> Store:
        db = open_database(self.url, self.data_dir)
        try:
            return Store(db, PortalKey(key or self.key), self.blob_dir, clock=clock)
        except BaseException:
            db.close()
            raise

    # -- looking at what is stored, bypassing the Store

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        if self.url is None:
            conn = sqlite3.connect(self.data_dir / "portal" / "portal.db")
            try:
                return conn.execute(statement, params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.url) as conn:
            return conn.execute(statement.replace("?", "%s"), params).fetchall()

    def at_rest(self) -> bytes:
        """Every byte the backend keeps: SQLite's files (database, WAL, blobs) or every value
        of every row of every PostgreSQL table."""
        if self.url is None:
            return b"".join(p.read_bytes() for p in sorted((self.data_dir / "portal").rglob("*")) if p.is_file())
        tables = [
            r[0] for r in self.sql("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")
        ]
        assert {"messages", "blobs", "terms", "accounts"} <= set(tables)
        out = []
        for table in tables:
            for row in self.sql(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        out.append(bytes(value))
                    elif value is not None:
                        out.append(str(value).encode())
        return b"\0".join(out)

    def blob_files(self) -> int:
        assert self.blob_dir is not None
        return sum(1 for p in self.blob_dir.rglob("*") if p.is_file()) if self.blob_dir.exists() else 0


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path) -> Backend:
    url = request.getfixturevalue("fresh_pg_url") if request.param == "postgresql" else None
    return Backend(request.param, url, tmp_path, os.urandom(32))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend, clock):
    s = backend.open(clock)
    yield s
    s.close()


def message(subject: str, body: str, *, sender: str = "alice@example.com", to: str = "bob@partner.test",
            attachments: dict[str, bytes] | None = None) -> tuple[bytes, Head]:  # fmt: skip
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    for name, data in (attachments or {}).items():
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    raw = msg.as_bytes()
    return raw, read(raw).head


def put(store: Store, owner: str, subject: str = "Hello", body: str = "Some text.", *, folder: str = "inbox",
        expires: float | None = None, origin: str | None = None) -> str:  # fmt: skip
    raw, head = message(subject, body)
    msg_id, created = store.put(
        owner, folder, raw, head, expires=expires if expires is not None else store.clock() + 90 * DAY, origin=origin
    )
    assert created
    return msg_id


# -- messages ----------------------------------------------------------------------------------


def test_put_then_get_round_trip(store, clock):
    raw, head = message("Q3 numbers", "The numbers are confidential.", attachments={"report.pdf": b"%PDF-1.4"})
    msg_id, created = store.put("Bob@Partner.test", "inbox", raw, head, expires=clock() + 90 * DAY)
    assert created is True
    assert len(msg_id) >= 22

    found = store.get("bob@partner.test", msg_id)
    assert found is not None
    row, got = found
    assert got == raw
    assert row.id == msg_id
    assert row.owner == "bob@partner.test"
    assert row.folder == "inbox"
    assert row.created == clock()
    assert row.expires == clock() + 90 * DAY
    assert row.seen is False
    assert row.size == len(raw)
    assert row.head == head
    assert row.head.subject == "Q3 numbers"
    assert row.head.attachments == ("report.pdf",)
    assert store.exists(msg_id) == "bob@partner.test"
    # the owner's address is matched whatever its case
    assert store.get("BOB@partner.test", msg_id)[1] == raw

    store.mark_seen("bob@partner.test", msg_id)
    assert store.get("bob@partner.test", msg_id)[0].seen is True


def test_another_owner_gets_nothing(store):
    msg_id = put(store, "bob@partner.test")
    assert store.get("carol@partner.test", msg_id) is None
    assert store.get("bob@partner.test", crypto.random_id()) is None
    store.mark_seen("carol@partner.test", msg_id)
    assert store.get("bob@partner.test", msg_id)[0].seen is False
    assert store.trash("carol@partner.test", msg_id) is False
    assert store.get("bob@partner.test", msg_id)[0].folder == "inbox"


def test_message_ids_are_random_and_long(store):
    ids = {put(store, "bob@partner.test") for _ in range(5)}
    assert len(ids) == 5
    for msg_id in ids:
        assert len(msg_id) >= 22  # >= 128 bits in URL-safe base64
        assert set(msg_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_encrypted_at_rest(backend, store, clock):
    subject = "Moonshot merger codename PELICAN"
    body = "The ZANZIBAR-7781 acquisition closes on Friday; keep it confidential."
    raw, head = message(subject, body, attachments={"terms.txt": b"SECRET-ATTACHMENT-BYTES-9913"})
    msg_id, _ = store.put("bob@partner.test", "inbox", raw, head, expires=clock() + DAY)
    store.put("bob@partner.test", "sent", raw, head, expires=clock() + DAY)
    if backend.name == "sqlite":
        assert backend.blob_files() == 2
    assert store.get("bob@partner.test", msg_id)[1] == raw

    stored = backend.at_rest()
    assert len(stored) > len(raw)  # the scan did see the data
    for needle in (
        raw,
        raw[-200:],
        body.encode(),
        b"ZANZIBAR-7781",
        b"zanzibar",
        subject.encode(),
        b"PELICAN",
        b"pelican",
        b"SECRET-ATTACHMENT-BYTES-9913",
        b"terms.txt",
    ):
        assert needle not in stored, needle
    # the search index holds blind tokens, not words
    assert store.search("bob@partner.test", "zanzibar pelican")


def test_put_with_the_same_origin_is_idempotent(backend, store, clock):
    raw, head = message("Once", "Stored once.")
    first, created = store.put("bob@partner.test", "inbox", raw, head, expires=clock() + DAY, origin="q1/bob")
    assert created is True
    again, created = store.put("bob@partner.test", "inbox", raw, head, expires=clock() + DAY, origin="q1/bob")
    assert (again, created) == (first, False)
    other, created = store.put("carol@partner.test", "inbox", raw, head, expires=clock() + DAY, origin="q1/carol")
    assert created is True and other != first
    assert store.folder("bob@partner.test", "inbox")[1] == 1
    assert backend.sql("SELECT COUNT(*) FROM messages")[0][0] == 2
    assert store.blob_count() == 2
    if backend.name == "sqlite":
        assert backend.blob_files() == 2
    else:
        assert backend.sql("SELECT COUNT(*) FROM blobs")[0][0] == 2


def test_folder_pages_newest_first_with_counts(store, clock):
    ids = []
    for n in range(7):
        ids.append(put(store, "bob@partner.test", f"Message {n}"))
        clock.advance(10)
    put(store, "bob@partner.test", "Mine", folder="sent")
    put(store, "carol@partner.test", "Not bob's")

    newest_first = list(reversed(ids))
    page0, total = store.folder("bob@partner.test", "inbox", page=0, size=3)
    assert total == 7
    assert [r.id for r in page0] == newest_first[:3]
    assert [r.head.subject for r in page0] == ["Message 6", "Message 5", "Message 4"]
    page1, total = store.folder("BOB@partner.test", "inbox", page=1, size=3)
    assert (total, [r.id for r in page1]) == (7, newest_first[3:6])
    page2, _ = store.folder("bob@partner.test", "inbox", page=2, size=3)
    assert [r.id for r in page2] == newest_first[6:]
    assert store.folder("bob@partner.test", "inbox", page=3, size=3) == ([], 7)
    sent, total = store.folder("bob@partner.test", "sent")
    assert total == 1 and sent[0].head.subject == "Mine"
    assert store.folder("bob@partner.test", "trash") == ([], 0)


def test_trash_restore_and_delete_only_from_trash(backend, store):
    inbox = put(store, "bob@partner.test", "In")
    sent = put(store, "bob@partner.test", "Out", folder="sent")

    assert store.delete("bob@partner.test", inbox) is False  # not from the inbox
    assert store.get("bob@partner.test", inbox) is not None

    assert store.trash("bob@partner.test", inbox) is True
    assert store.trash("bob@partner.test", inbox) is False  # already there
    assert store.trash("bob@partner.test", sent) is True
    assert store.folder("bob@partner.test", "inbox")[1] == 0
    assert store.folder("bob@partner.test", "sent")[1] == 0
    assert store.folder("bob@partner.test", "trash")[1] == 2

    assert store.restore("bob@partner.test", sent) is True
    assert store.restore("bob@partner.test", sent) is False  # no longer in the trash
    assert store.get("bob@partner.test", sent)[0].folder == "sent"  # back where it came from
    assert store.delete("carol@partner.test", inbox) is False  # not carol's

    assert store.delete("bob@partner.test", inbox) is True
    assert store.get("bob@partner.test", inbox) is None
    assert store.exists(inbox) is None
    assert store.delete("bob@partner.test", inbox) is False
    assert store.blob_count() == 1
    assert backend.sql("SELECT COUNT(*) FROM terms WHERE message_id = ?", (inbox,))[0][0] == 0
    assert store.folder("bob@partner.test", "trash") == ([], 0)


# -- search ------------------------------------------------------------------------------------


def test_search_needs_every_word(store, clock):
    budget = put(store, "bob@partner.test", "Budget review", "The marketing budget for Q3 is attached.")
    clock.advance(1)
    travel = put(store, "bob@partner.test", "Travel plans", "Flights to Lisbon; the budget is tight.")
    clock.advance(1)
    lunch = put(store, "bob@partner.test", "Lunch", "Pizza on Friday?")

    def found(query):
        return [r.id for r in store.search("bob@partner.test", query)]

    assert found("budget") == [travel, budget]  # newest first
    assert found("BUDGET marketing") == [budget]
    assert found("budget lisbon") == [travel]
    assert found("budget pizza") == []
    assert found("marketing nowhere") == []
    assert found("review") == [budget]  # the subject is indexed
    assert found("alice") == [lunch, travel, budget]  # the sender is indexed
    assert found("") == []
    assert found("!!! ?") == []

    store.trash("bob@partner.test", budget)  # every folder is searched
    assert found("marketing") == [budget]
    store.delete("bob@partner.test", budget)
    assert found("marketing") == []


def test_search_never_finds_another_owners_message(backend, store):
    text = "Falcon project kickoff"
    bob = put(store, "bob@partner.test", text, text)
    carol = put(store, "carol@partner.test", text, text)
    assert [r.id for r in store.search("bob@partner.test", "falcon kickoff")] == [bob]
    assert [r.id for r in store.search("carol@partner.test", "falcon kickoff")] == [carol]
    assert store.search("dave@partner.test", "falcon") == []

    # the same word of two owners is a different blind token, in the key and in the table
    assert store.key.token("bob@partner.test", "falcon") != store.key.token("carol@partner.test", "falcon")
    assert store.key.token("BOB@partner.test", "falcon") == store.key.token("bob@partner.test", "falcon")
    bob_tokens = {r[0] for r in backend.sql("SELECT token FROM terms WHERE message_id = ?", (bob,))}
    carol_tokens = {r[0] for r in backend.sql("SELECT token FROM terms WHERE message_id = ?", (carol,))}
    assert store.key.token("bob@partner.test", "falcon") in bob_tokens
    assert store.key.token("carol@partner.test", "falcon") in carol_tokens
    assert bob_tokens and carol_tokens and not bob_tokens & carol_tokens


def test_the_index_depends_on_the_portal_key():
    assert PortalKey(b"k" * 32).token("bob@partner.test", "falcon") != PortalKey(b"j" * 32).token(
        "bob@partner.test", "falcon"
    )


# -- one-time codes ----------------------------------------------------------------------------


def test_a_code_works_once(store):
    store.new_code("Bob@partner.test", "login", "12345678", 1800)
    assert store.use_code("bob@partner.test", "login", "87654321") == "wrong"
    assert store.use_code("bob@partner.test", "other", "12345678") == "expired"  # another scope
    assert store.use_code("carol@partner.test", "login", "12345678") == "expired"  # another address
    assert store.use_code("BOB@partner.test", "login", " 12345678 ") == "ok"
    assert store.use_code("bob@partner.test", "login", "12345678") == "expired"


def test_a_code_expires(store, clock):
    store.new_code("bob@partner.test", "login", "12345678", 1800)
    clock.advance(1799)
    store.new_code("carol@partner.test", "login", "11112222", 1800)
    assert store.use_code("carol@partner.test", "login", "11112222") == "ok"
    clock.advance(2)
    assert store.use_code("bob@partner.test", "login", "12345678") == "expired"


def test_five_wrong_attempts_kill_a_code(store):
    store.new_code("bob@partner.test", "login", "12345678", 1800)
    for n in range(5):
        assert store.use_code("bob@partner.test", "login", f"0000000{n}") == "wrong"
    assert store.use_code("bob@partner.test", "login", "12345678") == "expired"


def test_four_wrong_attempts_do_not(store):
    store.new_code("bob@partner.test", "login", "12345678", 1800)
    for n in range(4):
        assert store.use_code("bob@partner.test", "login", f"0000000{n}") == "wrong"
    assert store.use_code("bob@partner.test", "login", "12345678") == "ok"


def test_a_new_code_supersedes_the_old(store, clock):
    store.new_code("bob@partner.test", "login", "11111111", 1800)
    clock.advance(61)
    store.new_code("bob@partner.test", "login", "22222222", 1800)
    assert store.use_code("bob@partner.test", "login", "11111111") == "wrong"
    assert store.use_code("bob@partner.test", "login", "22222222") == "ok"
    assert store.use_code("bob@partner.test", "login", "11111111") == "expired"


def test_codes_are_stored_as_keyed_digests(backend, store):
    """Eight digits hashed without a key fall to a dictionary of 10**8 in seconds: the digest
    is keyed with the portal key, so a copy of the database alone does not give live codes."""
    store.new_code("bob@partner.test", "login", "73198245", 1800)
    assert b"73198245" not in backend.at_rest()
    [(stored,)] = backend.sql("SELECT digest FROM codes")
    assert stored == store.key.code_digest("73198245") != crypto.digest("73198245")
    other = PortalKey(os.urandom(32))
    assert other.code_digest("73198245") != stored


# -- sessions ----------------------------------------------------------------------------------


def test_session_idle_timeout(backend, store, clock):
    token = "t-" + crypto.random_id()
    store.new_session(token, "Bob@partner.test", "full", "csrf-1", "code")
    assert token not in str(backend.sql("SELECT id FROM sessions"))  # only its digest
    s = store.session(token, idle=60, lifetime=3600)
    assert (s.address, s.stage, s.csrf, s.authn, s.login_at) == ("bob@partner.test", "full", "csrf-1", "code", clock())
    assert s.id == crypto.digest(token)
    clock.advance(59)
    assert store.session(token, idle=60, lifetime=3600) is not None  # and its idle time starts again
    clock.advance(59)
    assert store.session(token, idle=60, lifetime=3600) is not None
    clock.advance(61)
    assert store.session(token, idle=60, lifetime=3600) is None
    assert store.session_count() == 0  # it was deleted, not just refused
    clock.now -= 61
    assert store.session(token, idle=60, lifetime=3600) is None
    assert store.session("unknown", idle=60, lifetime=3600) is None


def test_session_absolute_timeout(store, clock):
    store.new_session("tok", "bob@partner.test", "full", "c")
    for _ in range(71):  # used every 50 s, never idle, for 3550 s
        assert store.session("tok", idle=60, lifetime=3600) is not None
        clock.advance(50)
    assert clock() - START == 3550
    clock.advance(51)
    assert store.session("tok", idle=60, lifetime=3600) is None
    assert store.session_count() == 0


def test_anonymous_session_lifetime_counts_from_creation(store, clock):
    store.new_session("anon", None, "anonymous", "c")
    assert store.session("anon", idle=600, lifetime=1000).login_at is None
    clock.advance(500)
    assert store.session("anon", idle=600, lifetime=1000) is not None
    clock.advance(501)
    assert store.session("anon", idle=600, lifetime=1000) is None


def test_end_session_and_sessions_of(store):
    for token in ("a", "b", "c"):
        store.new_session(token, "bob@partner.test", "full", "c")
    store.new_session("d", "carol@partner.test", "full", "c")
    store.end_session(store.session("a", idle=60, lifetime=60).id)
    assert store.session("a", idle=60, lifetime=60) is None
    store.end_sessions_of("BOB@partner.test", keep=crypto.digest("b"))
    assert store.session("b", idle=60, lifetime=60) is not None
    assert store.session("c", idle=60, lifetime=60) is None
    assert store.session("d", idle=60, lifetime=60) is not None
    assert store.session_count() == 2


def test_session_stage_and_pending(store):
    store.new_session("tok", "bob@partner.test", "totp", "c", "password")
    sid = crypto.digest("tok")
    store.set_pending(sid, '{"next": "/inbox"}')
    store.set_stage(sid, "full", "password+totp")
    s = store.session("tok", idle=60, lifetime=60)
    assert (s.stage, s.authn, s.pending) == ("full", "password+totp", '{"next": "/inbox"}')
    store.set_stage(sid, "totp")
    assert store.session("tok", idle=60, lifetime=60).authn == "password+totp"


def test_expire_sessions(store, clock):
    store.new_session("old", "bob@partner.test", "full", "c")
    clock.advance(100)
    store.new_session("new", "bob@partner.test", "full", "c")
    assert store.expire_sessions(idle=60, lifetime=3600) == 1
    assert store.session("new", idle=60, lifetime=3600) is not None
    assert store.session_count() == 1


# -- rate limits and audit ---------------------------------------------------------------------


def test_recent_events(store, clock):
    assert store.recent("login:bob", 3600) == (0, None)
    store.note("login:bob", "loginip:1.2.3.4")
    clock.advance(10)
    store.note("login:bob")
    assert store.recent("login:bob", 3600) == (2, clock())
    assert store.recent("loginip:1.2.3.4", 3600) == (1, clock() - 10)
    assert store.recent("login:carol", 3600) == (0, None)
    assert store.recent("login:bob", 5) == (1, clock())  # only the last 5 seconds
    clock.advance(3600 - 10)
    assert store.recent("login:bob", 3600) == (1, clock() - 3600 + 10)
    clock.advance(10)
    assert store.recent("login:bob", 3600) == (0, None)
    store.forget("login:bob")
    clock.now = START
    assert store.recent("login:bob", 3600) == (0, None)
    assert store.recent("loginip:1.2.3.4", 3600) == (1, START)


def test_audit_events(store, clock):
    store.audit("open", address="Bob@Partner.test", message_id="m1", ip="192.0.2.1", detail="x" * 600)
    clock.advance(5)
    store.audit("login", address="carol@partner.test", ip="192.0.2.2", detail="code")
    clock.advance(5)
    store.audit("retention", detail="2 messages deleted")

    events = store.audit_events()
    assert [e["event"] for e in events] == ["open", "login", "retention"]  # oldest first
    assert events[0] == {
        "at": START,
        "event": "open",
        "address": "bob@partner.test",
        "message_id": "m1",
        "ip": "192.0.2.1",
        "detail": "x" * 500,
    }
    assert events[2]["address"] is None
    assert [e["event"] for e in store.audit_events(address="BOB@partner.test")] == ["open"]
    assert [e["event"] for e in store.audit_events(event="login")] == ["login"]
    assert [e["event"] for e in store.audit_events(since=START + 5)] == ["login", "retention"]
    assert [e["event"] for e in store.audit_events(limit=2)] == ["login", "retention"]  # the newest 2


# -- held keys ---------------------------------------------------------------------------------


def test_held_key_hold_get_revoke(backend, store, clock):
    secret = os.urandom(32)
    key_id = store.hold_key("Bob@partner.test", secret, clock() + DAY, data_id="data-1")
    assert len(key_id) >= 22
    held = store.held_key(key_id)
    assert (held.id, held.owner, held.key, held.expires, held.revoked, held.data_id) == (
        key_id,
        "bob@partner.test",
        secret,
        clock() + DAY,
        False,
        "data-1",
    )
    assert secret not in backend.at_rest()  # wrapped under the portal key
    assert store.held_key(crypto.random_id()) is None

    assert store.revoke(key_id) == 1
    held = store.held_key(key_id)
    assert (held.key, held.revoked) == (None, True)
    assert store.revoke(key_id) == 0
    assert bytes(backend.sql("SELECT wrapped FROM held_keys WHERE id = ?", (key_id,))[0][0]) == b""


def test_held_key_expires(backend, store, clock):
    secret = os.urandom(32)
    key_id = store.hold_key("bob@partner.test", secret, clock() + 100)
    lasting = store.hold_key("bob@partner.test", secret, clock() + 1000)
    clock.advance(99)
    assert store.held_key(key_id).key == secret
    clock.advance(2)
    held = store.held_key(key_id)
    assert (held.key, held.revoked) == (None, False)
    assert store.held_key(lasting).key == secret

    assert store.sweep()["keys"] == 1  # the expired key's wrapped copy is erased
    assert bytes(backend.sql("SELECT wrapped FROM held_keys WHERE id = ?", (key_id,))[0][0]) == b""
    assert len(bytes(backend.sql("SELECT wrapped FROM held_keys WHERE id = ?", (lasting,))[0][0])) > 32
    clock.now = START  # a relay whose clock runs behind (a shared database): an erased key is gone
    assert store.held_key(key_id).key is None
    assert store.held_key(lasting).key == secret


def test_revoke_a_message(store):
    msg_id = put(store, "bob@partner.test")
    assert store.revoke(msg_id) == 1
    assert store.get("bob@partner.test", msg_id) is None
    assert store.blob_count() == 0


# -- retention ---------------------------------------------------------------------------------


def test_sweep_deletes_expired_messages_with_their_index_and_blobs(backend, store, clock):
    short = [put(store, "bob@partner.test", f"Short {n}", "ephemeral words", expires=clock() + DAY) for n in range(3)]
    kept = put(store, "bob@partner.test", "Kept", "lasting words", expires=clock() + 90 * DAY)
    sent = put(store, "carol@partner.test", "Sent", "ephemeral words", folder="sent", expires=clock() + DAY)
    store.trash("bob@partner.test", short[0])
    assert store.blob_count() == 5
    if backend.name == "sqlite":
        assert backend.blob_files() == 5
    else:
        assert backend.sql("SELECT COUNT(*) FROM blobs")[0][0] == 5

    clock.advance(DAY - 1)
    assert store.sweep()["messages"] == 0
    assert store.blob_count() == 5

    clock.advance(2)
    swept = store.sweep()
    assert swept["messages"] == 4
    gone = [*short, sent]
    for msg_id in gone:
        assert store.exists(msg_id) is None
        assert store.get("bob@partner.test", msg_id) is None
    marks = ",".join("?" * len(gone))
    assert backend.sql(f"SELECT COUNT(*) FROM messages WHERE id IN ({marks})", tuple(gone))[0][0] == 0
    assert backend.sql(f"SELECT COUNT(*) FROM terms WHERE message_id IN ({marks})", tuple(gone))[0][0] == 0
    assert backend.sql("SELECT COUNT(DISTINCT message_id) FROM terms")[0][0] == 1
    assert store.blob_count() == 1
    if backend.name == "sqlite":
        assert backend.blob_files() == 1
        assert [p.name for p in backend.blob_dir.rglob("*") if p.is_file()] == [kept]
    else:
        assert backend.sql("SELECT id FROM blobs") == [(kept,)]

    # what is left is intact
    row, raw = store.get("bob@partner.test", kept)
    assert row.head.subject == "Kept" and b"lasting words" in raw
    assert [r.id for r in store.search("bob@partner.test", "lasting")] == [kept]
    assert store.search("bob@partner.test", "ephemeral") == []
    assert store.search("carol@partner.test", "ephemeral") == []
    assert store.folder("bob@partner.test", "inbox")[1] == 1
    assert store.folder("bob@partner.test", "trash")[1] == 0
    assert store.sweep()["messages"] == 0


def test_sweep_deletes_old_codes_and_events(backend, store, clock):
    store.new_code("bob@partner.test", "login", "12345678", 1800)
    store.new_code("carol@partner.test", "login", "87654321", 1800)
    assert store.use_code("carol@partner.test", "login", "87654321") == "ok"
    store.note("login:bob")
    assert store.sweep(events_window=600) == {"messages": 0, "codes": 1, "events": 0, "keys": 0, "orphans": 0}
    clock.advance(1800 + 3601)
    assert store.sweep(events_window=600) == {"messages": 0, "codes": 1, "events": 1, "keys": 0, "orphans": 0}
    assert backend.sql("SELECT COUNT(*) FROM codes")[0][0] == 0
    assert backend.sql("SELECT COUNT(*) FROM events")[0][0] == 0


def test_sweep_removes_orphan_blob_files(backend, clock):
    if backend.name != "sqlite":
        pytest.skip("blob files exist on SQLite only")
    clock.now = time.time()  # the files' times are real ones
    store = backend.open(clock)
    try:
        kept = put(store, "bob@partner.test")
        orphan = backend.blob_dir / "zz" / "zzorphan"
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"left by a crash")
        fresh = backend.blob_dir / "zz" / "zzfresh"
        fresh.write_bytes(b"being stored right now")
        os.utime(orphan, (clock() - 7200, clock() - 7200))
        os.utime(backend.blob_dir / kept[:2] / kept, (clock() - 7200, clock() - 7200))
        assert store.sweep()["orphans"] == 1
        assert not orphan.exists()
        assert fresh.exists()
        assert store.get("bob@partner.test", kept) is not None
    finally:
        store.close()


# -- the portal key ----------------------------------------------------------------------------


def test_a_wrong_portal_key_is_refused(backend, store, clock):
    msg_id = put(store, "bob@partner.test")
    store.close()
    with pytest.raises(PortalKeyError, match="not the one this portal's messages were sealed with"):
        backend.open(clock, key=os.urandom(32))
    again = backend.open(clock)  # the right key still opens it
    try:
        assert again.get("bob@partner.test", msg_id) is not None
    finally:
        again.close()


def test_portal_key_must_be_32_bytes():
    with pytest.raises(PortalKeyError):
        PortalKey(b"short")
    with pytest.raises(PortalKeyError):
        PortalKey.from_text("not base64!")


# -- properties --------------------------------------------------------------------------------

_words = st.text(st.characters(categories=("L", "N")), min_size=2, max_size=12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    subject_words=st.lists(_words, min_size=1, max_size=5),
    punctuation=st.sampled_from([" ", ", ", " - ", "; ", "\t"]),
    body=st.text(max_size=200),
    raw_extra=st.binary(max_size=100),
)
@example(subject_words=["0İ", "İ0"], punctuation=" ", body="", raw_extra=b"")  # folding adds a mark
@example(subject_words=["ß" * 25], punctuation=" ", body="", raw_extra=b"")  # folding doubles it past 40
def test_property_round_trip_and_subject_search(store, clock, subject_words, punctuation, body, raw_extra):
    owner = f"u{uuid.uuid4().hex}@partner.test"  # the store is shared by the examples
    subject = punctuation.join(subject_words)
    raw = f"Subject: whatever\r\n\r\n{body}".encode() + raw_extra
    head = Head("alice@example.com", (owner,), (), subject, clock(), (), body[:140])
    msg_id, created = store.put(owner, "inbox", raw, head, expires=clock() + DAY)
    assert created
    row, got = store.get(owner, msg_id)
    assert got == raw
    assert row.head == head
    for word in subject_words:
        assert msg_id in [r.id for r in store.search(owner, word)], word
        if word.upper().casefold() == word.casefold():  # not so for some letters ("ı" → "I")
            assert msg_id in [r.id for r in store.search(owner, word.upper())], word
    for word in crypto.words(subject):  # the index's own idea of a word, searched for as such
        assert msg_id in [r.id for r in store.search(owner, word)], word
    assert [r.id for r in store.search(owner, " ".join(subject_words))] == [msg_id]
