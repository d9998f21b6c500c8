"""Certificate operations behind `sealrelay cert`: show, generate, request and import.

The relay's active certificate is named by the config's `tls.certificate`: for `self_signed`
it is the pair `<data_dir>/tls/{cert,key}.pem` (what `ensure_certificate` writes at first
start), for `pfx` and `pem` the files the config names. A certificate from a CA is part of
the desired state, so importing one rewrites `tls.certificate` in the YAML (ruamel
round-trip: comments, order and indentation kept) and the change reaches a running relay
through `plan` and `apply` like any other.

Every change is a transaction: the files it touches are saved first, the rewritten config is
loaded again with every check, and if it is not valid all of them are put back and the
diagnostics returned. Refusals are `CertOpsError`s with a message fit for the admin;
passwords never appear in one.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
from dataclasses import asdict, dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import CommentMark, YAMLError
from ruamel.yaml.tokens import CommentToken

from engine.certificates import store as certs
from engine.certificates.store import CertBundle, CertError, CertInfo
from engine.config.diagnostics import Diagnostic, Severity
from engine.config.load import load_config
from engine.config.model import RelayConfig
from engine.config.model.base import EnvSecret, FileSecret
from engine.config.model.transport import PemSource, PfxSource, SelfSigned, SelfSignedSource
from engine.config.secrets import SecretError, resolve
from engine.config.source import config_files
from engine.fsutil import private_dir, write_atomic

PFX_TARGET = Path("secrets") / "relay.pfx"
EXPIRY_WARNING_DAYS = 30

# certs' atomic writer (temporary file, fsync, rename, fsync of the directory).


class CertOpsError(Exception):
    """A refused certificate operation: `message` for the admin, config diagnostics if any."""

    def __init__(self, message: str, diagnostics: list[Diagnostic] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.diagnostics = diagnostics or []


@dataclass(frozen=True)
class Context:
    """A loaded config and where its files are (paths in it are relative to `base_dir`)."""

    path: Path
    base_dir: Path
    config: RelayConfig

    @property
    def fqdn(self) -> str:
        return self.config.system.fqdn

    @property
    def tls_dir(self) -> Path:
        return self.base_dir / self.config.system.data_dir / "tls"

    def kind(self) -> str:
        source = self.config.tls.certificate
        return "pfx" if isinstance(source, PfxSource) else "pem" if isinstance(source, PemSource) else "self_signed"

    def active_files(self) -> tuple[Path, ...]:
        """The files that hold the active certificate."""
        source = self.config.tls.certificate
        if isinstance(source, PfxSource):
            return (self.base_dir / source.pfx.path,)
        if isinstance(source, PemSource):
            return (self.base_dir / source.pem.certificate, self.base_dir / source.pem.key)
        return (self.tls_dir / certs.CERT_FILE, self.tls_dir / certs.KEY_FILE)


@dataclass(frozen=True)
class CertReport:
    """What `cert show` tells about the active certificate."""

    kind: str
    files: tuple[Path, ...]
    fqdn: str
    info: CertInfo
    chain: tuple[str, ...]  # subjects, leaf first, as the relay presents them
    name_problems: tuple[str, ...]
    now: dt.datetime

    @property
    def expired(self) -> bool:
        return self.info.not_after <= self.now

    @property
    def not_yet_valid(self) -> bool:
        return self.info.not_before > self.now

    @property
    def expiring_soon(self) -> bool:
        return not self.expired and self.info.days_left < EXPIRY_WARNING_DAYS

    @property
    def ok(self) -> bool:
        return not (self.expired or self.not_yet_valid or self.name_problems)


@dataclass(frozen=True)
class Replaced:
    """The outcome of `self_signed` or `import_pfx`: what was active, what is now."""

    kind: str
    files: tuple[Path, ...]
    old_fingerprint: str | None
    old_problem: str | None
    new: CertInfo
    chain_length: int
    config_file: Path | None = None  # the YAML file rewritten, if any
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class CsrSubject:
    """The seed's CSR subject fields; the CN is always the relay's FQDN."""

    country: str
    state: str
    locality: str
    organization: str
    organizational_unit: str
    email: str


@dataclass(frozen=True)
class CsrResult:
    cn: str
    key_file: Path
    csr_file: Path
    encrypted: bool


def open_config(path: str | os.PathLike[str]) -> Context:
    """Load the config for a certificate operation.

    The semantic checks are skipped here on purpose: they judge the current certificate,
    and an expired or misnamed one must not stop the admin from seeing or replacing it.
    """
    result = load_config(path, semantic=False)
    if not result.ok or result.config is None:
        raise CertOpsError(f"{path}: the config is invalid; fix it first", result.diagnostics)
    return Context(Path(path), result.base_dir, result.config)


def load_active(ctx: Context) -> CertBundle:
    """Read the active certificate; `CertError` if it is missing or unreadable."""
    source = ctx.config.tls.certificate
    try:
        if isinstance(source, PfxSource):
            data = _read(ctx.active_files()[0], CertError)
            return certs.load_pfx(data, resolve(source.pfx.password, ctx.base_dir))
        if isinstance(source, PemSource):
            cert_file, key_file = ctx.active_files()
            password = resolve(source.pem.key_password, ctx.base_dir) if source.pem.key_password else None
            return certs.load_pem(_read(cert_file, CertError), _read(key_file, CertError), password)
    except SecretError as exc:
        raise CertError(f"cannot read the certificate's password: {exc}") from None
    if not (ctx.tls_dir / certs.CERT_FILE).exists():
        raise CertError(
            f"no certificate in {ctx.tls_dir} yet: the relay generates one at first start, "
            "or run `sealrelay cert self-signed`"
        )
    return certs.load_dir(ctx.tls_dir)


def show(path: str | os.PathLike[str], now: dt.datetime | None = None) -> CertReport:
    """Describe the active certificate of the config at `path`."""
    ctx = open_config(path)
    try:
        bundle = load_active(ctx)
    except CertError as exc:
        raise CertOpsError(str(exc)) from None
    now = now or dt.datetime.now(dt.UTC)
    chain = tuple(c.subject.rfc4514_string() for c in (bundle.leaf, *bundle.chain))
    problems = tuple(bundle.check_fqdn(ctx.fqdn))
    return CertReport(ctx.kind(), ctx.active_files(), ctx.fqdn, bundle.describe(now), chain, problems, now)


def self_signed(
    path: str | os.PathLike[str], *, key: str | None = None, valid_days: int | None = None, switch: bool = False
) -> Replaced:
    """Generate a self-signed certificate for `system.fqdn` and make it the active one.

    It overwrites the pair in `<data_dir>/tls`. A config that uses `pfx` or `pem` is refused
    unless `switch`, which also rewrites `tls.certificate` to `self_signed`.
    """
    ctx = open_config(path)
    source = ctx.config.tls.certificate
    if not isinstance(source, SelfSignedSource) and not switch:
        raise CertOpsError(
            f"this config uses a {ctx.kind()} certificate ({', '.join(map(str, ctx.active_files()))}); "
            "a self-signed one would not be presented. Pass --switch to change tls.certificate to self_signed"
        )
    defaults = source.self_signed if isinstance(source, SelfSignedSource) else SelfSigned()
    key, valid_days = key or defaults.key, valid_days or defaults.valid_days
    old_fingerprint, old_problem = _old(ctx)
    try:
        bundle = certs.make_self_signed(ctx.fqdn, key, valid_days)
    except CertError as exc:
        raise CertOpsError(str(exc)) from None
    undo = _Undo()
    cert_file, key_file = ctx.tls_dir / certs.CERT_FILE, ctx.tls_dir / certs.KEY_FILE
    undo.write(key_file, bundle.key_pem(), 0o600)  # key first, as certs.CertBundle.to_pem_files does
    undo.write(cert_file, bundle.cert_pem(), 0o644)
    rewritten = None
    if switch and not isinstance(source, SelfSignedSource):
        new_source = {"self_signed": {"key": key, "valid_days": valid_days}}
        rewritten = _rewrite_and_check(ctx, new_source, undo)
    return Replaced("self_signed", (cert_file, key_file), old_fingerprint, old_problem, bundle.describe(), 1, rewritten)


def make_request(
    path: str | os.PathLike[str],
    subject: CsrSubject,
    *,
    out_key: Path,
    out_csr: Path,
    key: str = "rsa-2048",
    key_password: str | None = None,
    force: bool = False,
) -> CsrResult:
    """Write a new private key (mode 0600) and a CSR for `system.fqdn`, to send to a CA."""
    ctx = open_config(path)
    if out_key.resolve() == out_csr.resolve():
        raise CertOpsError("--out-key and --out-csr name the same file")
    existing = [str(p) for p in (out_key, out_csr) if p.exists()]
    if existing and not force:
        raise CertOpsError(f"{' and '.join(existing)} already exist: refusing to overwrite (use --force)")
    try:
        key_pem, csr_pem = certs.make_csr(ctx.fqdn, **asdict(subject), key=key, key_password=key_password)
    except CertError as exc:
        raise CertOpsError(str(exc)) from None
    for file in (out_key, out_csr):
        private_dir(file.parent)
    write_atomic(out_key, key_pem, 0o600)
    write_atomic(out_csr, csr_pem, 0o644)
    return CsrResult(ctx.fqdn.lower().rstrip("."), out_key, out_csr, key_password is not None)


def read_password(env: str | None, file: Path | None, what: str) -> str:
    """The password named by exactly one of `--…-env VAR` / `--…-file F`."""
    if (env is None) == (file is None):
        raise CertOpsError(f"give the {what} with exactly one of --password-env VAR or --password-file FILE")
    try:
        ref = EnvSecret(env=env) if env is not None else FileSecret(file=str(file))
        return resolve(ref, Path.cwd())
    except (SecretError, ValueError) as exc:
        raise CertOpsError(f"cannot read the {what}: {exc}") from None


def import_pfx(
    pfx_file: Path,
    path: str | os.PathLike[str],
    *,
    password_env: str | None = None,
    password_file: Path | None = None,
    allow_name_mismatch: bool = False,
) -> Replaced:
    """Make a CA-issued PKCS#12 file the relay's certificate, through the config.

    The PFX is read and checked before anything is written (password, key, name, dates);
    then it is copied to `<config dir>/secrets/relay.pfx` (0600) and `tls.certificate` is
    rewritten to point at it, with the password by reference (`{env: VAR}` or `{file: F}`).
    """
    ctx = open_config(path)
    password = read_password(password_env, password_file, "PFX password")
    data = _read(pfx_file)
    try:
        bundle = certs.load_pfx(data, password)
    except CertError as exc:
        raise CertOpsError(f"{pfx_file}: {exc}") from None
    info = bundle.describe()
    if info.not_after <= dt.datetime.now(dt.UTC):
        raise CertOpsError(f"{pfx_file}: the certificate expired on {info.not_after:%Y-%m-%d}; nothing was changed")
    problems = bundle.check_fqdn(ctx.fqdn)
    if problems and not allow_name_mismatch:
        raise CertOpsError(
            f"{pfx_file}: the certificate is not for {ctx.fqdn}: {'; '.join(problems)}. Nothing was changed "
            "(issue it for system.fqdn, or pass --allow-name-mismatch)"
        )
    if password_env is not None:
        ref: dict[str, str] = {"env": password_env}
    else:
        ref = {"file": _relative_to(Path(password_file).resolve(), ctx.base_dir.resolve())}
    old_fingerprint, old_problem = _old(ctx)
    target = ctx.base_dir / PFX_TARGET
    undo = _Undo()
    undo.write(target, data, 0o600, dir_mode=0o700)
    new_source = {"pfx": {"path": PFX_TARGET.as_posix(), "password": ref}}
    rewritten = _rewrite_and_check(ctx, new_source, undo)
    return Replaced(
        "pfx", (target,), old_fingerprint, old_problem, info, 1 + len(bundle.chain), rewritten, tuple(problems)
    )


# -- transactions --------------------------------------------------------------------------


@dataclass
class _Undo:
    """The files (and directories) a change touched, as they were: `rollback` puts them back."""

    saved: list[tuple[Path, bytes | None, int]] = field(default_factory=list)
    made_dirs: list[Path] = field(default_factory=list)

    def write(self, path: Path, data: bytes, mode: int, dir_mode: int = 0o755) -> None:
        missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
        for directory in reversed(missing):
            directory.mkdir(mode=dir_mode)
            self.made_dirs.append(directory)
        if not any(p == path for p, _, _ in self.saved):
            old = path.read_bytes() if path.exists() else None
            self.saved.append((path, old, path.stat().st_mode & 0o777 if old is not None else mode))
        write_atomic(path, data, mode)

    def rollback(self) -> None:
        for path, old, mode in reversed(self.saved):
            if old is None:
                path.unlink(missing_ok=True)
            else:
                write_atomic(path, old, mode)
        for directory in reversed(self.made_dirs):
            directory.rmdir()


def _rewrite_and_check(ctx: Context, new_source: dict[str, Any], undo: _Undo) -> Path:
    """Set `tls.certificate`, then load the config with every check; roll back if invalid."""
    try:
        target = _tls_file(ctx.path)
        text = target.read_text(encoding="utf-8")
        undo.write(target, set_certificate(text, new_source).encode("utf-8"), target.stat().st_mode & 0o777)
    except (OSError, YAMLError, CertOpsError) as exc:
        undo.rollback()
        raise CertOpsError(getattr(exc, "message", None) or f"cannot rewrite the config: {exc}") from None
    result = load_config(ctx.path)
    if not result.ok:
        undo.rollback()
        errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
        raise CertOpsError(
            f"the rewritten config is not valid, so every file was put back as it was ({target})", errors
        )
    return target


def _tls_file(path: Path) -> Path:
    """The file to rewrite: the one whose `tls` sets `certificate`, else has `tls`, else `version`."""
    files = config_files(path)
    docs = [(f, _yaml().load(f.read_text(encoding="utf-8"))) for f in files]
    docs = [(f, d) for f, d in docs if isinstance(d, dict)]
    for test in (
        lambda d: isinstance(d.get("tls"), dict) and "certificate" in d["tls"],
        lambda d: "tls" in d,
        lambda d: "version" in d,
    ):
        for file, doc in docs:
            if test(doc):
                return file
    raise CertOpsError(f"{path}: no config file has a `tls` or `version` key to rewrite")


# -- YAML round trip -----------------------------------------------------------------------


def _yaml(indent: tuple[int, int, int] = (2, 4, 2)) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap the admin's long lines
    yaml.indent(mapping=indent[0], sequence=indent[1], offset=indent[2])
    return yaml


def _dump(yaml: YAML, doc: Any) -> str:
    out = StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def set_certificate(text: str, source: dict[str, Any]) -> str:
    """`text` with `tls.certificate` replaced by `source`; everything else kept as written.

    ruamel re-indents what it dumps, so the indentation is the one (of the common styles)
    that reproduces the file best; comments that trailed the old value trail the new one, and
    an old value in flow style (`{...}`) is replaced by one in flow style.
    """
    doc = _yaml().load(text)
    if not isinstance(doc, CommentedMap):
        raise CertOpsError("the config file is not a YAML mapping")
    styles = [(2, 4, 2), (2, 2, 0), (4, 4, 0), (4, 6, 4), (4, 4, 2)]
    yaml = max((_yaml(s) for s in styles), key=lambda y: _similarity(text, _dump(y, doc)))
    doc = yaml.load(text)
    new = _commented(source)
    tls = doc.get("tls")
    if tls is None or not isinstance(tls, CommentedMap):
        if tls is not None:
            raise CertOpsError("`tls` in the config is not a mapping")
        doc["tls"] = CommentedMap(certificate=new)
    elif "certificate" not in tls:
        tls["certificate"] = new
    else:
        _replace_keeping_comments(tls, "certificate", new)
    return _dump(yaml, doc)


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.splitlines(), b.splitlines(), autojunk=False).ratio()


def _commented(value: Any) -> Any:
    if isinstance(value, dict):
        return CommentedMap((k, _commented(v)) for k, v in value.items())
    return value


def _replace_keeping_comments(parent: CommentedMap, key: str, new: CommentedMap) -> None:
    old = parent[key]
    if isinstance(old, CommentedMap | CommentedSeq) and old.fa.flow_style():
        _set_flow(new)  # the comment after a flow value lives on the parent: it stays
        parent[key] = new
        return
    tail = None
    found = _last_item(old)
    if found is not None:
        node, last = found
        entry = node.ca.items.get(last)
        token = entry[_slot(node)] if entry else None
        if token is not None and "\n" in token.value:
            tail = token.value[token.value.index("\n") :]  # full lines after the old value
    parent[key] = new
    if tail is not None and (found := _last_item(new)) is not None:
        node, last = found
        node.ca.items.setdefault(last, [None, None, None, None])[_slot(node)] = CommentToken(tail, CommentMark(0), None)


def _last_item(node: Any) -> tuple[Any, Any] | None:
    """The innermost last (container, key) in block style: where a trailing comment hangs."""
    while isinstance(node, CommentedMap | CommentedSeq) and len(node):
        last = next(reversed(node)) if isinstance(node, CommentedMap) else len(node) - 1
        value = node[last]
        if isinstance(value, CommentedMap | CommentedSeq) and len(value) and not value.fa.flow_style():
            node = value
            continue
        return node, last
    return None


def _slot(node: Any) -> int:
    return 2 if isinstance(node, CommentedMap) else 0


def _set_flow(node: Any) -> None:
    if isinstance(node, CommentedMap):
        node.fa.set_flow_style()
        for value in node.values():
            _set_flow(value)


# -- helpers -------------------------------------------------------------------------------


def _old(ctx: Context) -> tuple[str | None, str | None]:
    """The active certificate's fingerprint, or why there is none (for the before/after)."""
    try:
        return load_active(ctx).describe().fingerprint_sha256, None
    except CertError as exc:
        return None, str(exc)


def _read(path: Path, error: type[Exception] = CertOpsError) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror}") from None


def _relative_to(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies inside it (configs move), else absolute."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)
