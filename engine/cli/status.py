"""`sealrelay status`: what each relay of a fleet runs, one line per relay.

Arguments -> the relays (each `--relay`, a URL or a name in the token map; else the
config's admin API) -> `GET /v1/status` of each, with that relay's token -> a line (or a
JSON document) per relay. Every relay is asked even when one fails; the exit code is the
first failure's (engine/cli/exits.py), so a script learns that the fleet is not all well.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from engine.cli import exits, tokens
from engine.cli.exits import Exit


class StatusFormat(str, Enum):
    text = "text"
    json = "json"


def status_command(
    path: Path = typer.Argument(
        None, help="The config (for the default relay and its token; default: relay.yaml, else the embedded default)"
    ),
    relay: list[str] = typer.Option(
        None, "--relay", help="Admin API URL of a relay, or its name in the token map; repeat for several"
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    tokens_file: Path | None = typer.Option(
        None, "--tokens", help="Fleet token map: each relay's token by reference (or SEALRELAY_TOKENS)"
    ),
    fmt: StatusFormat = typer.Option(StatusFormat.text, "--format", help="text or json"),
) -> None:
    """Show each relay's running version, uptime, queue and held change.

    Example: sealrelay status --tokens tokens.yaml --relay relay-0 --relay relay-1
    """
    from engine.admin.client import AdminError, RelayClient, Unauthorized

    default_url, data_dir = _defaults(path, need=not relay)
    targets = tokens.targets_or_exit(relay, default_url, tokens_file)
    code, rows = Exit.OK, []
    for target in targets:
        try:
            with RelayClient(target.url, target.token(token_file, data_dir)) as client:
                rows.append((target, client.status().to_json(), None))
        except Unauthorized as exc:
            code = code or Exit.NOPERM
            rows.append((target, None, f"the admin token was refused ({exc}; {target.token_source})"))
        except AdminError as exc:
            code = code or exits.for_admin_error(exc)
            rows.append((target, None, str(exc)))
    if fmt is StatusFormat.json:
        doc = [{"relay": t.label, "name": t.name, "url": t.url, "status": s, "error": e} for t, s, e in rows]
        typer.echo(json.dumps(doc, indent=2))
    else:
        for target, state, problem in rows:
            typer.echo(f"{target.label}: " + (f"error: {problem}" if problem else _line(state)))
    raise typer.Exit(code)


def _line(state: dict) -> str:
    queue = ", ".join(f"{k} {v}" for k, v in sorted(state.get("queue", {}).items())) or "empty"
    line = f"version {state['version']}, up {state['uptime_s']:.0f}s, queue: {queue}"
    if state.get("held"):
        line += f"; a change is held: {state['held'].get('reason')}"
    return line


def _defaults(path: Path | None, *, need: bool) -> tuple[str | None, Path | None]:
    """The config's admin URL and data directory (for the default token), when it can be read."""
    from engine.config.diagnostics import render_text
    from engine.config.load import load_config
    from engine.relay.runtime.relay import config_location

    if path is None and not need:
        return None, None
    where, base_dir = config_location(path)
    result = load_config(where, check_files=False)
    if result.config is None:
        if not need:
            return None, None
        typer.echo(render_text(result.diagnostics) + f"\n{where}: invalid config, no relay to ask", err=True)
        raise typer.Exit(exits.for_config(where))
    admin = result.config.system.admin
    host = f"[{admin.address}]" if ":" in admin.address else admin.address
    return f"http://{host}:{admin.port}", ((base_dir or result.base_dir) / result.config.system.data_dir).resolve()
