"""`plan --probe`: before a TLS change is applied, ask the peers it affects.

For every next hop whose TLS demands the plan changes (a route's `tls` or next hop, an
enforced-TLS rule, the outbound default or CA bundle, and for the levels `mta-sts` and `dane`
their settings and `system.dns`), meet each MX host as delivery would after the change: the
hop's policy comes from `HopPolicies.for_hop`, as in `deliver`, so `mta-sts` means the
recipient domain's MTA-STS policy and `dane` the MX host's DNSSEC-validated TLSA records. A
hop the policy refuses (an enforce policy that does not name it, a failed TLSA lookup) is a
FAIL with no connection made; any other is opened with `transfer._open` (STARTTLS offered?
the handshake at the level: chain, name, TLSA match, protocol, cipher strength), never
sent MAIL. A peer that would fail is a message queue waiting to happen: the plan shows it
before the merge.

One line per MX host (its first address), then for each per-domain level the settings ask
for, a line saying what the domain's DNS made of it (the very MTA-STS lookup and TLSA answer
the hop's policy was decided on). MTA-STS policies are looked up in a copy of the relay's cache
(`<data_dir>/mta-sts`, where this machine has it): the relay's files are never written. Targets are
probed a few at a time; every step is bounded by the config's timeouts (`delivery.timeouts`,
`system.dns.timeout`) and the MTA-STS fetch by its own.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from engine.config.model import RelayConfig
from engine.plan.change import Change, Key
from engine.relay.delivery.failures import TLSRequiredError
from engine.relay.delivery.hoppolicy import HopPolicies
from engine.relay.delivery.resolve import Hop, Resolver, next_hops, resolver_for
from engine.relay.delivery.transfer import _open
from engine.relay.runtime.live import PER_DOMAIN_LEVELS, CompiledRoute, Live, TLSPolicy, ca_bundle_of, provision
from engine.relay.tls import dane, mtasts
from engine.relay.tls.levels import TLSLevel, describe_failure

log = logging.getLogger(__name__)

PARALLEL = 8  # targets probed at once


@dataclass(frozen=True)
class ProbeResult:
    target: str  # the domain or route probed
    hop: str  # host[address]:port
    level: str
    ok: bool
    detail: str
    notes: tuple[str, ...] = ()  # what `mta-sts` and `dane` meant at this hop


def targets(changes: list[Change], desired: RelayConfig, live) -> list[tuple[CompiledRoute, str]]:
    """(route, domain) pairs the changes touch; domain "" for a route with a fixed next hop
    and no listed domains. A touched route that lists domains is probed per domain when it
    delivers by MX or asks for `mta-sts` (a policy is per recipient domain)."""
    touched_routes, touched_groups, all_routes = set(), set(), False
    levels: set[TLSLevel] = set()  # per-domain levels whose meaning the changes may move
    for change in changes:
        path = change.path
        if path[:1] == ("routes",) and len(path) > 1 and isinstance(path[1], Key):
            touched_routes.add(str(path[1].value))
        elif path[:1] == ("enforced_tls",):
            touched_groups |= {r.match.domain_group for r in desired.enforced_tls if hasattr(r.match, "domain_group")}
        elif path[:2] in (("tls", "outbound_default"), ("tls", "ca_bundle")):
            all_routes = True
        elif path[:2] == ("tls", "mta_sts"):
            levels.add(TLSLevel.MTA_STS)
        elif path[:2] == ("tls", "dane"):
            levels.add(TLSLevel.DANE)
        elif path[:2] == ("system", "dns"):
            levels.update(PER_DOMAIN_LEVELS)
    touched_groups |= {
        r.match.domain_group for r in desired.enforced_tls if r.level in levels and hasattr(r.match, "domain_group")
    }
    touched_routes |= {route.name for route in live.routes if route.tls in levels}
    out = []
    for route in live.routes:
        if not (route.name in touched_routes or (all_routes and route.next_hop is not None)):
            continue
        listed = sorted(route.domains.exact) if route.domains is not None else []
        if listed and (route.next_hop is None or route.tls is TLSLevel.MTA_STS):
            out.extend((route, domain) for domain in listed)
        elif route.next_hop is not None:
            out.append((route, ""))
    for group in sorted(touched_groups):
        for domain in sorted(live.domain_groups[group].exact):
            out.append((live.route_for(domain), domain))
    unique: dict[tuple[str, str], tuple[CompiledRoute, str]] = {}
    for route, domain in out:  # a domain both listed by a touched route and in a touched group: once
        unique.setdefault((route.name, domain), (route, domain))
    return list(unique.values())


async def probe(
    desired: RelayConfig, changes: list[Change], base_dir, *, mta_sts: mtasts.MTASTS | None = None
) -> list[ProbeResult]:
    """Probe every target of `changes` as `desired` would deliver to it. `mta_sts` finds the
    domains' policies (tests pass one pointed at their HTTPS server); its cache lives in a
    temporary directory for the length of the probe, starting as a copy of the relay's own
    (`<data_dir>/mta-sts`, when this machine has it): a cached policy stays in force for the
    relay when its server is down, so it does for the probe, and the relay's cache is never
    written."""
    live = provision(desired, base_dir=base_dir, version=0, tls=False)
    resolver = resolver_for(desired.system.dns)
    mta_sts = mta_sts or mtasts.MTASTS()
    ca_bundle = ca_bundle_of(desired, live.base_dir)
    gate = asyncio.Semaphore(PARALLEL)
    with tempfile.TemporaryDirectory(prefix="sealrelay-probe-") as scratch:
        cache_dir = Path(scratch) / "mta-sts"
        _copy_cache(live.data_dir / "mta-sts", cache_dir)

        async def one(route: CompiledRoute, domain: str) -> list[ProbeResult]:
            async def policy() -> mtasts.Lookup:
                if not domain:  # a fixed next hop for any recipient: no domain to ask
                    return mtasts.Lookup("", None, "the route lists no recipient domain to look up")
                return await mta_sts.lookup(domain, resolver=resolver, ca_bundle=ca_bundle, cache_dir=cache_dir)

            async with gate:
                try:
                    return await _target(live, resolver, route, domain, policy)
                except Exception as exc:  # noqa: BLE001 - one target's trouble is its line, not the probe's end
                    label = domain or f"route {route.name}"
                    return [ProbeResult(label, "-", "-", False, f"probe failed: {describe_failure(exc)}")]

        found = await asyncio.gather(*(one(route, domain) for route, domain in targets(changes, desired, live)))
    return [result for results in found for result in results]


async def _target(
    live: Live, resolver: Resolver, route: CompiledRoute, domain: str, policy: Callable[[], Awaitable[mtasts.Lookup]]
) -> list[ProbeResult]:
    """Each MX host of one target (its first address), through `HopPolicies` as delivery."""
    label = domain or f"route {route.name}"
    try:
        if route.next_hop is not None:
            hop = route.next_hop
            hops = await next_hops(resolver, hop.host, hop.port, hop.mx_lookup)
        else:
            hops = await resolver.mx_hosts(domain)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return [ProbeResult(label, "-", "-", False, f"cannot resolve: {exc}")]
    policies = HopPolicies(live, route, domain, None, resolver, policy)
    results = []
    for hop in _first_per_host(hops):
        decided = await policies.for_hop(hop)
        notes = _meaning(live, route, domain, hop, policies.sts, decided.tlsa)
        if decided.refusal is not None:
            why = decided.refusal.reason.removeprefix(f"{hop}: ") + "; no connection made"
            results.append(ProbeResult(label, str(hop), str(decided.policy), False, why, notes))
        else:
            results.append(await _one(live, label, hop, decided.policy, notes))
    return results


async def _one(live: Live, label: str, hop: Hop, policy: TLSPolicy, notes: tuple[str, ...]) -> ProbeResult:
    """Open a session exactly as delivery does (`transfer._open`) and say how it went."""
    try:
        client, note = await _open(live, hop, policy)
    except TLSRequiredError as exc:
        return ProbeResult(label, str(hop), str(policy), False, str(exc).split(";")[0], notes)
    except Exception as exc:  # noqa: BLE001
        return ProbeResult(label, str(hop), str(policy), False, f"cannot connect: {describe_failure(exc)}", notes)
    client.close()
    return ProbeResult(label, str(hop), str(policy), True, note, notes)


def _copy_cache(relay_cache: Path, cache_dir: Path) -> None:
    """The relay's cached MTA-STS policies into the probe's own cache, as far as they can be read."""
    try:
        if relay_cache.is_dir():
            shutil.copytree(relay_cache, cache_dir)
    except OSError as exc:  # not ours to read (another user's data_dir): the probe fetches
        log.info("probe: the relay's MTA-STS cache %s could not be read: %s", relay_cache, exc)


def _first_per_host(hops: list[Hop]) -> list[Hop]:
    """The first address of each MX host (or configured host), in the order delivery tries them."""
    first: dict[tuple[str, int], Hop] = {}
    for hop in hops:
        first.setdefault((hop.host.lower().rstrip("."), hop.port), hop)
    return list(first.values())


def _meaning(
    live: Live, route: CompiledRoute, domain: str, hop: Hop, sts: mtasts.Lookup | None, tlsa: dane.Lookup | None
) -> tuple[str, ...]:
    """In words, what the per-domain levels the settings ask for at `hop` meant there: the
    domain's MTA-STS lookup and the TLSA answer `HopPolicies` decided on (`tlsa` None: `dane`
    was not reached, the hop was refused before)."""
    asked = live.per_domain_levels(route, domain, hop.address)
    notes = []
    if TLSLevel.MTA_STS in asked and sts is not None:
        notes.append(_sts_words(sts, hop, TLSLevel.parse(live.config.tls.mta_sts.fallback)))
    if TLSLevel.DANE in asked and tlsa is not None:
        fallback = dane.fallback_of(live.config.tls.dane.fallback)
        notes.append(_dane_words(tlsa if hop.secure else None, hop, domain, fallback))
    return tuple(notes)


def _sts_words(sts: mtasts.Lookup, hop: Hop, fallback: TLSLevel) -> str:
    """`mta-sts: <the domain's policy> (<where it came from>)[: <host> is (not) named]; <level>`."""
    policy = sts.policy
    said = mtasts.verdict(sts, hop.host, fallback)
    if policy is None or policy.mode == "none":
        published = "no policy" if policy is None else "policy in mode none"
        return f"mta-sts: {published} ({sts.note}); fallback {fallback}"
    named = "is named" if policy.matches(hop.host) else "is not named"
    head = f"mta-sts: {policy.mode} policy, mx {', '.join(policy.mx)} ({sts.note}): {hop.host} {named}"
    if said.level is None:
        return f"{head}; not sent"
    if policy.mode == "testing":
        return f"{head}; fallback {said.level} (testing mode)"
    return f"{head}; level {said.level}"


def _dane_words(found: dane.Lookup | None, hop: Hop, domain: str, fallback: TLSLevel | None) -> str:
    """`dane: <what the MX host publishes>: <detail>; <level>`. `found` is None for a hop
    whose MX or address records were not DNSSEC-validated; `fallback` None is `refuse`."""
    if found is None:
        why = f"the MX or address records of {hop.host}"
        return f"dane: not DNSSEC-validated: {why}; DANE does not apply, {_fallback_words(fallback)}"
    said = dane.verdict(found, domain, fallback, hop_secure=True)
    records = ", ".join(record.describe() for record in found.records)
    if found.state == "usable":
        return f"dane: TLSA usable: {records} at {found.name}; level {said.level}"
    if found.state == "unusable":
        return f"dane: TLSA unusable: {records} at {found.name}; level {said.level}, certificate unchecked"
    if found.state == "failed":
        return f"dane: lookup failed at {found.name} (the hop's line says why); not sent (DANE cannot be skipped)"
    return f"dane: no TLSA: {found.reason}; DANE does not apply, {_fallback_words(fallback)}"


def _fallback_words(fallback: TLSLevel | None) -> str:
    return f"fallback {fallback}" if fallback is not None else "fallback refuse: not sent"


def render(results: list[ProbeResult]) -> str:
    if not results:
        return "\nProbe: no next hop is affected by a TLS change.\n"
    lines = ["", "Probe (the peers the TLS changes affect, as the relay would meet them after apply):"]
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        lines.append(f"  {mark} {r.target}: {r.hop} at {r.level}: {r.detail}")
        lines.extend(f"       {note}" for note in r.notes)
    failing = sum(not r.ok for r in results)
    if failing:
        lines.append(f"  {failing} peer(s) would not get mail under the new config: it would wait in the queue.")
    return "\n".join(lines) + "\n"


def run(
    desired: RelayConfig, changes: list[Change], base_dir, *, mta_sts: mtasts.MTASTS | None = None
) -> list[ProbeResult]:
    return asyncio.run(probe(desired, changes, base_dir, mta_sts=mta_sts))
