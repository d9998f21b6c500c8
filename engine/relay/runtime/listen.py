"""Where a `serve` process binds: the config's addresses, unless `--listen` moves one.

`serve --listen NAME=ADDR:PORT` (repeatable; or `SEALRELAY_LISTEN="NAME=ADDR:PORT ..."`)
binds the SMTP listener NAME, or the `admin`, `metrics` or `portal` endpoint, somewhere
else for the life of the process: a quick start on a machine where 2525 or 8025 is taken,
two relays side by side on one host. The config is not changed: its hash, `plan`, `apply`
and the audit log see the committed file, and an apply that moves a listener moves only
what no override pins. Overrides show at start in the log and in `GET /v1/status`
(`overrides`), so a process never serves, unseen, somewhere its config does not say.

Forms: `smtp=127.0.0.1:2625`, `admin=:18025` or `admin=18025` (keep the address),
`metrics=[::1]:9100`, port 0 for any free port (the log says which), and `ADDR:PORT`
without a name for the config's only SMTP listener.

A port that cannot be bound at start is a `BindError`: one line saying what, where and why.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field

ENDPOINTS = ("admin", "metrics", "portal")
ENV = "SEALRELAY_LISTEN"


class BindError(OSError):
    """A listener or endpoint could not be bound; the message is one line for the operator."""


def bind_error(what: str, address: str, port: int, exc: OSError, hint: str) -> BindError:
    """`the SMTP listener mx cannot listen on 127.0.0.1:2525: address already in use by another
    process (…): <hint>`, one line."""
    reason = (exc.strerror or str(exc)).lower()
    if "in use" in reason:
        reason = f"address already in use by another process (`ss -ltnp 'sport = :{port}'` names it)"
    error = BindError(f"{what} cannot listen on {_join(address, port)}: {reason}: {hint}")
    error.errno = exc.errno
    return error


def _join(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass(frozen=True)
class Overrides:
    """Addresses the process binds instead of the config's, by listener or endpoint name."""

    smtp: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # "": the only listener, until `fit`
    http: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    given: tuple[str, ...] = ()  # as written, for the start line

    def __bool__(self) -> bool:
        return bool(self.smtp or self.http)

    def listener(self, listener) -> tuple[str, int]:
        """Where the SMTP listener binds (a config `Listener`)."""
        address, port = self.smtp.get(listener.name, (None, listener.port))
        return address or listener.address, port

    def endpoint(self, name: str, endpoint) -> tuple[str, int]:
        """Where the HTTP endpoint `name` (admin, metrics, portal; a config `Endpoint`) binds."""
        address, port = self.http.get(name, (None, endpoint.port))
        return address or endpoint.address, port

    def fit(self, config) -> Overrides:
        """These overrides for `config`, `ADDR:PORT` without a name given to its only listener
        (so a listener an apply adds later is not moved too). ValueError when they do not fit."""
        names = [listener.name for listener in config.system.listeners]
        clash = sorted(set(names) & set(ENDPOINTS))
        if clash and set(clash) & (set(self.smtp) | set(self.http)):
            raise ValueError(f"--listen {clash[0]}=…: the config has an SMTP listener named {clash[0]}: rename it")
        smtp = dict(self.smtp)
        if "" in smtp:
            if len(names) != 1:
                listed = ", ".join(names)
                raise ValueError(
                    f"--listen ADDR:PORT without a name needs a config with one SMTP listener: name one of {listed}"
                )
            smtp.setdefault(names[0], smtp[""])
            del smtp[""]
        unknown = sorted(set(smtp) - set(names))
        if unknown:
            raise ValueError(
                f"--listen {unknown[0]}=…: no SMTP listener of that name in the config "
                f"(listeners: {', '.join(names)}; endpoints: {', '.join(ENDPOINTS)})"
            )
        return Overrides(smtp, dict(self.http), self.given)

    def to_json(self) -> dict[str, str]:
        """`{"mx": "127.0.0.1:2625", "admin": ":18025"}` for /v1/status."""
        return {name: _join(address or "", port) for name, (address, port) in {**self.smtp, **self.http}.items()}


def parse(specs: list[str], environ: dict[str, str] | None = None) -> Overrides:
    """The overrides of `--listen` flags, after those of $SEALRELAY_LISTEN (flags win).
    Raises ValueError with the offending spec."""
    env = (environ if environ is not None else os.environ).get(ENV, "")
    smtp: dict[str, tuple[str | None, int]] = {}
    http: dict[str, tuple[str | None, int]] = {}
    given = [*env.replace(",", " ").split(), *specs]
    for spec in given:
        name, where = _split(spec)
        (http if name in ENDPOINTS else smtp)[name] = where
    return Overrides(smtp, http, tuple(given))


def _split(spec: str) -> tuple[str, tuple[str | None, int]]:
    text = spec.strip()
    name, sep, where = text.partition("=")
    if not sep:
        name, where = "", text
        if where.rpartition(":")[0] == "":
            raise ValueError(f"--listen {spec}: write NAME=ADDR:PORT, NAME=PORT or ADDR:PORT")
    if sep and not name:
        raise ValueError(f"--listen {spec}: a name before '=' (an SMTP listener, or admin, metrics, portal)")
    host, colon, port_text = where.rpartition(":")
    if not colon:
        host, port_text = "", where
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--listen {spec}: {port_text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"--listen {spec}: a port is 0 (any free one) to 65535")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"--listen {spec}: {host!r} is not an IP address") from None
    return name, (host or None, port)
