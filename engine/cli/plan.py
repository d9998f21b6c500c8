"""`sealrelay plan`: arguments -> load both configs -> make_plan -> a renderer -> exit code.

Relay-less with `--against OTHER` (a file, a directory, or `git:REF`): what CI runs on a
pull request. Otherwise the current config comes from a relay's admin API: that client is
`engine.admin.client.fetch_running(url, token)`, imported only when needed, so this
command works (and says so clearly) before relay mode exists.
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer

from engine.cli import views


class PlanFormat(str, Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


class PlanError(Exception):
    """A plan that cannot be made; the message says why (exit 1)."""


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
        False, "--detailed-exitcode", help="Exit 0 when there are no changes, 2 when there are, 1 on error"
    ),
    relay: list[str] = typer.Option(
        None,
        "--relay",
        help="Admin API of a relay to plan against; repeat for several (default: http:// + system.admin)",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    probe: bool = typer.Option(
        False, "--probe", help="Connect to the next hops a TLS change affects, as the relay would after it"
    ),
) -> None:
    """Show what applying PATH would change, each change judged tightening or loosening.

    Example: sealrelay plan relay.yaml --against git:main --format markdown --detailed-exitcode
    """
    from engine.config.diagnostics import render_text
    from engine.config.load import load_config
    from engine.plan import planfile
    from engine.plan.build import make_plan
    from engine.plan.inputs import SourceError, load_other
    from engine.plan.render import render, render_failure

    fmt_value = PlanFormat(fmt).value

    def fail(problem: str, diagnostics=()) -> typer.Exit:
        """No plan: say so on stderr and, for markdown and json, in the document CI posts."""
        sys.stdout.write(render_failure(fmt_value, str(path), problem, diagnostics))
        return typer.Exit(views.EXIT_ERROR)

    result = load_config(path)
    if result.diagnostics:
        sys.stderr.write(render_text(result.diagnostics) + "\n")
    if not result.ok or result.config is None:
        typer.echo(f"{path}: invalid config, no plan", err=True)
        raise fail(f"{path} is invalid, so there is no plan: fix what is listed below.", result.diagnostics)
    commit, warning = planfile.git_commit(path)
    changes = False
    plans = []
    for target in [None] if against is not None or not relay else relay:
        try:
            if against is not None:
                current, label = load_other(against, path)
                base_version, last_applied = None, None
            else:
                current, label, base_version, last_applied = _from_relay(target, token_file, result)
        except SourceError as exc:
            typer.echo(exc.render(), err=True)
            raise fail(str(exc), exc.diagnostics) from None
        except PlanError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise fail(str(exc)) from None
        the_plan = make_plan(
            result.config,
            current,
            base_version=base_version,
            last_applied=last_applied,
            commit=commit,
            desired_label=str(path),
            base_label=label,
        )
        if against is None:  # what only the relay knows: queued mail this would send to a dead destination
            the_plan = _with_warnings(the_plan, _relay_warnings(target, token_file, result))
        sys.stdout.write(render(the_plan, fmt_value))
        changes = changes or the_plan.has_changes
        if probe:
            from engine.relay.delivery import probe as prober

            sys.stdout.write(prober.render(prober.run(result.config, list(the_plan.changes), result.base_dir)))
        plans.append((target, the_plan))
    if out is not None:
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        saved = _one_plan(plans)
        try:
            planfile.save(out, saved, result.config)
        except OSError as exc:
            typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
            raise typer.Exit(views.EXIT_ERROR) from None
        relays = "".join(f" --relay {url}" for url, _ in plans if url and len(plans) > 1)
        typer.echo(f"Saved the plan to {out}: apply it with `sealrelay apply {out}{relays}`", err=True)
    if detailed_exitcode and changes:
        raise typer.Exit(views.EXIT_CHANGES)
    raise typer.Exit(views.EXIT_OK)


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
        raise typer.Exit(views.EXIT_ERROR)
    first = plans[0][1]
    label = "the relays at " + ", ".join(url for url, _ in plans)
    return replace(first, base_version=None, base_label=label, drift=())


def _from_relay(relay: str | None, token_file: Path | None, result: Any) -> tuple[Any, str, int | None, Any]:
    """The running config, its label, its version, and what the last apply set (for drift).

    `fetch_running(url, token)` returns the admin API's `GET /v1/config`: `config`
    (canonical JSON), `version`, and, when the relay keeps it, `last_applied`.
    """
    config = result.config
    url = relay or f"http://{config.system.admin.address}:{config.system.admin.port}"
    try:
        from engine.admin.client import AdminError, fetch_running, token_from
    except ImportError:
        raise PlanError(
            "relay mode not available yet: plan against a file, a directory or a git revision "
            "with --against OTHER (e.g. --against git:main)"
        ) from None
    try:
        token = token_from(token_file, result.base_dir / config.system.data_dir)
        running = fetch_running(url, token)
    except AdminError as exc:
        raise PlanError(f"{exc} (to plan without a relay: --against OTHER)") from None
    return running.config, f"the relay at {url}", running.version, getattr(running, "last_applied", None)


def _with_warnings(plan: Any, warnings: tuple[str, ...]) -> Any:
    from dataclasses import replace

    return replace(plan, warnings=warnings) if warnings else plan


def _relay_warnings(relay: str | None, token_file: Path | None, result: Any) -> tuple[str, ...]:
    """The relay's own plan's warnings (`POST /v1/plan`); none when it cannot say (best effort:
    the plan above stands on its own)."""
    from engine.admin.client import AdminError, RelayClient, token_from
    from engine.plan.diff import canonical

    config = result.config
    url = relay or f"http://{config.system.admin.address}:{config.system.admin.port}"
    try:
        with RelayClient(url, token_from(token_file, result.base_dir / config.system.data_dir)) as client:
            answer = client.plan(canonical(config))
    except AdminError:
        return ()
    return tuple((answer.plan or {}).get("warnings", ()))


plan_command = plan
