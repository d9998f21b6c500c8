"""Queue parity with Postfix's tools: hold and release (postsuper -h/-H), recipients and reasons
in `queue list` (postqueue -p), `queue cat` (postcat), JSON from every `queue` command; and
the queue schema's migration from version 1. Real SQLite files and a real relay on loopback."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
import typer
from ruamel.yaml import YAML
from typer.testing import CliRunner

from engine.cli.app import app
from engine.cli.queue import queue_app, split_message
from engine.relay.queue import NotQueued, Queue, recovery, store
from tests.relay.conftest import start_relay, write_config  # noqa: F401 (fixtures)
from tests.relay.peers import Sink, eventually, free_port
from tests.relay.test_edge import route_to
from tests.relay.test_relay_flow import message, send

T0 = 1_700_000_000.0
FAR = T0 + 10**9
CONFIG = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
  data_dir: ./var
"""


@pytest.fixture
def q(tmp_path: Path):
    queue = Queue.open(tmp_path / "queue")
    yield queue
    queue.close()


# -- the queue -------------------------------------------------------------------------------


async def test_a_held_entry_is_never_leased_until_released(q: Queue) -> None:
    held = await q.enqueue("a@x.net", ["b@y.net"], b"held", meta={}, now=T0)
    other = await q.enqueue("a@x.net", ["c@y.net"], b"other", meta={}, now=T0 + 1)
    assert await q.hold(held, now=T0 + 5) is True
    assert await q.hold(held, now=T0 + 6) is False  # already held: the first time stays
    assert [e.id for e in await q.lease(FAR, 100, lease_s=1)] == [other]
    assert [e.id for e in await q.due(FAR + 10, 100, lease_s=10**6)] == [other]  # nor with its body
    detail = await q.show(held)
    assert detail.held_at == T0 + 5 and detail.recipients[0].next_attempt_at == T0  # schedule kept
    assert [(e.id, e.held_at) for e in await q.list(held=True)] == [(held, T0 + 5)]
    assert [e.id for e in await q.list(held=False)] == [other]
    assert await q.unhold(held) is True and await q.unhold(held) is False
    [entry] = await q.due(FAR + 20, 100, lease_s=1)  # due at its old retry time, long past
    assert (entry.id, entry.body, [r.address for r in entry.recipients]) == (held, b"held", ["b@y.net"])
    assert (await q.show(held)).held_at is None
    with pytest.raises(NotQueued):
        await q.hold("000000000000")
    with pytest.raises(NotQueued):
        await q.unhold("000000000000")


async def test_held_entries_are_counted_for_status_and_metrics(q: Queue) -> None:
    first = await q.enqueue("a@x.net", ["b@y.net"], b"one", meta={}, now=T0)
    await q.enqueue("a@x.net", ["c@y.net"], b"two", meta={}, now=T0 + 1)
    assert ((await q.stats()).entries, (await q.stats()).held) == (2, 0)
    await q.hold(first, now=T0 + 2)
    assert ((await q.stats()).entries, (await q.stats()).held) == (2, 1)


async def test_hold_survives_a_restart_and_recovery(tmp_path: Path) -> None:
    with Queue.open(tmp_path) as queue:
        held = await queue.enqueue("a@x.net", ["b@y.net"], b"x", meta={}, now=T0)
        await queue.due(T0, 10, lease_s=3600)  # leased by a relay that then dies
        await queue.hold(held, now=T0 + 1)
    with Queue.open(tmp_path) as queue:  # the owner again: recovery releases the lease
        assert queue.recovery.leases_released == 1 and queue.recovery.clean
        assert (await queue.show(held)).held_at == T0 + 1
        assert await queue.lease(FAR, 10) == []


async def test_a_delivery_under_way_records_its_outcome_and_the_entry_stays_held(q: Queue) -> None:
    msg_id = await q.enqueue("a@x.net", ["b@y.net", "c@y.net"], b"x", meta={}, now=T0)
    [leased] = await q.due(T0, 10, lease_s=60)
    await q.hold(msg_id, now=T0 + 1)
    assert await q.mark_delivered(msg_id, ["b@y.net"], "250 ok") == 1
    assert await q.mark_deferred(msg_id, ["c@y.net"], "451 later", T0 + 2) == 1
    assert await q.lease(FAR, 10) == []  # lease over, still held
    assert (await q.show(msg_id)).held_at == T0 + 1
    await q.unhold(msg_id)
    [again] = await q.lease(FAR, 10)
    assert [r.address for r in again.recipients] == ["c@y.net"]


