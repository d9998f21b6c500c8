"""The durable queue on real SQLite files: durability across kill -9, group commit, write
failures on a full disk, damaged entries set aside, leases, recipient states, admin calls."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.relay.delivery.failures import expired
from engine.relay.queue import NotQueued, Queue, QueueLocked, QueueWriteError
from engine.relay.queue.writer import GroupCommitter
from tests.conftest import require

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000.0
SENDER = "alice@example.org"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def q(tmp_path):
    queue = Queue.open(tmp_path / "queue")
    yield queue
    queue.close()


async def bodies_by_id(queue: Queue) -> dict[str, str]:
    """SHA-256 of every queued body, read back through the delivery path."""
    entries = await queue.due(time.time() + 10**9, 1_000_000, lease_s=1)
    return {entry.id: sha(entry.body) for entry in entries}


def assert_nothing_partial(db: Path) -> None:
    """Every row belongs to a complete entry and the database is sound."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        orphans = conn.execute(
            "SELECT count(*) FROM (SELECT msg_id FROM bodies UNION ALL SELECT msg_id FROM recipients) "
            "WHERE msg_id NOT IN (SELECT id FROM messages)"
        ).fetchone()[0]
        assert orphans == 0
        incomplete = conn.execute(
            "SELECT count(*) FROM messages m WHERE NOT EXISTS (SELECT 1 FROM bodies b WHERE b.msg_id = m.id) "
            "OR NOT EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = m.id)"
        ).fetchone()[0]
        assert incomplete == 0
    conn.close()


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


# -- intake ------------------------------------------------------------------------------


async def test_enqueue_roundtrip(q):
    body = b"Subject: hi\r\n\r\nhello\r\n"
    msg_id = await q.enqueue(SENDER, ["b@x.net", "c@y.net", "b@x.net"], body, meta={"direction": "outbound"}, now=T0)
    assert len(msg_id) == 12 and int(msg_id, 16) >= 0
    detail = await q.show(msg_id)
    assert detail.sender == SENDER and detail.meta == {"direction": "outbound"}
    assert [r.address for r in detail.recipients] == ["b@x.net", "c@y.net"]  # duplicate queued once
    assert all(r.state == "pending" and r.attempts == 0 for r in detail.recipients)
    assert detail.size == len(body) and detail.sha256 == sha(body) and detail.created_at == T0
    assert await q.count() == 1


async def test_enqueue_refuses_bad_input(q):
    with pytest.raises(ValueError):
        await q.enqueue(SENDER, [], b"x", meta={})
    with pytest.raises(TypeError):
        await q.enqueue(SENDER, ["b@x.net"], b"x", meta={"bad": object()})
    assert await q.count() == 0


async def test_enqueue_after_close_is_a_transient_write_error(tmp_path):
    queue = Queue.open(tmp_path)
    queue.close()
    queue.close()  # idempotent
    with pytest.raises(QueueWriteError) as caught:
        await queue.enqueue(SENDER, ["b@x.net"], b"x", meta={})
    assert caught.value.transient


def test_one_owner_per_directory(tmp_path):
    first = Queue.open(tmp_path)
    with pytest.raises(QueueLocked):
        Queue.open(tmp_path)
    first.close()
    Queue.open(tmp_path).close()


async def test_operator_opens_the_queue_shared_beside_the_owner(tmp_path):
    with Queue.open(tmp_path) as owner:
        leased = await owner.enqueue(SENDER, ["b@x.net"], b"leased", meta={}, now=T0)
        other = await owner.enqueue(SENDER, ["c@x.net"], b"other", meta={}, now=T0 + 1)
        await owner.due(T0, 1, lease_s=3600)
        with Queue.open(tmp_path, shared=True) as operator:
            assert operator.recovery.clean and operator.recovery.leases_released == 0
            assert {s.id for s in await operator.list()} == {leased, other}
            assert (await operator.show(leased)).lease_until == T0 + 3600  # the owner's lease stands
            await operator.delete(other)
        assert await owner.count() == 1  # the owner sees the operator's change
        assert await owner.due(T0 + 1, 10) == []  # and its lease is intact
        with pytest.raises(QueueLocked):
            Queue.open(tmp_path)


