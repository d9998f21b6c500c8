"""The `sealrelay` command line: arguments -> a core call -> a view. Typer lives only here."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path

import typer

from engine.cli import exits, views
from engine.cli.apply import apply_command
from engine.cli.cert import cert_app
from engine.cli.dlp import explain, quarantine_app, simulate
from engine.cli.plan import plan_command
from engine.cli.portal import portal_app
from engine.cli.queue import queue_app
from engine.cli.state import state_app
from engine.cli.status import status_command

app = typer.Typer(
    name="sealrelay",
    help="An email-encryption SMTP relay whose every setting lives in versioned YAML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
schema_app = typer.Typer(help="The JSON Schemas of the config format.", no_args_is_help=True)
app.add_typer(schema_app, name="schema")
app.add_typer(queue_app, name="queue")
app.add_typer(cert_app, name="cert")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(portal_app, name="portal")
app.add_typer(state_app, name="state")
app.command("plan")(plan_command)
app.command("apply")(apply_command)
app.command("status")(status_command)
app.command("simulate")(simulate)
app.command("explain")(explain)

DEFAULT_CONFIG = Path("relay.yaml")


def version_text() -> str:
    """`sealrelay 0.1.0 (config format 1, Python 3.11.7)`: what a bug report needs first."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from engine.config.model import LATEST_VERSION

    try:
        ours = version("sealrelay")
    except PackageNotFoundError:  # run from a tree that was never installed
        ours = "unknown"
    return f"sealrelay {ours} (config format {LATEST_VERSION}, Python {platform.python_version()})"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_text())
        raise typer.Exit(exits.Exit.OK)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit"
    ),
) -> None:
    """An email-encryption SMTP relay whose every setting lives in versioned YAML.

    Shell completion: `sealrelay --install-completion` (bash, zsh, fish, PowerShell).
    """


class Format(str, Enum):
    text = "text"
    json = "json"


@app.command()
def validate(
    path: Path = typer.Argument(DEFAULT_CONFIG, help="A config file, or a directory of YAML files merged into one"),
    fmt: Format = typer.Option(Format.text, "--format", help="text for people, json for machines"),
) -> None:
    """Parse, schema-check and cross-check a config, reporting every stage's findings in one
    run; exit 65 if it has errors (66 if PATH does not exist).

    Example: sealrelay validate examples/full.yaml --format json
    """
    from engine.config.load import load_config

    result = load_config(path)
    if result.ok:  # the config's own policy tests, run through the real pipeline
        from engine.config.diagnostics import locate
        from engine.relay.dlp.simulate import run_policy_tests

        failed = locate(run_policy_tests(result), result.source)
        result.diagnostics = result.diagnostics + failed
        result.config = None if failed else result.config
    raise typer.Exit(views.show_diagnostics(result.diagnostics, fmt.value, valid=result.ok, path=str(path)))


class LogFormat(str, Enum):
    text = "text"
    json = "json"


@app.command()
def serve(
    path: Path = typer.Argument(None, help="Config file or directory (default: relay.yaml, else the embedded default)"),
    watch: bool = typer.Option(False, "--watch", help="Reload when the config files change"),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR"),
    log_format: LogFormat = typer.Option(
        LogFormat.text, "--log-format", help="text, or json: one JSON object per line for every record"
    ),
    allow_downgrade: bool = typer.Option(
        False,
        "--allow-downgrade",
        help="Serve config files that loosen protection against the config that ran last (needs --reason)",
    ),
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded in the audit log with the start"),
    listen: list[str] = typer.Option(
        None,
        "--listen",
        help="Bind NAME=ADDR:PORT instead of the config (an SMTP listener, admin, metrics or portal; "
        "ADDR:PORT alone: the only SMTP listener; port 0: any free one). Repeatable; also $SEALRELAY_LISTEN",
    ),
) -> None:
    """Run the relay: SMTP listeners, the durable queue and delivery workers.

    A restart resumes the config that ran last (kept in data_dir): config files that differ
    from it are a change, planned and guarded like an apply, and recorded in the audit log.
    `--listen` moves where this process binds without changing the config (shown in
    /v1/status). A start that cannot happen says why in one line, with an exit code per
    cause (docs/cli.md): 71 a port in use, 73 data_dir not a directory, 77 not writable,
    65 an invalid config.

    Example: sealrelay serve relay.yaml --listen smtp=127.0.0.1:2625 --listen admin=127.0.0.1:18025
    """
    import os

    from engine.relay.runtime import listen as listening
    from engine.relay.runtime import logbuffer

    logbuffer.install(log_level.upper(), LogFormat(log_format).value)
    say = _reporter(LogFormat(log_format).value)
    if allow_downgrade and not (reason and reason.strip()):
        say('--allow-downgrade needs --reason "…" (it goes into the audit log)', error=True)
        raise typer.Exit(exits.Exit.USAGE)
    try:
        overrides = listening.parse(listen or [])
    except ValueError as exc:
        say(f"error: {exc}", error=True)
        raise typer.Exit(exits.Exit.USAGE) from None

    os.umask(0o077)  # everything the relay creates (queue, keys, state, audit log) is the owner's alone

    from engine.relay.runtime.relay import ConfigError, StartupError, config_location
    from engine.relay.runtime.service import Service

    path, base_dir = config_location(path)
    service = Service(
        path, base_dir=base_dir, watch=watch, allow_downgrade=allow_downgrade, reason=reason, overrides=overrides
    )
    say(f"sealrelay serving {path}" + (" (watching for changes)" if watch else ""))
    if overrides:
        say(f"listening where --listen says, not the config: {' '.join(overrides.given)}")
    try:
        run_loop(service.run_forever())
    except ConfigError as exc:
        say(f"{path}: invalid config, not started", detail=str(exc), error=True)
        raise typer.Exit(_invalid_at_start(path)) from None
    except (StartupError, OSError) as exc:  # a port taken, data_dir unusable: one line, no traceback
        say(f"error: {_one_line(exc)}; not started", error=True)
        raise typer.Exit(exits.for_start(exc)) from None
    except KeyboardInterrupt:
        pass


