"""What `plan --against OTHER` and `simulate --against OTHER` compare with: a file, a
directory, or `git:REF`. `load_other` is the one resolver both commands call.

`git:REF` means the same PATH at another git revision: the file (`git show REF:path`) or
the directory's YAML files (`git ls-tree` then `git show` each) are written into a
temporary directory, at their places in the repository, and loaded with the one config
loader, so the other side is validated exactly like the desired side. Symbolic links are
followed within the revision as on disk (a directory member must stay in its directory), and
a node file's `extends:` base is read at the same revision. Its diagnostics name `REF:path/file.yaml:line:col`, not
the temporary copy. Files the config refers to (certificates, templates, test messages)
are not checked on the other side: it is the base of the plan, not what will be applied.
"""

from __future__ import annotations

import os
import posixpath
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

from engine.config.diagnostics import Diagnostic, LocatedError
from engine.config.load import load_config
from engine.config.model import RelayConfig
from engine.config.overlay import extends_of
from engine.config.source import YAML_SUFFIXES

GIT_PREFIX = "git:"


class SourceError(LocatedError):
    """The other config cannot be read or is invalid; `diagnostics` says where."""


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
    tree = _Tree(top, ref)
    with tempfile.TemporaryDirectory(prefix="sealrelay-against-") as tmp:
        root = Path(tmp) / "tree"  # the config's files at their places in the repository
        target = tree.copy(rel, root)
        if target.is_file():
            base = extends_of(target)  # a node file: its shared config comes from the same revision
            if base:
                base_rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), base))
                if base_rel == ".." or base_rel.startswith("../"):
                    raise SourceError(f"{rel} at git:{ref} extends {base}, outside the repository")
                if tree.kind(base_rel) is not None:  # a missing base: the loader says so, located
                    tree.copy(base_rel, root)
        return _checked(target, label, tree.names, purpose)


class _Tree:
    """The files of one revision, copied out as a directory config reads them: the YAML files
    directly in a directory, symbolic links followed (a link that leaves its config directory
    is refused, as on disk), each named `REF:path` in diagnostics."""

    MAX_LINKS = 8

    def __init__(self, top: Path, ref: str) -> None:
        self.top, self.ref = top, ref
        self.names: dict[str, str] = {}

    def kind(self, rel: str) -> str | None:
        """`blob`, `tree`, or None when `rel` does not exist at the revision."""
        proc = git(self.top, "cat-file", "-t", f"{self.ref}:{rel}")
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def copy(self, rel: str, root: Path) -> Path:
        """Write the config at `rel` (a file or a directory's YAML files) under `root`."""
        kind = self.kind(rel)
        if kind is None:
            raise SourceError(f"{rel or '.'} does not exist at git:{self.ref}")
        target = root / rel if rel else root
        if kind == "blob":
            self._write(rel, target, inside=None)
            return target
        target.mkdir(parents=True, exist_ok=True)
        for name in self._yaml_files(rel):
            member = f"{rel}/{name}" if rel else name
            self._write(member, target / name, inside=rel)
        return target

    def _write(self, rel: str, target: Path, inside: str | None) -> None:
        """The blob at `rel`, links followed; `inside`: the directory a link must not leave."""
        shown, seen = rel, 0
        while True:
            mode, content = self._entry(rel)
            if mode != "120000":
                break
            seen += 1
            rel = posixpath.normpath(posixpath.join(posixpath.dirname(rel), content.decode("utf-8", "replace")))
            outside = rel == ".." or rel.startswith("../")
            if inside is not None and not (rel.startswith(f"{inside}/") if inside else not outside):
                raise SourceError(
                    f"{self.ref}:{shown}: a symbolic link to a file outside the config directory: not read "
                    "(copy the file into the directory, or remove the link)"
                )
            if outside or seen > self.MAX_LINKS:
                raise SourceError(f"{self.ref}:{shown}: a symbolic link that leaves the repository or loops")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        self.names[str(target)] = f"{self.ref}:{shown}"

    def _entry(self, rel: str) -> tuple[str, bytes]:
        """(mode, content) of the blob at `rel`: mode 120000 is a symbolic link, its content the target."""
        listed = git(self.top, "ls-tree", "-z", self.ref, "--", rel)
        entry = listed.stdout.decode("utf-8", "replace").split("\0")[0]
        mode = entry.split(" ", 1)[0] if listed.returncode == 0 and entry else ""
        proc = git(self.top, "show", f"{self.ref}:{rel}")
        if proc.returncode != 0:
            raise SourceError(f"git show {self.ref}:{rel} failed: {_stderr(proc)}")
        return mode, proc.stdout

    def _yaml_files(self, rel: str) -> list[str]:
        """Names of the YAML files directly in directory `rel` (as a directory config reads)."""
        proc = git(self.top, "ls-tree", "-z", self.ref, f"{rel}/" if rel else ".")
        if proc.returncode != 0:
            raise SourceError(f"git:{self.ref}: cannot list {rel or '.'}: {_stderr(proc)}")
        names = []
        for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
            if not entry:
                continue
            meta, _, name = entry.partition("\t")
            if meta.split()[1] == "blob" and Path(name).suffix in YAML_SUFFIXES:
                names.append(Path(name).name)
        if not names:
            raise SourceError(f"{rel or '.'} at git:{self.ref} holds no *.yaml files")
        return sorted(names)
