"""`plan --probe`: the peers a TLS change affects, met as the relay would meet them."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.relay.peers import Sink, free_port

ROOT = Path(__file__).resolve().parents[2]


def plan_probe_output(before: Path, after: Path) -> str:
    """What `sealrelay plan AFTER --against BEFORE --probe` prints (it must succeed)."""
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", str(after), "--against", str(before), "--probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def config(path: Path, routes: str) -> Path:
    path.write_text(
        textwrap.dedent("""\
        version: 1
        system:
          fqdn: relay.test.example
          listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
        """)
        + routes
    )
    return path


async def test_probe_reports_which_peers_would_fail(tmp_path: Path, ca) -> None:
    cert = ca.issue_cert("127.0.0.1")
    good_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(good_tls)
    with Sink(tls=None) as plain, Sink(tls=good_tls) as tls_sink:

        def routes(level: str) -> str:
            return (
                "routes:\n"
                f"  - {{name: legacy, recipients: {{domains: [old.example]}}, next_hop: {{host: 127.0.0.1, port: {plain.port}}}, tls: {level}}}\n"
                f"  - {{name: modern, recipients: any, next_hop: {{host: 127.0.0.1, port: {tls_sink.port}}}, tls: {level}}}\n"
            )

        before = config(tmp_path / "before.yaml", routes("opportunistic"))
        after = config(tmp_path / "after.yaml", routes("mandatory"))
        out = await asyncio.to_thread(plan_probe_output, before, after)
        assert (
            f"FAIL route legacy: 127.0.0.1[127.0.0.1]:{plain.port} at mandatory" in out
            and "peer offered no STARTTLS" in out
        )
        assert f"ok   route modern: 127.0.0.1[127.0.0.1]:{tls_sink.port} at mandatory" in out and "TLSv1." in out
        assert "1 peer(s) would not get mail" in out


def test_probe_with_nothing_affected_says_so(tmp_path: Path) -> None:
    a = config(
        tmp_path / "a.yaml",
        f"routes:\n  - {{name: r, recipients: any, next_hop: {{host: 127.0.0.1, port: {free_port()}}}}}\n",
    )
    b = tmp_path / "b.yaml"
    b.write_text(a.read_text().replace("fqdn: relay.test.example", "fqdn: other.test.example"))
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", str(b), "--against", str(a), "--probe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "Probe: no next hop is affected by a TLS change." in proc.stdout


def test_a_route_by_mx_is_probed_through_its_domains(tmp_path: Path, dns_server) -> None:
    """A changed route without a next hop delivers by each domain's MX: each domain it lists
    is probed, at every MX host (port 25, where no test server listens: which hosts, not how)."""
    dns_server.zone[("old.example", "MX")] = [(10, "mx1.old.example"), (20, "mx2.old.example")]
    dns_server.zone[("mx1.old.example", "A")] = ["127.0.0.1"]
    dns_server.zone[("mx2.old.example", "A")] = ["127.0.0.2"]

    def routes(level: str) -> str:
        return (
            f"  dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2s}}\n"
            "routes:\n"
            f"  - {{name: legacy, recipients: {{domains: [old.example]}}, tls: {level}}}\n"
        )

    before = config(tmp_path / "before.yaml", routes("opportunistic"))
    after = config(tmp_path / "after.yaml", routes("mandatory"))
    out = plan_probe_output(before, after)
    lines = out[out.index("Probe (") :].rstrip("\n").split("\n")
    assert [line[7:].split(" at ")[0] for line in lines[1:3]] == [
        "old.example: mx1.old.example[127.0.0.1]:25",
        "old.example: mx2.old.example[127.0.0.2]:25",
    ]
    assert all(" at mandatory (>= TLSv1.2, >= 128-bit): " in line for line in lines[1:3])
