"""`sealrelay queue list | show | retry | delete`: the delayed-message queue, for operators.

These open the queue database directly (SQLite in WAL mode lets them run beside a serving
relay), so they work when the relay is down too.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import typer

from engine.cli import views

queue_app = typer.Typer(help="The delayed-message queue.", no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="The relay's config (default: ./relay.yaml, else the embedded one)")


@contextmanager
def _open(config: Path | None):
    from engine.relay.queue import Queue, QueueLocked
    from engine.relay.runtime.relay import ConfigError, data_dir_of

    try:
        queue = Queue.open(data_dir_of(config) / "queue", shared=True)
    except (ConfigError, QueueLocked) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(views.EXIT_ERROR) from None
    try:
        yield queue
    finally:
        queue.close()


def _on_entry(config: Path | None, operation):
    """Run `operation(queue)` (a coroutine) on the queue; a missing entry is a clear error."""
    from engine.relay.queue import NotQueued

    with _open(config) as queue:
        try:
            return asyncio.run(operation(queue))
        except NotQueued as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(views.EXIT_ERROR) from None


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


@queue_app.command("list")
def list_(
    config: Path = CONFIG,
    state: str = typer.Option(None, help="Only entries with a recipient in this state"),
    limit: int = 100,
    fmt: str = typer.Option("text", "--format"),
) -> None:
    """List queued messages, oldest first.

    Example: sealrelay queue list --config relay.yaml --state deferred
    """
    with _open(config) as queue:
        entries = asyncio.run(queue.list(limit, state))
    if fmt == "json":
        typer.echo(json.dumps([asdict(e) for e in entries], default=str, indent=2))
        return
    if not entries:
        typer.echo("queue is empty")
    for e in entries:
        states = ", ".join(f"{n} {s}" for s, n in sorted(e.states.items()) if n)
        typer.echo(f"{e.id}  {_when(e.created_at)}  {e.size:>9} B  <{e.sender}>  {states}  next {_when(e.next_due)}")
        if e.last_error:
            typer.echo(f"    last error: {e.last_error}")


@queue_app.command()
def show(queue_id: str, config: Path = CONFIG, fmt: str = typer.Option("text", "--format")) -> None:
    """Everything about one queued message: recipients, attempts, last error, TLS result.

    Example: sealrelay queue show 3f2a9c01b7e4 --config relay.yaml
    """
    d = _on_entry(config, lambda queue: queue.show(queue_id))
    if fmt == "json":
        typer.echo(json.dumps(asdict(d), default=lambda v: v.hex() if isinstance(v, bytes) else str(v), indent=2))
        return
    typer.echo(
        f"id:       {d.id}\nsender:   <{d.sender}>\nqueued:   {_when(d.created_at)}\nsize:     {d.size} B\nsha256:   {d.sha256}"
    )
    typer.echo(f"next due: {_when(d.next_due)}\nmeta:     {json.dumps(d.meta, sort_keys=True)}")
    for r in d.recipients:
        typer.echo(f"  <{r.address}>  {r.state}  attempts {r.attempts}  next {_when(r.next_attempt_at)}")
        if r.last_error:
            typer.echo(f"      error: {r.last_error}")
        if r.last_tls:
            typer.echo(f"      tls:   {r.last_tls}")


@queue_app.command()
def retry(queue_id: str, config: Path = CONFIG) -> None:
    """Make a deferred message due now (the relay picks it up on its next pass).

    Example: sealrelay queue retry 3f2a9c01b7e4 --config relay.yaml
    """
    n = _on_entry(config, lambda queue: queue.retry(queue_id))
    typer.echo(f"{queue_id}: {n} recipient(s) due now")


@queue_app.command()
def delete(queue_id: str, config: Path = CONFIG) -> None:
    """Remove a message from the queue without notifying its sender.

    Example: sealrelay queue delete 3f2a9c01b7e4 --config relay.yaml
    """
    _on_entry(config, lambda queue: queue.delete(queue_id))
    typer.echo(f"{queue_id}: deleted")
