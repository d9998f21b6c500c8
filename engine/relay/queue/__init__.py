"""The durable message queue: the one owner of queued mail on disk.

An accepted message is written here before the SMTP edge answers 250, and leaves only when
every recipient is delivered or bounced (or an operator deletes it). The rules:

- **Durable before success.** `enqueue` returns only after the COMMIT that holds the message
  has been fsynced (SQLite WAL, `synchronous=FULL`). A message acknowledged by `enqueue`
  survives `kill -9` and power loss.
- **All or nothing.** A failed write raises `QueueWriteError` and leaves nothing of the
  message: the entry, its body and its recipients are one transaction.
- **At most a duplicate, never a loss.** Each recipient's outcome is recorded as it happens;
  after a crash only the recipients whose outcome was not yet recorded are tried again.
- **Damage is set aside.** An entry whose body is missing or fails its SHA-256 is moved to the
  `corrupt` table with the reason, on `open` and whenever it is leased; it is never delivered.

Storage: one SQLite database, `<dir>/queue.db`, bodies as BLOBs. Why BLOBs rather than one
fsynced file per message: with a file per message every enqueue pays its own fsync of the
file and of the directory, plus the metadata commit (three syncs), and an error between them
leaves an orphan file to clean up. With BLOBs the body and its metadata are one transaction
and the WAL turns any number of concurrent enqueues into one sequential append and one fsync
(group commit, see `queue_writer`). Measured side by side (bench/bench_queue.py), a file per
message was slower even with its fsyncs run in parallel. Bodies are mail-sized (KB to tens
of MB), well within what SQLite stores efficiently. Design note: docs/queue.md. The directory
is owner-only (0700); the database is created 0600 before SQLite opens it, and SQLite gives
its -wal and -shm files the database's mode.

Concurrency: all SQLite work runs on one writer (`GroupCommitter`, a thread; for the relay, in
a child process of its own, `writerproc.ProcessCommitter`, so that the writer does not wait
for the event loop's GIL); the async methods wait on it without blocking the event loop. One process owns a queue directory at a time
(`flock` on `<dir>/queue.lock`); a second owner's `open` raises `QueueLocked`. An operator's
command may open it `shared` beside the owner (WAL: readers never block the writer).

Delivery protocol for a worker: `due()` leases entries; for each recipient report exactly one
of `mark_delivered`, `mark_deferred` or `mark_bounced`. Before `mark_bounced`, enqueue the
NDR: the entry (body included) is removed as soon as its last recipient is final.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.fsutil import private_dir
from engine.relay.queue import recovery as recovery
from engine.relay.queue import store as store
from engine.relay.queue.types import (
    CorruptEntry,
    Entry,
    EntryDetail,
    EntrySummary,
    Leased,
    NotQueued,
    QueueClosed,
    QueueError,
    QueueLocked,
    QueueStats,
    QueueWriteError,
    Recipient,
    RecoveryReport,
)
from engine.relay.queue.writer import GroupCommitter
from engine.relay.queue.writerproc import ProcessCommitter

__all__ = [
    "CorruptEntry",
    "Entry",
    "EntryDetail",
    "EntrySummary",
    "Leased",
    "NotQueued",
    "Queue",
    "QueueClosed",
    "QueueError",
    "QueueLocked",
    "QueueStats",
    "QueueWriteError",
    "Recipient",
    "RecoveryReport",
]

log = logging.getLogger(__name__)

DB_NAME = "queue.db"
STATS_DUTY = 0.002  # the most of the writer's time `stats` spends counting a big queue


class Queue:
    """A durable queue of messages with per-recipient delivery state. Use `Queue.open`."""

    def __init__(self, directory: Path, committer: GroupCommitter, lock_fd: int | None) -> None:
        self.directory = directory
        self.recovery = RecoveryReport()
        self._committer = committer
        self._lock_fd: int | None = lock_fd
        self._enqueued = 0
        self._totals: tuple | None = None  # the last count of entries, bytes, states, set aside
        self._recount_at = 0.0

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike,
        *,
        shared: bool = False,
        max_batch: int = 256,
        linger_s: float = 0.0,
        writer: str = "thread",
    ) -> Queue:
        """Open (creating if needed) the queue in `directory`; as its owner, run recovery.

        The owner (the relay) takes the directory's lock, then recovery runs before this
        returns: call it at startup, before serving. Raises `QueueLocked` if another owner
        has it. `shared=True` is for an operator's command beside a running relay: no lock,
        no recovery, leases left alone; list, show, retry and delete work as usual.
        `max_batch=1` turns group commit off (one fsync per write), for comparison only;
        `linger_s` lets the writer wait that long for more callers (see `GroupCommitter`).
        `writer="process"` runs the SQLite work in a child process (`writerproc`): what the
        relay does, so that its event loop and the writer do not share one interpreter lock;
        the default, a thread, is for commands and tests that open a queue briefly.
        """
        path = private_dir(directory)
        os.close(os.open(path / DB_NAME, os.O_WRONLY | os.O_CREAT, 0o600))  # an empty file is an empty database
        lock_fd = None if shared else _lock(path)
        committer: GroupCommitter | ProcessCommitter
        try:
            if writer == "process":
                committer = ProcessCommitter(path / DB_NAME, shared=shared, max_batch=max_batch, lock_fd=lock_fd)
                opened = committer.start()
            else:
                opened = recovery.OpenResult()
                committer = GroupCommitter(
                    lambda: recovery.open_database(path / DB_NAME, opened, shared=shared),
                    max_batch=max_batch,
                    linger_s=linger_s,
                )
                committer.start()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        try:
            if not shared:
                set_aside, released = committer.call(recovery.recover, time.time())
        except BaseException:
            committer.stop()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        queue = cls(path, committer, lock_fd)
        if not shared:
            queue.recovery = RecoveryReport(
                set_aside=tuple(opened.lost) + tuple(set_aside),
                leases_released=released,
                database_set_aside=opened.set_aside_path,
                salvaged=opened.salvaged,
            )
        if not queue.recovery.clean:
            log.warning("queue: recovery of %s: %s", path, queue.recovery)
        return queue

    def close(self) -> None:
        """Finish submitted work, close the database and release the directory. Idempotent."""
        self._committer.stop()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- intake --------------------------------------------------------------------------

    async def enqueue(
        self,
        sender: str,
        recipients: list[str],
        body: bytes,
        *,
        meta: dict[str, Any],
        now: float | None = None,
        prefix: bytes = b"",
    ) -> str:
        """Queue a message for `recipients`; return its id once it is durable on disk.

        The stored content is `prefix + body`, written without joining them (intake puts its
        Received and DLP header lines before what the client sent: no copy of a large body).

        `sender` may be "" (the null sender of bounces). Duplicate recipients are queued
        once. `meta` must be JSON-serialisable. Raises `QueueWriteError` if the message
        could not be committed; then nothing of it is queued. If the caller is cancelled
        while the commit runs, the message may still be queued (a duplicate, never a loss).
        """
        rcpts = list(dict.fromkeys(recipients))
        if not rcpts:
            raise ValueError("a queued message needs at least one recipient")
        data = bytes(body)
        meta_json = json.dumps(meta, sort_keys=True, separators=(",", ":"))
        when = time.time() if now is None else now
        try:  # the writer computes the SHA-256: off the event loop, in the writer process for the relay
            msg_id = await self._run(store.insert, sender, rcpts, data, meta_json, when, prefix)
        except QueueClosed:
            raise QueueWriteError(True, "the queue is closed") from None
        self._enqueued += 1
        return msg_id

    # -- delivery ------------------------------------------------------------------------

    async def due(self, now: float, limit: int, *, lease_s: float = 300.0) -> list[Entry]:
        """Lease up to `limit` entries with recipients due at `now`, for `lease_s` seconds.

        Each entry carries only its due recipients and its verified body. No other `due`
        call returns the entry until the lease ends: when every leased recipient has been
        marked, on `release`, or at `lease_until` (a crashed worker's lease lapses).
        """
        return await self._run(store.lease_due, now, limit, lease_s)

    async def lease(self, now: float, limit: int, *, lease_s: float = 300.0, bodies: int = 0) -> list[Leased]:
        """Like `due`, without the bodies: for a scheduler that holds leased entries while they
        wait for a delivery slot, and reads a body (`load`) only when it is needed. The first
        `bodies` entries bring theirs along (those it starts at once: one trip, not two)."""
        return await self._run(store.lease, now, limit, lease_s, bodies)

    async def load(self, leased: Leased) -> Entry:
        """The leased entry with its body, checked against its SHA-256. Raises `NotQueued` when
        the entry is gone, or its body failed the check (it is then set aside, see `corrupt`)."""
        if leased.body is not None:
            return leased.with_body(leased.body)
        body = await self._run(store.load_body, leased.id, time.time())
        if body is None:
            raise NotQueued(leased.id)
        return leased.with_body(body)

    async def postpone(self, items: list[tuple[str, list[str]]], reason: str, until: float) -> int:
        """Defer recipients to `until` without counting an attempt: none was made (their
        destination is dead). `items` are (entry id, recipients), in one transaction."""
        now = time.time()
        return await self._run(store.postpone, items, reason, until, now)

    async def mark_delivered(self, msg_id: str, rcpts: list[str], detail: str, *, tls: str | None = None) -> int:
        """Record delivery to `rcpts` (`detail`: the peer's reply). Returns recipients changed."""
        return await self._mark(msg_id, rcpts, "delivered", detail=detail, tls=tls)

    async def mark_deferred(
        self,
        msg_id: str,
        rcpts: list[str],
        error: str,
        next_attempt_at: float,
        *,
        tls: str | None = None,
    ) -> int:
        """Record a temporary failure for `rcpts`, to be tried again at `next_attempt_at`."""
        return await self._mark(msg_id, rcpts, "deferred", error=error, tls=tls, next_attempt_at=next_attempt_at)

    async def mark_bounced(self, msg_id: str, rcpts: list[str], error: str, *, tls: str | None = None) -> int:
        """Record a permanent failure for `rcpts`. Enqueue the NDR before calling this."""
        return await self._mark(msg_id, rcpts, "bounced", error=error, tls=tls)

    async def mark_warned(self, msg_id: str) -> None:
        """Remember that the sender was warned of the delay. Raises `NotQueued`."""
        await self._run(store.mark_warned, msg_id)

    async def release(self, msg_id: str) -> None:
        """Give a leased entry back without reporting (e.g. a worker shutting down)."""
        await self._run(store.release, msg_id)

    # -- administration ------------------------------------------------------------------

    async def show(self, msg_id: str) -> EntryDetail:
        """Everything about one entry. Raises `NotQueued`."""
        return await self._run(store.show, msg_id)

    async def body(self, msg_id: str) -> bytes:
        """The entry's message as queued (`queue show --body`), checked against its SHA-256.
        Raises `NotQueued` when it is gone or its body failed the check (then set aside)."""
        body = await self._run(store.load_body, msg_id, time.time())
        if body is None:
            raise NotQueued(msg_id)
        return body

    async def retry(self, msg_id: str, *, now: float | None = None) -> int:
        """Make the entry's open recipients due now; return how many. Raises `NotQueued`."""
        when = time.time() if now is None else now
        return await self._run(store.retry, msg_id, when)

    async def delete(self, msg_id: str) -> None:
        """Remove an entry without notice to the sender. Raises `NotQueued`."""
        await self._run(store.delete, msg_id)

    async def hold(self, msg_id: str, *, now: float | None = None) -> bool:
        """Put an entry on hold (`queue hold`, Postfix: postsuper -h): no delivery leases it
        until `unhold`, across restarts. A delivery already under way finishes and records
        its outcome. Nothing expires while held: `max_queue_lifetime` is applied when a
        delivery attempt fails, and a held entry has none. False if it was held already.
        Raises `NotQueued`."""
        when = time.time() if now is None else now
        return await self._run(store.hold, msg_id, when)

    async def unhold(self, msg_id: str) -> bool:
        """Take an entry off hold (`queue release`, Postfix: postsuper -H): its recipients keep
        their retry times, those already past are due at once. False if it was not held.
        Raises `NotQueued`."""
        return await self._run(store.unhold, msg_id)

    async def count(self) -> int:
        """Number of entries in the queue."""
        return await self._run(store.count)

    async def corrupt(self, limit: int = 100) -> list[CorruptEntry]:
        """Entries set aside as damaged, newest first."""
        return await self._run(store.corrupt_entries, limit)

    async def stats(self) -> QueueStats:
        """Queue sizes and the writer's counters (transactions vs enqueues: group commit).

        Counting reads every entry, so on a big queue the sizes are recounted only after a
        pause of `1 / STATS_DUTY` times what the last count took (at 100,000 entries, about
        90 ms: every 45 s): the count may be that old, and the one writer thread, which intake
        waits on, never spends more than `STATS_DUTY` of its time counting. A quick count
        (a small queue) is redone every time."""
        now = time.monotonic()
        if self._totals is None or now >= self._recount_at:
            self._totals = await self._run(store.totals)
            took = time.monotonic() - now
            self._recount_at = now + (took / STATS_DUTY if took > 0.005 else 0.0)
        entries, size, per_state, corrupt, held = self._totals
        writer = self._committer
        return QueueStats(
            entries=entries,
            bytes=size,
            recipients=per_state,
            corrupt=corrupt,
            held=held,
            enqueued=self._enqueued,
            transactions=writer.transactions,
            largest_batch=writer.largest_batch,
            failed_writes=writer.failed_writes,
        )

    async def list(
        self, limit: int = 100, state: str | None = None, after: str | None = None, *, held: bool | None = None
    ) -> list[EntrySummary]:
        """The oldest `limit` entries, optionally only those with a recipient in `state`, and
        only the held (`held=True`) or those not held (`held=False`); a page at a time:
        `after` is the id the previous page ended with (it may have left since)."""
        return await self._run(store.list_entries, limit, state, after, held)

    async def open_by_domain(self) -> dict[str, int]:
        """Open recipients per recipient domain (reads every recipient: for rare questions)."""
        from engine.policy.groups import domain_of

        rcpts = await self._run(store.open_recipients)
        counts: dict[str, int] = {}
        for rcpt in rcpts:
            domain = domain_of(rcpt)
            counts[domain] = counts.get(domain, 0) + 1
        return counts

    # -- internals -----------------------------------------------------------------------

    async def _mark(self, msg_id: str, rcpts: list[str], state: str, **fields: Any) -> int:
        now = time.time()
        return await self._run(store.mark, msg_id, rcpts, state, now, **fields)

    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await self._committer.run(fn, *args, **kwargs)


def _lock(directory: Path) -> int:
    """Take the directory's exclusive lock (released by the kernel if the process dies)."""
    fd = os.open(directory / "queue.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise QueueLocked(f"another process has the queue in {directory} open") from None
    return fd