def _reporter(fmt: str):
    """What `serve` itself says (its start line, why it did not start): plain lines on stderr,
    or with `--log-format json` log records like every other line (one JSON object each)."""
    import logging

    from engine.relay.runtime import logbuffer

    log = logging.getLogger("sealrelay.serve")

    def say(message: str, *, detail: str | None = None, error: bool = False) -> None:
        logbuffer.flush()  # what was logged before comes first
        if fmt == "json":
            log.log(logging.ERROR if error else logging.INFO, message, extra={"detail": detail} if detail else None)
            logbuffer.flush()
            return
        if detail:
            typer.echo(detail, err=True)
        typer.echo(message, err=True)

    return say


def _invalid_at_start(path: Path) -> exits.Exit:
    """The exit code of a config `serve` refused: NOINPUT when it is not there, CANTCREAT when
    its only errors are at system.data_dir (not a directory: the same cause, and code, as when
    the start itself finds it), else DATAERR. Read again from the diagnostics, as values: this
    runs only on the way out."""
    from engine.config.diagnostics import Severity
    from engine.config.load import load_config

    if not path.exists():
        return exits.Exit.NOINPUT
    errors = [d for d in load_config(path).diagnostics if d.severity is Severity.ERROR]
    if errors and all(d.path == ("system", "data_dir") for d in errors):
        return exits.Exit.CANTCREAT
    return exits.Exit.DATAERR


def _one_line(exc: BaseException) -> str:
    """A start failure as one line: our own errors say it all; an OSError names its file."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


@schema_app.command("export")
def schema_export(
    out: Path = typer.Option(Path("schemas"), "--out", help="Directory to write the schema files into"),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 1 if the files differ from the models"),
) -> None:
    """Write schemas/relay.schema.json from the models (what editors and CI use).

    Example: sealrelay schema export --out schemas
    """
    from engine.config import schema

    if check:
        target = out / schema.SCHEMA_FILE
        current = target.read_text(encoding="utf-8") if target.exists() else ""
        if current != schema.dumps(schema.generate()):
            typer.echo(f"{target} is out of date: run `sealrelay schema export`", err=True)
            raise typer.Exit(exits.Exit.FAILED)
        typer.echo(f"{target} is up to date")
        return
    for written in schema.export(out):
        typer.echo(f"wrote {written}")


@schema_app.command("reference")
def schema_reference() -> None:
    """Print the config reference (Markdown) generated from the models.

    Example: sealrelay schema reference > docs/config-reference.md
    """
    from engine.config.reference import render

    sys.stdout.write(render())


@app.command()
def migrate(
    path: Path = typer.Argument(DEFAULT_CONFIG, help="A config file, or a directory of YAML files"),
    check: bool = typer.Option(False, "--check", help="Write nothing; exit 2 if a migration is needed"),
) -> None:
    """Rewrite a config in place to the newest format version, keeping comments.

    Example: sealrelay migrate relay.yaml --check
    """
    from engine.config.migrate import migrate_path

    report = migrate_path(path, write=not check)
    for line in report.lines:
        typer.echo(line)
    if report.failed:
        raise typer.Exit(exits.for_config(path))
    if check and report.changed:
        raise typer.Exit(exits.Exit.CHANGES)


def run_loop(coro) -> None:
    """Run the relay's event loop: uvloop where it is installed (SEALRELAY_LOOP=asyncio opts out)."""
    import asyncio
    import os

    if os.environ.get("SEALRELAY_LOOP", "uvloop") == "uvloop":
        try:
            import uvloop

            return uvloop.run(coro)
        except ImportError:
            pass
    return asyncio.run(coro)


def main() -> None:
    """Run the CLI. A usage mistake (an unknown flag, a missing argument) exits 64, not click's
    2: exit 2 means "changes" to `plan` and `simulate --detailed-exitcode`, and a typo in CI
    must not read as a plan with changes (with `--detailed-exitcode` it is 1, as every error).
    An unexpected exception is a bug: its traceback, then 70."""
    import traceback

    # typer may vendor click: find its exception base through a public class, not an import
    click_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
    detailed = "--detailed-exitcode" in sys.argv[1:]
    try:
        code = app(prog_name="sealrelay", standalone_mode=False)
    except click_error as exc:
        exc.show()
        sys.exit(exits.detailed(exits.Exit.USAGE, detailed))
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except Exception:
        traceback.print_exc()
        sys.stderr.write("sealrelay: internal error (a bug): please report it with the lines above\n")
        sys.exit(exits.detailed(exits.Exit.SOFTWARE, detailed))
    sys.exit(code if isinstance(code, int) else exits.Exit.OK)


if __name__ == "__main__":
    main()
