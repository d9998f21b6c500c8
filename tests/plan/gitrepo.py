"""A throwaway git repository for tests: commit files, read the head; and the examples in
every `--against` form (a file, a directory, `git:REF` of each)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": os.environ.get("HOME", "/tmp"),
}


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        done = subprocess.run(["git", *args], cwd=self.root, env=ENV, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


# -- `--against` in every form, for `plan` and `simulate` --------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FORMS = ("file", "directory", "git-file", "git-directory")
# where the card policy's action is written, in the file config and in the directory config
CARD_ACTION = {
    "full.yaml": ("      email: encrypt                   # encrypt | block | quarantine | permit", "      email: {}"),
    "split/10-dlp-cards.yaml": ("    - {name: encrypt, email: encrypt}", "    - {{name: encrypt, email: {}}}"),
}


def set_card_action(root: Path, action: str) -> None:
    """Edit the examples under `root`: card numbers get `action` instead of `encrypt`."""
    for relative, (old, new) in CARD_ACTION.items():
        path = root / relative
        text = path.read_text(encoding="utf-8")
        assert text.count(old) == 1, f"{relative}: the examples changed, update CARD_ACTION"
        path.write_text(text.replace(old, new.format(action)), encoding="utf-8")


def block_cards(root: Path) -> None:
    set_card_action(root, "block")


def against_forms(tmp: Path) -> tuple[Repo, Path]:
    """The examples committed on `main` and a branch `block-cards` checked out with
    `block_cards` committed (what CI sees on a pull request), and an unchanged copy of the
    examples outside the repository. Returns (the repository, the copy)."""
    repo = Repo(tmp / "repo")
    shutil.copytree(EXAMPLES, repo.root, dirs_exist_ok=True)
    repo.commit("examples")
    repo.git("checkout", "-q", "-b", "block-cards")
    block_cards(repo.root)
    repo.commit("block card numbers")
    base = tmp / "base"
    shutil.copytree(EXAMPLES, base)
    return repo, base


def form(name: str, repo: Repo, base: Path) -> tuple[Path, str, str]:
    """(the desired config, the `--against` value, the label the commands give the base)."""
    config = "split" if name.endswith("directory") else "full.yaml"
    if name.startswith("git-"):
        return repo.root / config, "git:main", f"{config} at git:main"
    return repo.root / config, str(base / config), str(base / config)


def break_base(name: str, repo: Repo, base: Path) -> tuple[str, str]:
    """Make the base of form `name` invalid: the card action is `scramble`. Returns (the
    `--against` value, where its error is: `FILE:line:col`, FILE as `REF:path` for git)."""
    relative = "split/10-dlp-cards.yaml" if name.endswith("directory") else "full.yaml"
    if name.startswith("git-"):
        repo.git("checkout", "-q", "-b", "broken", "main")
        set_card_action(repo.root, "scramble")
        repo.commit("an invalid action")
        text = (repo.root / relative).read_text(encoding="utf-8")
        repo.git("checkout", "-q", "block-cards")
        against, file = "git:broken", f"broken:{relative}"
    else:
        set_card_action(base, "scramble")
        text = (base / relative).read_text(encoding="utf-8")
        against, file = str(base / relative.split("/")[0]), str(base / relative)
    (line,) = [n for n, row in enumerate(text.splitlines(), 1) if "scramble" in row]
    column = text.splitlines()[line - 1].index("scramble") + 1
    return against, f"{file}:{line}:{column}"


SCRAMBLE_ERROR = (
    "dlp.action_plans[0].email: 'scramble' is not allowed: expected `encrypt`, `block`, `quarantine`, `permit`"
)
