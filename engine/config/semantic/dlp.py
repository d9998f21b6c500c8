"""DLP policies refer to real action plans and classifiers, and their patterns compile."""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterator
from functools import lru_cache

from engine.config.diagnostics import Diagnostic, Path, error, warning
from engine.config.model.dlp import (
    BUILTIN_CLASSIFIERS,
    DLP,
    TRUE_TYPES,
    AllCondition,
    AnyCondition,
    AttachmentCondition,
    ClassifierCondition,
    HeaderCondition,
    NotCondition,
    PatternCondition,
)
from engine.config.semantic import Context, check
from engine.config.semantic.names import did_you_mean, unknown

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _regex(pattern: str, path: Path) -> Iterator[Diagnostic]:
    problem = _regex_problem(pattern)
    if problem:
        yield error(path, problem)


@lru_cache(maxsize=16384)
def _regex_problem(pattern: str) -> str | None:
    """Why `pattern` does not compile, or None. Remembered: `re` keeps 512 compiled
    patterns, so a policy of thousands was compiled anew at every validation (13 ms of an
    apply of a 500-rule config); this keeps only the verdicts."""
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"invalid regular expression: {exc.msg} at position {exc.pos}"
    return None


def _conditions(dlp: DLP, cond, path: Path) -> Iterator[Diagnostic]:
    if isinstance(cond, AllCondition | AnyCondition):
        items = cond.all if isinstance(cond, AllCondition) else cond.any
        key = "all" if isinstance(cond, AllCondition) else "any"
        for i, sub in enumerate(items):
            yield from _conditions(dlp, sub, (*path, key, i))
    elif isinstance(cond, NotCondition):
        yield from _conditions(dlp, cond.not_, (*path, "not"))
    elif isinstance(cond, PatternCondition):
        yield from _regex(cond.pattern, (*path, "pattern"))
    elif isinstance(cond, HeaderCondition):
        yield from _regex(cond.header.pattern, (*path, "header", "pattern"))
    elif isinstance(cond, ClassifierCondition):
        known = list(BUILTIN_CLASSIFIERS) + [c.name for c in dlp.classifiers]
        if cond.classifier not in known:
            yield unknown((*path, "classifier"), "classifier", cond.classifier, known, "dlp.classifiers")
    elif isinstance(cond, AttachmentCondition):
        for i, kind in enumerate(cond.attachment.type or []):
            if kind not in TRUE_TYPES:
                yield error(
                    (*path, "attachment", "type", i),
                    f"unknown file type `{kind}`",
                    did_you_mean(kind, TRUE_TYPES) or "known types: " + ", ".join(TRUE_TYPES),
                )


@check
def policies(ctx: Context) -> Iterator[Diagnostic]:
    """The rules' conditions, action plans and owners. They read the `dlp` section alone, so
    the findings are kept per section object (`_per_section`)."""
    return iter(_per_section(ctx.config.dlp))


_FOUND: dict[int, tuple[Diagnostic, ...]] = {}
_FOUND_LOCK = threading.Lock()  # configs are validated in the control and watcher threads


def _per_section(dlp: DLP) -> tuple[Diagnostic, ...]:
    """`_policies(dlp)`, once per section object: configs validated from the same `dlp` data
    share one (`engine.config.model.dlp.DLP`), so an apply that leaves DLP alone does not walk
    its rules again (500 rules: 2 ms, 4 times that on a loaded machine). Models are frozen,
    and diagnostics values; the entry goes with the object."""
    key = id(dlp)
    found = _FOUND.get(key)
    if found is None:
        found = tuple(_policies(dlp))
        with _FOUND_LOCK:
            if key not in _FOUND:
                _FOUND[key] = found
                # runs while the object is freed, before its id can be given to another one
                weakref.finalize(dlp, _FOUND.pop, key, None)
    return found


def _policies(dlp: DLP) -> Iterator[Diagnostic]:
    plans = {plan.name: plan for plan in dlp.action_plans}
    used: set[str] = set()
    for i, classifier in enumerate(dlp.classifiers):
        yield from _regex(classifier.pattern, ("dlp", "classifiers", i, "pattern"))
    for p, policy in enumerate(dlp.policies):
        for o, owner in enumerate(policy.owners):
            if not _EMAIL.match(owner):
                yield error(("dlp", "policies", p, "owners", o), f"`{owner}` is not an email address")
        for r, rule in enumerate(policy.rules):
            base = ("dlp", "policies", p, "rules", r)
            yield from _conditions(dlp, rule.conditions, (*base, "conditions"))
            plan = plans.get(rule.action_plan)
            if plan is None:
                yield unknown(
                    (*base, "action_plan"),
                    "action plan",
                    rule.action_plan,
                    list(plans),
                    "dlp.action_plans",
                )
                continue
            used.add(plan.name)
            if "policy_owners" in plan.notify and not policy.owners:
                yield warning(
                    (*base, "action_plan"),
                    f"action plan `{plan.name}` notifies the policy owners, and policy `{policy.name}` has none",
                    "add `owners` to the policy",
                )
            if plan.email == "encrypt" and rule.destination.direction != "outbound":
                yield warning(
                    (*base, "destination", "direction"),
                    f"encryption applies to outbound mail only; this rule also covers {rule.destination.direction} mail",
                    "set `destination: {direction: outbound}`",
                )
    for a, plan in enumerate(dlp.action_plans):
        for n, target in enumerate(plan.notify):
            if target != "policy_owners" and not _EMAIL.match(target):
                yield error(
                    ("dlp", "action_plans", a, "notify", n),
                    f"`{target}` is neither `policy_owners` nor an email address",
                    did_you_mean(target, ["policy_owners"]),
                )
        if plan.name not in used and dlp.policies:
            yield warning(
                ("dlp", "action_plans", a, "name"),
                f"action plan `{plan.name}` is not used by any rule",
            )
