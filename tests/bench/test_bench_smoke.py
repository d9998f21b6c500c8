"""Every benchmark in bench/, run in its smoke mode: it still measures what it says it does.

A benchmark is run by hand, rarely, and nobody notices when it quietly stops measuring:
messages lost at the sink, a leg skipped, its inputs gone, a result line missing. Each test
runs one benchmark with `--smoke` (a few seconds of the real thing: real processes, real
sockets on loopback, real Postfix) and reads its report line by line. The numbers
themselves are not judged here (a loaded machine makes them anything); that they exist, and
that nothing was lost, is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from engine.relay.dlp.matcher import hyperscan_available
from tests.conftest import ROOT, require

pytestmark = pytest.mark.slow

NUMBER = r"[\d,]+(?:\.\d+)?"


def run(script: str, *extra: str, timeout: float = 120, status: int = 0) -> list[str]:
    """Run `bench/<script> --smoke` (and `extra` arguments); its stdout lines (it must exit
    with `status`)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke", *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == status, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout.splitlines()


def line(lines: list[str], pattern: str) -> re.Match:
    """The one line that matches `pattern` in full."""
    found = [m for m in map(re.compile(pattern).fullmatch, lines) if m]
    assert len(found) == 1, f"expected one line matching {pattern!r} in:\n" + "\n".join(lines)
    return found[0]


def number(text: str) -> float:
    return float(text.replace(",", ""))


def test_config_load_validates_the_whole_generated_config() -> None:
    lines = run("bench_config_load.py")
    line(lines, rf"config: {NUMBER} MB, 500 IP entries, 50 DLP rules; median of 1 runs")
    for stage in ("parse", "schema", "models", "semantic", "total"):
        timed = line(lines, rf"  {stage} +({NUMBER}) ms  \( *{NUMBER}% of total\)")
        assert number(timed[1]) > 0
    line(lines, rf"  ruamel round-trip parse \(not used; for comparison\) +{NUMBER} ms  \( *{NUMBER}% of total\)")
    line(lines, r"target: total < 1000 ms -> met")


def test_queue_keeps_every_acknowledged_message_and_group_commit_batches() -> None:
    lines = run("bench_queue.py")
    per_txn = {}
    for variant in ("group commit", "group commit, 2 ms linger", "fsync per message", "file per message"):
        row = line(lines, rf" *{variant}: +({NUMBER}) msgs/s  \(range {NUMBER}-{NUMBER}, ({NUMBER}) msgs/txn\)")
        assert number(row[1]) > 0, row[0]
        per_txn[variant] = number(row[2])
    assert per_txn["fsync per message"] == 1.0  # the baseline really commits once per message
    assert per_txn["group commit"] > 1.0  # and group commit really shares commits
    line(lines, rf" *ratio: {NUMBER}x group commit over one fsync per message")
    kept = line(lines, rf"kept: all ({NUMBER}) acknowledged messages were in their queues when opened again")
    assert number(kept[1]) > 0


def test_dlp_scan_measures_both_backends_on_planted_matches() -> None:
    require(hyperscan_available(), "hyperscan is not installed here")
    lines = run("bench_dlp_scan.py")
    for backend, corpus in (("hyperscan", "dense"), ("hyperscan", "sparse"), ("python re", "dense")):
        row = line(
            lines, rf"\| {backend} \| {corpus} \| {NUMBER} \| ({NUMBER}) \| {NUMBER} \| {NUMBER} \| ({NUMBER}) \|"
        )
        assert number(row[1]) > 0 and number(row[2]) > 0, row[0]  # MB/s, and hits per MB: the planted values
    line(lines, rf"hyperscan database alone \(no per-match Python\), dense corpus: {NUMBER} MB/s \(CPU\)")
    agree = line(lines, r"results identical on the (\d+) documents both backends scanned: (True|False)")
    assert int(agree[1]) > 0 and agree[2] == "True"
    kinds = ", ".join(f"{kind} ({NUMBER})" for kind in ("ssn", "card", "iban", "email", "phrase"))
    planted = line(lines, rf"planted values found in the dense corpus: {kinds}")
    assert all(number(found) > 0 for found in planted.groups()), planted[0]


