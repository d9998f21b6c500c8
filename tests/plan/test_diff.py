"""The structural diff: keyed by names, sets for plain values, order only where it matters."""

from __future__ import annotations

import copy
import json

from engine.config.secrets import REDACTED
from engine.plan.change import Action, Change, Key, Plan, address
from engine.plan.diff import SECRET_FIELDS, canonical, config_hash, diff, node_at
from tests.plan.conftest import CASES, load

BASE = canonical(load(CASES / "no-change" / "before.yaml"))


def changed(mutate) -> list[Change]:
    desired = copy.deepcopy(BASE)
    mutate(desired)
    return diff(desired, BASE)


def test_equal_configs_have_no_changes_and_equal_hashes() -> None:
    assert diff(BASE, copy.deepcopy(BASE)) == []
    shuffled = json.loads(json.dumps(BASE))
    shuffled = dict(reversed(list(shuffled.items())))  # key order does not matter
    assert config_hash(shuffled) == config_hash(BASE)
    assert len(config_hash(BASE)) == 64


def test_a_dict_missing_defaults_equals_the_full_config() -> None:
    sparse = {
        "version": 1,
        "system": {"fqdn": "relay.example.com", "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 2525}]},
    }
    assert diff(sparse, canonical(sparse)) == []
    assert canonical(sparse)["delivery"]["retry_interval"] == "15m"


def test_a_scalar_update_has_before_and_after() -> None:
    (change,) = changed(lambda c: c["tls"].update(outbound_default="none"))
    assert change == Change(Action.UPDATE, ("tls", "outbound_default"), "opportunistic", "none")
    assert change.address == "tls.outbound_default"


def test_named_items_are_matched_by_name_so_a_reorder_is_no_change() -> None:
    def mutate(c: dict) -> None:
        c["enforced_tls"].reverse()
        c["dlp"]["policies"].reverse()
        c["dlp"]["action_plans"].reverse()
        c["system"]["listeners"].reverse()

    assert changed(mutate) == []


def test_a_rename_is_a_delete_and_a_create() -> None:
    def mutate(c: dict) -> None:
        c["enforced_tls"][0]["name"] = "banks-in"

    changes = changed(mutate)
    assert [(c.action, c.address) for c in changes] == [
        (Action.DELETE, 'enforced_tls["banks-inbound"]'),
        (Action.CREATE, 'enforced_tls["banks-in"]'),
    ]
    assert changes[0].before["level"] == "mandatory" and changes[1].after["name"] == "banks-in"


def test_a_change_inside_a_named_item_is_addressed_by_names() -> None:
    def mutate(c: dict) -> None:
        c["dlp"]["policies"][1]["rules"][0]["enabled"] = False

    (change,) = changed(mutate)
    assert change.path == ("dlp", "policies", Key("secrets"), "rules", Key("marked-secret"), "enabled")
    assert change.address == 'dlp.policies["secrets"].rules["marked-secret"].enabled'


def test_routes_reordered_is_one_order_change() -> None:
    (change,) = changed(lambda c: c["routes"].reverse())
    assert (change.action, change.kind, change.address) == (Action.UPDATE, "order", "routes")
    assert (change.before, change.after) == (["vendors", "default"], ["default", "vendors"])


def test_plain_lists_are_sets() -> None:
    def mutate(c: dict) -> None:
        c["domain_groups"]["partners"] = ["*.bank.example", "new.example"]  # reordered, one swapped

    changes = changed(mutate)
    assert [(c.action, c.kind, c.before, c.after) for c in changes] == [
        (Action.DELETE, "member", "partner.example", None),
        (Action.CREATE, "member", None, "new.example"),
    ]


def test_conditions_are_paired_by_identity_and_order_free() -> None:
    def mutate(c: dict) -> None:
        conditions = c["dlp"]["policies"][0]["rules"][0]["conditions"]["any"]
        conditions.reverse()
        conditions[1]["min_matches"] = 2  # the classifier, now second

    (change,) = changed(mutate)
    assert change.address.endswith('conditions.any["classifier:credit_card"].min_matches')
    assert (change.before, change.after) == (1, 2)


def test_a_value_that_changes_kind_is_one_update() -> None:
    def mutate(c: dict) -> None:
        c["enforced_tls"][0]["match"] = {"domain_group": "partners"}
        c["routes"][1]["next_hop"] = {"host": "smtp.example.com"}

    changes = changed(mutate)
    assert [(c.action, c.address) for c in changes] == [
        (Action.UPDATE, 'enforced_tls["banks-inbound"].match'),
        (Action.UPDATE, 'routes["default"].next_hop'),
    ]
    assert changes[0].before == {"ip_group": "banks"} and changes[1].before == "mx"


def test_a_section_created_and_deleted() -> None:
    (change,) = changed(lambda c: c["encryption"].pop("secure_portal"))
    assert (change.action, change.address) == (Action.DELETE, "encryption.secure_portal")


def test_everything_is_created_from_nothing_in_section_order() -> None:
    changes = diff(BASE, None)
    assert [c.address for c in changes] == list(BASE)
    assert {c.action for c in changes} == {Action.CREATE}


def test_secret_fields_come_from_the_models() -> None:
    assert SECRET_FIELDS == {"password", "key_password", "database_password", "master_key", "private_key"}


def test_secrets_are_compared_whole_and_never_shown() -> None:
    def with_secret(ref: dict):
        def mutate(c: dict) -> None:
            c["routes"][0]["auth"] = {"username": "relay", "password": ref}

        return mutate

    base = copy.deepcopy(BASE)
    with_secret({"env": "OLD_NAME"})(base)
    desired = copy.deepcopy(BASE)
    with_secret({"file": "secrets/new-file"})(desired)
    (change,) = diff(desired, base)
    assert change == Change(Action.UPDATE, ("routes", Key("vendors"), "auth", "password"), REDACTED, REDACTED)
    (created,) = diff(desired, BASE)
    assert created.after == {"username": "relay", "password": REDACTED}
    assert "OLD_NAME" not in repr(diff(BASE, base)) and "new-file" not in repr(diff(BASE, desired))


def test_node_at_resolves_names_and_identities() -> None:
    path = ("dlp", "policies", Key("cards"), "rules", Key("card-numbers"), "conditions", "any", Key("phrases"))
    assert node_at(BASE, path)["phrases"] == ["card number", "account statement"]
    assert node_at(BASE, ("routes", Key("nope"))) is None
    assert address(path) == 'dlp.policies["cards"].rules["card-numbers"].conditions.any["phrases"]'


def test_plan_values_round_trip_through_their_dict_form() -> None:
    plan = Plan(3, "b" * 64, "d" * 64, tuple(changed(lambda c: c["routes"].reverse())), commit="abc", created_at="t")
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
