"""The downgrade guard: every golden case's loosenings and tightenings, pinned by label.

`EXPECTED[case] = (loosenings, tightenings)`, each a list of `label(change)` (marker,
address, and for a set member the member). Every case must be listed, so a new case
states what the guard must say about it; a regenerated golden cannot flip a verdict
unnoticed. The unit tests below cover the context rules the corpus does not isolate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from engine.plan.build import make_plan
from engine.plan.change import LOOSENING, NEUTRAL, TIGHTENING
from engine.plan.diff import canonical
from engine.plan.render import label
from tests.plan.conftest import CASES, load, plan_case

EXPECTED: dict[str, tuple[list[str], list[str]]] = {
    "drift": ([], ["~ tls.outbound_default"]),
    "first-config": ([], []),
    "loosen-admin-address": (["~ system.admin.address"], []),
    "loosen-backup-none": (["~ encryption.backup"], []),
    "loosen-decrypt-inbound": (["~ encryption.advanced.decrypt_inbound"], []),
    "loosen-dlp-block-to-encrypt": (['~ dlp.action_plans["block-it"].email'], []),
    "loosen-dlp-block-to-permit": (['~ dlp.policies["secrets"].rules["marked-secret"].action_plan'], []),
    "loosen-dlp-condition-added-to-all": (
        ['+ dlp.policies["secrets"].rules["marked-secret"].conditions.all {"attachment_count": {"over": 2}}'],
        [],
    ),
    "loosen-dlp-condition-removed": (
        [
            '- dlp.policies["cards"].rules["card-numbers"].conditions.any {"classifier": "credit_card", "min_confidence": "medium", "min_matches": 1, "scope": ["subject", "body", "attachments"]}'
        ],
        [],
    ),
    "loosen-dlp-destination-narrowed": (
        ['- dlp.policies["cards"].rules["card-numbers"].destination.domain_groups "vendors"'],
        [],
    ),
    "loosen-dlp-direction": (['~ dlp.policies["cards"].rules["card-numbers"].destination.direction'], []),
    "loosen-dlp-encrypt-to-permit": (['~ dlp.action_plans["encrypt-it"].email'], []),
    "loosen-dlp-min-matches": (
        ['~ dlp.policies["cards"].rules["card-numbers"].conditions.any["classifier:credit_card"].min_matches'],
        [],
    ),
    "loosen-dlp-min-confidence": (
        ['~ dlp.policies["cards"].rules["card-numbers"].conditions.any["classifier:credit_card"].min_confidence'],
        [],
    ),
    "loosen-dlp-mode": (["~ dlp.mode"], []),
    "loosen-dlp-unscannable": (["~ dlp.unscannable"], []),
    "loosen-server-ciphers": (["~ tls.server_ciphers"], []),
    "loosen-dlp-phrase-removed": (
        ['- dlp.policies["cards"].rules["card-numbers"].conditions.any["phrases"].phrases "account statement"'],
        [],
    ),
    "loosen-dlp-policy-disabled": (['~ dlp.policies["secrets"].enabled'], []),
    "loosen-dlp-policy-removed": (['- dlp.policies["cards"]'], []),
    "loosen-dlp-quarantine-to-permit": (['~ dlp.action_plans["hold-it"].email'], []),
    "loosen-dlp-rule-disabled": (['~ dlp.policies["cards"].rules["card-numbers"].enabled'], []),
    "loosen-dlp-rule-removed": (['- dlp.policies["secrets"].rules["big-files"]'], []),
    "loosen-dlp-size-threshold": (['~ dlp.policies["secrets"].rules["big-files"].conditions.attachment.size_over'], []),
    "loosen-dlp-source-narrowed": (
        ['+ dlp.policies["secrets"].rules["marked-secret"].source.senders "*@example.com"'],
        [],
    ),
    "loosen-dlp-under-not": (
        ['+ dlp.policies["secrets"].rules["marked-secret"].conditions.all["not"].not.phrases "internal only"'],
        [],
    ),
    "loosen-domain-group-shrunk": (['- domain_groups.partners "*.bank.example"'], []),
    "loosen-encryption-tls-level": (["~ encryption.tls.level"], []),
    "loosen-enforced-direction": (['~ enforced_tls["banks-inbound"].direction'], []),
    "loosen-enforced-level": (['~ enforced_tls["partners-outbound"].level'], []),
    "loosen-enforced-match": (['~ enforced_tls["banks-inbound"].match.ip_group'], []),
    "loosen-enforced-rule-removed": (['- enforced_tls["partners-outbound"]'], []),
    "loosen-gateway-grown": (['+ ip_groups.encryption_gateway "192.0.2.11/32"'], []),
    "loosen-internal-domains-grown": (['+ system.internal_domains "partner.example"'], []),
    "loosen-internal-servers-grown": (['+ ip_groups.internal_servers "0.0.0.0/0"'], []),
    "loosen-ip-group-shrunk": (['- ip_groups.banks "198.51.100.0/24"'], []),
    "loosen-kdf-iterations": (["~ encryption.advanced.kdf.iterations"], []),
    "loosen-method": (["~ encryption.method"], []),
    "loosen-min-cipher-bits": (['~ enforced_tls["banks-inbound"].min_cipher_bits'], []),
    "loosen-min-protocol": (['~ enforced_tls["banks-inbound"].min_protocol'], []),
    "loosen-portal-allowed": (["~ encryption.secure_portal.permissions.forward.allowed"], []),
    "loosen-portal-recipients": (["~ encryption.secure_portal.permissions.compose.recipients"], []),
    "loosen-advanced-delivery": (
        ["~ encryption.advanced.delivery"],
        ["~ encryption.advanced.expire_after"],
    ),
    "loosen-portal-mfa": (["~ encryption.secure_portal.mfa"], ["~ encryption.secure_portal.session_idle"]),
    "loosen-portal-code-lifetime": (["~ encryption.secure_portal.code_lifetime"], []),
    "loosen-route-ahead": (['+ routes["cheap"]'], []),
    "loosen-route-removed": (['- routes["vendors"]'], []),
    "loosen-route-tls": (['~ routes["vendors"].tls'], []),
    "loosen-route-tls-unset": (['- routes["vendors"].tls'], []),
    "loosen-starttls": (['~ system.listeners["submission"].starttls'], []),
    "loosen-tls-outbound-default": (["~ tls.outbound_default"], []),
    "named-list": ([], []),
    "nested": ([], ["~ encryption.advanced.kdf.iterations"]),
    "neutral-delivery-scheduling": ([], []),
    "neutral-gateway-shrunk": ([], []),
    "no-change": ([], []),
    "rename": ([], []),
    "rename-and-weaken": (['- enforced_tls["partners-outbound"]'], ['+ enforced_tls["partners-tls"]']),
    "reorder-named": ([], []),
    "reorder-routes": (["~ routes"], []),
    "reorder-routes-neutral": ([], []),
    "scalar": ([], []),
    "secrets": ([], ['+ routes["relayhost"]']),
    "set-of-values": ([], []),
    "tighten-access": (
        [],
        [
            '+ enforced_tls["vendors-outbound"]',
            '- ip_groups.internal_servers "10.0.0.0/8"',
            "~ encryption.secure_portal.permissions.reply_all.allowed",
            '~ system.listeners["mx"].starttls',
        ],
    ),
    "tighten-dlp": (
        [],
        [
            '+ dlp.policies["cards"].rules["card-numbers"].conditions.any["phrases"].phrases "iban"',
            '+ dlp.policies["ssn"]',
            '~ dlp.action_plans["hold-it"].email',
            '~ dlp.policies["cards"].rules["card-numbers"].action_plan',
        ],
    ),
    "tighten-dlp-min-confidence": (
        [],
        ['~ dlp.policies["cards"].rules["card-numbers"].conditions.any["classifier:credit_card"].min_confidence'],
    ),
    "tighten-tls": (
        [],
        [
            '+ ip_groups.banks "192.0.2.128/25"',
            '~ enforced_tls["banks-inbound"].min_protocol',
            '~ routes["vendors"].tls',
            "~ tls.outbound_default",
        ],
    ),
}
NAMES = sorted(p.name for p in CASES.iterdir() if p.is_dir())


def test_every_case_states_its_verdicts() -> None:
    assert sorted(EXPECTED) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_verdicts(name: str) -> None:
    plan = plan_case(CASES / name)
    loosenings, tightenings = EXPECTED[name]
    assert sorted(label(c) for c in plan.loosenings) == loosenings
    assert sorted(label(c) for c in plan.tightenings) == tightenings
    for change in plan.changes:
        assert change.reason, f"{label(change)} has no reason"


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("loosen-")])
def test_each_loosening_kind_is_caught_alone(name: str) -> None:
    """One loosening per case, and it is what apply will refuse without --allow-downgrade."""
    plan = plan_case(CASES / name)
    assert len(plan.loosenings) == 1
    assert plan.has_changes


BASE = canonical(load(CASES / "no-change" / "before.yaml"))


def judged(mutate: Callable[[dict], None]) -> dict[str, tuple[str, str]]:
    """label -> (effect, reason) of the plan from the base config to a mutated copy."""
    desired = copy.deepcopy(BASE)
    mutate(desired)
    plan = make_plan(desired, BASE, created_at="t")
    return {label(c): (c.effect, c.reason) for c in plan.changes}


def _policy(config: dict, name: str) -> dict:
    return next(p for p in config["dlp"]["policies"] if p["name"] == name)


def _rule(config: dict, policy: str, name: str) -> dict:
    return next(r for r in _policy(config, policy)["rules"] if r["name"] == name)


def test_a_subnet_of_an_entry_adds_no_peer() -> None:
    def mutate(c: dict) -> None:
        c["ip_groups"]["internal_servers"].append("10.20.0.0/16")

    assert judged(mutate) == {
        '+ ip_groups.internal_servers "10.20.0.0/16"': (
            NEUTRAL,
            "10.20.0.0/16 adds or removes nothing: other entries of internal_servers cover the same",
        )
    }


def test_a_domain_under_a_wildcard_adds_no_domain() -> None:
    def mutate(c: dict) -> None:
        c["domain_groups"]["partners"].append("*.eu.bank.example")

    ((effect, _),) = judged(mutate).values()
    assert effect == NEUTRAL


def test_removing_the_last_sender_widens_a_rule_to_any_sender() -> None:
    def before(c: dict) -> None:
        _rule(c, "secrets", "marked-secret")["source"]["senders"] = ["*@example.com"]

    base = copy.deepcopy(BASE)
    before(base)
    plan = make_plan(BASE, base, created_at="t")  # from one sender back to "any sender"
    (change,) = plan.changes
    assert change.effect == TIGHTENING and "matches more messages" in change.reason


def test_adding_a_second_sender_widens_a_rule() -> None:
    base = copy.deepcopy(BASE)
    _rule(base, "secrets", "marked-secret")["source"]["senders"] = ["*@example.com"]
    desired = copy.deepcopy(base)
    _rule(desired, "secrets", "marked-secret")["source"]["senders"].append("*@corp.example.com")
    (change,) = make_plan(desired, base, created_at="t").changes
    assert change.effect == TIGHTENING


def test_two_nots_cancel() -> None:
    base = copy.deepcopy(BASE)
    _rule(base, "secrets", "marked-secret")["conditions"] = {"not": {"not": {"phrases": ["x"], "min_matches": 1}}}
    desired = copy.deepcopy(base)
    _rule(desired, "secrets", "marked-secret")["conditions"]["not"]["not"]["min_matches"] = 2
    (change,) = make_plan(desired, base, created_at="t").changes
    assert change.effect == LOOSENING and change.reason.endswith("min_matches 1 -> 2")


def test_a_rewritten_condition_is_neutral_and_says_why() -> None:
    def mutate(c: dict) -> None:
        _rule(c, "secrets", "big-files")["conditions"] = {"classifier": "iban"}

    ((effect, reason),) = judged(mutate).values()
    assert effect == NEUTRAL and "cannot tell" in reason


def test_changes_to_a_permit_rule_or_a_disabled_policy_loosen_nothing() -> None:
    def permit_rule(c: dict) -> None:
        _rule(c, "secrets", "big-files")["action_plan"] = "let-it-go"

    base = copy.deepcopy(BASE)
    permit_rule(base)
    desired = copy.deepcopy(base)
    _rule(desired, "secrets", "big-files")["conditions"]["attachment"]["size_over"] = "90MB"
    (change,) = make_plan(desired, base, created_at="t").changes
    assert change.effect == NEUTRAL

    base = copy.deepcopy(BASE)
    _policy(base, "secrets")["enabled"] = False
    desired = copy.deepcopy(base)
    _policy(desired, "secrets")["rules"].pop()
    (change,) = make_plan(desired, base, created_at="t").changes
    assert change.effect == NEUTRAL and "disabled" in change.reason


def test_an_unused_action_plan_weakened_is_neutral() -> None:
    def mutate(c: dict) -> None:
        c["dlp"]["action_plans"][3]["email"] = "block"  # let-it-go: no rule uses it

    ((effect, reason),) = judged(mutate).values()
    assert effect == NEUTRAL and "no enabled rule uses" in reason


def test_backup_only_counts_with_method_tls() -> None:
    def mutate(c: dict) -> None:
        c["encryption"]["method"] = "advanced"
        c["encryption"]["backup"] = "none"

    verdicts = judged(mutate)
    assert verdicts["~ encryption.method"][0] == TIGHTENING
    assert verdicts["~ encryption.backup"] == (NEUTRAL, "a backup method only applies with method: tls")


def test_recipients_of_a_refused_permission_do_not_matter() -> None:
    def mutate(c: dict) -> None:
        c["encryption"]["secure_portal"]["permissions"]["forward"]["recipients"] = "any"

    ((effect, _),) = judged(mutate).values()
    assert effect == NEUTRAL


def test_internal_servers_shrunk_is_a_tightening_even_with_an_outbound_dlp_rule_on_it() -> None:
    def mutate(c: dict) -> None:
        c["ip_groups"]["internal_servers"] = ["10.1.0.0/16"]

    verdicts = judged(mutate)
    assert verdicts['- ip_groups.internal_servers "10.0.0.0/8"'][0] == TIGHTENING
    assert verdicts['+ ip_groups.internal_servers "10.1.0.0/16"'][0] == NEUTRAL


def test_a_group_not_used_anywhere_is_neutral() -> None:
    def mutate(c: dict) -> None:
        c["ip_groups"]["lab"] = []

    ((effect, reason),) = judged(mutate).values()
    assert effect == NEUTRAL and "not used" in reason


def test_a_route_change_is_judged_by_its_own_effect() -> None:
    """outbound_default lowered and a route added: the route is not blamed for the default."""

    def mutate(c: dict) -> None:
        c["tls"]["outbound_default"] = "none"
        c["routes"].insert(1, {"name": "extra", "recipients": {"domains": ["extra.example"]}, "tls": "secure"})

    verdicts = judged(mutate)
    assert verdicts["~ tls.outbound_default"][0] == LOOSENING
    assert verdicts['+ routes["extra"]'][0] == TIGHTENING


def test_moving_the_admin_api_to_loopback_tightens() -> None:
    base = copy.deepcopy(BASE)
    base["system"]["admin"]["address"] = "0.0.0.0"
    (change,) = make_plan(BASE, base, created_at="t").changes
    assert change.effect == TIGHTENING


def test_turning_tls_reports_off_is_neutral() -> None:
    """TLS-RPT only tells recipient domains how our sessions went; without it every message
    still goes out under the same TLS policy, so switching it off protects nothing less."""
    base = copy.deepcopy(BASE)
    base["system"]["tls_reporting"] = {"enabled": True, "send_at": "01:00"}
    (change,) = make_plan(BASE, base, created_at="t").changes
    assert change.path[-1] == "enabled" and change.effect == NEUTRAL


def test_an_enforced_rule_matching_a_larger_group_is_not_a_loosening() -> None:
    base = copy.deepcopy(BASE)
    base["ip_groups"]["more_banks"] = [*BASE["ip_groups"]["banks"], "192.0.2.0/24"]
    desired = copy.deepcopy(base)
    desired["enforced_tls"][0]["match"] = {"ip_group": "more_banks"}
    (change,) = make_plan(desired, base, created_at="t").changes
    assert change.effect == TIGHTENING


def test_an_enforced_rule_switching_group_kind_loosens() -> None:
    def mutate(c: dict) -> None:
        c["enforced_tls"][0]["match"] = {"domain_group": "partners"}

    ((effect, reason),) = judged(mutate).values()
    assert effect == LOOSENING and "instead of IP group banks" in reason


def test_the_first_config_is_neutral() -> None:
    plan = make_plan(BASE, None, created_at="t")
    assert plan.base_hash is None and plan.changes
    assert {c.effect for c in plan.changes} == {NEUTRAL}


def test_inbound_decryption_off_is_neutral_and_its_keys_protect_nothing() -> None:
    """Decryption on loosens (the golden case); off, the keys and the header are neutral:
    mail stays as its sender encrypted it, and inbound DLP never acted on it anyway."""
    base = copy.deepcopy(BASE)
    base["encryption"]["advanced"]["decrypt_inbound"] = True
    base["encryption"]["smime"] = {"keys": "keys/smime"}
    desired = copy.deepcopy(base)
    desired["encryption"]["advanced"]["decrypt_inbound"] = False
    desired["encryption"]["advanced"]["decryption_header"] = "X-Decrypted"
    desired["encryption"]["smime"]["keys"] = "other/keys"
    verdicts = {label(c): (c.effect, c.reason) for c in make_plan(desired, base, created_at="t").changes}
    assert verdicts == {
        "~ encryption.advanced.decrypt_inbound": (
            NEUTRAL,
            "inbound S/MIME mail is no longer decrypted: it reaches mailboxes as sent (DLP no longer sees inside)",
        ),
        "~ encryption.advanced.decryption_header": (
            NEUTRAL,
            "the decryption result header is renamed: mailbox filters that read it must follow",
        ),
        "~ encryption.smime.keys": (
            NEUTRAL,
            "the keys held for inbound decryption change (`decrypt_inbound` governs their use)",
        ),
    }


def test_an_advanced_block_added_with_decryption_on_loosens() -> None:
    base = copy.deepcopy(BASE)
    del base["encryption"]["advanced"]
    base["encryption"]["backup"] = "none"
    base["encryption"]["smime"] = {"keys": "keys/smime"}
    desired = copy.deepcopy(base)
    desired["encryption"]["advanced"] = {"portal_url": "https://secure.example.com", "decrypt_inbound": True}
    (change,) = make_plan(desired, base, created_at="t").changes
    assert (label(change), change.effect) == ("+ encryption.advanced", LOOSENING)
    assert change.reason.startswith("inbound S/MIME mail is decrypted on the relay")


def test_smime_is_judged_by_its_certificates_not_its_keys() -> None:
    def plan(before: dict | None, after: dict | None) -> list[tuple[str, str]]:
        base, desired = copy.deepcopy(BASE), copy.deepcopy(BASE)
        for config, block in ((base, before), (desired, after)):
            if block is not None:
                config["encryption"]["smime"] = block
        return [(label(c), c.effect) for c in make_plan(desired, base, created_at="t").changes]

    assert plan(None, {"keys": "k"}) == [("+ encryption.smime", NEUTRAL)]
    assert plan({"keys": "k"}, None) == [("- encryption.smime", NEUTRAL)]
    assert plan(None, {"certificates": "c"}) == [("+ encryption.smime", TIGHTENING)]
    assert plan({"certificates": "c"}, None) == [("- encryption.smime", LOOSENING)]
    assert plan({"keys": "k"}, {"keys": "k", "certificates": "c"}) == [("+ encryption.smime.certificates", TIGHTENING)]
    assert plan({"keys": "k", "certificates": "c"}, {"keys": "k"}) == [("- encryption.smime.certificates", LOOSENING)]


def test_an_action_plans_advanced_delivery() -> None:
    def plans(value):
        def mutate(c: dict) -> None:
            plan = c["dlp"]["action_plans"][0]
            if value is None:
                plan.pop("advanced_delivery", None)
            else:
                plan["advanced_delivery"] = value

        return mutate

    name = BASE["dlp"]["action_plans"][0]["name"]
    where = f'dlp.action_plans["{name}"].advanced_delivery'
    forced = judged(plans("revocable"))
    assert forced[f"+ {where}"][0] == TIGHTENING
    forced_config = copy.deepcopy(BASE)
    plans("revocable")(forced_config)
    dropped = make_plan(copy.deepcopy(BASE), forced_config, created_at="t")
    [change] = [c for c in dropped.changes if label(c) == f"- {where}"]
    assert (change.effect, change.reason) == (
        LOOSENING,
        "envelopes of this plan's mail are no longer forced revocable (revocable -> the default)",
    )


def test_min_confidence_under_not_flips() -> None:
    """A higher bar under `not` lets the `not` hold more often: the rule matches more."""

    def mutate(c: dict) -> None:
        rule = _rule(c, "secrets", "marked-secret")
        rule["conditions"]["all"][1]["not"] = {"classifier": "email_address", "min_confidence": "high"}

    base = copy.deepcopy(BASE)
    _rule(base, "secrets", "marked-secret")["conditions"]["all"][1]["not"] = {
        "classifier": "email_address",
        "min_confidence": "medium",
    }
    desired = copy.deepcopy(base)
    mutate(desired)
    plan = make_plan(desired, base, created_at="t")
    [change] = plan.changes
    assert change.effect == TIGHTENING and "min_confidence medium -> high (under not)" in change.reason


def _with_fallback(fallback: str, mutate: Callable[[dict], None]) -> dict[str, tuple[str, str]]:
    """Like `judged`, from a base whose `tls.mta_sts.fallback` is `fallback` already."""
    base = copy.deepcopy(BASE)
    base["tls"]["mta_sts"] = {"fallback": fallback}
    desired = copy.deepcopy(base)
    mutate(desired)
    return {label(c): (c.effect, c.reason) for c in make_plan(desired, base, created_at="t").changes}


@pytest.mark.parametrize("fallback", ["secure", "opportunistic"])
def test_opportunistic_to_mta_sts_tightens_whatever_the_fallback(fallback: str) -> None:
    def mutate(c: dict) -> None:
        c["tls"]["outbound_default"] = "mta-sts"

    assert _with_fallback(fallback, mutate)["~ tls.outbound_default"][0] == TIGHTENING


def test_secure_to_mta_sts_loosens_when_domains_without_a_policy_fall_back_lower() -> None:
    def mutate(c: dict) -> None:
        c["enforced_tls"][1]["level"] = "mta-sts"

    effect, reason = _with_fallback("opportunistic", mutate)['~ enforced_tls["partners-outbound"].level']
    assert effect == LOOSENING and "falls back to opportunistic" in reason
    ((effect, _),) = _with_fallback("secure", mutate).values()
    assert effect == NEUTRAL  # mta-sts with a secure fallback is never weaker than secure


def test_lowering_the_mta_sts_fallback_loosens() -> None:
    def mutate(c: dict) -> None:
        c["tls"]["mta_sts"] = {"fallback": "opportunistic"}

    ((effect, reason),) = judged(mutate).values()
    assert effect == LOOSENING and "secure -> opportunistic" in reason
