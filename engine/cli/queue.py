"""`sealrelay queue list | show | cat | retry | delete | hold | release | flush | purge |
destinations`: the delayed-message queue, for operators (Postfix: postqueue, postsuper, postcat).

These open the queue database directly (SQLite in WAL mode lets them run beside a serving
relay), so they work when the relay is down too; `list` reads a page at a time. Only
`destinations` asks the running relay (its admin API): the scheduler's state is in its memory.
Every command answers `--format json` (and yaml) on stdout; errors are one line on stderr.
"""

from __future__ import annotations

import asyncio
import base64
import fnmatch
import json
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from enum import Enum
from pathlib import Path

import typer

from engine.cli import exits, views
from engine.relay.queue.types import STATES

queue_app = typer.Typer(help="The delayed-message queue.", no_args_is_help=True)
CONFIG = typer.Option(None, "--config", "-c", help="The relay's config (default: ./relay.yaml, else the embedded one)")
RecipientState = Enum("RecipientState", {state: state for state in STATES}, type=str)  # a typo is a usage error


class Format(str, Enum):
    text = "text"
    json = "json"
    yaml = "yaml"


FORMAT = typer.Option(Format.text, "--format", help="text, json or yaml")


def _entry_data(entry) -> dict:
    """An entry (summary or detail) as plain data, with `held` spelled out for jq."""
    return {**asdict(entry), "held": entry.held_at is not None}


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
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.for_config(config) if config is not None else exits.Exit.DATAERR) from None
    except QueueLocked as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.Exit.TEMPFAIL) from None
    except OSError as exc:  # data_dir not a directory, not ours: one line, not a traceback
        typer.echo(f"error: cannot open the queue: {exc.filename or ''}: {exc.strerror or exc}", err=True)
        raise typer.Exit(exits.for_oserror(exc)) from None
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
    held: bool = typer.Option(None, "--held/--not-held", help="Only the held entries, or only those not held"),
    limit: int = typer.Option(100, min=1, help="Entries per page"),
    after: str = typer.Option(None, "--after", help="The page after this entry id (the last of a full page)"),
    fmt: Format = FORMAT,
) -> None:
    """List queued messages, oldest first, a page at a time (a page costs the same whatever the
    queue holds), each with its open recipients: state, attempts, next attempt and the reason
    of the last failure (Postfix: postqueue -p). Held messages say so.

    Example: sealrelay queue list --config relay.yaml --state deferred --after 6553f1000a3c
    """
    with _open(config) as queue:
        entries = asyncio.run(queue.list(limit, state.value if state else None, after, held=held))
    if fmt is not Format.text:
        typer.echo(_dump([_entry_data(e) for e in entries], fmt), nl=False)
        return
    if not entries:
        typer.echo("no more entries" if after else "queue is empty")
    for e in entries:
        states = ", ".join(f"{n} {s}" for s, n in sorted(e.states.items()) if n)
        hold = f"  HELD since {_when(e.held_at)}" if e.held_at is not None else ""
        line = f"{e.id}  {_when(e.created_at)}  {e.size:>9} B  <{e.sender}>  {states}  next {_when(e.next_due)}"
        typer.echo(line + hold)
        for r in e.recipients:
            typer.echo(f"    <{r.address}>  {r.state}  attempts {r.attempts}  next {_when(r.next_attempt_at)}")
            if r.last_error:
                typer.echo(f"        {r.last_error}")
        if e.last_error and not any(r.last_error for r in e.recipients):  # e.g. only a bounced one failed
            typer.echo(f"    last error: {e.last_error}")
    if len(entries) == limit:  # there may be more (the cursor works after that entry has left, too)
        typer.echo(f"more: sealrelay queue list --after {entries[-1].id}", err=True)


