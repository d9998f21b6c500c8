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

import aiosmtplib

from engine.config.model import RelayConfig
from engine.plan.change import Change, Key
from engine.relay.groups import parse_ip
from engine.relay.live import CompiledRoute, provision
from engine.relay.resolve import Resolver
from engine.relay.tls import TLSLevel, check_negotiated, describe_failure

PROBE_TIMEOUT = 10.0


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
    dns = desired.system.dns
    resolver = Resolver(list(dns.nameservers), dns.port, float(dns.timeout)) if dns else Resolver()
    results = []
    for route, domain in targets(changes, desired, live):
        label = domain or f"route {route.name}"
        try:
            if route.next_hop is not None:
                hop = route.next_hop
                found = (
                    [(hop.host, hop.host, hop.port)]
                    if parse_ip(hop.host)
                    else [
                        (h.host, h.address, h.port) for h in await resolver.host_hops(hop.host, hop.port, hop.mx_lookup)
                    ]
                )
            else:
                found = [(h.host, h.address, h.port) for h in await resolver.mx_hosts(domain)]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            results.append(ProbeResult(label, "-", "-", False, f"cannot resolve: {exc}"))
            continue
        host, address, port = found[0]
        policy = live.outbound_policy(route, domain, address, encrypt=False)
        results.append(await _one(label, host, address, port, policy, desired, base_dir))
    return results


async def _one(label, host, address, port, policy, desired, base_dir) -> ProbeResult:
    from engine.relay.live import _client

    where = f"{host}[{address}]:{port}"
    level = policy.level
    client = aiosmtplib.SMTP(
        hostname=address, port=port, start_tls=False, timeout=PROBE_TIMEOUT, local_hostname=desired.system.fqdn
    )
    try:
        await client.connect()
        await client.ehlo()
        if level is TLSLevel.NONE:
            return ProbeResult(label, where, str(policy), True, "no TLS asked")
        if not client.supports_extension("starttls"):
            return ProbeResult(label, where, str(policy), not level.requires_tls, "STARTTLS not offered")
        context = _client(desired, base_dir, level.enforced.value, policy.min_protocol, policy.min_bits)
        try:
            await client.starttls(server_hostname=host, tls_context=context)
        except Exception as exc:  # noqa: BLE001
            return ProbeResult(
                label, where, str(policy), not level.requires_tls, f"handshake failed: {describe_failure(exc)}"
            )
        ssl_object = client.get_transport_info("ssl_object")
        weak = check_negotiated(ssl_object, policy.min_bits, policy.min_protocol)
        if weak:
            return ProbeResult(label, where, str(policy), not level.requires_tls, weak)
        name, _, bits = ssl_object.cipher()
        return ProbeResult(label, where, str(policy), True, f"{ssl_object.version()} {name} ({bits}-bit)")
    except Exception as exc:  # noqa: BLE001
        return ProbeResult(label, where, str(policy), False, f"cannot connect: {describe_failure(exc)}")
    finally:
        client.close()


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
