"""Durations and sizes are parsed in one place and print back canonically."""

from __future__ import annotations

import pytest

from engine.config.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds", "canonical"),
    [
        ("30s", 30, "30s"),
        ("15m", 900, "15m"),
        ("90m", 5400, "90m"),
        ("3600s", 3600, "1h"),
        ("5d", 432000, "5d"),
        ("2w", 1209600, "2w"),
    ],
)
def test_durations(text: str, seconds: int, canonical: str) -> None:
    value = parse_duration(text)
    assert value == seconds and str(value) == canonical


@pytest.mark.parametrize(
    ("text", "size", "canonical"),
    [
        ("50MB", 50_000_000, "50MB"),
        ("5MiB", 5 * 1024**2, "5MiB"),
        ("512KB", 512_000, "512KB"),
        ("1.5GB", 1_500_000_000, "1500MB"),
        ("10B", 10, "10B"),
    ],
)
def test_sizes(text: str, size: int, canonical: str) -> None:
    value = parse_size(text)
    assert value == size and str(value) == canonical


@pytest.mark.parametrize("bad", ["15", "15 minutes", "m", "-5m", 15, None])
def test_bad_durations_say_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match="like 30s, 15m"):
        parse_duration(bad)


@pytest.mark.parametrize("bad", ["50", "50 megs", "MB", 50])
def test_bad_sizes_say_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError, match="like 512KB"):
        parse_size(bad)
