"""The queue's writer in its own process (`engine.relay.queue.writerproc`), as the relay runs it:
the same answers as the thread writer, errors and log records that cross the pipe, the
directory's lock held by both processes, a child that dies replaced without losing what was
committed, and a close that answers every job already sent."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from engine.relay.queue import NotQueued, Queue, QueueLocked, QueueWriteError, store

SENDER = "alice@example.org"
T0 = 1_700_000_000.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


@pytest.fixture
def pq(tmp_path):
    queue = Queue.open(tmp_path / "queue", writer="process")
    yield queue
    queue.close()


async def _journey(queue: Queue) -> list:
    """One message through the queue, every answer recorded."""
    seen = []
    msg_id = await queue.enqueue(SENDER, ["b@x.net", "c@y.net"], b"Subject: hi\r\n\r\nbody\r\n", meta={"k": 1}, now=T0)
    leased = await queue.lease(T0, 10, bodies=1)
    seen.append([(e.sender, [r.address for r in e.recipients], e.body, e.meta) for e in leased])
    seen.append(await queue.mark_delivered(msg_id, ["b@x.net"], "250 ok", tls="TLSv1.3"))
    seen.append(await queue.mark_deferred(msg_id, ["c@y.net"], "451 later", T0 + 60))
    detail = await queue.show(msg_id)
    seen.append([(r.address, r.state, r.last_error) for r in detail.recipients])
    seen.append(await queue.body(msg_id))
    seen.append(await queue.count())
    with pytest.raises(NotQueued) as raised:
        await queue.show("000000000000")
    seen.append(str(raised.value))
    return seen


async def test_the_process_writer_answers_as_the_thread_writer_does(tmp_path):
    answers = {}
    for writer in ("thread", "process"):
        with Queue.open(tmp_path / writer, writer=writer) as queue:
            answers[writer] = await _journey(queue)
    assert answers["process"] == answers["thread"]
    assert answers["process"][3] == [("b@x.net", "delivered", None), ("c@y.net", "deferred", "451 later")]


async def test_concurrent_enqueues_commit_together_in_the_child(pq):
    ids = await asyncio.gather(*(pq.enqueue(SENDER, [f"r{i}@x.net"], b"x" * 2000, meta={}) for i in range(200)))
    assert len(set(ids)) == 200 and await pq.count() == 200
    stats = await pq.stats()
    assert stats.enqueued == 200 and stats.transactions < 200 and stats.largest_batch > 1  # group commit


def test_close_waits_for_the_writer_to_let_go_of_the_queue(tmp_path):
    queue = Queue.open(tmp_path / "queue", writer="process")
    child = queue._committer.pid
    assert child is not None and _alive(child)
    with pytest.raises(QueueLocked):
        Queue.open(tmp_path / "queue")
    queue.close()
    assert not _alive(child)  # close waits for the child: it has released the database and the lock
    Queue.open(tmp_path / "queue").close()


async def test_a_killed_writer_is_replaced_and_committed_mail_stays(pq):
    before = await pq.enqueue(SENDER, ["b@x.net"], b"kept\r\n", meta={})
    old = pq._committer.pid
    os.kill(old, signal.SIGKILL)
    await asyncio.to_thread(_wait, lambda: pq._committer.restarts == 1 and pq._committer.pid != old)
    after = await pq.enqueue(SENDER, ["c@x.net"], b"new\r\n", meta={})
    assert await pq.count() == 2
    assert await pq.body(before) == b"kept\r\n" and await pq.body(after) == b"new\r\n"


async def test_jobs_held_by_a_dying_writer_fail_as_transient(pq):
    """A job the child took but never answered fails with a transient error (intake: 451)."""
    os.kill(pq._committer.pid, signal.SIGSTOP)  # it takes the job, then dies before answering
    pending = asyncio.ensure_future(pq.enqueue(SENDER, ["b@x.net"], b"x\r\n", meta={}))
    await asyncio.sleep(0)  # the frame is sent
    os.kill(pq._committer.pid, signal.SIGKILL)
    with pytest.raises(QueueWriteError) as raised:
        await asyncio.wait_for(pending, 10)
    assert raised.value.transient and "writer process exited" in raised.value.reason


def test_the_writer_ignores_a_terminal_interrupt(pq):
    """Ctrl-C reaches the whole process group; the relay stops its own way, and the child must
    stay to finish the jobs the relay still sends while it stops."""
    child = pq._committer.pid
    os.kill(child, signal.SIGINT)
    os.kill(child, signal.SIGTERM)
    assert asyncio.run(pq.count()) == 0
    assert pq._committer.pid == child and pq._committer.restarts == 0


async def test_the_childs_log_records_reach_the_relays_log(pq, tmp_path, caplog):
    msg_id = await pq.enqueue(SENDER, ["b@x.net"], b"x" * 5000, meta={}, now=T0)
    with sqlite3.connect(tmp_path / "queue" / "queue.db") as conn:  # damage it behind the writer's back
        conn.execute("UPDATE bodies SET data = ? WHERE msg_id = ?", (b"y" * 5000, msg_id))
    conn.close()
    with caplog.at_level(logging.ERROR, logger="engine.relay.queue.store"):
        assert await pq.due(T0, 10) == []
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("engine.relay.queue.store", f"queue: entry {msg_id} set aside: body checksum mismatch")
    ]


def test_close_answers_every_job_already_sent(tmp_path):
    queue = Queue.open(tmp_path / "queue", writer="process")
    futures = [queue._committer.submit(store.insert, SENDER, [f"r{i}@x"], b"b", "{}", T0) for i in range(50)]
    queue.close()
    assert all(f.done() for f in futures)
    ids = [f.result() for f in futures]
    assert len(set(ids)) == 50
    with Queue.open(tmp_path / "queue") as again:
        assert again.recovery.clean and asyncio.run(again.count()) == 50


async def test_after_close_a_job_is_refused(tmp_path):
    queue = Queue.open(tmp_path / "queue", writer="process")
    queue.close()
    with pytest.raises(QueueWriteError) as raised:
        await queue.enqueue(SENDER, ["b@x.net"], b"x\r\n", meta={})
    assert raised.value.transient


async def test_a_large_body_crosses_intact(pq):
    body = os.urandom(3 << 20)  # above LARGE_FRAME: sent from a worker thread
    msg_id = await pq.enqueue(SENDER, ["b@x.net"], body, meta={})
    assert await pq.body(msg_id) == body


def test_a_relay_killed_outright_leaves_its_writer_to_end_and_the_queue_to_reopen(tmp_path):
    """kill -9 of the relay: while its writer lives, no other relay opens the queue; the writer
    sees its pipe close, finishes, and lets go of the lock."""
    directory = tmp_path / "queue"
    code = (
        "import sys, asyncio; from engine.relay.queue import Queue; "
        f"q = Queue.open({str(directory)!r}, writer='process'); "
        "asyncio.run(q.enqueue('a@x', ['b@y'], b'kept', meta={})); print(q._committer.pid, flush=True); "
        "sys.stdin.read()"
    )
    relay = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = int(relay.stdout.readline())  # the message is queued
        os.kill(child, signal.SIGSTOP)  # the writer cannot end yet: the relay dies first
        os.kill(relay.pid, signal.SIGKILL)
        relay.wait()
        with pytest.raises(QueueLocked):  # the lock outlives the relay: the writer holds it too
            Queue.open(directory)
        os.kill(child, signal.SIGCONT)
    finally:
        relay.kill()
    opened = []

    def reopens() -> bool:
        try:
            opened.append(Queue.open(directory))
        except QueueLocked:
            return False
        return True

    _wait(reopens)
    with opened[0] as queue:
        assert asyncio.run(queue.count()) == 1


def _unpicklable_result(conn):
    return lambda: None  # a job's result that cannot cross the pipe


def _unpicklable_error(conn):
    class Local(Exception):
        pass

    raise Local("raised by a job")


async def test_what_cannot_cross_the_pipe_fails_alone(pq):
    """A result or error that does not pickle fails its own job with a QueueWriteError; the
    jobs of the same transaction get their answers."""
    import tests.test_queue_writerproc as here

    results = await asyncio.gather(
        pq._committer.run(here._unpicklable_result),
        pq._committer.run(here._unpicklable_error),
        pq.enqueue(SENDER, ["b@x.net"], b"x\r\n", meta={}),
        return_exceptions=True,
    )
    assert isinstance(results[0], QueueWriteError) and not results[0].transient
    assert "could not be returned: function" in results[0].reason
    assert isinstance(results[1], QueueWriteError) and "Local: raised by a job" in results[1].reason
    assert isinstance(results[2], str) and await pq.count() == 1


def test_replies_reach_a_second_event_loop_while_the_first_reads_them(tmp_path):
    """The relay's main loop reads the replies; the admin API's loop, in its own thread, gets
    its answers handed over."""
    import threading

    queue = Queue.open(tmp_path / "queue", writer="process")
    try:

        async def main() -> list:
            msg_id = await queue.enqueue(SENDER, ["b@x.net"], b"x\r\n", meta={})  # this loop reads now
            answers: list = []

            def admin() -> None:
                answers.append(asyncio.run(queue.show(msg_id)).sender)

            other = threading.Thread(target=admin)
            other.start()
            await asyncio.to_thread(other.join, 10)
            return answers

        assert asyncio.run(main()) == [SENDER]
    finally:
        queue.close()


def test_one_queue_across_successive_event_loops(tmp_path):
    """A loop that ended stops reading; the next loop to await a job takes over."""
    queue = Queue.open(tmp_path / "queue", writer="process")
    try:
        first = asyncio.run(queue.enqueue(SENDER, ["b@x.net"], b"one\r\n", meta={}))
        second = asyncio.run(queue.enqueue(SENDER, ["c@x.net"], b"two\r\n", meta={}))
        assert asyncio.run(queue.count()) == 2 and first != second
        assert queue._committer.call(store.count) == 2  # no loop runs: read where it waits
    finally:
        queue.close()


async def test_a_blocking_call_on_the_reading_loops_thread_is_refused(pq):
    """It would wait for a reply that only this thread can read."""
    await pq.count()  # this loop reads the replies
    with pytest.raises(RuntimeError, match="await run"):
        pq._committer.call(store.count)
    assert await pq.count() == 0  # and the queue still answers
