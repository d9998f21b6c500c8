"""The downgrade guard: every change judged tightening, neutral or loosening, with why.

`classify(changes, desired, current)` returns the same changes with `effect` and a one-line
`reason`. Rules are looked up by the change's shape (its path with item keys as `#`), the
first that answers wins; what no rule knows is neutral. The rules read both configs (the
canonical JSON), because a change's meaning depends on its context: removing a CIDR
loosens if an enforced-TLS rule matches that group, tightens if the group is
`internal_servers`. This module holds the dispatch and the TLS, listener and encryption
rules; `guard_groups` the groups and routes, `guard_dlp` the DLP policies. What the guard
must read exactly as the relay does (the order of TLS levels, first-match routing, domain
patterns, the special group names) comes from `engine/policy/rules.py`, which the relay uses
too. The table of rules, in prose, is docs/plan.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from engine.config.model import TLS
from engine.plan.change import LOOSENING, NEUTRAL, TIGHTENING, Action, Change, Effect, Key, shape
from engine.plan.diff import SECRET_FIELDS, node_at
from engine.policy import rules

Judgement = tuple[Effect, str]
Rule = Callable[[Change, "Context"], Judgement | None]

# TLS levels, protocols, cipher strength and enforced-TLS directions are engine/policy/rules.py's,
# so the guard orders them exactly as the relay does.
# Encryption methods: TLS protects mail in transit only; the others protect the message itself.
METHOD_RANK = {"tls": 1, "third_party": 2, "advanced": 2, "secure_portal": 2}
BACKUP_RANK = {"none": 0, "advanced": 1, "third_party": 1}
UNKNOWN = (NEUTRAL, "no effect on protection known to the guard")


@dataclass(frozen=True)
class Context:
    """Both configs' canonical JSON ({} when there is no current config)."""

    desired: dict
    current: dict

    def before(self, path) -> object:
        return node_at(self.current, path)

    def after(self, path) -> object:
        return node_at(self.desired, path)


def compare(what: str, before: object, after: object, rank: Mapping) -> Judgement:
    """Lower rank after than before: loosening; higher: tightening; same: neutral."""
    b, a = rank.get(before), rank.get(after)
    if b is None or a is None:
        return NEUTRAL, f"{what}: {before} -> {after}"
    if a < b:
        return LOOSENING, f"{what} lowered: {before} -> {after}"
    if a > b:
        return TIGHTENING, f"{what} raised: {before} -> {after}"
    return NEUTRAL, f"{what}: {before} and {after} are equally strict"


def judge(effects: Iterable[Judgement], otherwise: Judgement) -> Judgement:
    """Several uses of one change: any loosening wins, then any tightening; every reason of
    the winning kind is given (a reviewer must see each thing the change loosens)."""
    effects = list(effects)
    for effect in (LOOSENING, TIGHTENING):
        found = list(dict.fromkeys(reason for e, reason in effects if e == effect))
        if found:
            return effect, "; ".join(found)
    return effects[0] if effects else otherwise


def renamed(change: Change, changes: Iterable[Change]) -> str | None:
    """The other name when a deleted (created) named item reappears created (deleted) under
    another name with the same settings: a rename, which loosens nothing."""
    if change.kind != "value" or not change.path or not isinstance(change.path[-1], Key):
        return None
    if change.path[:1] == ("routes",):
        return None  # a route's place matters too: guard_groups follows its recipients
    mine = change.before if change.action is Action.DELETE else change.after
    if not isinstance(mine, dict):
        return None
    other = Action.CREATE if change.action is Action.DELETE else Action.DELETE
    for c in changes:
        theirs = c.after if other is Action.CREATE else c.before
        if c.action is other and c.path[:-1] == change.path[:-1] and isinstance(theirs, dict):
            if {**theirs, "name": None} == {**mine, "name": None}:
                return theirs["name"]
    return None


# -- TLS ---------------------------------------------------------------------------------


def _level(change: Change, ctx: Context) -> Judgement:
    return compare_levels("TLS level", change.before, change.after, ctx)


