"""The OpenAPI document describes exactly the routes the app serves, and its schemas the values."""

from __future__ import annotations

import jsonschema
import pytest
from starlette.routing import Route

from engine.admin.api import make_app
from engine.admin.audit import AuditRecord
from engine.admin.contract import ApplyRequest, ApplyResult, ChangeCounts, PlanResult, RunningConfig, Status
from engine.admin.openapi import openapi_document
from tests.admin.fake_control import FakeControl


def served_routes() -> set[tuple[str, str]]:
    app = make_app(FakeControl(), "t", audit=None)  # type: ignore[arg-type]
    return {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


def test_every_route_is_documented_and_nothing_else() -> None:
    doc = openapi_document()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert documented == served_routes()
    assert doc["openapi"].startswith("3.1")


def test_only_healthz_is_open() -> None:
    doc = openapi_document()
    assert doc["security"] == [{"bearer": []}]
    open_ops = [path for path, item in doc["paths"].items() for op in item.values() if op.get("security") == []]
    assert open_ops == ["/healthz"]


def test_every_reference_resolves_and_every_schema_is_valid() -> None:
    doc = openapi_document()
    schemas = doc["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for value in node.values():
                yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    for ref in refs(doc):
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


SAMPLES = {
    "ChangeCounts": ChangeCounts(1, 0, 0, 0),
    "RunningConfig": RunningConfig(1, {}, "0" * 64, None, 0.0, "api"),
    "Status": Status(1, None, 0.0),
    "PlanResult": PlanResult(True, 1, {}),
    "ApplyRequest": ApplyRequest({}, 1),
    "ApplyResult": ApplyResult(True, 1, 1),
    "AuditRecord": AuditRecord(who="token:0123abcd", from_version=1, to_version=1, result="unchanged"),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_values_match_their_schemas(name: str) -> None:
    doc = openapi_document()
    schema = {**doc["components"]["schemas"][name], "components": doc["components"]}
    resolver_doc = {"components": doc["components"], **schema}
    data = SAMPLES[name].to_json()
    jsonschema.Draft202012Validator(resolver_doc).validate(data)
    described = set(doc["components"]["schemas"][name]["properties"])
    assert set(data) <= described, set(data) - described
