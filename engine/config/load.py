"""The one way to read a config: YAML -> version -> JSON Schema -> models -> semantic checks.

A valid config passes each stage in turn. An invalid one is still checked as far as each
stage can run meaningfully, so one `validate` reports every stage's findings, not the first
stage's only (four mistakes, one run):

- a file that cannot be parsed is left out, and the other files are merged and checked
  (findings that its absence could cause — a required key it may hold — are not reported);
- the version picks the schema: without a readable one nothing further can be checked;
- the schema reports all it finds; then what it refused is cut out (prune.py) and the models
  and semantic checks run on the rest, reporting only what cannot be an echo of a cut.

Within a stage every finding is collected. The result is a `LoadResult`: the typed config
(None when there are errors), all diagnostics with their file:line:col, and the source map,
which `explain` and `plan` use to point back at the YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from pydantic import ValidationError

from engine.config import prune, schema
from engine.config.diagnostics import Diagnostic, Path, Severity, error, has_errors, locate
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
    if loaded.data is None:
        result.diagnostics = locate(result.diagnostics, loaded.source)
        return result
    if has_errors(result.diagnostics):  # read, but not all of it, or not cleanly: check the rest
        later = _check_the_rest(
            loaded.data,
            result.diagnostics,
            loaded.left_out,
            loaded.base_dir,
            semantic,
            check_files,
            unread=loaded.unread_words,
        )
        result.diagnostics = locate([*result.diagnostics, *later], loaded.source)
        return result
    config, diags = validate_data(loaded.data)
    result.diagnostics.extend(diags)
    if config is None and semantic:  # the schema or the models refused: the rest is still checked
        result.diagnostics.extend(
            _check_the_rest(loaded.data, diags, (), loaded.base_dir, semantic, check_files, schema_checked=True)
        )
    if config is not None and semantic:
        from engine.config.semantic import run_checks

        result.diagnostics.extend(run_checks(config, base_dir=loaded.base_dir, check_files=check_files))
    result.diagnostics = locate(result.diagnostics, loaded.source)
    if not has_errors(result.diagnostics):
        result.config = config
    return result


ROUNDS = 8  # cuts before the rest is valid: each round climbs one level of the data at most


def _check_the_rest(
    data: dict,
    reported: list[Diagnostic],
    left_out: tuple[str, ...],
    base_dir: FsPath,
    semantic: bool,
    check_files: bool,
    *,
    schema_checked: bool = False,
    unread: frozenset[str] = frozenset(),
) -> list[Diagnostic]:
    """What the later stages find in `data` besides the errors `reported` by an earlier one:
    those values are cut out (prune.py), the rest is checked, and what could be an echo of a
    cut or of a file `left_out` (naming a word of it: `unread`) is not reported. Without a
    known version nothing more is."""
    version = data.get("version")
    if not _known(version):
        return [] if schema_checked else [d for d in validate_data(data)[1] if not _echo(d, reported, left_out)]
    found = [] if schema_checked else [d for d in schema.check(data, version) if not _echo(d, reported, left_out)]
    rest = prune.start(data)
    rest.names |= unread  # what a file that could not be parsed may define or name
    # a duplicate key (a finding with a related place) keeps its first value: nothing to cut
    rest.cut(d.path for d in [*reported, *found] if d.severity is Severity.ERROR and d.path and not d.related)
    model = MODELS_BY_VERSION[version]
    for _ in range(ROUNDS):
        refused = schema.check(rest.data, version)  # what the cuts left invalid: cut too, never reported
        if refused:
            if not rest.cut(d.path for d in refused):
                return found
            continue
        try:
            config = model.model_validate(rest.data)
        except ValidationError as exc:
            errors = [_from_pydantic(item, rest.data) for item in exc.errors()]
            found.extend(
                d for d in map(rest.restore, errors) if not rest.echoes(d) and not _echo(d, reported, left_out)
            )
            if not rest.cut(d.path for d in errors):
                return found
            continue
        if semantic:
            from engine.config.semantic import run_checks

            checked = map(rest.restore, run_checks(config, base_dir=base_dir, check_files=check_files))
            found.extend(d for d in checked if not rest.echoes(d))
        return found
    return found


def _known(version: Any) -> bool:
    """A format version this sealrelay reads (not a bool, not a list: YAML can write either)."""
    return isinstance(version, int) and not isinstance(version, bool) and version in MODELS_BY_VERSION


def _echo(diag: Diagnostic, earlier: list[Diagnostic], left_out: tuple[str, ...]) -> bool:
    """A finding that an earlier error explains: at or under its path (or the same finding),
    or a required key that a file left out may hold."""
    for other in earlier:
        n = len(other.path)
        if (other.path and diag.path[:n] == other.path) or (diag.path, diag.message) == (other.path, other.message):
            return True
    return bool(left_out) and diag.message.startswith("missing required key")


def validate_data(data: Any) -> tuple[RelayConfig | None, list[Diagnostic]]:
    """Version dispatch, JSON Schema, then the models. Pure: no files are read."""
    if not isinstance(data, dict):
        return None, [error((), "a config must be a mapping of sections")]
    version = data.get("version")
    if "version" not in data:
        return None, [error((), "missing `version`", f"add `version: {LATEST_VERSION}` at the top of the config")]
    if not _known(version):
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
