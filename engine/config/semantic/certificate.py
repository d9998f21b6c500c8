"""The relay's certificate matches its name, and every secret is usable."""

from __future__ import annotations

from collections.abc import Iterator

from engine.config.diagnostics import Diagnostic, Path, error, warning
from engine.config.model.base import EnvSecret, FileSecret
from engine.config.model.transport import PemSource, PfxSource
from engine.config.secrets import MAX_PASSWORD_LENGTH, SecretError, resolve
from engine.config.semantic import Context, check


def _secret(ctx: Context, ref: EnvSecret | FileSecret, path: Path) -> tuple[str | None, list[Diagnostic]]:
    """Resolve a secret for checking; an unavailable one is a warning (CI has no secrets)."""
    try:
        value = resolve(ref, ctx.base_dir)
    except SecretError as exc:
        return None, [warning(path, f"cannot check this secret: {exc}", "set it where the relay runs")]
    if len(value) > MAX_PASSWORD_LENGTH:
        return None, [
            error(
                path,
                f"password is {len(value)} characters long: at most {MAX_PASSWORD_LENGTH} are allowed",
            )
        ]
    return value, []


@check
def passwords(ctx: Context) -> Iterator[Diagnostic]:
    if not ctx.check_files:
        return
    c = ctx.config
    refs: list[tuple[Path, object]] = []
    if c.encryption.third_party and c.encryption.third_party.auth:
        refs.append(
            (
                ("encryption", "third_party", "auth", "password"),
                c.encryption.third_party.auth.password,
            )
        )
    for i, route in enumerate(c.routes):
        if route.auth:
            refs.append((("routes", i, "auth", "password"), route.auth.password))
    for path, ref in refs:
        yield from _secret(ctx, ref, path)[1]


@check
def certificate(ctx: Context) -> Iterator[Diagnostic]:
    from engine.certificates.store import CertError, load_pem, load_pfx

    source = ctx.config.tls.certificate
    fqdn = ctx.config.system.fqdn
    if ctx.config.tls.ca_bundle != "system" and ctx.check_files and not ctx.file(ctx.config.tls.ca_bundle).is_file():
        yield error(
            ("tls", "ca_bundle"),
            f"CA bundle {ctx.config.tls.ca_bundle} does not exist",
            "give a PEM file, or `system`",
        )
    if not ctx.check_files or not isinstance(source, PfxSource | PemSource):
        return
    if isinstance(source, PfxSource):
        base: Path = ("tls", "certificate", "pfx")
        file = ctx.file(source.pfx.path)
        if not file.is_file():
            yield error((*base, "path"), f"PFX file {source.pfx.path} does not exist")
            return
        password, diags = _secret(ctx, source.pfx.password, (*base, "password"))
        yield from diags
        if password is None:
            return
        try:
            bundle = load_pfx(file.read_bytes(), password)
        except CertError as exc:
            yield error((*base, "path"), str(exc))
            return
        where = (*base, "path")
    else:
        base = ("tls", "certificate", "pem")
        cert_file, key_file = ctx.file(source.pem.certificate), ctx.file(source.pem.key)
        missing = [(name, f) for name, f in (("certificate", cert_file), ("key", key_file)) if not f.is_file()]
        for name, f in missing:
            yield error((*base, name), f"{name} file {f} does not exist")
        if missing:
            return
        key_password = None
        if source.pem.key_password is not None:
            key_password, diags = _secret(ctx, source.pem.key_password, (*base, "key_password"))
            yield from diags
            if key_password is None:
                return
        try:
            bundle = load_pem(cert_file.read_bytes(), key_file.read_bytes(), key_password)
        except CertError as exc:
            yield error((*base, "certificate"), str(exc))
            return
        where = (*base, "certificate")
    for problem in bundle.check_fqdn(fqdn):
        yield error(where, problem, f"issue the certificate for {fqdn}, or change system.fqdn")
    info = bundle.describe()
    if info.days_left < 0:
        yield error(where, f"the certificate expired {-info.days_left} days ago ({info.not_after:%Y-%m-%d})")
    elif info.days_left < 30:
        yield warning(
            where,
            f"the certificate expires in {info.days_left} days ({info.not_after:%Y-%m-%d})",
            "renew it",
        )
