"""The queue's writer in a process of its own: the relay's SQLite work off its interpreter lock.

Why: the writer thread (`writer.GroupCommitter`) shares the relay's GIL with the event loop.
Python's sqlite3 lets go of the GIL around every step of every statement, and takes it back
only when the event loop's thread lets go of it (the loop waits for I/O, or the switch
interval forces it). About fifteen statements per message each paid that wait: measured under
`bench_relay`, the writer thread was busy 97% of the time, of which 27% on the CPU and 10% in
fsync, the rest waiting for the GIL, and every SMTP session and delivery waited on it in turn.
In its own process the same work has its own interpreter and runs on the other core.

What stays the same: `run`, `submit` and `call` take a module-level function of the connection
and its arguments (`fn(conn, *args, **kwargs)`: sent as its module and name, so no closures), and resolve
once the transaction holding the job has committed; the child runs the thread writer's own
group commit (`GroupCommitter`), so batching, savepoints and failure isolation are the same
code. Results and errors come back pickled, one frame per transaction; the child's log records
come with them and are logged here under their own logger names.

The pipe: a Unix socket pair, frames of an 8-byte length and a pickle. The child reads its end
on its main thread as fast as frames come, so a sender waits only for the copy, never for an
fsync. A frame larger than `LARGE_FRAME` (a big message's body) is sent from a worker thread so
that the event loop does not copy it.

Lifetime: the child shares the queue directory's lock (`flock` on the same open file), so no
second relay can open the queue until both have closed it. It ignores SIGINT and SIGTERM (a
terminal's Ctrl-C reaches the whole process group): it ends when its end of the pipe closes,
after finishing and answering every job it was given. If it dies anyway, the jobs it held fail
with a transient `QueueWriteError` (intake answers 451: the client tries again, nothing was
acknowledged) and a new child takes over; a job may have committed before the death without
its answer arriving (a duplicate, never a loss).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import itertools
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from engine.relay.queue.types import QueueClosed, QueueWriteError
from engine.relay.queue.writer import hand_back, resolve

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
LARGE_FRAME = 1 << 20  # frames larger than this are sent from a worker thread
CHILD = "import sys; from engine.relay.queue.writerproc import child_main; sys.exit(child_main(sys.argv[1:]))"


def _frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _read_frame(stream: Any) -> Any:
    """The next frame's value from a buffered reader of the socket (a frame or several per
    system call); raises EOFError at the end of the stream."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    size = _HEADER.unpack(header)[0]
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)


def _reader(sock: socket.socket) -> Any:
    return sock.makefile("rb", buffering=1 << 16)


@functools.lru_cache(maxsize=256)
def _name_of(fn: Callable) -> str:
    """A job's function as its module and name: what crosses the pipe (a short string, not
    the function pickled by reference each time)."""
    if "<" in fn.__qualname__:
        raise TypeError(f"a queue job must be a module-level function, not {fn.__qualname__}")
    return f"{fn.__module__}:{fn.__qualname__}"


@functools.lru_cache(maxsize=256)
def _function(name: str) -> Callable:
    module, _, qualname = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _portable(value: Any, ok: bool) -> tuple[Any, bool]:
    """`value` as it can cross the pipe: an error that does not pickle becomes a QueueWriteError
    with its text (a bug's traceback stays in the child's log)."""
    try:
        pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return value, ok
    except Exception:  # noqa: BLE001 - anything pickle raises
        if ok:
            return QueueWriteError(False, f"queue job result could not be returned: {type(value).__name__}"), False
        return QueueWriteError(True, f"queue job failed: {type(value).__name__}: {value}"), False