def _route_level(change: Change, ctx: Context) -> Judgement:
    """A route without `tls` uses tls.outbound_default (of its own config)."""
    before = rules.route_level(change.before, outbound_default(ctx.current))
    after = rules.route_level(change.after, outbound_default(ctx.desired))
    return compare_levels("TLS level of the route", before, after, ctx)


def compare_levels(what: str, before: object, after: object, ctx: Context) -> Judgement:
    """Like `compare`, on what each level can mean (`rules.level_range`): `secure` -> `mta-sts`
    with an `opportunistic` fallback loosens (domains without a policy), `opportunistic` ->
    `mta-sts` tightens whatever the fallback."""
    b = _range(before, ctx.current) if isinstance(before, str) else None
    a = _range(after, ctx.desired) if isinstance(after, str) else None
    if a is None or b is None:
        return compare(what, before, after, rules.LEVEL_RANK)
    if a[0] < b[0] or a[1] < b[1]:
        weak = ""
        if a[0] < b[0] and after == "mta-sts":
            weak = f" (`mta-sts` falls back to {mta_sts_fallback(ctx.desired)})"
        elif a[0] < b[0] and after == "dane":
            weak = f" (`dane` falls back to {dane_fallback(ctx.desired)}, or `mandatory` for unusable TLSA records)"
        return LOOSENING, f"{what} lowered: {before} -> {after}{weak}"
    if a[0] > b[0] or a[1] > b[1]:
        return TIGHTENING, f"{what} raised: {before} -> {after}"
    return NEUTRAL, f"{what}: {before} and {after} are equally strict"


def level_range(level: str, config: dict) -> tuple[int, int]:
    """The ranks `level` can mean under `config`'s fallbacks (`rules.level_range`); an
    unknown name ranks as `none`."""
    return _range(level, config) or (0, 0)


def _range(level: str, config: dict) -> tuple[int, int] | None:
    return rules.level_range(level, mta_sts_fallback(config), dane_fallback(config))


def _dane_fallback(change: Change, ctx: Context) -> Judgement:
    """Like `_mta_sts_fallback`, for MX hosts without validated TLSA records."""
    return compare("TLS level of `dane` without TLSA records", change.before, change.after, rules.DANE_FALLBACK_RANK)


def _dnssec_on(value: object) -> bool:
    """`dnssec` of a `system.dns` value, or the value of `system.dns.dnssec` itself."""
    return value.get("dnssec") is True if isinstance(value, dict) else value is True


def _dnssec(change: Change, ctx: Context) -> Judgement | None:
    """Turning off `system.dns.dnssec` stops DANE (every host gets `tls.dane.fallback`): a
    loosening; turning it on lets validated TLSA records demand more: a tightening."""
    before, after = _dnssec_on(change.before), _dnssec_on(change.after)
    if before == after:  # `system.dns` changed otherwise: the other rules judge it
        return None
    if before:
        return LOOSENING, "DNSSEC validation turned off: `dane` no longer reads TLSA records"
    return TIGHTENING, "DNSSEC validation turned on: `dane` reads TLSA records"


def _mta_sts_fallback(change: Change, ctx: Context) -> Judgement:
    """The fallback matters only where a level says `mta-sts`, but lowering it is judged
    a loosening regardless, as a rule written now applies to levels set later."""
    return compare("TLS level of `mta-sts` without a policy", change.before, change.after, rules.LEVEL_RANK)


def dane_fallback(config: dict) -> str:
    """`tls.dane.fallback` of a canonical config (the model's default when not written)."""
    default = TLS.model_fields["dane"].default.fallback
    return (config.get("tls", {}).get("dane") or {}).get("fallback", default)


def outbound_default(config: dict) -> str:
    """`tls.outbound_default` of a canonical config (written out there; the model's default otherwise)."""
    return config.get("tls", {}).get("outbound_default", TLS.model_fields["outbound_default"].default)