def test_reload_delivers_every_message_across_applies_and_reloads() -> None:
    lines = run("bench_reload.py")
    sent = line(
        lines, rf"(\d+) messages accepted in 3 s from 4 sessions \({NUMBER} msg/s\), 0 refused; changes took {NUMBER} s"
    )
    accepted = int(sent[1])
    assert accepted > 0
    line(lines, rf"at the sink: {accepted} \(lost: 0\); the relay logged {accepted} deliveries")
    line(lines, rf"decision log: {accepted} messages, 0 with more than one config version; actions: permit {accepted}")
    line(lines, rf"applies:  3, latency p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms")
    line(
        lines,
        rf"reloads:  3, file rename -> new version visible p50 {NUMBER} ms, p99 {NUMBER} ms \(includes the 50 ms debounce\)",
    )
    line(lines, rf"swaps:    10, provision \+ switch inside the relay p50 {NUMBER} ms, p99 {NUMBER} ms")
    line(lines, rf"after the load, DLP unchanged: 2 applies, latency p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms")
    line(
        lines,
        rf"after the load, one DLP rule changed: 2 applies \(20 generated rules\), latency p50 {NUMBER} ms, p99 {NUMBER} ms, max {NUMBER} ms",
    )
    line(
        lines,
        rf"start to serving: first start {NUMBER} s, restart on the same data_dir {NUMBER} s, "
        rf"restart with a rule change's compile still queued {NUMBER} s "
        r"\(served by (a stored database and a delta|its own stored database)\)",
    )
    line(lines, r"correctness \(.*\): met")


def test_relay_races_stock_postfix_on_every_leg() -> None:
    tools = ("smtp-source", "smtp-sink", "postfix", "postconf")
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    require(all(shutil.which(t, path=path) for t in tools), "Debian's postfix is installed by scripts/test")
    lines = run("bench_relay.py")
    for leg in ("direct", "postfix", "sealrelay"):  # a failed, skipped or duplicating leg exits 1 (run() checks)
        line(lines, rf"round 1 {leg} +{NUMBER} msg/s  \( *{NUMBER} s; accepted in {NUMBER} s\)")
        row = line(lines, rf"{leg} +({NUMBER}) +{NUMBER} +{NUMBER} +{NUMBER}x +{NUMBER}x +(-|{NUMBER}) +-")
        assert number(row[1]) > 0, row[0]
        # the relay's CPU per message, read from /proc: for sealrelay legs only
        assert (row[2] == "-") is (leg != "sealrelay") and (leg != "sealrelay" or number(row[2]) > 0), row[0]
    # DLP's cost: the DLP leg's rate against the DLP-off leg's, in the same round
    dlp = line(lines, rf"sealrelay-dlp +({NUMBER}) +{NUMBER} +{NUMBER} +{NUMBER}x +{NUMBER}x +{NUMBER} +(-?{NUMBER})%")
    off = line(lines, rf"sealrelay +({NUMBER}) .*")
    assert float(dlp[2]) == pytest.approx((1 - number(dlp[1]) / number(off[1])) * 100, abs=0.06)


def test_relay_baseline_legs_run_the_other_code(tmp_path) -> None:
    """`--baseline DIR` runs DIR's code as the `@base` legs: a copy of this tree runs beside
    it, and a copy whose CLI is broken fails its own leg only, with its own error."""
    require(shutil.which("smtp-source", path=f"{os.environ.get('PATH', '')}:/usr/sbin"), "needs Postfix's tools")
    good, broken = tmp_path / "good", tmp_path / "broken"
    for copy in (good, broken):
        shutil.copytree(ROOT / "engine", copy / "engine", ignore=shutil.ignore_patterns("__pycache__"))
    (broken / "engine" / "cli" / "app.py").write_text("raise SystemExit('the baseline copy ran')\n")
    lines = run("bench_relay.py", "--legs", "sealrelay", "--baseline", str(good))
    for leg in ("sealrelay", "sealrelay@base"):
        row = line(lines, rf"{leg} +({NUMBER}) +{NUMBER} +{NUMBER} +- +- +({NUMBER}) +-")
        assert number(row[1]) > 0 and number(row[2]) > 0, row[0]
    lines = run("bench_relay.py", "--legs", "sealrelay", "--baseline", str(broken), status=1)
    line(lines, r"sealrelay@base: skipped, generated config does not validate:")
    assert "the baseline copy ran" in "\n".join(lines)
    line(lines, rf"sealrelay +({NUMBER}) +{NUMBER} +{NUMBER} +- +- +{NUMBER} +-")


