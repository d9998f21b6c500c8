"""Relay throughput side by side: Postfix's smtp-source -> (nothing | stock Postfix | sealrelay) -> smtp-sink.

Three legs, interleaved round by round in one run on loopback, so that the ratios hold on a
noisy machine. Each round starts one leg further on (direct, postfix, sealrelay; then postfix,
sealrelay, direct; ...), so a drift over the run does not always favour the same leg:

- `direct`: smtp-source straight to a sink (the ceiling of the source and the sink);
- `postfix`: through a private, stock Postfix instance (its own config, queue and data
  directories under a temp dir; nothing system-wide is touched) relaying to its sink;
- `sealrelay`: through `sealrelay serve CONFIG` with a generated config routing everything to its
  sink (skipped, saying so, while `sealrelay serve` does not exist).

A leg's time runs from starting smtp-source until its sink has counted all messages, so a relay
is timed end to end (accept, queue, deliver), not only on accepting. Each leg has its own sink,
Postfix's `smtp-sink -c`, whose running counter we read from a pipe: it is C and event driven, so
it takes next to no CPU from the relays under test (an aiosmtpd sink does ~600 msg/s here against
~3,500 for smtp-sink, and would cap the direct leg). `--sink aiosmtpd` uses bench/sinks.py instead.
Before the rounds each leg gets one unmeasured warm-up run.

For each sealrelay leg the run also reads the CPU time its relay process used (all threads, from
/proc; its queue-writer child not counted) and prints the median per message: the event loop's
thread is what limits the relay, and CPU per message moves far less with the machine's noise
than a rate does, so two legs' costs compare more closely that way. `--baseline DIR` adds the
sealrelay legs of other code (a `git worktree` of another commit), interleaved, as `NAME@base`.

The run exits 1 when a leg failed or was skipped (the comparison is then incomplete), or when
a sink counted more messages than were sent.

Usage: python bench/bench_relay.py [--rounds 5] [--messages 2000] [--sessions 20] [--size 10240]
       [--sink smtp-sink|aiosmtpd] [--profile [auto|py-spy|cprofile]] [--markdown] [--smoke]
       [--baseline DIR]
`--smoke`: every leg for real, with tiny counts (1 round of 50 messages, 5 sessions, 1 KB).
Needs smtp-source, smtp-sink and postfix (Debian's `postfix`; scripts/test installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
LAUNCHER = "import sys; from engine.cli.app import main; sys.argv[0] = 'sealrelay'; main()"
CPROFILE_LAUNCHER = """import cProfile, sys
from engine.cli.app import main
out = sys.argv.pop(1)
sys.argv[0] = 'sealrelay'
profiler = cProfile.Profile()
profiler.enable()
try:
    main()
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""
COUNTER = re.compile(rb"mesg=(\d+)")
# Frames on every stack (CLI entry, event loop, thread start), left out of the profile's totals.
PLUMBING = re.compile(
    r"\((typer/.*|asyncio/(runners|base_events|events)\.py|threading\.py|<string>)\)$|^(main|serve) \(engine/cli/app\.py\)$"
)
MAIN_CF = """compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix-bench.localhost
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{sink}
mydestination =
alias_maps =
alias_database =
maillog_file = {log}
maillog_file_prefixes = {root}
"""


class BenchError(Exception):
    """A leg could not be set up or did not finish; the message says why."""


def tool(name: str) -> str:
    found = shutil.which(name, path=SBIN_PATH)
    if not found:
        raise BenchError(f"{name} not found: install Debian's postfix (scripts/test does)")
    return found