def mta_sts_fallback(config: dict) -> str:
    """`tls.mta_sts.fallback` of a canonical config (the model's default when not written)."""
    default = TLS.model_fields["mta_sts"].default.fallback
    return (config.get("tls", {}).get("mta_sts") or {}).get("fallback", default)


def _protocol(change: Change, ctx: Context) -> Judgement:
    return compare("lowest TLS protocol", change.before, change.after, rules.PROTOCOL_RANK)


def _bits(change: Change, ctx: Context) -> Judgement:
    return compare("lowest cipher strength", change.before, change.after, rules.CIPHER_RANK)


SERVER_CIPHERS_RANK = {"compatible": 0, "intermediate": 1}


def _server_ciphers(change: Change, ctx: Context) -> Judgement:
    before, after = change.before or "intermediate", change.after or "intermediate"
    return compare("cipher suites the listeners offer", before, after, SERVER_CIPHERS_RANK)


def _enforced_rule(change: Change, ctx: Context) -> Judgement:
    rule = change.before if change.action is Action.DELETE else change.after
    what = f"{rule['direction']} connections with {_match_text(rule['match'])}"
    if change.action is Action.CREATE:
        return TIGHTENING, f"{what} must now use TLS at level {rule['level']}"
    if rules.LEVEL_RANK.get(rule["level"], 0) < rules.rank("mandatory"):
        below = _routes_below(ctx.desired, rule["level"]) if rule["direction"] != "inbound" else []
        if below:  # e.g. `opportunistic` over a `tls: none` route: the relay stops trying STARTTLS
            return LOOSENING, (
                f"enforced-TLS rule removed: {what} fall back to the weaker TLS of route(s) "
                f"{', '.join(below)} instead of {rule['level']}"
            )
        return NEUTRAL, f"the removed rule only asked for {rule['level']} TLS, which every route already has"
    return LOOSENING, f"enforced-TLS rule removed: {what} no longer must use {rule['level']} TLS"


def _routes_below(config: dict, level: str) -> list[str]:
    """The routes of `config` (and the implicit default) whose TLS level is below `level`."""
    default = outbound_default(config)
    named = [(r.get("name", "?"), rules.route_level(r.get("tls"), default)) for r in config.get("routes", [])]
    named.append(("(default)", default))
    return [name for name, have in named if rules.rank(have) < rules.rank(level)]


def _match_text(match: dict) -> str:
    if "ip_group" in match:
        return f"IP group {match['ip_group']}"
    return f"domain group {match.get('domain_group')}"


def _enforced_direction(change: Change, ctx: Context) -> Judgement:
    before, after = rules.DIRECTIONS.get(change.before, frozenset()), rules.DIRECTIONS.get(change.after, frozenset())
    lost, gained = before - after, after - before
    if lost:
        return LOOSENING, f"the rule no longer applies to {' and '.join(sorted(lost))} connections"
    if gained:
        return TIGHTENING, f"the rule now also applies to {' and '.join(sorted(gained))} connections"
    return UNKNOWN


def _enforced_match(change: Change, ctx: Context) -> Judgement:
    """The peers a rule covers changed: loosening if a peer covered before is not now."""
    rule = next(i for i, p in enumerate(change.path) if isinstance(p, Key))
    old = ctx.before((*change.path[: rule + 1], "match")) or {}
    new = ctx.after((*change.path[: rule + 1], "match")) or {}
    (old_kind, old_group), (new_kind, new_group) = _group_of(old), _group_of(new)
    if old_kind != new_kind:
        return (
            LOOSENING,
            f"now matches {_match_text(new)} instead of {_match_text(old)}: those peers are no longer covered",
        )
    section = f"{old_kind}s"  # ip_groups or domain_groups
    old_members = set(ctx.current.get(section, {}).get(old_group, []))
    new_members = set(ctx.desired.get(section, {}).get(new_group, []))
    lost = sorted(old_members - new_members)
    if lost:
        return LOOSENING, f"peers in {old_group} but not in {new_group} are no longer covered: {', '.join(lost[:3])}"
    if new_members - old_members:
        return TIGHTENING, f"{new_group} covers every peer of {old_group} and more"
    return NEUTRAL, f"{new_group} holds the same entries as {old_group}"


