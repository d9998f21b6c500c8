"""Guard rules for who is covered: IP and domain groups, internal domains, and routes.

A group has no direction of its own; its uses give it one. An entry removed from a group
loosens when the group is what an enforced-TLS rule or a protective DLP rule matches (the
peer or domain is no longer covered), and tightens when the group grants something:
`internal_servers` (who may relay out) and the encryption gateway group (whose mail
counts as already encrypted) — there an entry *added* is the loosening. A route change is
judged by where mail goes afterwards: for every domain the configs name (and "any other
domain"), the route and TLS level it would take before and after; a lower level is a
loosening. Routing, domain and IP matching and the special group names are the relay's own,
from `engine/policy/rules.py` and `engine/policy/groups.py`: `*.example.com` matches subdomains.
"""

from __future__ import annotations

from engine.config.model import Route
from engine.plan.change import LOOSENING, NEUTRAL, TIGHTENING, Action, Change
from engine.plan.guard import Context, Judgement, judge, level_range, outbound_default
from engine.policy import rules
from engine.policy.groups import DomainSet, IPSet
from engine.policy.rules import GATEWAY_GROUP, TRUSTED_GROUP

OTHER_DOMAINS = "other domains"


def _entries(change: Change) -> tuple[list[str], list[str]]:
    """(added, removed) entries of a group or set change."""
    if change.kind == "member":
        return ([change.after] if change.action is Action.CREATE else []), (
            [change.before] if change.action is Action.DELETE else []
        )
    added = change.after if isinstance(change.after, list) else []
    removed = change.before if isinstance(change.before, list) else []
    return [a for a in added if a not in removed], [r for r in removed if r not in added]


def _uncovered(entries: list[str], others: list[str], section: str) -> list[str]:
    """The `entries` that add a peer or domain beyond `others` (not a subnet, not a subdomain)."""
    if not entries:
        return []
    group = IPSet.of(others) if section == "ip_groups" else DomainSet.of(others)
    return [e for e in entries if not group.covers(e)]


def _effective(change: Change, ctx: Context) -> tuple[list[str], list[str], Judgement | None]:
    """(added, removed) entries of a group change that really add or remove a peer: a subnet
    of what the group held is not new, an entry still covered by the group is not gone."""
    section, name = str(change.path[0]), str(change.path[1])
    added, removed = _entries(change)
    before = ctx.current.get(section, {}).get(name, [])
    after = ctx.desired.get(section, {}).get(name, [])
    really_added = _uncovered(added, before, section)
    really_removed = _uncovered(removed, after, section)
    if (added or removed) and not (really_added or really_removed):
        shown = _list(added + removed)
        return [], [], (NEUTRAL, f"{shown} adds or removes nothing: other entries of {name} cover the same")
    return really_added, really_removed, None


def _list(entries: list[str]) -> str:
    shown = ", ".join(entries[:3])
    return shown + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")


def gateway_group(config: dict) -> str:
    """`rules.gateway_group` of a canonical config."""
    third_party = config.get("encryption", {}).get("third_party")
    return third_party.get("encrypted_ip_group", GATEWAY_GROUP) if third_party else GATEWAY_GROUP


def protective_rules(config: dict):
    """(policy, rule, action) of every enabled DLP rule whose action is not permit."""
    plans = {p["name"]: p["email"] for p in config.get("dlp", {}).get("action_plans", [])}
    for policy in config.get("dlp", {}).get("policies", []):
        if not policy.get("enabled", True):
            continue
        for rule in policy.get("rules", []):
            action = plans.get(rule.get("action_plan"), "permit")
            if rule.get("enabled", True) and action != "permit":
                yield policy, rule, action


def _enforced_uses(kind: str, name: str, added: list, removed: list, ctx: Context) -> list[Judgement]:
    out = []
    for rule in ctx.desired.get("enforced_tls", []):
        if rule["match"].get(kind) != name:
            continue
        if removed:
            out.append(
                (LOOSENING, f"enforced_tls {rule['name']} no longer requires {rule['level']} TLS of {_list(removed)}")
            )
        if added:
            out.append((TIGHTENING, f"enforced_tls {rule['name']} now requires {rule['level']} TLS of {_list(added)}"))
    return out


