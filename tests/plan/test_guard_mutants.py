"""The downgrade guard's verdicts beyond the golden corpus, pinned exactly (effect and reason):
the tightening and neutral sides of every rule, equal ranks, unused groups, disabled
policies, rules under `not`, routes reordered or removed with their group. Each scenario
edits the `no-change` golden config (and optionally its current side first) and states every
change's verdict. Written against the surviving mutants of scripts/mutate
(docs/mutation-results.md)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from engine.plan.change import LOOSENING, NEUTRAL, TIGHTENING, Action, Change, Key
from engine.plan.diff import canonical, diff
from engine.plan.guard import classify, compare, judge
from engine.plan.render import label
from tests.plan.conftest import CASES, load

BASE = canonical(load(CASES / "no-change" / "before.yaml"))
Edit = Callable[[dict], object]


def verdicts(after: Edit, before: Edit | None = None) -> dict[str, tuple[str, str]]:
    """label -> (effect, reason) of every change from the base (edited by `before`) to that
    config edited by `after`."""
    current = copy.deepcopy(BASE)
    if before is not None:
        before(current)
    desired = copy.deepcopy(current)
    after(desired)
    return {label(c): (c.effect, c.reason) for c in classify(diff(desired, current), desired, current)}


def pol(c: dict, name: str) -> dict:
    return next(p for p in c["dlp"]["policies"] if p["name"] == name)


def rule(c: dict, policy: str, name: str) -> dict:
    return next(r for r in pol(c, policy)["rules"] if r["name"] == name)


TP = {
    "servers": [{"host": "192.0.2.10", "port": 10025}],
    "encrypted_ip_group": "encryption_gateway",
    "tls": "opportunistic",
    "headers": {
        "encrypt": "X-Encrypt: yes",
        "success": "X-Encrypt-Result: success",
        "failure": "X-Encrypt-Result: failure",
    },
}


def with_third_party(c: dict) -> None:
    c["encryption"]["third_party"] = copy.deepcopy(TP)


def lab_as_dlp_source(c: dict) -> None:
    rule(c, "cards", "card-numbers")["source"]["ip_groups"] = ["lab"]


def internal_servers_as_dlp_source_any_direction(c: dict) -> None:
    rule(c, "cards", "card-numbers")["source"]["ip_groups"] = ["internal_servers"]
    rule(c, "cards", "card-numbers")["destination"]["direction"] = "any"


def _outbound_default_raised(c: dict) -> None:
    c["tls"]["outbound_default"] = "secure"


def _enforced_level_equal(c: dict) -> None:
    c["enforced_tls"][1]["level"] = "mta-sts"


def _enforced_level_dane(c: dict) -> None:
    c["enforced_tls"][1]["level"] = "dane"


def _route_tls_unset_to_stricter_default(c: dict) -> None:
    c["routes"][0].pop("tls")


def _route_tls_set_from_default(c: dict) -> None:
    c["routes"][0]["tls"] = "secure"


def _min_protocol_raised(c: dict) -> None:
    c["enforced_tls"][0]["min_protocol"] = "TLSv1.3"


def _cipher_bits_raised(c: dict) -> None:
    c["enforced_tls"][1]["min_cipher_bits"] = 256


def _enforced_rule_added(c: dict) -> None:
    c["enforced_tls"].append(
        {
            "name": "lab-in",
            "direction": "inbound",
            "match": {"ip_group": "lab"},
            "level": "opportunistic",
            "min_protocol": "TLSv1.2",
            "min_cipher_bits": 128,
        }
    )


def _enforced_rule_removed_opportunistic(c: dict) -> None:
    c["enforced_tls"].pop()


def _enforced_direction_widened(c: dict) -> None:
    c["enforced_tls"][0]["direction"] = "both"


def _enforced_direction_switched(c: dict) -> None:
    c["enforced_tls"][0]["direction"] = "outbound"


def _enforced_match_smaller_group(c: dict) -> None:
    c["ip_groups"]["few_banks"] = ["203.0.113.0/24"]
    c["enforced_tls"][0]["match"] = {"ip_group": "few_banks"}


def _enforced_match_same_entries(c: dict) -> None:
    c["ip_groups"]["same_banks"] = list(c["ip_groups"]["banks"])
    c["enforced_tls"][0]["match"] = {"ip_group": "same_banks"}


def _enforced_match_domain_smaller(c: dict) -> None:
    c["domain_groups"]["p2"] = ["partner.example"]
    c["enforced_tls"][1]["match"] = {"domain_group": "p2"}


def _enforced_match_domain_to_ip(c: dict) -> None:
    c["enforced_tls"][1]["match"] = {"ip_group": "banks"}


def _starttls_loosened(c: dict) -> None:
    c["system"]["listeners"][1]["starttls"] = "offered"


def _admin_moves_beyond(c: dict) -> None:
    c["system"]["admin"]["address"] = "192.0.2.1"


def _admin_loopback_to_loopback(c: dict) -> None:
    c["system"]["admin"]["address"] = "::1"


def _method_raised(c: dict) -> None:
    c["encryption"]["method"] = "secure_portal"


def _method_lowered(c: dict) -> None:
    c["encryption"]["method"] = "tls"


def _method_equal(c: dict) -> None:
    c["encryption"]["method"] = "advanced"


def _backup_added(c: dict) -> None:
    c["encryption"]["backup"] = "advanced"


def _backup_switched(c: dict) -> None:
    c["encryption"]["backup"] = "third_party"


def _permission_revoked(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["reply_all"]["allowed"] = False


def _permission_granted(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["forward"]["allowed"] = True


def _permission_recipients_widened(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["compose"]["recipients"] = "any"


def _permission_recipients_narrowed(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["compose"]["recipients"] = "internal"


def _kdf_lowered(c: dict) -> None:
    c["encryption"]["advanced"]["kdf"]["iterations"] = 100000


def _size_limit(c: dict) -> None:
    c["system"]["message_size_limit"] = "10MB"


def _nothing(c: dict) -> None:
    c["version"] = 1


def _ip_group_grown_enforced(c: dict) -> None:
    c["ip_groups"]["banks"].append("192.0.2.0/24")


def _ip_group_narrowed_enforced(c: dict) -> None:
    c["ip_groups"]["banks"] = ["203.0.113.0/25"]


def _internal_servers_grown_many(c: dict) -> None:
    c["ip_groups"]["internal_servers"] += ["172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "100.64.0.0/10"]


def _internal_servers_subnet(c: dict) -> None:
    c["ip_groups"]["internal_servers"].append("10.1.0.0/16")


def _gateway_emptied(c: dict) -> None:
    c["ip_groups"]["encryption_gateway"] = []


def _encrypted_group_switched_bigger(c: dict) -> None:
    c["ip_groups"]["gw2"] = ["192.0.2.10/32", "192.0.2.11/32"]
    c["encryption"]["third_party"]["encrypted_ip_group"] = "gw2"
    c["encryption"]["third_party"]["servers"][0]["host"] = "192.0.2.10"


def _encrypted_group_switched_same(c: dict) -> None:
    c["ip_groups"]["gw2"] = ["192.0.2.10/32"]
    c["encryption"]["third_party"]["encrypted_ip_group"] = "gw2"


def _custom_gateway_group_grown(c: dict) -> None:
    c["ip_groups"]["gateways"] = ["192.0.2.10/32", "192.0.2.12/32"]


def _lab_used_by_dlp_prep(c: dict) -> None:
    rule(c, "cards", "card-numbers")["source"]["ip_groups"] = ["internal_servers", "lab"]


def _dlp_source_group_narrowed(c: dict) -> None:
    c["ip_groups"]["lab"] = ["192.168.0.0/24"]


def _dlp_source_group_grown(c: dict) -> None:
    c["ip_groups"]["lab"] = ["192.168.0.0/16", "172.16.0.0/12"]


def _internal_servers_narrowed_dlp_any(c: dict) -> None:
    c["ip_groups"]["internal_servers"] = ["10.0.0.0/9"]


def _route_group_grown(c: dict) -> None:
    c["domain_groups"]["vendors"].append("supplier.example")


def _route_group_emptied(c: dict) -> None:
    c["domain_groups"]["vendors"] = []


def _domain_group_grown_enforced_dlp(c: dict) -> None:
    c["domain_groups"]["partners"].append("ally.example")


def _domain_group_covered(c: dict) -> None:
    c["domain_groups"]["partners"].append("*.eu.bank.example")


def _domain_group_unused_created(c: dict) -> None:
    c["domain_groups"]["spare"] = ["spare.example", "other.example"]


def _domain_group_unused_shrunk(c: dict) -> None:
    c["domain_groups"]["spare"].remove("other.example")


def _internal_domain_removed(c: dict) -> None:
    c["system"]["internal_domains"].remove("example.org")


def _route_added_tightens(c: dict) -> None:
    c["routes"].insert(0, {"name": "p", "recipients": {"domain_group": "partners"}, "next_hop": "mx", "tls": "secure"})


def _route_added_loosens_listed(c: dict) -> None:
    c["routes"].insert(
        0, {"name": "p", "recipients": {"domains": ["partner.example", "x.example"]}, "next_hop": "mx", "tls": "none"}
    )


def _route_added_neutral(c: dict) -> None:
    c["routes"].insert(
        0, {"name": "p", "recipients": {"domains": ["nobody.example"]}, "next_hop": "mx", "tls": "opportunistic"}
    )


def _route_recipients_changed(c: dict) -> None:
    c["routes"][0]["recipients"] = {"domain_group": "partners"}


def _route_recipients_same_domains(c: dict) -> None:
    c["routes"][0]["recipients"] = {"domains": ["vendor.example"]}


def _routes_reordered(c: dict) -> None:
    c["routes"].reverse()


def _routes_reordered_neutral(c: dict) -> None:
    c["routes"] = [c["routes"][1], c["routes"][0], c["routes"][2]]


def _route_removed_with_its_group(c: dict) -> None:
    c["routes"].pop(0)


def _route_removed_group_removed(c: dict) -> None:
    c["routes"].pop(0)
    c["domain_groups"].pop("only")


def _default_route_any_lowered(c: dict) -> None:
    c["routes"][-1]["tls"] = "none"


def _any_route_removed(c: dict) -> None:
    c["routes"].pop()


def _mode_enforce(c: dict) -> None:
    c["dlp"]["mode"] = "enforce"


def _plan_action_raised(c: dict) -> None:
    c["dlp"]["action_plans"][0]["email"] = "block"


def _plan_action_lowered_disabled_rule(c: dict) -> None:
    c["dlp"]["action_plans"][0]["email"] = "permit"


def _plan_action_disabled_policy(c: dict) -> None:
    c["dlp"]["action_plans"][2]["email"] = "block"


def _plan_notify(c: dict) -> None:
    c["dlp"]["action_plans"][0]["notify"] = []


def _plan_added(c: dict) -> None:
    c["dlp"]["action_plans"].append({"name": "new", "description": "", "email": "block", "notify": []})


def _policy_added_disabled(c: dict) -> None:
    c["dlp"]["policies"].append(
        {
            "name": "ssn",
            "owners": [],
            "enabled": False,
            "rules": [{"name": "r", "conditions": {"classifier": "us_ssn"}, "action_plan": "block-it"}],
        }
    )


def _policy_added_permit(c: dict) -> None:
    c["dlp"]["policies"].append(
        {
            "name": "ssn",
            "owners": [],
            "rules": [{"name": "r", "conditions": {"classifier": "us_ssn"}, "action_plan": "let-it-go"}],
        }
    )


def _policy_added_two_actions(c: dict) -> None:
    c["dlp"]["policies"].append(
        {
            "name": "ssn",
            "owners": [],
            "rules": [
                {"name": "r", "conditions": {"classifier": "us_ssn"}, "action_plan": "block-it"},
                {"name": "r2", "conditions": {"classifier": "iban"}, "action_plan": "hold-it"},
                {"name": "r3", "conditions": {"classifier": "iban"}, "action_plan": "block-it"},
            ],
        }
    )


def _policy_removed_disabled(c: dict) -> None:
    c["dlp"]["policies"].pop(1)


def _policy_removed_two_actions(c: dict) -> None:
    c["dlp"]["policies"].pop(1)


def _policy_enabled(c: dict) -> None:
    pol(c, "secrets")["enabled"] = True


def _policy_disabled_permit_only(c: dict) -> None:
    pol(c, "cards")["enabled"] = False


def _rule_removed_disabled_policy(c: dict) -> None:
    pol(c, "secrets")["rules"].pop(0)


def _rule_added(c: dict) -> None:
    pol(c, "secrets")["rules"].append(
        {"name": "new-rule", "conditions": {"classifier": "iban"}, "action_plan": "block-it"}
    )


def _rule_added_disabled_policy(c: dict) -> None:
    pol(c, "secrets")["rules"].append(
        {"name": "new-rule", "conditions": {"classifier": "iban"}, "action_plan": "block-it"}
    )


def _rule_added_disabled(c: dict) -> None:
    pol(c, "secrets")["rules"].append(
        {"name": "new-rule", "enabled": False, "conditions": {"classifier": "iban"}, "action_plan": "block-it"}
    )


def _rule_enabled(c: dict) -> None:
    rule(c, "secrets", "big-files")["enabled"] = True


def _rule_disabled_in_disabled_policy(c: dict) -> None:
    rule(c, "secrets", "big-files")["enabled"] = False


def _rule_plan_raised(c: dict) -> None:
    rule(c, "cards", "card-numbers")["action_plan"] = "block-it"


def _rule_plan_disabled_rule(c: dict) -> None:
    rule(c, "cards", "card-numbers")["action_plan"] = "let-it-go"


def _condition_added_to_any(c: dict) -> None:
    rule(c, "cards", "card-numbers")["conditions"]["any"].append({"classifier": "iban"})


def _condition_removed_from_all(c: dict) -> None:
    rule(c, "secrets", "marked-secret")["conditions"]["all"].pop(0)


def _phrase_added(c: dict) -> None:
    rule(c, "cards", "card-numbers")["conditions"]["any"][1]["phrases"].append("iban")


def _scope_removed(c: dict) -> None:
    rule(c, "cards", "card-numbers")["conditions"]["any"][0]["scope"].remove("attachments")


def _min_matches_lowered(c: dict) -> None:
    rule(c, "cards", "card-numbers")["conditions"]["any"][0]["min_matches"] = 1


def _size_lowered(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["size_over"] = "1MB"


def _size_limit_removed(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"].pop("size_over")


def _type_limit_created(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["type"] = ["zip"]


def _type_member_added(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["type"].append("pdf")


def _size_same_other_unit(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["size_over"] = "10000KB"


def _not_phrase_removed(c: dict) -> None:
    rule(c, "secrets", "marked-secret")["conditions"]["all"][1]["not"]["phrases"].remove("internal only")


def _not_min_matches_lowered(c: dict) -> None:
    rule(c, "secrets", "marked-secret")["conditions"]["all"][1]["not"]["min_matches"] = 1


def _senders_first_entry_on_permit(c: dict) -> None:
    rule(c, "cards", "card-numbers")["source"]["senders"].append("*@corp.example")


def _ip_groups_last_removed(c: dict) -> None:
    rule(c, "cards", "card-numbers")["source"]["ip_groups"] = []


def _domain_groups_added(c: dict) -> None:
    rule(c, "cards", "card-numbers")["destination"]["domain_groups"].append("spare")


def _domains_first_added(c: dict) -> None:
    rule(c, "secrets", "big-files")["destination"]["domains"].append("x.example")


def _direction_widened(c: dict) -> None:
    rule(c, "cards", "card-numbers")["destination"]["direction"] = "any"


def _direction_switched(c: dict) -> None:
    rule(c, "cards", "card-numbers")["destination"]["direction"] = "inbound"


def _direction_narrowed_from_any(c: dict) -> None:
    rule(c, "cards", "card-numbers")["destination"]["direction"] = "outbound"


def _direction_on_permit(c: dict) -> None:
    rule(c, "cards", "card-numbers")["destination"]["direction"] = "internal"


def _severity(c: dict) -> None:
    rule(c, "cards", "card-numbers")["severity"] = "high"


def _classifier_added(c: dict) -> None:
    c["dlp"]["classifiers"].append({"name": "acct", "pattern": "ACCT-[0-9]{8}"})


def _smime_added(c: dict) -> None:
    c["encryption"]["smime"] = {"certificates": "/etc/sealrelay/smime"}


def _smime_removed(c: dict) -> None:
    c["encryption"].pop("smime")


def _smime_removed_portal(c: dict) -> None:
    c["encryption"].pop("smime")


def _smime_moved(c: dict) -> None:
    c["encryption"]["smime"]["certificates"] = "/srv/smime"


def _enforced_renamed(c: dict) -> None:
    c["enforced_tls"][0]["name"] = "banks-in"


def _enforced_renamed_and_weakened(c: dict) -> None:
    c["enforced_tls"][0]["name"] = "banks-in"
    c["enforced_tls"][0]["level"] = "opportunistic"


def _admin_replaced(c: dict) -> None:
    c["system"]["admin"] = {"address": "0.0.0.0", "port": 8025}


def _certificate_changed(c: dict) -> None:
    c["tls"]["certificate"] = {"pem": {"certificate": "/etc/c.pem", "key": "/etc/k.pem"}}


def _policy_tests(c: dict) -> None:
    c["tests"] = [{"name": "t", "message": "tests/card.eml", "expect": {"direction": "outbound", "action": "encrypt"}}]


def with_a_partners_route(c: dict) -> None:
    c["routes"].insert(0, {"name": "p", "recipients": {"domain_group": "partners"}, "next_hop": "mx", "tls": "secure"})


def _route_group_grown_beside_another_routed_group(c: dict) -> None:
    c["domain_groups"]["vendors"].append("supplier.example")


def with_custom_gateway_group(c: dict) -> None:
    with_third_party(c)
    c["ip_groups"]["gateways"] = ["192.0.2.10/32", "192.0.2.12/32"]
    c["encryption"]["third_party"]["encrypted_ip_group"] = "gateways"


def _encrypted_group_switched_from_a_custom_group(c: dict) -> None:
    c["ip_groups"]["gw2"] = ["192.0.2.10/32", "192.0.2.12/32"]
    c["encryption"]["third_party"]["encrypted_ip_group"] = "gw2"


def with_five_banks(c: dict) -> None:
    c["ip_groups"]["banks"] = ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/28", "192.0.2.16/28", "192.0.2.32/28"]


def with_covered_subnet(c: dict) -> None:
    c["ip_groups"]["banks"].append("203.0.113.0/25")


def lab_in_a_disabled_policy_then_cards(c: dict) -> None:
    c["dlp"]["policies"].insert(
        0,
        {
            "name": "off",
            "enabled": False,
            "rules": [
                {
                    "name": "x",
                    "conditions": {"classifier": "iban"},
                    "action_plan": "block-it",
                    "source": {"ip_groups": ["lab"]},
                }
            ],
        },
    )
    rule(c, "cards", "card-numbers")["source"]["ip_groups"] = ["lab"]


def lab_in_a_disabled_policy(c: dict) -> None:
    c["dlp"]["policies"].insert(
        0,
        {
            "name": "off",
            "enabled": False,
            "rules": [
                {
                    "name": "x",
                    "conditions": {"classifier": "iban"},
                    "action_plan": "block-it",
                    "source": {"ip_groups": ["lab"]},
                }
            ],
        },
    )


def lab_in_a_disabled_rule(c: dict) -> None:
    pol(c, "secrets")["rules"].append(
        {
            "name": "x",
            "enabled": False,
            "conditions": {"classifier": "iban"},
            "action_plan": "block-it",
            "source": {"ip_groups": ["lab"]},
        }
    )


def lab_in_a_permit_rule(c: dict) -> None:
    pol(c, "secrets")["rules"].append(
        {
            "name": "x",
            "conditions": {"classifier": "iban"},
            "action_plan": "let-it-go",
            "source": {"ip_groups": ["lab"]},
        }
    )


def lab_in_big_files(c: dict) -> None:
    rule(c, "secrets", "big-files")["source"]["ip_groups"] = ["lab"]


def shops_in_dlp(c: dict) -> None:
    c["domain_groups"]["shops"] = ["shop.example"]
    rule(c, "cards", "card-numbers")["destination"]["domain_groups"].append("shops")


def vendors_with_a_wildcard(c: dict) -> None:
    c["domain_groups"]["vendors"].append("*.bank.example")


def with_a_plain_route(c: dict) -> None:
    c["routes"].insert(
        0, {"name": "x", "recipients": {"domains": ["x.example"]}, "next_hop": "mx", "tls": "opportunistic"}
    )


def disabled_secrets(c: dict) -> None:
    pol(c, "secrets")["enabled"] = False


def with_attachment_count(c: dict) -> None:
    rule(c, "secrets", "marked-secret")["conditions"]["all"].append({"attachment_count": {"over": 2}})


def block_it_used_four_times(c: dict) -> None:
    pol(c, "cards")["rules"] += [
        {"name": f"r{i}", "conditions": {"classifier": "iban"}, "action_plan": "block-it"} for i in (1, 2, 3)
    ]


def _enforced_match_loses_four_peers(c: dict) -> None:
    c["ip_groups"]["one_bank"] = ["203.0.113.0/24"]
    c["enforced_tls"][0]["match"] = {"ip_group": "one_bank"}


def _permission_with_two_words_granted(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["attach_file"]["allowed"] = True


def _permission_with_two_words_widened(c: dict) -> None:
    c["encryption"]["secure_portal"]["permissions"]["reply_all"]["recipients"] = "any"


def _third_party_tls_raised(c: dict) -> None:
    c["encryption"]["third_party"]["tls"] = "mandatory"


def _covered_subnet_removed(c: dict) -> None:
    c["ip_groups"]["banks"].remove("203.0.113.0/25")


def _new_group_of_three(c: dict) -> None:
    c["ip_groups"]["few"] = ["192.0.2.0/28", "192.0.2.16/28", "192.0.2.32/28"]
    c["enforced_tls"][0]["match"] = {"ip_group": "few"}


def _new_group_of_four(c: dict) -> None:
    c["ip_groups"]["four"] = ["192.0.2.0/28", "192.0.2.16/28", "192.0.2.32/28", "192.0.2.48/28"]
    c["enforced_tls"][0]["match"] = {"ip_group": "four"}


def _group_used_after_a_disabled_policy(c: dict) -> None:
    c["ip_groups"]["lab"].append("172.16.0.0/12")


def _group_used_only_by_a_disabled_policy(c: dict) -> None:
    c["ip_groups"]["lab"].append("172.16.0.0/12")


def _group_used_only_by_a_disabled_rule(c: dict) -> None:
    c["ip_groups"]["lab"].append("172.16.0.0/12")


def _group_used_only_by_a_permit_rule(c: dict) -> None:
    c["ip_groups"]["lab"].append("172.16.0.0/12")


def _group_used_by_a_later_rule(c: dict) -> None:
    c["ip_groups"]["lab"].append("172.16.0.0/12")


def _domain_group_used_by_dlp_only(c: dict) -> None:
    c["domain_groups"]["shops"].append("store.example")


def _routed_enforced_dlp_group_grown(c: dict) -> None:
    c["domain_groups"]["partners"].append("ally.example")


def _wildcard_reaches_other_named_domains(c: dict) -> None:
    c["domain_groups"]["vendors"].append("*.example")


def _wider_wildcard_beside_a_narrower_one(c: dict) -> None:
    c["domain_groups"]["vendors"].append("*.example")


def _route_recipients_changed_beside_another_route(c: dict) -> None:
    c["routes"][1]["recipients"] = {"domains": ["vendor.example"]}


def _route_removed_while_another_is_added(c: dict) -> None:
    c["routes"].pop(0)
    c["domain_groups"]["shops"] = ["shop.example"]
    c["routes"].insert(0, {"name": "shops", "recipients": {"domain_group": "shops"}, "next_hop": "mx", "tls": "secure"})


def _condition_in_a_disabled_policy(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["size_over"] = "90MB"


def _rule_plan_in_a_disabled_policy(c: dict) -> None:
    rule(c, "secrets", "big-files")["action_plan"] = "let-it-go"


def _conditions_rewritten(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"] = {"classifier": "iban"}


def _attachment_count_raised(c: dict) -> None:
    rule(c, "secrets", "marked-secret")["conditions"]["all"][2]["attachment_count"]["over"] = 5


def _non_ascii_phrase_added(c: dict) -> None:
    rule(c, "cards", "card-numbers")["conditions"]["any"][1]["phrases"].append("número de tarjeta")


def _plan_used_by_four_rules_lowered(c: dict) -> None:
    c["dlp"]["action_plans"][1]["email"] = "quarantine"


def opportunistic_partners_and_plain_vendors(c: dict) -> None:
    c["enforced_tls"][1]["level"] = "opportunistic"
    c["routes"][0]["tls"] = "none"


def opportunistic_inbound_and_plain_vendors(c: dict) -> None:
    c["enforced_tls"][0]["level"] = "opportunistic"
    c["routes"][0]["tls"] = "none"


def opportunistic_partners_and_plain_default(c: dict) -> None:
    c["enforced_tls"][1]["level"] = "opportunistic"
    c["tls"]["outbound_default"] = "none"


def _opportunistic_rule_removed_over_a_plain_route(c: dict) -> None:
    c["enforced_tls"].pop()


def _opportunistic_inbound_rule_removed_over_a_plain_route(c: dict) -> None:
    c["enforced_tls"].pop(0)


def _opportunistic_rule_removed_over_a_plain_default(c: dict) -> None:
    c["enforced_tls"].pop()


def with_a_shops_route(c: dict) -> None:
    c["routes"].insert(
        0, {"name": "shops", "recipients": {"domains": ["a.example", "b.example"]}, "next_hop": "mx", "tls": "secure"}
    )


def _wildcard_over_another_routed_group(c: dict) -> None:
    c["domain_groups"]["vendors"].append("*.example")


def _route_domain_removed_while_its_level_changes(c: dict) -> None:
    c["routes"][0]["recipients"]["domains"].remove("b.example")
    c["routes"][0]["tls"] = "verify"


def _attachment_name_changed(c: dict) -> None:
    rule(c, "secrets", "big-files")["conditions"]["attachment"]["name"] = "*.7z"


SCENARIOS = [
    (
        "outbound_default_raised",
        _outbound_default_raised,
        None,
        {"~ tls.outbound_default": (TIGHTENING, "TLS level raised: opportunistic -> secure")},
    ),
    (
        "enforced_level_equal",
        _enforced_level_equal,
        None,
        {'~ enforced_tls["partners-outbound"].level': (NEUTRAL, "TLS level: secure and mta-sts are equally strict")},
    ),
    (
        "enforced_level_dane",  # RFC 7672: a host whose TLSA records are all unusable gets `mandatory`
        _enforced_level_dane,
        None,
        {
            '~ enforced_tls["partners-outbound"].level': (
                LOOSENING,
                "TLS level lowered: secure -> dane (`dane` falls back to secure, or `mandatory` for unusable TLSA "
                "records)",
            )
        },
    ),
    (
        "route_tls_unset_to_stricter_default",
        _route_tls_unset_to_stricter_default,
        lambda c: c["tls"].__setitem__("outbound_default", "secure"),
        {'- routes["vendors"].tls': (TIGHTENING, "TLS level of the route raised: verify -> secure")},
    ),
    (
        "route_tls_set_from_default",
        _route_tls_set_from_default,
        lambda c: c["routes"][0].pop("tls"),
        {'+ routes["vendors"].tls': (TIGHTENING, "TLS level of the route raised: opportunistic -> secure")},
    ),
    (
        "min_protocol_raised",
        _min_protocol_raised,
        None,
        {
            '~ enforced_tls["banks-inbound"].min_protocol': (
                TIGHTENING,
                "lowest TLS protocol raised: TLSv1.2 -> TLSv1.3",
            )
        },
    ),
    (
        "cipher_bits_raised",
        _cipher_bits_raised,
        None,
        {
            '~ enforced_tls["partners-outbound"].min_cipher_bits': (
                TIGHTENING,
                "lowest cipher strength raised: 128 -> 256",
            )
        },
    ),
    (
        "enforced_rule_added",
        _enforced_rule_added,
        None,
        {
            '+ enforced_tls["lab-in"]': (
                TIGHTENING,
                "inbound connections with IP group lab must now use TLS at level opportunistic",
            )
        },
    ),
    (
        "enforced_rule_removed_opportunistic",
        _enforced_rule_removed_opportunistic,
        lambda c: c["enforced_tls"][1].__setitem__("level", "opportunistic"),
        {
            '- enforced_tls["partners-outbound"]': (
                NEUTRAL,
                "the removed rule only asked for opportunistic TLS, which every route already has",
            )
        },
    ),
    (
        "enforced_direction_widened",
        _enforced_direction_widened,
        None,
        {
            '~ enforced_tls["banks-inbound"].direction': (
                TIGHTENING,
                "the rule now also applies to outbound connections",
            )
        },
    ),
    (
        "enforced_direction_switched",
        _enforced_direction_switched,
        None,
        {'~ enforced_tls["banks-inbound"].direction': (LOOSENING, "the rule no longer applies to inbound connections")},
    ),
    (
        "enforced_match_smaller_group",
        _enforced_match_smaller_group,
        None,
        {
            "+ ip_groups.few_banks": (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 203.0.113.0/24",
            ),
            '~ enforced_tls["banks-inbound"].match.ip_group': (
                LOOSENING,
                "peers in banks but not in few_banks are no longer covered: 198.51.100.0/24",
            ),
        },
    ),
    (
        "enforced_match_same_entries",
        _enforced_match_same_entries,
        None,
        {
            "+ ip_groups.same_banks": (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 203.0.113.0/24, 198.51.100.0/24",
            ),
            '~ enforced_tls["banks-inbound"].match.ip_group': (NEUTRAL, "same_banks holds the same entries as banks"),
        },
    ),
    (
        "enforced_match_domain_smaller",
        _enforced_match_domain_smaller,
        None,
        {
            "+ domain_groups.p2": (
                TIGHTENING,
                "enforced_tls partners-outbound now requires secure TLS of partner.example",
            ),
            '~ enforced_tls["partners-outbound"].match.domain_group': (
                LOOSENING,
                "peers in partners but not in p2 are no longer covered: *.bank.example",
            ),
        },
    ),
    (
        "enforced_match_domain_to_ip",
        _enforced_match_domain_to_ip,
        None,
        {
            '~ enforced_tls["partners-outbound"].match': (
                LOOSENING,
                "now matches IP group banks instead of domain group partners: those peers are no longer covered",
            )
        },
    ),
    (
        "starttls_loosened",
        _starttls_loosened,
        None,
        {
            '~ system.listeners["submission"].starttls': (
                LOOSENING,
                "clients may send mail without STARTTLS on this listener",
            )
        },
    ),
    (
        "admin_moves_beyond",
        _admin_moves_beyond,
        lambda c: c["system"]["admin"].__setitem__("address", "0.0.0.0"),
        {"~ system.admin.address": (NEUTRAL, "the admin API moves")},
    ),
    (
        "admin_loopback_to_loopback",
        _admin_loopback_to_loopback,
        None,
        {"~ system.admin.address": (NEUTRAL, "the admin API moves")},
    ),
    (
        "method_raised",
        _method_raised,
        None,
        {"~ encryption.method": (TIGHTENING, "encryption method raised: tls -> secure_portal")},
    ),
    (
        "method_lowered",
        _method_lowered,
        lambda c: c["encryption"].__setitem__("method", "third_party"),
        {"~ encryption.method": (LOOSENING, "mail that must be encrypted is now protected in transit only (tls)")},
    ),
    (
        "method_equal",
        _method_equal,
        lambda c: c["encryption"].__setitem__("method", "secure_portal"),
        {"~ encryption.method": (NEUTRAL, "encryption method: secure_portal and advanced are equally strict")},
    ),
    (
        "backup_added",
        _backup_added,
        lambda c: c["encryption"].__setitem__("backup", "none"),
        {"~ encryption.backup": (TIGHTENING, "when the TLS connection fails, mail is encrypted with advanced")},
    ),
    (
        "backup_switched",
        _backup_switched,
        None,
        {"~ encryption.backup": (NEUTRAL, "backup method: advanced and third_party are equally strict")},
    ),
    (
        "permission_revoked",
        _permission_revoked,
        None,
        {
            "~ encryption.secure_portal.permissions.reply_all.allowed": (
                TIGHTENING,
                "portal users may no longer reply all",
            )
        },
    ),
    (
        "permission_granted",
        _permission_granted,
        None,
        {"~ encryption.secure_portal.permissions.forward.allowed": (LOOSENING, "portal users may now forward")},
    ),
    (
        "permission_recipients_widened",
        _permission_recipients_widened,
        None,
        {
            "~ encryption.secure_portal.permissions.compose.recipients": (
                LOOSENING,
                "portal users may now compose to external recipients",
            )
        },
    ),
    (
        "permission_recipients_narrowed",
        _permission_recipients_narrowed,
        lambda c: c["encryption"]["secure_portal"]["permissions"]["compose"].__setitem__("recipients", "any"),
        {
            "~ encryption.secure_portal.permissions.compose.recipients": (
                TIGHTENING,
                "portal users may compose to internal recipients only",
            )
        },
    ),
    (
        "kdf_lowered",
        _kdf_lowered,
        None,
        {"~ encryption.advanced.kdf.iterations": (LOOSENING, "fewer key-derivation iterations: 600000 -> 100000")},
    ),
    (
        "size_limit",
        _size_limit,
        None,
        {"~ system.message_size_limit": (NEUTRAL, "the size limit does not change protection")},
    ),
    ("nothing", _nothing, None, {}),
    (
        "ip_group_grown_enforced",
        _ip_group_grown_enforced,
        None,
        {
            '+ ip_groups.banks "192.0.2.0/24"': (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 192.0.2.0/24",
            )
        },
    ),
    (
        "ip_group_narrowed_enforced",
        _ip_group_narrowed_enforced,
        None,
        {
            '- ip_groups.banks "203.0.113.0/24"': (
                LOOSENING,
                "enforced_tls banks-inbound no longer requires mandatory TLS of 203.0.113.0/24",
            ),
            '- ip_groups.banks "198.51.100.0/24"': (
                LOOSENING,
                "enforced_tls banks-inbound no longer requires mandatory TLS of 198.51.100.0/24",
            ),
            '+ ip_groups.banks "203.0.113.0/25"': (
                NEUTRAL,
                "203.0.113.0/25 adds or removes nothing: other entries of banks cover the same",
            ),
        },
    ),
    (
        "internal_servers_grown_many",
        _internal_servers_grown_many,
        None,
        {
            '+ ip_groups.internal_servers "172.16.0.0/12"': (
                LOOSENING,
                "172.16.0.0/12 may now relay mail to external domains",
            ),
            '+ ip_groups.internal_servers "192.168.0.0/16"': (
                LOOSENING,
                "192.168.0.0/16 may now relay mail to external domains",
            ),
            '+ ip_groups.internal_servers "198.18.0.0/15"': (
                LOOSENING,
                "198.18.0.0/15 may now relay mail to external domains",
            ),
            '+ ip_groups.internal_servers "100.64.0.0/10"': (
                LOOSENING,
                "100.64.0.0/10 may now relay mail to external domains",
            ),
        },
    ),
    (
        "internal_servers_subnet",
        _internal_servers_subnet,
        None,
        {
            '+ ip_groups.internal_servers "10.1.0.0/16"': (
                NEUTRAL,
                "10.1.0.0/16 adds or removes nothing: other entries of internal_servers cover the same",
            )
        },
    ),
    (
        "gateway_emptied",
        _gateway_emptied,
        None,
        {
            '- ip_groups.encryption_gateway "192.0.2.10/32"': (
                NEUTRAL,
                "mail from 192.0.2.10/32 no longer counts as already encrypted",
            )
        },
    ),
    (
        "encrypted_group_switched_bigger",
        _encrypted_group_switched_bigger,
        with_third_party,
        {
            "+ ip_groups.gw2": (LOOSENING, "mail from 192.0.2.10/32, 192.0.2.11/32 will count as already encrypted"),
            "~ encryption.third_party.encrypted_ip_group": (
                LOOSENING,
                "mail from 192.0.2.11/32 will count as already encrypted",
            ),
        },
    ),
    (
        "encrypted_group_switched_same",
        _encrypted_group_switched_same,
        with_third_party,
        {
            "+ ip_groups.gw2": (LOOSENING, "mail from 192.0.2.10/32 will count as already encrypted"),
            "~ encryption.third_party.encrypted_ip_group": (NEUTRAL, "no new peer counts as already encrypted"),
        },
    ),
    (
        "custom_gateway_group_grown",
        _custom_gateway_group_grown,
        lambda c: (
            with_third_party(c),
            c["ip_groups"].__setitem__("gateways", ["192.0.2.10/32"]),
            c["encryption"]["third_party"].__setitem__("encrypted_ip_group", "gateways"),
        ),
        {
            '+ ip_groups.gateways "192.0.2.12/32"': (
                LOOSENING,
                "mail from 192.0.2.12/32 will count as already encrypted",
            )
        },
    ),
    (
        "lab_used_by_dlp_prep",
        _lab_used_by_dlp_prep,
        None,
        {
            '+ dlp.policies["cards"].rules["card-numbers"].source.ip_groups "lab"': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: ip_groups: "lab" created',
            )
        },
    ),
    (
        "dlp_source_group_narrowed",
        _dlp_source_group_narrowed,
        lab_as_dlp_source,
        {
            '- ip_groups.lab "192.168.0.0/16"': (
                LOOSENING,
                "DLP rule cards/card-numbers (encrypt) no longer covers mail from 192.168.0.0/16",
            ),
            '+ ip_groups.lab "192.168.0.0/24"': (
                NEUTRAL,
                "192.168.0.0/24 adds or removes nothing: other entries of lab cover the same",
            ),
        },
    ),
    (
        "dlp_source_group_grown",
        _dlp_source_group_grown,
        lab_as_dlp_source,
        {
            '+ ip_groups.lab "172.16.0.0/12"': (
                TIGHTENING,
                "DLP rule cards/card-numbers (encrypt) now covers mail from 172.16.0.0/12",
            )
        },
    ),
    (
        "internal_servers_narrowed_dlp_any",
        _internal_servers_narrowed_dlp_any,
        internal_servers_as_dlp_source_any_direction,
        {
            '- ip_groups.internal_servers "10.0.0.0/8"': (
                LOOSENING,
                "DLP rule cards/card-numbers (encrypt) no longer covers mail from 10.0.0.0/8",
            ),
            '+ ip_groups.internal_servers "10.0.0.0/9"': (
                NEUTRAL,
                "10.0.0.0/9 adds or removes nothing: other entries of internal_servers cover the same",
            ),
        },
    ),
    (
        "route_group_grown",
        _route_group_grown,
        None,
        {
            '+ domain_groups.vendors "supplier.example"': (
                TIGHTENING,
                "mail to supplier.example now leaves by route vendors at verify (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to supplier.example",
            )
        },
    ),
    (
        "route_group_emptied",
        _route_group_emptied,
        None,
        {
            '- domain_groups.vendors "vendor.example"': (
                LOOSENING,
                "mail to vendor.example now leaves by route default at opportunistic (was route vendors at verify); DLP rule cards/card-numbers (encrypt) no longer covers mail to vendor.example",
            )
        },
    ),
    (
        "domain_group_grown_enforced_dlp",
        _domain_group_grown_enforced_dlp,
        None,
        {
            '+ domain_groups.partners "ally.example"': (
                TIGHTENING,
                "enforced_tls partners-outbound now requires secure TLS of ally.example; DLP rule cards/card-numbers (encrypt) now covers mail to ally.example",
            )
        },
    ),
    (
        "domain_group_covered",
        _domain_group_covered,
        None,
        {
            '+ domain_groups.partners "*.eu.bank.example"': (
                NEUTRAL,
                "*.eu.bank.example adds or removes nothing: other entries of partners cover the same",
            )
        },
    ),
    (
        "domain_group_unused_created",
        _domain_group_unused_created,
        None,
        {"+ domain_groups.spare": (NEUTRAL, "domain group spare is not used by a TLS, route or DLP rule")},
    ),
    (
        "domain_group_unused_shrunk",
        _domain_group_unused_shrunk,
        lambda c: c["domain_groups"].__setitem__("spare", ["spare.example", "other.example"]),
        {
            '- domain_groups.spare "other.example"': (
                NEUTRAL,
                "domain group spare is not used by a TLS, route or DLP rule",
            )
        },
    ),
    (
        "internal_domain_removed",
        _internal_domain_removed,
        lambda c: c["system"]["internal_domains"].append("example.org"),
        {
            '- system.internal_domains "example.org"': (
                NEUTRAL,
                "mail to example.org counts as outbound, no longer internal",
            )
        },
    ),
    (
        "route_added_tightens",
        _route_added_tightens,
        None,
        {
            '+ routes["p"]': (
                TIGHTENING,
                "mail to partner.example now leaves by route p at secure (was route default at opportunistic); mail to *.bank.example now leaves by route p at secure (was route default at opportunistic)",
            )
        },
    ),
    (
        "route_added_loosens_listed",
        _route_added_loosens_listed,
        None,
        {
            '+ routes["p"]': (
                LOOSENING,
                "mail to partner.example now leaves by route p at none (was route default at opportunistic); mail to x.example now leaves by route p at none (was route default at opportunistic)",
            )
        },
    ),
    (
        "route_added_neutral",
        _route_added_neutral,
        None,
        {'+ routes["p"]': (NEUTRAL, "no recipient's TLS level changes")},
    ),
    (
        "route_recipients_changed",
        _route_recipients_changed,
        None,
        {
            '~ routes["vendors"].recipients.domain_group': (
                LOOSENING,
                "mail to vendor.example now leaves by route default at opportunistic (was route vendors at verify)",
            )
        },
    ),
    (
        "route_recipients_same_domains",
        _route_recipients_same_domains,
        None,
        {'~ routes["vendors"].recipients': (NEUTRAL, "no recipient's TLS level changes")},
    ),
    (
        "routes_reordered",
        _routes_reordered,
        None,
        {
            "~ routes": (
                LOOSENING,
                "mail to vendor.example now leaves by route default at opportunistic (was route vendors at verify)",
            )
        },
    ),
    (
        "routes_reordered_neutral",
        _routes_reordered_neutral,
        lambda c: c["routes"].insert(
            0, {"name": "n", "recipients": {"domains": ["n.example"]}, "next_hop": "mx", "tls": "opportunistic"}
        ),
        {"~ routes": (NEUTRAL, "routes reordered (first match wins); no recipient's TLS level changes")},
    ),
    (
        "route_removed_with_its_group",
        _route_removed_with_its_group,
        lambda c: (
            c["domain_groups"].__setitem__("only", ["only.example"]),
            c["routes"].insert(
                0, {"name": "o", "recipients": {"domain_group": "only"}, "next_hop": "mx", "tls": "secure"}
            ),
        ),
        {
            '- routes["o"]': (
                LOOSENING,
                "mail to only.example now leaves by route default at opportunistic (was route o at secure)",
            )
        },
    ),
    (
        "route_removed_group_removed",
        _route_removed_group_removed,
        lambda c: (
            c["domain_groups"].__setitem__("only", ["only.example"]),
            c["routes"].insert(
                0, {"name": "o", "recipients": {"domain_group": "only"}, "next_hop": "mx", "tls": "secure"}
            ),
        ),
        {
            "- domain_groups.only": (NEUTRAL, "domain group only is not used by a TLS, route or DLP rule"),
            '- routes["o"]': (
                LOOSENING,
                "mail to only.example now leaves by route default at opportunistic (was route o at secure)",
            ),
        },
    ),
    (
        "default_route_any_lowered",
        _default_route_any_lowered,
        None,
        {'+ routes["default"].tls': (LOOSENING, "TLS level of the route lowered: opportunistic -> none")},
    ),
    (
        "any_route_removed",
        _any_route_removed,
        lambda c: c["routes"][-1].__setitem__("tls", "secure"),
        {
            '- routes["default"]': (
                LOOSENING,
                "mail to partner.example now leaves by the default route at opportunistic (was route default at secure); mail to *.bank.example now leaves by the default route at opportunistic (was route default at secure); mail to other domains now leaves by the default route at opportunistic (was route default at secure)",
            )
        },
    ),
    (
        "mode_enforce",
        _mode_enforce,
        lambda c: c["dlp"].__setitem__("mode", "monitor"),
        {"~ dlp.mode": (TIGHTENING, "DLP acts on matches now")},
    ),
    (
        "plan_action_raised",
        _plan_action_raised,
        None,
        {
            '~ dlp.action_plans["encrypt-it"].email': (
                TIGHTENING,
                "action raised: encrypt -> block for cards/card-numbers",
            )
        },
    ),
    (
        "plan_action_lowered_disabled_rule",
        _plan_action_lowered_disabled_rule,
        lambda c: rule(c, "cards", "card-numbers").__setitem__("enabled", False),
        {'~ dlp.action_plans["encrypt-it"].email': (NEUTRAL, "no enabled rule uses action plan encrypt-it")},
    ),
    (
        "plan_action_disabled_policy",
        _plan_action_disabled_policy,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {'~ dlp.action_plans["hold-it"].email': (NEUTRAL, "no enabled rule uses action plan hold-it")},
    ),
    (
        "plan_notify",
        _plan_notify,
        None,
        {
            '- dlp.action_plans["encrypt-it"].notify "policy_owners"': (
                NEUTRAL,
                "notifications only: what happens to the mail is unchanged",
            )
        },
    ),
    (
        "plan_added",
        _plan_added,
        None,
        {'+ dlp.action_plans["new"]': (NEUTRAL, "action plans act only through the rules that name them")},
    ),
    (
        "policy_added_disabled",
        _policy_added_disabled,
        None,
        {'+ dlp.policies["ssn"]': (NEUTRAL, "the new policy is disabled")},
    ),
    (
        "policy_added_permit",
        _policy_added_permit,
        None,
        {
            '+ dlp.policies["ssn"]': (
                NEUTRAL,
                "new policy ssn: it has no enabled rule that encrypts, blocks or quarantines",
            )
        },
    ),
    (
        "policy_added_two_actions",
        _policy_added_two_actions,
        None,
        {'+ dlp.policies["ssn"]': (TIGHTENING, "new policy ssn: matching mail will be blocked or quarantined")},
    ),
    (
        "policy_removed_disabled",
        _policy_removed_disabled,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {'- dlp.policies["secrets"]': (NEUTRAL, "the removed policy was disabled")},
    ),
    (
        "policy_removed_two_actions",
        _policy_removed_two_actions,
        None,
        {
            '- dlp.policies["secrets"]': (
                LOOSENING,
                "policy secrets removed: mail it matched is no longer blocked or quarantined",
            )
        },
    ),
    (
        "policy_enabled",
        _policy_enabled,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {
            '~ dlp.policies["secrets"].enabled': (
                TIGHTENING,
                "policy secrets enabled: matching mail will be blocked or quarantined",
            )
        },
    ),
    (
        "policy_disabled_permit_only",
        _policy_disabled_permit_only,
        lambda c: rule(c, "cards", "card-numbers").__setitem__("action_plan", "let-it-go"),
        {
            '~ dlp.policies["cards"].enabled': (
                NEUTRAL,
                "policy cards disabled: it had no enabled rule that encrypts, blocks or quarantines",
            )
        },
    ),
    (
        "rule_removed_disabled_policy",
        _rule_removed_disabled_policy,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {'- dlp.policies["secrets"].rules["marked-secret"]': (NEUTRAL, "the removed rule's policy was disabled")},
    ),
    (
        "rule_added",
        _rule_added,
        None,
        {
            '+ dlp.policies["secrets"].rules["new-rule"]': (
                TIGHTENING,
                "new rule new-rule: matching mail will be blocked",
            )
        },
    ),
    (
        "rule_added_disabled_policy",
        _rule_added_disabled_policy,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {'+ dlp.policies["secrets"].rules["new-rule"]': (NEUTRAL, "the new rule's policy is disabled")},
    ),
    (
        "rule_added_disabled",
        _rule_added_disabled,
        None,
        {
            '+ dlp.policies["secrets"].rules["new-rule"]': (
                NEUTRAL,
                "new rule new-rule: it has no enabled rule that encrypts, blocks or quarantines",
            )
        },
    ),
    (
        "rule_enabled",
        _rule_enabled,
        lambda c: rule(c, "secrets", "big-files").__setitem__("enabled", False),
        {
            '~ dlp.policies["secrets"].rules["big-files"].enabled': (
                TIGHTENING,
                "rule big-files enabled: matching mail will be quarantined",
            )
        },
    ),
    (
        "rule_disabled_in_disabled_policy",
        _rule_disabled_in_disabled_policy,
        lambda c: pol(c, "secrets").__setitem__("enabled", False),
        {'~ dlp.policies["secrets"].rules["big-files"].enabled': (NEUTRAL, "the rule's policy is disabled")},
    ),
    (
        "rule_plan_raised",
        _rule_plan_raised,
        None,
        {
            '~ dlp.policies["cards"].rules["card-numbers"].action_plan': (
                TIGHTENING,
                "action raised: encrypt -> block (action plan encrypt-it -> block-it)",
            )
        },
    ),
    (
        "rule_plan_disabled_rule",
        _rule_plan_disabled_rule,
        lambda c: rule(c, "cards", "card-numbers").__setitem__("enabled", False),
        {'~ dlp.policies["cards"].rules["card-numbers"].action_plan': (NEUTRAL, "the rule is disabled")},
    ),
    (
        "condition_added_to_any",
        _condition_added_to_any,
        None,
        {
            '+ dlp.policies["cards"].rules["card-numbers"].conditions.any {"classifier": "iban", "min_confidence": "medium", "min_matches": 1, "scope": ["subject", "body", "attachments"]}': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: {"classifier": "iban", "min_confidence": "medium", "min_matches": 1, "scope": ["subject", "body", "attachments"]} added to any',
            )
        },
    ),
    (
        "condition_removed_from_all",
        _condition_removed_from_all,
        None,
        {
            '- dlp.policies["secrets"].rules["marked-secret"].conditions.all {"header": {"name": "X-Classification", "pattern": "(?i)secret"}}': (
                TIGHTENING,
                'the rule (block) matches more messages: {"header": {"name": "X-Classification", "pattern": "(?i)secret"}} removed from all',
            )
        },
    ),
    (
        "phrase_added",
        _phrase_added,
        None,
        {
            '+ dlp.policies["cards"].rules["card-numbers"].conditions.any["phrases"].phrases "iban"': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: "iban" added to phrases',
            )
        },
    ),
    (
        "scope_removed",
        _scope_removed,
        None,
        {
            '- dlp.policies["cards"].rules["card-numbers"].conditions.any["classifier:credit_card"].scope "attachments"': (
                LOOSENING,
                'the rule (encrypt) matches fewer messages: "attachments" removed from scope',
            )
        },
    ),
    (
        "min_matches_lowered",
        _min_matches_lowered,
        lambda c: rule(c, "cards", "card-numbers")["conditions"]["any"][0].__setitem__("min_matches", 3),
        {
            '~ dlp.policies["cards"].rules["card-numbers"].conditions.any["classifier:credit_card"].min_matches': (
                TIGHTENING,
                "the rule (encrypt) matches more messages: min_matches 3 -> 1",
            )
        },
    ),
    (
        "size_lowered",
        _size_lowered,
        None,
        {
            '~ dlp.policies["secrets"].rules["big-files"].conditions.attachment.size_over': (
                TIGHTENING,
                'the rule (quarantine) matches more messages: size_over "10MB" -> "1MB"',
            )
        },
    ),
    (
        "size_limit_removed",
        _size_limit_removed,
        None,
        {
            '- dlp.policies["secrets"].rules["big-files"].conditions.attachment.size_over': (
                TIGHTENING,
                'the rule (quarantine) matches more messages: size_over "10MB" -> none',
            )
        },
    ),
    (
        "type_limit_created",
        _type_limit_created,
        None,
        {
            '+ dlp.policies["secrets"].rules["big-files"].conditions.attachment.type': (
                LOOSENING,
                'the rule (quarantine) matches fewer messages: type none -> ["zip"]',
            )
        },
    ),
    (
        "type_member_added",
        _type_member_added,
        lambda c: rule(c, "secrets", "big-files")["conditions"]["attachment"].__setitem__("type", ["zip"]),
        {
            '+ dlp.policies["secrets"].rules["big-files"].conditions.attachment.type "pdf"': (
                TIGHTENING,
                'the rule (quarantine) matches more messages: "pdf" added to type',
            )
        },
    ),
    ("size_same_other_unit", _size_same_other_unit, None, {}),
    (
        "not_phrase_removed",
        _not_phrase_removed,
        lambda c: rule(c, "secrets", "marked-secret")["conditions"]["all"][1]["not"]["phrases"].append("internal only"),
        {
            '- dlp.policies["secrets"].rules["marked-secret"].conditions.all["not"].not.phrases "internal only"': (
                TIGHTENING,
                'the rule (block) matches more messages: "internal only" removed from phrases (under not)',
            )
        },
    ),
    (
        "not_min_matches_lowered",
        _not_min_matches_lowered,
        lambda c: rule(c, "secrets", "marked-secret")["conditions"]["all"][1]["not"].__setitem__("min_matches", 2),
        {
            '~ dlp.policies["secrets"].rules["marked-secret"].conditions.all["not"].not.min_matches': (
                LOOSENING,
                "the rule (block) matches fewer messages: min_matches 2 -> 1 (under not)",
            )
        },
    ),
    (
        "senders_first_entry_on_permit",
        _senders_first_entry_on_permit,
        lambda c: rule(c, "cards", "card-numbers").__setitem__("action_plan", "let-it-go"),
        {
            '+ dlp.policies["cards"].rules["card-numbers"].source.senders "*@corp.example"': (
                NEUTRAL,
                "the rule does not encrypt, block or quarantine (or is disabled)",
            )
        },
    ),
    (
        "ip_groups_last_removed",
        _ip_groups_last_removed,
        None,
        {
            '- dlp.policies["cards"].rules["card-numbers"].source.ip_groups "internal_servers"': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: ip_groups: "internal_servers" deleted',
            )
        },
    ),
    (
        "domain_groups_added",
        _domain_groups_added,
        lambda c: c["domain_groups"].__setitem__("spare", ["spare.example"]),
        {
            '+ dlp.policies["cards"].rules["card-numbers"].destination.domain_groups "spare"': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: domain_groups: "spare" created',
            )
        },
    ),
    (
        "domains_first_added",
        _domains_first_added,
        None,
        {
            '+ dlp.policies["secrets"].rules["big-files"].destination.domains "x.example"': (
                LOOSENING,
                'the rule (quarantine) matches fewer messages: domains: "x.example" created',
            )
        },
    ),
    (
        "direction_widened",
        _direction_widened,
        None,
        {
            '~ dlp.policies["cards"].rules["card-numbers"].destination.direction': (
                TIGHTENING,
                "the rule (encrypt) matches more messages: direction outbound -> any",
            )
        },
    ),
    (
        "direction_switched",
        _direction_switched,
        None,
        {
            '~ dlp.policies["cards"].rules["card-numbers"].destination.direction': (
                LOOSENING,
                "the rule (encrypt) matches fewer messages: direction outbound -> inbound (no longer outbound)",
            )
        },
    ),
    (
        "direction_narrowed_from_any",
        _direction_narrowed_from_any,
        lambda c: rule(c, "cards", "card-numbers")["destination"].__setitem__("direction", "any"),
        {
            '~ dlp.policies["cards"].rules["card-numbers"].destination.direction': (
                LOOSENING,
                "the rule (encrypt) matches fewer messages: direction any -> outbound (no longer inbound, internal)",
            )
        },
    ),
    (
        "direction_on_permit",
        _direction_on_permit,
        lambda c: rule(c, "cards", "card-numbers").__setitem__("action_plan", "let-it-go"),
        {
            '~ dlp.policies["cards"].rules["card-numbers"].destination.direction': (
                NEUTRAL,
                "the rule does not encrypt, block or quarantine (or is disabled)",
            )
        },
    ),
    (
        "severity",
        _severity,
        None,
        {
            '~ dlp.policies["cards"].rules["card-numbers"].severity': (
                NEUTRAL,
                "severity is recorded with a match, not acted on",
            )
        },
    ),
    (
        "classifier_added",
        _classifier_added,
        None,
        {
            '+ dlp.classifiers["acct"]': (
                NEUTRAL,
                "changes what a classifier finds; the guard cannot tell whether more or less",
            )
        },
    ),
    (
        "smime_added",
        _smime_added,
        None,
        {"+ encryption.smime": (TIGHTENING, "recipients with a known certificate get S/MIME")},
    ),
    (
        "smime_removed",
        _smime_removed,
        lambda c: c["encryption"].__setitem__("smime", {"certificates": "/etc/sealrelay/smime"}),
        {
            "- encryption.smime": (
                LOOSENING,
                "recipients with a known certificate lose S/MIME: their mail is protected in transit only",
            )
        },
    ),
    (
        "smime_removed_portal",
        _smime_removed_portal,
        lambda c: (
            c["encryption"].__setitem__("smime", {"certificates": "/etc/sealrelay/smime"}),
            c["encryption"].__setitem__("method", "secure_portal"),
        ),
        {"- encryption.smime": (NEUTRAL, "S/MIME certificates move")},
    ),
    (
        "smime_moved",
        _smime_moved,
        lambda c: c["encryption"].__setitem__("smime", {"certificates": "/etc/sealrelay/smime"}),
        {"~ encryption.smime.certificates": (NEUTRAL, "S/MIME certificates move")},
    ),
    (
        "enforced_renamed",
        _enforced_renamed,
        None,
        {
            '- enforced_tls["banks-inbound"]': (NEUTRAL, "renamed to 'banks-in' with the same settings"),
            '+ enforced_tls["banks-in"]': (NEUTRAL, "renamed from 'banks-inbound' with the same settings"),
        },
    ),
    (
        "enforced_renamed_and_weakened",
        _enforced_renamed_and_weakened,
        None,
        {
            '- enforced_tls["banks-inbound"]': (
                LOOSENING,
                "enforced-TLS rule removed: inbound connections with IP group banks no longer must use mandatory TLS",
            ),
            '+ enforced_tls["banks-in"]': (
                TIGHTENING,
                "inbound connections with IP group banks must now use TLS at level opportunistic",
            ),
        },
    ),
    (
        "admin_replaced",
        _admin_replaced,
        None,
        {"~ system.admin.address": (LOOSENING, "the admin API now listens on 0.0.0.0, beyond loopback")},
    ),
    (
        "certificate_changed",
        _certificate_changed,
        None,
        {"~ tls.certificate": (NEUTRAL, "the relay presents another certificate")},
    ),
    (
        "policy_tests",
        _policy_tests,
        None,
        {'+ tests["t"]': (NEUTRAL, "policy tests do not change how mail is handled")},
    ),
    (
        "route_group_grown_beside_another_routed_group",
        _route_group_grown_beside_another_routed_group,
        with_a_partners_route,
        {
            '+ domain_groups.vendors "supplier.example"': (
                TIGHTENING,
                "mail to supplier.example now leaves by route vendors at verify (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to supplier.example",
            )
        },
    ),
    (
        "encrypted_group_switched_from_a_custom_group",
        _encrypted_group_switched_from_a_custom_group,
        with_custom_gateway_group,
        {
            "+ ip_groups.gw2": (LOOSENING, "mail from 192.0.2.10/32, 192.0.2.12/32 will count as already encrypted"),
            "~ encryption.third_party.encrypted_ip_group": (NEUTRAL, "no new peer counts as already encrypted"),
        },
    ),
    (
        "enforced_match_loses_four_peers",
        _enforced_match_loses_four_peers,
        with_five_banks,
        {
            "+ ip_groups.one_bank": (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 203.0.113.0/24",
            ),
            '~ enforced_tls["banks-inbound"].match.ip_group': (
                LOOSENING,
                "peers in banks but not in one_bank are no longer covered: 192.0.2.0/28, 192.0.2.16/28, 192.0.2.32/28",
            ),
        },
    ),
    (
        "permission_with_two_words_granted",
        _permission_with_two_words_granted,
        None,
        {"~ encryption.secure_portal.permissions.attach_file.allowed": (LOOSENING, "portal users may now attach file")},
    ),
    (
        "permission_with_two_words_widened",
        _permission_with_two_words_widened,
        None,
        {
            "~ encryption.secure_portal.permissions.reply_all.recipients": (
                LOOSENING,
                "portal users may now reply all to external recipients",
            )
        },
    ),
    (
        "third_party_tls_raised",
        _third_party_tls_raised,
        with_third_party,
        {"~ encryption.third_party.tls": (TIGHTENING, "TLS level raised: opportunistic -> mandatory")},
    ),
    (
        "covered_subnet_removed",
        _covered_subnet_removed,
        with_covered_subnet,
        {
            '- ip_groups.banks "203.0.113.0/25"': (
                NEUTRAL,
                "203.0.113.0/25 adds or removes nothing: other entries of banks cover the same",
            )
        },
    ),
    (
        "new_group_of_three",
        _new_group_of_three,
        None,
        {
            "+ ip_groups.few": (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 192.0.2.0/28, 192.0.2.16/28, 192.0.2.32/28",
            ),
            '~ enforced_tls["banks-inbound"].match.ip_group': (
                LOOSENING,
                "peers in banks but not in few are no longer covered: 198.51.100.0/24, 203.0.113.0/24",
            ),
        },
    ),
    (
        "new_group_of_four",
        _new_group_of_four,
        None,
        {
            "+ ip_groups.four": (
                TIGHTENING,
                "enforced_tls banks-inbound now requires mandatory TLS of 192.0.2.0/28, 192.0.2.16/28, 192.0.2.32/28 and 1 more",
            ),
            '~ enforced_tls["banks-inbound"].match.ip_group': (
                LOOSENING,
                "peers in banks but not in four are no longer covered: 198.51.100.0/24, 203.0.113.0/24",
            ),
        },
    ),
    (
        "group_used_after_a_disabled_policy",
        _group_used_after_a_disabled_policy,
        lab_in_a_disabled_policy_then_cards,
        {
            '+ ip_groups.lab "172.16.0.0/12"': (
                TIGHTENING,
                "DLP rule cards/card-numbers (encrypt) now covers mail from 172.16.0.0/12",
            )
        },
    ),
    (
        "group_used_only_by_a_disabled_policy",
        _group_used_only_by_a_disabled_policy,
        lab_in_a_disabled_policy,
        {'+ ip_groups.lab "172.16.0.0/12"': (NEUTRAL, "IP group lab is not used by a TLS, relay or DLP rule")},
    ),
    (
        "group_used_only_by_a_disabled_rule",
        _group_used_only_by_a_disabled_rule,
        lab_in_a_disabled_rule,
        {'+ ip_groups.lab "172.16.0.0/12"': (NEUTRAL, "IP group lab is not used by a TLS, relay or DLP rule")},
    ),
    (
        "group_used_only_by_a_permit_rule",
        _group_used_only_by_a_permit_rule,
        lab_in_a_permit_rule,
        {'+ ip_groups.lab "172.16.0.0/12"': (NEUTRAL, "IP group lab is not used by a TLS, relay or DLP rule")},
    ),
    (
        "group_used_by_a_later_rule",
        _group_used_by_a_later_rule,
        lab_in_big_files,
        {
            '+ ip_groups.lab "172.16.0.0/12"': (
                TIGHTENING,
                "DLP rule secrets/big-files (quarantine) now covers mail from 172.16.0.0/12",
            )
        },
    ),
    (
        "domain_group_used_by_dlp_only",
        _domain_group_used_by_dlp_only,
        shops_in_dlp,
        {
            '+ domain_groups.shops "store.example"': (
                TIGHTENING,
                "DLP rule cards/card-numbers (encrypt) now covers mail to store.example",
            )
        },
    ),
    (
        "routed_enforced_dlp_group_grown",
        _routed_enforced_dlp_group_grown,
        with_a_partners_route,
        {
            '+ domain_groups.partners "ally.example"': (
                TIGHTENING,
                "enforced_tls partners-outbound now requires secure TLS of ally.example; mail to ally.example now leaves by route p at secure (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to ally.example",
            )
        },
    ),
    (
        "wildcard_reaches_other_named_domains",
        _wildcard_reaches_other_named_domains,
        None,
        {
            '+ domain_groups.vendors "*.example"': (
                TIGHTENING,
                "mail to *.example now leaves by route vendors at verify (was route default at opportunistic); mail to partner.example now leaves by route vendors at verify (was route default at opportunistic); mail to *.bank.example now leaves by route vendors at verify (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to *.example",
            )
        },
    ),
    (
        "wider_wildcard_beside_a_narrower_one",
        _wider_wildcard_beside_a_narrower_one,
        vendors_with_a_wildcard,
        {
            '+ domain_groups.vendors "*.example"': (
                TIGHTENING,
                "mail to *.example now leaves by route vendors at verify (was route default at opportunistic); mail to partner.example now leaves by route vendors at verify (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to *.example",
            )
        },
    ),
    (
        "route_recipients_changed_beside_another_route",
        _route_recipients_changed_beside_another_route,
        with_a_partners_route,
        {'~ routes["vendors"].recipients': (NEUTRAL, "no recipient's TLS level changes")},
    ),
    (
        "route_removed_while_another_is_added",
        _route_removed_while_another_is_added,
        with_a_plain_route,
        {
            "+ domain_groups.shops": (
                TIGHTENING,
                "mail to shop.example now leaves by route shops at secure (was route default at opportunistic)",
            ),
            '- routes["x"]': (NEUTRAL, "no recipient's TLS level changes"),
            '+ routes["shops"]': (
                TIGHTENING,
                "mail to shop.example now leaves by route shops at secure (was route default at opportunistic)",
            ),
        },
    ),
    (
        "condition_in_a_disabled_policy",
        _condition_in_a_disabled_policy,
        disabled_secrets,
        {
            '~ dlp.policies["secrets"].rules["big-files"].conditions.attachment.size_over': (
                NEUTRAL,
                "the rule does not encrypt, block or quarantine (or is disabled)",
            )
        },
    ),
    (
        "rule_plan_in_a_disabled_policy",
        _rule_plan_in_a_disabled_policy,
        disabled_secrets,
        {'~ dlp.policies["secrets"].rules["big-files"].action_plan': (NEUTRAL, "the rule is disabled")},
    ),
    (
        "conditions_rewritten",
        _conditions_rewritten,
        None,
        {
            '~ dlp.policies["secrets"].rules["big-files"].conditions': (
                NEUTRAL,
                "conditions updated: the guard cannot tell whether the rule matches more or less",
            )
        },
    ),
    (
        "attachment_count_raised",
        _attachment_count_raised,
        with_attachment_count,
        {
            '~ dlp.policies["secrets"].rules["marked-secret"].conditions.all["attachment_count"].attachment_count.over': (
                LOOSENING,
                "the rule (block) matches fewer messages: over 2 -> 5",
            )
        },
    ),
    (
        "non_ascii_phrase_added",
        _non_ascii_phrase_added,
        None,
        {
            '+ dlp.policies["cards"].rules["card-numbers"].conditions.any["phrases"].phrases "número de tarjeta"': (
                TIGHTENING,
                'the rule (encrypt) matches more messages: "número de tarjeta" added to phrases',
            )
        },
    ),
    (
        "plan_used_by_four_rules_lowered",
        _plan_used_by_four_rules_lowered,
        block_it_used_four_times,
        {
            '~ dlp.action_plans["block-it"].email': (
                LOOSENING,
                "action lowered: block -> quarantine for cards/r1, cards/r2, cards/r3",
            )
        },
    ),
    (
        "opportunistic_rule_removed_over_a_plain_route",
        _opportunistic_rule_removed_over_a_plain_route,
        opportunistic_partners_and_plain_vendors,
        {
            '- enforced_tls["partners-outbound"]': (
                LOOSENING,
                "enforced-TLS rule removed: outbound connections with domain group partners fall back to the weaker TLS of route(s) vendors instead of opportunistic",
            )
        },
    ),
    (
        "opportunistic_inbound_rule_removed_over_a_plain_route",
        _opportunistic_inbound_rule_removed_over_a_plain_route,
        opportunistic_inbound_and_plain_vendors,
        {
            '- enforced_tls["banks-inbound"]': (
                NEUTRAL,
                "the removed rule only asked for opportunistic TLS, which every route already has",
            )
        },
    ),
    (
        "opportunistic_rule_removed_over_a_plain_default",
        _opportunistic_rule_removed_over_a_plain_default,
        opportunistic_partners_and_plain_default,
        {
            '- enforced_tls["partners-outbound"]': (
                LOOSENING,
                "enforced-TLS rule removed: outbound connections with domain group partners fall back to the weaker TLS of route(s) default, (default) instead of opportunistic",
            )
        },
    ),
    (
        "wildcard_over_another_routed_group",
        _wildcard_over_another_routed_group,
        with_a_partners_route,
        {
            '+ domain_groups.vendors "*.example"': (
                TIGHTENING,
                "mail to *.example now leaves by route vendors at verify (was route default at opportunistic); DLP rule cards/card-numbers (encrypt) now covers mail to *.example",
            )
        },
    ),
    (
        "route_domain_removed_while_its_level_changes",
        _route_domain_removed_while_its_level_changes,
        with_a_shops_route,
        {
            '- routes["shops"].recipients.domains "b.example"': (
                LOOSENING,
                "mail to b.example now leaves by route default at opportunistic (was route shops at verify)",
            ),
            '~ routes["shops"].tls': (LOOSENING, "TLS level of the route lowered: secure -> verify"),
        },
    ),
    (
        "attachment_name_changed",
        _attachment_name_changed,
        None,
        {
            '~ dlp.policies["secrets"].rules["big-files"].conditions.attachment.name': (
                NEUTRAL,
                "attachment/name updated: the guard cannot tell whether the rule matches more or less",
            )
        },
    ),
]


@pytest.mark.parametrize(("after", "before", "expected"), [pytest.param(a, b, e, id=n) for n, a, b, e in SCENARIOS])
def test_verdicts(after: Edit, before: Edit | None, expected: dict[str, tuple[str, str]]) -> None:
    assert verdicts(after, before) == expected


def test_the_first_config_has_nothing_to_compare_with() -> None:
    changes = classify(diff(BASE, None), BASE, None)
    assert changes and {(c.effect, c.reason) for c in changes} == {
        (NEUTRAL, "the first config: nothing to compare with")
    }


def test_compare_without_a_rank() -> None:
    assert compare("backup method", "none", "pgp", {"none": 0}) == (NEUTRAL, "backup method: none -> pgp")
    assert compare("x", "a", "b", {"b": 1}) == (NEUTRAL, "x: a -> b")


def test_judge() -> None:
    otherwise = (NEUTRAL, "nothing")
    assert judge([], otherwise) == otherwise
    assert judge([(NEUTRAL, "n1"), (NEUTRAL, "n2")], otherwise) == (NEUTRAL, "n1")
    assert judge([(TIGHTENING, "t1"), (LOOSENING, "l1"), (LOOSENING, "l2")], otherwise) == (
        LOOSENING,
        "l1; l2",
    )
    assert judge(iter([(TIGHTENING, "t1"), (NEUTRAL, "n"), (TIGHTENING, "t2"), (TIGHTENING, "t3")]), otherwise) == (
        TIGHTENING,
        "t1; t2; t3",
    )
    assert judge([(LOOSENING, "l1")], otherwise) == (LOOSENING, "l1")


def _one(change: Change, desired: dict = BASE, current: dict = BASE) -> tuple[str, str]:
    (judged,) = classify([change], desired, current)
    return judged.effect, judged.reason


def test_changes_that_canonical_configs_make_rarely() -> None:
    admin = ("system", "admin")
    loopback, anywhere = {"address": "127.0.0.1", "port": 8025}, {"address": "0.0.0.0", "port": 8025}
    assert _one(Change(Action.UPDATE, admin, loopback, anywhere)) == (
        LOOSENING,
        "the admin API now listens on 0.0.0.0, beyond loopback",
    )
    assert _one(Change(Action.UPDATE, admin, anywhere, loopback)) == (
        TIGHTENING,
        "the admin API now listens on loopback only",
    )
    assert _one(Change(Action.CREATE, admin, None, loopback)) == (
        TIGHTENING,
        "the admin API now listens on loopback only",
    )
    kdf = ("encryption", "advanced", "kdf", "iterations")
    unknown = (NEUTRAL, "no effect on protection known to the guard")
    assert _one(Change(Action.CREATE, kdf, None, 600000)) == unknown
    assert _one(Change(Action.UPDATE, kdf, 600000, 600001)) == (
        TIGHTENING,
        "more key-derivation iterations: 600000 -> 600001",
    )
    forward = ("encryption", "secure_portal", "permissions", "forward", "allowed")
    assert _one(Change(Action.CREATE, forward, None, True)) == unknown
    compose = ("encryption", "secure_portal", "permissions", "compose", "recipients")
    assert _one(Change(Action.CREATE, compose, None, "any")) == unknown
    listener = ("system", "listeners", 0, "starttls")
    assert _one(Change(Action.CREATE, listener, None, "offered")) == unknown

    mode = ("dlp", "mode")
    assert _one(Change(Action.CREATE, mode, None, "monitor")) == (NEUTRAL, "DLP mode")
    assert _one(Change(Action.DELETE, mode, "enforce", None)) == (NEUTRAL, "DLP mode")


def test_a_section_a_config_leaves_out_has_its_default() -> None:
    """The rules read the canonical JSON, where every section is written out; a config that
    leaves one out (an older plan file, a hand-made one) gets the model's defaults."""
    backup, smime = ("encryption", "backup"), ("encryption", "smime")
    assert _one(Change(Action.UPDATE, backup, "advanced", "none"), {}, {}) == (
        LOOSENING,
        "no backup encryption when the TLS connection fails",
    )
    assert _one(Change(Action.CREATE, backup, None, "advanced"), {}, {}) == (
        TIGHTENING,
        "when the TLS connection fails, mail is encrypted with advanced",
    )
    assert _one(Change(Action.DELETE, backup, "third_party", None), {}, {}) == (
        LOOSENING,
        "no backup encryption when the TLS connection fails",
    )
    assert _one(Change(Action.DELETE, smime, {"certificates": "certs"}, None), {}, {}) == (
        LOOSENING,
        "recipients with a known certificate lose S/MIME: their mail is protected in transit only",
    )
    direction = ("enforced_tls", 0, "direction")
    assert _one(Change(Action.CREATE, direction, None, "both"), {}, {}) == (
        TIGHTENING,
        "the rule now also applies to inbound and outbound connections",
    )
    assert _one(Change(Action.DELETE, direction, "both", None), {}, {}) == (
        LOOSENING,
        "the rule no longer applies to inbound and outbound connections",
    )
    group = ("encryption", "third_party", "encrypted_ip_group")
    assert _one(Change(Action.UPDATE, group, "a", "b"), {}, {}) == (NEUTRAL, "no new peer counts as already encrypted")


def test_fields_created_rather_than_changed() -> None:
    """Two-valued fields (and lists) change from one value to the other in a canonical plan;
    created from nothing (an older plan, a hand-made config) they are judged as such."""
    unknown = (NEUTRAL, "no effect on protection known to the guard")
    assert _one(Change(Action.CREATE, ("dlp", "mode"), None, "enforce")) == (NEUTRAL, "DLP mode")
    assert _one(Change(Action.CREATE, ("system", "listeners", 0, "starttls"), None, "required")) == unknown
    forward = ("encryption", "secure_portal", "permissions", "forward", "allowed")
    assert _one(Change(Action.CREATE, forward, None, False)) == unknown
    compose = ("encryption", "secure_portal", "permissions", "compose", "recipients")
    assert _one(Change(Action.CREATE, compose, None, "internal")) == unknown
    senders = ("dlp", "policies", Key("secrets"), "rules", Key("big-files"), "source", "senders")
    assert _one(Change(Action.UPDATE, senders, [], ["*@example.com"])) == (NEUTRAL, "senders")
    assert _one(Change(Action.UPDATE, ("version",), 1, 2)) == (NEUTRAL, "the config format version")
