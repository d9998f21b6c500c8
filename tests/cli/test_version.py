"""`sealrelay --version` and shell completion, as a shell runs them."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def sealrelay(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_version_names_the_package_the_config_format_and_python() -> None:
    done = sealrelay("--version")
    assert done.returncode == 0, done.stderr
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert done.stdout.startswith(f"sealrelay {version} (config format 1, Python 3."), done.stdout


def test_bash_completes_commands_and_subcommands() -> None:
    # what the script `--show-completion bash` prints asks the program, with these variables
    top = sealrelay(env={"_SEALRELAY_COMPLETE": "complete_bash", "COMP_WORDS": "sealrelay qu", "COMP_CWORD": "1"})
    assert top.stdout.split() == ["queue", "quarantine"]
    sub = sealrelay(env={"_SEALRELAY_COMPLETE": "complete_bash", "COMP_WORDS": "sealrelay queue li", "COMP_CWORD": "2"})
    assert sub.stdout.split() == ["list"]


# typer detects the shell from the parent process; its own switch lets a test name the shell
NAMED_SHELL = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


def test_completion_scripts_and_install(tmp_path: Path) -> None:
    for shell, marker in (("bash", "_sealrelay_completion"), ("zsh", "compdef sealrelay"), ("fish", "sealrelay")):
        shown = sealrelay("--show-completion", shell, env=NAMED_SHELL)
        assert shown.returncode == 0 and marker in shown.stdout, (shell, shown.stdout[:200])
        assert "_SEALRELAY_COMPLETE" in shown.stdout
    installed = sealrelay("--install-completion", "bash", env={**NAMED_SHELL, "HOME": str(tmp_path)})
    assert installed.returncode == 0, installed.stderr
    assert "completion installed" in installed.stdout
    assert "sealrelay" in (tmp_path / ".bashrc").read_text()
