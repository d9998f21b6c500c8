"""POST /v1/apply against the real relay control: stale base, a real loosening, two applies at once.

tests/admin/test_apply.py checks the API's side of these rules against FakeControl (its toy
downgrade rule). Here the same rules are checked end to end: the admin app over HTTP, the
relay's own `RelayControl` (real validation, plan and downgrade guard), and a running
`Relay` whose live config is what must, or must not, have changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.admin.api import stop_admin
from engine.admin.client import DowngradeRefused, Refused, StaleBase
from engine.admin.contract import ApplyRequest, ApplyResult, ErrorCode
from engine.plan.diff import canonical
from engine.relay.runtime.control import RelayControl
from engine.relay.runtime.relay import Relay, load_live
from tests.admin.conftest import Served, start
from tests.relay.peers import free_port

CONFIG = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: {port}}}
  data_dir: ./var
ip_groups:
  internal_servers: [127.0.0.0/8]
domain_groups:
  partners: [partner.example]
enforced_tls:
  - {{name: partners-tls, direction: outbound, match: {{domain_group: partners}}, level: mandatory}}
"""
LOOSENED = 'enforced_tls["partners-tls"].level: TLS level lowered: mandatory -> opportunistic'


class HeldControl(RelayControl):
    """The relay's control, unchanged, except that `apply` waits for `gate` when one is set:
    a test holds the first apply until a second request has reached the server."""

    gate: asyncio.Event | None = None

    async def apply(self, request: ApplyRequest, who: str) -> ApplyResult:
        if self.gate is not None:
            await self.gate.wait()
        return await super().apply(request, who)


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[Relay]:
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG.format(port=free_port()), encoding="utf-8")
    running = Relay(load_live(path))
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def served(relay: Relay) -> AsyncIterator[Served]:
    api = await start(HeldControl(relay), relay.live.data_dir)
    try:
        yield api
    finally:
        await stop_admin(api.server, api.task)


def with_partner(relay: Relay, domain: str) -> dict:
    """The running config with one more partner domain (a tightening: more mail must use TLS)."""
    desired = canonical(relay.live.config)
    desired["domain_groups"]["partners"] = [*desired["domain_groups"]["partners"], domain]
    return desired


def loosened(relay: Relay) -> dict:
    """The running config with the partners' TLS rule lowered from mandatory to opportunistic."""
    desired = canonical(relay.live.config)
    desired["enforced_tls"][0]["level"] = "opportunistic"
    return desired


async def apply(served: Served, request: ApplyRequest) -> ApplyResult:
    with served.client() as client:
        return await asyncio.to_thread(client.apply, request)


async def test_a_stale_base_is_refused_and_the_relay_keeps_its_config(relay: Relay, served: Served) -> None:
    first = await apply(served, ApplyRequest(with_partner(relay, "one.example"), 1))
    assert first.ok and (first.previous_version, first.version) == (1, 2)
    assert relay.live.version == 2 and relay.live.config.domain_groups["partners"] == ["partner.example", "one.example"]

    with pytest.raises(StaleBase) as caught:
        await apply(served, ApplyRequest(with_partner(relay, "two.example"), 1))
    assert caught.value.status == 409 and caught.value.running_version == 2
    assert relay.live.version == 2 and relay.live.config.domain_groups["partners"] == ["partner.example", "one.example"]
    assert served.audit.read()[-1].error == "stale_base"

    # The relay's own check, for a caller that is not this API (the API refused the one above first).
    direct = await served.fake.apply(ApplyRequest(with_partner(relay, "two.example"), 1), "test")
    assert (direct.ok, direct.error, direct.version) == (False, ErrorCode.STALE_BASE, 2)
    assert relay.live.version == 2 and "two.example" not in relay.live.config.domain_groups["partners"]


async def test_a_real_loosening_needs_allow_downgrade_and_a_reason(relay: Relay, served: Served) -> None:
    with pytest.raises(DowngradeRefused) as caught:
        await apply(served, ApplyRequest(loosened(relay), 1))
    assert caught.value.status == 403
    assert caught.value.detail == f"the plan loosens protection: {LOOSENED}"
    assert caught.value.body["summary"]["loosening"] == 1
    assert relay.live.version == 1 and relay.live.config.enforced_tls[0].level == "mandatory"

    result = await apply(
        served, ApplyRequest(loosened(relay), 1, allow_downgrade=True, reason="partner TLS broken, ticket 7")
    )
    assert result.ok and result.version == 2 and result.summary.loosening == 1
    assert relay.live.version == 2 and relay.live.config.enforced_tls[0].level == "opportunistic"
    refused, applied = served.audit.read()
    assert (refused.result, refused.error, refused.summary.loosening) == ("refused", "downgrade_refused", 1)
    assert (applied.result, applied.allow_downgrade, applied.reason) == (
        "applied",
        True,
        "partner TLS broken, ticket 7",
    )


async def test_two_applies_on_the_same_base_one_wins(relay: Relay) -> None:
    """Both requests reach the server before the first apply may proceed: exactly one becomes
    version 2, the other is refused as stale, and the relay runs the winner's config."""
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

    control = HeldControl(relay)
    control.gate = both_arrived
    served = await start(control, relay.live.data_dir, wrap=counting)
    requests = {
        "tighten": ApplyRequest(with_partner(relay, "one.example"), 1, reason="tighten"),
        "loosen": ApplyRequest(loosened(relay), 1, allow_downgrade=True, reason="loosen"),
    }
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(_outcome(served, request) for request in requests.values())), 30
        )
    finally:
        await stop_admin(served.server, served.task)
    results = dict(zip(requests, outcomes, strict=True))
    wins = [name for name, o in results.items() if isinstance(o, ApplyResult)]
    losses = [o for o in results.values() if isinstance(o, Refused)]
    assert len(wins) == 1 and len(losses) == 1, results
    assert isinstance(losses[0], StaleBase) and losses[0].running_version == 2
    assert relay.live.version == 2
    if wins == ["tighten"]:
        assert relay.live.config.domain_groups["partners"] == ["partner.example", "one.example"]
        assert relay.live.config.enforced_tls[0].level == "mandatory"
    else:
        assert relay.live.config.domain_groups["partners"] == ["partner.example"]
        assert relay.live.config.enforced_tls[0].level == "opportunistic"
    assert sorted(r.result for r in served.audit.read()) == ["applied", "refused"]


async def _outcome(served: Served, request: ApplyRequest) -> ApplyResult | Refused:
    try:
        return await apply(served, request)
    except Refused as exc:
        return exc