def test_the_lease_scan_reads_the_index_without_held_entries() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    store.create_schema(conn)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    store.lease(conn, T0, 10, 60)
    conn.set_trace_callback(None)
    [scan] = [s for s in statements if s.startswith("SELECT id, sender")]
    plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {scan}"))
    assert "USING INDEX messages_due_unheld" in plan


V1_SCHEMA = """
CREATE TABLE messages (id TEXT PRIMARY KEY, sender TEXT NOT NULL, meta TEXT NOT NULL, created_at REAL NOT NULL,
  size INTEGER NOT NULL, sha256 BLOB NOT NULL, warned INTEGER NOT NULL DEFAULT 0, next_due REAL NOT NULL,
  lease_until REAL) WITHOUT ROWID;
CREATE INDEX messages_due ON messages (next_due);
CREATE TABLE bodies (msg_id TEXT PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE, data BLOB NOT NULL);
CREATE TABLE recipients (msg_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE, rcpt TEXT NOT NULL,
  position INTEGER NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at REAL NOT NULL, leased INTEGER NOT NULL DEFAULT 0, last_error TEXT, last_tls TEXT, detail TEXT,
  updated_at REAL, PRIMARY KEY (msg_id, rcpt)) WITHOUT ROWID;
CREATE TABLE corrupt (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, set_aside_at REAL NOT NULL, reason TEXT NOT NULL,
  sender TEXT, recipients TEXT NOT NULL, meta TEXT, created_at REAL, body BLOB);
PRAGMA user_version = 1;
"""