@queue_app.command()
def show(
    queue_id: str,
    config: Path = CONFIG,
    fmt: Format = FORMAT,
    body: bool = typer.Option(False, "--body", help="Print the message as queued instead (as `queue cat`)"),
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
        typer.echo(_dump(_entry_data(d), fmt), nl=False)
        return
    typer.echo(
        f"id:       {d.id}\nsender:   <{d.sender}>\nqueued:   {_when(d.created_at)}\nsize:     {d.size} B\nsha256:   {d.sha256}"
    )
    if d.held_at is not None:
        typer.echo(f"held:     since {_when(d.held_at)} (sealrelay queue release {d.id})")
    typer.echo(f"next due: {_when(d.next_due)}\nmeta:     {json.dumps(d.meta, sort_keys=True)}")
    for r in d.recipients:
        typer.echo(f"  <{r.address}>  {r.state}  attempts {r.attempts}  next {_when(r.next_attempt_at)}")
        if r.last_error:
            typer.echo(f"      error: {r.last_error}")
        if r.last_tls:
            typer.echo(f"      tls:   {r.last_tls}")


@queue_app.command()
def cat(
    queue_id: str,
    config: Path = CONFIG,
    headers_only: bool = typer.Option(False, "--headers-only", help="Only the header section (postcat -h)"),
    body_only: bool = typer.Option(False, "--body-only", help="Only what follows the header section (postcat -b)"),
    envelope: bool = typer.Option(False, "--envelope", help="The envelope first, then the message (postcat -e)"),
    fmt: Format = FORMAT,
) -> None:
    """The message as queued (Postfix: postcat -q): the exact stored bytes on stdout, checked
    against their SHA-256, ready to pipe to a mail reader or `diff`.

    `--headers-only` stops before the empty line that ends the header section; `--body-only`
    starts after it. `--format json` gives the envelope and the content in base64.

    Example: sealrelay queue cat 3f2a9c01b7e4 --config relay.yaml --headers-only
    """
    if headers_only and body_only:
        typer.echo("error: --headers-only and --body-only exclude each other", err=True)
        raise typer.Exit(views.EXIT_ERROR)

    async def read(queue):
        return await queue.show(queue_id), await queue.body(queue_id)

    detail, content = _on_entry(config, read)
    headers, body = split_message(content)
    part = headers if headers_only else body if body_only else content
    if fmt is not Format.text:
        data = {
            "id": detail.id,
            "sender": detail.sender,
            "recipients": [r.address for r in detail.recipients],
            "created_at": detail.created_at,
            "size": detail.size,
            "sha256": detail.sha256,
            "part": "headers" if headers_only else "body" if body_only else "message",
            "content_base64": base64.b64encode(part).decode(),
        }
        typer.echo(_dump(data, fmt), nl=False)
        return
    out = sys.stdout.buffer
    if envelope:
        lines = ["*** ENVELOPE ***", f"id: {detail.id}", f"sender: <{detail.sender}>"]
        lines += [f"recipient: <{r.address}> {r.state}" for r in detail.recipients]
        lines += [f"queued: {_when(detail.created_at)}", f"size: {detail.size}", f"sha256: {detail.sha256}"]
        lines.append("*** HEADERS ***" if headers_only else "*** BODY ***" if body_only else "*** MESSAGE ***")
        out.write(("\n".join(lines) + "\n").encode())
    out.write(part)
    out.flush()


def split_message(content: bytes) -> tuple[bytes, bytes]:
    """(header section, body) of a message: the header section ends before the first empty
    line (CRLF or LF), which belongs to neither; without one, all of it is headers."""
    start = 0
    while start < len(content):
        end = content.find(b"\n", start)
        stop = len(content) if end < 0 else end + 1
        if content[start:stop] in (b"\r\n", b"\n"):
            return content[:start], content[stop:]
        start = stop
    return content, b""


@queue_app.command()
def retry(queue_id: str, config: Path = CONFIG, fmt: Format = FORMAT) -> None:
    """Make a deferred message due now (the relay picks it up on its next pass).

    Example: sealrelay queue retry 3f2a9c01b7e4 --config relay.yaml
    """
    n = _on_entry(config, lambda queue: queue.retry(queue_id))
    _say(fmt, {"id": queue_id, "due": n}, f"{queue_id}: {n} recipient(s) due now")


@queue_app.command()
def delete(queue_id: str, config: Path = CONFIG, fmt: Format = FORMAT) -> None:
    """Remove a message from the queue without notifying its sender.

    Example: sealrelay queue delete 3f2a9c01b7e4 --config relay.yaml
    """
    _on_entry(config, lambda queue: queue.delete(queue_id))
    _say(fmt, {"id": queue_id, "deleted": True}, f"{queue_id}: deleted")


@queue_app.command()
def destinations(
    config: Path = CONFIG,
    relay: str = typer.Option(None, "--relay", help="Admin API of the relay (default: http:// + system.admin)"),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    fmt: Format = FORMAT,
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
    if fmt is not Format.text:
        typer.echo(_dump(list(rows), fmt), nl=False)
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


# -- many messages at once (Postfix: postqueue -f, postsuper -d / -h / -H) -------------------

PAGE = 500
STATE = typer.Option(None, "--state", help="Only messages with a recipient in this state")
SENDER = typer.Option(None, "--sender", help="Only messages from a sender matching this pattern (*@example.com)")
RECIPIENT = typer.Option(None, "--recipient", help="Only messages with a recipient matching this pattern")
EVERYTHING = typer.Option(False, "--all", help="Every message: needed when no id and no filter is given")


async def _every(queue, state: str | None, held: bool | None = None) -> list:
    """Every entry, a page at a time, optionally only those with a recipient in `state`, held or not."""
    entries: list = []
    cursor = None
    while True:
        page = await queue.list(PAGE, state, cursor, held=held)
        entries += page
        if len(page) < PAGE:
            return entries
        cursor = page[-1].id


def _matches(address: str, pattern: str | None) -> bool:
    return pattern is None or fnmatch.fnmatchcase(address.lower(), pattern.lower())


async def _chosen(queue, state, sender: str | None, recipient: str | None, held: bool | None = None) -> list[str]:
    """The ids of every entry that matches all the filters (patterns case-insensitive; a
    recipient pattern is matched against every recipient, final ones too)."""
    from engine.relay.queue import NotQueued

    chosen = []
    for entry in await _every(queue, state.value if state else None, held):
        if not _matches(entry.sender, sender):
            continue
        if recipient is not None:
            try:
                detail = await queue.show(entry.id)
            except NotQueued:  # delivered or deleted meanwhile
                continue
            if not any(_matches(r.address, recipient) for r in detail.recipients):
                continue
        chosen.append(entry.id)
    return chosen


def _need_filter(ids: list[str], state, sender, recipient, everything: bool) -> None:
    if ids and (state or sender or recipient or everything):
        typer.echo("error: give ids or filters (--state, --sender, --recipient, --all), not both", err=True)
        raise typer.Exit(views.EXIT_ERROR)
    if not (ids or state or sender or recipient or everything):
        typer.echo("error: give ids, a filter (--state, --sender, --recipient), or --all for every message", err=True)
        raise typer.Exit(views.EXIT_ERROR)


@queue_app.command()
def flush(config: Path = CONFIG, fmt: Format = FORMAT) -> None:
    """Make every deferred recipient due now (Postfix: postqueue -f); the relay tries them on
    its next pass, each destination at its own pace. Held messages stay held.

    Example: sealrelay queue flush --config relay.yaml
    """
    from engine.relay.queue import NotQueued

    async def run(queue) -> tuple[int, int]:
        due = 0
        entries = await _every(queue, "deferred", held=False)
        for entry in entries:
            try:
                due += await queue.retry(entry.id)
            except NotQueued:  # delivered or deleted meanwhile
                continue
        return len(entries), due

    with _open(config) as queue:
        messages, due = asyncio.run(run(queue))
    _say(fmt, {"messages": messages, "due": due}, f"{due} recipient(s) of {messages} message(s) due now")


@queue_app.command()
def purge(
    config: Path = CONFIG,
    state: RecipientState = STATE,
    sender: str = SENDER,
    recipient: str = RECIPIENT,
    everything: bool = EVERYTHING,
    yes: bool = typer.Option(False, "--yes", help="Delete them; without it, only list what would be deleted"),
    fmt: Format = FORMAT,
) -> None:
    """Delete every message that matches all the filters, without notice to the senders
    (Postfix: postsuper -d). Without --yes it lists them and deletes nothing.

    Example: sealrelay queue purge --config relay.yaml --state deferred --recipient '*@partner.example' --yes
    """
    from engine.relay.queue import NotQueued

    if not (state or sender or recipient or everything):
        typer.echo("error: give a filter (--state, --sender, --recipient), or --all for every message", err=True)
        raise typer.Exit(views.EXIT_ERROR)

    async def run(queue) -> list[str]:
        chosen = []
        for entry_id in await _chosen(queue, state, sender, recipient):
            if yes:
                try:
                    await queue.delete(entry_id)
                except NotQueued:
                    continue
            chosen.append(entry_id)
        return chosen

    with _open(config) as queue:
        chosen = asyncio.run(run(queue))
    if fmt is not Format.text:
        typer.echo(_dump({"deleted" if yes else "would_delete": chosen}, fmt), nl=False)
        return
    for entry_id in chosen:
        typer.echo(f"{entry_id}: {'deleted' if yes else 'would be deleted'}")
    typer.echo(f"{len(chosen)} message(s) {'deleted' if yes else 'match: run again with --yes to delete them'}")


def _hold_or_release(
    config: Path | None, ids: list[str], state, sender, recipient, everything: bool, fmt: Format, hold: bool
) -> None:
    """Hold (or release) the given entries, or every entry not held (held) that matches the
    filters. An id that is not queued is an error (exit 1) after the others are done."""
    from engine.relay.queue import NotQueued

    _need_filter(ids, state, sender, recipient, everything)

    async def one(queue, entry_id: str) -> bool | None:
        try:
            return await (queue.hold(entry_id) if hold else queue.unhold(entry_id))
        except NotQueued:
            return None

    async def run(queue) -> tuple[list[str], list[str], list[str]]:
        targets = list(dict.fromkeys(ids or await _chosen(queue, state, sender, recipient, held=not hold)))
        changed, unchanged, missing = [], [], []
        for start in range(0, len(targets), PAGE):  # a page at a time, committed together (group commit)
            page = targets[start : start + PAGE]
            for entry_id, done in zip(page, await asyncio.gather(*(one(queue, i) for i in page)), strict=True):
                (missing if done is None else changed if done else unchanged).append(entry_id)
        return changed, unchanged, missing

    with _open(config) as queue:
        changed, unchanged, missing = asyncio.run(run(queue))
    verb, already = ("held", "already held") if hold else ("released", "not held")
    if fmt is not Format.text:
        typer.echo(_dump({verb: changed, already.replace(" ", "_"): unchanged, "not_queued": missing}, fmt), nl=False)
    else:
        for entry_id in changed:
            typer.echo(f"{entry_id}: {verb}")
        for entry_id in unchanged:
            typer.echo(f"{entry_id}: {already}")
        typer.echo(f"{len(changed)} message(s) {verb}")
    for entry_id in missing:
        typer.echo(f"not in the queue: {entry_id}", err=True)
    if missing:
        raise typer.Exit(views.EXIT_ERROR)


@queue_app.command()
def hold(
    ids: list[str] = typer.Argument(None, metavar="[ID]...", help="Queue ids (or use filters)"),
    config: Path = CONFIG,
    state: RecipientState = STATE,
    sender: str = SENDER,
    recipient: str = RECIPIENT,
    everything: bool = EVERYTHING,
    fmt: Format = FORMAT,
) -> None:
    """Put messages on hold (Postfix: postsuper -h): the relay does not try them until they
    are released, across restarts. A delivery already under way finishes. Nothing expires
    while held: max_queue_lifetime is applied at a failed attempt, after release.

    Example: sealrelay queue hold --config relay.yaml --recipient '*@partner.example'
    """
    _hold_or_release(config, ids or [], state, sender, recipient, everything, fmt, hold=True)


@queue_app.command()
def release(
    ids: list[str] = typer.Argument(None, metavar="[ID]...", help="Queue ids (or use filters)"),
    config: Path = CONFIG,
    state: RecipientState = STATE,
    sender: str = SENDER,
    recipient: str = RECIPIENT,
    everything: bool = EVERYTHING,
    fmt: Format = FORMAT,
) -> None:
    """Release held messages (Postfix: postsuper -H): they are due again at their recipients'
    retry times (those already past at once; `queue retry` or `flush` for the others). One
    older than max_queue_lifetime bounces at its next failed attempt.

    Example: sealrelay queue release --config relay.yaml --all
    """
    _hold_or_release(config, ids or [], state, sender, recipient, everything, fmt, hold=False)


def _say(fmt: Format, data: dict, text: str) -> None:
    """A command's result: `text` for people, `data` as JSON or YAML."""
    typer.echo(text if fmt is Format.text else _dump(data, fmt), nl=fmt is Format.text)
