"""The admin API over HTTP: authentication, reading, planning, limits and errors."""

from __future__ import annotations

import asyncio
import json

import pytest

from engine.admin.api import stop_admin
from engine.admin.client import Invalid, RelayClient, Unauthorized, Unreachable, fetch_running
from engine.admin.openapi import openapi_document
from tests.admin.conftest import Served, start
from tests.admin.fake_control import FakeControl, base_config, config_hash

PROTECTED = [
    (method.upper(), path)
    for path, item in openapi_document()["paths"].items()
    for method in item
    if path != "/healthz"
]


async def test_healthz_needs_no_token(relay: Served) -> None:
    async with relay.raw() as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_no_token_is_401_with_www_authenticate(relay: Served, method: str, path: str) -> None:
    async with relay.raw() as http:
        response = await http.request(method, path, json={} if method == "POST" else None)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"
    assert relay.fake.applies == []


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_wrong_token_is_403(relay: Served, method: str, path: str) -> None:
    async with relay.raw() as http:
        response = await http.request(
            method, path, headers={"Authorization": "Bearer not-the-token"}, json={} if method == "POST" else None
        )
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": response.json()["detail"]}
    assert relay.fake.applies == []


async def test_other_schemes_are_401(relay: Served) -> None:
    async with relay.raw() as http:
        response = await http.get("/v1/config", headers={"Authorization": f"Basic {relay.token}"})
    assert response.status_code == 401


async def test_client_raises_unauthorized_for_missing_and_wrong_tokens(relay: Served) -> None:
    with relay.client(token="wrong") as client:
        with pytest.raises(Unauthorized) as wrong:
            await asyncio.to_thread(client.fetch_running)
    assert wrong.value.status == 403
    with relay.client(token="") as client:
        with pytest.raises(Unauthorized) as missing:
            await asyncio.to_thread(client.status)
    assert missing.value.status == 401


async def test_get_config_with_etag(relay: Served) -> None:
    running = await asyncio.to_thread(fetch_running, relay.url, relay.token)
    assert running.version == 1
    assert running.config == base_config()
    assert running.hash == config_hash(base_config())
    assert running.source == "file:relay.yaml"
    headers = {"Authorization": f"Bearer {relay.token}"}
    async with relay.raw() as http:
        response = await http.get("/v1/config", headers=headers)
        assert response.headers["etag"] == f'"{running.hash}"'
        cached = await http.get("/v1/config", headers={**headers, "If-None-Match": response.headers["etag"]})
    assert cached.status_code == 304


async def test_status(relay: Served) -> None:
    with relay.client() as client:
        status = await asyncio.to_thread(client.status)
    assert status.version == 1
    assert status.last_reload is not None and status.last_reload.ok
    assert status.listeners[0]["name"] == "mx"
    assert status.uptime_s >= 0


async def test_plan_returns_the_controls_plan(relay: Served) -> None:
    desired = base_config()
    desired["domain_groups"] = {"partners": ["partner.example"]}
    with relay.client() as client:
        result = await asyncio.to_thread(client.plan, desired)
    assert result.ok and result.base_version == 1
    assert result.summary.add == 1
    assert result.plan["changes"] == [{"action": "+", "path": "domain_groups"}]


async def test_plan_of_an_invalid_config_is_422_with_diagnostics(relay: Served) -> None:
    desired = base_config()
    desired["system"]["listeners"][0]["port"] = 99999
    with relay.client() as client:
        with pytest.raises(Invalid) as caught:
            await asyncio.to_thread(client.plan, desired)
    assert caught.value.status == 422
    assert [d["path"] for d in caught.value.diagnostics] == ["system.listeners[0].port"]


async def test_malformed_bodies_are_400(relay: Served) -> None:
    headers = {"Authorization": f"Bearer {relay.token}", "Content-Type": "application/json"}
    async with relay.raw() as http:
        not_json = await http.post("/v1/apply", headers=headers, content=b"{nope")
        wrong_shape = await http.post("/v1/apply", headers=headers, json={"config": {}, "base_version": "1"})
        extra = await http.post("/v1/apply", headers=headers, json={"config": {}, "base_version": 1, "force": True})
        plan = await http.post("/v1/plan", headers=headers, json={"desired": {}})
    for response in (not_json, wrong_shape, extra, plan):
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "bad_request"
    assert "base_version" in wrong_shape.json()["detail"]
    assert "force" in extra.json()["detail"]


