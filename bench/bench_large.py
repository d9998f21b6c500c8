"""Peak memory of the relay while it carries large messages, DLP on.

`sealrelay serve` with a DLP policy (the card classifier, keywords and patterns; what a
message matches does not change the path: nothing here matches) relays to Postfix's
`smtp-sink`. Clients (threads of this process, so their memory is not the relay's) send
`--concurrent` copies of a message of `--size` MB at once: a short text body and one
attachment of random bytes (base64, ~74% of the message), the shape of a large real
message. The relay's resident memory is sampled every 10 ms from /proc from before the
first byte until the sink has counted every message; its peak high-water mark (VmHWM,
reset after the warm-up through /proc/PID/clear_refs) is the number reported.

Reported per run (a fresh relay each): the baseline RSS after one small warm-up message,
the peak, the growth (peak - baseline) and growth / (messages in flight x message size):
the issue's target is at most 2 per message in flight.

Usage: python bench/bench_large.py [--size 40] [--concurrent 10] [--runs 1,10] [--markdown]
Needs smtp-sink (Debian's postfix; scripts/test installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import smtplib
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_relay import LAUNCHER, REPO, BenchError, Sink, free_ports, stop_process, wait_port  # noqa: E402

POLICY = """dlp:
  action_plans:
    - {name: encrypt, email: encrypt}
  classifiers:
    - {name: project_code, pattern: 'PRJ-[0-9]{6}-[A-Z]{3}'}
    - {name: internal_host, pattern: '[a-z]+[.]corp[.]internal'}
  policies:
    - name: payment-cards
      rules:
        - name: cards
          conditions: {classifier: credit_card}
          action_plan: encrypt
    - name: secrets
      rules:
        - name: projects
          conditions: {any: [{classifier: project_code}, {classifier: internal_host}, {phrases: [confidential merger, project sunrise, do not forward]}]}
          action_plan: encrypt
"""


def message(size_mb: float, kind: str = "binary") -> bytes:
    """A message of about `size_mb` MB: a text body and one attachment in base64, random
    bytes (`binary`: typed, not read) or a CSV export (`text`: every line scanned)."""
    mail = EmailMessage()
    mail["From"] = "sender@example.com"
    mail["To"] = "reader@partner.test"
    mail["Subject"] = "the quarterly archive"
    mail.set_content("Hello,\n\nthe archive is attached.\n" * 20)
    size = int(size_mb * 1_000_000 * 0.74)
    if kind == "text":
        rows, total, n = [], 0, 0
        while total < size:
            n += 1
            row = f"{n},order {n * 7919 % 100000:05d},customer {n % 977},{n * 31 % 10000 / 100:.2f},shipped\n"
            rows.append(row)
            total += len(row)
        mail.add_attachment("".join(rows).encode(), maintype="text", subtype="csv", filename="orders.csv", cte="base64")
    else:
        mail.add_attachment(os.urandom(size), maintype="application", subtype="octet-stream", filename="archive.bin")
    return mail.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {field} for {pid}")


class Sampler(threading.Thread):
    """The highest VmRSS seen, every 10 ms, until stopped (VmHWM is the exact peak)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.stop_at = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.stop_at.wait(0.01):  # a sampling period, not a wait for something
            with contextlib.suppress(OSError, BenchError):
                self.peak_kb = max(self.peak_kb, rss_kb(self.pid, "VmRSS"))


def relay_config(root: Path, port: int, sink_port: int) -> Path:
    admin, portal, metrics = free_ports(3)
    config = root / "relay.yaml"
    config.write_text(
        f"""version: 1
system:
  fqdn: sealrelay-bench.example.com
  listeners:
    - {{name: bench, address: 127.0.0.1, port: {port}}}
  data_dir: {root / "var"}
  admin: {{address: 127.0.0.1, port: {admin}}}
  portal: {{address: 127.0.0.1, port: {portal}}}
  metrics: {{address: 127.0.0.1, port: {metrics}}}
  message_size_limit: 100MB
  internal_domains: [example.com]
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
  - name: sink
    recipients: any
    next_hop: {{host: 127.0.0.1, port: {sink_port}}}
    tls: none
{POLICY}"""
    )
    return config


def send(port: int, content: bytes, errors: list) -> None:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=300) as client:
            client.sendmail("sender@example.com", ["reader@partner.test"], content)
    except Exception as exc:  # reported by the run
        errors.append(exc)


def run(concurrent: int, content: bytes) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-large-") as tmp, contextlib.ExitStack() as cleanup:
        root = Path(tmp)
        port, sink_port = free_ports(2)
        sink = Sink("smtp-sink", sink_port, cleanup)
        config = relay_config(root, port, sink_port)
        log = (root / "relay.log").open("wb")
        cleanup.callback(log.close)
        proc = __import__("subprocess").Popen(
            [sys.executable, "-c", LAUNCHER, "serve", str(config)],
            cwd=REPO,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        cleanup.callback(stop_process, proc)
        wait_port(port, 60, proc, "sealrelay serve")
        small = b"From: a@example.com\r\nTo: b@partner.test\r\nSubject: warm\r\n\r\nwarm up\r\n"
        errors: list = []
        send(port, small, errors)
        if errors or not sink.wait_for(1, 60):
            raise BenchError(f"warm-up failed: {errors}\n{(root / 'relay.log').read_text()[-2000:]}")
        baseline = rss_kb(proc.pid, "VmRSS")
        Path(f"/proc/{proc.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        sampler = Sampler(proc.pid)
        sampler.start()
        started = time.monotonic()
        threads = [threading.Thread(target=send, args=(port, content, errors)) for _ in range(concurrent)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        delivered = sink.wait_for(1 + concurrent, 600)
        elapsed = time.monotonic() - started
        sampler.stop_at.set()
        sampler.join()
        peak = max(rss_kb(proc.pid, "VmHWM"), sampler.peak_kb)
        if errors or not delivered:
            raise BenchError(f"run of {concurrent} failed: {errors[:3]}, sink {sink.count}")
        growth = (peak - baseline) * 1024
        return {
            "concurrent": concurrent,
            "baseline_mb": baseline / 1024,
            "peak_mb": peak / 1024,
            "growth_mb": growth / 2**20,
            "per_message": growth / (concurrent * len(content)),
            "seconds": elapsed,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=40.0, help="message size in MB (default 40)")
    parser.add_argument("--runs", default="1,10", help="messages in flight per run, comma-separated")
    parser.add_argument("--kind", choices=["binary", "text"], default="binary", help="the attachment (default binary)")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    content = message(args.size, args.kind)
    rows = [run(int(n), content) for n in args.runs.split(",")]
    size = len(content) / 2**20
    if args.markdown:
        print(
            "| attachment | in flight | message | baseline RSS | peak RSS | growth | growth / (in flight x size) | time |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {args.kind} | {r['concurrent']} | {size:.1f} MiB | {r['baseline_mb']:.0f} MiB | {r['peak_mb']:.0f} MiB "
                f"| {r['growth_mb']:.0f} MiB | {r['per_message']:.2f} | {r['seconds']:.1f} s |"
            )
    else:
        for r in rows:
            print(
                f"{r['concurrent']:>3} x {size:.1f} MiB: baseline {r['baseline_mb']:.0f} MiB, peak {r['peak_mb']:.0f} MiB, "
                f"growth {r['growth_mb']:.0f} MiB = {r['per_message']:.2f} x size per message, {r['seconds']:.1f} s"
            )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_large: {exc}", file=sys.stderr)
        sys.exit(1)
