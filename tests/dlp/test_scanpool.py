"""The scanning threads' pool (engine/relay/dlp/scanpool.py): each caller gets its own result
or exception, in the caller's context, from at most `workers` threads; a caller that gave
up costs the pool nothing."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time

import pytest

from engine.relay.dlp.scanpool import ScanPool

WHO = contextvars.ContextVar("who", default="nobody")


async def test_each_caller_gets_its_own_result() -> None:
    pool = ScanPool(3, "test-scan")
    results = await asyncio.gather(*(pool.run(pow, n, 2) for n in range(200)))
    assert results == [n * n for n in range(200)]


async def test_an_exception_reaches_its_caller_and_the_pool_goes_on() -> None:
    pool = ScanPool(2, "test-scan")
    with pytest.raises(ZeroDivisionError):
        await pool.run(divmod, 1, 0)
    assert await pool.run(divmod, 7, 2) == (3, 1)


async def test_the_call_runs_in_a_copy_of_the_callers_context() -> None:
    pool = ScanPool(1, "test-scan")

    def read_and_set() -> str:
        seen = WHO.get()
        WHO.set("worker")  # in the copy only
        return seen

    WHO.set("session 7")
    assert await pool.run(read_and_set) == "session 7"
    assert WHO.get() == "session 7"


async def test_no_more_than_workers_threads_run_at_once() -> None:
    pool = ScanPool(2, "test-scan")
    release = threading.Event()
    running, most = 0, 0
    lock = threading.Lock()

    def hold() -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(10)
        with lock:
            running -= 1
        return threading.current_thread().name

    calls = [asyncio.ensure_future(pool.run(hold)) for _ in range(6)]
    await asyncio.to_thread(_wait_for, lambda: running == 2)
    assert not any(call.done() for call in calls)  # four wait for a worker
    release.set()
    names = await asyncio.gather(*calls)
    assert most == 2
    assert set(names) == {"test-scan_0", "test-scan_1"}


async def test_a_job_put_while_the_only_worker_counted_idle_is_not_left_behind_a_long_one() -> None:
    """Two jobs put before the one idle worker woke: the worker that takes the first, a long
    scan, starts another for the second rather than leaving it queued behind."""
    pool = ScanPool(2, "test-scan")
    assert await pool.run(int) == 0  # one worker, idle again
    release = threading.Event()
    long = asyncio.ensure_future(pool.run(release.wait, 10))
    short = asyncio.ensure_future(pool.run(str.upper, "short"))
    try:
        assert await asyncio.wait_for(short, 10) == "SHORT"
        assert not long.done()
    finally:
        release.set()
    assert await long is True


async def test_a_caller_that_gave_up_costs_nothing() -> None:
    """A cancelled caller's result is dropped when it comes; later callers are served."""
    pool = ScanPool(1, "test-scan")
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        return "late"

    call = asyncio.ensure_future(pool.run(slow))
    await asyncio.to_thread(started.wait, 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    release.set()
    assert await pool.run(str.upper, "next") == "NEXT"


def _wait_for(condition, timeout: float = 10.0) -> None:
    """Poll `condition` (another thread changes it) until it holds, for at most `timeout`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