def _group_of(match: dict) -> tuple[str, str]:
    if "ip_group" in match:
        return "ip_group", match["ip_group"]
    return "domain_group", match.get("domain_group", "")


# -- listeners and endpoints -------------------------------------------------------------


def _starttls(change: Change, ctx: Context) -> Judgement:
    if change.before == "required" and change.after == "offered":
        return LOOSENING, "clients may send mail without STARTTLS on this listener"
    if change.before == "offered" and change.after == "required":
        return TIGHTENING, "clients must issue STARTTLS before MAIL FROM on this listener"
    return UNKNOWN


def _loopback(address: object) -> bool:
    try:
        return ipaddress.ip_address(str(address)).is_loopback
    except ValueError:
        return False


def _admin_address(change: Change, ctx: Context) -> Judgement:
    before = change.before.get("address") if isinstance(change.before, dict) else change.before
    after = change.after.get("address") if isinstance(change.after, dict) else change.after
    if _loopback(before) and not _loopback(after):
        return LOOSENING, f"the admin API now listens on {after}, beyond loopback"
    if not _loopback(before) and _loopback(after):
        return TIGHTENING, "the admin API now listens on loopback only"
    return NEUTRAL, "the admin API moves"


# -- encryption --------------------------------------------------------------------------


def _method(change: Change, ctx: Context) -> Judgement:
    verdict = compare("encryption method", change.before, change.after, METHOD_RANK)
    if verdict[0] == LOOSENING:
        return LOOSENING, f"mail that must be encrypted is now protected in transit only ({change.after})"
    return verdict


def _backup(change: Change, ctx: Context) -> Judgement:
    if ctx.desired.get("encryption", {}).get("method", "tls") != "tls":
        return NEUTRAL, "a backup method only applies with method: tls"
    verdict = compare("backup method", change.before or "none", change.after or "none", BACKUP_RANK)
    if verdict[0] == LOOSENING:
        return LOOSENING, "no backup encryption when the TLS connection fails"
    if verdict[0] == TIGHTENING:
        return TIGHTENING, f"when the TLS connection fails, mail is encrypted with {change.after}"
    return verdict


def _permission_allowed(change: Change, ctx: Context) -> Judgement:
    what = change.path[-2]
    if change.before is False and change.after is True:
        return LOOSENING, f"portal users may now {str(what).replace('_', ' ')}"
    if change.before is True and change.after is False:
        return TIGHTENING, f"portal users may no longer {str(what).replace('_', ' ')}"
    return UNKNOWN


def _permission_recipients(change: Change, ctx: Context) -> Judgement:
    what = str(change.path[-2]).replace("_", " ")
    allowed = ctx.after((*change.path[:-1], "allowed"))
    if not allowed:
        return NEUTRAL, f"{what} is not allowed, so its recipients do not matter"
    if change.before == "internal" and change.after == "any":
        return LOOSENING, f"portal users may now {what} to external recipients"
    if change.before == "any" and change.after == "internal":
        return TIGHTENING, f"portal users may {what} to internal recipients only"
    return UNKNOWN


MFA_RANK = {"off": 0, "optional": 1, "required": 2}


def _portal_mfa(change: Change, ctx: Context) -> Judgement:
    verdict = compare("portal two-step sign-in", change.before or "optional", change.after or "optional", MFA_RANK)
    if verdict[0] == LOOSENING and change.after == "off":
        return LOOSENING, "portal accounts lose their second factor: a password or an email code alone opens them"
    return verdict


