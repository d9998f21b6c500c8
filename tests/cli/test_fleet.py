"""A fleet from one repo: relays that run the same config share one saved plan
(`plan --out` over several `--relay`), and relays that do not are told so.

Two relays on one host, both from the same committed config: `--listen` overrides (the
processes' own, not the config's) keep their ports apart without changing what they run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engine.relay.runtime.listen import parse
from engine.relay.runtime.service import Service
from tests.cli.test_apply import TOKEN, cli, relay_config
from tests.relay.peers import free_port


@pytest.fixture
async def fleet(tmp_path: Path):
    """Two relays running the same config (each its own data_dir); stopped afterwards."""
    shared = relay_config(tmp_path / "repo")
    started: list[Service] = []
    for name in ("relay-0", "relay-1"):
        (tmp_path / name).mkdir()
        shutil.copytree(tmp_path / "repo" / "var", tmp_path / name / "var")  # the fleet's one admin token
        shutil.copy(shared, tmp_path / name / "relay.yaml")
        where = [f"mx=127.0.0.1:{free_port()}", f"admin=127.0.0.1:{free_port()}", f"metrics=127.0.0.1:{free_port()}"]
        service = Service(tmp_path / name / "relay.yaml", overrides=parse(where, environ={}))
        await service.start()
        started.append(service)
    yield shared, [f"http://127.0.0.1:{s.admin_port}" for s in started], started
    for service in started:
        await service.stop()


async def test_one_saved_plan_for_relays_that_run_the_same_config(fleet, tmp_path: Path) -> None:
    shared, urls, services = fleet
    desired = shared.parent / "desired.yaml"
    desired.write_text(shared.read_text().replace("retry_interval: 15m", "retry_interval: 5m"))
    saved = tmp_path / "plan.json"
    planned = await cli("plan", str(desired), "--relay", urls[0], "--relay", urls[1], "--out", str(saved))
    assert planned.returncode == 0, planned.stderr
    assert f"apply it with `sealrelay apply {saved} --relay {urls[0]} --relay {urls[1]}`" in planned.stderr
    plan = json.loads(saved.read_text())["plan"]
    assert plan["base_version"] is None and plan["base_label"] == f"the relays at {urls[0]}, {urls[1]}"

    applied = await cli("apply", str(saved), "--relay", urls[0], "--relay", urls[1], "--auto-approve")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert [float(s.relay.live.config.delivery.retry_interval) for s in services] == [300.0, 300.0]


async def test_relays_that_run_different_configs_get_no_shared_plan(fleet, tmp_path: Path) -> None:
    shared, urls, _ = fleet
    moved = shared.parent / "moved.yaml"
    moved.write_text(shared.read_text().replace("retry_interval: 15m", "retry_interval: 10m"))
    first = await cli("apply", str(moved), "--relay", urls[0], "--auto-approve")  # only relay-0 moves on
    assert first.returncode == 0, first.stderr
    saved = tmp_path / "plan.json"
    planned = await cli("plan", str(shared), "--relay", urls[0], "--relay", urls[1], "--out", str(saved))
    assert planned.returncode == 1
    assert "--out: these relays run different configs" in planned.stderr and not saved.exists()
    assert TOKEN not in planned.stdout + planned.stderr
