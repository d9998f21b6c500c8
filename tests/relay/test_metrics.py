"""/metrics of a running `serve`: the queue gauges, config changes and the config version.

Read as Prometheus reads them: over HTTP, parsed with prometheus_client's own parser, each
sample by its name and labels. The registry is one per process, so counters are compared
with a scrape taken before the change.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.admin.client import Invalid
from engine.admin.contract import ApplyRequest
from engine.relay.runtime.service import Service
from tests.relay.peers import Sink, eventually, free_port, submit
from tests.relay.test_edge import route_to
from tests.relay.test_reload import admin_line, client, rewrite, send, service_for  # noqa: F401  (a fixture)

Samples = dict[tuple[str, frozenset], float]


async def scrape(service: Service) -> Samples:
    """Every sample of the relay's /metrics, keyed by (name, labels)."""
    port = service.relay.live.config.system.metrics.port
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def changes(samples: Samples, source: str, result: str) -> float:
    """sealrelay_config_changes_total for (source, result); 0 before the first such change."""
    return value(samples, "sealrelay_config_changes_total", source=source, result=result) or 0.0


async def test_messages_and_deliveries_are_counted(write_config, service_for) -> None:  # noqa: F811
    with Sink() as sink:
        service = await service_for(write_config(route_to(sink.port), system=admin_line()))
        before = await scrape(service)
        await send(service)
        await sink.received(1)
        delivered = {"name": "sealrelay_deliveries_total", "result": "delivered", "tls": "no"}

        async def counted():
            samples = await scrape(service)
            return samples if (value(samples, **delivered) or 0) > (value(before, **delivered) or 0) else None

        after = await eventually(counted, what="the delivery to be counted")
        assert value(after, **delivered) == (value(before, **delivered) or 0) + 1
        received = {"name": "sealrelay_messages_received_total", "direction": "outbound", "action": "permit"}
        assert value(after, **received) == (value(before, **received) or 0) + 1
        assert value(after, "sealrelay_config_version") == 1.0

        # the self-signed certificate is valid 825 days: its notAfter as a unix timestamp, there from the start
        expiry = value(before, "sealrelay_certificate_expiry_timestamp_seconds")
        assert expiry and 824 * 86400 < expiry - time.time() <= 825 * 86400


async def test_the_endpoint_follows_prometheus_conventions(write_config, service_for) -> None:  # noqa: F811
    service = await service_for(write_config(system=admin_line()))
    port = service.relay.live.config.system.metrics.port
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        page = await http.get(f"http://127.0.0.1:{port}/metrics")
        other = await http.get(f"http://127.0.0.1:{port}/")
        posted = await http.post(f"http://127.0.0.1:{port}/metrics")
    assert page.http_version == "HTTP/1.1" and page.headers["content-type"].startswith("text/plain; version=")
    assert (other.status_code, posted.status_code) == (404, 405)  # only GET /metrics is answered
    families = {family.name: family for family in text_string_to_metric_families(page.text)}
    assert not [name for name in families if name.endswith("_created")]
    assert not [s.name for f in families.values() for s in f.samples if s.name.endswith("_created")]
    [build] = families["sealrelay_build_info"].samples
    assert build.value == 1 and build.labels["config_format"] == "1" and build.labels["version"]
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds", "python_info"):
        assert name in families, name
    assert "sealrelay_certificate_days_left" not in families  # a point in time, not a count of days


async def test_queue_gauges_count_the_mail_waiting_in_the_queue(write_config, service_for) -> None:  # noqa: F811
    down = free_port()  # nothing listens there: every attempt is deferred and the mail stays queued
    service = await service_for(write_config(route_to(down), system=admin_line()))
    port = service.relay.ports()["mx"]
    ids = []
    for recipients in (
        ["b@partner.example"],
        ["c@partner.example", "d@partner.example"],
        ["e@x.example", "f@x.example"],
    ):
        text = f"From: alice@example.com\r\nTo: {', '.join(recipients)}\r\nSubject: waits\r\n\r\nhi\r\n"
        ids.append((await submit(port, text, "alice@example.com", recipients)).split()[-1])

    async def gauges(entries: int, deferred: int):
        samples = await scrape(service)
        now = (
            value(samples, "sealrelay_queue_entries"),
            value(samples, "sealrelay_queue_recipients", state="pending"),
            value(samples, "sealrelay_queue_recipients", state="deferred"),
        )
        return samples if now == (entries, 0.0, deferred) else None

    async def three_entries_five_recipients():
        return await gauges(3, 5)

    await eventually(three_entries_five_recipients, 15, "the gauges to read 3 entries, 5 deferred recipients")
    await service.relay.queue.delete(ids[1])

    async def two_entries_three_recipients():
        return await gauges(2, 3)

    await eventually(two_entries_three_recipients, 15, "the gauges to follow a deleted entry")


async def test_applies_and_reloads_are_counted_and_set_the_config_version(write_config, service_for) -> None:  # noqa: F811
    with Sink() as sink:
        config = write_config(route_to(sink.port), system=admin_line())
        service = await service_for(config, watch=True)
        before = await scrape(service)
        assert value(before, "sealrelay_config_version") == 1.0

        api = client(service)
        running = await asyncio.to_thread(api.fetch_running)
        desired = running.config | {"delivery": running.config["delivery"] | {"retry_interval": "2s"}}
        result = await asyncio.to_thread(api.apply, ApplyRequest(desired, base_version=1))
        assert result.ok and result.version == 2
        applied = await scrape(service)
        assert value(applied, "sealrelay_config_version") == 2.0
        assert changes(applied, "api", "applied") == changes(before, "api", "applied") + 1
        broken = desired | {"delivery": {"retry_interval": "soon"}}
        with pytest.raises(Invalid):
            await asyncio.to_thread(api.apply, ApplyRequest(broken, base_version=2))
        assert value(await scrape(service), "sealrelay_config_version") == 2.0  # refused: version unchanged

        rewrite(config, "max_retry_interval: 2s", "max_retry_interval: 4s")

        async def reloaded():
            return service.relay.live.version == 3

        await eventually(reloaded, what="the file edit to be applied")
        edited = await scrape(service)
        assert value(edited, "sealrelay_config_version") == 3.0
        assert changes(edited, "file-watch", "applied") == changes(before, "file-watch", "applied") + 1

        rewrite(config, "tls: none", "tls: sometimes")  # invalid: refused, version 3 keeps serving

        async def refused():
            samples = await scrape(service)
            return (
                samples
                if changes(samples, "file-watch", "refused") > changes(before, "file-watch", "refused")
                else None
            )

        last = await eventually(refused, what="the invalid edit to be counted")
        assert changes(last, "file-watch", "refused") == changes(before, "file-watch", "refused") + 1
        assert value(last, "sealrelay_config_version") == 3.0
        assert changes(last, "api", "applied") == changes(before, "api", "applied") + 1
        assert changes(last, "file-watch", "applied") == changes(before, "file-watch", "applied") + 1
