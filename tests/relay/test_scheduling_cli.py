"""What an operator sees of the scheduler: `sealrelay queue destinations`, `/v1/status`, the
plan's warning about queued mail and a dead destination, and `queue list` a page at a time.

The relay runs in-process with its admin API (as `serve` wires it); the commands run as
real processes against it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from engine.admin.api import make_app, serve_admin, stop_admin
from engine.admin.audit import Audit
from engine.admin.token import ensure_token
from engine.relay.runtime.control import RelayControl
from tests.relay.peers import eventually, free_port
from tests.relay.slowpeers import Refuser, Tarpit
from tests.relay.test_scheduling import delivery, enqueue, routes

ROOT = Path(__file__).resolve().parents[2]


async def sealrelay(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "engine.cli.app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_operator_sees_a_dead_destination_and_the_plan_warns_before_routing_mail_to_it(
    write_config, start_relay, tmp_path
) -> None:
    admin = free_port()
    async with Refuser() as refuser, Tarpit() as tarpit:
        text = routes(down=refuser.port, slow=tarpit.port)
        config = write_config(
            text,
            system=f"  admin: {{address: 127.0.0.1, port: {admin}}}\n",
            # retries (and so the dead destination's probe) far apart: the failure count the
            # commands show cannot move while they start (a probe 1-2 s later made it 2)
            delivery=delivery("  dead_after: 1\n")
            .replace("retry_interval: 1s", "retry_interval: 30s")
            .replace("max_retry_interval: 2s", "max_retry_interval: 60s"),
        )
        relay = await start_relay(config)
        control = RelayControl(relay)
        server, task = await serve_admin(
            make_app(control, ensure_token(relay.live.data_dir), Audit.in_dir(relay.live.data_dir)), "127.0.0.1", admin
        )
        try:
            down = f"[127.0.0.1]:{refuser.port}"
            await enqueue(relay, "down.example", 1)
            await enqueue(relay, "slow.example", 100)  # held by the tarpit: queued, not dead

            async def dead():
                return relay.deliverer.destinations.dead(down)

            await eventually(dead, what="the destination to die")

            shown = await sealrelay("queue", "destinations", "--config", str(config))
            assert shown.returncode == 0, shown.stderr
            lines = shown.stdout.splitlines()
            assert lines[0].split() == ["destination", "state", "conc", "busy", "wait", "fails", "dead", "until"]
            assert lines[1].split()[:6] == [down, "dead", "5/20", "0", "0", "1"]  # dead ones first
            assert lines[2].strip().startswith("last failure: ") and "connection failed" in lines[2]
            assert lines[3].split()[:5] == [f"[127.0.0.1]:{tarpit.port}", "alive", "5/20", "5", "95"]
            as_json = json.loads(
                (await sealrelay("queue", "destinations", "--config", str(config), "--format", "json")).stdout
            )
            assert [(r["name"], r["state"]) for r in as_json] == [
                (down, "dead"),
                (f"[127.0.0.1]:{tarpit.port}", "alive"),
            ]

            # a change that sends the 100 queued for slow.example to the dead destination
            desired = tmp_path / "desired.yaml"
            desired.write_text(config.read_text().replace(f"port: {tarpit.port}}}", f"port: {refuser.port}}}"))
            planned = await sealrelay("plan", str(desired), "--relay", f"http://127.0.0.1:{admin}")
            assert planned.returncode == 0, planned.stderr
            warning = next(line for line in planned.stdout.splitlines() if line.startswith("Warning: "))
            assert warning.startswith(f"Warning: 100 queued recipients (slow.example) would be routed to {down}, ")
            assert "which is dead since " in warning and warning.endswith("they would wait until it answers")
        finally:
            await stop_admin(server, task)


async def test_queue_list_pages(write_config, start_relay) -> None:
    async with Tarpit() as tarpit:
        config = write_config(routes(slow=tarpit.port), delivery=delivery())
        relay = await start_relay(config)
        for n in range(3):  # one at a time: each its own creation time
            await relay.queue.enqueue(
                "alice@example.com", [f"u{n}@slow.example"], b"x\r\n", meta={}, now=1_900_000_000.0 + n
            )
        first = await sealrelay("queue", "list", "--config", str(config), "--limit", "2")
        assert first.returncode == 0, first.stderr
        ids = [line.split()[0] for line in first.stdout.splitlines() if not line.startswith(" ")]
        assert len(ids) == 2
        more = first.stderr.strip().splitlines()[-1]
        assert more == f"more: sealrelay queue list --after {ids[-1]}"
        rest = await sealrelay("queue", "list", "--config", str(config), "--limit", "2", "--after", ids[-1])
        [third] = [line.split()[0] for line in rest.stdout.splitlines() if not line.startswith(" ")]
        assert third > ids[-1] and "more:" not in rest.stderr
        empty = await sealrelay("queue", "list", "--config", str(config), "--after", third)
        assert empty.returncode == 0 and empty.stdout.strip() == "no more entries"