def tool_or_none(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together while choosing, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    """Poll until 127.0.0.1:port accepts a connection; fail early if `proc` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what or proc.args[0]} exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)  # poll interval, not a wait for an assumed duration
    raise BenchError(f"{what or 'server'} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


def stop_process(proc: subprocess.Popen, first: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Signal `proc` (our own child, by its pid), escalating to SIGKILL after `grace` seconds."""
    for signum, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def gone(pid: int) -> bool:
    """Whether `pid` has exited: reaped here if it is our child, else absent or a zombie in /proc."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def become_subreaper() -> None:
    """Orphans of our children (the daemonized Postfix master and its daemons) come to us, not to
    pid 1: we can reap them, and none is left behind as a zombie. Linux only; else a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap_descendants(timeout: float = 10.0) -> None:
    """Last step of the cleanup: wait for every remaining child (by now only Postfix's exiting
    daemons), killing by pid any still running at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            continue
        if time.monotonic() > deadline:
            for child in own_children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
            deadline = time.monotonic() + timeout
        time.sleep(0.05)


def own_children() -> list[int]:
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == me:
                found.append(int(stat.parent.name))
    return found


class Sink:
    """A sink on its own port whose message counter is read from its stdout by a thread."""

    def __init__(self, kind: str, port: int, cleanup: contextlib.ExitStack) -> None:
        self.port = port
        self.count = 0
        self._changed = threading.Condition()
        if kind == "smtp-sink":
            user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
            argv = [tool("smtp-sink"), "-c", "-4", *user, f"127.0.0.1:{port}", "1024"]
        else:
            argv = [sys.executable, str(REPO / "bench" / "sinks.py"), "--port", str(port), "--progress"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        cleanup.callback(stop_process, self.proc)
        threading.Thread(target=self._read, daemon=True).start()
        wait_port(port, 15, self.proc, f"{kind} sink")

    def _read(self) -> None:
        tail = b""
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            *records, tail = re.split(rb"[\r\n]", tail + chunk)
            counts = [int(m.group(1)) for r in records if (m := COUNTER.search(r))]
            if counts:
                with self._changed:
                    self.count = counts[-1]
                    self._changed.notify_all()

    def status(self) -> str:
        """Empty while the sink runs; else how it ended (a negative code is the signal that ended it)."""
        code = self.proc.poll()
        return "" if code is None else f" (the sink itself exited with {code})"

    def wait_for(self, target: int, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count >= target, timeout)


class PostfixRelay:
    """A private stock Postfix: config, queue and data directories under `root`; loopback only."""

    def __init__(self, root: Path, port: int, sink_port: int) -> None:
        self.port, self.conf = port, root / "etc"
        self.queue, self.data, self.log = root / "spool", root / "data", root / "maillog"
        self.conf.mkdir(parents=True)
        self.queue.mkdir(mode=0o755)  # the postfix command chdirs here first; it fills it itself
        stock = next(
            (p for p in (Path("/etc/postfix/master.cf"), Path("/usr/share/postfix/master.cf.dist")) if p.exists()), None
        )
        if stock is None:
            raise BenchError("no stock master.cf found (/etc/postfix/master.cf)")
        shutil.copy(stock, self.conf / "master.cf")
        # Stock defaults, except where a private root-run instance on loopback needs a setting.
        (self.conf / "main.cf").write_text(
            MAIN_CF.format(queue=self.queue, data=self.data, log=self.log, root=root, sink=sink_port)
        )
        # The stock master.cf, except: no chroot (no copied /etc files needed) and smtpd on our port.
        self.postconf("-F", "*/*/chroot = n")
        self.postconf("-MX", "smtp/inet")
        self.postconf("-M", f"127.0.0.1:{port}/inet = 127.0.0.1:{port} inet n - n - - smtpd")

    def postconf(self, *args: str) -> None:
        run = subprocess.run([tool("postconf"), "-c", str(self.conf), *args], capture_output=True, text=True)
        if run.returncode:
            raise BenchError(f"postconf {' '.join(args)}: {run.stderr.strip()}")

    def postfix(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [tool("postfix"), "-c", str(self.conf), command], capture_output=True, text=True, timeout=60
        )

    def start(self) -> None:
        for command in ("check", "start"):
            run = self.postfix(command)
            if run.returncode:
                raise BenchError(f"postfix {command} failed: {run.stderr.strip()}\n{self.log_tail()}")
        wait_port(self.port, 30, what="postfix smtpd")

    def master_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.queue / "pid" / "master.pid").read_text().split()[0])
        return None

    def stop(self) -> None:
        """`postfix stop`, then wait for the master to go; SIGKILL it (by its pid) if it lingers."""
        pid = self.master_pid()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.postfix("stop")
        if pid is None:
            return
        deadline = time.monotonic() + 15
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def sealrelay_available() -> tuple[bool, str]:
    """Whether `sealrelay serve` exists: `sealrelay serve --help` succeeds."""
    run = subprocess.run(
        [sys.executable, "-c", LAUNCHER, "serve", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    lines = (run.stderr or run.stdout).strip().splitlines()
    return run.returncode == 0, " ".join(line.strip(" │╭╮╰╯─") for line in lines if line.strip(" │╭╮╰╯─"))[-200:]


def dlp_policy(patterns: int = 46, phrases: int = 200) -> str:
    """The DLP section the issue measures with: `patterns` custom patterns, `phrases` phrases
    and the 4 built-in classifiers, every rule encrypting; smtp-source's messages match none
    of it, so every message is scanned in full and goes out as it came."""
    shapes = [
        r"PRJ{i}-[0-9]{{6}}-[A-Z]{{3}}",
        r"[a-z]+{i}[.]corp[.]internal",
        r"ACC{i}[0-9]{{8}}",
        r"TKT-{i}-[0-9]{{4,6}}",
    ]
    lines = ["dlp:", "  action_plans:", "    - {name: encrypt, email: encrypt}", "  classifiers:"]
    for i in range(patterns):
        lines.append(f"    - {{name: custom_{i}, pattern: '{shapes[i % len(shapes)].format(i=i)}'}}")
    lines += ["  policies:", "    - name: builtin", "      rules:"]
    for name in ("credit_card", "us_ssn", "iban", "email_address"):
        lines.append(
            f"        - {{name: {name.replace('_', '-')}, conditions: {{classifier: {name}}}, action_plan: encrypt}}"
        )
    lines += ["    - name: custom", "      rules:"]
    for i in range(patterns):
        lines.append(f"        - {{name: c{i}, conditions: {{classifier: custom_{i}}}, action_plan: encrypt}}")
    lines += ["    - name: phrases", "      rules:"]
    for group in range(0, phrases, 20):
        words = ", ".join(f"codeword {n} project sierra" for n in range(group, min(group + 20, phrases)))
        lines.append(f"        - {{name: p{group}, conditions: {{phrases: [{words}]}}, action_plan: encrypt}}")
    return "\n".join(lines) + "\n"


class SealRelay:
    """`sealrelay serve CONFIG` with a generated config: one loopback listener, one route to the sink.
    `internal_servers` (who may relay out, as Postfix's mynetworks) is loopback, as for Postfix;
    `dlp` appends a DLP section (dlp_policy())."""

    def __init__(
        self, root: Path, port: int, sink_port: int, profile: str | None, dlp: str = "", code: Path = REPO
    ) -> None:
        self.root, self.port, self.profile, self.code = root, port, profile, code
        self.config = root / "relay.yaml"
        self.log = root / "sealrelay.log"
        admin, portal, metrics = free_ports(3)
        root.mkdir(parents=True)
        self.config.write_text(
            f"""version: 1
system:
  fqdn: sealrelay-bench.example.com
  listeners:
    - {{name: bench, address: 127.0.0.1, port: {port}}}
  data_dir: {root / "var"}
  admin: {{address: 127.0.0.1, port: {admin}}}
  portal: {{address: 127.0.0.1, port: {portal}}}
  metrics: {{address: 127.0.0.1, port: {metrics}}}
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
  - name: sink
    recipients: any
    next_hop: {{host: 127.0.0.1, port: {sink_port}}}
    tls: none
{dlp}"""
        )
        self.proc: subprocess.Popen | None = None
        self.pstats = root / "sealrelay.pstats"

    def start(self, cleanup: contextlib.ExitStack) -> None:
        check = subprocess.run(
            [sys.executable, "-c", LAUNCHER, "validate", str(self.config)],
            cwd=self.code,
            capture_output=True,
            text=True,
        )
        if check.returncode:
            raise BenchError(f"generated config does not validate:\n{check.stdout}{check.stderr}")
        launcher = [LAUNCHER] if self.profile != "cprofile" else [CPROFILE_LAUNCHER, str(self.pstats)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", *launcher, "serve", str(self.config)],
                cwd=self.code,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # SIGINT first: the CLI turns it into a clean exit, which also lets cProfile write its stats.
        cleanup.callback(stop_process, self.proc, signal.SIGINT)
        try:
            wait_port(self.port, 60, self.proc, "sealrelay serve")
        except BenchError as exc:
            raise BenchError(f"{exc}\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


@dataclass
class Leg:
    name: str
    port: int
    sink: Sink
    log_tail: object = None  # callable giving the relay's log tail, for failures
    failed: str | None = None
    pid: int | None = None  # a sealrelay leg's relay process, whose CPU time each run reads


@dataclass
class Run:
    leg: str
    round: int
    messages: int
    seconds: float  # until the sink counted every message
    accepted: float  # until smtp-source finished (the relay had accepted every message)
    cpu: float | None = None  # CPU seconds the relay's process used meanwhile (all its threads)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def cpu_seconds(pid: int | None) -> float | None:
    """User and system CPU time of a process, all threads (its children not counted)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def run_leg(leg: Leg, round_no: int, args: argparse.Namespace, messages: int) -> Run:
    """smtp-source `messages` into the leg's port; time until the leg's sink counted all of them."""
    target = leg.sink.count + messages
    argv = [tool("smtp-source"), "-4", "-s", str(args.sessions), "-m", str(messages), "-l", str(args.size)]
    argv += ["-M", "source.localhost", "-f", "bench@source.example", "-t", "sink@destination.example"]
    cpu = cpu_seconds(leg.pid)
    start = time.perf_counter()
    try:
        source = subprocess.run(
            [*argv, f"127.0.0.1:{leg.port}"], capture_output=True, text=True, timeout=args.leg_timeout
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"smtp-source did not finish within {args.leg_timeout:.0f}s") from None
    accepted = time.perf_counter() - start
    if source.returncode:
        raise BenchError(f"smtp-source exited {source.returncode}: {source.stderr.strip()[-400:]}{leg.sink.status()}")
    if not leg.sink.wait_for(target, max(1.0, args.leg_timeout - accepted)):
        got = leg.sink.count - (target - messages)
        raise BenchError(f"sink counted {got} of {messages} within {args.leg_timeout:.0f}s{leg.sink.status()}")
    seconds, used = time.perf_counter() - start, cpu_seconds(leg.pid)
    return Run(leg.name, round_no, messages, seconds, accepted, None if cpu is None or used is None else used - cpu)


def attempt(leg: Leg, round_no: int, args: argparse.Namespace, messages: int) -> Run | None:
    """One run of a leg that has not failed yet; a failure is printed and retires the leg."""
    if leg.failed:
        return None
    try:
        run = run_leg(leg, round_no, args, messages)
    except BenchError as exc:
        leg.failed = f"failed in round {round_no}: {exc}"
        print(f"{leg.name}: {leg.failed}\n{leg.log_tail() if leg.log_tail else ''}".rstrip(), flush=True)
        return None
    if round_no:
        print(f"round {round_no} {leg.name:<9} {run.rate:8.0f} msg/s  ({run.seconds:6.2f} s;", end=" ")
        print(f"accepted in {run.accepted:.2f} s)", flush=True)
    return run


def start_profiler(args: argparse.Namespace, relay: SealRelay | None, cleanup: contextlib.ExitStack):
    """py-spy attached to the running relay for the measured rounds (cProfile runs inside the relay)."""
    if args.profile != "py-spy" or relay is None or relay.proc.poll() is not None:
        return None
    args.profile_out.parent.mkdir(parents=True, exist_ok=True)
    argv = [tool_or_none("py-spy"), "record", "--pid", str(relay.proc.pid), "--format", "raw"]
    argv += ["--output", str(args.profile_out.with_suffix(".raw")), "--rate", "100", "--nonblocking", "--threads"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    cleanup.callback(stop_process, proc, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1.0)  # an attach failure (no ptrace permission) shows at once
        print(f"profile: py-spy could not attach: {proc.stdout.read().decode(errors='replace').strip()}")
        print("(try --profile cprofile)")
        return None
    return proc


def py_spy_top(raw: Path, limit: int = 25) -> str:
    """Top functions by own and by total samples, and each thread's share, from py-spy's raw
    (collapsed stack) output. Entry-point and event-loop frames, on every stack, are left out of
    the totals."""
    own: dict[str, int] = {}
    total: dict[str, int] = {}
    threads: dict[str, int] = {}
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = parts[0].partition("): ")[2] if parts[0].startswith("thread (") else "?"
        frames = [re.sub(r":\d+\)$", ")", f) for f in parts if not f.startswith(("thread (", "process "))]
        if not frames:
            continue
        samples += int(count)
        threads[thread] = threads.get(thread, 0) + int(count)
        own[frames[-1]] = own.get(frames[-1], 0) + int(count)
        for frame in {f for f in frames if not PLUMBING.search(f)}:
            total[frame] = total.get(frame, 0) + int(count)
    if not samples:
        return "py-spy recorded no samples\n"
    out = [f"py-spy: {samples} samples of the sealrelay process during the measured rounds (idle excluded)"]
    out += ["", "by thread:"] + [
        f"{100 * n / samples:6.1f}%  {name}" for name, n in sorted(threads.items(), key=lambda kv: -kv[1])
    ]
    for title, table in (("own time (leaf frame)", own), ("total time (on the stack)", total)):
        out += ["", f"top {limit} by {title}:"]
        for frame, count in sorted(table.items(), key=lambda kv: -kv[1])[:limit]:
            out.append(f"{100 * count / samples:6.1f}%  {frame}")
    return "\n".join(out) + "\n"


def cprofile_top(pstats_file: Path, limit: int = 25) -> str:
    import io
    import pstats

    buf = io.StringIO()
    stats = pstats.Stats(str(pstats_file), stream=buf).strip_dirs()
    buf.write("cProfile of the whole sealrelay process (start-up and warm-up included)\n")
    stats.sort_stats("tottime").print_stats(limit)
    stats.sort_stats("cumulative").print_stats(limit)
    return buf.getvalue()


def rotated(legs: list[Leg], round_number: int) -> list[Leg]:
    """The legs in round `round_number`'s order: round 1 as given, each next one starting one leg on."""
    start = (round_number - 1) % len(legs) if legs else 0
    return legs[start:] + legs[:start]


def summarize(legs: list[Leg], runs: list[Run], args: argparse.Namespace) -> str:
    """Per-leg rounds and medians; ratios are medians of the per-round ratios (same round, same noise)."""
    by = {(r.leg, r.round): r for r in runs}
    rounds = sorted({r.round for r in runs})

    def ratios(a: str, b: str) -> list[float]:
        return [by[a, n].rate / by[b, n].rate for n in rounds if (a, n) in by and (b, n) in by]

    def ratio(a: str, b: str) -> str:
        values = ratios(a, b)
        return f"{statistics.median(values):.2f}x" if values else "-"

    def dlp_cost(name: str) -> str:
        """What DLP costs a sealrelay-dlp leg: 1 - its rate over the same code's DLP-off leg, per round."""
        values = ratios(name, name.replace("sealrelay-dlp", "sealrelay", 1)) if name.startswith("sealrelay-dlp") else []
        return f"{(1 - statistics.median(values)) * 100:.1f}%" if values else "-"

    md = args.markdown
    head = ["leg", *[f"r{n}" for n in rounds], "median msg/s", "accept msg/s", "vs direct", "vs postfix"]
    head += ["relay CPU us/msg", "DLP cost"]
    rows, notes = [], [f"{leg.name}: {leg.failed}" for leg in legs if leg.failed]
    for leg in legs:
        mine = [by[leg.name, n] for n in rounds if (leg.name, n) in by]
        if not mine:
            rows.append([leg.name, *["-"] * (len(rounds) + 6)])
            continue
        accept = statistics.median(r.messages / r.accepted for r in mine)
        cpus = [r.cpu / r.messages * 1e6 for r in mine if r.cpu is not None]
        rows.append(
            [leg.name, *[f"{by[leg.name, n].rate:.0f}" if (leg.name, n) in by else "-" for n in rounds]]
            + [f"{statistics.median(r.rate for r in mine):.0f}", f"{accept:.0f}"]
            + [ratio(leg.name, "direct") if leg.name != "direct" else "1.00x", ratio(leg.name, "postfix")]
            + [f"{statistics.median(cpus):.0f}" if cpus else "-", dlp_cost(leg.name)]
        )
    if md:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=False)]
        lines = [
            "  ".join(str(x).ljust(w) for x, w in zip(row, widths, strict=False)).rstrip() for row in [head, *rows]
        ]
    return "\n".join(lines + [""] + notes if notes else lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (each runs every leg once)")
    parser.add_argument("--messages", type=int, default=2000, help="messages per leg and round (smtp-source -m)")
    parser.add_argument("--sessions", type=int, default=20, help="parallel SMTP sessions (smtp-source -s)")
    parser.add_argument("--size", type=int, default=10240, help="message body bytes (smtp-source -l)")
    parser.add_argument("--sink", choices=["smtp-sink", "aiosmtpd"], default="smtp-sink")
    parser.add_argument("--leg-timeout", type=float, default=60.0, help="seconds one leg may take before it fails")
    parser.add_argument(
        "--legs",
        default="direct,postfix,sealrelay,sealrelay-dlp",
        help="comma-separated legs to run (sealrelay-dlp: with dlp_policy(): 46 patterns, 200 phrases, 4 classifiers)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of other code (git worktree add DIR COMMIT): its sealrelay legs run too, "
        "interleaved with this code's, as NAME@base",
    )
    parser.add_argument("--profile", nargs="?", const="auto", choices=["auto", "py-spy", "cprofile"])
    parser.add_argument("--profile-out", type=Path, default=REPO / "bench" / "out" / "sealrelay-profile.txt")
    parser.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    parser.add_argument("--smoke", action="store_true", help="1 round of 50 messages per leg: does every leg run?")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.messages, args.sessions, args.size, args.leg_timeout = 1, 50, 5, 1024, 30.0
    args.warmup = min(args.messages, 10 if args.smoke else 200)
    if args.profile == "auto":
        args.profile = "py-spy" if tool_or_none("py-spy") else "cprofile"
        if args.profile == "cprofile":
            print("py-spy is not installed (pip install py-spy): profiling with cProfile instead")
    return args


def start_legs(
    args: argparse.Namespace, tmp: Path, cleanup: contextlib.ExitStack
) -> tuple[list[Leg], SealRelay | None]:
    """Sinks and relays for the wanted legs, each on its own free loopback ports, all registered for cleanup."""
    wanted = args.legs.split(",")
    relay_port, postfix_port, direct_sink, postfix_sink, relay_sink = free_ports(5)
    legs: list[Leg] = []
    if "direct" in wanted:
        legs.append(Leg("direct", direct_sink, Sink(args.sink, direct_sink, cleanup)))
    if "postfix" in wanted:
        postfix = PostfixRelay(tmp / "postfix", postfix_port, postfix_sink)
        sink = Sink(args.sink, postfix_sink, cleanup)
        cleanup.callback(postfix.stop)
        postfix.start()
        legs.append(Leg("postfix", postfix_port, sink, postfix.log_tail))
    relay = None
    codes = [("", REPO)] + ([("@base", args.baseline.resolve())] if args.baseline else [])
    for name, (suffix, code) in itertools.product(("sealrelay", "sealrelay-dlp"), codes):
        if name not in wanted:
            continue
        port, sink_port = (relay_port, relay_sink) if name + suffix == "sealrelay" else free_ports(2)
        leg = Leg(name + suffix, port, Sink(args.sink, sink_port, cleanup))
        legs.append(leg)
        ok, why = sealrelay_available()
        if not ok:
            leg.failed = "pending: `sealrelay serve` not yet available"
            print(f"{leg.name}: skipped, `sealrelay serve --help` failed: {why}")
            continue
        dlp = dlp_policy() if name == "sealrelay-dlp" else ""
        started = SealRelay(tmp / (name + suffix), port, sink_port, args.profile if relay is None else None, dlp, code)
        leg.log_tail = started.log_tail
        try:
            started.start(cleanup)
        except BenchError as exc:
            leg.failed = "did not start"
            print(f"{leg.name}: skipped, {exc}")
            continue
        leg.pid = started.proc.pid
        relay = relay or started  # the profiled one: the first sealrelay leg
    return legs, relay


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, interrupt)
    become_subreaper()
    cleanup = contextlib.ExitStack()
    cleanup.callback(reap_descendants)  # registered first, so it runs last
    tmp = Path(tempfile.mkdtemp(prefix="sealrelay-bench-"))
    tmp.chmod(0o755)  # Postfix's daemons run as `postfix` and must reach their queue below it
    cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
    try:
        for name in ("smtp-source", "smtp-sink", "postfix", "postconf"):
            tool(name)
        version = subprocess.run([tool("postconf"), "-d", "-h", "mail_version"], capture_output=True, text=True)
        print(
            f"relay throughput: {args.messages} msgs x {args.size} B, {args.sessions} sessions, {args.rounds} rounds,"
        )
        print(f"  sink {args.sink}; Postfix {version.stdout.strip()}, Python {platform.python_version()},", end=" ")
        print(f"{os.cpu_count()} CPUs; temp dir {tmp}", flush=True)
        legs, relay = start_legs(args, tmp, cleanup)
        for leg in legs:  # warm-up: daemons spawned, caches and imports warm; not measured
            attempt(leg, 0, args, args.warmup)
        profiler = start_profiler(args, relay, cleanup)
        rounds = range(1, args.rounds + 1)
        runs = [run for n in rounds for leg in rotated(legs, n) if (run := attempt(leg, n, args, args.messages))]
        duplicates = False
        for leg in legs:
            extra = leg.sink.count - args.warmup - sum(r.messages for r in runs if r.leg == leg.name)
            if extra > 0 and not leg.failed:
                duplicates = True
                print(f"{leg.name}: the sink counted {extra} more messages than were sent (duplicates)")
        print()
        print(summarize(legs, runs, args))
        if args.profile and relay is not None:
            write_profile(args, relay, profiler)
        failed = [leg.name for leg in legs if leg.failed]
        if failed:
            print(f"incomplete: {', '.join(failed)} did not run every round", file=sys.stderr)
        return 0 if runs and not failed and not duplicates else 1
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        cleanup.close()


def interrupt(signum: int, frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, through main's cleanup."""
    raise KeyboardInterrupt


def write_profile(args: argparse.Namespace, relay: SealRelay, profiler: subprocess.Popen | None) -> None:
    """Stop the profiler (py-spy on SIGINT, cProfile when the relay exits) and write the top functions."""
    if args.profile == "py-spy":
        if profiler is None:
            return
        stop_process(profiler, signal.SIGINT, grace=30)
        raw = args.profile_out.with_suffix(".raw")
        text = py_spy_top(raw) if raw.exists() else "py-spy wrote no output\n"
    else:
        stop_process(relay.proc, signal.SIGINT, grace=30)
        text = cprofile_top(relay.pstats) if relay.pstats.exists() else "cProfile wrote no stats (relay killed?)\n"
    args.profile_out.write_text(text)
    print(f"\nprofile ({args.profile}) written to {args.profile_out}; top lines:")
    print("\n".join(text.splitlines()[:30]))


if __name__ == "__main__":
    sys.exit(main())
