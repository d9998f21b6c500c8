"""Durations and sizes: parsed once, here, and printed back in one canonical form.

A config says `retry_interval: 15m` or `message_size_limit: 50MB`. The models hold a
`Duration` (whole seconds) or a `ByteSize` (bytes); both are ints, so the relay does
arithmetic on them directly, and both print back as the canonical text, so the admin API
and `plan` show what the admin wrote (normalised: `90m` stays `90m`, `3600s` becomes `1h`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator, WithJsonSchema

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "KIB": 1024,
    "MIB": 1024**2,
    "GIB": 1024**3,
}
DURATION_PATTERN = r"^[0-9]+(s|m|h|d|w)$"
SIZE_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*([kKmMgG]i?[bB]|[bB])$"
_DURATION_RE = re.compile(DURATION_PATTERN)
_SIZE_RE = re.compile(SIZE_PATTERN)


class Duration(int):
    """A span of time in whole seconds that prints as `15m`, `4h`, `5d`."""

    def __str__(self) -> str:
        seconds = int(self)
        for unit in ("w", "d", "h", "m"):
            factor = _DURATION_UNITS[unit]
            if seconds and seconds % factor == 0:
                return f"{seconds // factor}{unit}"
        return f"{seconds}s"

    def __repr__(self) -> str:
        return f"Duration({self})"


class ByteSize(int):
    """A size in bytes that prints as `50MB` (decimal units) or `5MiB` (binary units)."""

    def __str__(self) -> str:
        size = int(self)
        for unit in ("GB", "GIB", "MB", "MIB", "KB", "KIB"):
            factor = _SIZE_UNITS[unit]
            if size and size % factor == 0:
                return f"{size // factor}{unit.replace('I', 'i')}"
        return f"{size}B"

    def __repr__(self) -> str:
        return f"ByteSize({self})"


def parse_duration(value: Any) -> Duration:
    """`15m` -> 900 seconds. Raises ValueError with the accepted forms."""
    if isinstance(value, Duration):
        return value
    if isinstance(value, str) and _DURATION_RE.match(value.strip()):
        text = value.strip()
        return Duration(int(text[:-1]) * _DURATION_UNITS[text[-1]])
    raise ValueError(f"{value!r} is not a duration: write a number and a unit, like 30s, 15m, 4h, 5d or 1w")


def parse_size(value: Any) -> ByteSize:
    """`50MB` -> 50,000,000 bytes, `5MiB` -> 5,242,880. Raises ValueError with the forms."""
    if isinstance(value, ByteSize):
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value.strip())
        if match:
            unit = match.group(2).upper()
            number = float(value.strip()[: -len(unit)].strip())
            return ByteSize(int(number * _SIZE_UNITS[unit]))
    raise ValueError(f"{value!r} is not a size: write a number and a unit, like 512KB, 50MB or 5MiB")


DurationField = Annotated[
    Duration,
    PlainValidator(parse_duration),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN}),
]
SizeField = Annotated[
    ByteSize,
    PlainValidator(parse_size),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": SIZE_PATTERN}),
]
