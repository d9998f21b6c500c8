"""`plan --probe`: before a TLS change is applied, ask the peers it affects.

For every next hop whose TLS demands the plan changes (a route's `tls` or next hop, an
enforced-TLS rule, the outbound default), connect as the relay would after the change:
is STARTTLS offered, does the handshake succeed at the new level (chain, name, protocol,
cipher strength)? A peer that would fail is a message queue waiting to happen: the plan
shows it before the merge.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from engine.config.model import RelayConfig
from engine.plan.change import Change, Key
from engine.relay.delivery.failures import TLSRequiredError
from engine.relay.delivery.resolve import Hop, next_hops, resolver_for
from engine.relay.delivery.transfer import _open
from engine.relay.runtime.live import CompiledRoute, provision
from engine.relay.tls.levels import describe_failure


@dataclass(frozen=True)
class ProbeResult:
    target: str  # the domain or route probed
    hop: str  # host[address]:port
    level: str
    ok: bool
    detail: str


def targets(changes: list[Change], desired: RelayConfig, live) -> list[tuple[CompiledRoute, str]]:
    """(route, domain) pairs the changes touch; domain "" for a route with a fixed next hop."""
    touched_routes, touched_groups, all_routes = set(), set(), False
    for change in changes:
        path = change.path
        if path[:1] == ("routes",) and len(path) > 1 and isinstance(path[1], Key):
            touched_routes.add(str(path[1].value))
        elif path[:1] == ("enforced_tls",):
            touched_groups |= {r.match.domain_group for r in desired.enforced_tls if hasattr(r.match, "domain_group")}
        elif path[:2] in (("tls", "outbound_default"), ("tls", "ca_bundle")):
            all_routes = True
    out = []
    for route in live.routes:
        if route.next_hop is not None and (all_routes or route.name in touched_routes):
            out.append((route, ""))
    for group in sorted(touched_groups):
        for domain in sorted(live.domain_groups[group].exact):
            out.append((live.route_for(domain), domain))
    return out


async def probe(desired: RelayConfig, changes: list[Change], base_dir) -> list[ProbeResult]:
    live = provision(desired, base_dir=base_dir, version=0, tls=False)
    resolver = resolver_for(desired.system.dns)
    results = []
    for route, domain in targets(changes, desired, live):
        label = domain or f"route {route.name}"
        try:
            if route.next_hop is not None:
                hop = route.next_hop
                hops = await next_hops(resolver, hop.host, hop.port, hop.mx_lookup)
            else:
                hops = await resolver.mx_hosts(domain)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            results.append(ProbeResult(label, "-", "-", False, f"cannot resolve: {exc}"))
            continue
        policy = live.outbound_policy(route, domain, hops[0].address)
        results.append(await _one(live, label, hops[0], policy))
    return results


async def _one(live, label: str, hop: Hop, policy) -> ProbeResult:
    """Open a session exactly as delivery does (`transfer._open`) and say how it went."""
    try:
        client, note = await _open(live, hop, policy)
    except TLSRequiredError as exc:
        return ProbeResult(label, str(hop), str(policy), False, str(exc).split(";")[0])
    except Exception as exc:  # noqa: BLE001
        return ProbeResult(label, str(hop), str(policy), False, f"cannot connect: {describe_failure(exc)}")
    client.close()
    return ProbeResult(label, str(hop), str(policy), True, note)


def render(results: list[ProbeResult]) -> str:
    if not results:
        return "\nProbe: no next hop is affected by a TLS change.\n"
    lines = ["", "Probe (the peers the TLS changes affect, as the relay would meet them after apply):"]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        lines.append(f"  {mark} {r.target}: {r.hop} at {r.level}: {r.detail}")
    failing = sum(not r.ok for r in results)
    if failing:
        lines.append(f"  {failing} peer(s) would not get mail under the new config: it would wait in the queue.")
    return "\n".join(lines) + "\n"


def run(desired: RelayConfig, changes: list[Change], base_dir) -> list[ProbeResult]:
    return asyncio.run(probe(desired, changes, base_dir))
