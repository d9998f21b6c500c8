"""A counting SMTP sink (aiosmtpd) on loopback: accepts every message, keeps nothing, counts.

Usage: python bench/sinks.py --port P [--host 127.0.0.1] [--expect N] [--timeout S] [--progress]

- prints `ready HOST:PORT` once it listens;
- with `--progress`, prints `mesg=N` (flushed) after each message, the same counter format as
  Postfix's `smtp-sink -c`, so one parser reads either;
- with `--expect N`, exits 0 as soon as N messages have arrived (`received N`);
- with `--timeout S`, exits 1 after S seconds and says how many arrived (`timeout: received X of N`);
- SIGINT / SIGTERM: prints the count and exits 0.

bench/bench_relay.py measures with `smtp-sink` (C, near-zero CPU) and offers this sink as
`--sink aiosmtpd`: a cross-check that Postfix's tool and a Python peer count the same.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    """aiosmtpd handler: every DATA is accepted and counted; `reached` is set at `expect`."""

    def __init__(self, expect: int | None, progress: bool) -> None:
        self.count = 0
        self.expect = expect
        self.progress = progress
        self.reached = asyncio.Event()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.count += 1
        if self.progress:
            sys.stdout.write(f"mesg={self.count}\n")
            sys.stdout.flush()
        if self.expect is not None and self.count >= self.expect:
            self.reached.set()
        return "250 2.0.0 Ok: counted"


async def serve(host: str, port: int, expect: int | None, timeout: float | None, progress: bool) -> int:
    """Listen until `expect` messages arrived, `timeout` passed or a signal came; return the exit code."""
    handler = CountingHandler(expect, progress)
    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() for every connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.localhost", decode_data=False), host=host, port=port, backlog=1024
    )
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"ready {host}:{port}", flush=True)

    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(handler.reached.wait())}
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        server.close()
        await server.wait_closed()

    if handler.reached.is_set():
        print(f"received {handler.count}", flush=True)
        return 0
    if not done:
        print(f"timeout: received {handler.count} of {expect if expect is not None else '?'}", flush=True)
        return 1
    print(f"stopped: received {handler.count}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--expect", type=int, default=None, help="exit 0 once this many messages arrived")
    parser.add_argument("--timeout", type=float, default=None, help="exit 1 after this many seconds")
    parser.add_argument("--progress", action="store_true", help="print mesg=N after each message")
    args = parser.parse_args(argv)
    return asyncio.run(serve(args.host, args.port, args.expect, args.timeout, args.progress))


if __name__ == "__main__":
    sys.exit(main())
