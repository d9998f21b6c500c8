"""`sealrelay queue list | show | retry | delete` beside a running relay, as an operator uses them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from tests.relay.peers import Sink, eventually, free_port
from tests.relay.test_edge import route_to
from tests.relay.test_relay_flow import message, send

ROOT = Path(__file__).resolve().parents[2]


async def cli(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "engine.cli.app", "queue", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_operator_lists_shows_retries_and_deletes(write_config, start_relay) -> None:
    port = free_port()  # nothing listens yet: messages wait in the queue
    slow = "delivery:\n  retry_interval: 1h\n  max_retry_interval: 2h\n  max_queue_lifetime: 1d\n"
    config = write_config(route_to(port), delivery=slow)  # only the operator's retry brings it back
    relay = await start_relay(config)
    first = (await send(relay, message()))[1].split()[-1]
    second = (await send(relay, message(to="carol@partner.example")))[1].split()[-1]

    async def both_deferred():
        states = [(await relay.queue.show(q)).recipients[0].state for q in (first, second)]
        return states == ["deferred", "deferred"]

    await eventually(both_deferred, what="both messages deferred")

    listed = await cli("list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    assert first in listed.stdout and second in listed.stdout and "1 deferred" in listed.stdout
    assert "connection refused" in listed.stdout

    shown = await cli("show", first, "--config", str(config), "--format", "json")
    detail = json.loads(shown.stdout)
    assert detail["id"] == first and detail["recipients"][0]["address"] == "bob@partner.example"
    assert detail["recipients"][0]["state"] == "deferred" and detail["recipients"][0]["attempts"] >= 1

    deleted = await cli("delete", second, "--config", str(config))
    assert deleted.returncode == 0 and await relay.queue.count() == 1
    missing = await cli("show", second, "--config", str(config))
    assert missing.returncode == 1 and "not in the queue" in missing.stderr

    with Sink(port=port) as sink:  # the next hop is back: retry now rather than at the schedule
        retried = await cli("retry", first, "--config", str(config))
        assert retried.returncode == 0 and "due now" in retried.stdout
        relay.deliverer.kick()
        [got] = await sink.received(1)
        assert got.recipients == ["bob@partner.example"]
