"""The queue's writer thread: every SQLite call runs on it, and concurrent writes commit together.

One thread owns the one SQLite connection, so the event loop never blocks on the disk and no
two writers ever contend for the database. Callers hand it jobs (a function of the
connection) with `await run(fn)` (or `submit(fn)` from a plain thread).

Group commit: when the thread picks up a job it also takes every job that queued up behind
it, runs them all in ONE transaction, each inside its own SAVEPOINT, and commits once. With
`synchronous=FULL` that commit is one fsync of the write-ahead log, so twenty SMTP sessions
finishing DATA together pay one fsync between them instead of twenty. The batching tunes
itself: the enqueues that arrive while one commit is being fsynced form the next batch, so
the slower the disk, the larger the batches, and a lone caller never waits. (`linger_s`
can make the thread wait a little longer for more; measured in bench/bench_queue.py, it
does not pay on a fast disk.) A job's result is handed back only after the COMMIT has
returned, i.e. after the fsync: callers never see success for data that is not on disk.
Results reach each event loop in one wake-up per batch, not one per job.

Failure isolation: a job that raises is rolled back to its savepoint and fails alone; the
others still commit. If SQLite abandons the whole transaction (it may on SQLITE_FULL or an
I/O error), the jobs that had already run lose their work and fail with the same error, and
the jobs not yet run start again in a fresh transaction. If the COMMIT itself fails, every
job of the batch fails. Either way a failed job leaves nothing behind.

Precondition: `connect` makes a connection in autocommit mode (`isolation_level=None`); the
jobs must not BEGIN, COMMIT or ROLLBACK themselves.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from engine.relay.queue.types import QueueClosed, QueueWriteError

log = logging.getLogger(__name__)

_STOP = object()
_SQLITE_FULL = 13
_SQLITE_TOOBIG = 18


def write_error(exc: BaseException) -> BaseException:
    """Translate a storage failure into a `QueueWriteError`; return anything else unchanged."""
    if isinstance(exc, QueueWriteError):
        return exc
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
        primary = code & 0xFF if code is not None else None
        if primary == _SQLITE_FULL:
            return QueueWriteError(True, f"queue storage is full ({name})", no_space=True)
        if primary == _SQLITE_TOOBIG:
            return QueueWriteError(False, f"message too large for the queue ({name})")
        return QueueWriteError(True, f"queue write failed: {name}: {exc}")
    if isinstance(exc, OSError):
        no_space = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        return QueueWriteError(True, f"queue write failed: {exc}", no_space=no_space)
    if isinstance(exc, MemoryError):
        return QueueWriteError(True, "queue write failed: out of memory")
    return exc


class _Job:
    """One unit of work: `fn(conn, *args, **kwargs)`, and where its outcome goes (an asyncio
    future resolved on `loop`, or a `concurrent.futures.Future` when `loop` is None; in the
    writer process, the job's number and the reply channel)."""

    __slots__ = ("args", "fn", "future", "kwargs", "loop")

    def __init__(self, fn: Callable[..., Any], future: Any, loop: Any, args: tuple = (), kwargs: dict | None = None):
        self.fn = fn
        self.future = future
        self.loop = loop
        self.args = args
        self.kwargs = kwargs or {}


class GroupCommitter:
    """Runs queue jobs on one thread and commits concurrent ones in a single transaction.

    `max_batch` bounds the jobs per transaction (1 turns group commit off: one transaction,
    one fsync per job). `linger_s` (default 0) bounds how long the thread waits for more
    jobs when the previous batch was larger than what has arrived so far; a lone caller
    never waits.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        max_batch: int = 256,
        linger_s: float = 0.0,
        name: str = "sealrelay-queue-writer",
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._ready: Future = Future()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._last_batch = 0
        self.transactions = 0
        self.largest_batch = 0
        self.failed_writes = 0

    def start(self) -> None:
        """Start the thread and wait until it holds an open connection (or raise why not)."""
        self._thread.start()
        self._ready.result()

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(conn, *args, **kwargs)` inside the next transaction; return its result once
        committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._put(_Job(fn, future, loop, args, kwargs))
        return await future

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Like `run`, for threads without an event loop: the future resolves after commit."""
        future: Future = Future()
        self._put(_Job(fn, future, None, args, kwargs))
        return future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(conn, ...)` on the writer thread and wait for it (for open and close, not the loop)."""
        return self.submit(fn, *args, **kwargs).result()

    def stop(self) -> None:
        """Finish the jobs already submitted, close the connection and end the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._jobs.put(_STOP)
        self._thread.join()

    def _put(self, job: _Job) -> None:
        with self._lock:
            if self._closed:
                raise QueueClosed("the queue is closed")
            self._jobs.put(job)

    # -- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to start(), which raises it
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        try:
            stopping = False
            while not stopping:
                first = self._jobs.get()
                if first is _STOP:
                    break
                batch, stopping = self._gather(first)
                self._last_batch = len(batch)
                try:
                    self._run_batch(conn, batch)
                except BaseException as exc:  # a bug here must not leave callers waiting forever
                    log.exception("queue: writer failed on a batch")
                    _rollback(conn)
                    deliver([(job, write_error(exc), False) for job in batch])
        finally:
            try:
                conn.close()
            except sqlite3.Error as exc:  # the data is committed; closing only checkpoints
                log.warning("queue: closing the database failed: %s", exc)

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """Take `first` and the jobs that arrive with it; say whether a stop came too.

        Beyond what is already waiting, wait (at most `linger_s`) only until the batch is as
        large as the previous one: that many callers were active a moment ago.
        """
        batch = [first]
        expected = min(self._last_batch, self._max_batch)
        deadline = time.monotonic() + self._linger_s
        while len(batch) < self._max_batch:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if len(batch) >= expected or remaining <= 0:
                    break
                try:
                    job = self._jobs.get(timeout=remaining)
                except queue.Empty:
                    break
            if job is _STOP:
                return batch, True
            batch.append(job)
        return batch, False

    def _run_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        jobs = [job for job in batch if _still_wanted(job)]
        outcomes: list[tuple[_Job, Any, bool]] = []
        while jobs:
            jobs = self._transaction(conn, jobs, outcomes)
        translated = []
        for job, value, ok in outcomes:
            if not ok:
                value = write_error(value)
                if isinstance(value, QueueWriteError):
                    self.failed_writes += 1
                    log.warning("queue: write failed: %s", value.reason)
            translated.append((job, value, ok))
        deliver(translated)

    def _transaction(
        self, conn: sqlite3.Connection, jobs: list[_Job], outcomes: list[tuple[_Job, Any, bool]]
    ) -> list[_Job]:
        """Run `jobs` in one transaction, appending (job, result or error, ok) to `outcomes`;
        return the jobs that must run again in a new transaction."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            outcomes.extend((job, exc, False) for job in jobs)
            return []
        done: list[tuple[_Job, Any, bool]] = []
        for index, job in enumerate(jobs):
            try:
                conn.execute("SAVEPOINT job")
                result = job.fn(conn, *job.args, **job.kwargs)
                conn.execute("RELEASE job")
            except BaseException as exc:
                if conn.in_transaction and _rollback_to_savepoint(conn):
                    done.append((job, exc, False))
                    continue
                # SQLite gave up the whole transaction: the work of earlier jobs is gone.
                _rollback(conn)
                outcomes.extend((j, exc if ok else r, False) for j, r, ok in done)
                outcomes.append((job, exc, False))
                return jobs[index + 1 :]
            done.append((job, result, True))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            outcomes.extend((j, exc if ok else r, False) for j, r, ok in done)
            return []
        self.transactions += 1
        self.largest_batch = max(self.largest_batch, len(jobs))
        outcomes.extend(done)
        return []


def deliver(outcomes: list[tuple[_Job, Any, bool]]) -> None:
    """Hand every outcome to its caller: one wake-up per event loop (or reply channel), not
    one per job."""
    hand_back((job.future, job.loop, value, ok) for job, value, ok in outcomes)


def hand_back(outcomes, here: Any = None) -> None:
    """Settle (future, its loop or None, result or error, ok) items: a `concurrent.futures`
    future at once, asyncio futures with one `call_soon_threadsafe` per loop (those of
    `here`, the loop whose thread this is, at once)."""
    per_loop: dict[Any, list[tuple[Any, Any, bool]]] = {}
    for future, loop, value, ok in outcomes:
        if loop is None or loop is here:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)
        else:
            per_loop.setdefault(loop, []).append((future, value, ok))
    for loop, items in per_loop.items():
        try:
            loop.call_soon_threadsafe(resolve, items)
        except RuntimeError:  # that loop is closed: nobody is waiting any more
            pass


def _still_wanted(job: _Job) -> bool:
    """False if the caller gave up before the job ran (then it does not run at all)."""
    if job.loop is None:
        return job.future.set_running_or_notify_cancel()
    return not job.future.cancelled()


def resolve(items: list[tuple[asyncio.Future, Any, bool]]) -> None:
    """On the loop's thread: settle asyncio futures not cancelled meanwhile."""
    for future, value, ok in items:
        if future.done():  # cancelled while the job ran: its outcome has no taker
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _rollback_to_savepoint(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("ROLLBACK TO job")
        conn.execute("RELEASE job")
        return True
    except sqlite3.Error:
        return False


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("queue: rollback failed: %s", exc)
