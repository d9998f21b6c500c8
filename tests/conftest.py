"""Shared test helpers: paths of the repository's examples, schemas and golden files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ca():
    """A test certificate authority (trustme) shared by the TLS tests."""
    import trustme

    return trustme.CA()


from tests.dnsserver import dns_server  # noqa: E402,F401  (a fixture: a DNS server on loopback)