class ProcessCommitter:
    """The parent's side: `GroupCommitter`'s interface, with the work done in a child process."""

    def __init__(self, path: Path, *, shared: bool = False, max_batch: int = 256, lock_fd: int | None = None) -> None:
        self._path = Path(path)
        self._shared = shared
        self._max_batch = max_batch
        self._lock_fd = lock_fd
        self._send_lock = threading.Lock()
        self._pending: dict[int, tuple[Any, Any]] = {}  # job number -> (future, its loop or None)
        self._pending_lock = threading.Lock()
        self._outboxes: dict[Any, list[bytes]] = {}  # frames of this turn of each loop, sent together
        self._ids = itertools.count()
        self._closed = False
        self._sock: socket.socket | None = None
        self._stream: Any = None  # buffered reader of `_sock`
        self._child: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._counters = (0, 0, 0)  # transactions, largest batch, failed writes (the child's, summed)
        self._before = (0, 0, 0)  # what children that died had counted
        self.restarts = 0

    @property
    def transactions(self) -> int:
        return self._before[0] + self._counters[0]

    @property
    def largest_batch(self) -> int:
        return max(self._before[1], self._counters[1])

    @property
    def failed_writes(self) -> int:
        return self._before[2] + self._counters[2]

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child else None

    def start(self) -> Any:
        """Start the child and wait until it holds an open database; return what opening it
        found (`recovery.OpenResult`), or raise why it could not."""
        opened = self._spawn()
        self._reader = threading.Thread(target=self._read, name="sealrelay-queue-replies", daemon=True)
        self._reader.start()
        return opened

    def _spawn(self) -> Any:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [theirs.fileno()] + ([self._lock_fd] if self._lock_fd is not None else [])
        argv = [sys.executable, "-c", CHILD, str(theirs.fileno()), str(self._path)]
        argv += ["shared" if self._shared else "owner", str(self._max_batch)]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])  # where `engine` is importable from
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            child = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        stream = _reader(ours)
        try:
            hello = _read_frame(stream)
        except (EOFError, OSError) as exc:
            stream.close()
            ours.close()
            child.wait()
            raise QueueWriteError(
                True, f"the queue's writer process exited at start (status {child.returncode})"
            ) from exc
        kind, value, records = hello
        _replay(records)
        if kind != "ready":
            stream.close()
            ours.close()
            child.wait()
            raise value
        self._sock, self._stream, self._child = ours, stream, child
        return value

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(conn, *args, **kwargs)` in the child's next transaction; its result once committed."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        frame = self._register(future, loop, fn, args, kwargs)
        if len(frame) > LARGE_FRAME:
            try:
                await asyncio.to_thread(self._send, frame)
            except QueueWriteError:
                self._unregister([frame])
                raise
        else:  # sent with the others of this turn of the loop: one system call for them all
            outbox = self._outboxes.get(loop)
            if outbox is None:
                outbox = self._outboxes[loop] = []
                loop.call_soon(self._flush, loop)
            outbox.append(frame)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        frames = self._outboxes.pop(loop, [])
        try:
            self._send(b"".join(frames))
        except QueueWriteError as exc:
            resolve([(future, exc, False) for future, _ in self._unregister(frames) if future is not None])

    def _unregister(self, frames: list[bytes]) -> list[tuple[Any, Any]]:
        """Forget the jobs of frames that were not sent; return their (future, loop)."""
        numbers = [pickle.loads(frame[_HEADER.size :])[0] for frame in frames]
        with self._pending_lock:
            return [self._pending.pop(number, (None, None)) for number in numbers]

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        frame = self._register(future, None, fn, args, kwargs)
        try:
            self._send(frame)
        except QueueWriteError:
            self._unregister([frame])
            raise
        return future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self.submit(fn, *args, **kwargs).result()

    def _register(self, future: Any, loop: Any, fn: Callable, args: tuple, kwargs: dict) -> bytes:
        if self._closed:
            raise QueueClosed("the queue is closed")
        number = next(self._ids)
        frame = _frame((number, _name_of(fn), args, kwargs))
        with self._pending_lock:
            self._pending[number] = (future, loop)
        return frame

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            sock = self._sock
            try:
                if sock is None:
                    raise OSError("no writer process")
                sock.sendall(frame)
            except OSError as exc:
                raise QueueWriteError(True, f"the queue's writer process is not running: {exc}") from exc

    def _read(self) -> None:
        """The reply thread: hand each transaction's outcomes to their callers; when the child
        dies unasked, fail what it held and start another."""
        while True:
            sock, stream = self._sock, self._stream
            try:
                while True:
                    kind, items, counters, records = _read_frame(stream)
                    _replay(records)
                    self._counters = counters
                    self._resolve(items)
            except (EOFError, OSError, pickle.UnpicklingError):
                pass
            child = self._child
            status = child.wait() if child else None
            if self._closed:
                return
            log.error("queue: the writer process exited (status %s); starting another", status)
            self._fail_pending("the queue's writer process exited before answering")
            with self._send_lock:
                stream.close()
                sock.close()
                self._sock = None
                self._before = (self.transactions, self.largest_batch, self.failed_writes)
                self._counters = (0, 0, 0)
                try:
                    self._spawn()
                    self.restarts += 1
                except Exception:  # noqa: BLE001 - nothing more can be done here: every job now fails
                    log.exception("queue: the writer process could not be started again")
                    return

    def _resolve(self, items: list[tuple[int, Any, bool]]) -> None:
        with self._pending_lock:
            taken = [(self._pending.pop(number, (None, None)), value, ok) for number, value, ok in items]
        hand_back((future, loop, value, ok) for (future, loop), value, ok in taken if future is not None)

    def _fail_pending(self, reason: str) -> None:
        with self._pending_lock:
            held, self._pending = self._pending, {}
        error = QueueWriteError(True, reason)
        hand_back((future, loop, error, False) for future, loop in held.values())

    def stop(self) -> None:
        """Let the child finish and answer every job already sent, then end it."""
        with self._send_lock:
            if self._closed:
                return
            self._closed = True
            if self._sock is not None:
                try:
                    self._sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        if self._reader is not None:
            self._reader.join()
        if self._child is not None:
            self._child.wait()
        if self._sock is not None:
            self._stream.close()
            self._sock.close()
        self._fail_pending("the queue was closed")


def _replay(records: list[logging.LogRecord]) -> None:
    """Log the child's records here, under their own logger names."""
    for record in records:
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


# -- the child ---------------------------------------------------------------------------


class _Records(logging.Handler):
    """Collects the child's log records, formatted, to travel with the next reply."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self._records: list[logging.LogRecord] = []
        self._mutex = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        with self._mutex:
            self._records.append(record)

    def take(self) -> list[logging.LogRecord]:
        with self._mutex:
            taken, self._records = self._records, []
        return taken


class _Ticket:
    """A job's number, where the thread writer expects an asyncio future."""

    __slots__ = ("number",)

    def __init__(self, number: int) -> None:
        self.number = number

    def cancelled(self) -> bool:
        return False


class _Reply:
    """Where the thread writer hands a transaction's outcomes: one frame back to the parent."""

    def __init__(self, sock: socket.socket, records: _Records, committer: Any) -> None:
        self._sock, self._records, self._committer = sock, records, committer
        self._lock = threading.Lock()

    def call_soon_threadsafe(self, _resolve: Callable, items: list[tuple[_Ticket, Any, bool]]) -> None:
        done = self._committer
        counters = (done.transactions, done.largest_batch, done.failed_writes)
        records = self._records.take()
        try:
            frame = _frame(("done", [(ticket.number, value, ok) for ticket, value, ok in items], counters, records))
        except Exception:  # noqa: BLE001 - some value does not pickle: each is checked on its own
            outcomes = [(ticket.number, *_portable(value, ok)) for ticket, value, ok in items]
            frame = _frame(("done", outcomes, counters, records))
        with self._lock:
            try:
                self._sock.sendall(frame)
            except OSError:  # the parent is gone: nobody is waiting any more
                pass


def child_main(argv: list[str]) -> int:
    """The child's main: `python -c CHILD FD DB owner|shared MAX_BATCH`."""
    from engine.relay.queue import recovery
    from engine.relay.queue.writer import GroupCommitter, _Job

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    fd, path, mode, max_batch = int(argv[0]), Path(argv[1]), argv[2], int(argv[3])
    sock = socket.socket(fileno=fd)
    records = _Records()
    root = logging.getLogger()
    root.handlers[:] = [records]
    root.setLevel(logging.INFO)
    opened = recovery.OpenResult()
    committer = GroupCommitter(
        lambda: recovery.open_database(path, opened, shared=mode == "shared"),
        max_batch=max_batch,
        name="sealrelay-queue-writer",
    )
    try:
        committer.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        sock.sendall(_frame(("failed", _portable(exc, False)[0], records.take())))
        return 1
    sock.sendall(_frame(("ready", opened, records.take())))
    reply = _Reply(sock, records, committer)
    stream = _reader(sock)
    try:
        while True:
            try:
                number, name, args, kwargs = _read_frame(stream)
            except (EOFError, OSError):
                break
            try:
                fn = _function(name)
            except (ImportError, AttributeError) as exc:
                reply.call_soon_threadsafe(
                    None, [(_Ticket(number), QueueWriteError(False, f"no such job: {exc}"), False)]
                )
                continue
            committer._put(_Job(fn, _Ticket(number), reply, args, kwargs))  # noqa: SLF001 - the same module's writer
    finally:
        committer.stop()  # every job given is run and answered before the child ends
        stream.close()
        sock.close()
    return 0