def _portal_window(what: str) -> Rule:
    """A code or session that stays valid longer is a longer window for whoever holds it."""

    def judge(change: Change, ctx: Context) -> Judgement:
        from engine.config.units import parse_duration

        try:
            before, after = parse_duration(change.before), parse_duration(change.after)
        except (TypeError, ValueError):
            return UNKNOWN
        if after > before:
            return LOOSENING, f"{what} longer: {change.before} -> {change.after}"
        if after < before:
            return TIGHTENING, f"{what} shorter: {change.before} -> {change.after}"
        return UNKNOWN

    return judge


def _advanced_delivery(change: Change, ctx: Context) -> Judgement:
    if change.before == "revocable" and change.after == "offline":
        return LOOSENING, "envelopes open offline with the recipient's key: they can no longer be withdrawn"
    if change.before == "offline" and change.after == "revocable":
        return TIGHTENING, "every envelope needs the key the relay holds: revocable, every open audited"
    return UNKNOWN


def _kdf_iterations(change: Change, ctx: Context) -> Judgement:
    if isinstance(change.before, int) and isinstance(change.after, int):
        if change.after < change.before:
            return LOOSENING, f"fewer key-derivation iterations: {change.before} -> {change.after}"
        return TIGHTENING, f"more key-derivation iterations: {change.before} -> {change.after}"
    return UNKNOWN


def _smime(change: Change, ctx: Context) -> Judgement:
    """S/MIME's outbound half (`certificates`) protects mail; its inbound half (`keys`) only
    lets the relay decrypt, which `decrypt_inbound` judges. A block or a `certificates`
    setting counts by whether it names a certificate directory."""
    whole = len(change.path) == 2  # encryption.smime itself, not its certificates
    before = _certificates(change.before) if whole else change.before
    after = _certificates(change.after) if whole else change.after
    if before is None and after is not None:
        return TIGHTENING, "recipients with a known certificate get S/MIME"
    if before is not None and after is None and ctx.desired.get("encryption", {}).get("method", "tls") == "tls":
        return LOOSENING, "recipients with a known certificate lose S/MIME: their mail is protected in transit only"
    if before is None and after is None:
        return NEUTRAL, "S/MIME keys only: they protect no outbound mail (`decrypt_inbound` governs their use)"
    return NEUTRAL, "S/MIME certificates move"


def _certificates(block: object) -> object:
    return block.get("certificates") if isinstance(block, dict) else None


DECRYPTING = (
    LOOSENING,
    "inbound S/MIME mail is decrypted on the relay: it is queued and delivered to internal servers "
    "in clear, no longer end to end encrypted",
)


def _decrypt_inbound(change: Change, ctx: Context) -> Judgement:
    """Turning decryption on loosens: mail its sender encrypted end to end rests in the queue
    and crosses the internal hop in clear. Off is neutral, not tightening: mail stays as
    sent, and what is lost is DLP's record of inbound content, which never acted on it."""
    if change.before is not True and change.after is True:
        return DECRYPTING
    if change.before is True and change.after is not True:
        return (
            NEUTRAL,
            "inbound S/MIME mail is no longer decrypted: it reaches mailboxes as sent (DLP no longer sees inside)",
        )
    return UNKNOWN


def _advanced(change: Change, ctx: Context) -> Judgement | None:
    """The advanced block added with decryption on is judged as turning it on."""
    before = isinstance(change.before, dict) and change.before.get("decrypt_inbound") is True
    after = isinstance(change.after, dict) and change.after.get("decrypt_inbound") is True
    return DECRYPTING if after and not before else None


def _neutral(reason: str) -> Rule:
    return lambda change, ctx: (NEUTRAL, reason)


