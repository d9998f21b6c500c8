"""What every config model shares: frozen, no unknown keys, documented fields, secrets.

The models are the single source of truth for the config's shape: the JSON Schemas in
`schemas/` are generated from them, and every field carries a description and examples
so editors can show them. Models are pure data: no I/O, no defaults read from the
environment. Secrets are never values, only references (`{env: NAME}` or `{file: path}`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
)

HOSTNAME_PATTERN = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
DOMAIN_PATTERN = (
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
ENV_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Model(BaseModel):
    """Base of every config model: immutable, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def F(default: Any = ..., description: str = "", *examples: Any, **kwargs: Any) -> Any:
    """A documented field: `F(default, "what it means", example, ...)`."""
    return Field(default, description=description, examples=list(examples), **kwargs)


def _check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _check_network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            net = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set: did you mean {net}?") from None
        raise ValueError(f"{value!r} is not an IP address or CIDR network") from None
    return value


def _check_host(value: str) -> str:
    if is_ip(value) or re.match(HOSTNAME_PATTERN, value):
        return value
    raise ValueError(f"{value!r} is neither a host name nor an IP address")


IPAddress = Annotated[str, AfterValidator(_check_ip)]
HostOrIP = Annotated[str, AfterValidator(_check_host)]
Network = Annotated[str, AfterValidator(_check_network)]
Hostname = Annotated[str, Field(pattern=HOSTNAME_PATTERN, max_length=253)]
DomainPattern = Annotated[str, Field(pattern=DOMAIN_PATTERN)]
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=100)]


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class EnvSecret(Model):
    env: str = F(
        ...,
        "Name of the environment variable that holds the secret",
        "SEAL_PFX_PASSWORD",
        pattern=ENV_PATTERN,
    )


class FileSecret(Model):
    file: str = F(..., "Path of a file that holds the secret (relative to the config)", "secrets/pfx-password")


def _secret_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return "env" if "env" in value else "file" if "file" in value else None
    if isinstance(value, BaseModel):
        return "env" if isinstance(value, EnvSecret) else "file"
    return None


_SECRET_SCHEMA = {
    "x-secret": True,
    "description": "A secret, by reference only: {env: NAME} or {file: path}. Never a literal value.",
    "examples": [{"env": "SEAL_PFX_PASSWORD"}, {"file": "secrets/pfx-password"}],
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "env": {
                    "type": "string",
                    "pattern": ENV_PATTERN,
                    "description": "Name of the environment variable that holds the secret",
                    "examples": ["SEAL_PFX_PASSWORD"],
                }
            },
            "required": ["env"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "file": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Path of a file that holds the secret (relative to the config)",
                    "examples": ["secrets/pfx-password"],
                }
            },
            "required": ["file"],
            "additionalProperties": False,
        },
    ],
}

Secret = Annotated[
    Annotated[EnvSecret, Tag("env")] | Annotated[FileSecret, Tag("file")],
    Discriminator(_secret_kind),
    WithJsonSchema(_SECRET_SCHEMA),
]


def by_key(*kinds: str):
    """A discriminator for unions whose variants differ by which key they hold."""

    by_model: dict[type, str | None] = {}  # a model's variant is its class's: asked once per class

    def pick(value: Any) -> str | None:
        if isinstance(value, dict):
            return next((k for k in kinds if k in value), None)
        if isinstance(value, BaseModel):
            cls = type(value)
            if cls not in by_model:  # every dump asks for each value: thousands per large config
                fields = cls.model_fields
                by_model[cls] = next((k for k in kinds if k in fields or k.rstrip("_") + "_" in fields), None)
            return by_model[cls]
        return None

    return Discriminator(pick)


HEADER_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")
