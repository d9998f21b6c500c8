"""What `plan --against OTHER` and `simulate --against OTHER` compare with: a file, a
directory, or `git:REF`. `load_other` is the one resolver both commands call.

`git:REF` means the same PATH at another git revision: the file (`git show REF:path`) or
the directory's YAML files (`git ls-tree` then `git show` each) are written into a
temporary directory and loaded with the one config loader, so the other side is validated
exactly like the desired side. Its diagnostics name `REF:path/file.yaml:line:col`, not
the temporary copy. Files the config refers to (certificates, templates, test messages)
are not checked on the other side: it is the base of the plan, not what will be applied.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from engine.config.diagnostics import Diagnostic, render_text
from engine.config.load import load_config
from engine.config.model import RelayConfig
from engine.config.source import YAML_SUFFIXES

GIT_PREFIX = "git:"


class SourceError(Exception):
    """The other config cannot be read or is invalid; `diagnostics` says where."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.diagnostics = diagnostics or []

    def render(self) -> str:
        details = render_text(self.diagnostics)
        return f"{details}\n{self}" if details else str(self)


GIT_MISSING = 127  # the shell's "command not found": git is not installed


def git(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in `cwd` (no pager, no prompts); the caller reads returncode and output.
    Without a git executable the return code is GIT_MISSING, as a shell would say."""
    command = ["git", "-c", "core.quotepath=off", *args]
    try:
        return subprocess.run(command, cwd=cwd, capture_output=True, env=_git_env(), check=False)
    except FileNotFoundError:
        return subprocess.CompletedProcess(command, GIT_MISSING, b"", b"git: command not found")


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "LC_ALL": "C"}


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    lines = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else f"exit status {proc.returncode}"


def repo_path(path: Path) -> tuple[Path, str]:
    """(top of the git work tree, `path` relative to it in git's / form)."""
    where = path if path.is_dir() else path.parent
    if not where.exists():
        raise SourceError(f"{path}: no such file or directory")
    proc = git(where, "rev-parse", "--show-toplevel")
    if proc.returncode == GIT_MISSING:
        raise SourceError("git:REF needs git, and no git command is installed")
    if proc.returncode != 0:
        raise SourceError(f"{path} is not in a git work tree: git:REF needs one")
    top = Path(proc.stdout.decode().strip()).resolve()
    try:
        rel = path.resolve().relative_to(top).as_posix()
    except ValueError:  # a symbolic link out of the work tree
        raise SourceError(f"{path} leads out of the git work tree {top}: git:REF cannot follow it") from None
    return top, "" if rel == "." else rel


def load_other(spec: str, path: str | Path, *, purpose: str = "plan") -> tuple[RelayConfig, str]:
    """The config `spec` names, validated, and a label for it. `path` is the desired
    config's path (for `git:REF`: the same path at REF). `purpose` names the command in
    the error about an invalid config ("cannot plan against it"). Raises SourceError."""
    if spec.startswith(GIT_PREFIX):
        return _from_git(spec[len(GIT_PREFIX) :], Path(path), purpose)
    if not Path(spec).exists():
        raise SourceError(f"{spec}: no such file or directory")
    return _checked(Path(spec), spec, {}, purpose)


def _checked(target: Path, label: str, names: dict[str, str], purpose: str) -> tuple[RelayConfig, str]:
    result = load_config(target, check_files=False)
    if not result.ok or result.config is None:
        diags = [_renamed(d, names) for d in result.diagnostics]
        raise SourceError(f"{label}: invalid config, cannot {purpose} against it", diags)
    return result.config, label


def _renamed(diag: Diagnostic, names: dict[str, str]) -> Diagnostic:
    """A diagnostic with the temporary copy's file names replaced by `REF:path`."""
    mark = diag.mark
    if mark is not None and mark.file in names:
        diag = replace(diag, mark=replace(mark, file=names[mark.file]))
    related = tuple(replace(m, file=names.get(m.file, m.file)) for m in diag.related)
    return replace(diag, related=related)


def _from_git(ref: str, path: Path, purpose: str) -> tuple[RelayConfig, str]:
    if not ref:
        raise SourceError("git: needs a revision, like git:main or git:HEAD~1")
    if ref.startswith("-"):  # git would read it as an option
        raise SourceError(f"git:{ref}: a revision cannot start with '-'")
    top, rel = repo_path(path)
    label = f"{rel or '.'} at git:{ref}"
    if git(top, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
        raise SourceError(f"git:{ref}: no such revision in {top}")
    spec = f"{ref}:{rel}"
    kind = git(top, "cat-file", "-t", spec)
    if kind.returncode != 0:
        raise SourceError(f"{rel or '.'} does not exist at git:{ref}")
    with tempfile.TemporaryDirectory(prefix="sealrelay-against-") as tmp:
        names: dict[str, str] = {}
        if kind.stdout.decode().strip() == "blob":
            name = Path(rel).name or "relay.yaml"
            target = Path(tmp) / name
            _write_blob(top, spec, target)
            names[str(target)] = f"{ref}:{rel}"
        else:
            target = Path(tmp) / "config"
            target.mkdir()
            for name in _yaml_files(top, ref, rel):
                file = target / name
                _write_blob(top, f"{ref}:{rel}/{name}" if rel else f"{ref}:{name}", file)
                names[str(file)] = f"{ref}:{rel}/{name}" if rel else f"{ref}:{name}"
        return _checked(target, label, names, purpose)


def _yaml_files(top: Path, ref: str, rel: str) -> list[str]:
    """Names of the YAML files directly in directory `rel` at `ref` (as a directory config reads)."""
    proc = git(top, "ls-tree", "-z", ref, f"{rel}/" if rel else ".")
    if proc.returncode != 0:
        raise SourceError(f"git:{ref}: cannot list {rel or '.'}: {_stderr(proc)}")
    names = []
    for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
        if not entry:
            continue
        meta, _, name = entry.partition("\t")
        if meta.split()[1] == "blob" and Path(name).suffix in YAML_SUFFIXES:
            names.append(Path(name).name)
    if not names:
        raise SourceError(f"{rel or '.'} at git:{ref} holds no *.yaml files")
    return sorted(names)


def _write_blob(top: Path, spec: str, target: Path) -> None:
    proc = git(top, "show", spec)
    if proc.returncode != 0:
        raise SourceError(f"git show {spec} failed: {_stderr(proc)}")
    target.write_bytes(proc.stdout)
