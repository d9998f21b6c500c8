"""What the deployment tests share: the `sealrelay` command's own parser, and the config
an example deploys, loaded as the relay loads it."""

from __future__ import annotations

from pathlib import Path

import typer.main
from ruamel.yaml import YAML

from engine.cli.app import app
from engine.config.diagnostics import render_text
from engine.config.load import load_config
from engine.config.model import RelayConfig


def yaml_documents(text: str) -> list:
    """Every document of a YAML stream, as plain data (ruamel's safe loader)."""
    return [doc for doc in YAML(typ="safe", pure=True).load_all(text) if doc is not None]


def read_yaml(path: Path):
    [doc] = yaml_documents(path.read_text())
    return doc


def parse_command(argv: list[str]) -> dict:
    """The parameters `sealrelay argv...` would run its command with; raises click's
    UsageError (NoSuchOption, BadParameter...) for arguments the command does not take."""
    group = typer.main.get_command(app)
    name, *rest = argv
    command = group.commands[name]
    context = group.make_context("sealrelay", [name])
    return command.make_context(name, rest, parent=context).params


def load_example(path: Path) -> RelayConfig:
    """`path` loaded as `serve` loads it: valid, and without a single finding."""
    result = load_config(path)
    assert result.ok and render_text(result.diagnostics) == "", render_text(result.diagnostics)
    return result.config


def ports(config: RelayConfig) -> dict[str, int]:
    """The TCP ports a config binds: its SMTP listeners, the admin API and /metrics."""
    out = {listener.name: listener.port for listener in config.system.listeners}
    return out | {"admin": config.system.admin.port, "metrics": config.system.metrics.port}
