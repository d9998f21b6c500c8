"""The queue's values and errors: what callers of `engine.relay.queue` see.

Pure data, no I/O. Every value handed out is a snapshot; changing it changes nothing in the
queue.

Errors::

    QueueError                 anything the queue refuses or fails to do
     +-- QueueWriteError       a write did not commit; nothing of it remains (SMTP: 451/452)
     +-- NotQueued             no entry with that id (it was delivered, bounced or deleted)
     +-- QueueLocked           another process owns this queue directory
     +-- QueueClosed           the queue was closed
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

RecipientState = Literal["pending", "delivered", "deferred", "bounced"]
STATES: tuple[RecipientState, ...] = ("pending", "delivered", "deferred", "bounced")
OPEN_STATES: tuple[RecipientState, ...] = ("pending", "deferred")
FINAL_STATES: tuple[RecipientState, ...] = ("delivered", "bounced")


class QueueError(Exception):
    """Base of every error the queue raises."""


class QueueWriteError(QueueError):
    """A write did not reach the disk, and nothing of it was kept.

    `transient` is True when trying again later may succeed (disk full, I/O error, database
    busy): the SMTP edge answers 4xx. `no_space` singles out a full disk (SMTP 452 rather
    than 451). A non-transient error (a message larger than the store accepts) is a 5xx.
    """

    def __init__(self, transient: bool, reason: str, *, no_space: bool = False) -> None:
        super().__init__(reason)
        self.transient = transient
        self.reason = reason
        self.no_space = no_space

    def __reduce__(self):  # crosses from the writer process with every field
        return (_write_error, (self.transient, self.reason, self.no_space))

    def __repr__(self) -> str:
        return f"QueueWriteError(transient={self.transient}, reason={self.reason!r}, no_space={self.no_space})"


def _write_error(transient: bool, reason: str, no_space: bool) -> QueueWriteError:
    return QueueWriteError(transient, reason, no_space=no_space)


class NotQueued(QueueError, KeyError):
    """No entry with that id is in the queue."""

    def __str__(self) -> str:
        return f"not in the queue: {self.args[0]}"


class QueueLocked(QueueError):
    """Another process holds the queue directory's lock (one owner per queue)."""


class QueueClosed(QueueError):
    """The queue was closed; open it again to use it."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """One recipient of an entry and where its delivery stands."""

    address: str
    state: RecipientState
    attempts: int
    next_attempt_at: float
    last_error: str | None = None
    last_tls: str | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """An entry leased to one delivery worker by `Queue.due`.

    `recipients` holds only the recipients due now; the lease covers them until
    `lease_until` or until each has been marked. The body was checked against its SHA-256.
    """

    id: str
    sender: str
    recipients: tuple[Recipient, ...]
    body: bytes
    meta: dict[str, Any]
    created_at: float
    warned: bool
    lease_until: float


@dataclass(frozen=True, slots=True)
class Leased:
    """An entry leased by `Queue.lease`, as a scheduler holds it while it waits for a free
    delivery slot: without its body, which `Queue.load` reads and checks, unless the lease
    brought it along (`body`: for the entries that start at once, saving a trip)."""

    id: str
    sender: str
    recipients: tuple[Recipient, ...]
    meta: dict[str, Any]
    created_at: float
    warned: bool
    lease_until: float
    size: int
    body: bytes | None = None

    def with_body(self, body: bytes) -> Entry:
        return Entry(
            self.id, self.sender, self.recipients, body, self.meta, self.created_at, self.warned, self.lease_until
        )


@dataclass(frozen=True, slots=True)
class EntrySummary:
    """One entry of `Queue.list`: counts of recipients per state, its open recipients, held or not."""

    id: str
    sender: str
    created_at: float
    size: int
    states: dict[str, int]
    next_due: float  # the earliest retry of its open recipients
    last_error: str | None
    held_at: float | None = None  # put on hold then (`queue hold`): never leased until released
    recipients: tuple[Recipient, ...] = ()  # its open recipients, in envelope order


@dataclass(frozen=True, slots=True)
class EntryDetail:
    """Everything the queue knows about one entry, for `queue show`."""

    id: str
    sender: str
    created_at: float
    size: int
    sha256: str
    warned: bool
    meta: dict[str, Any]
    recipients: tuple[Recipient, ...]
    next_due: float
    lease_until: float | None
    held_at: float | None = None  # put on hold then (`queue hold`): never leased until released


@dataclass(frozen=True, slots=True)
class CorruptEntry:
    """An entry set aside because it could not be trusted; it is never delivered."""

    id: str
    reason: str
    set_aside_at: float
    sender: str | None
    recipients: tuple[tuple[str, str], ...]  # (address, state when set aside)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What `Queue.open` found and did before the queue took any new work."""

    set_aside: tuple[tuple[str, str], ...] = ()  # (entry id, reason)
    leases_released: int = 0
    database_set_aside: str | None = None  # path of a damaged database file moved away
    salvaged: int = 0  # entries copied out of that damaged file

    @property
    def clean(self) -> bool:
        return not self.set_aside and self.database_set_aside is None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Sizes of the queue and the writer's counters since `open`.

    `transactions` counts commits (each one fsync of the write-ahead log); with group
    commit it stays well below `enqueued` under concurrent load.
    """

    entries: int
    bytes: int
    recipients: dict[str, int]
    corrupt: int
    enqueued: int
    transactions: int
    largest_batch: int
    failed_writes: int
    held: int = 0  # entries on hold (`queue hold`): counted in `entries`, never leased