# -- durability --------------------------------------------------------------------------

ENQUEUE_FOREVER = r"""
import asyncio, hashlib, os, sys
from engine.relay.queue import Queue

async def main():
    queue = Queue.open(sys.argv[1])

    async def session(n):
        while True:
            body = os.urandom(10240)
            msg_id = await queue.enqueue("s@example.org", [f"r{n}@example.net"], body, meta={"n": n})
            sys.stdout.write(f"{msg_id} {hashlib.sha256(body).hexdigest()}\n")
            sys.stdout.flush()

    await asyncio.gather(*(session(n) for n in range(8)))

asyncio.run(main())
"""


def parse_acks(data: bytes) -> dict[str, str]:
    acked = {}
    for line in data.split(b"\n"):
        parts = line.decode().split()
        if len(parts) == 2 and len(parts[0]) == 12 and len(parts[1]) == 64:
            acked[parts[0]] = parts[1]
    return acked


def read_until(proc: subprocess.Popen, enough, timeout: float) -> bytes:
    """Read the child's stdout until `enough(data)` or EOF; fail after `timeout` seconds."""
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while not enough(data):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child too slow; got {data[-200:]!r}"
            if selector.select(remaining):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                data += chunk
    return data


def test_acknowledged_enqueues_survive_kill_9(tmp_path):
    directory = tmp_path / "queue"
    proc = subprocess.Popen(
        [sys.executable, "-c", ENQUEUE_FOREVER, str(directory)], stdout=subprocess.PIPE, env=child_env()
    )
    try:
        seen = read_until(proc, lambda data: len(parse_acks(data)) >= 300, 60)
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: eight sessions are committing right now
        seen += read_until(proc, lambda data: False, 60)  # acks printed before it died count too
        assert proc.wait(60) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    acked = parse_acks(seen)

    async def check() -> dict[str, str]:
        with Queue.open(directory) as queue:
            assert queue.recovery.set_aside == ()
            return await bodies_by_id(queue)

    stored = asyncio.run(check())
    missing = [msg_id for msg_id in acked if msg_id not in stored]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages lost"
    assert all(stored[msg_id] == digest for msg_id, digest in acked.items())
    assert_nothing_partial(directory / "queue.db")


async def test_concurrent_enqueues_are_group_committed(q):
    async def session(n: int) -> list[str]:
        return [await q.enqueue(SENDER, [f"r{n}@x.net"], os.urandom(10240), meta={"n": n}) for _ in range(10)]

    ids = [msg_id for batch in await asyncio.gather(*(session(n) for n in range(20))) for msg_id in batch]
    stats = await q.stats()
    assert len(set(ids)) == 200 and stats.enqueued == 200 and stats.entries == 200
    assert stats.transactions < stats.enqueued, stats
    assert stats.largest_batch > 1


async def test_without_group_commit_every_enqueue_is_its_own_transaction(tmp_path):
    with Queue.open(tmp_path, max_batch=1) as queue:
        await asyncio.gather(*(queue.enqueue(SENDER, ["b@x.net"], b"x", meta={}) for _ in range(40)))
        stats = await queue.stats()
    assert stats.transactions >= 40 and stats.largest_batch == 1