def test_portal_serves_mailbox_and_search_pages_that_match_the_store() -> None:
    lines = run("bench_portal.py")  # every page is checked by the bench itself: rows, hits, subject
    line(
        lines,
        rf"corpus: 50 messages for alice@example\.com \(inbox 35, sent 10, trash 5; \d+ with attachments\), "
        rf"2 other mailboxes of 50; 150 messages, {NUMBER} MB, made in {NUMBER} s",
    )
    queries = line(lines, rf'queries: "\w+" is in (\d+) of 50 messages \({NUMBER}%\); "\w+ \w+" in (\d+) .*')
    one, two = int(queries[1]), int(queries[2])
    assert one > 0 and two > 0
    fill = line(
        lines,
        rf"fill sqlite: 150 messages in {NUMBER} s \(({NUMBER}) msg/s\), ({NUMBER}) index terms, {NUMBER} MB on disk",
    )
    assert number(fill[1]) > 0 and number(fill[2]) > 150  # every message indexed, many words each
    line(lines, r"HTTPS, 20 requests of each kind after 3 of warm-up; milliseconds:")
    labels = (
        r"GET /inbox \(page 1 of 1\)",
        r"GET /inbox\?page=0 \(page 1\)",
        rf"GET /search, 1 word \({one} hits\)",
        rf"GET /search, 2 words \({two} hits\)",
        r"GET /message/<id>",
    )
    for label in labels:
        row = line(lines, rf"\| {label} \| ({NUMBER}) \| ({NUMBER}) \| ({NUMBER}) \| {NUMBER}x \|")
        p50, p95, p99 = (number(value) for value in row.groups())
        assert 0 < p50 <= p95 <= p99, row[0]
        stored = line(lines, rf"\| {label} \| ({NUMBER}) \| ({NUMBER}) \|")
        assert number(stored[1]) <= number(stored[2]), stored[0]
    line(lines, r"target: inbox and search p95 < 50 ms on SQLite -> (met|NOT met) \(worst: .+, p95 [\d.]+ ms\)")


def test_envelope_seals_one_notice_per_recipient_in_each_case() -> None:
    lines = run("bench_envelope.py")
    line(lines, rf"message: {NUMBER} bytes; median of 5 runs; Python [\d.]+")
    for count in (1, 10):
        for slot in ("held key only", "recipient key \\+ held key"):
            plural = "s" if count > 1 else " "
            row = line(
                lines,
                rf" +{count} recipient{plural} \({slot} *\) sealing median +({NUMBER}) ms  p95 +{NUMBER} ms; "
                rf"through the loop median +({NUMBER}) ms  target < \d+ ms -> (met|NOT met)",
            )
            assert number(row[1]) > 0 and number(row[2]) > 0


def test_scheduling_measures_a_big_queue_a_tarpit_and_a_dead_next_hop() -> None:
    tools = ("smtp-source", "smtp-sink")
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    require(all(shutil.which(t, path=path) for t in tools), "Debian's postfix is installed by scripts/test")
    lines = run("bench_scheduling.py")
    line(lines, rf"scale: 2,000 queued \(deferred until tomorrow\), 1 KB bodies; filled in {NUMBER} s")
    line(lines, rf"idle CPU over 1 s \(% of one core\): empty queue {NUMBER}%, 2,000 queued {NUMBER}%")
    intake = line(
        lines,
        rf"intake \(smtp-source, 20 sessions, 100 x 1 KB, median of 1\): empty ({NUMBER}) msg/s, "
        rf"2,000 queued ({NUMBER}) msg/s \({NUMBER}x\)",
    )
    assert number(intake[1]) > 0 and number(intake[2]) > 0  # every message reached the sink, or the bench failed
    line(
        lines,
        rf"queue list, 2,000 queued: first page of 100 {NUMBER} ms, --state deferred {NUMBER} ms, "
        rf"page after 1,000 entries {NUMBER} ms \(in-process\); the command {NUMBER} s",
    )
    tarpit = line(
        lines,
        rf"tarpit: 20 queued to a tarpit, then 5 healthy: all 5 delivered ({NUMBER}) s after their submission "
        rf"began \(the tarpit held (\d+) connections\)",
    )
    assert int(tarpit[2]) == 5  # the destination's initial concurrency, not every worker
    dead = line(
        lines,
        rf"dead: 300 due to a next hop that closes every connection, watched {NUMBER} s \(retry interval 1s\): "
        rf"({NUMBER}) connection attempts \({NUMBER} in the first 5 s\), ({NUMBER}) attempts recorded, "
        rf"({NUMBER}) recipients never tried; relay CPU {NUMBER}%",
    )
    attempts, recorded, untried = (number(dead[i]) for i in (1, 2, 3))
    # dead after a few attempts, the rest waited without one (a probe cut short by the stop may go unrecorded)
    assert recorded <= attempts <= recorded + 1 and 0 < attempts < 20 and untried > 250
    line(lines, r"dead: attempts after the first 5 s at \(s\): .+")