def _dlp_uses(
    field: tuple[str, str], name: str, added: list, removed: list, ctx: Context, *, skip_outbound_losses: bool = False
) -> list[Judgement]:
    part, key = field
    out = []
    for policy, rule, action in protective_rules(ctx.desired):
        if name not in rule.get(part, {}).get(key, []):
            continue
        where = f"DLP rule {policy['name']}/{rule['name']} ({action})"
        outbound = rule.get("destination", {}).get("direction", "outbound") == "outbound"
        if removed and not (skip_outbound_losses and outbound):
            out.append((LOOSENING, f"{where} no longer covers mail {_dlp_word(part)} {_list(removed)}"))
        if added:
            out.append((TIGHTENING, f"{where} now covers mail {_dlp_word(part)} {_list(added)}"))
    return out


def _dlp_word(part: str) -> str:
    return "from" if part == "source" else "to"


def _ip_group(change: Change, ctx: Context) -> Judgement:
    name = str(change.path[1])
    added, removed, same = _effective(change, ctx)
    if same:
        return same
    uses = _enforced_uses("ip_group", name, added, removed, ctx)
    outbound_only = False
    if name == TRUSTED_GROUP:
        if added:
            uses.append((LOOSENING, f"{_list(added)} may now relay mail to external domains"))
        if removed:
            uses.append((TIGHTENING, f"{_list(removed)} may no longer relay mail to external domains"))
            outbound_only = True  # their mail no longer leaves: outbound DLP rules lose nothing
    if name == gateway_group(ctx.desired):
        if added:
            uses.append((LOOSENING, f"mail from {_list(added)} will count as already encrypted"))
        if removed:
            uses.append((NEUTRAL, f"mail from {_list(removed)} no longer counts as already encrypted"))
    uses += _dlp_uses(("source", "ip_groups"), name, added, removed, ctx, skip_outbound_losses=outbound_only)
    return judge(uses, (NEUTRAL, f"IP group {name} is not used by a TLS, relay or DLP rule"))


def _domain_group(change: Change, ctx: Context) -> Judgement:
    name = str(change.path[1])
    added, removed, same = _effective(change, ctx)
    if same:
        return same
    uses = _enforced_uses("domain_group", name, added, removed, ctx)
    if any(_route_group(r) == name for cfg in (ctx.current, ctx.desired) for r in cfg.get("routes", [])):
        # Every pattern the changed entries match, not only those entries: `*.x` leaving a group
        # sends `a.x` to a later route written for `a.x` alone, at a level `*.x` does not show.
        changed = DomainSet.of(added + removed)
        probes = [*added, *removed, *(p for p in _probes(ctx) if p != OTHER_DOMAINS and changed.contains(p))]
        uses += _reach(list(dict.fromkeys(probes)), _toggled(ctx.desired, name, added, removed), ctx.desired)
    uses += _dlp_uses(("destination", "domain_groups"), name, added, removed, ctx)
    return judge(uses, (NEUTRAL, f"domain group {name} is not used by a TLS, route or DLP rule"))


def _internal_domains(change: Change, ctx: Context) -> Judgement:
    added, removed = _entries(change)
    if added:
        return (
            LOOSENING,
            f"mail to {_list(added)} counts as internal: outbound DLP policies and encryption stop applying",
        )
    return NEUTRAL, f"mail to {_list(removed)} counts as outbound, no longer internal"


def _encrypted_group(change: Change, ctx: Context) -> Judgement:
    old = set(ctx.current.get("ip_groups", {}).get(change.before or GATEWAY_GROUP, []))
    new = ctx.desired.get("ip_groups", {}).get(change.after or GATEWAY_GROUP, [])
    extra = [e for e in new if e not in old]
    if extra:
        return LOOSENING, f"mail from {_list(extra)} will count as already encrypted"
    return NEUTRAL, "no new peer counts as already encrypted"


# -- routes ------------------------------------------------------------------------------


def _route_group(route: dict) -> str | None:
    recipients = route.get("recipients")
    return recipients.get("domain_group") if isinstance(recipients, dict) else None


class _Groups(dict):
    """Domain groups compiled; a group the config lacks matches nothing."""

    def __missing__(self, name: str) -> DomainSet:
        return DomainSet.of(())


def routing_table(config: dict) -> tuple[rules.RouteChoice, ...]:
    """The relay's routing table (`rules.routing_table`) of a canonical config."""
    groups = _Groups({name: DomainSet.of(entries) for name, entries in config.get("domain_groups", {}).items()})
    routes = [Route.model_validate(route) for route in config.get("routes", [])]
    return rules.routing_table(routes, groups, outbound_default(config))


