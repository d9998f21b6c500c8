"""`sealrelay plan`: arguments -> load both configs -> make_plan -> a renderer -> exit code.

Relay-less with `--against OTHER` (a file, a directory, or `git:REF`): what CI runs on a
pull request. Otherwise the current config comes from a relay's admin API
(`engine.admin.client.fetch_running(url, token)`, imported only when needed); over a fleet
each relay takes its own token from the token map (`--tokens`, engine/cli/tokens.py).

Every failure has its exit code (engine/cli/exits.py); with `--detailed-exitcode` they are
all 1, Terraform's contract.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from engine.cli import exits, tokens
from engine.cli.exits import Exit


class PlanFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


class PlanError(Exception):
    """A plan that cannot be made; the message says why, `code` is the exit code."""

    def __init__(self, message: str, code: int = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


def plan(
    path: Path = typer.Argument(Path("relay.yaml"), help="The desired config: a file or a directory of YAML files"),
    against: str | None = typer.Option(
        None,
        "--against",
        help="Plan against this config instead of a relay: a file, a directory, or git:REF (the same PATH at REF)",
    ),
    fmt: PlanFormat = typer.Option(PlanFormat.text, "--format", help="text, markdown (a PR comment) or json"),
    out: Path | None = typer.Option(None, "--out", help="Save the plan (tamper-evident) for `sealrelay apply`"),
    detailed_exitcode: bool = typer.Option(
        False,
        "--detailed-exitcode",
        help="Exit 0 when there are no changes, 2 when there are, 1 on any error (without it: docs/cli.md)",
    ),
    relay: list[str] = typer.Option(
        None,
        "--relay",
        help="Admin API of a relay to plan against, or its name in the token map; repeat for several "
        "(default: http:// + system.admin)",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    tokens_file: Path | None = typer.Option(
        None, "--tokens", help="Fleet token map: each relay's token by reference (or SEALRELAY_TOKENS)"
    ),
    probe: bool = typer.Option(
        False, "--probe", help="Connect to the next hops a TLS change affects, as the relay would after it"
    ),
) -> None:
    """Show what applying PATH would change, each change judged tightening or loosening.

    Example: sealrelay plan relay.yaml --against git:main --format markdown --detailed-exitcode
    """
    try:
        _plan(path, against, fmt, out, detailed_exitcode, relay, token_file, tokens_file, probe)
    except typer.Exit as exc:
        raise typer.Exit(exits.detailed(exc.exit_code, detailed_exitcode)) from None


def _plan(path, against, fmt, out, detailed_exitcode, relay, token_file, tokens_file, probe) -> None:
    from engine.config.diagnostics import render_text
    from engine.config.load import load_config
    from engine.plan import planfile
    from engine.plan.build import make_plan
    from engine.plan.inputs import SourceError, load_other
    from engine.plan.locate import locate
    from engine.plan.render import render, render_failure

    fmt_value = PlanFormat(fmt).value

    def fail(problem: str, diagnostics=(), code: int = Exit.FAILED) -> typer.Exit:
        """No plan: say so on stderr and, for markdown and json, in the document CI posts."""
        sys.stdout.write(render_failure(fmt_value, str(path), problem, diagnostics))
        return typer.Exit(code)

    result = load_config(path)
    if result.diagnostics:
        sys.stderr.write(render_text(result.diagnostics) + "\n")
    if not result.ok or result.config is None:
        typer.echo(f"{path}: invalid config, no plan", err=True)
        problem = f"{path} is invalid, so there is no plan: fix what is listed below."
        raise fail(problem, result.diagnostics, exits.for_config(path))
    commit, warning = planfile.git_commit(path)
    changes = False
    plans = []
    targets: list = [None]
    if against is None:
        try:
            targets = _targets(relay, tokens_file, result)
        except tokens.TokenMapError as exc:
            typer.echo(exc.render(), err=True)
            raise fail(str(exc), exc.diagnostics, Exit.CONFIG) from None
        except PlanError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise fail(str(exc), code=exc.code) from None
    for target in targets:
        try:
            if against is not None:
                current, label = load_other(against, path)
                base_version, last_applied = None, None
            else:
                current, label, base_version, last_applied = _from_relay(target, token_file, result)
        except SourceError as exc:
            typer.echo(exc.render(), err=True)
            raise fail(str(exc), exc.diagnostics, Exit.DATAERR if exc.diagnostics else Exit.NOINPUT) from None
        except PlanError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise fail(str(exc), code=exc.code) from None
        the_plan = make_plan(
            result.config,
            current,
            base_version=base_version,
            last_applied=last_applied,
            commit=commit,
            desired_label=str(path),
            base_label=label,
        )
        if result.data is not None and result.source is not None:
            the_plan = locate(the_plan, result.data, result.source)
        if against is None:  # what only the relay knows: queued mail this would send to a dead destination
            the_plan = _with_warnings(the_plan, _relay_warnings(target, token_file, result))
        sys.stdout.write(render(the_plan, fmt_value))
        changes = changes or the_plan.has_changes
        if probe:
            from engine.relay.delivery import probe as prober

            sys.stdout.write(prober.render(prober.run(result.config, list(the_plan.changes), result.base_dir)))
        plans.append((target.url if target else None, the_plan))
    if out is not None:
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        saved = _one_plan(plans)
        try:
            planfile.save(out, saved, result.config)
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(Exit.IOERR if exits.for_oserror(exc) is Exit.IOERR else Exit.CANTCREAT) from None
        relays = "".join(f" --relay {spec}" for spec in (relay or []) if len(plans) > 1)
        relays += f" --tokens {tokens_file}" if tokens_file is not None and len(plans) > 1 else ""
        typer.echo(f"Saved the plan to {out}: apply it with `sealrelay apply {out}{relays}`", err=True)
    if detailed_exitcode and changes:
        raise typer.Exit(Exit.CHANGES)
    raise typer.Exit(Exit.OK)


def _one_plan(plans: list) -> Any:
    """The plan to save: the only one, or, over several relays, one that fits them all.

    Relays that run the same config get the same plan; saved without a base version (their
    counters differ), it binds the config hash they all run, and `apply` checks each node
    against it. Relays that run different configs cannot share one: exit 1, nothing saved."""
    from dataclasses import replace

    if len(plans) == 1:
        return plans[0][1]
    hashes = {plan.base_hash for _, plan in plans}
    if len(hashes) > 1:
        running = ", ".join(f"{url}: sha256 {(plan.base_hash or '')[:12]}" for url, plan in plans)
        typer.echo(
            f"error: --out: these relays run different configs ({running}): one saved plan cannot fit them; "
            "save a plan per relay (a fleet of node files: one per node file)",
            err=True,
        )
        raise typer.Exit(Exit.FAILED)
    first = plans[0][1]
    label = "the relays at " + ", ".join(url for url, _ in plans)
    return replace(first, base_version=None, base_label=label, drift=())


def _targets(relay: list[str] | None, tokens_file: Path | None, result: Any) -> list[tokens.Relay]:
    """The relays to plan against (each `--relay`, a URL or a name in the token map; else the
    config's admin API), each with where its token comes from."""
    admin = result.config.system.admin
    host = f"[{admin.address}]" if ":" in admin.address else admin.address
    try:
        token_map = tokens.load(tokens.given(tokens_file))  # TokenMapError: the caller shows where
        return tokens.relays(relay, f"http://{host}:{admin.port}", token_map)
    except tokens.UnknownRelay as exc:
        raise PlanError(str(exc), Exit.USAGE) from None


def _from_relay(relay: tokens.Relay, token_file: Path | None, result: Any) -> tuple[Any, str, int | None, Any]:
    """The running config, its label, its version, and what the last apply set (for drift).

    `fetch_running(url, token)` returns the admin API's `GET /v1/config`: `config`
    (canonical JSON), `version`, and, when the relay keeps it, `last_applied`.
    """
    from engine.admin.client import AdminError, Unauthorized, fetch_running

    try:
        token = relay.token(token_file, result.base_dir / result.config.system.data_dir)
        running = fetch_running(relay.url, token)
    except Unauthorized as exc:
        raise PlanError(
            f"{relay.label}: the admin token was refused ({exc}; {relay.token_source})", Exit.NOPERM
        ) from None
    except AdminError as exc:
        message = relay.says(f"{exc} (to plan without a relay: --against OTHER)")
        raise PlanError(message, exits.for_admin_error(exc)) from None
    label = f"the relay {relay.label}" if relay.name else f"the relay at {relay.url}"
    return running.config, label, running.version, getattr(running, "last_applied", None)


def _with_warnings(plan: Any, warnings: tuple[str, ...]) -> Any:
    from dataclasses import replace

    return replace(plan, warnings=warnings) if warnings else plan


def _relay_warnings(relay: tokens.Relay, token_file: Path | None, result: Any) -> tuple[str, ...]:
    """The relay's own plan's warnings (`POST /v1/plan`); none when it cannot say (best effort:
    the plan above stands on its own)."""
    from engine.admin.client import AdminError, RelayClient
    from engine.plan.diff import canonical

    config = result.config
    try:
        with RelayClient(relay.url, relay.token(token_file, result.base_dir / config.system.data_dir)) as client:
            answer = client.plan(canonical(config))
    except AdminError:
        return ()
    return tuple((answer.plan or {}).get("warnings", ()))


plan_command = plan
