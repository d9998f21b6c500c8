"""POST /v1/apply over HTTP with the real client: results, refusals, serialisation, audit."""

from __future__ import annotations

import asyncio

import pytest

from engine.admin.api import stop_admin
from engine.admin.client import ApplyFailed, DowngradeRefused, Invalid, PlanMismatch, Refused, StaleBase
from engine.admin.contract import ApplyRequest, ApplyResult
from engine.admin.token import token_id
from tests.admin.conftest import Served, start
from tests.admin.fake_control import base_config


def with_partners() -> dict:
    desired = base_config()
    desired["domain_groups"] = {"partners": ["partner.example"]}
    return desired


def loosened() -> dict:
    desired = base_config()
    desired["system"]["listeners"][0]["starttls"] = "offered"
    return desired


async def apply(relay: Served, request: ApplyRequest, **kwargs) -> ApplyResult:
    with relay.client() as client:
        return await asyncio.to_thread(client.apply, request, **kwargs)


async def test_apply_swaps_and_is_audited_with_the_token_id(relay: Served) -> None:
    result = await apply(relay, ApplyRequest(with_partners(), 1, commit="abc123", reason="add partners"))
    assert result.ok and result.changed
    assert (result.previous_version, result.version) == (1, 2)
    assert result.summary.add == 1
    assert relay.fake.running().version == 2 and relay.fake.running().commit == "abc123"
    assert relay.fake.applies[0][1] == token_id(relay.token)

    text = relay.audit.path.read_text()
    assert relay.token not in text
    [record] = relay.audit.read()
    assert record.who == token_id(relay.token)
    assert (record.from_version, record.to_version, record.result) == (1, 2, "applied")
    assert (record.commit, record.reason, record.allow_downgrade) == ("abc123", "add partners", False)
    assert record.summary.add == 1 and record.at.endswith("Z")
    assert record.hash == relay.fake.running().hash

    with relay.client() as client:
        [listed] = await asyncio.to_thread(client.audit, 10)
    assert listed == record


async def test_applying_the_running_config_again_is_a_no_op(relay: Served) -> None:
    result = await apply(relay, ApplyRequest(base_config(), 1))
    assert result.ok and not result.changed and result.version == 1
    assert relay.audit.read()[-1].result == "unchanged"


async def test_stale_base_is_409_with_the_running_version(relay: Served) -> None:
    await apply(relay, ApplyRequest(with_partners(), 1))
    calls = len(relay.fake.applies)
    with pytest.raises(StaleBase) as caught:
        await apply(relay, ApplyRequest(base_config(), 1))
    assert caught.value.status == 409 and caught.value.error == "stale_base"
    assert caught.value.running_version == 2
    assert len(relay.fake.applies) == calls  # refused before the relay was asked
    record = relay.audit.read()[-1]
    assert (record.result, record.error, record.from_version, record.to_version) == ("refused", "stale_base", 2, 2)


async def test_if_match_on_another_config_is_412(relay: Served) -> None:
    with pytest.raises(StaleBase) as caught:
        await apply(relay, ApplyRequest(with_partners(), 1), if_match="sha256:" + "0" * 64)
    assert caught.value.status == 412 and caught.value.running_version == 1
    ok = await apply(relay, ApplyRequest(with_partners(), 1), if_match=relay.fake.running().hash)
    assert ok.version == 2


async def test_invalid_config_is_422_and_the_old_one_keeps_serving(relay: Served) -> None:
    desired = base_config()
    desired["system"]["fqdn"] = "not a host!"
    with pytest.raises(Invalid) as caught:
        await apply(relay, ApplyRequest(desired, 1))
    assert caught.value.status == 422
    assert [d["path"] for d in caught.value.diagnostics] == ["system.fqdn"]
    assert caught.value.result is not None and caught.value.result.version == 1
    assert relay.fake.running().config == base_config()
    assert relay.audit.read()[-1].error == "invalid"


