"""The queue's accept and settle paths pinned exactly: what a storage failure means to the
SMTP edge, how the writer batches, commits and fails jobs, what an enqueue stores, and how
reporting a recipient's outcome moves the entry on or removes it. In-memory SQLite where
the disk does not matter. Written against the surviving mutants of scripts/mutate
(docs/mutation-results.md)."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import sqlite3
import threading
import time

import pytest

from engine.relay.queue import Queue, QueueClosed, QueueWriteError, store, writer
from engine.relay.queue.writer import GroupCommitter, write_error

T0 = 1_700_000_000.0
WAIT = 5  # seconds: every job here takes milliseconds; a mutant that loses one fails fast


def _sqlite_error(code: int | None, name: str | None, text: str = "disk I/O error") -> sqlite3.Error:
    exc = sqlite3.OperationalError(text)
    if code is not None:
        exc.sqlite_errorcode, exc.sqlite_errorname = code, name
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_sqlite_error(13, "SQLITE_FULL"), (True, "queue storage is full (SQLITE_FULL)", True)),
        (_sqlite_error(13 | 1 << 8, None), (True, "queue storage is full (OperationalError)", True)),  # extended code
        (_sqlite_error(18, "SQLITE_TOOBIG"), (False, "message too large for the queue (SQLITE_TOOBIG)", False)),
        (
            _sqlite_error(10 | 3 << 8, "SQLITE_IOERR_WRITE"),
            (True, "queue write failed: SQLITE_IOERR_WRITE: disk I/O error", False),
        ),
        (_sqlite_error(None, None, "locked"), (True, "queue write failed: OperationalError: locked", False)),
        (
            OSError(errno.ENOSPC, "No space left on device"),
            (True, "queue write failed: [Errno 28] No space left on device", True),
        ),
        (
            OSError(errno.EDQUOT, "Disk quota exceeded"),
            (True, "queue write failed: [Errno 122] Disk quota exceeded", True),
        ),
        (OSError(errno.EIO, "Input/output error"), (True, "queue write failed: [Errno 5] Input/output error", False)),
        (MemoryError(), (True, "queue write failed: out of memory", False)),
    ],
)
def test_write_error(exc: BaseException, expected: tuple[bool, str, bool]) -> None:
    error = write_error(exc)
    assert isinstance(error, QueueWriteError)
    assert (error.transient, error.reason, error.no_space) == expected
    assert str(error) == expected[1]


def test_write_error_leaves_the_rest_alone() -> None:
    own, bug = QueueWriteError(False, "too big"), ZeroDivisionError("x")
    assert write_error(own) is own and write_error(bug) is bug


# -- the writer ------------------------------------------------------------------------------


class Flaky(sqlite3.Connection):
    """A connection whose statement `fail` fails once with SQLITE_FULL, after `passes` runs."""

    fail, passes = "", 0

    def execute(self, sql, *args):  # noqa: ANN001, ANN201
        if sql == self.fail:
            self.passes -= 1
            if self.passes < 0:
                self.fail = ""
                raise _sqlite_error(13, "SQLITE_FULL", "database or disk is full")
        return super().execute(sql, *args)


def _db(fail: str = "", passes: int = 0) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=Flaky)
    conn.fail, conn.passes = fail, passes
    conn.execute("CREATE TABLE t (v INTEGER)")
    return conn


def _committer(fail: str = "", passes: int = 0, **options: object) -> GroupCommitter:
    committer = GroupCommitter(lambda: _db(fail, passes), **options)
    committer.start()
    return committer


def _rows(committer: GroupCommitter) -> list[int]:
    return committer.submit(lambda conn: [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")]).result(WAIT)


def _insert(v: int):
    return lambda conn: conn.execute("INSERT INTO t VALUES (?)", (v,)).rowcount


class Blocked:
    """Holds the writer thread in a job until released, so what comes next queues up."""

    def __init__(self, committer: GroupCommitter) -> None:
        self.started, self.gate = threading.Event(), threading.Event()
        self.future = committer.submit(lambda conn: (self.started.set(), self.gate.wait(WAIT)))
        assert self.started.wait(WAIT)

    def release(self) -> None:
        self.gate.set()
        self.future.result(WAIT)


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="^max_batch must be at least 1$"):
        GroupCommitter(_db, max_batch=0)
    GroupCommitter(_db, max_batch=1)


def test_start_raises_why_the_connection_failed() -> None:
    def refuse() -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    with pytest.raises(sqlite3.OperationalError, match="unable to open database file"):
        GroupCommitter(refuse).start()


def test_results_counters_and_closing() -> None:
    committer = _committer()
    assert committer.call(_insert(1)) == 1
    assert committer.submit(_insert(2)).result(WAIT) == 1
    assert (committer.transactions, committer.largest_batch, committer.failed_writes) == (2, 1, 0)
    with pytest.raises(ZeroDivisionError):
        committer.submit(lambda conn: 1 / 0).result(WAIT)
    assert committer.failed_writes == 0  # a bug is not a write failure
    committer.stop()
    committer.stop()  # idempotent
    with pytest.raises(QueueClosed, match="^the queue is closed$"):
        committer.submit(_insert(3))


def test_batches_are_bounded() -> None:
    committer = _committer(max_batch=2)
    try:
        blocked = Blocked(committer)
        futures = [committer.submit(_insert(v)) for v in range(5)]
        blocked.release()
        assert [f.result(WAIT) for f in futures] == [1] * 5
        assert (committer.transactions, committer.largest_batch) == (4, 2)  # the blocker, then 2 + 2 + 1
    finally:
        committer.stop()


def test_jobs_submitted_before_stop_still_run(caplog: pytest.LogCaptureFixture) -> None:
    committer = _committer()
    blocked = Blocked(committer)
    late = [committer.submit(_insert(v)) for v in (10, 11)]
    threading.Timer(0.2, blocked.gate.set).start()
    committer.stop()  # its stop signal arrives in the same batch as the late jobs
    assert all(f.done() and f.result() == 1 for f in late)
    assert committer.largest_batch == 2
    assert [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def test_the_writer_is_a_named_daemon_thread() -> None:
    committer = _committer()
    try:
        (thread,) = [t for t in threading.enumerate() if t.name == "sealrelay-queue-writer"]
        assert thread.daemon
        custom = _committer(name="queue-2")
        assert [t.daemon for t in threading.enumerate() if t.name == "queue-2"] == [True]
        custom.stop()
    finally:
        committer.stop()


def test_by_default_a_lone_caller_never_lingers() -> None:
    committer = GroupCommitter(_db)
    committer.start()
    try:
        blocked = Blocked(committer)
        first = [committer.submit(_insert(v)) for v in (1, 2, 3)]
        blocked.release()
        [f.result(WAIT) for f in first]
        start = time.monotonic()
        committer.submit(_insert(4)).result(WAIT)
        assert time.monotonic() - start < 0.5
    finally:
        committer.stop()


def test_lingering_ends_after_linger_s() -> None:
    committer = _committer(linger_s=0.3)
    try:
        blocked = Blocked(committer)
        first = [committer.submit(_insert(v)) for v in (1, 2, 3)]
        blocked.release()
        [f.result(WAIT) for f in first]
        start = time.monotonic()
        committer.submit(_insert(4)).result(WAIT)  # alone: waits 0.3 s for two more, then commits
        assert 0.25 <= time.monotonic() - start < 3
        futures = [committer.submit(_insert(5))]
        time.sleep(0.1)
        futures += [committer.submit(_insert(6))]
        [f.result(WAIT) for f in futures]
        assert committer.largest_batch == 3 and _rows(committer) == [1, 2, 3, 4, 5, 6]
    finally:
        committer.stop()


def test_a_bug_in_the_writer_fails_the_batch_and_is_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(job: object) -> bool:
        raise RuntimeError("bug")

    committer = _committer()
    try:
        monkeypatch.setattr(writer, "_still_wanted", broken)
        with pytest.raises(RuntimeError, match="^bug$"):
            committer.submit(_insert(1)).result(WAIT)
        monkeypatch.undo()
        assert committer.submit(_insert(2)).result(WAIT) == 1 and _rows(committer) == [2]
    finally:
        committer.stop()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("ERROR", "queue: writer failed on a batch")]


def test_closing_a_database_that_fails_to_close_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Unclosable(Flaky):
        def close(self) -> None:
            super().close()
            raise sqlite3.OperationalError("checkpoint failed")

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=Unclosable)
        conn.execute("CREATE TABLE t (v INTEGER)")
        return conn

    committer = GroupCommitter(connect)
    committer.start()
    committer.stop()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "queue: closing the database failed: checkpoint failed")
    ]


async def test_an_outcome_nobody_waits_for_does_not_hold_up_the_others() -> None:
    committer = _committer()
    try:
        blocked = Blocked(committer)
        running, gate = threading.Event(), threading.Event()
        abandoned = asyncio.ensure_future(committer.run(lambda conn: (running.set(), gate.wait(WAIT))))
        kept = asyncio.ensure_future(asyncio.wait_for(committer.run(_insert(2)), WAIT))
        await asyncio.sleep(0.05)
        blocked.release()
        assert await asyncio.to_thread(running.wait, WAIT)
        abandoned.cancel()  # while its job runs: the outcome has no taker
        gate.set()
        assert await kept == 1
    finally:
        committer.stop()


def test_a_job_that_failed_keeps_its_own_error_when_the_commit_fails() -> None:
    committer = _committer("COMMIT", passes=1)
    try:
        blocked = Blocked(committer)
        bad = committer.submit(lambda conn: 1 / 0)
        good = committer.submit(_insert(1))
        blocked.release()
        with pytest.raises(ZeroDivisionError):
            bad.result(WAIT)
        with pytest.raises(QueueWriteError):
            good.result(WAIT)
    finally:
        committer.stop()


def test_a_job_that_failed_keeps_its_own_error_when_the_transaction_is_abandoned() -> None:
    def abandon(conn: sqlite3.Connection) -> None:
        conn.execute("ROLLBACK")
        raise _sqlite_error(13, "SQLITE_FULL", "database or disk is full")

    committer = _committer()
    try:
        blocked = Blocked(committer)
        bad = committer.submit(lambda conn: 1 / 0)
        failing = committer.submit(abandon)
        blocked.release()
        with pytest.raises(ZeroDivisionError):
            bad.result(WAIT)
        with pytest.raises(QueueWriteError):
            failing.result(WAIT)
    finally:
        committer.stop()


def test_a_lost_savepoint_abandons_the_transaction() -> None:
    def lose_savepoint(conn: sqlite3.Connection) -> None:
        conn.execute("RELEASE job")  # what the job's savepoint was is gone: its work cannot be undone alone
        raise ValueError("half done")

    committer = _committer()
    try:
        blocked = Blocked(committer)
        before = committer.submit(_insert(1))
        losing = committer.submit(lose_savepoint)
        after = committer.submit(_insert(3))
        blocked.release()
        for future in (before, losing):
            with pytest.raises(ValueError, match="^half done$"):
                future.result(WAIT)
        assert after.result(WAIT) == 1 and _rows(committer) == [3]
    finally:
        committer.stop()


def test_a_cancelled_job_never_runs() -> None:
    committer = _committer()
    try:
        blocked = Blocked(committer)
        dropped = committer.submit(_insert(1))
        kept = committer.submit(_insert(2))
        assert dropped.cancel()
        blocked.release()
        assert kept.result(WAIT) == 1 and _rows(committer) == [2]
    finally:
        committer.stop()


async def test_an_awaited_job_cancelled_before_it_runs_never_runs() -> None:
    committer = _committer()
    try:
        blocked = Blocked(committer)
        dropped = asyncio.ensure_future(committer.run(_insert(1)))
        kept = asyncio.ensure_future(asyncio.wait_for(committer.run(_insert(2)), WAIT))
        await asyncio.sleep(0.05)
        dropped.cancel()
        blocked.release()
        assert await asyncio.wait_for(kept, WAIT) == 1
        assert dropped.cancelled() and _rows(committer) == [2]
    finally:
        committer.stop()


def test_linger_waits_for_as_many_callers_as_last_time() -> None:
    committer = _committer(linger_s=5.0)
    try:
        start = time.monotonic()
        committer.call(_insert(0))  # a lone caller never waits
        assert time.monotonic() - start < 2.5
        blocked = Blocked(committer)
        first = [committer.submit(_insert(v)) for v in (1, 2, 3)]
        blocked.release()
        [f.result(WAIT) for f in first]
        before = committer.transactions
        futures = [committer.submit(_insert(4))]
        time.sleep(0.2)  # the writer lingers for two more
        futures += [committer.submit(_insert(v)) for v in (5, 6)]
        [f.result(WAIT) for f in futures]
        assert committer.transactions == before + 1 and committer.largest_batch == 3
    finally:
        committer.stop()


def test_without_linger_a_batch_takes_only_what_is_waiting() -> None:
    committer = _committer(linger_s=0.0)
    try:
        blocked = Blocked(committer)
        first = [committer.submit(_insert(v)) for v in (1, 2, 3)]
        blocked.release()
        [f.result(WAIT) for f in first]
        before = committer.transactions
        committer.submit(_insert(4)).result(WAIT)
        time.sleep(0.2)
        committer.submit(_insert(5)).result(WAIT)
        assert committer.transactions == before + 2
    finally:
        committer.stop()


@pytest.mark.parametrize("statement", ["BEGIN IMMEDIATE", "COMMIT"])
def test_a_failed_begin_or_commit_fails_the_whole_batch_and_keeps_nothing(statement: str) -> None:
    committer = _committer(statement, passes=1)
    try:
        blocked = Blocked(committer)  # its own transaction passes; the next one's BEGIN or COMMIT fails
        futures = [committer.submit(_insert(v)) for v in (1, 2)]
        blocked.release()
        for future in futures:
            with pytest.raises(QueueWriteError) as caught:
                future.result(WAIT)
            assert (caught.value.transient, caught.value.no_space) == (True, True)
        assert committer.failed_writes == 2
        assert _rows(committer) == []
        assert committer.submit(_insert(3)).result(WAIT) == 1 and _rows(committer) == [3]  # the writer goes on
    finally:
        committer.stop()


def test_a_failed_commit_is_not_counted_as_a_transaction() -> None:
    committer = _committer("COMMIT")
    try:
        with pytest.raises(QueueWriteError):
            committer.submit(_insert(1)).result(WAIT)
        assert (committer.transactions, committer.largest_batch) == (0, 0)
        committer.submit(_insert(2)).result(WAIT)
        assert (committer.transactions, committer.largest_batch) == (1, 1)
    finally:
        committer.stop()


# -- accept: enqueue ---------------------------------------------------------------------------


@pytest.fixture
def q(tmp_path):
    queue = Queue.open(tmp_path / "queue")
    yield queue
    queue.close()


def _stored(q: Queue, msg_id: str) -> tuple:
    return q._committer.call(
        lambda conn: (
            conn.execute(
                "SELECT sender, meta, created_at, size, sha256, warned, next_due, lease_until FROM messages WHERE id = ?",
                (msg_id,),
            ).fetchone(),
            conn.execute(
                "SELECT rcpt, position, state, attempts, next_attempt_at, leased, last_error, last_tls, detail, "
                "updated_at FROM recipients WHERE msg_id = ? ORDER BY position",
                (msg_id,),
            ).fetchall(),
            conn.execute("SELECT data FROM bodies WHERE msg_id = ?", (msg_id,)).fetchone()[0],
        )
    )


async def test_enqueue_stores_the_whole_entry(q: Queue) -> None:
    body = b"Subject: s\r\n\r\nhello\r\n"
    msg_id = await q.enqueue("", ["b@x.net", "a@x.net", "b@x.net"], body, meta={"z": 1, "a": [1, 2]}, now=T0)
    assert len(msg_id) == 12 and int(msg_id, 16) >= 0
    message, recipients, data = _stored(q, msg_id)
    digest = hashlib.sha256(body).digest()
    assert message == ("", '{"a":[1,2],"z":1}', T0, len(body), digest, 0, T0, None)
    assert recipients == [
        ("b@x.net", 0, "pending", 0, T0, 0, None, None, None, None),
        ("a@x.net", 1, "pending", 0, T0, 0, None, None, None, None),
    ]
    assert data == body
    assert (await q.stats()).enqueued == 1


async def test_enqueue_without_a_time_uses_the_clock(q: Queue) -> None:
    before = time.time()
    msg_id = await q.enqueue("a@x.net", ["b@x.net"], b"x", meta={})
    created = (await q.show(msg_id)).created_at
    assert before <= created <= time.time()


async def test_a_large_body_is_hashed_correctly_off_the_loop(q: Queue) -> None:
    body = b"y" * ((1 << 20) + 1)
    msg_id = await q.enqueue("a@x.net", ["b@x.net"], bytearray(body), meta={}, now=T0)
    assert _stored(q, msg_id)[0][4] == hashlib.sha256(body).digest()
    [entry] = await q.due(T0, 10)  # a wrong digest would set it aside here
    assert entry.id == msg_id and entry.body == body


async def test_enqueue_refusals(q: Queue) -> None:
    with pytest.raises(ValueError, match="^a queued message needs at least one recipient$"):
        await q.enqueue("a@x.net", [], b"x", meta={})
    q.close()
    with pytest.raises(QueueWriteError) as caught:
        await q.enqueue("a@x.net", ["b@x.net"], b"x", meta={})
    assert (caught.value.transient, caught.value.reason, caught.value.no_space) == (True, "the queue is closed", False)


def test_insert_gives_up_after_eight_taken_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    store.create_schema(conn)
    monkeypatch.setattr(store, "new_id", lambda now: "a" * 12)
    assert store.insert(conn, "", ["b@x.net"], b"x", "{}", T0) == "aaaaaaaaaaaa"
    draws = []
    monkeypatch.setattr(store, "new_id", lambda now: draws.append(now) or "a" * 12)
    with pytest.raises(QueueWriteError) as caught:
        store.insert(conn, "", ["b@x.net"], b"x", "{}", T0)
    assert (caught.value.transient, caught.value.reason) == (True, "could not allocate a queue id")
    assert draws == [T0] * 8
    taken = iter(["a" * 12, "b" * 12])
    monkeypatch.setattr(store, "new_id", lambda now: next(taken))
    assert store.insert(conn, "", ["b@x.net"], b"x", "{}", T0) == "b" * 12  # drawn again


def test_ids_follow_arrival_so_inserts_stay_at_the_end_of_the_tables() -> None:
    ids = [store.new_id(T0) for _ in range(3)] + [store.new_id(T0 + 1)]
    assert all(len(i) == 12 and int(i, 16) >= 0 for i in ids)
    assert ids[0][:8] == ids[2][:8] == f"{int(T0):08x}" and ids[3][:8] == f"{int(T0) + 1:08x}"
    assert len(set(ids)) == 4 and ids[3] > ids[2]  # a later second sorts after


# -- settle: mark and settle -------------------------------------------------------------------


def _conn_with(recipients: list[str]) -> tuple[sqlite3.Connection, str]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    store.create_schema(conn)
    return conn, store.insert(conn, "a@x.net", recipients, b"x", "{}", T0)


def _recipient_rows(conn: sqlite3.Connection, msg_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT rcpt, state, attempts, next_attempt_at, leased, last_error, last_tls, detail, updated_at "
        "FROM recipients WHERE msg_id = ? ORDER BY position",
        (msg_id,),
    ).fetchall()


def _message_row(conn: sqlite3.Connection, msg_id: str) -> tuple | None:
    return conn.execute("SELECT next_due, lease_until FROM messages WHERE id = ?", (msg_id,)).fetchone()


def test_mark_records_the_outcome_and_keeps_what_it_does_not_say() -> None:
    conn, msg_id = _conn_with(["a@x.net", "b@x.net", "c@x.net"])
    store.lease_due(conn, T0, 10, 300)
    assert (
        store.mark(
            conn, msg_id, ["a@x.net"], "deferred", T0 + 1, error="451 later", tls="TLSv1.3", next_attempt_at=T0 + 600
        )
        == 1
    )
    assert store.mark(conn, msg_id, ["a@x.net"], "deferred", T0 + 2, next_attempt_at=None) == 1  # nothing new to say
    assert store.mark(conn, msg_id, ["b@x.net", "nobody@x.net"], "delivered", T0 + 3, detail="250 ok") == 1
    assert _recipient_rows(conn, msg_id) == [
        ("a@x.net", "deferred", 2, T0 + 600, 0, "451 later", "TLSv1.3", None, T0 + 2),
        ("b@x.net", "delivered", 1, T0, 0, None, None, "250 ok", T0 + 3),
        ("c@x.net", "pending", 0, T0, 1, None, None, None, None),
    ]
    assert _message_row(conn, msg_id) == (T0 + 300, T0 + 300)  # c is still leased: not due before the lease ends
    # a final recipient is never changed again, and nothing is settled for it
    assert store.mark(conn, msg_id, ["b@x.net"], "bounced", T0 + 4, error="late") == 0
    assert _recipient_rows(conn, msg_id)[1][1:3] == ("delivered", 1)


def test_settle_moves_next_due_ends_the_lease_and_removes_the_entry() -> None:
    conn, msg_id = _conn_with(["a@x.net", "b@x.net"])
    store.lease_due(conn, T0, 10, 300)
    store.mark(conn, msg_id, ["a@x.net"], "deferred", T0, next_attempt_at=T0 + 900)
    assert _message_row(conn, msg_id) == (T0 + 300, T0 + 300)  # b is still leased
    store.mark(conn, msg_id, ["b@x.net"], "deferred", T0, next_attempt_at=T0 + 600)
    assert _message_row(conn, msg_id) == (T0 + 600, None)  # the earliest retry; no lease left
    store.mark(conn, msg_id, ["a@x.net", "b@x.net"], "bounced", T0, error="550")
    assert _message_row(conn, msg_id) is None
    assert conn.execute("SELECT count(*) FROM recipients").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bodies").fetchone()[0] == 0


async def test_queue_marks_report_to_the_store(q: Queue) -> None:
    msg_id = await q.enqueue("a@x.net", ["a@x.net", "b@x.net", "c@x.net"], b"x", meta={}, now=T0)
    await q.due(T0, 10)
    before = time.time()
    assert await q.mark_deferred(msg_id, ["a@x.net"], "451 later", T0 + 600, tls="TLSv1.2") == 1
    assert await q.mark_bounced(msg_id, ["b@x.net"], "550 no", tls="none") == 1
    assert await q.mark_delivered(msg_id, ["c@x.net", "c@x.net"], "250 ok", tls="TLSv1.3") == 1
    rows = {r[0]: r for r in _stored(q, msg_id)[1]}
    assert rows["a@x.net"][2:9] == ("deferred", 1, T0 + 600, 0, "451 later", "TLSv1.2", None)
    assert rows["b@x.net"][2:9] == ("bounced", 1, T0, 0, "550 no", "none", None)
    assert rows["c@x.net"][2:9] == ("delivered", 1, T0, 0, None, "TLSv1.3", "250 ok")
    assert all(before <= r[9] <= time.time() for r in rows.values())


def test_write_failures_and_a_failed_rollback_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    class CommitAndRollbackFail(Flaky):
        def execute(self, sql, *args):  # noqa: ANN001, ANN201
            if sql == "ROLLBACK" and self.fail == "":  # after the COMMIT failed once
                raise sqlite3.OperationalError("cannot rollback")
            return super().execute(sql, *args)

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=CommitAndRollbackFail)
        conn.fail, conn.passes = "COMMIT", 0
        conn.execute("CREATE TABLE t (v INTEGER)")
        return conn

    committer = GroupCommitter(connect)
    committer.start()
    try:
        with pytest.raises(QueueWriteError):
            committer.submit(_insert(1)).result(WAIT)
    finally:
        committer.stop()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "queue: rollback failed: cannot rollback"),
        ("WARNING", "queue: write failed: queue storage is full (SQLITE_FULL)"),
    ]
