"""The committed JSON Schema is the models' schema, documented, and agrees with us."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from engine.config import schema
from engine.config.load import load_config
from engine.config.source import load_path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "schemas" / schema.SCHEMA_FILE
EXAMPLES = sorted(
    p for p in (ROOT / "examples").iterdir() if p.suffix == ".yaml" or p.is_dir() and any(p.glob("*.yaml"))
)
GOLDEN = ROOT / "tests" / "golden" / "validate"


def test_committed_schema_equals_generated() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema.dumps(schema.generate()), (
        "schemas/ is out of date: run `sealrelay schema export`"
    )


def _properties(node: object, where: str = "#"):
    if isinstance(node, dict):
        for name, sub in node.get("properties", {}).items():
            yield f"{where}/{name}", sub
        for key, sub in node.items():
            yield from _properties(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _properties(sub, f"{where}/{i}")


def test_every_field_has_a_description_and_examples() -> None:
    missing = [
        where
        for where, prop in _properties(schema.generate())
        if not prop.get("description") or not prop.get("examples")
    ]
    assert missing == []


def test_schema_is_draft_2020_12() -> None:
    doc = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(doc)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_pass_the_plain_schema_as_ci_tools_see_it(example: Path) -> None:
    """What check-jsonschema would do: the committed file, the stock validator."""
    doc = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    data = load_path(example).data
    assert list(jsonschema.Draft202012Validator(doc).iter_errors(data)) == []


def _golden_data() -> list[tuple[str, object]]:
    cases = []
    for case in sorted(p for p in GOLDEN.iterdir() if p.is_dir()):
        data = load_path(case / "relay.d" if (case / "relay.d").exists() else case / "relay.yaml").data
        if data is not None:  # cases whose YAML itself is broken never reach the schema
            cases.append((case.name, data))
    return cases


@pytest.mark.parametrize(("name", "data"), _golden_data(), ids=lambda v: v if isinstance(v, str) else "")
def test_fast_and_detailed_validators_agree(name: str, data: object) -> None:
    detailed = list(schema._validator(1).iter_errors(data))
    assert schema.is_valid(data) == (not detailed)


def test_examples_first_line_points_editors_at_the_schema() -> None:
    for example in EXAMPLES:
        files = sorted(example.glob("*.yaml")) if example.is_dir() else [example]
        for f in files:
            first = f.read_text(encoding="utf-8").splitlines()[0]
            assert first.startswith("# yaml-language-server: $schema="), f
            target = (f.parent / first.split("=", 1)[1]).resolve()
            assert target == SCHEMA_FILE, f


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    result = load_config(example)
    assert result.ok, [str(d) for d in result.diagnostics]


def test_config_reference_is_generated_from_the_models() -> None:
    from engine.config.reference import render

    committed = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed == render(), "run `sealrelay schema reference > docs/config-reference.md`"