def _version_1_queue(directory: Path) -> None:
    """A queue.db as the relay before hold wrote it (schema 1), in WAL mode, one entry queued."""
    directory.mkdir()
    conn = sqlite3.connect(directory / "queue.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SCHEMA)
    body = b"Subject: old\r\n\r\nqueued by version 1\r\n"
    conn.execute(
        "INSERT INTO messages VALUES ('aaaaaaaaaaaa', 'a@x.net', '{}', ?, ?, ?, 0, ?, NULL)",
        (T0, len(body), hashlib.sha256(body).digest(), T0),
    )
    conn.execute("INSERT INTO bodies VALUES ('aaaaaaaaaaaa', ?)", (body,))
    conn.execute("INSERT INTO recipients (msg_id, rcpt, position, state, next_attempt_at) VALUES (?, ?, 0, ?, ?)",
                 ("aaaaaaaaaaaa", "b@y.net", "pending", T0))  # fmt: skip
    conn.close()


@pytest.mark.parametrize("shared", [False, True])
async def test_a_version_1_queue_opens_and_gains_hold(tmp_path: Path, shared: bool) -> None:
    _version_1_queue(tmp_path / "queue")
    with Queue.open(tmp_path / "queue", shared=shared) as queue:
        [entry] = await queue.list()
        assert (entry.id, entry.held_at, entry.states) == ("aaaaaaaaaaaa", None, {"pending": 1})
        assert await queue.hold("aaaaaaaaaaaa", now=T0 + 1) is True
        assert await queue.lease(FAR, 10) == []
        await queue.unhold("aaaaaaaaaaaa")
        [due] = await queue.due(FAR, 10)
        assert due.body == b"Subject: old\r\n\r\nqueued by version 1\r\n"
    conn = sqlite3.connect(tmp_path / "queue" / "queue.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == store.SCHEMA_VERSION == 2
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_queue_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    (tmp_path / "queue").mkdir()
    conn = sqlite3.connect(tmp_path / "queue" / "queue.db")
    conn.execute(f"PRAGMA user_version = {store.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match=r"^queue schema 3 is newer than this program \(2\)$"):
        Queue.open(tmp_path / "queue")


def test_a_salvaged_entry_stays_held() -> None:
    old, new = (sqlite3.connect(":memory:", isolation_level=None) for _ in range(2))
    for conn in (old, new):
        store.create_schema(conn)
    msg_id = store.insert(old, "a@x.net", ["b@y.net"], b"x", "{}", T0)
    store.hold(old, msg_id, T0 + 3)
    assert recovery._copy_entry(old, new, msg_id, T0 + 4, "damaged") is None
    assert new.execute("SELECT held_at FROM messages WHERE id = ?", (msg_id,)).fetchone() == (T0 + 3,)


async def test_list_brings_each_open_recipient_with_its_reason(q: Queue) -> None:
    msg_id = await q.enqueue("a@x.net", ["b@y.net", "c@y.net", "d@y.net"], b"x", meta={}, now=T0)
    await q.due(T0, 10)
    await q.mark_delivered(msg_id, ["b@y.net"], "250 ok")
    await q.mark_deferred(msg_id, ["c@y.net"], "451 4.7.1 greylisted", T0 + 300)
    await q.release(msg_id)
    [entry] = await q.list()
    assert entry.states == {"delivered": 1, "deferred": 1, "pending": 1}
    assert [(r.address, r.state, r.attempts, r.next_attempt_at, r.last_error) for r in entry.recipients] == [
        ("c@y.net", "deferred", 1, T0 + 300, "451 4.7.1 greylisted"),
        ("d@y.net", "pending", 0, T0, None),
    ]


# -- the commands ----------------------------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG)
    return path


def _queue(tmp_path: Path) -> Queue:
    return Queue.open(tmp_path / "var" / "queue")


def run(*args: str):
    return CliRunner().invoke(app, ["queue", *args], catch_exceptions=False)


async def _fill(tmp_path: Path) -> list[str]:
    with _queue(tmp_path) as queue:
        a = await queue.enqueue("alice@example.com", ["bob@partner.example"], b"Subject: a\r\n\r\na\r\n", meta={})
        b = await queue.enqueue("erin@example.com", ["dan@other.example"], b"Subject: b\r\n\r\nb\r\n", meta={})
        c = await queue.enqueue("alice@example.com", ["carol@other.example"], b"Subject: c\r\n\r\nc\r\n", meta={})
        await queue.due(time.time(), 10)
        await queue.mark_deferred(a, ["bob@partner.example"], "421 4.4.2 connection dropped", time.time() + 3600)
        for other in (b, c):
            await queue.release(other)
    return [a, b, c]


def test_hold_and_release_by_id_by_filter_and_all(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    a, b, c = asyncio.run(_fill(tmp_path))
    held = run("hold", a, "--config", config)
    assert (held.exit_code, held.stdout) == (0, f"{a}: held\n1 message(s) held\n")
    again = run("hold", a, "--config", config, "--format", "json")
    assert json.loads(again.stdout) == {"held": [], "already_held": [a], "not_queued": []}
    by_filter = run("hold", "--config", config, "--recipient", "*@OTHER.example", "--sender", "erin@*")
    assert by_filter.stdout == f"{b}: held\n1 message(s) held\n"

    listed = run("list", "--config", config)
    lines = listed.stdout.splitlines()
    assert lines[0].startswith(f"{a}  ") and "1 deferred" in lines[0] and "  HELD since " in lines[0]
    assert lines[1].startswith("    <bob@partner.example>  deferred  attempts 1  next ")
    assert lines[2] == "        421 4.4.2 connection dropped"
    assert "HELD" not in next(line for line in lines if line.startswith(c))
    only_held = json.loads(run("list", "--config", config, "--held", "--format", "json").stdout)
    assert [(e["id"], e["held"]) for e in only_held] == [(a, True), (b, True)]
    assert only_held[0]["recipients"] == [
        {
            "address": "bob@partner.example",
            "state": "deferred",
            "attempts": 1,
            "next_attempt_at": only_held[0]["recipients"][0]["next_attempt_at"],
            "last_error": "421 4.4.2 connection dropped",
            "last_tls": None,
            "detail": None,
        }
    ]
    assert [e["id"] for e in json.loads(run("list", "-c", config, "--not-held", "--format", "json").stdout)] == [c]
    shown = run("show", a, "--config", config)
    assert "held:     since " in shown.stdout and f"(sealrelay queue release {a})" in shown.stdout
    assert json.loads(run("show", c, "--config", config, "--format", "json").stdout)["held"] is False

    missing = run("release", a, "0123456789ab", "--config", config)
    assert missing.exit_code == 1 and missing.stdout == f"{a}: released\n1 message(s) released\n"
    assert missing.stderr == "not in the queue: 0123456789ab\n"
    everything = run("release", "--all", "--config", config, "--format", "json")
    assert json.loads(everything.stdout) == {"released": [b], "not_held": [], "not_queued": []}
    with _queue(tmp_path) as queue:
        assert asyncio.run(queue.list(held=True)) == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((), "error: give ids, a filter (--state, --sender, --recipient), or --all for every message\n"),
        (("aaaaaaaaaaaa", "--all"), "error: give ids or filters (--state, --sender, --recipient, --all), not both\n"),
    ],
)
def test_hold_needs_ids_or_filters(tmp_path: Path, args: tuple, error: str) -> None:
    for command in ("hold", "release"):
        result = run(command, *args, "--config", str(_config(tmp_path)))
        assert (result.exit_code, result.stderr) == (1, error)


def test_hold_all_pages_through_a_large_queue(tmp_path: Path) -> None:
    config = str(_config(tmp_path))

    async def fill() -> None:
        with _queue(tmp_path) as queue:
            await asyncio.gather(*(queue.enqueue("a@x.net", [f"r{i}@y.net"], b"x", meta={}) for i in range(1201)))

    asyncio.run(fill())
    result = run("hold", "--all", "--config", config, "--format", "json")
    assert len(json.loads(result.stdout)["held"]) == 1201  # three pages of 500
    flushed = run("flush", "--config", config, "--format", "json")
    assert json.loads(flushed.stdout) == {"messages": 0, "due": 0}  # flush leaves held mail alone


def test_cat_prints_the_stored_bytes_and_their_parts(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    content = b"Received: by relay\r\nSubject: caf\xc3\xa9\r\n\r\nline 1\r\n\r\nline 3 \xff\r\n"

    async def fill() -> str:
        with _queue(tmp_path) as queue:
            return await queue.enqueue("a@x.net", ["b@y.net", "c@y.net"], content, meta={})

    msg_id = asyncio.run(fill())
    whole = run("cat", msg_id, "--config", config)
    assert whole.exit_code == 0 and whole.stdout_bytes == content  # exactly what is stored
    assert run("show", msg_id, "--body", "--config", config).stdout_bytes == content
    headers = run("cat", msg_id, "--headers-only", "--config", config).stdout_bytes
    assert headers == b"Received: by relay\r\nSubject: caf\xc3\xa9\r\n"
    assert run("cat", msg_id, "--body-only", "--config", config).stdout_bytes == b"line 1\r\n\r\nline 3 \xff\r\n"
    with_envelope = run("cat", msg_id, "--envelope", "--config", config).stdout_bytes
    head, _, rest = with_envelope.partition(b"*** MESSAGE ***\n")
    assert rest == content
    assert head.startswith(f"*** ENVELOPE ***\nid: {msg_id}\nsender: <a@x.net>\n".encode())
    assert b"recipient: <b@y.net> pending\nrecipient: <c@y.net> pending\n" in head
    data = json.loads(run("cat", msg_id, "--format", "json", "--config", config).stdout)
    assert base64.b64decode(data["content_base64"]) == content and data["part"] == "message"
    assert data["recipients"] == ["b@y.net", "c@y.net"] and data["sha256"] == hashlib.sha256(content).hexdigest()
    both = run("cat", msg_id, "--headers-only", "--body-only", "--config", config)
    assert (both.exit_code, both.stderr) == (1, "error: --headers-only and --body-only exclude each other\n")
    gone = run("cat", "0123456789ab", "--config", config)
    assert (gone.exit_code, gone.stderr) == (1, "not in the queue: 0123456789ab\n")


@pytest.mark.parametrize(
    ("content", "headers", "body"),
    [
        (b"A: 1\nB: 2\n\nbody\n", b"A: 1\nB: 2\n", b"body\n"),
        (b"A: 1\r\n\r\n", b"A: 1\r\n", b""),
        (b"A: 1\r\nB: 2", b"A: 1\r\nB: 2", b""),  # no empty line: all headers
        (b"\r\nbody only\r\n", b"", b"body only\r\n"),
        (b"A: 1\r\n \r\nstill a header line\r\n\r\nb", b"A: 1\r\n \r\nstill a header line\r\n", b"b"),
        (b"", b"", b""),
    ],
)
def test_split_message(content: bytes, headers: bytes, body: bytes) -> None:
    assert split_message(content) == (headers, body)


def test_every_queue_command_answers_json(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    a, b, c = asyncio.run(_fill(tmp_path))
    commands = set(typer.main.get_command(queue_app).commands)
    assert commands == {"list", "show", "cat", "retry", "delete", "hold", "release", "flush", "purge", "destinations"}
    calls = {
        "list": ["list"], "show": ["show", a], "cat": ["cat", a], "retry": ["retry", a], "hold": ["hold", b],
        "release": ["release", b], "flush": ["flush"], "purge": ["purge", "--all"], "delete": ["delete", c],
    }  # fmt: skip
    for name, args in calls.items():
        result = run(*args, "--config", config, "--format", "json")
        assert result.exit_code == 0, (name, result.output)
        assert isinstance(json.loads(result.stdout), list | dict), name
    for name in commands:  # destinations too, which asks a running relay (its admin API)
        assert re.search(r"--format\s+[<\[]text\|json\|yaml[>\]]", run(name, "--help").stdout), name


def test_retry_delete_flush_and_purge_in_json(tmp_path: Path) -> None:
    config = str(_config(tmp_path))
    a, b, c = asyncio.run(_fill(tmp_path))
    assert json.loads(run("retry", a, "-c", config, "--format", "json").stdout) == {"id": a, "due": 1}
    assert json.loads(run("flush", "-c", config, "--format", "json").stdout) == {"messages": 1, "due": 1}
    dry = json.loads(run("purge", "--sender", "alice@*", "-c", config, "--format", "json").stdout)
    assert dry == {"would_delete": [a, c]}
    done = YAML(typ="safe").load(run("purge", "--sender", "alice@*", "--yes", "-c", config, "--format", "yaml").stdout)
    assert done == {"deleted": [a, c]}
    assert json.loads(run("delete", b, "-c", config, "--format", "json").stdout) == {"id": b, "deleted": True}


# -- with a relay ----------------------------------------------------------------------------


async def test_a_held_message_waits_in_a_running_relay_until_released(write_config, start_relay) -> None:  # noqa: F811
    port = free_port()  # nothing listens yet: the first attempt fails and the message is deferred
    config = write_config(route_to(port))
    relay = await start_relay(config)
    held = (await send(relay, message(to="held@partner.example")))[1].split()[-1]

    async def deferred():
        detail = await relay.queue.show(held)
        return detail if detail.recipients[0].state == "deferred" else None

    await eventually(deferred, what="the first message deferred")
    hold = await asyncio.to_thread(run, "hold", held, "--config", str(config))
    assert hold.exit_code == 0, hold.output
    retry_at = (await relay.queue.show(held)).recipients[0].next_attempt_at
    with Sink(port=port) as sink:

        async def retry_time_passed():
            return time.time() > retry_at + 0.1

        await eventually(retry_time_passed, what="the held message's retry time")
        # a later message goes through: the scheduler has leased since the held one came due
        await send(relay, message(to="later@partner.example"))
        [got] = await sink.received(1)
        assert got.recipients == ["later@partner.example"]
        detail = await relay.queue.show(held)
        assert detail.held_at is not None and detail.recipients[0].attempts == 1  # not tried again
        listed = await asyncio.to_thread(run, "list", "--config", str(config), "--format", "json")
        assert [(e["id"], e["held"]) for e in json.loads(listed.stdout)] == [(held, True)]

        released = await asyncio.to_thread(run, "release", held, "--config", str(config))
        assert released.stdout == f"{held}: released\n1 message(s) released\n"
        got = await sink.received(2)
        assert got[1].recipients == ["held@partner.example"]
        assert await relay.queue.count() == 0
