"""`sealrelay plan --relay` and `sealrelay apply` against real relays on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.relay.runtime.service import Service
from tests.relay.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-shared-by-the-nodes-0123456789"
LISTEN_PORT = free_port()


def relay_config(directory: Path, *, retry: str = "15m") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "var").mkdir(exist_ok=True)
    (directory / "var" / "admin.token").write_text(TOKEN + "\n")
    os.chmod(directory / "var" / "admin.token", 0o600)
    path = directory / "relay.yaml"
    path.write_text(
        textwrap.dedent(f"""\
        version: 1
        system:
          fqdn: relay.test.example
          internal_domains: [example.com]
          listeners: [{{name: mx, address: 127.0.0.1, port: {LISTEN_PORT}, reuse_port: true}}]  # nodes share a host here
          admin: {{address: 127.0.0.1, port: {free_port()}}}
          metrics: {{address: 127.0.0.1, port: {free_port()}}}
          data_dir: ./var
        ip_groups:
          internal_servers: [127.0.0.0/8]
        routes:
          - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: 9}}, tls: mandatory}}
        delivery:
          retry_interval: {retry}
        """)
    )
    return path


@pytest.fixture
async def relays(tmp_path: Path):
    started: list[Service] = []

    async def start(name: str, watch: bool = False, **kw) -> Service:
        service = Service(relay_config(tmp_path / name, **kw), watch=watch)
        await service.start()
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


def url(service: Service) -> str:
    return f"http://127.0.0.1:{service.admin_port}"


async def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "SEALRELAY_TOKEN": TOKEN}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "engine.cli.app", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def desired(tmp_path: Path, text_change: tuple[str, str]) -> Path:
    path = relay_config(tmp_path / "desired")
    path.write_text(path.read_text().replace(*text_change))
    return path


async def test_rollout_to_two_relays(relays, tmp_path: Path) -> None:
    a, b = await relays("a"), await relays("b")
    want = desired(tmp_path, ("retry_interval: 15m", "retry_interval: 20m"))
    proc = await cli("apply", str(want), "--relay", url(a), "--relay", url(b), "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{url(a)}: applied (version 1 -> 2)" in proc.stdout and f"{url(b)}: applied (version 1 -> 2)" in proc.stdout
    assert a.relay.live.config.delivery.retry_interval == 1200 == b.relay.live.config.delivery.retry_interval
    again = await cli("apply", str(want), "--relay", url(a), "--relay", url(b), "--auto-approve")
    assert again.returncode == 0 and again.stdout.count("unchanged (version 2 -> 2)") == 2  # idempotent


async def test_rollout_stops_at_the_first_failing_node(relays, tmp_path: Path) -> None:
    a, c = await relays("a"), await relays("c")
    down = f"http://127.0.0.1:{free_port()}"
    want = desired(tmp_path, ("retry_interval: 15m", "retry_interval: 20m"))
    proc = await cli("apply", str(want), "--relay", url(a), "--relay", down, "--relay", url(c), "--auto-approve")
    assert proc.returncode == 69  # EX_UNAVAILABLE: the node where it stopped could not be reached
    assert f"{url(a)}: applied (version 1 -> 2)" in proc.stdout
    assert f"{down}: failed" in proc.stdout and f"{url(c)}: not reached (version None)" in proc.stdout
    assert c.relay.live.version == 1


async def test_loosening_needs_the_flag_and_a_reason(relays, tmp_path: Path) -> None:
    a = await relays("a")
    weaker = desired(tmp_path, ("tls: mandatory", "tls: opportunistic"))
    refused = await cli("apply", str(weaker), "--relay", url(a), "--auto-approve")
    assert refused.returncode == 1 and "loosens protection" in refused.stdout and a.relay.live.version == 1
    assert "tls lowered" in refused.stdout or "lowered" in refused.stdout
    no_reason = await cli("apply", str(weaker), "--relay", url(a), "--auto-approve", "--allow-downgrade")
    assert no_reason.returncode == 64 and "needs --reason" in no_reason.stderr  # EX_USAGE
    done = await cli(
        "apply",
        str(weaker),
        "--relay",
        url(a),
        "--auto-approve",
        "--allow-downgrade",
        "--reason",
        "partner has no TLS, INC-7",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    audit = (a.relay.live.data_dir / "audit.log").read_text().splitlines()
    last = json.loads(audit[-1])
    assert (
        last["reason"] == "partner has no TLS, INC-7"
        and last["allow_downgrade"] is True
        and TOKEN not in "".join(audit)
    )


async def test_saved_plan_is_refused_when_stale_or_edited(relays, tmp_path: Path) -> None:
    a = await relays("a")
    want = desired(tmp_path, ("retry_interval: 15m", "retry_interval: 20m"))
    plan_file = tmp_path / "plan.json"
    planned = await cli("plan", str(want), "--relay", url(a), "--out", str(plan_file), "--detailed-exitcode")
    assert planned.returncode == 2, planned.stdout + planned.stderr
    edited = tmp_path / "edited.json"
    edited.write_text(plan_file.read_text().replace('"20m"', '"25m"'))
    tampered = await cli("apply", str(edited), "--relay", url(a), "--auto-approve")
    assert tampered.returncode == 65 and "hash" in tampered.stderr  # EX_DATAERR
    other = desired(tmp_path / "x", ("retry_interval: 15m", "retry_interval: 30m"))
    assert (await cli("apply", str(other), "--relay", url(a), "--auto-approve")).returncode == 0  # the relay moves on
    stale = await cli("apply", str(plan_file), "--relay", url(a), "--auto-approve")
    assert stale.returncode == 75 and "stale plan" in stale.stdout  # EX_TEMPFAIL: plan again
    fresh = await cli("plan", str(want), "--relay", url(a), "--out", str(plan_file))
    assert fresh.returncode == 0
    ok = await cli("apply", str(plan_file), "--relay", url(a), "--auto-approve")
    assert ok.returncode == 0 and a.relay.live.config.delivery.retry_interval == 1200


async def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_plan_reports_drift_after_a_hand_edit(relays, tmp_path: Path) -> None:
    a = await relays("a", watch=True)
    want = tmp_path / "desired.yaml"  # the relay's own file with one change: the same ports, the same data_dir
    want.write_text(a.path.read_text().replace("retry_interval: 15m", "retry_interval: 20m"))
    (tmp_path / "var").mkdir()
    assert (await cli("apply", str(want), "--relay", url(a), "--auto-approve")).returncode == 0
    clean = json.loads((await cli("plan", str(want), "--relay", url(a), "--format", "json")).stdout)
    assert clean["relays"][0]["plan"]["drift"] == [] if "relays" in clean else clean["drift"] == []
    config = a.path
    config.write_text(config.read_text().replace("retry_interval: 15m", "retry_interval: 45m"))  # edited on the host
    await wait_for(lambda: a.relay.live.config.delivery.retry_interval == 2700, "the file reload")
    proc = await cli("plan", str(want), "--relay", url(a), "--format", "json")
    plan = json.loads(proc.stdout)
    plan = plan["relays"][0]["plan"] if "relays" in plan else plan
    assert [(c["address"], c["before"], c["after"]) for c in plan["drift"]] == [
        ("delivery.retry_interval", "20m", "45m")
    ], plan["drift"]
    text = await cli("plan", str(want), "--relay", url(a))
    drift = text.stdout.split("Drift: the running config is not what the last apply set:", 1)
    assert len(drift) == 2, text.stdout
    section = [line.strip() for line in drift[1].split("Changes (", 1)[0].splitlines() if line.strip()]
    assert section == ["# delivery", '~ delivery.retry_interval: "20m" -> "45m"'], text.stdout
    markdown = await cli("plan", str(want), "--relay", url(a), "--format", "markdown")
    assert "#### Drift: the running config is not what the last apply set" in markdown.stdout
    running = json.loads(await asyncio.to_thread(_get, url(a) + "/v1/config"))
    assert running["source"] == "file-watch" and running["who"] == "file-watch"
    assert running["last_applied"]["delivery"]["retry_interval"] == "20m"
    assert running["applied"]["source"] == "api" and running["applied"]["version"] == 2


def _get(address: str) -> str:
    import urllib.request

    request = urllib.request.Request(address, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


async def test_plan_against_several_relays(relays, tmp_path: Path) -> None:
    a, b = await relays("a"), await relays("b")
    want = desired(tmp_path, ("retry_interval: 15m", "retry_interval: 20m"))
    assert (await cli("apply", str(want), "--relay", url(a), "--auto-approve")).returncode == 0
    proc = await cli("plan", str(want), "--relay", url(a), "--relay", url(b), "--detailed-exitcode")
    assert proc.returncode == 2  # b still has a change to make
    assert proc.stdout.count("Plan:") == 2
    assert f"No changes: {want} matches the relay at {url(a)}" in proc.stdout
    assert "~ delivery.retry_interval" in proc.stdout.split(f"the relay at {url(b)}", 1)[1]
