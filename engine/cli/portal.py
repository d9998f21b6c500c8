"""`sealrelay portal audit | revoke | sweep`: the secure portal's store, for operators.

They open the portal's store as the config names it (SQLite in data_dir, or the shared
PostgreSQL database), so they work beside a serving relay and when it is down.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

import typer

from engine.cli import exits
from engine.cli.exits import Exit

portal_app = typer.Typer(help="The secure portal: its audit trail, revocation, retention.", no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="The relay's config (default: ./relay.yaml, else the embedded one)")


@contextmanager
def _store(config: Path | None):
    from engine.config.load import load_config
    from engine.portal.crypto import PortalKeyError
    from engine.portal.db import DatabaseError
    from engine.portal.service import open_store
    from engine.relay.runtime.relay import config_location

    path, base_dir = config_location(config)
    result = load_config(path, check_files=False)
    if result.config is None:
        typer.echo(f"{path}: invalid config: run `sealrelay validate {path}`", err=True)
        raise typer.Exit(exits.for_config(path))
    portal = result.config.encryption.secure_portal
    if portal is None:
        typer.echo(f"{path}: no encryption.secure_portal: this relay has no portal", err=True)
        raise typer.Exit(Exit.FAILED)
    base = (base_dir or result.base_dir).resolve()
    try:
        store = open_store(portal, base, (base / result.config.system.data_dir).resolve())
    except (DatabaseError, PortalKeyError, OSError) as exc:
        typer.echo(f"cannot open the portal store: {exc}", err=True)
        raise typer.Exit(Exit.FAILED) from None
    try:
        yield store
    finally:
        store.close()


@portal_app.command("audit")
def audit(
    config: Path = CONFIG,
    since: str = typer.Option("1d", help="How far back: a duration (30m, 12h, 7d) or 'all'"),
    address: str = typer.Option(None, help="Only events of this address"),
    event: str = typer.Option(None, help="Only this event (open, code_sent, login, login_failed, key_released, ...)"),
    limit: int = typer.Option(1000, min=1, max=100_000),
    format: str = typer.Option("text", "--format", help="text | json"),
) -> None:
    """Who opened what, codes sent, logins and failures, key releases, deletions."""
    from engine.config.units import parse_duration

    try:
        start = 0.0 if since == "all" else time.time() - parse_duration(since)
    except ValueError:
        typer.echo(f"--since {since!r}: give a duration like 30m, 12h, 7d, or 'all'", err=True)
        raise typer.Exit(Exit.USAGE) from None
    with _store(config) as store:
        events = store.audit_events(since=start, address=address, event=event, limit=limit)
    if format == "json":
        typer.echo(json.dumps(events, indent=2))
        return
    if format != "text":
        typer.echo("--format: text or json", err=True)
        raise typer.Exit(Exit.USAGE)
    for e in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e["at"]))
        parts = [when, e["event"], e["address"] or "-", e["message_id"] or "-", e["ip"] or "-", e["detail"] or ""]
        typer.echo("  ".join(parts).rstrip())
    if not events:
        typer.echo("no portal events in that period", err=True)


@portal_app.command("revoke")
def revoke(
    ident: str = typer.Argument(..., metavar="ID", help="A held key's id (advanced method) or a portal message id"),
    config: Path = CONFIG,
) -> None:
    """Revoke a held message key, or delete a portal message: it no longer opens."""
    with _store(config) as store:
        count = store.revoke(ident)
        if count:
            store.audit("revoked", message_id=ident, detail="sealrelay portal revoke")
    if not count:
        typer.echo(f"{ident}: no such key or message (or already revoked)", err=True)
        raise typer.Exit(Exit.FAILED)
    typer.echo(f"revoked {ident}")


@portal_app.command("sweep")
def sweep(config: Path = CONFIG) -> None:
    """Delete what retention says is due now (the relay also does this every 10 minutes)."""
    with _store(config) as store:
        swept = store.sweep()
        if swept["messages"]:
            store.audit("retention", detail=f"{swept['messages']} messages deleted (sealrelay portal sweep)")
    typer.echo(", ".join(f"{v} {k}" for k, v in swept.items()))
