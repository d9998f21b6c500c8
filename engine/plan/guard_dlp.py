"""Guard rules for DLP: which changes let sensitive mail through that was stopped before.

Actions are ordered as the relay combines them (the strongest matched rule wins):
permit < encrypt < quarantine < block (`engine/policy/rules.py`'s ACTION_STRENGTH). A rule
is *protective* when it and its policy are enabled and its action plan is not permit; only
protective rules can loosen. A change that makes a protective rule match fewer messages
is a loosening: the rule or policy removed or disabled, its action weakened, a condition
removed from an `any` (or added to an `all`), `min_matches`, `min_confidence` (low < medium
< high: a lower one counts more matches) or a size threshold raised, a phrase or a scope removed, or its source or destination narrowed (an empty list means
"any", so the last entry removed widens). Under `not` the direction of a condition change
flips. What the guard cannot order (a new regex, another classifier, a rewritten
condition) is neutral, and says so.
"""

from __future__ import annotations

from engine.config.model.dlp import CONFIDENCE_ORDER, DLP, ClassifierCondition
from engine.config.units import parse_size
from engine.plan.change import LOOSENING, NEUTRAL, TIGHTENING, Action, Change, Key
from engine.plan.guard import Context, Judgement, compare, judge
from engine.policy.rules import ACTION_STRENGTH, DLP_DIRECTIONS

DONE = {"permit": "permitted", "encrypt": "encrypted", "quarantine": "quarantined", "block": "blocked"}
NOT_PROTECTIVE = (NEUTRAL, "the rule does not encrypt, block or quarantine (or is disabled)")


def _plans(config: dict) -> dict[str, str]:
    return {p["name"]: p["email"] for p in config.get("dlp", {}).get("action_plans", [])}


def _keys(path) -> list[str]:
    return [p.value for p in path if isinstance(p, Key)]


def _rule(config: dict, path) -> tuple[dict | None, dict | None]:
    """The policy and rule that `path` (under dlp.policies) is in, in `config`."""
    keys = _keys(path)
    policy = next((p for p in config.get("dlp", {}).get("policies", []) if keys and p["name"] == keys[0]), None)
    rules = policy.get("rules", []) if policy else []
    rule = next((r for r in rules if len(keys) > 1 and r["name"] == keys[1]), None)
    return policy, rule


def _actions(config: dict, rules: list[dict]) -> list[str]:
    """The actions of the enabled, non-permit rules among `rules`."""
    plans = _plans(config)
    acts = [plans.get(r.get("action_plan"), "permit") for r in rules if r.get("enabled", True)]
    return [a for a in dict.fromkeys(acts) if a != "permit"]


def _protective(config: dict, path) -> str | None:
    """The action of the rule at `path` when it is protective in `config`, else None."""
    policy, rule = _rule(config, path)
    if not policy or not rule or not policy.get("enabled", True):
        return None
    acts = _actions(config, [rule])
    return acts[0] if acts else None


def _mode(change: Change, ctx: Context) -> Judgement:
    if change.before == "enforce" and change.after == "monitor":
        return LOOSENING, "DLP only records matches now: nothing is encrypted, blocked or quarantined"
    if change.before == "monitor" and change.after == "enforce":
        return TIGHTENING, "DLP acts on matches now"
    return NEUTRAL, "DLP mode"


def _plan_action(change: Change, ctx: Context) -> Judgement:
    name = change.path[2].value
    users = [
        f"{p['name']}/{r['name']}"
        for p in ctx.desired.get("dlp", {}).get("policies", [])
        for r in p.get("rules", [])
        if r.get("action_plan") == name and r.get("enabled", True) and p.get("enabled", True)
    ]
    if not users:
        return NEUTRAL, f"no enabled rule uses action plan {name}"
    effect, reason = compare("action", change.before, change.after, ACTION_STRENGTH)
    return effect, f"{reason} for {', '.join(users[:3])}"


def _lost(config: dict, rules: list[dict], what: str) -> Judgement:
    acts = _actions(config, rules)
    if not acts:
        return NEUTRAL, f"{what}: it had no enabled rule that encrypts, blocks or quarantines"
    return LOOSENING, f"{what}: mail it matched is no longer {' or '.join(DONE[a] for a in acts)}"


