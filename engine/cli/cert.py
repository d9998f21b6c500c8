"""`sealrelay cert …`: the relay's certificate. Arguments -> `engine.certificates.ops` -> a view here."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import TypeVar

import typer

from engine.certificates.ops import CertOpsError, CertReport, CsrResult, CsrSubject, Replaced
from engine.certificates.store import KEY_TYPES
from engine.cli.exits import Exit
from engine.config.diagnostics import has_errors, render_text

cert_app = typer.Typer(
    help="The relay's TLS certificate: show it, generate a self-signed one, request one from a CA, import it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_CONFIG = Path("relay.yaml")
KeyType = Enum("KeyType", {k.replace("-", "_"): k for k in KEY_TYPES}, type=str)
T = TypeVar("T")
CONFIG_ARG = typer.Argument(DEFAULT_CONFIG, help="A config file, or a directory of YAML files")


class Format(str, Enum):
    text = "text"
    json = "json"


@cert_app.command("show")
def show(
    config: Path = CONFIG_ARG,
    fmt: Format = typer.Option(Format.text, "--format", help="text for people, json for machines"),
) -> None:
    """Show the active certificate; exit 1 if it is expired or not for system.fqdn.

    Example: sealrelay cert show relay.yaml --format json
    """
    from engine.certificates import ops as certops

    report = _run(lambda: certops.show(config))
    if fmt is Format.json:
        sys.stdout.write(json.dumps(_report_json(report), indent=2) + "\n")
    else:
        _show_report(report)
    raise typer.Exit(Exit.OK if report.ok else Exit.FAILED)


@cert_app.command("self-signed")
def self_signed(
    config: Path = CONFIG_ARG,
    key: KeyType | None = typer.Option(None, "--key", help="Key type (default: the config's, else ecdsa-p256)"),
    days: int | None = typer.Option(None, "--days", help="Validity in days (default: the config's, else 825)"),
    switch: bool = typer.Option(False, "--switch", help="If the config uses pfx/pem, change it to self_signed"),
) -> None:
    """Generate a new self-signed certificate for system.fqdn and make it active (overwrites).

    Example: sealrelay cert self-signed relay.yaml --key rsa-2048 --days 365
    """
    from engine.certificates import ops as certops

    done = _run(lambda: certops.self_signed(config, key=key.value if key else None, valid_days=days, switch=switch))
    _show_replaced(done)
    if done.config_file:
        typer.echo("run `sealrelay plan` to review the change and `sealrelay apply` to make it live")
    else:
        typer.echo("a running relay keeps presenting the old one until it restarts")


@cert_app.command("csr")
def csr(
    config: Path = CONFIG_ARG,
    country: str = typer.Option(..., "--country", help="2-letter country code, e.g. US"),
    state: str = typer.Option(..., "--state", help="State or province, full name, e.g. Texas"),
    locality: str = typer.Option(..., "--locality", help="City, e.g. Austin"),
    organization: str = typer.Option(..., "--organization", help="Company, e.g. Example Corp"),
    unit: str = typer.Option(..., "--unit", help="Organizational unit, e.g. IT"),
    email: str = typer.Option(..., "--email", help="Contact address, e.g. postmaster@example.com"),
    key: KeyType = typer.Option(KeyType.rsa_2048, "--key", help="Key type"),
    key_password_env: str | None = typer.Option(None, "--key-password-env", help="Encrypt the key: password in VAR"),
    key_password_file: Path | None = typer.Option(None, "--key-password-file", help="Encrypt the key: password in F"),
    out_key: Path = typer.Option(Path("certificate.key"), "--out-key", help="Private key file (written 0600)"),
    out_csr: Path = typer.Option(Path("certificate.csr"), "--out-csr", help="CSR file, to send to the CA"),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output files"),
) -> None:
    """Write a private key and a CSR whose CN is system.fqdn, to send to a CA.

    Example: sealrelay cert csr relay.yaml --country US --state Texas --locality Austin --organization "Example Corp" --unit IT --email postmaster@example.com --key-password-env KEY_PASSWORD
    """
    from engine.certificates import ops as certops

    def run() -> CsrResult:
        password = None
        if key_password_env is not None or key_password_file is not None:
            password = certops.read_password(key_password_env, key_password_file, "key password")
        subject = CsrSubject(country, state, locality, organization, unit, email)
        return certops.make_request(
            config, subject, out_key=out_key, out_csr=out_csr, key=key.value, key_password=password, force=force
        )

    done = _run(run)
    typer.echo(f"CN = {done.cn} (system.fqdn: the certificate's name must be the relay's FQDN)")
    typer.echo(f"wrote {done.key_file} (private key, mode 0600{', encrypted' if done.encrypted else ''})")
    typer.echo(f"wrote {done.csr_file} (send this to your CA; keep the key and its password safe)")


@cert_app.command("import-pfx")
def import_pfx(
    file: Path = typer.Argument(..., help="The PKCS#12 (.pfx/.p12) file: key, certificate and chain"),
    config: Path = CONFIG_ARG,
    password_env: str | None = typer.Option(None, "--password-env", help="Environment variable with the password"),
    password_file: Path | None = typer.Option(None, "--password-file", help="File with the password"),
    allow_name_mismatch: bool = typer.Option(
        False, "--allow-name-mismatch", help="Skip this command's CN/SAN = system.fqdn check"
    ),
) -> None:
    """Import a CA-issued PFX: copy it to secrets/relay.pfx and point tls.certificate at it.

    Example: sealrelay cert import-pfx certificate.pfx relay.yaml --password-env SEAL_PFX_PASSWORD
    """
    from engine.certificates import ops as certops

    done = _run(
        lambda: certops.import_pfx(
            file,
            config,
            password_env=password_env,
            password_file=password_file,
            allow_name_mismatch=allow_name_mismatch,
        )
    )
    _show_replaced(done)
    typer.echo("run `sealrelay plan` to review the change and `sealrelay apply` to make it live")


# -- views ---------------------------------------------------------------------------------


def _run(call: Callable[[], T]) -> T:
    """Run a core call; a refusal is printed (with any config diagnostics) and exits 1, or 65
    when the config is invalid."""
    try:
        return call()
    except CertOpsError as exc:
        if exc.diagnostics:
            sys.stderr.write(render_text(exc.diagnostics) + "\n")
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(Exit.DATAERR if has_errors(exc.diagnostics) else Exit.FAILED) from None


def _show_replaced(done: Replaced) -> None:
    old = done.old_fingerprint or f"none ({done.old_problem})"
    typer.echo(f"old certificate: {old}")
    typer.echo(f"new certificate: {done.new.fingerprint_sha256}")
    typer.echo(
        f"  CN {done.new.subject_cn}, {done.new.key_type} {done.new.key_size}, until {done.new.not_after:%Y-%m-%d}"
    )
    typer.echo(f"  chain: {done.chain_length} certificate{'s' if done.chain_length != 1 else ''}")
    for warning in done.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"written: {', '.join(map(str, done.files))}")
    if done.config_file:
        typer.echo(f"rewrote tls.certificate ({done.kind}) in {done.config_file}")


def _status(report: CertReport) -> tuple[str, str | None]:
    info = report.info
    if report.expired:
        return "error", f"expired {-info.days_left} days ago ({info.not_after:%Y-%m-%d})"
    if report.not_yet_valid:
        return "error", f"not valid before {info.not_before:%Y-%m-%d %H:%M} UTC"
    if report.expiring_soon:
        return "warning", f"expires in {info.days_left} days: renew it"
    return "ok", None


def _show_report(report: CertReport) -> None:
    info = report.info
    level, problem = _status(report)
    match = "yes" if not report.name_problems else "NO"
    rows = [
        ("source", f"{report.kind} ({', '.join(map(str, report.files))})"),
        ("subject CN", info.subject_cn or "(none)"),
        ("SANs", ", ".join(info.sans) or "(none)"),
        ("issuer", info.issuer),
        ("valid", f"{info.not_before:%Y-%m-%d %H:%M} to {info.not_after:%Y-%m-%d %H:%M} UTC"),
        ("days left", str(info.days_left)),
        ("key", f"{info.key_type} {info.key_size}"),
        ("SHA-256", info.fingerprint_sha256),
        ("self-signed", "yes" if info.self_signed else "no"),
        ("chain", f"{len(report.chain)} ({' <- '.join(report.chain)})"),
        ("matches fqdn", f"{match} ({report.fqdn})"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        typer.echo(f"{label.ljust(width)}  {value}")
    if problem:
        typer.echo(f"{level}: {problem}", err=True)
    for name_problem in report.name_problems:
        typer.echo(f"error: {name_problem}", err=True)


def _report_json(report: CertReport) -> dict:
    info = report.info
    level, problem = _status(report)
    return {
        "source": report.kind,
        "files": [str(f) for f in report.files],
        "subject_cn": info.subject_cn,
        "sans": list(info.sans),
        "issuer": info.issuer,
        "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(),
        "days_left": info.days_left,
        "validity": {"status": level, "message": problem},
        "key_type": info.key_type,
        "key_size": info.key_size,
        "fingerprint_sha256": info.fingerprint_sha256,
        "self_signed": info.self_signed,
        "chain_length": len(report.chain),
        "chain": list(report.chain),
        "fqdn": report.fqdn,
        "matches_fqdn": not report.name_problems,
        "name_problems": list(report.name_problems),
        "ok": report.ok,
    }
