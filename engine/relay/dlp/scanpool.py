"""A small pool of scanning threads with a lean hand-off to and from the event loop.

`loop.run_in_executor` costs, per call, a `concurrent.futures.Future` with its lock and
condition, an asyncio future chained to it by callbacks on both sides and the executor's
lock; with every message scanned at relay speed, that plumbing held the interpreter lock
about as long as a quiet message's whole scan. Here a job is the loop's own future and the
call, put on one queue, and a worker answers with one `call_soon_threadsafe` (which the loop
coalesces: a burst of answers wakes it once).

Workers are daemon threads started on demand, up to `workers`: a scan is pure computation on
bytes the caller holds, so nothing is lost when the process exits with one running.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any


class ScanPool:
    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # workers waiting for a job
        self._lock = threading.Lock()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` in a worker, in a copy of the caller's context (as `asyncio.to_thread`)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((loop, future, contextvars.copy_context(), fn, args))
        if not self._idle:
            self._start_worker()
        return await future

    def _start_worker(self) -> None:
        with self._lock:
            if self._idle or len(self._threads) >= self.workers:
                return
            thread = threading.Thread(target=self._work, name=f"{self.name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            self._idle += 1  # idle from the start: the job just put is its first
        thread.start()

    def _work(self) -> None:
        while True:
            loop, future, context, fn, args = self._jobs.get()
            with self._lock:
                self._idle -= 1
                waiting = not self._idle and not self._jobs.empty()
            if waiting:  # a job put while this worker still counted idle: no one else would take it
                self._start_worker()
            try:
                outcome = (context.run(fn, *args), None)
            except BaseException as error:  # handed to the caller, as an executor would
                outcome = (None, error)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: no one is waiting
                loop.call_soon_threadsafe(_settle, future, *outcome)
            del loop, future, context, fn, args, outcome
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    """On the loop: the waiting caller gets its result (a caller gone meanwhile, nothing)."""
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
