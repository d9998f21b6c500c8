"""Delivery scheduling at scale: a big queue, a tarpit, a dead next hop (issue 14).

Three measurements of `sealrelay serve` processes on loopback, each printed as lines the smoke
test reads:

- **scale**: two relays side by side, one with an empty queue, one with `--queued` messages
  (100,000) deferred until tomorrow (filled straight into its queue before it starts). Idle CPU
  of each over `--idle` seconds (utime + stime from /proc, every thread); intake with Postfix's
  `smtp-source` (`--messages` of 1 KB over 20 sessions, rounds interleaved empty / full, the
  median; the clock stops when smtp-source has its last 250, and the round waits until the
  sink has every message); `sealrelay queue list` on the full queue: the first page, the first
  page of `--state deferred`, a page deep in the queue (in-process time of the call, and the
  whole command's wall time).
- **tarpit**: `--tarpit` (200) messages to a next hop that accepts TCP and never greets, then
  `--healthy` (20) to a healthy sink: how long after their 250 the healthy ones are all at the sink.
- **dead**: `--dead` (20,000) messages due to a next hop that accepts and closes at once (each
  connection counted), watched for `--watch` seconds with a 10 s retry interval: connection
  attempts, the attempts the queue recorded, the relay's CPU.

`--repo PATH` runs another checkout's code (the same config: only keys both understand), e.g.
the code before the scheduler, for the before/after numbers in docs/benchmarks.md;
`--parts versus --versus PATH` races this code against that checkout's, empty queues, rounds
interleaved: intake and CPU per message, for what the scheduler costs on the plain path.

Usage: python bench/bench_scheduling.py [--queued 100000] [--messages 2000] [--rounds 3]
       [--idle 10] [--tarpit 200] [--healthy 20] [--dead 20000] [--watch 45] [--repo PATH] [--smoke]
Needs smtp-source and smtp-sink (Debian's postfix; scripts/test installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench_relay import (  # the process plumbing of the throughput benchmark
    LAUNCHER,
    REPO,
    BenchError,
    Sink,
    become_subreaper,
    free_ports,
    reap_descendants,
    stop_process,
    tool,
    wait_port,
)

FILL = r"""
import sqlite3, sys, time
from pathlib import Path
from engine.relay.queue import Queue, store
qdir, count, domain, due = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
Queue.open(qdir).close()  # the schema of the code under test
conn = sqlite3.connect(Path(qdir) / "queue.db", isolation_level=None)
conn.execute("PRAGMA foreign_keys = ON")
body = b"Subject: queued\r\n\r\n" + b"x" * 1000 + b"\r\n"
now = time.time()
conn.execute("BEGIN")
for n in range(count):
    store.insert(conn, "bench@source.example", [f"r{n}@{domain}"], body, "{}", now - 3600 + n / 1000)
if due > now:  # waiting for a retry: deferred once already
    conn.execute("UPDATE recipients SET state = 'deferred', attempts = 1, next_attempt_at = ?, "
                 "last_error = 'connection refused'", (due,))
    conn.execute("UPDATE messages SET next_due = ?", (due,))
conn.execute("COMMIT")
"""
LIST = r"""
import asyncio, sys, time
from engine.relay.queue import Queue
queue = Queue.open(sys.argv[1], shared=True)
async def timed(**kwargs):
    start = time.perf_counter()
    page = await queue.list(100, **kwargs)
    return (time.perf_counter() - start) * 1000, page
