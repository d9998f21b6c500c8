"""The service's components: listed in one place, started and stopped in order, told of swaps;
the metrics endpoint served by the admin API's HTTP stack, answering /metrics only."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.relay.runtime.components import components_for
from engine.relay.runtime.service import Service
from tests.relay.peers import free_port
from tests.relay.test_restart import config_text


def test_components_are_listed_in_one_place() -> None:
    names = [c.name for c in components_for(admin=False, watch=False)]
    assert names == ["queue-stats", "log-flusher", "portal", "tls-reports", "mta-sts-refresh"]
    everything = components_for(admin=True, watch=True)
    assert [(c.name, c.plane) for c in everything] == [
        ("queue-stats", "relay"),
        ("log-flusher", "relay"),
        ("portal", "control"),
        ("tls-reports", "relay"),
        ("mta-sts-refresh", "relay"),
        ("admin-api", "control"),
        ("metrics", "control"),
        ("watcher", "control"),
    ]


def fetch(url: str, method: str = "GET") -> tuple[int, str, str]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), ""


def closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
async def service(tmp_path: Path):
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "relay.yaml"
    path.write_text(config_text("mandatory", ports=(free_port(), free_port(), free_port())))
    service = Service(path, watch=True)
    await service.start()
    yield service
    await service.stop()


async def test_metrics_endpoint_answers_metrics_only(service: Service) -> None:
    base = f"http://127.0.0.1:{service.relay.live.config.system.metrics.port}"
    status, ctype, body = await asyncio.to_thread(fetch, base + "/metrics")
    assert status == 200 and ctype.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    [version] = families["sealrelay_config_version"].samples
    assert version.value == service.relay.live.version
    assert (await asyncio.to_thread(fetch, base + "/"))[0] == 404
    assert (await asyncio.to_thread(fetch, base + "/anything"))[0] == 404
    assert (await asyncio.to_thread(fetch, base + "/metrics", "POST"))[0] == 405


async def test_a_swap_reaches_the_components(service: Service) -> None:
    before = service.relay.live.version
    path = service.path
    path.write_text(path.read_text().replace("retry_interval: 15m", "retry_interval: 20m"))
    assert await service.reload() is None
    assert service.relay.live.version == before + 1
    port = service.relay.live.config.system.metrics.port
    _, _, body = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port}/metrics")
    [version] = {f.name: f for f in text_string_to_metric_families(body)}["sealrelay_config_version"].samples
    assert version.value == before + 1  # set by the metrics component's on_swap


async def test_stop_closes_every_endpoint(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    path = tmp_path / "config" / "relay.yaml"
    metrics = free_port()
    path.write_text(config_text("mandatory", ports=(free_port(), free_port(), metrics)))
    service = Service(path)
    await service.start()
    admin = service.admin_port
    assert not closed(admin) and not closed(metrics)
    await service.stop()
    assert closed(admin) and closed(metrics)


async def test_stop_while_a_failed_control_start_closes_its_loop(tmp_path) -> None:
    """A control component that failed to start (the admin port in use) ends the control
    thread's loop on its own; `stop` may come while that thread still runs and its loop is
    closed already. Before, `call_soon_threadsafe` raised there ("Event loop is closed") and
    `serve` exited 70, an internal error, instead of 71 with the bind error's one line."""
    service = Service(tmp_path / "relay.yaml")
    closed = asyncio.new_event_loop()
    closed.close()
    leave = threading.Event()
    thread = threading.Thread(target=leave.wait, args=(10,), name="control")
    thread.start()
    service._control_thread, service._control_loop = thread, closed  # noqa: SLF001 - the state the race leaves
    service._control_stop = asyncio.Event()  # noqa: SLF001
    stopping = asyncio.create_task(service.stop())
    await asyncio.sleep(0)  # one step: stop() has asked the loop and now joins the thread
    leave.set()  # the thread ends, as the real one does once its loop is closed
    await stopping
    assert not thread.is_alive()
