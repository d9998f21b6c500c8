"""Enqueue throughput of the durable queue: group commit against one fsync per message.

20 concurrent tasks (as 20 SMTP sessions finishing DATA) enqueue 10 KB messages for a fixed
time each run, side by side in one process on the same disk:

- `group commit`: the queue as shipped: the enqueues that arrived while the previous commit
  was being fsynced share the next transaction and its fsync;
- `group commit, 2 ms linger`: the writer also waits up to 2 ms for as many callers as its
  previous batch had (`linger_s=0.002`), to compare;
- `fsync per message`: the same queue with `max_batch=1` (one transaction, one fsync each);
- `file per message`: the design we did not pick, modelled: body written to its own file,
  fsync file, fsync directory (in a thread pool, 20 at a time), then the metadata row
  group-committed through the same queue.

Every run ends by opening its queue again and counting: a variant that kept fewer messages
than it acknowledged, or enqueued none, fails the run (exit 1).

Usage: python bench/bench_queue.py [--seconds 2.5] [--rounds 3] [--dir PATH] [--markdown] [--smoke]
Total run time is about 4 x --rounds x --seconds (default 30 s); --smoke is one round of 0.3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.relay.queue import Queue  # noqa: E402

SESSIONS = 20
BODY_SIZE = 10 * 1024


async def run_queue(directory: Path, seconds: float, *, max_batch: int, linger_s: float) -> dict:
    """Enqueue from SESSIONS tasks for `seconds`; return the counts."""
    queue = Queue.open(directory, max_batch=max_batch, linger_s=linger_s)
    body = os.urandom(BODY_SIZE)
    deadline = time.perf_counter() + seconds

    async def session(n: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            await queue.enqueue("bench@example.org", [f"r{n}@example.net"], body, meta={"n": n})
            done += 1
        return done

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(session(n) for n in range(SESSIONS))))
    elapsed = time.perf_counter() - started
    stats = await queue.stats()
    queue.close()
    return {"messages": total, "seconds": elapsed, "transactions": stats.transactions, "kept": await kept(directory)}


async def kept(directory: Path) -> int:
    """How many messages the queue holds when opened again (what a restart would find)."""
    queue = Queue.open(directory)
    try:
        return await queue.count()
    finally:
        queue.close()


async def run_file_per_message(directory: Path, seconds: float) -> dict:
    """The alternative design: one fsynced file per body, metadata group-committed."""
    bodies = directory / "bodies"
    bodies.mkdir(parents=True)
    queue = Queue.open(directory / "meta")
    body = os.urandom(BODY_SIZE)
    pool = ThreadPoolExecutor(SESSIONS)
    loop = asyncio.get_running_loop()
    deadline = time.perf_counter() + seconds
    dir_fd = os.open(bodies, os.O_RDONLY | os.O_DIRECTORY)

    def write_body(name: str) -> None:
        fd = os.open(bodies / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(dir_fd)

    async def session(n: int) -> int:
        done = 0
        while time.perf_counter() < deadline:
            name = f"{n}-{done}"
            await loop.run_in_executor(pool, write_body, name)
            await queue.enqueue("bench@example.org", [f"r{n}@example.net"], b"", meta={"file": name})
            done += 1
        return done

    started = time.perf_counter()
    total = sum(await asyncio.gather(*(session(n) for n in range(SESSIONS))))
    elapsed = time.perf_counter() - started
    stats = await queue.stats()
    queue.close()
    pool.shutdown()
    os.close(dir_fd)
    files = len(list(bodies.iterdir()))
    return {
        "messages": total,
        "seconds": elapsed,
        "transactions": stats.transactions,
        "kept": min(files, await kept(directory / "meta")),
    }


def fsync_latency_us(where: Path | None, samples: int = 200) -> float:
    """Median time of one 4 KB write + fsync on this disk: what group commit saves per message."""
    fd, name = tempfile.mkstemp(dir=where)
    times = []
    try:
        for _ in range(samples):
            started = time.perf_counter()
            os.write(fd, bytes(4096))
            os.fsync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.unlink(name)
    return statistics.median(times) * 1e6


VARIANTS = {
    "group commit": lambda d, s: run_queue(d, s, max_batch=256, linger_s=0.0),
    "group commit, 2 ms linger": lambda d, s: run_queue(d, s, max_batch=256, linger_s=0.002),
    "fsync per message": lambda d, s: run_queue(d, s, max_batch=1, linger_s=0.0),
    "file per message": run_file_per_message,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.5, help="duration of each run of a variant")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the queues (same disk as production)")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--smoke", action="store_true", help="one round of 0.3 s per variant (about 2 s in all)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 0.3, 1

    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    fsync_us = fsync_latency_us(args.dir, 20 if args.smoke else 200)
    base = Path(tempfile.mkdtemp(prefix="bench-queue-", dir=args.dir))
    try:
        for round_no in range(args.rounds):  # interleaved, so a noisy disk hurts every variant alike
            for index, (name, variant) in enumerate(VARIANTS.items()):
                runs[name].append(asyncio.run(variant(base / f"{round_no}-{index}", args.seconds)))
    finally:
        shutil.rmtree(base, ignore_errors=True)

    lost = {
        name: sum(r["messages"] - r["kept"] for r in results)
        for name, results in runs.items()
        if any(r["messages"] == 0 or r["kept"] != r["messages"] for r in results)
    }
    rates = {name: sorted(r["messages"] / r["seconds"] for r in results) for name, results in runs.items()}
    rate = {name: statistics.median(values) for name, values in rates.items()}
    per_txn = {
        name: sum(r["messages"] for r in results) / max(1, sum(r["transactions"] for r in results))
        for name, results in runs.items()
    }
    ratio = rate["group commit"] / rate["fsync per message"]
    load = os.getloadavg()[0]
    where = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}, "
        f"SQLite {sqlite3.sqlite_version}, fsync of 4 KB takes {fsync_us:,.0f} µs (median)"
    )
    setup = f"{SESSIONS} concurrent tasks, {BODY_SIZE // 1024} KB bodies, {args.rounds} interleaved rounds of {args.seconds:g} s"
    if args.markdown:
        print(f"{setup}; {where}.\n")
        print("| variant | msgs/s (median) | range | messages per transaction |")
        print("|---|---:|---:|---:|")
        for name in VARIANTS:
            low, high = rates[name][0], rates[name][-1]
            print(f"| {name} | {rate[name]:,.0f} | {low:,.0f}–{high:,.0f} | {per_txn[name]:.1f} |")
        print(f"\nGroup commit vs one fsync per message, same run: **{ratio:.1f}x**.")
    else:
        print(f"{setup}; {where}")
        for name in VARIANTS:
            low, high = rates[name][0], rates[name][-1]
            print(
                f"{name:>26}: {rate[name]:7,.0f} msgs/s  (range {low:,.0f}-{high:,.0f}, {per_txn[name]:.1f} msgs/txn)"
            )
        print(f"{'ratio':>26}: {ratio:.1f}x group commit over one fsync per message")
    total = sum(r["messages"] for results in runs.values() for r in results)
    if lost:
        print(f"error: acknowledged but not kept, or none enqueued: {lost}")
        return 1
    print(f"kept: all {total:,} acknowledged messages were in their queues when opened again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