def test_a_failing_job_fails_alone_within_its_batch():
    """Jobs that arrive together share a transaction; one raising rolls back only itself."""
    committer = GroupCommitter(lambda: _memory_db(), max_batch=16)
    committer.start()
    started, gate = threading.Event(), threading.Event()
    try:
        blocker = committer.submit(lambda conn: (started.set(), gate.wait(30)))
        assert started.wait(30)  # the writer is busy: what comes next queues up behind it
        good1 = committer.submit(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        bad = committer.submit(lambda conn: (conn.execute("INSERT INTO t VALUES (2)"), 1 / 0))
        good2 = committer.submit(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))
        gate.set()
        blocker.result(30)
        good1.result(30)
        good2.result(30)
        with pytest.raises(ZeroDivisionError):
            bad.result(30)
        assert committer.largest_batch == 3 and committer.transactions == 2  # blocker, then the batch
        rows = committer.call(lambda conn: [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")])
        assert rows == [1, 3]
    finally:
        gate.set()
        committer.stop()


def test_jobs_of_an_abandoned_transaction_fail_and_the_rest_run_again():
    """When SQLite drops the whole transaction (as it may on SQLITE_FULL), the jobs that had
    already run lose their work and fail; the jobs after it still get their turn."""
    committer = GroupCommitter(lambda: _memory_db(), max_batch=16)
    committer.start()
    started, gate = threading.Event(), threading.Event()

    def abandon(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")  # what SQLite does by itself on some I/O errors
        raise sqlite3.OperationalError("database or disk is full")

    try:
        blocker = committer.submit(lambda conn: (started.set(), gate.wait(30)))
        assert started.wait(30)
        before = committer.submit(lambda conn: conn.execute("INSERT INTO t VALUES (1)"))
        failing = committer.submit(abandon)
        after = committer.submit(lambda conn: conn.execute("INSERT INTO t VALUES (3)"))
        gate.set()
        blocker.result(30)
        for future in (before, failing):
            with pytest.raises(QueueWriteError) as caught:
                future.result(30)
            assert caught.value.transient
        after.result(30)
        rows = committer.call(lambda conn: [r[0] for r in conn.execute("SELECT v FROM t")])
        assert rows == [3]
        assert committer.failed_writes == 2
    finally:
        gate.set()
        committer.stop()


def _memory_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (v INTEGER)")
    return conn


# -- write failures ----------------------------------------------------------------------


def _mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at `path`; return why not if it cannot be done here."""
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
        )
    except FileNotFoundError:
        return "no mount command"
    return None if done.returncode == 0 else (done.stderr.strip() or f"mount exited {done.returncode}")


async def test_full_filesystem_gives_write_error_and_keeps_nothing_partial(tmp_path):
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    why_not = _mount_tmpfs(mount_point, "512k")
    require(not why_not, f"cannot mount a 512 KiB tmpfs here (needs root and CAP_SYS_ADMIN): {why_not}")
    try:
        directory = mount_point / "queue"
        ballast = mount_point / "ballast"
        ballast.write_bytes(bytes(64 * 1024))  # freed later so the queue can be reopened
        queue = Queue.open(directory)
        acked: dict[str, str] = {}
        errors: list[QueueWriteError] = []

        async def session(n: int) -> None:
            while True:
                body = os.urandom(10240)
                try:
                    msg_id = await queue.enqueue(SENDER, [f"r{n}@x.net"], body, meta={})
                except QueueWriteError as exc:
                    errors.append(exc)
                    return
                acked[msg_id] = sha(body)

        await asyncio.wait_for(asyncio.gather(*(session(n) for n in range(20))), 120)
        assert len(errors) == 20 and all(e.transient for e in errors)
        assert any(e.no_space for e in errors), errors
        assert acked and await queue.count() == len(acked)
        queue.close()

        ballast.unlink()
        with Queue.open(directory) as queue:
            assert queue.recovery.set_aside == ()
            assert await bodies_by_id(queue) == acked
        copy = tmp_path / "copy"  # inspected off the full filesystem, where SQLite has room to work
        copy.mkdir()
        for name in os.listdir(directory):
            shutil.copy(directory / name, copy / name)
        assert_nothing_partial(copy / "queue.db")
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


ENQUEUE_UNDER_FILE_SIZE_LIMIT = r"""
import asyncio, hashlib, json, os, resource, signal, sys
from engine.relay.queue import Queue, QueueWriteError

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceeding the limit fails the write with EFBIG

async def main():
    directory = sys.argv[1]
    queue = Queue.open(directory)
    largest = max(os.path.getsize(os.path.join(directory, n)) for n in os.listdir(directory))
    limit = largest + 256 * 1024
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    for i in range(1000):
        body = os.urandom(10240)
        try:
            msg_id = await queue.enqueue("s@example.org", ["r@example.net"], body, meta={"i": i})
        except QueueWriteError as exc:
            print(json.dumps({"error": exc.reason, "transient": exc.transient}), flush=True)
            break
        print(json.dumps({"id": msg_id, "sha": hashlib.sha256(body).hexdigest()}), flush=True)
    print(json.dumps({"count": await queue.count()}), flush=True)
    queue.close()

asyncio.run(main())
"""


def test_file_size_limit_gives_write_error_and_keeps_nothing_partial(tmp_path):
    """Portable variant of the full disk: RLIMIT_FSIZE makes the WAL write fail."""
    directory = tmp_path / "queue"
    Queue.open(directory).close()
    done = subprocess.run(
        [sys.executable, "-c", ENQUEUE_UNDER_FILE_SIZE_LIMIT, str(directory)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    acked = {line["id"]: line["sha"] for line in lines if "id" in line}
    errors = [line for line in lines if "error" in line]
    assert len(errors) == 1 and errors[0]["transient"], lines[-3:]
    assert lines[-1] == {"count": len(acked)}  # the queue still answers after the failure
    assert acked

    async def check() -> None:
        with Queue.open(directory) as queue:
            assert queue.recovery.set_aside == ()
            assert await bodies_by_id(queue) == acked

    asyncio.run(check())
    assert_nothing_partial(directory / "queue.db")


# -- damage ------------------------------------------------------------------------------


async def _fill(directory: Path, count: int, **kw) -> dict[str, bytes]:
    with Queue.open(directory) as queue:
        bodies = {}
        for i in range(count):
            body = kw.get("make", lambda i: os.urandom(2048))(i)
            bodies[await queue.enqueue(SENDER, [f"r{i}@x.net"], body, meta={"i": i})] = body
    return bodies


async def test_damaged_bodies_are_set_aside_on_open(tmp_path):
    directory = tmp_path / "queue"
    ids = list(await _fill(directory, 4))
    with sqlite3.connect(directory / "queue.db") as conn:
        conn.execute("UPDATE bodies SET data = substr(data, 1, 100) WHERE msg_id = ?", (ids[0],))
        conn.execute("UPDATE bodies SET data = zeroblob(length(data)) WHERE msg_id = ?", (ids[1],))
        conn.execute("DELETE FROM bodies WHERE msg_id = ?", (ids[2],))
    conn.close()

    with Queue.open(directory) as queue:
        reasons = dict(queue.recovery.set_aside)
        assert reasons == {
            ids[0]: "body truncated: 100 of 2048 bytes",
            ids[1]: "body checksum mismatch",
            ids[2]: "body missing",
        }
        assert [e.id for e in await queue.due(T0 * 2, 10)] == [ids[3]]  # never delivered
        corrupt = {c.id: c for c in await queue.corrupt()}
        assert set(corrupt) == set(ids[:3])  # set aside, not dropped
        assert corrupt[ids[0]].recipients == (("r0@x.net", "pending"),)
        with pytest.raises(NotQueued):
            await queue.show(ids[0])
    with Queue.open(directory) as queue:  # reported once; kept
        assert queue.recovery.clean and (await queue.stats()).corrupt == 3


async def test_body_damaged_while_queued_is_set_aside_when_leased(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net"], b"x" * 5000, meta={}, now=T0)
    await q._run(lambda conn: conn.execute("UPDATE bodies SET data = ? WHERE msg_id = ?", (b"y" * 5000, msg_id)))
    assert await q.due(T0, 10) == []
    assert [(c.id, c.reason) for c in await q.corrupt()] == [(msg_id, "body checksum mismatch")]


async def test_unreadable_database_file_is_set_aside(tmp_path):
    directory = tmp_path / "queue"
    await _fill(directory, 3)
    with open(directory / "queue.db", "r+b") as db:
        db.write(b"this is not a database" * 5)
    with Queue.open(directory) as queue:
        moved = queue.recovery.database_set_aside
        assert moved and Path(moved).exists() and Path(moved).parent.name == "corrupt"
        assert await queue.count() == 0
        await queue.enqueue(SENDER, ["b@x.net"], b"x", meta={})  # a fresh queue works
        assert await queue.count() == 1


async def test_damaged_page_loses_only_the_entry_on_it(tmp_path):
    directory = tmp_path / "queue"

    def make(i: int) -> bytes:
        body = bytearray(os.urandom(10240))
        body[8000:8016] = f"MARKER-{i:09d}".encode()  # far past the in-row part: an overflow page
        return bytes(body)

    bodies = await _fill(directory, 20, make=make)
    victim = next(msg_id for msg_id, body in bodies.items() if b"MARKER-000000007" in body)
    raw = (directory / "queue.db").read_bytes()
    page = raw.index(b"MARKER-000000007") // 4096
    with open(directory / "queue.db", "r+b") as db:
        db.seek(page * 4096)
        db.write(b"\xa5" * 4096)

    with Queue.open(directory) as queue:
        reasons = dict(queue.recovery.set_aside)
        assert set(reasons) == {victim}, reasons  # whichever check caught it, only that entry
        stored = await bodies_by_id(queue)
    assert stored == {msg_id: sha(body) for msg_id, body in bodies.items() if msg_id != victim}


# -- leases and recipient states ---------------------------------------------------------


async def test_lease_keeps_other_workers_off_until_it_lapses(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net"], b"x", meta={}, now=T0)
    [entry] = await q.due(T0, 10, lease_s=60)
    assert entry.id == msg_id and entry.body == b"x" and entry.lease_until == T0 + 60
    assert await q.due(T0 + 59, 10) == []  # another worker gets nothing
    [again] = await q.due(T0 + 60, 10)  # the first worker crashed: its lease lapsed
    assert again.id == msg_id


async def test_reporting_every_leased_recipient_ends_the_lease(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net", "c@y.net"], b"x", meta={}, now=T0)
    [entry] = await q.due(T0, 10, lease_s=60)
    assert [r.address for r in entry.recipients] == ["b@x.net", "c@y.net"]
    assert await q.mark_delivered(msg_id, ["b@x.net"], "250 2.0.0 ok", tls="TLSv1.3 TLS_AES_256_GCM_SHA384") == 1
    assert await q.due(T0 + 1, 10) == []  # c@y.net still leased
    assert await q.mark_deferred(msg_id, ["c@y.net"], "451 4.3.0 busy", T0 + 100) == 1
    assert await q.due(T0 + 50, 10) == []  # lease over, but not due yet
    [entry] = await q.due(T0 + 100, 10)
    [rcpt] = entry.recipients  # only the open recipient comes back
    assert (rcpt.address, rcpt.state, rcpt.attempts, rcpt.last_error) == ("c@y.net", "deferred", 1, "451 4.3.0 busy")


async def test_release_gives_the_entry_back(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net"], b"x", meta={}, now=T0)
    await q.due(T0, 10)
    await q.release(msg_id)
    assert [e.id for e in await q.due(T0, 10)] == [msg_id]


async def test_leases_of_a_dead_process_are_released_on_open(tmp_path):
    with Queue.open(tmp_path) as queue:
        msg_id = await queue.enqueue(SENDER, ["b@x.net"], b"x", meta={}, now=T0)
        await queue.due(T0, 10, lease_s=3600)
    with Queue.open(tmp_path) as queue:
        assert queue.recovery.leases_released == 1
        assert [e.id for e in await queue.due(T0, 10)] == [msg_id]


async def test_recipient_states_and_removal_when_all_final(q):
    msg_id = await q.enqueue(SENDER, ["a@x.net", "b@x.net", "c@x.net"], b"body", meta={}, now=T0)
    await q.due(T0, 10)
    await q.mark_delivered(msg_id, ["a@x.net"], "250 ok", tls="TLSv1.3")
    await q.mark_bounced(msg_id, ["b@x.net"], "550 5.1.1 no such user")
    await q.mark_deferred(msg_id, ["c@x.net"], "connection refused", T0 + 300)
    states = {r.address: r for r in (await q.show(msg_id)).recipients}
    assert {a: r.state for a, r in states.items()} == {
        "a@x.net": "delivered",
        "b@x.net": "bounced",
        "c@x.net": "deferred",
    }
    assert states["a@x.net"].last_tls == "TLSv1.3" and states["a@x.net"].detail == "250 ok"
    assert states["c@x.net"].next_attempt_at == T0 + 300

    # a late report never undoes a final state
    assert await q.mark_deferred(msg_id, ["a@x.net"], "late", T0 + 999) == 0
    assert (await q.show(msg_id)).recipients[0].state == "delivered"

    await q.due(T0 + 300, 10)
    await q.mark_delivered(msg_id, ["c@x.net"], "250 ok")
    with pytest.raises(NotQueued):  # every recipient final: entry and body are gone
        await q.show(msg_id)
    assert await q.count() == 0
    assert await q.mark_delivered(msg_id, ["c@x.net"], "250 dup") == 0  # harmless afterwards


async def test_warned_flag_and_lifetime(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net"], b"x", meta={}, now=T0)
    await q.mark_warned(msg_id)
    detail = await q.show(msg_id)
    assert detail.warned and detail.created_at == T0
    [entry] = await q.due(T0, 1)
    assert entry.warned
    assert not expired(entry.created_at, T0 + 86400 * 5 - 1, 86400 * 5)
    assert expired(entry.created_at, T0 + 86400 * 5, 86400 * 5)
    with pytest.raises(NotQueued):
        await q.mark_warned("000000000000")


# -- administration ----------------------------------------------------------------------


async def test_retry_makes_a_deferred_entry_due_now(q):
    msg_id = await q.enqueue(SENDER, ["b@x.net"], b"x", meta={}, now=T0)
    await q.due(T0, 10)
    await q.mark_deferred(msg_id, ["b@x.net"], "timeout", T0 + 3600)
    assert await q.due(T0 + 10, 10) == []
    assert await q.retry(msg_id, now=T0 + 10) == 1
    assert [e.id for e in await q.due(T0 + 10, 10)] == [msg_id]
    with pytest.raises(NotQueued):
        await q.retry("000000000000")


async def test_delete_removes_the_entry(q):
    keep = await q.enqueue(SENDER, ["b@x.net"], b"keep", meta={})
    drop = await q.enqueue(SENDER, ["b@x.net"], b"drop", meta={})
    await q.delete(drop)
    assert [e.id for e in await q.list()] == [keep]
    with pytest.raises(NotQueued):
        await q.delete(drop)
    assert (await q.stats()).entries == 1


async def test_list_count_and_stats(q):
    ids = [await q.enqueue(SENDER, ["b@x.net", "c@x.net"], b"x" * 10, meta={}, now=T0 + i) for i in range(3)]
    await q.due(T0 + 10, 10)
    await q.mark_deferred(ids[1], ["b@x.net"], "451 later", T0 + 600)
    assert [s.id for s in await q.list()] == ids  # oldest first
    [summary] = await q.list(state="deferred")
    assert summary.id == ids[1] and summary.states == {"deferred": 1, "pending": 1}
    assert summary.last_error == "451 later"
    assert len(await q.list(limit=2)) == 2
    with pytest.raises(ValueError):
        await q.list(state="lost")
    stats = await q.stats()
    assert await q.count() == stats.entries == 3 and stats.bytes == 30
    assert stats.recipients == {"pending": 5, "deferred": 1, "delivered": 0, "bounced": 0}
