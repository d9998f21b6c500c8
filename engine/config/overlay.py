"""Node files: one relay's differences from a shared config, so a fleet runs from one repo.

    # nodes/relay-0.yaml
    extends: ../base              # the shared config: a file or a directory, relative to this file
    system:
      fqdn: relay-0.example.com
      data_dir: /var/lib/sealrelay
      listeners:
        - {name: mx, address: 10.0.0.5, port: 25}

`sealrelay serve nodes/relay-0.yaml` (and `validate`, `plan`, `apply`, `simulate`, `queue
--config`: every command that takes a config) reads the base, then lays the node file over
it: mappings merge key by key, anything else — a scalar, a list — is replaced whole by the
node's value (so a node's `listeners:` are all its listeners). `extends` itself is not part
of the config: the canonical config, its hash and the plan are those of the merged result.

The source map follows the winning value: a diagnostic, `explain` and a plan name the node
file's line for what the node set and the base's line for the rest. Relative paths in either
file (data_dir, certificates, templates, test messages) are taken from the base's directory,
where the shared files live. A base cannot itself extend another: one level keeps a fleet
readable, and there is no cycle to detect.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path as FsPath
from typing import Any

from engine.config.compose import Budget, Map, ReadLimits, Scalar, compose_file
from engine.config.diagnostics import Diagnostic, Path, Severity

KEY = "extends"


def extend(node, path: FsPath, limits: ReadLimits, load_path) -> Any:
    """The `Loaded` of the node file `node` (already read, with its `extends` key) laid over
    its base. `load_path` is the loader itself (passed in: the loader imports this module)."""
    from engine.config.source import Loaded

    data, source = node.data, node.source
    target = data.pop(KEY)
    where = source.values.get((KEY,))
    _drop(source, (KEY,))
    if not isinstance(target, str) or not target.strip():
        return Loaded(
            None, source, [_error(where, "`extends` names the shared config: a file or a directory")], node.base_dir
        )
    base_path = FsPath(os.path.normpath(path.parent / target))
    if not base_path.exists():
        return Loaded(None, source, [_error(where, f"the shared config {base_path} does not exist")], node.base_dir)
    base = load_path(base_path, limits=limits, nodes=False)
    if base.data is not None and KEY in base.data:
        problem = _error(where, f"the shared config {base_path} extends another one: a base cannot extend a base")
        return Loaded(None, source, [problem], node.base_dir)
    if base.data is None or any(d.severity is Severity.ERROR for d in base.diagnostics):
        problem = _error(where, f"the shared config {base_path} has errors (each shown at its own file and line)")
        return Loaded(None, source, [*base.diagnostics, problem], node.base_dir)
    merged = base.data
    _overlay(merged, data, (), base.source, source)
    base.source.files.extend(source.files)
    return Loaded(merged, base.source, [*base.diagnostics, *node.diagnostics], base.base_dir)


def _overlay(base: dict, node: dict, path: Path, base_source, node_source) -> None:
    """Lay `node` over `base` in place, moving the source map's entries with each winner."""
    for key, value in node.items():
        child = (*path, key)
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _overlay(base[key], value, child, base_source, node_source)
            continue
        base[key] = value
        _drop(base_source, child)
        for table, own in ((base_source.values, node_source.values), (base_source.keys, node_source.keys)):
            table.update((p, mark) for p, mark in own.items() if p[: len(child)] == child)


def _drop(source, path: Path) -> None:
    n = len(path)
    for table in (source.values, source.keys):
        for p in [p for p in table if p[:n] == path]:
            del table[p]


def _error(mark, message: str) -> Diagnostic:
    hint = "write `extends: ../base` (a path relative to this file)"
    return Diagnostic(Severity.ERROR, (KEY,), message, hint, mark=mark)


def extends_of(file: FsPath, limits: ReadLimits | None = None) -> str | None:
    """The `extends` of a config file, or None (not a node file, or unreadable: the loader says why)."""
    node, problem = compose_file(file, Budget(limits) if limits else None)
    if problem or not isinstance(node, Map):
        return None
    for key, value in node.value:
        if isinstance(key, Scalar) and key.value == KEY and isinstance(value, Scalar):
            return value.value
    return None


def files_of(path: FsPath, extends: Callable[[FsPath], str | None] = extends_of) -> list[FsPath]:
    """Every file the config at `path` is read from: a directory's YAML files, a file, and for
    a node file its base's files too (what `serve --watch` follows). `extends`: how a file's
    `extends` is read (the watcher's remembers it while the file is unchanged)."""
    from engine.config.source import config_files

    path = FsPath(path)
    files = config_files(path) if path.is_dir() else [path]
    if path.is_file():
        target = extends(path)
        if target:
            base = FsPath(os.path.normpath(path.parent / target))
            files += config_files(base) if base.exists() else []
    return files


def real(path: FsPath) -> FsPath:
    """Where a file really is, symbolic links followed (a ConfigMap's `..data/relay.yaml`)."""
    return FsPath(os.path.realpath(path))
