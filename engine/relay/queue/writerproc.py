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

The pipes: two Unix socket pairs (jobs in, replies out), frames of an 8-byte length and a
pickle. The child reads jobs on its main thread as fast as they come, so a sender waits only
for the copy, never for an fsync. A frame larger than `LARGE_FRAME` (a big message's body) is
sent from a worker thread so that the event loop does not copy it. Replies are read by the
event loop that first awaited a job (see `ProcessCommitter`).

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
_CHUNK = 1 << 18  # bytes per read of the replies
LARGE_FRAME = 1 << 20  # frames larger than this are sent from a worker thread
WHAT = "the queue's writer process"  # how errors and logs name it
CHILD = "import sys; from engine.relay.queue.writerproc import child_main; sys.exit(child_main(sys.argv[1:]))"


def encode_frame(value: Any) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class _Frames:
    """The frames arriving on a socket, from both ends' point of view: bytes are kept until a
    whole frame is there (a read may bring part of one, or several)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def parsed(self) -> Any:
        """A whole frame from what was read, or None."""
        buffer = self._buffer
        if len(buffer) < _HEADER.size:
            return None
        end = _HEADER.size + _HEADER.unpack_from(buffer)[0]
        if len(buffer) < end:
            return None
        value = pickle.loads(memoryview(buffer)[_HEADER.size : end])
        del buffer[:end]
        return value

    def next(self) -> Any:
        """The next whole frame, reading (blocking) as long as it takes; None at the end."""
        while (value := self.parsed()) is None:
            if not self.fill():
                return None
        return value

    def fill(self) -> bool:
        """Read once (blocking), or all that is there (non-blocking); False at the end."""
        drain = not self.sock.getblocking()
        try:
            while True:
                data = self.sock.recv(_CHUNK)
                self._buffer += data
                if not data:
                    return False
                if not drain or len(data) < _CHUNK:
                    return True
        except BlockingIOError:
            return True
        except OSError:
            return False


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
    """`GroupCommitter`'s interface (`run`, `submit`, `call`), with the work done in the
    queue's writer process.

    Replies are read by the event loop that first awaits a job (`add_reader`: no thread, no
    wake-up through another thread and its interpreter lock), and handed to other loops'
    futures with `call_soon_threadsafe`; before a loop reads them (opening the queue), and
    while closing, `call` and `stop` read them where they wait."""

    def __init__(self, path: Path, *, shared: bool = False, max_batch: int = 256, lock_fd: int | None = None) -> None:
        self._args = [str(path), "shared" if shared else "owner", str(max_batch)]
        self._lock_fd = lock_fd
        self._send_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._pending: dict[int, tuple[Any, Any]] = {}  # job number -> (future, its loop or None)
        self._pending_lock = threading.Lock()
        self._outboxes: dict[Any, list[tuple[int, bytes]]] = {}  # this turn's jobs of each loop, sent together
        self._ids = itertools.count()
        self._closed = False
        self._out: socket.socket | None = None  # jobs to the child
        self._replies: _Frames | None = None  # replies from the child
        self._child: subprocess.Popen | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop that reads the replies
        self._loop_thread: int | None = None
        self._counters = (0, 0, 0)  # the child's counters, from its last reply
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
        return self._spawn()

    def _spawn(self) -> Any:
        jobs_ours, jobs_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        replies_ours, replies_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs = [jobs_theirs, replies_theirs]
        fds = [sock.fileno() for sock in theirs] + ([self._lock_fd] if self._lock_fd is not None else [])
        argv = [sys.executable, "-c", CHILD, *(str(sock.fileno()) for sock in theirs), *self._args]
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])  # where `engine` is importable from
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        try:
            child = subprocess.Popen(argv, pass_fds=fds, env=env, stdin=subprocess.DEVNULL)
        finally:
            for sock in theirs:
                sock.close()
        replies = _Frames(replies_ours)
        hello = replies.next()
        if hello is not None:
            _replay(hello[2])
        if hello is None or hello[0] != "ready":
            jobs_ours.close()
            replies_ours.close()
            child.wait()
            if hello is None:
                raise QueueWriteError(True, f"{WHAT} exited at start (status {child.returncode})")
            raise hello[1]
        self._out, self._replies, self._child = jobs_ours, replies, child
        return hello[1]

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(conn, *args, **kwargs)` in the child's next transaction; its result once committed."""
        loop = asyncio.get_running_loop()
        home = self._loop
        if home is not loop and (home is None or home.is_closed() or not home.is_running()):
            self._attach(loop)
        future = loop.create_future()
        number, frame = self._register(future, loop, fn, args, kwargs)
        if len(frame) > LARGE_FRAME:
            try:
                await asyncio.to_thread(self._send, frame)
            except QueueWriteError:
                self._forget([number])
                raise
        else:  # sent with the others of this turn of the loop: one system call for them all
            outbox = self._outboxes.get(loop)
            if outbox is None:
                outbox = self._outboxes[loop] = []
                loop.call_soon(self._flush, loop)
            outbox.append((number, frame))
        return await future

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Let `loop` read the replies from now on."""
        self._detach()
        if self._replies is None or self._closed:
            return
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._replies.sock.setblocking(False)
        loop.add_reader(self._replies.sock.fileno(), self._readable)

    def _detach(self) -> None:
        loop, self._loop = self._loop, None
        if self._replies is None:
            return
        if loop is not None and not loop.is_closed():
            try:
                loop.remove_reader(self._replies.sock.fileno())
            except Exception:  # noqa: BLE001 - a loop being torn down: it reads nothing more anyway
                pass
        self._replies.sock.setblocking(True)

    def _readable(self) -> None:
        """On the loop: what the child answered so far."""
        replies = self._replies
        ended = not replies.fill()
        while (value := replies.parsed()) is not None:
            self._handle(value)
        if ended:
            self._lost()

    def _handle(self, value: Any) -> None:
        _kind, items, counters, records = value
        _replay(records)
        self._counters = counters
        with self._pending_lock:
            taken = [(self._pending.pop(number, (None, None)), result, ok) for number, result, ok in items]
        here = self._loop if threading.get_ident() == self._loop_thread else None
        hand_back(((future, loop, result, ok) for (future, loop), result, ok in taken if future is not None), here)

    def _lost(self) -> None:
        """The child's end closed: it is gone. Unless we are closing, fail what it held and
        start another (on the loop that read the end: a rare pause of ~0.2 s)."""
        loop = self._loop
        self._detach()
        status = self._child.wait() if self._child else None
        if self._closed:
            return
        log.error("%s exited (status %s); starting another", WHAT, status)
        self._fail_pending(f"{WHAT} exited before answering")
        with self._send_lock:
            for sock in (self._out, self._replies.sock if self._replies else None):
                if sock is not None:
                    sock.close()
            self._out = self._replies = None
            (b0, b1, b2), (c0, c1, c2) = self._before, self._counters
            self._before, self._counters = (b0 + c0, max(b1, c1), b2 + c2), (0, 0, 0)
            try:
                self._spawn()
                self.restarts += 1
            except Exception:  # noqa: BLE001 - nothing more can be done here: every job now fails
                log.exception("%s could not be started again", WHAT)
                return
        if loop is not None and not loop.is_closed():
            self._attach(loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        sent = self._outboxes.pop(loop, [])
        try:
            self._send(b"".join(frame for _, frame in sent))
        except QueueWriteError as exc:
            resolve([(future, exc, False) for future, _ in self._forget([n for n, _ in sent]) if future is not None])

    def _forget(self, numbers: list[int]) -> list[tuple[Any, Any]]:
        """Forget jobs that were not sent; return their (future, loop)."""
        with self._pending_lock:
            return [self._pending.pop(number, (None, None)) for number in numbers]

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        number, frame = self._register(future, None, fn, args, kwargs)
        try:
            self._send(frame)
        except QueueWriteError:
            self._forget([number])
            raise
        return future

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn` in the child and wait for its result here: for a thread, or before any
        event loop reads the replies (then this reads them; never from the reading loop's
        own thread, which would wait for itself)."""
        future = self.submit(fn, *args, **kwargs)
        home = self._loop
        if home is None or home.is_closed() or not home.is_running():
            self._pump(future)
        elif threading.get_ident() == self._loop_thread:
            raise RuntimeError("call() on the thread of the loop that reads the replies: await run() instead")
        return future.result()

    def _pump(self, future: Future | None = None) -> None:
        """Read and hand out replies here until `future` is done (None: until the child's end)."""
        with self._read_lock:
            self._detach()
            while future is None or not future.done():
                value = self._replies.next() if self._replies is not None else None
                if value is None:
                    if future is not None:
                        self._lost()
                    return
                self._handle(value)

    def _register(self, future: Any, loop: Any, fn: Callable, args: tuple, kwargs: dict) -> tuple[int, bytes]:
        if self._closed:
            raise QueueClosed("the queue is closed")
        number = next(self._ids)
        frame = encode_frame((number, _name_of(fn), args, kwargs))
        with self._pending_lock:
            self._pending[number] = (future, loop)
        return number, frame

    def _send(self, frame: bytes) -> None:
        with self._send_lock:
            sock = self._out
            try:
                if sock is None:
                    raise OSError("no process")
                sock.sendall(frame)
            except OSError as exc:
                raise QueueWriteError(True, f"{WHAT} is not running: {exc}") from exc

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
            if self._out is not None:
                self._out.close()  # the child reads its end of jobs, answers them all, and ends
                self._out = None
        if self._replies is not None:
            self._pump()  # every answer, until the child closes its end
            self._replies.sock.close()
            self._replies = None
        if self._child is not None:
            self._child.wait()
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
    """Where the child's writer hands a transaction's outcomes (it calls this as it would an
    event loop): one frame back to the parent, with the counters and log records."""

    def __init__(self, sock: socket.socket, records: _Records, committer: Any) -> None:
        self._sock, self._records, self._committer = sock, records, committer
        self._lock = threading.Lock()

    def call_soon_threadsafe(self, _resolve: Callable | None, items: list[tuple[_Ticket, Any, bool]]) -> None:
        done = self._committer
        counters = (done.transactions, done.largest_batch, done.failed_writes)
        records = self._records.take()
        try:
            frame = encode_frame(
                ("done", [(ticket.number, value, ok) for ticket, value, ok in items], counters, records)
            )
        except Exception:  # noqa: BLE001 - some value does not pickle: each is checked on its own
            outcomes = [(ticket.number, *_portable(value, ok)) for ticket, value, ok in items]
            frame = encode_frame(("done", outcomes, counters, records))
        with self._lock:
            try:
                self._sock.sendall(frame)
            except OSError:  # the parent is gone: nobody is waiting any more
                pass


def child_main(argv: list[str]) -> int:
    """The child's main: `python -c CHILD JOBS_FD REPLIES_FD DB owner|shared MAX_BATCH`. SIGINT
    and SIGTERM are ignored: it ends when the jobs pipe closes (see the module's docstring)."""
    from engine.relay.queue import recovery
    from engine.relay.queue.writer import GroupCommitter, _Job

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    records = _Records()
    root = logging.getLogger()
    root.handlers[:] = [records]
    root.setLevel(logging.INFO)
    jobs, out = _Frames(socket.socket(fileno=int(argv[0]))), socket.socket(fileno=int(argv[1]))
    path, mode, max_batch = Path(argv[2]), argv[3], int(argv[4])
    opened = recovery.OpenResult()
    committer = GroupCommitter(
        lambda: recovery.open_database(path, opened, shared=mode == "shared"),
        max_batch=max_batch,
        name="sealrelay-queue-writer",
    )
    try:
        committer.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        out.sendall(encode_frame(("failed", _portable(exc, False)[0], records.take())))
        return 1
    out.sendall(encode_frame(("ready", opened, records.take())))
    reply = _Reply(out, records, committer)
    try:
        while (job := jobs.next()) is not None:
            number, name, args, kwargs = job
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
        jobs.sock.close()
        out.close()
    return 0
