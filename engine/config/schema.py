"""JSON Schema: generated from the models, and the first gate every config passes.

`generate()` is what `sealrelay schema export` writes to `schemas/` (a test proves the
committed files equal it), so editors and CI tools like check-jsonschema see the same
rules we apply. `check()` runs the schema and turns jsonschema's errors into diagnostics
an admin can act on: unknown keys with "did you mean", enum values with the closest
allowed one, and for `oneOf` alternatives the error of the alternative that was meant.

Two validators, one schema: jsonschema-rs (Rust) answers "valid or not" in about a
millisecond for a large config, and only when it says "not" does the Python jsonschema
run to explain why (it is several hundred times slower, but its errors carry the
structure the explanations need). A test proves both agree on every example and on the
broken-config corpus.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path as FsPath
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from engine.config.diagnostics import Diagnostic, Path, error
from engine.config.model import MODELS_BY_VERSION
from engine.config.model.base import ENV_PATTERN, HOSTNAME_PATTERN, NAME_PATTERN
from engine.config.units import DURATION_PATTERN, SIZE_PATTERN
from engine.fsutil import write_atomic

SCHEMA_FILE = "relay.schema.json"
SCHEMA_ID = "https://sealrelay.dev/schemas/relay.schema.json"

_PATTERN_MEANINGS = {
    DURATION_PATTERN: ("is not a duration", "write a number and a unit: 30s, 15m, 4h, 5d or 1w"),
    SIZE_PATTERN: ("is not a size", "write a number and a unit: 512KB, 50MB or 5MiB"),
    HOSTNAME_PATTERN: (
        "is not a valid host name",
        "use letters, digits, `-` and dots, like mail.example.com",
    ),
    NAME_PATTERN: (
        "is not a valid name",
        "names start with a letter or digit and use letters, digits, `_`, `.` and `-`",
    ),
    ENV_PATTERN: (
        "is not an environment variable name",
        "use letters, digits and `_`, like SEAL_PFX_PASSWORD",
    ),
}
_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def generate(version: int = 1) -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of config format `version`, from its model."""
    schema = MODELS_BY_VERSION[version].model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def export(directory: FsPath) -> list[FsPath]:
    """Write `relay.schema.json` into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SCHEMA_FILE
    write_atomic(target, dumps(generate()).encode("utf-8"), 0o644)
    return [target]


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@cache
def _validator(version: int) -> Draft202012Validator:
    return Draft202012Validator(generate(version))


@cache
def _fast_validator(version: int) -> Any:
    return jsonschema_rs.Draft202012Validator(generate(version))


def is_valid(data: Any, version: int = 1) -> bool:
    """The fast yes/no answer of the Rust validator."""
    return _fast_validator(version).is_valid(data)


def check(data: Any, version: int = 1) -> list[Diagnostic]:
    """Every schema violation in `data`, as diagnostics that know only their path."""
    if is_valid(data, version):
        return []
    validator = _validator(version)
    out: list[Diagnostic] = []
    for err in validator.iter_errors(data):
        out.extend(_explain(err, validator))
    return out


def _explain(err: ValidationError, validator: Draft202012Validator) -> Iterator[Diagnostic]:
    path: Path = tuple(err.absolute_path)
    kind = err.validator
    schema = err.schema if isinstance(err.schema, dict) else {}
    if kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for key in sorted(set(err.instance) - set(allowed)):
            yield error(
                (*path, key),
                f"unknown key `{key}`",
                _did_you_mean(key, allowed) or _list_hint(allowed),
                at_key=True,
            )
    elif kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        yield error(path, f"missing required key `{missing}`", at_key=True)
    elif kind in ("enum", "const"):
        allowed = schema.get("enum") or [schema.get("const")]
        yield _not_allowed(path, err.instance, allowed)
    elif kind == "type":
        want = err.validator_value if isinstance(err.validator_value, list) else [err.validator_value]
        wanted = " or ".join(_TYPE_NAMES.get(w, w) for w in want)
        yield error(path, f"expected {wanted}, got {_describe(err.instance)}")
    elif kind == "pattern":
        meaning, hint = _PATTERN_MEANINGS.get(err.validator_value, ("does not have the expected form", None))
        yield error(path, f"{err.instance!r} {meaning}", hint)
    elif kind in ("oneOf", "anyOf"):
        yield from _explain_alternatives(err, validator)
    elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        word = {
            "minimum": "at least",
            "maximum": "at most",
            "exclusiveMinimum": "more than",
            "exclusiveMaximum": "less than",
        }[kind]
        yield error(path, f"{err.instance!r} is out of range: must be {word} {err.validator_value}")
    elif kind in ("minItems", "minLength"):
        what = "entry" if kind == "minItems" else "character"
        plural = "" if err.validator_value == 1 else ("ies" if what == "entry" else "s")
        what = "entr" if what == "entry" and plural else what
        yield error(path, f"must have at least {err.validator_value} {what}{plural}")
    elif kind in ("maxItems", "maxLength"):
        yield error(path, f"too long: at most {err.validator_value}")
    else:
        yield error(path, err.message)


def _explain_alternatives(err: ValidationError, validator: Draft202012Validator) -> Iterator[Diagnostic]:
    """Pick the alternative the admin meant (the one whose shape fits) and report its errors."""
    path: Path = tuple(err.absolute_path)
    schema = err.schema if isinstance(err.schema, dict) else {}
    instance = err.instance
    if schema.get("x-secret") and not isinstance(instance, dict):
        yield error(
            path,
            "a secret must not be written in the config",
            "refer to it instead: {env: NAME} for an environment variable or {file: path} for a file",
        )
        return
    branches: dict[int, list[ValidationError]] = {}
    for sub in err.context or ():
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    alternatives = schema.get(err.validator, [])
    fitting = [i for i in range(len(alternatives)) if _fits(branches.get(i, []), err)]
    if len(fitting) == 1:
        for sub in branches.get(fitting[0], []):
            yield from _explain(sub, validator)
        return
    keys = [k for alt in alternatives for k in _required_keys(alt, validator)]
    if isinstance(instance, dict) and keys:
        present = [k for k in keys if k in instance]
        if len(present) > 1:
            listed = ", ".join(f"`{k}`" for k in present)
            yield error(path, f"set only one of {listed}", "each entry here is one kind of thing")
            return
        guess = next((g for k in instance for g in [_did_you_mean(k, keys)] if g), None)
        listed = ", ".join(f"`{k}`" for k in keys)
        yield error(path, f"expected one of the keys {listed}", guess, at_key=bool(guess))
        return
    consts = [c for alt in alternatives for c in _allowed_values(alt, validator)]
    if consts and isinstance(instance, str):
        shape = (
            " or a mapping" if keys or any(_resolve(a, validator).get("type") == "object" for a in alternatives) else ""
        )
        yield _not_allowed(path, instance, consts, extra=shape)
        return
    if err.validator == "oneOf" and not err.context:
        yield error(path, "matches more than one allowed form")
        return
    yield error(path, f"{_describe(instance).capitalize()} is not allowed here")


def _fits(errors: list[ValidationError], parent: ValidationError) -> bool:
    """An alternative fits when its errors are about the inside, not the shape, of the value."""
    depth = len(parent.absolute_path)
    for sub in errors:
        if len(sub.absolute_path) == depth and sub.validator in (
            "type",
            "required",
            "const",
            "enum",
            "oneOf",
            "anyOf",
        ):
            return False
    return True


def _resolve(schema: dict, validator: Draft202012Validator) -> dict:
    defs = validator.schema.get("$defs", {})
    while isinstance(schema, dict) and str(schema.get("$ref", "")).startswith("#/$defs/"):
        schema = defs.get(schema["$ref"].removeprefix("#/$defs/"), {})
    return schema if isinstance(schema, dict) else {}


def _required_keys(schema: dict, validator: Draft202012Validator) -> list[str]:
    return list(_resolve(schema, validator).get("required", []))


def _allowed_values(schema: dict, validator: Draft202012Validator) -> list[Any]:
    resolved = _resolve(schema, validator)
    if "const" in resolved:
        return [resolved["const"]]
    return list(resolved.get("enum", []))


def _not_allowed(path: Path, value: Any, allowed: Iterable[Any], extra: str = "") -> Diagnostic:
    allowed = list(allowed)
    listed = ", ".join(f"`{a}`" for a in allowed)
    hint = _did_you_mean(str(value), [str(a) for a in allowed]) if isinstance(value, str) else None
    return error(path, f"{value!r} is not allowed: expected {listed}{extra}", hint)


def _did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"did you mean `{match[0]}`?" if match else None


def _list_hint(allowed: list[str]) -> str | None:
    return "allowed keys: " + ", ".join(allowed) if allowed else "no keys are allowed here"


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"the number {value!r}"
