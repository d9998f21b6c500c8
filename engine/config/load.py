"""The one way to read a config: YAML -> version -> JSON Schema -> models -> semantic checks.

Each gate runs only when the one before it passed, so an admin sees the root cause, not
its echoes; within a gate every finding is collected. The result is a `LoadResult`: the
typed config (None when there are errors), all diagnostics with their file:line:col,
and the source map, which `explain` and `plan` use to point back at the YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from engine.config import schema
from engine.config.diagnostics import Diagnostic, Path, error, has_errors, locate
from engine.config.model import LATEST_VERSION, MODELS_BY_VERSION, RelayConfig
from engine.config.source import DEFAULT_LIMITS, ReadLimits, SourceMap, load_path


@dataclass
class LoadResult:
    config: RelayConfig | None
    diagnostics: list[Diagnostic]
    source: SourceMap
    base_dir: FsPath
    data: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.config is not None and not has_errors(self.diagnostics)


def load_config(
    path: str | FsPath, *, semantic: bool = True, check_files: bool = True, limits: ReadLimits = DEFAULT_LIMITS
) -> LoadResult:
    """Read and validate the config at `path` (a file or a directory of YAML files).

    `check_files=False` skips checks that read files the config refers to (certificates,
    templates, test messages): for a config received over the admin API. `limits` bound
    what reading the files may cost (docs/security.md); crossing one is a located error.
    """
    loaded = load_path(path, limits=limits)
    result = LoadResult(None, list(loaded.diagnostics), loaded.source, loaded.base_dir, loaded.data)
    if loaded.data is None or has_errors(result.diagnostics):
        result.diagnostics = locate(result.diagnostics, loaded.source)
        return result
    config, diags = validate_data(loaded.data)
    result.diagnostics.extend(diags)
    if config is not None and semantic:
        from engine.config.semantic import run_checks

        result.diagnostics.extend(run_checks(config, base_dir=loaded.base_dir, check_files=check_files))
    result.diagnostics = locate(result.diagnostics, loaded.source)
    if not has_errors(result.diagnostics):
        result.config = config
    return result


def validate_data(data: Any) -> tuple[RelayConfig | None, list[Diagnostic]]:
    """Version dispatch, JSON Schema, then the models. Pure: no files are read."""
    if not isinstance(data, dict):
        return None, [error((), "a config must be a mapping of sections")]
    version = data.get("version")
    if "version" not in data:
        return None, [error((), "missing `version`", f"add `version: {LATEST_VERSION}` at the top of the config")]
    if isinstance(version, bool) or version not in MODELS_BY_VERSION:
        known = ", ".join(str(v) for v in MODELS_BY_VERSION)
        hint = "this config is newer than this sealrelay: upgrade sealrelay"
        if isinstance(version, int) and not isinstance(version, bool) and version < LATEST_VERSION:
            hint = "run `sealrelay migrate` to rewrite it"
        elif not isinstance(version, int) or isinstance(version, bool):
            hint = f"write `version: {LATEST_VERSION}`"
        return None, [
            error(
                ("version",),
                f"unsupported config version {version!r}: this sealrelay reads version {known}",
                hint,
            )
        ]
    diags = schema.check(data, version)
    if diags:
        return None, diags
    model = MODELS_BY_VERSION[version]
    try:
        return model.model_validate(data), []
    except ValidationError as exc:
        return None, [_from_pydantic(item, data) for item in exc.errors()]


def _from_pydantic(item: dict, data: Any) -> Diagnostic:
    path = _data_path(item.get("loc", ()), data)
    message = item.get("msg", "invalid value")
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    hint = None
    if " did you mean " in message:
        message, _, rest = message.partition(": did you mean ")
        hint = f"did you mean {rest.rstrip('?')}?"
    return error(path, message, hint)


def _data_path(loc: Sequence[Any], data: Any) -> Path:
    """Pydantic's location minus the union tags it inserts, so it names a place in the data."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
    return tuple(path)
