"""A config's canonical JSON, bytes and hash computed once (`engine.plan.diff.document`), and
the DLP section validated once per content (`engine.config.model.dlp.DLP`).

Both are caches: each test checks that the cached value is exactly what the uncached path
gives (so nothing can drift from `canonical` / `config_hash`), and that a change is not
served from the cache.
"""

from __future__ import annotations

import copy
import gc
import json
from pathlib import Path

import pytest

from engine.config.load import load_config, validate_data
from engine.config.model.dlp import DLP
from engine.plan.build import make_plan
from engine.plan.diff import _MEMO, canonical, canonical_bytes, config_hash, document, hash_canonical

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def example(path: Path):
    result = load_config(path, check_files=False)
    assert result.ok, result.diagnostics
    return result.config


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_document_is_the_canonical_json_its_bytes_and_their_hash(path):
    config = example(path)
    data = canonical(config)
    made = document(config)
    assert made.data == data and list(made.data) == list(data)  # the sections in model order
    assert made.text == canonical_bytes(data)
    assert made.hash == hash_canonical(data) == config_hash(canonical(config))  # a dict, read back


def test_non_ascii_text_hashes_as_the_canonical_json_does():
    data = canonical(example(ROOT / "examples" / "full.yaml"))
    data["dlp"]["policies"][0]["rules"][0]["description"] = "cartes bancaires, numéros complets — « PAN »"
    data["dlp"]["policies"][0]["owners"] = ["sécurité@example.com"]
    config, diagnostics = validate_data(data)  # owners are checked by the semantic checks only
    assert config is not None, diagnostics
    assert document(config).text == canonical_bytes(canonical(config))
    assert "« PAN »".encode() in document(config).text  # UTF-8, not \\u escapes


def test_computed_once_per_config_object_and_forgotten_with_it():
    config = example(ROOT / "examples" / "full.yaml")
    first = document(config)
    assert document(config) is first
    assert config_hash(config) == first.hash
    other, _ = validate_data(canonical(config))
    assert document(other) is not first and document(other).hash == first.hash
    key = id(other)
    del other
    gc.collect()
    assert key not in _MEMO


def test_callers_get_a_fresh_copy_from_canonical():
    config = example(ROOT / "examples" / "full.yaml")
    made = document(config)
    changed = canonical(config)
    changed["delivery"]["retry_interval"] = "1h"
    changed["dlp"]["policies"].clear()
    assert made.data == canonical(config) != changed


def test_a_plan_of_models_equals_the_plan_of_their_json():
    before = example(ROOT / "examples" / "full.yaml")
    data = canonical(before)
    data["delivery"]["retry_interval"] = "16m"
    data["dlp"]["policies"][0]["rules"][0]["conditions"] = {"classifier": "iban"}
    after, _ = validate_data(data)
    from_models = make_plan(after, before, created_at="t")
    from_json = make_plan(canonical(after), canonical(before), created_at="t")
    assert from_models.to_dict() == from_json.to_dict()
    assert from_models.desired_hash == config_hash(after) and from_models.base_hash == config_hash(before)
    assert "delivery.retry_interval" in {c.address for c in from_models.changes}


def received(config) -> dict:
    """The config as the admin API receives it: JSON text, parsed."""
    return json.loads(json.dumps(canonical(config)))


def test_the_dlp_section_is_validated_once_per_content():
    data = received(example(ROOT / "examples" / "full.yaml"))
    first, _ = validate_data(data)
    again = received(first)
    again["delivery"]["retry_interval"] = "16m"  # another config, the same dlp
    second, _ = validate_data(again)
    assert second is not first and second.dlp is first.dlp
    assert DLP.model_validate(received(first)["dlp"]) is first.dlp


def test_a_changed_dlp_section_is_validated_again():
    data = canonical(example(ROOT / "examples" / "full.yaml"))
    first, _ = validate_data(data)
    changed = copy.deepcopy(data)
    changed["dlp"]["mode"] = "monitor"
    second, _ = validate_data(changed)
    assert second.dlp is not first.dlp and (second.dlp.mode, first.dlp.mode) == ("monitor", "enforce")
    # equal as numbers, not as data: 1 and 1.0 pickle apart, so one is not taken for the other
    floats = copy.deepcopy(changed)
    floats["dlp"]["policies"][0]["rules"][0]["conditions"]["any"][0]["min_matches"] = 1.0
    assert floats["dlp"] == changed["dlp"]
    assert DLP.model_validate(floats["dlp"]) is not DLP.model_validate(changed["dlp"])


def test_invalid_dlp_data_is_reported_every_time():
    data = canonical(example(ROOT / "examples" / "full.yaml"))
    data["dlp"]["policies"][0]["rules"][0]["action_plan"] = 7
    data["dlp"]["mode"] = "sometimes"
    first = validate_data(data)
    second = validate_data(copy.deepcopy(data))
    assert first[0] is None and second[0] is None
    assert [d.message for d in first[1]] == [d.message for d in second[1]] != []
