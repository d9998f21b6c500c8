"""The fleet token map: which admin token each relay takes, by reference, never by value.

Each relay makes its own admin token (`<data_dir>/admin.token`), so one `$SEALRELAY_TOKEN`
cannot reach a fleet. The map, given by `--tokens FILE` or `$SEALRELAY_TOKENS`, names each
relay's admin API and where its token is:

    # tokens.yaml
    relays:
      - name: relay-0
        url: http://relay-0.relay:8025
        token: {file: secrets/relay-0.token}   # relative to this file's directory
      - name: relay-1
        url: http://relay-1.relay:8025
        token: {env: RELAY_1_TOKEN}

A token is only ever a reference, resolved at the moment of use by the config's own
resolver (engine.config.secrets); a literal is refused, so the map can be committed beside
the config. `--relay relay-0` names an entry, `--relay URL` finds its entry by URL, and a
relay without an entry takes its token as before ($SEALRELAY_TOKEN, --token-file,
<data_dir>/admin.token). A map that cannot be read is a located error (exit 78).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path as FsPath

from pydantic import Field, ValidationError

from engine.config.diagnostics import Diagnostic, LocatedError, error, has_errors, locate
from engine.config.model.base import NAME_PATTERN, EnvSecret, FileSecret, Model, Secret
from engine.config.secrets import SecretError, describe, resolve
from engine.config.source import Mark, load_path

ENV = "SEALRELAY_TOKENS"
LITERAL = "a token is written here only as a reference: {env: NAME} or {file: path}, never the token itself"


class Entry(Model):
    name: str | None = Field(None, pattern=NAME_PATTERN)
    url: str
    token: Secret


class TokenMapFile(Model):
    relays: list[Entry]


class TokenMapError(LocatedError):
    """The token map cannot be used; `diagnostics` are located at its file:line:col."""


class UnknownRelay(ValueError):
    """A `--relay` that is neither a URL nor a name in the token map (a usage mistake)."""


@dataclass(frozen=True)
class Relay:
    """One relay a command talks to: its admin URL, its name in the map, its token's reference."""

    url: str
    name: str | None = None
    ref: EnvSecret | FileSecret | None = None
    base_dir: FsPath = FsPath(".")
    where: Mark | None = None  # the entry in the token map

    @property
    def label(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url

    @property
    def token_source(self) -> str:
        """Where its token comes from, for a message: never the token."""
        if self.ref is None:
            return "its token: not in a token map"
        return f"its token: {describe(self.ref)}, token map {self.where}"

    def says(self, message: str) -> str:
        """`message` about this relay: prefixed with its name when it has one (a URL is in the
        admin client's own messages already)."""
        return f"{self.label}: {message}" if self.name else message

    def token(self, token_file: FsPath | None, data_dir: FsPath | None) -> str:
        """Its admin token: the map's reference, else the usual places (client.token_from)."""
        from engine.admin.client import TokenNotFound, token_from

        if self.ref is None:
            return token_from(token_file, data_dir)
        try:
            return resolve(self.ref, self.base_dir)
        except SecretError as exc:
            raise TokenNotFound(f"no admin token: {exc} ({self.token_source})") from None


@dataclass(frozen=True)
class TokenMap:
    relays: tuple[Relay, ...]
    path: FsPath

    def find(self, spec: str) -> Relay:
        """The relay `spec` names: an entry's name, else a URL (with its entry, if any)."""
        for relay in self.relays:
            if relay.name == spec:
                return relay
        if not _is_url(spec):
            names = ", ".join(r.name for r in self.relays if r.name) or "none"
            raise UnknownRelay(f"--relay {spec}: not a URL, and no relay of that name in {self.path} (names: {names})")
        url = normalize(spec)
        return next((r for r in self.relays if r.url == url), Relay(url))


NO_MAP = TokenMap((), FsPath("(no token map)"))


def given(option: FsPath | None, environ: dict[str, str] | None = None) -> FsPath | None:
    """The token map's path: `--tokens`, else `$SEALRELAY_TOKENS`, else none."""
    env = os.environ if environ is None else environ
    if option is not None:
        return option
    value = env.get(ENV, "").strip()
    return FsPath(value) if value else None


def load(path: FsPath | None) -> TokenMap:
    """Read and check the token map at `path` (none: an empty map). Raises TokenMapError."""
    if path is None:
        return NO_MAP
    loaded = load_path(path, nodes=False)
    diags = list(loaded.diagnostics)
    entries: list[Entry] = []
    if loaded.data is not None and not has_errors(diags):
        diags.extend(_literal_tokens(loaded.data))
        if not diags:
            try:
                entries = TokenMapFile.model_validate(loaded.data).relays
            except ValidationError as exc:
                diags.extend(error(_path(item["loc"]), item["msg"]) for item in exc.errors())
    diags.extend(_duplicates(entries))
    if has_errors(diags):
        raise TokenMapError(f"{path}: the token map cannot be used", locate(diags, loaded.source))
    base = path.parent
    relays = tuple(
        Relay(normalize(e.url), e.name, e.token, base, loaded.source.find(("relays", i, "token")))
        for i, e in enumerate(entries)
    )
    return TokenMap(relays, path)


def relays(specs: list[str] | None, default_url: str | None, token_map: TokenMap) -> list[Relay]:
    """The relays a command addresses: each `--relay` (a URL or a name), else the default URL."""
    if specs:
        return [token_map.find(spec) for spec in specs]
    return [token_map.find(default_url)] if default_url else []


def normalize(url: str) -> str:
    """One spelling per admin API: a scheme (http:// when none), no trailing slash."""
    url = url.strip().rstrip("/")
    return url if "://" in url else "http://" + url


def _is_url(spec: str) -> bool:
    return "://" in spec or ":" in spec or "/" in spec


def _literal_tokens(data: object) -> list[Diagnostic]:
    """Tokens written as values: refused before the models, whose messages could echo them."""
    relays = data.get("relays") if isinstance(data, dict) else None
    if not isinstance(relays, list):
        return []
    return [
        error(("relays", i, "token"), LITERAL, "put the token in a file (mode 0600) or an environment variable")
        for i, entry in enumerate(relays)
        if isinstance(entry, dict) and isinstance(entry.get("token"), (str, int, float))
    ]


def _duplicates(entries: list[Entry]) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(entries):
        for field, value in (("name", entry.name), ("url", normalize(entry.url))):
            if value is None:
                continue
            if (field, value) in seen:
                first = seen[(field, value)]
                diags.append(
                    error(("relays", i, field), f"{field} {value} is given twice", see=(("relays", first, field),))
                )
            else:
                seen[(field, value)] = i
    return diags


def _path(loc: tuple) -> tuple:
    """Pydantic's location without the union tags it inserts (`env`, `file` on a secret)."""
    out = list(loc)
    if len(out) >= 4 and out[0] == "relays" and out[2] == "token" and out[3] in ("env", "file"):
        del out[3]
    return tuple(out)


def targets_or_exit(relay: list[str] | None, default_url: str | None, tokens_file: FsPath | None) -> list[Relay]:
    """The relays a fleet command (apply, status) addresses. A token map that cannot be used
    ends the command with its diagnostics (78), a `--relay` name it does not know with one
    line (64)."""
    import typer

    from engine.cli.exits import Exit

    try:
        return relays(relay, default_url, load(given(tokens_file)))
    except TokenMapError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(Exit.CONFIG) from None
    except UnknownRelay as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(Exit.USAGE) from None