def _rules() -> list[tuple[str, Rule]]:
    from engine.plan import guard_dlp, guard_groups

    return [
        ("tests*", _neutral("policy tests do not change how mail is handled")),
        ("version", _neutral("the config format version")),
        ("tls.outbound_default", _level),
        ("tls.mta_sts.fallback", _mta_sts_fallback),
        ("tls.dane.fallback", _dane_fallback),
        ("system.dns", _dnssec),
        ("system.dns.dnssec", _dnssec),
        ("tls.server_ciphers", _server_ciphers),
        ("routes.#.tls", _route_level),
        ("enforced_tls.#.level", _level),
        ("encryption.tls.level", _level),
        ("encryption.third_party.tls", _level),
        ("*.min_protocol", _protocol),
        ("*.min_cipher_bits", _bits),
        ("enforced_tls.#", _enforced_rule),
        ("enforced_tls.#.direction", _enforced_direction),
        ("enforced_tls.#.match*", _enforced_match),
        ("system.listeners.#.starttls", _starttls),
        ("system.message_size_limit", _neutral("the size limit does not change protection")),
        (
            "delivery.destination_concurrency*",
            _neutral("how many deliveries go to one destination at once; protection is unchanged"),
        ),
        (
            "delivery.dead_after",
            _neutral("when a destination that keeps failing is declared dead; protection is unchanged"),
        ),
        ("delivery.timeouts*", _neutral("how long delivery waits on a next hop; protection is unchanged")),
        (
            "delivery.c*_timeout",
            _neutral("connect_timeout and command_timeout are now delivery.timeouts; protection is unchanged"),
        ),
        ("system.admin", _admin_address),
        ("system.admin.address", _admin_address),
        ("encryption.method", _method),
        ("encryption.backup", _backup),
        ("encryption.secure_portal.permissions.*.allowed", _permission_allowed),
        ("encryption.secure_portal.permissions.*.recipients", _permission_recipients),
        ("encryption.secure_portal.mfa", _portal_mfa),
        ("encryption.secure_portal.code_lifetime", _portal_window("one-time codes stay valid")),
        ("encryption.secure_portal.session_idle", _portal_window("an idle portal session stays open")),
        ("encryption.secure_portal.session_lifetime", _portal_window("a portal session lasts")),
        (
            "encryption.secure_portal.database",
            _neutral("the portal keeps its data in another database (what the old one holds is not moved)"),
        ),
        ("encryption.advanced.kdf.iterations", _kdf_iterations),
        ("encryption.advanced.delivery", _advanced_delivery),
        ("encryption.advanced.expire_after", _portal_window("the relay holds message keys (online opening)")),
        ("encryption.advanced.max_envelope_size", _neutral("where a large message's ciphertext travels")),
        ("encryption.smime", _smime),
        ("encryption.smime.certificates", _smime),
        (
            "encryption.smime.keys",
            _neutral("the keys held for inbound decryption change (`decrypt_inbound` governs their use)"),
        ),
        ("encryption.advanced", _advanced),
        ("encryption.advanced.decrypt_inbound", _decrypt_inbound),
        (
            "encryption.advanced.decryption_header",
            _neutral("the decryption result header is renamed: mailbox filters that read it must follow"),
        ),
        *((f"*.{name}", _neutral("a secret reference changes (its value is never shown)")) for name in SECRET_FIELDS),
        ("tls.certificate*", _neutral("the relay presents another certificate")),
        *guard_groups.RULES,
        *guard_dlp.RULES,
    ]


def classify(changes: Iterable[Change], desired: dict, current: dict | None) -> list[Change]:
    """Judge every change. `desired`/`current` are the canonical JSON the changes came from."""
    changes = list(changes)
    ctx = Context(desired, current or {})
    rules = _rules()
    out = []
    for change in changes:
        verdict = _first_rename(change, changes)
        if verdict is None and current is not None:
            verdict = next(
                (v for pattern, rule in rules if fnmatchcase(shape(change.path), pattern) and (v := rule(change, ctx))),
                None,
            )
        if verdict is None and current is None:
            verdict = (NEUTRAL, "the first config: nothing to compare with")
        out.append(change.judged(*(verdict or UNKNOWN)))
    return out


def _first_rename(change: Change, changes: list[Change]) -> Judgement | None:
    other = renamed(change, changes)
    if other is None:
        return None
    if change.action is Action.DELETE:
        return NEUTRAL, f"renamed to {other!r} with the same settings"
    return NEUTRAL, f"renamed from {other!r} with the same settings"