def _gained(config: dict, rules: list[dict], what: str) -> Judgement:
    acts = _actions(config, rules)
    if not acts:
        return NEUTRAL, f"{what}: it has no enabled rule that encrypts, blocks or quarantines"
    return TIGHTENING, f"{what}: matching mail will be {' or '.join(DONE[a] for a in acts)}"


def _policy(change: Change, ctx: Context) -> Judgement:
    if change.action is Action.DELETE:
        policy = change.before
        if not policy.get("enabled", True):
            return NEUTRAL, "the removed policy was disabled"
        return _lost(ctx.current, policy.get("rules", []), f"policy {policy['name']} removed")
    policy = change.after
    if not policy.get("enabled", True):
        return NEUTRAL, "the new policy is disabled"
    return _gained(ctx.desired, policy.get("rules", []), f"new policy {policy['name']}")


def _policy_enabled(change: Change, ctx: Context) -> Judgement:
    name = change.path[2].value
    if change.before is True and change.after is False:
        policy, _ = _rule(ctx.current, change.path)
        return _lost(ctx.current, (policy or {}).get("rules", []), f"policy {name} disabled")
    policy, _ = _rule(ctx.desired, change.path)
    return _gained(ctx.desired, (policy or {}).get("rules", []), f"policy {name} enabled")


def _rule_item(change: Change, ctx: Context) -> Judgement:
    name = change.path[-1].value
    if change.action is Action.DELETE:
        policy, _ = _rule(ctx.current, change.path)
        if policy is not None and not policy.get("enabled", True):
            return NEUTRAL, "the removed rule's policy was disabled"
        return _lost(ctx.current, [change.before], f"rule {name} removed")
    policy, _ = _rule(ctx.desired, change.path)
    if policy is not None and not policy.get("enabled", True):
        return NEUTRAL, "the new rule's policy is disabled"
    return _gained(ctx.desired, [change.after], f"new rule {name}")


def _rule_enabled(change: Change, ctx: Context) -> Judgement:
    policy, rule = _rule(ctx.desired, change.path)
    if not policy or not policy.get("enabled", True):
        return NEUTRAL, "the rule's policy is disabled"
    name = change.path[-2].value
    if change.before is True and change.after is False:
        _, old = _rule(ctx.current, change.path)
        return _lost(ctx.current, [{**(old or {}), "enabled": True}], f"rule {name} disabled")
    return _gained(ctx.desired, [rule or {}], f"rule {name} enabled")


def _rule_plan(change: Change, ctx: Context) -> Judgement:
    policy, rule = _rule(ctx.desired, change.path)
    if not policy or not rule or not policy.get("enabled", True) or not rule.get("enabled", True):
        return NEUTRAL, "the rule is disabled"
    before = _plans(ctx.current).get(change.before, "permit")
    after = _plans(ctx.desired).get(change.after, "permit")
    effect, reason = compare("action", before, after, ACTION_STRENGTH)
    return effect, f"{reason} (action plan {change.before} -> {change.after})"


def _narrower(narrower: bool | None, what: str, change: Change, ctx: Context) -> Judgement:
    """A rule matching fewer (narrower) or more messages; None: the guard cannot tell."""
    action = _protective(ctx.desired, change.path)
    if action is None:
        return NOT_PROTECTIVE
    if narrower is None:
        return NEUTRAL, f"{what}: the guard cannot tell whether the rule matches more or less"
    if narrower:
        return LOOSENING, f"the rule ({action}) matches fewer messages: {what}"
    return TIGHTENING, f"the rule ({action}) matches more messages: {what}"


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return float(parse_size(value))
    except ValueError:
        return None


def _condition(change: Change, ctx: Context) -> Judgement:
    inner = change.path[change.path.index("conditions") + 1 :]
    flips = sum(1 for p in inner if p == "not")
    last = inner[-1] if inner else None
    narrower: bool | None = None
    what = f"{'/'.join(str(p) for p in inner) or 'conditions'} {change.action.value}d"
    if change.kind == "member" and last in ("any", "phrases", "scope", "type"):
        narrower = change.action is Action.DELETE
        what = f"{_show(change)} {'removed from' if narrower else 'added to'} {last}"
    elif change.kind == "member" and last == "all":
        narrower = change.action is Action.CREATE
        what = f"{_show(change)} {'added to' if narrower else 'removed from'} all"
    elif last in ("min_matches", "over", "size_over", "type"):
        b, a = _number(change.before), _number(change.after)
        if change.action is Action.CREATE:
            narrower = True  # a new size or type limit
        elif change.action is Action.DELETE:
            narrower = False
        elif b is not None and a is not None and a != b:
            narrower = a > b
        what = f"{last} {_value(change.before)} -> {_value(change.after)}"
    elif last == "min_confidence":
        default = ClassifierCondition.model_fields["min_confidence"].default
        before, after = (CONFIDENCE_ORDER.index(v or default) for v in (change.before, change.after))
        narrower = None if before == after else after > before  # a higher bar counts fewer matches
        what = f"min_confidence {change.before or default} -> {change.after or default}"
    if narrower is not None and flips % 2:
        narrower = not narrower
        what += " (under not)"
    return _narrower(narrower, what, change, ctx)