def route_for(table: tuple[rules.RouteChoice, ...], pattern: str) -> tuple[str, str]:
    """(route, TLS level) that mail to `pattern`'s domains (or OTHER_DOMAINS) takes.

    A wildcard is looked up as written: `*.example.com` is then a subdomain that no other
    entry names exactly (no entry can be the label `*`), so it stands for every subdomain
    that only wildcards match. (A made-up subdomain such as `sub.example.com` could be
    another route's exact entry, and hide where the rest of the subdomains go.)"""
    choice = rules.route_for(table, None if pattern == OTHER_DOMAINS else pattern)
    return (f"route {choice.name}" if choice.route else "the default route"), choice.tls


def _probes(ctx: Context) -> list[str]:
    """Every domain pattern either config names, and the domains neither names."""
    found: dict[str, None] = {}
    for cfg in (ctx.current, ctx.desired):
        for entries in cfg.get("domain_groups", {}).values():
            found.update(dict.fromkeys(entries))
        for route in cfg.get("routes", []):
            if isinstance(route.get("recipients"), dict):
                found.update(dict.fromkeys(route["recipients"].get("domains", [])))
    return [*found, OTHER_DOMAINS]


def _reach(probes: list[str], baseline: dict, desired: dict) -> list[Judgement]:
    """Verdicts for the mail to `probes` whose route TLS level differs between `baseline`
    (the desired config with this one change undone) and `desired`."""
    out = []
    before, after = routing_table(baseline), routing_table(desired)
    for probe in probes:
        (r1, l1), (r2, l2) = route_for(before, probe), route_for(after, probe)
        b, a = level_range(l1, desired), level_range(l2, desired)
        if a != b:
            effect = LOOSENING if a[0] < b[0] or a[1] < b[1] else TIGHTENING
            out.append((effect, f"mail to {probe} now leaves by {r2} at {l2} (was {r1} at {l1})"))
    return out


def _with_routes(config: dict, routes: list[dict]) -> dict:
    return {**config, "routes": routes}


def _undone(change: Change, ctx: Context) -> dict:
    """The desired config with `change` (to `routes`) undone: so a route change is judged
    by its own effect, not by the other changes of the plan."""
    desired, current = ctx.desired, ctx.current
    routes = list(desired.get("routes", []))
    old = {r["name"]: i for i, r in enumerate(current.get("routes", []))}
    if change.kind == "order":
        ranked = sorted(enumerate(routes), key=lambda ir: old.get(ir[1]["name"], ir[0]))
        return _with_routes(desired, [r for _, r in ranked])
    name = change.path[1].value
    if change.action is Action.CREATE and len(change.path) == 2:
        return _with_routes(desired, [r for r in routes if r["name"] != name])
    if change.action is Action.DELETE and len(change.path) == 2:
        route = next(r for r in current.get("routes", []) if r["name"] == name)
        routes.insert(min(old[name], len(routes)), route)
        return _with_groups(_with_routes(desired, routes), current)
    before = next((r for r in current.get("routes", []) if r["name"] == name), None)
    if before is None:
        return desired
    routes = [{**r, "recipients": before["recipients"]} if r["name"] == name else r for r in routes]
    return _with_groups(_with_routes(desired, routes), current)


def _with_groups(config: dict, current: dict) -> dict:
    """Domain groups that only the current config has, for a route brought back from it."""
    groups = {**current.get("domain_groups", {}), **config.get("domain_groups", {})}
    return {**config, "domain_groups": groups}


def _route(change: Change, ctx: Context) -> Judgement:
    baseline = _undone(change, ctx)
    if change.kind == "order":
        return judge(
            _reach(_probes(ctx), baseline, ctx.desired),
            (NEUTRAL, "routes reordered (first match wins); no recipient's TLS level changes"),
        )
    return judge(_reach(_probes(ctx), baseline, ctx.desired), (NEUTRAL, "no recipient's TLS level changes"))


def _toggled(config: dict, group: str, added: list[str], removed: list[str]) -> dict:
    """`config` with a domain group's entries as they were before this change."""
    entries = [e for e in config.get("domain_groups", {}).get(group, []) if e not in added] + removed
    return {**config, "domain_groups": {**config.get("domain_groups", {}), group: entries}}


RULES = [
    ("ip_groups.*", _ip_group),
    ("domain_groups.*", _domain_group),
    ("system.internal_domains", _internal_domains),
    ("encryption.third_party.encrypted_ip_group", _encrypted_group),
    ("routes", _route),
    ("routes.#", _route),
    ("routes.#.recipients*", _route),
]
