"""Shared test helpers: paths of the repository's examples, schemas and golden files, and
`require` for tests that need something from the machine (a tool, hyperscan, a tmpfs, IPv6)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
GOLDEN = Path(__file__).resolve().parent / "golden"


def require(condition: object, reason: str) -> None:
    """Skip the test unless `condition` holds; under CI (`CI=true`) fail it instead.

    CI installs everything the suite needs (scripts/test): there a missing tool is a broken
    machine, and a skip would hide that the feature went untested.
    """
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run in CI)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def ca():
    """A test certificate authority (trustme) shared by the TLS tests."""
    import trustme

    return trustme.CA()


from tests.dnssec import validating_resolver  # noqa: E402,F401  (a fixture: a DNSSEC-validating unbound on loopback)
from tests.dnsserver import dns_server  # noqa: E402,F401  (a fixture: a DNS server on loopback)