async def test_a_loosening_without_allow_downgrade_is_403(relay: Served) -> None:
    with pytest.raises(DowngradeRefused) as caught:
        await apply(relay, ApplyRequest(loosened(), 1))
    assert caught.value.status == 403
    assert "starttls required -> offered" in caught.value.detail
    assert caught.value.body["summary"]["loosening"] == 1
    assert relay.fake.running().version == 1

    result = await apply(relay, ApplyRequest(loosened(), 1, allow_downgrade=True, reason="partner cannot do TLS"))
    assert result.ok and result.version == 2
    refused, applied = relay.audit.read()
    assert (refused.result, refused.error, refused.summary.loosening) == ("refused", "downgrade_refused", 1)
    assert (applied.result, applied.allow_downgrade, applied.reason) == ("applied", True, "partner cannot do TLS")


async def test_allow_downgrade_needs_a_reason(relay: Served) -> None:
    headers = {"Authorization": f"Bearer {relay.token}"}
    body = {"config": loosened(), "base_version": 1, "allow_downgrade": True}
    async with relay.raw() as http:
        response = await http.post("/v1/apply", headers=headers, json=body)
    assert response.status_code == 400 and "reason" in response.json()["detail"]
    assert relay.fake.applies == []


async def test_a_saved_plan_that_moved_is_409_plan_mismatch(relay: Served) -> None:
    with relay.client() as client:
        plan = await asyncio.to_thread(client.plan, with_partners())
    with pytest.raises(PlanMismatch):
        await apply(relay, ApplyRequest(with_partners(), 1, plan_hash="sha256:" + "1" * 64))
    result = await apply(relay, ApplyRequest(with_partners(), 1, plan_hash=plan.plan["hash"]))
    assert result.version == 2


async def test_a_relay_that_raises_is_500_apply_failed_and_audited(relay: Served) -> None:
    relay.fake.fail_with = RuntimeError("TLS context: no such file")
    with pytest.raises(ApplyFailed) as caught:
        await apply(relay, ApplyRequest(with_partners(), 1))
    assert caught.value.status == 500 and "no such file" in caught.value.detail
    record = relay.audit.read()[-1]
    assert (record.result, record.error) == ("failed", "apply_failed")


async def test_concurrent_applies_on_the_same_base_one_wins(fake, data_dir) -> None:
    """The API's lock: the second apply waits for the first, then finds its base stale.

    The fake holds the first apply until both requests have reached the server, so they
    truly overlap; without the lock both would pass the base check and both would apply.
    """
    both_arrived = asyncio.Event()
    arrived = 0

    def counting(app):
        async def wrapped(scope, receive, send):
            nonlocal arrived
            if scope["type"] == "http" and scope["path"] == "/v1/apply":
                arrived += 1
                if arrived == 2:
                    both_arrived.set()
            await app(scope, receive, send)

        return wrapped

    fake.gate = both_arrived
    relay = await start(fake, data_dir, wrap=counting)
    try:
        first = _apply_outcome(relay, ApplyRequest(with_partners(), 1, reason="first"))
        second = _apply_outcome(relay, ApplyRequest(loosened(), 1, allow_downgrade=True, reason="second"))
        outcomes = await asyncio.wait_for(asyncio.gather(first, second), 20)
    finally:
        await stop_admin(relay.server, relay.task)
    wins = [o for o in outcomes if isinstance(o, ApplyResult)]
    losses = [o for o in outcomes if isinstance(o, Refused)]
    assert len(wins) == 1 and len(losses) == 1
    assert isinstance(losses[0], StaleBase) and losses[0].running_version == 2
    assert len(fake.applies) == 1  # the loser was refused by the API, under the lock
    assert fake.running().version == 2
    assert sorted(r.result for r in relay.audit.read()) == ["applied", "refused"]


async def _apply_outcome(relay: Served, request: ApplyRequest) -> ApplyResult | Refused:
    try:
        return await apply(relay, request)
    except Refused as exc:
        return exc