async def test_unknown_route_and_method_are_json_errors(relay: Served) -> None:
    headers = {"Authorization": f"Bearer {relay.token}"}
    async with relay.raw() as http:
        missing = await http.get("/v1/nothing", headers=headers)
        wrong_method = await http.delete("/v1/config", headers=headers)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"] == "method_not_allowed"


async def test_body_over_the_limit_is_413(fake, data_dir) -> None:
    served = await start(fake, data_dir, max_body=64 * 1024)
    try:
        headers = {"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"}
        big = json.dumps({"config": {"pad": "x" * 100_000}, "base_version": 1}).encode()

        async def chunks():
            for start_at in range(0, len(big), 16_384):
                yield big[start_at : start_at + 16_384]

        async with served.raw() as http:
            declared = await http.post("/v1/apply", headers=headers, content=big)
            streamed = await http.post("/v1/plan", headers=headers, content=chunks())  # no Content-Length
            small = await http.post("/v1/plan", headers=headers, json={"config": base_config()})
        for response in (declared, streamed):
            assert response.status_code == 413, response.text
            assert response.json()["error"] == "too_large"
        assert small.status_code == 200
        assert fake.applies == []
    finally:
        await stop_admin(served.server, served.task)


async def test_default_limit_is_ten_megabytes(relay: Served) -> None:
    headers = {"Authorization": f"Bearer {relay.token}", "Content-Type": "application/json"}
    body = b'{"config": {"pad": "' + b"x" * (10 * 1024 * 1024) + b'"}, "base_version": 1}'
    async with relay.raw() as http:
        response = await http.post("/v1/apply", headers=headers, content=body)
    assert response.status_code == 413


async def test_openapi_is_served(relay: Served) -> None:
    async with relay.raw() as http:
        response = await http.get("/openapi.json", headers={"Authorization": f"Bearer {relay.token}"})
    assert response.status_code == 200
    assert response.json() == openapi_document()


async def test_a_relay_that_is_not_there_is_unreachable(relay: Served) -> None:
    port = relay.server.config.port
    await stop_admin(relay.server, relay.task)
    client = RelayClient(f"127.0.0.1:{port}", relay.token, timeout=2)
    with pytest.raises(Unreachable, match=f"127.0.0.1:{port}"):
        await asyncio.to_thread(client.fetch_running)
    assert not await asyncio.to_thread(client.healthz)


@pytest.mark.parametrize("depth", [65, 100_000])
async def test_deeply_nested_json_is_a_400_not_a_500(relay: Served, depth: int) -> None:
    """Within the size limit a body can nest deeper than the JSON parser's stack (or than
    validation should walk): a clear 400, never a 500, and nothing planned or applied."""
    headers = {"Authorization": f"Bearer {relay.token}", "Content-Type": "application/json"}
    nested = b'{"config": {"x": ' + b"[" * depth + b"]" * depth + b"}}"
    async with relay.raw() as http:
        plan = await http.post("/v1/plan", headers=headers, content=nested)
        apply = await http.post("/v1/apply", headers=headers, content=nested[:-1] + b', "base_version": 1}')
    for response in (plan, apply):
        assert response.status_code == 400, response.text
        assert response.json()["detail"] == "the body is nested more than 64 levels deep"


async def test_portal_audit_filters_and_needs_a_portal(relay: Served, fake: FakeControl) -> None:
    headers = {"authorization": f"Bearer {relay.token}"}
    async with relay.raw() as http:
        none = await http.get("/v1/portal/audit", headers=headers)
        assert none.status_code == 404
        assert none.json()["detail"] == "no secure portal runs in this relay", none.json()
        fake.portal = [
            {
                "at": 100.0,
                "event": "code_sent",
                "address": "bob@x.test",
                "message_id": None,
                "ip": "127.0.0.1",
                "detail": "login",
            },
            {
                "at": 200.0,
                "event": "open",
                "address": "bob@x.test",
                "message_id": "m1",
                "ip": "127.0.0.1",
                "detail": "",
            },
            {
                "at": 300.0,
                "event": "open",
                "address": "eve@x.test",
                "message_id": "m2",
                "ip": "127.0.0.1",
                "detail": "",
            },
        ]
        opens = await http.get("/v1/portal/audit", params={"event": "open", "address": "bob@x.test"}, headers=headers)
        assert opens.status_code == 200
        assert [e["message_id"] for e in opens.json()["events"]] == ["m1"]
        bad = await http.get("/v1/portal/audit", params={"since": "yesterday"}, headers=headers)
        assert bad.status_code == 400
