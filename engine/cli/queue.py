"""`sealrelay queue list | show | retry | delete | flush | purge | destinations`: the delayed-message queue, for operators.

These open the queue database directly (SQLite in WAL mode lets them run beside a serving
relay), so they work when the relay is down too; `list` reads a page at a time. Only
`destinations` asks the running relay (its admin API): the scheduler's state is in its memory.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from pathlib import Path

import typer

from engine.cli import views
from engine.relay.queue.types import STATES

queue_app = typer.Typer(help="The delayed-message queue.", no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="The relay's config (default: ./relay.yaml, else the embedded one)")
RecipientState = Enum("RecipientState", {state: state for state in STATES}, type=str)  # a typo is a usage error


class Format(str, Enum):
    text = "text"
    json = "json"
    yaml = "yaml"


def _dump(data, fmt: Format) -> str:
    """`data` (plain dicts and lists) as JSON or YAML, bytes as hex, anything else as text."""
    plain = json.loads(json.dumps(data, default=lambda v: v.hex() if isinstance(v, bytes) else str(v)))
    if fmt is Format.json:
        return json.dumps(plain, indent=2) + "\n"
    from io import StringIO

    from ruamel.yaml import YAML

    out = StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.dump(plain, out)
    return out.getvalue()


@contextmanager
def _open(config: Path | None):
    from engine.relay.queue import Queue, QueueLocked
    from engine.relay.runtime.relay import DEFAULT_CONFIG, ConfigError, config_location, data_dir_of

    try:
        data_dir = data_dir_of(config)
        if config_location(config)[0] == DEFAULT_CONFIG:  # no --config, no ./relay.yaml: say so
            typer.echo(
                f"no ./relay.yaml here: the embedded default config's queue in {data_dir} (--config PATH)", err=True
            )
        queue = Queue.open(data_dir / "queue", shared=True)
    except (ConfigError, QueueLocked) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(views.EXIT_ERROR) from None
    except OSError as exc:  # data_dir not a directory, not ours: one line, not a traceback
        typer.echo(f"error: cannot open the queue: {exc.filename or ''}: {exc.strerror or exc}", err=True)
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
    state: RecipientState = typer.Option(None, help="Only entries with a recipient in this state"),
    limit: int = typer.Option(100, min=1, help="Entries per page"),
    after: str = typer.Option(None, "--after", help="The page after this entry id (the last of a full page)"),
    fmt: Format = typer.Option(Format.text, "--format", help="text, json or yaml"),
) -> None:
    """List queued messages, oldest first, a page at a time (a page costs the same whatever the
    queue holds).

    Example: sealrelay queue list --config relay.yaml --state deferred --after 6553f1000a3c
    """
    with _open(config) as queue:
        entries = asyncio.run(queue.list(limit, state.value if state else None, after))
    if fmt is not Format.text:
        typer.echo(_dump([asdict(e) for e in entries], fmt), nl=False)
        return
    if not entries:
        typer.echo("no more entries" if after else "queue is empty")
    for e in entries:
        states = ", ".join(f"{n} {s}" for s, n in sorted(e.states.items()) if n)
        typer.echo(f"{e.id}  {_when(e.created_at)}  {e.size:>9} B  <{e.sender}>  {states}  next {_when(e.next_due)}")
        if e.last_error:
            typer.echo(f"    last error: {e.last_error}")
    if len(entries) == limit:  # there may be more (the cursor works after that entry has left, too)
        typer.echo(f"more: sealrelay queue list --after {entries[-1].id}", err=True)


@queue_app.command()
def show(
    queue_id: str,
    config: Path = CONFIG,
    fmt: Format = typer.Option(Format.text, "--format", help="text, json or yaml"),
    body: bool = typer.Option(False, "--body", help="Print the message as queued instead (Postfix: postcat -q)"),
) -> None:
    """Everything about one queued message: recipients, attempts, last error, TLS result.

    Example: sealrelay queue show 3f2a9c01b7e4 --config relay.yaml
    """
    if body:  # the bytes as queued, checked against their SHA-256: pipe them to a mail reader
        content = _on_entry(config, lambda queue: queue.body(queue_id))
        sys.stdout.buffer.write(content)
        sys.stdout.flush()
        return
    d = _on_entry(config, lambda queue: queue.show(queue_id))
    if fmt is not Format.text:
        typer.echo(_dump(asdict(d), fmt), nl=False)
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


@queue_app.command()
def destinations(
    config: Path = CONFIG,
    relay: str = typer.Option(None, "--relay", help="Admin API of the relay (default: http:// + system.admin)"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    fmt: str = typer.Option("text", "--format"),
) -> None:
    """The destinations the running relay's scheduler knows: concurrency, dead or alive, why.

    The state lives in the relay's memory, so this asks the relay (its admin API), unlike the
    other queue commands, which read the queue on disk.

    Example: sealrelay queue destinations --config relay.yaml
    """
    from engine.admin.client import AdminError, RelayClient, token_from
    from engine.config.load import load_config
    from engine.relay.runtime.relay import config_location

    path, base_dir = config_location(config)
    result = load_config(path, check_files=False)
    if result.config is None:
        typer.echo(f"{path}: invalid config: run `sealrelay validate {path}`", err=True)
        raise typer.Exit(views.EXIT_ERROR)
    admin = result.config.system.admin
    host = f"[{admin.address}]" if ":" in admin.address else admin.address
    url = relay or f"http://{host}:{admin.port}"
    try:
        token = token_from(token_file, (base_dir or result.base_dir) / result.config.system.data_dir)
        with RelayClient(url, token) as client:
            rows = client.status().destinations
    except AdminError as exc:
        typer.echo(f"{exc} (the destinations live in the running relay's memory)", err=True)
        raise typer.Exit(views.EXIT_ERROR) from None
    if fmt == "json":
        typer.echo(json.dumps(list(rows), indent=2))
        return
    if not rows:
        typer.echo("no destination known yet (the scheduler learns them as it delivers)")
        return
    typer.echo(f"{'destination':<32} {'state':<8} {'conc':>7} {'busy':>5} {'wait':>6} {'fails':>5}  dead until")
    for r in rows:
        until = _when(r.get("dead_until")) if r.get("state") != "alive" else "-"
        concurrency = f"{r.get('concurrency')}/{r.get('limit')}"
        typer.echo(
            f"{r.get('name', '?'):<32} {r.get('state', '?'):<8} {concurrency:>7} {r.get('busy', 0):>5} "
            f"{r.get('waiting', 0):>6} {r.get('failures_in_a_row', 0):>5}  {until}"
        )
        if r.get("state") != "alive" and r.get("last_failure"):
            typer.echo(f"    last failure: {r['last_failure']}")


# -- the whole queue at once (Postfix: postqueue -f, postsuper -d) ----------------------------

PAGE = 500


async def _every(queue, state: str | None) -> list:
    """Every entry, a page at a time, optionally only those with a recipient in `state`."""
    entries: list = []
    cursor = None
    while True:
        page = await queue.list(PAGE, state, cursor)
        entries += page
        if len(page) < PAGE:
            return entries
        cursor = (page[-1].created_at, page[-1].id)


@queue_app.command()
def flush(config: Path = CONFIG) -> None:
    """Make every deferred recipient due now (Postfix: postqueue -f); the relay tries them on
    its next pass, each destination at its own pace.

    Example: sealrelay queue flush --config relay.yaml
    """
    from engine.relay.queue import NotQueued

    async def run(queue) -> tuple[int, int]:
        due = 0
        entries = await _every(queue, "deferred")
        for entry in entries:
            try:
                due += await queue.retry(entry.id)
            except NotQueued:  # delivered or deleted meanwhile
                continue
        return len(entries), due

    with _open(config) as queue:
        messages, due = asyncio.run(run(queue))
    typer.echo(f"{due} recipient(s) of {messages} message(s) due now")


@queue_app.command()
def purge(
    config: Path = CONFIG,
    state: RecipientState = typer.Option(None, help="Only messages with a recipient in this state"),
    sender: str = typer.Option(None, help="Only messages from a sender matching this pattern (*@example.com)"),
    recipient: str = typer.Option(None, help="Only messages with a recipient matching this pattern"),
    everything: bool = typer.Option(False, "--all", help="Every message: needed when no filter is given"),
    yes: bool = typer.Option(False, "--yes", help="Delete them; without it, only list what would be deleted"),
) -> None:
    """Delete every message that matches all the filters, without notice to the senders
    (Postfix: postsuper -d). Without --yes it lists them and deletes nothing.

    Example: sealrelay queue purge --config relay.yaml --state deferred --recipient '*@partner.example' --yes
    """
    from engine.relay.queue import NotQueued

    if not (state or sender or recipient or everything):
        typer.echo("error: give a filter (--state, --sender, --recipient), or --all for every message", err=True)
        raise typer.Exit(views.EXIT_ERROR)

    def matches(address: str, pattern: str | None) -> bool:
        return pattern is None or fnmatch.fnmatchcase(address.lower(), pattern.lower())

    async def run(queue) -> list[str]:
        chosen = []
        for entry in await _every(queue, state.value if state else None):
            if not matches(entry.sender, sender):
                continue
            if recipient is not None:
                try:
                    detail = await queue.show(entry.id)
                except NotQueued:
                    continue
                if not any(matches(r.address, recipient) for r in detail.recipients):
                    continue
            chosen.append(entry.id)
            if yes:
                try:
                    await queue.delete(entry.id)
                except NotQueued:
                    chosen.pop()
        return chosen

    with _open(config) as queue:
        chosen = asyncio.run(run(queue))
    for entry_id in chosen:
        typer.echo(f"{entry_id}: {'deleted' if yes else 'would be deleted'}")
    typer.echo(f"{len(chosen)} message(s) {'deleted' if yes else 'match: run again with --yes to delete them'}")
