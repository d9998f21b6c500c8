"""Names are unique where they are looked up, and every reference names something."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Sequence

from engine.config.diagnostics import Diagnostic, Path, error
from engine.config.model.dlp import BUILTIN_CLASSIFIERS
from engine.config.model.transport import DomainGroupMatch, IPGroupMatch
from engine.config.semantic import Context, check


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def unknown(path: Path, what: str, name: str, known: Sequence[str], where: str) -> Diagnostic:
    hint = did_you_mean(name, known)
    if hint is None:
        hint = f"define it under `{where}`" + (f" (defined: {', '.join(sorted(known))})" if known else "")
    return error(path, f"unknown {what} `{name}`", hint)


def duplicates(
    items: Sequence, base: Path, what: str, key=lambda item: item.name, field: str = "name"
) -> Iterator[Diagnostic]:
    seen: dict = {}
    for i, item in enumerate(items):
        k = key(item)
        if k in seen:
            yield error(
                (*base, i, field),
                f"duplicate {what} `{k}`",
                "names must be unique: rename one",
                see=((*base, seen[k], field),),
            )
        else:
            seen[k] = i


@check
def unique_names(ctx: Context) -> Iterator[Diagnostic]:
    c = ctx.config
    yield from duplicates(c.system.listeners, ("system", "listeners"), "listener")
    yield from duplicates(
        c.system.listeners,
        ("system", "listeners"),
        "listener address",
        key=lambda item: f"{item.address}:{item.port}",
        field="port",
    )
    yield from duplicates(c.enforced_tls, ("enforced_tls",), "enforced TLS rule")
    yield from duplicates(c.routes, ("routes",), "route")
    yield from duplicates(c.dlp.action_plans, ("dlp", "action_plans"), "action plan")
    yield from duplicates(c.dlp.policies, ("dlp", "policies"), "policy")
    yield from duplicates(c.dlp.classifiers, ("dlp", "classifiers"), "classifier")
    yield from duplicates(c.tests, ("tests",), "test")
    for i, policy in enumerate(c.dlp.policies):
        yield from duplicates(policy.rules, ("dlp", "policies", i, "rules"), f"rule in policy `{policy.name}`")
    for i, classifier in enumerate(c.dlp.classifiers):
        if classifier.name in BUILTIN_CLASSIFIERS:
            yield error(
                ("dlp", "classifiers", i, "name"),
                f"`{classifier.name}` is a built-in classifier",
                "choose another name",
            )


def _group_ref(ctx: Context, match, path: Path) -> Iterator[Diagnostic]:
    c = ctx.config
    if isinstance(match, IPGroupMatch) and match.ip_group not in c.ip_groups:
        yield unknown((*path, "ip_group"), "IP group", match.ip_group, list(c.ip_groups), "ip_groups")
    if isinstance(match, DomainGroupMatch) and match.domain_group not in c.domain_groups:
        yield unknown(
            (*path, "domain_group"),
            "domain group",
            match.domain_group,
            list(c.domain_groups),
            "domain_groups",
        )


@check
def group_references(ctx: Context) -> Iterator[Diagnostic]:
    c = ctx.config
    for i, rule in enumerate(c.enforced_tls):
        yield from _group_ref(ctx, rule.match, ("enforced_tls", i, "match"))
    for i, route in enumerate(c.routes):
        if not isinstance(route.recipients, str):
            yield from _group_ref(ctx, route.recipients, ("routes", i, "recipients"))
    tp = c.encryption.third_party
    if tp and tp.encrypted_ip_group not in c.ip_groups:
        yield unknown(
            ("encryption", "third_party", "encrypted_ip_group"),
            "IP group",
            tp.encrypted_ip_group,
            list(c.ip_groups),
            "ip_groups",
        )
    for p, policy in enumerate(c.dlp.policies):
        for r, rule in enumerate(policy.rules):
            base = ("dlp", "policies", p, "rules", r)
            for g, group in enumerate(rule.source.ip_groups):
                if group not in c.ip_groups:
                    yield unknown(
                        (*base, "source", "ip_groups", g),
                        "IP group",
                        group,
                        list(c.ip_groups),
                        "ip_groups",
                    )
            for g, group in enumerate(rule.destination.domain_groups):
                if group not in c.domain_groups:
                    yield unknown(
                        (*base, "destination", "domain_groups", g),
                        "domain group",
                        group,
                        list(c.domain_groups),
                        "domain_groups",
                    )