async def main():
    first, page = await timed()
    deferred, _ = await timed(state="deferred")
    deep = "-"
    try:  # the code under test may not page
        cursor = None
        for _ in range(int(sys.argv[2]) // 100):
            _, page = await timed(after=cursor) if cursor else await timed()
            cursor = page[-1].id
        deep = f"{(await timed(after=cursor))[0]:.1f}"
    except TypeError:
        pass
    print(f"{first:.1f} {deferred:.1f} {deep}")
asyncio.run(main())
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (every thread), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Relay:
    """`sealrelay serve` of `repo`'s code on a generated config under `root`."""

    def __init__(self, repo: Path, root: Path, routes: str, retry: str = "15m", max_retry: str = "4h") -> None:
        self.repo, self.root = repo, root
        self.port, admin, portal, metrics = free_ports(4)
        root.mkdir(parents=True)
        self.config = root / "relay.yaml"
        self.config.write_text(
            f"""version: 1
system:
  fqdn: sealrelay-bench.example.com
  listeners:
    - {{name: bench, address: 127.0.0.1, port: {self.port}}}
  data_dir: {root / "var"}
  admin: {{address: 127.0.0.1, port: {admin}}}
  portal: {{address: 127.0.0.1, port: {portal}}}
  metrics: {{address: 127.0.0.1, port: {metrics}}}
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
{routes}
delivery:
  retry_interval: {retry}
  max_retry_interval: {max_retry}
  max_queue_lifetime: 5d
  delay_warning_after: null
"""
        )
        self.proc: subprocess.Popen | None = None

    @property
    def queue_dir(self) -> Path:
        return self.root / "var" / "queue"

    def fill(self, count: int, domain: str, due: float) -> float:
        start = time.perf_counter()
        self.python(FILL, str(self.queue_dir), str(count), domain, repr(due))
        return time.perf_counter() - start

    def python(self, code: str, *args: str) -> str:
        run = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=self.repo, capture_output=True, text=True, timeout=600
        )
        if run.returncode:
            raise BenchError(f"{code.strip().splitlines()[0]}...: {run.stderr.strip()[-600:]}")
        return run.stdout

    def start(self, cleanup: contextlib.ExitStack) -> None:
        log = (self.root / "sealrelay.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER, "serve", str(self.config), "--log-level", "WARNING"],
            cwd=self.repo,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        cleanup.callback(stop_process, self.proc, signal.SIGINT)
        wait_port(self.port, 300, self.proc, "sealrelay serve")

    def stop(self) -> None:
        stop_process(self.proc, signal.SIGINT)

    def cli(self, *args: str) -> float:
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-c", LAUNCHER, *args, "--config", str(self.config)],
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if run.returncode:
            raise BenchError(f"sealrelay {' '.join(args)}: {run.stderr.strip()[-400:]}")
        return time.perf_counter() - start


class Peer:
    """A misbehaving next hop in a thread: `tarpit` keeps every connection open and silent,
    `refuse` closes each at once. `accepted` holds the time of each connection."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            if self.kind == "tarpit":
                self.held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def route(name: str, domains: str | None, port: int) -> str:
    recipients = f"{{domains: [{domains}]}}" if domains else "any"
    return f"  - {{name: {name}, recipients: {recipients}, next_hop: {{host: 127.0.0.1, port: {port}}}, tls: none}}"


def source(port: int, messages: int, sessions: int, to: str, timeout: float) -> float:
    """smtp-source `messages` of 1 KB to `to` through the relay; seconds until its last 250."""
    argv = [tool("smtp-source"), "-4", "-s", str(sessions), "-m", str(messages), "-l", "1024"]
    argv += ["-M", "source.localhost", "-f", "bench@source.example", "-t", to, f"127.0.0.1:{port}"]
    start = time.perf_counter()
    run = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if run.returncode:
        raise BenchError(f"smtp-source exited {run.returncode}: {run.stderr.strip()[-300:]}")
    return time.perf_counter() - start


def scale(args, tmp: Path, cleanup: contextlib.ExitStack) -> None:
    closed = free_ports(1)[0]  # nothing listens: the queued mail is for later anyway
    relays = {}
    for name in ("empty", "full"):
        sink = Sink("smtp-sink", free_ports(1)[0], cleanup)
        routes = "\n".join([route("waiting", "waiting.example", closed), route("sink", None, sink.port)])
        relays[name] = (Relay(args.repo, tmp / name, routes), sink)
    full = relays["full"][0]
    filled = full.fill(args.queued, "waiting.example", time.time() + 86400)
    print(f"scale: {args.queued:,} queued (deferred until tomorrow), 1 KB bodies; filled in {filled:.1f} s")
    for relay, _ in relays.values():
        relay.start(cleanup)
    time.sleep(2)  # let both settle after start (their first queue pass and stats) before idling
    before = {name: cpu_seconds(relay.proc.pid) for name, (relay, _) in relays.items()}
    start = time.monotonic()
    time.sleep(args.idle)  # the measurement itself: CPU used over this wall time
    wall = time.monotonic() - start
    idle = {name: 100 * (cpu_seconds(relay.proc.pid) - before[name]) / wall for name, (relay, _) in relays.items()}
    print(
        f"idle CPU over {args.idle:g} s (% of one core): empty queue {idle['empty']:.2f}%, "
        f"{args.queued:,} queued {idle['full']:.2f}%"
    )
    rates: dict[str, list[float]] = {"empty": [], "full": []}
    for _ in range(args.rounds):
        for name, (relay, sink) in relays.items():
            target = sink.count + args.messages
            took = source(relay.port, args.messages, 20, "someone@flow.example", 300)
            if not sink.wait_for(target, 300):
                raise BenchError(f"{name}: the sink counted {sink.count} of {target}")
            rates[name].append(args.messages / took)
    empty, full_rate = (statistics.median(rates[n]) for n in ("empty", "full"))
    print(
        f"intake (smtp-source, 20 sessions, {args.messages:,} x 1 KB, median of {args.rounds}): "
        f"empty {empty:,.0f} msg/s, {args.queued:,} queued {full_rate:,.0f} msg/s ({full_rate / empty:.2f}x)"
    )
    first, deferred, deep = full.python(LIST, str(full.queue_dir), str(args.queued // 2)).split()
    wall = full.cli("queue", "list")
    deep_text = f"{deep} ms" if deep != "-" else "no paging"
    print(
        f"queue list, {args.queued:,} queued: first page of 100 {first} ms, --state deferred {deferred} ms, "
        f"page after {args.queued // 2:,} entries {deep_text} (in-process); the command {wall:.2f} s"
    )


def tarpit(args, tmp: Path, cleanup: contextlib.ExitStack) -> None:
    pit = Peer("tarpit")
    cleanup.callback(pit.close)
    sink = Sink("smtp-sink", free_ports(1)[0], cleanup)
    routes = "\n".join([route("pit", "tarpit.example", pit.port), route("sink", None, sink.port)])
    relay = Relay(args.repo, tmp / "tarpit", routes)
    relay.start(cleanup)
    source(relay.port, args.tarpit, 20, "someone@tarpit.example", 120)
    deadline = time.monotonic() + 30
    while not pit.accepted and time.monotonic() < deadline:
        time.sleep(0.05)  # poll for the relay's first connection to the tarpit
    took = source(relay.port, args.healthy, 5, "someone@healthy.example", 120)
    start = time.monotonic() - took
    if not sink.wait_for(args.healthy, args.tarpit_timeout):
        print(f"tarpit: {sink.count} of {args.healthy} healthy delivered within {args.tarpit_timeout:g} s")
    else:
        done = time.monotonic() - start
        print(
            f"tarpit: {args.tarpit:,} queued to a tarpit, then {args.healthy} healthy: all {args.healthy} "
            f"delivered {done:.2f} s after their submission began (the tarpit held {len(pit.held)} connections)"
        )
    relay.stop()


def dead(args, tmp: Path, cleanup: contextlib.ExitStack) -> None:
    refuser = Peer("refuse")
    cleanup.callback(refuser.close)
    relay = Relay(args.repo, tmp / "dead", route("down", None, refuser.port), args.retry, args.max_retry)
    relay.fill(args.dead, "dead.example", 0.0)
    relay.start(cleanup)
    started, cpu = time.monotonic(), cpu_seconds(relay.proc.pid)
    time.sleep(args.watch)  # the measurement: what the relay does to a dead next hop in this time
    wall = time.monotonic() - started
    used = 100 * (cpu_seconds(relay.proc.pid) - cpu) / wall
    relay.stop()
    times = [t - started for t in refuser.accepted]
    first = sum(t < 5 for t in times)
    with sqlite3.connect(relay.queue_dir / "queue.db") as conn:
        recorded, untried = conn.execute(
            "SELECT coalesce(sum(attempts), 0), sum(attempts = 0) FROM recipients WHERE state IN ('pending', 'deferred')"
        ).fetchone()
    print(
        f"dead: {args.dead:,} due to a next hop that closes every connection, watched {wall:.0f} s "
        f"(retry interval {args.retry}): {len(times):,} connection attempts ({first:,} in the first 5 s), "
        f"{recorded:,} attempts recorded, {untried:,} recipients never tried; relay CPU {used:.1f}%"
    )
    later = [f"{t:.1f}" for t in times if t >= 5][:10]
    print(f"dead: attempts after the first 5 s at (s): {', '.join(later) or '-'}")


def versus(args, tmp: Path, cleanup: contextlib.ExitStack) -> None:
    """This code against `--versus`'s (the code before, say), empty queues, rounds interleaved:
    intake rate and the relay's CPU per message (accept and deliver, every thread)."""
    relays = {}
    for name, repo in (("this", args.repo), ("versus", args.versus.resolve())):
        sink = Sink("smtp-sink", free_ports(1)[0], cleanup)
        relay = Relay(repo, tmp / f"versus-{name}", route("sink", None, sink.port))
        relay.start(cleanup)
        relays[name] = (relay, sink)
    rates: dict[str, list[float]] = {"this": [], "versus": []}
    cpu: dict[str, list[float]] = {"this": [], "versus": []}
    for _ in range(args.rounds):
        for name, (relay, sink) in relays.items():
            target, used = sink.count + args.messages, cpu_seconds(relay.proc.pid)
            took = source(relay.port, args.messages, 20, "someone@flow.example", 300)
            if not sink.wait_for(target, 300):
                raise BenchError(f"{name}: the sink counted {sink.count} of {target}")
            rates[name].append(args.messages / took)
            cpu[name].append(1e6 * (cpu_seconds(relay.proc.pid) - used) / args.messages)
    this, other = (statistics.median(rates[n]) for n in ("this", "versus"))
    this_cpu, other_cpu = (statistics.median(cpu[n]) for n in ("this", "versus"))
    print(
        f"versus {args.versus}: intake {this:,.0f} against {other:,.0f} msg/s ({this / other:.2f}x), "
        f"relay CPU per message {this_cpu:,.0f} against {other_cpu:,.0f} us ({this_cpu / other_cpu:.2f}x), "
        f"median of {args.rounds}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queued", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=2000, help="intake messages per round and relay")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    parser.add_argument("--tarpit", type=int, default=200)
    parser.add_argument("--healthy", type=int, default=20)
    parser.add_argument("--tarpit-timeout", type=float, default=600.0)
    parser.add_argument("--dead", type=int, default=20_000)
    parser.add_argument("--watch", type=float, default=45.0)
    parser.add_argument("--retry", default="10s", help="retry_interval in the dead test")
    parser.add_argument("--max-retry", default="20s", help="max_retry_interval in the dead test")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose code runs")
    parser.add_argument("--parts", default="scale,tarpit,dead", help="any of scale,tarpit,dead,versus")
    parser.add_argument("--versus", type=Path, help="another checkout, for the versus part")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, seconds: for the test suite")
    args = parser.parse_args()
    if args.smoke:
        args.queued, args.messages, args.rounds, args.idle = 2000, 100, 1, 1.0
        args.tarpit, args.healthy, args.tarpit_timeout = 20, 5, 60.0
        args.dead, args.watch, args.retry, args.max_retry = 300, 4.0, "1s", "2s"
    args.repo = args.repo.resolve()
    print(f"code: {args.repo}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    become_subreaper()
    parts = {"scale": scale, "tarpit": tarpit, "dead": dead, "versus": versus}
    if "versus" in args.parts and args.versus is None:
        parser.error("the versus part needs --versus PATH")
    with tempfile.TemporaryDirectory(prefix="bench-scheduling-") as tmp, contextlib.ExitStack() as cleanup:
        try:
            for name in args.parts.split(","):
                parts[name](args, Path(tmp), cleanup)
        except BenchError as exc:
            print(f"error: {exc}")
            return 1
        finally:
            cleanup.close()
            reap_descendants()
    return 0


if __name__ == "__main__":
    sys.exit(main())