def _show(change: Change) -> str:
    value = change.after if change.action is Action.CREATE else change.before
    return _value(value)


def _value(value: object) -> str:
    import json

    return "none" if value is None else json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _scope(change: Change, ctx: Context) -> Judgement:
    """senders, ip_groups, domains, domain_groups: an empty list means any."""
    field = str(change.path[-1])
    before = ctx.before(change.path) or []
    after = ctx.after(change.path) or []
    verdicts = []
    if change.kind == "member":
        if change.action is Action.DELETE:
            narrower = bool(after)  # removing the last entry leaves "any"
        else:
            narrower = not before  # the first entry turns "any" into a list
        verdicts.append(_narrower(narrower, f"{field}: {_show(change)} {change.action.value}d", change, ctx))
    return judge(verdicts, (NEUTRAL, field))


def _direction(change: Change, ctx: Context) -> Judgement:
    before, after = DLP_DIRECTIONS.get(change.before, frozenset()), DLP_DIRECTIONS.get(change.after, frozenset())
    lost, gained = before - after, after - before
    what = f"direction {change.before} -> {change.after}"
    if lost:
        return _narrower(True, what + f" (no longer {', '.join(sorted(lost))})", change, ctx)
    if gained:
        return _narrower(False, what, change, ctx)
    return NEUTRAL, what


def _neutral(reason: str):
    return lambda change, ctx: (NEUTRAL, reason)


def _unscannable(change: Change, ctx: Context) -> Judgement:
    """What happens to outbound mail DLP could not fully read (unset: the model's default)."""
    default = DLP.model_fields["unscannable"].default
    before, after = change.before or default, change.after or default
    return compare("action for mail DLP could not fully read", before, after, ACTION_STRENGTH)


def _plan_delivery(change: Change, ctx: Context) -> Judgement:
    """A plan's advanced envelopes: revocable (the relay keeps the key) or offline (for good)."""
    before, after = change.before or "the default", change.after or "the default"
    if change.before == "revocable":
        return LOOSENING, f"envelopes of this plan's mail are no longer forced revocable ({before} -> {after})"
    if change.after == "revocable":
        return TIGHTENING, f"envelopes of this plan's mail are revocable ({before} -> {after})"
    return NEUTRAL, f"envelopes of this plan's mail: {before} -> {after}"


RULES = [
    ("dlp.mode", _mode),
    ("dlp.unscannable", _unscannable),
    ("dlp.action_plans.#.email", _plan_action),
    ("dlp.action_plans.#.notify", _neutral("notifications only: what happens to the mail is unchanged")),
    ("dlp.action_plans.#.advanced_delivery", _plan_delivery),
    ("dlp.action_plans.#", _neutral("action plans act only through the rules that name them")),
    ("dlp.policies.#", _policy),
    ("dlp.policies.#.enabled", _policy_enabled),
    ("dlp.policies.#.rules.#", _rule_item),
    ("dlp.policies.#.rules.#.enabled", _rule_enabled),
    ("dlp.policies.#.rules.#.action_plan", _rule_plan),
    ("dlp.policies.#.rules.#.conditions*", _condition),
    ("dlp.policies.#.rules.#.source.senders", _scope),
    ("dlp.policies.#.rules.#.source.ip_groups", _scope),
    ("dlp.policies.#.rules.#.destination.domains", _scope),
    ("dlp.policies.#.rules.#.destination.domain_groups", _scope),
    ("dlp.policies.#.rules.#.destination.direction", _direction),
    ("dlp.policies.#.rules.#.severity", _neutral("severity is recorded with a match, not acted on")),
    ("dlp.classifiers*", _neutral("changes what a classifier finds; the guard cannot tell whether more or less")),
]
