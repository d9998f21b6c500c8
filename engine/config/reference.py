"""The config reference (docs/config-reference.md), rendered from the JSON Schema.

The models are the single source of truth, so the reference is generated, never written
by hand; a test proves the committed file equals what this renders.
"""

from __future__ import annotations

import json
from typing import Any

from engine.config.schema import generate

HEADER = """# Config reference

Generated from the models by `sealrelay schema reference > docs/config-reference.md`;
do not edit by hand. Every key, its type, its default and what it means. Durations are
written `30s`, `15m`, `4h`, `5d`, `1w`; sizes `512KB`, `50MB` (decimal) or `5MiB` (binary).
Secrets are never written in the config: `{env: NAME}` or `{file: path}`.
"""


def render() -> str:
    schema = generate()
    defs = schema.get("$defs", {})
    out = [HEADER]
    seen: set[str] = set()
    queue: list[tuple[str, dict]] = [("(top level)", schema)]
    while queue:
        title, node = queue.pop(0)
        props = node.get("properties", {})
        if not props:
            continue
        out.append(f"\n## {title}\n")
        if node.get("description") and title != "(top level)":
            out.append(node["description"].strip() + "\n")
        out.append("| key | type | default | description |")
        out.append("|---|---|---|---|")
        required = set(node.get("required", []))
        for name, prop in props.items():
            kind = _type(prop, defs)
            default = "required" if name in required else _short(prop.get("default", "—"))
            desc = prop.get("description", "").replace("|", "\\|").replace("\n", " ").rstrip(".") + "."
            example = prop.get("examples", [None])[0]
            if example is not None:
                desc += f" Example: `{_short(example)}`."
            out.append(f"| `{name}` | {kind} | {default} | {desc} |")
            for ref in _refs(prop):
                if ref not in seen:
                    seen.add(ref)
                    queue.append((f"{ref}", defs[ref]))
    return "\n".join(out) + "\n"


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        ref = node.get("$ref", "")
        if ref.startswith("#/$defs/"):
            found.append(ref.removeprefix("#/$defs/"))
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def _type(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].removeprefix('#/$defs/')}](#{prop['$ref'].removeprefix('#/$defs/').lower()})"
    if prop.get("x-secret"):
        return "secret"
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    for key in ("anyOf", "oneOf"):
        if key in prop:
            return " or ".join(_type(p, defs) for p in prop[key])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type(prop.get('items', {}), defs)}"
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        return f"map of name → {_type(prop['additionalProperties'], defs)}"
    if kind == "string" and "pattern" in prop and prop["pattern"].startswith("^[0-9]+(s|m"):
        return "duration"
    if kind == "string" and "pattern" in prop and "[kKmMgG]" in prop["pattern"]:
        return "size"
    return str(kind)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = text.replace("|", "\\|")
    return text if len(text) <= 60 else text[:57] + "..."
