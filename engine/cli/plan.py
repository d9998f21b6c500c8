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
    from engine.plan.render import render

    fmt_value = PlanFormat(fmt).value
    result = load_config(path)
    if result.diagnostics:
        sys.stderr.write(render_text(result.diagnostics) + "\n")
    if not result.ok or result.config is None:
        typer.echo(f"{path}: invalid config, no plan", err=True)
        raise typer.Exit(views.EXIT_ERROR)
    if against is None and relay and len(relay) > 1 and out is not None:
        typer.echo("error: --out saves the plan of one relay: plan each relay on its own", err=True)
        raise typer.Exit(views.EXIT_ERROR)
    commit, warning = planfile.git_commit(path)
    changes = False
    for target in [None] if against is not None or not relay else relay:
        try:
            if against is not None:
                current, label = load_other(against, path)
                base_version, last_applied = None, None
            else:
                current, label, base_version, last_applied = _from_relay(target, token_file, result)
        except SourceError as exc:
            typer.echo(exc.render(), err=True)
            raise typer.Exit(views.EXIT_ERROR) from None
        except PlanError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(views.EXIT_ERROR) from None
        the_plan = make_plan(
            result.config,
            current,
            base_version=base_version,
            last_applied=last_applied,
            commit=commit,
            desired_label=str(path),
            base_label=label,
        )
        sys.stdout.write(render(the_plan, fmt_value))
        changes = changes or the_plan.has_changes
        if probe:
            from engine.relay.delivery import probe as prober

            sys.stdout.write(prober.render(prober.run(result.config, list(the_plan.changes), result.base_dir)))
        if out is not None:
            if warning:
                typer.echo(f"warning: {warning}", err=True)
            try:
                planfile.save(out, the_plan, result.config)
            except OSError as exc:
                typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
                raise typer.Exit(views.EXIT_ERROR) from None
            typer.echo(f"Saved the plan to {out}: apply it with `sealrelay apply {out}`", err=True)
    if detailed_exitcode and changes:
        raise typer.Exit(views.EXIT_CHANGES)
    raise typer.Exit(views.EXIT_OK)


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


plan_command = plan
