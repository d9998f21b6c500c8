"""`sealrelay simulate`, `explain` and `quarantine`: DLP decisions seen before and after."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import NoReturn

import typer

from engine.cli import exits
from engine.cli.exits import Exit

quarantine_app = typer.Typer(help="Messages held by a DLP `quarantine` action.", no_args_is_help=True)


def _load(path: Path):
    from engine.config.diagnostics import render_text
    from engine.config.load import load_config

    result = load_config(path)
    if not result.ok:
        sys.stderr.write(render_text(result.diagnostics) + "\n")
        typer.echo(f"{path}: invalid config", err=True)
        raise typer.Exit(exits.for_config(path))
    return result


def simulate(
    path: Path = typer.Argument(..., help="Config file or directory"),
    messages: Path = typer.Option(..., "--messages", help="Directory of sample .eml messages"),
    against: str = typer.Option(
        None,
        "--against",
        help="Another config: a file, a directory, or git:REF (the same PATH at REF); show what changes",
    ),
    peer: str = typer.Option(
        None, "--peer", help="IP address the samples come from (default: internal sender = internal server)"
    ),
    fmt: str = typer.Option("text", "--format", help="text or json"),
    detailed_exitcode: bool = typer.Option(
        False,
        "--detailed-exitcode",
        help="With --against: exit 0 when no decision changes, 2 when some do, 1 on any error",
    ),
) -> None:
    """Run sample messages through the policy pipeline without sending anything.

    Example: sealrelay simulate relay.yaml --messages tests/messages --against git:main --detailed-exitcode
    """
    try:
        _simulate(path, messages, against, peer, fmt, detailed_exitcode)
    except typer.Exit as exc:
        raise typer.Exit(exits.detailed(exc.exit_code, detailed_exitcode)) from None


def _simulate(path: Path, messages: Path, against, peer, fmt: str, detailed_exitcode: bool) -> None:
    from engine.plan.inputs import SourceError, load_other
    from engine.relay.dlp.simulate import changed, policy_view, sample_files, simulate_dir

    if detailed_exitcode and against is None:
        _fail("--detailed-exitcode compares two configs: give the other one with --against", Exit.USAGE)
    result = _load(path)
    if not messages.is_dir():
        _fail(f"{messages}: no such directory (--messages names a directory of .eml files)", Exit.NOINPUT)
    if not sample_files(messages):
        _fail(f"{messages} holds no .eml messages: nothing to simulate", Exit.NOINPUT)
    after = simulate_dir(policy_view(result.config, result.base_dir), messages, peer=peer, source=result.source)
    if against is None:
        _show(after, fmt)
        raise typer.Exit(Exit.OK)
    try:
        base, label = load_other(against, path, purpose="simulate")
    except SourceError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(Exit.DATAERR if exc.diagnostics else Exit.NOINPUT) from None
    before = simulate_dir(policy_view(base, result.base_dir), messages, peer=peer)
    diffs = changed(before, after)
    if fmt == "json":
        typer.echo(
            json.dumps(
                [{"message": a.message, "before": b.to_json(), "after": a.to_json()} for b, a in diffs], indent=2
            )
        )
    else:
        typer.echo(
            f"{len(diffs)} of {len(after)} sample message(s) change decision ({label} -> {path})"
            + (":" if diffs else ".")
        )
        for b, a in diffs:
            typer.echo(f"  {a.message}:")
            for name in ("direction", "action", "method", "policies", "route", "tls"):
                if getattr(b, name) != getattr(a, name):
                    typer.echo(f"    {name}: {_fmt(getattr(b, name))} -> {_fmt(getattr(a, name))}")
    raise typer.Exit(Exit.CHANGES if detailed_exitcode and diffs else Exit.OK)


def _fail(message: str, code: Exit) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _fmt(value) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def _show(outcomes, fmt: str) -> None:
    if fmt == "json":
        typer.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("message", "direction", "action", "method", "policies", "route", "TLS", "not scanned")
    for o in outcomes:
        action = o.action if o.action == o.would else f"{o.action} (would {o.would})"
        unscanned = f"{len(o.unscanned)} part(s): {o.unscanned[0]}" if o.unscanned else "-"
        if o.action == "error":
            unscanned = o.problems[0] if o.problems else "not judged"
        table.add_row(o.message, o.direction, action, o.method, ", ".join(o.policies) or "-", o.route, o.tls, unscanned)
    Console(width=240).print(table)


def explain(
    path: Path = typer.Argument(..., help="Config file or directory"),
    message: Path = typer.Argument(..., help="One .eml message"),
    peer: str = typer.Option(None, "--peer", help="IP address the message comes from"),
    fmt: str = typer.Option("text", "--format", help="text or json"),
) -> None:
    """The decision trace for one message, step by step, with the file:line of each rule.

    Example: sealrelay explain relay.yaml tests/messages/card.eml
    """
    from engine.relay.dlp.simulate import policy_view, simulate_one

    result = _load(path)
    try:
        content = message.read_bytes()
    except OSError as exc:
        _fail(f"{message}: {exc.strerror}", exits.for_oserror(exc))
    o = simulate_one(
        policy_view(result.config, result.base_dir), content, message.name, peer=peer, source=result.source
    )
    if fmt == "json":
        typer.echo(json.dumps(o.to_json(), indent=2))
        return
    typer.echo(f"1. envelope: <{o.sender}> -> {', '.join(o.recipients) or '(no recipients)'}")
    typer.echo(f"2. direction: {o.direction}")
    if not o.rules:
        typer.echo("3. DLP: no rule matched")
    for n, r in enumerate(o.rules):
        prefix = "3. DLP:" if n == 0 else "        "
        if r["action_plan"] == "dlp.unscannable":
            typer.echo(
                f"{prefix} content not fully scanned ({len(o.unscanned)} problem(s)) -> "
                f"dlp.unscannable: {r['action']}  [{r['where']}]"
            )
            continue
        typer.echo(
            f"{prefix} {r['policy']}/{r['rule']} ({r['severity']}) -> plan {r['action_plan']}: {r['action']}  [{r['where']}]"
        )
        if r["evidence"]:
            typer.echo(f"         evidence: {', '.join(r['evidence'])}")
    note = "" if o.action == o.would else f" (enforce would: {o.would})"
    typer.echo(f"4. action: {o.action}{note}")
    typer.echo(f"5. method: {o.method}")
    typer.echo(f"6. route: {o.route}, TLS: {o.tls}")
    for problem in o.problems:
        typer.echo(f"   {'not scanned' if problem in o.unscanned else 'note'}: {problem}")


@quarantine_app.command("list")
def quarantine_list(
    config: Path = typer.Option(None, "--config", "-c"), fmt: str = typer.Option("text", "--format")
) -> None:
    """List held messages.

    Example: sealrelay quarantine list --config relay.yaml
    """
    from dataclasses import asdict

    held = _quarantine(config).list()
    if fmt == "json":
        typer.echo(json.dumps([asdict(h) for h in held], indent=2))
        return
    if not held:
        typer.echo("quarantine is empty")
    for h in held:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h.held_at))
        typer.echo(f"{h.id}  {when}  <{h.sender}> -> {', '.join(h.recipients)}  {h.subject!r}  [{h.reason}]")


@quarantine_app.command("release")
def quarantine_release(held_id: str, config: Path = typer.Option(None, "--config", "-c")) -> None:
    """Deliver a held message after all (it goes to the queue; the relay sends it).

    Example: sealrelay quarantine release 3f2a9c01b7e4 --config relay.yaml
    """
    import asyncio

    from engine.cli.queue import _open
    from engine.relay.queue.quarantine import NotHeld

    quarantine = _quarantine(config)
    try:
        held, content = quarantine.get(held_id)
    except NotHeld as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(Exit.FAILED) from None
    with _open(config) as queue:
        meta = {"kind": "released", "released_from": held_id, "policies": list(held.policies), "config_version": 0}
        queue_id = asyncio.run(queue.enqueue(held.sender, list(held.recipients), content, meta=meta))
    quarantine.delete(held_id)
    typer.echo(f"{held_id}: released, queued as {queue_id}")


@quarantine_app.command("delete")
def quarantine_delete(held_id: str, config: Path = typer.Option(None, "--config", "-c")) -> None:
    """Discard a held message.

    Example: sealrelay quarantine delete 3f2a9c01b7e4 --config relay.yaml
    """
    from engine.relay.queue.quarantine import NotHeld

    try:
        _quarantine(config).delete(held_id)
    except NotHeld as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(Exit.FAILED) from None
    typer.echo(f"{held_id}: deleted")


def _quarantine(config: Path | None):
    from engine.relay.queue.quarantine import Quarantine
    from engine.relay.runtime.relay import ConfigError, data_dir_of

    try:
        return Quarantine(data_dir_of(config))
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exits.for_config(config or "relay.yaml")) from None
