"""`sealrelay apply`: a config or a saved plan, applied to one relay or rolled out to several.

Arguments -> for each relay: fetch what runs, plan, refuse what the rules refuse (a stale
saved plan, a loosening without --allow-downgrade --reason), confirm, apply -> a report of
which node runs which version. A rollout stops at the first node that fails, so the rest
keep the version they had; the report says where it stopped, and the exit code is that of
the failure (engine/cli/exits.py). Over a fleet each relay takes its own token from the token
map (`--tokens`, engine/cli/tokens.py).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from engine.cli import exits, tokens
from engine.cli.exits import Exit


@dataclass
class Node:
    relay: tokens.Relay
    before: int | None = None
    after: int | None = None
    result: str = "not reached"

    @property
    def url(self) -> str:
        return self.relay.url


class ApplyError(Exception):
    def __init__(self, message: str, code: int = Exit.FAILED) -> None:
        super().__init__(message)
        self.code = code


def apply_command(
    target: Path = typer.Argument(
        Path("relay.yaml"), help="A config (file or directory) or a plan saved by `plan --out`"
    ),
    relay: list[str] = typer.Option(
        None,
        "--relay",
        help="Admin API URL of a relay, or its name in the token map; repeat to roll out to several, in order",
    ),
    token_file: Path | None = typer.Option(
        None, "--token-file", help="Admin token file (default: <data_dir>/admin.token; or SEALRELAY_TOKEN)"
    ),
    tokens_file: Path | None = typer.Option(
        None, "--tokens", help="Fleet token map: each relay's token by reference (or SEALRELAY_TOKENS)"
    ),
    auto_approve: bool = typer.Option(False, "--auto-approve", help="Apply without asking"),
    allow_downgrade: bool = typer.Option(
        False, "--allow-downgrade", help="Allow changes that loosen protection (needs --reason)"
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded in each relay's audit log"),
) -> None:
    """Apply a config (or a saved plan) to running relays, one after another.

    Example: sealrelay apply plan.json --relay http://10.0.0.5:8025 --relay http://10.0.0.6:8025
    """
    if allow_downgrade and not (reason and reason.strip()):
        typer.echo('--allow-downgrade needs --reason "…" (it goes into the audit log)', err=True)
        raise typer.Exit(Exit.USAGE)
    try:
        desired, saved, provenance, defaults, data_dir = _desired(target)
    except ApplyError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.code) from None
    targets = tokens.targets_or_exit(relay, defaults, tokens_file)
    if not targets:
        typer.echo("no relay to apply to: give --relay URL", err=True)
        raise typer.Exit(Exit.USAGE)
    for one in targets:
        if _cleartext_remote(one.url):
            typer.echo(
                f"warning: {one.url} is plain HTTP to another host: the admin token crosses the network in clear (use https:// through a TLS proxy, or an SSH tunnel)",
                err=True,
            )
    nodes = [Node(one) for one in targets]
    code = _roll_out(nodes, desired, saved, provenance, token_file, data_dir, auto_approve, allow_downgrade, reason)
    typer.echo("\nnodes:")
    for node in nodes:
        versions = f"version {node.before} -> {node.after}" if node.after is not None else f"version {node.before}"
        typer.echo(f"  {node.relay.label}: {node.result} ({versions})")
    raise typer.Exit(code)


def _desired(target: Path):
    """The desired config (canonical JSON), the saved plan if any, (its commit, whether the tree
    was dirty), default URLs and the data directory (for the token)."""
    from engine.config.diagnostics import render_text
    from engine.config.load import load_config
    from engine.plan.diff import canonical
    from engine.plan.planfile import PlanFileError, git_provenance, load

    if target.suffix == ".json" and target.is_file():
        try:
            saved = load(target)
        except PlanFileError as exc:
            raise ApplyError(f"{target}: {exc}", Exit.DATAERR) from None
        return canonical(saved.desired), saved, (saved.plan.commit, False), None, None
    result = load_config(target)
    if not result.ok:
        message = render_text(result.diagnostics) + f"\n{target}: invalid config, nothing applied"
        raise ApplyError(message, exits.for_config(target))
    commit, dirty = git_provenance(target)
    if commit is None:
        typer.echo(f"warning: {target} is not in a git repository with a commit: no commit is recorded", err=True)
    elif dirty:
        typer.echo(f"warning: {target} has uncommitted changes: recorded as a dirty tree on {commit[:12]}", err=True)
    admin = result.config.system.admin
    data_dir = result.base_dir / result.config.system.data_dir
    host = f"[{admin.address}]" if ":" in admin.address else admin.address
    return canonical(result.config), None, (commit, dirty), f"http://{host}:{admin.port}", data_dir


def _roll_out(nodes, desired, saved, provenance, token_file, data_dir, auto_approve, allow_downgrade, reason) -> int:
    """Apply to each node in order; the exit code: 0, or that of the node where it stopped."""
    from engine.admin.client import AdminError, Refused, RelayClient, TokenNotFound, Unauthorized
    from engine.admin.contract import ApplyRequest
    from engine.plan.build import make_plan
    from engine.plan.planfile import StalePlanError, check_base
    from engine.plan.render import render

    for node in nodes:
        try:
            token = node.relay.token(token_file, data_dir)
        except TokenNotFound as exc:
            typer.echo(f"error: {node.relay.says(str(exc))}", err=True)
            node.result = "no admin token"
            return Exit.CONFIG
        try:
            with RelayClient(node.url, token) as client:
                running = client.fetch_running()
                node.before = running.version
                if saved is not None:
                    # one relay: its version must be the plan's base; several: each must run the
                    # same config the plan was made against (their version counters differ)
                    check_base(
                        saved,
                        version=running.version if len(nodes) == 1 else saved.plan.base_version,
                        config=running.config,
                    )
                plan = make_plan(
                    desired, running.config, base_version=running.version, desired_label="desired", base_label=node.url
                )
                typer.echo(f"== {node.url} (running version {running.version})")
                typer.echo(render(plan, "text"))
                if not plan.has_changes:
                    node.after, node.result = running.version, "unchanged"
                    continue
                if plan.loosenings and not allow_downgrade:
                    node.result = 'refused: the plan loosens protection (use --allow-downgrade --reason "…")'
                    return Exit.FAILED
                if not auto_approve and not (sys.stdin and sys.stdin.isatty()):
                    typer.echo("no terminal to confirm on: run with --auto-approve", err=True)
                    node.result = "not approved"
                    return Exit.USAGE
                if not auto_approve and not typer.confirm(f"Apply these changes to {node.url}?", default=False):
                    node.result = "not approved"
                    return Exit.FAILED
                request = ApplyRequest(
                    desired,
                    base_version=running.version,
                    commit=provenance[0],
                    dirty=provenance[1],
                    reason=reason,
                    allow_downgrade=allow_downgrade,
                    plan_hash=saved.plan.desired_hash if saved else None,
                )
                result = client.apply(request)
                node.after, node.result = result.version, "applied" if result.changed else "unchanged"
        except StalePlanError as exc:
            node.result = f"refused: stale plan: {exc}"
            return Exit.TEMPFAIL
        except Refused as exc:
            node.result = f"refused: {exc.error}: {exc.detail}"
            for diag in getattr(exc, "diagnostics", []) or []:
                typer.echo(f"  {diag.get('path')}: {diag.get('message')}", err=True)
            return exits.for_admin_error(exc)
        except Unauthorized as exc:
            typer.echo(
                f"error: {node.relay.label}: the admin token was refused ({exc}; {node.relay.token_source})", err=True
            )
            node.result = "failed: the admin token was refused"
            return Exit.NOPERM
        except AdminError as exc:
            node.result = f"failed: {exc}"
            return exits.for_admin_error(exc)
    return Exit.OK


def _cleartext_remote(url: str) -> bool:
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True
