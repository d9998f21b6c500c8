"""The active set: leased entries waiting in memory for a delivery slot, as jobs per destination.

Postfix's active queue, in our words. The deliverer leases due entries from the queue (without
their bodies) and splits each into **jobs**: one per recipient domain, carrying the
destination the domain's route leads to. Jobs wait in a list per destination; `next` hands
out the next job round robin over the destinations that may start one (`Destinations.ready`),
so a destination that is slow or at its limit holds only its own slots and never the mail
of the others. The jobs of a dead destination are taken out at once (`take`) and deferred
without an attempt. An entry leaves the active set when its last job is finished, and its
body (read once, when its first job starts) goes with it.

Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from engine.relay.queue import Leased, Recipient

ACTIVE_LIMIT = 10_000  # entries held in memory (Postfix: qmgr_message_active_limit)


@dataclass(eq=False)
class Active:
    """One leased entry while its jobs wait or run."""

    leased: Leased
    jobs: int = 0  # jobs not finished yet
    warned: bool = False  # a delay warning went out (shared by its jobs: one warning per entry)
    body: asyncio.Future | None = None  # the body, read once for all its jobs
    begun: bool = False  # a job of it has started

    @property
    def id(self) -> str:
        return self.leased.id


@dataclass(eq=False)
class Job:
    """The recipients of one entry in one domain, and where their route leads."""

    active: Active
    domain: str
    recipients: tuple[Recipient, ...]
    destination: str
    protect: bool  # the entry needs an encryption method: never deferred without it running
    started: bool = field(default=False)

    @property
    def addresses(self) -> list[str]:
        return [r.address for r in self.recipients]


class Scheduler:
    """Jobs waiting per destination, handed out round robin."""

    def __init__(self) -> None:
        self._todo: dict[str, deque[Job]] = {}
        self._ring: deque[str] = deque()  # destinations with waiting jobs, in turn order
        self._entries: dict[str, Active] = {}

    def __len__(self) -> int:
        """Entries held (waiting or running)."""
        return len(self._entries)

    def holds(self, entry_id: str) -> bool:
        return entry_id in self._entries

    def add(self, leased: Leased, split: Callable[[Active], list[Job]]) -> list[Job]:
        """Hold `leased` and queue its jobs (`split` makes them); returns them."""
        active = Active(leased, warned=leased.warned)
        jobs = split(active)
        if not jobs:
            return []
        active.jobs = len(jobs)
        self._entries[leased.id] = active
        for job in jobs:
            todo = self._todo.get(job.destination)
            if todo is None:
                todo = self._todo[job.destination] = deque()
                self._ring.append(job.destination)
            todo.append(job)
        return jobs

    def next(self, ready: Callable[[str], bool]) -> Job | None:
        """The next job to start: from the first destination in turn that is `ready`, which
        then goes to the back of the line."""
        for _ in range(len(self._ring)):
            name = self._ring[0]
            self._ring.rotate(-1)
            if ready(name):
                todo = self._todo[name]
                job = todo.popleft()
                if not todo:  # nothing more for it: out of the line (it is last after the rotation)
                    del self._todo[name]
                    self._ring.pop()
                return job
        return None

    def take(self, destination: str) -> list[Job]:
        """Every job waiting for `destination` (it is dead: they are deferred at once)."""
        jobs = list(self._todo.pop(destination, ()))
        if jobs:
            self._ring.remove(destination)
        return jobs

    def waiting(self, destination: str) -> int:
        todo = self._todo.get(destination)
        return len(todo) if todo else 0

    def destinations(self) -> Iterator[str]:
        """The destinations with jobs waiting (a copy: safe to `take` while iterating)."""
        return iter(tuple(self._ring))

    def finished(self, job: Job) -> bool:
        """A job is done; True when it was its entry's last (the entry leaves the active set)."""
        active = job.active
        active.jobs -= 1
        if active.jobs > 0:
            return False
        self._entries.pop(active.id, None)
        return True
