"""Fixtures for the portal's tests: PostgreSQL (`pg_url`, `fresh_pg_url`), a headless Chromium
page (`chromium_path`, `page`) and `screenshots_dir`. The helpers behind them, and
`axe_violations` for accessibility checks, are in tests/portal/infra.py.

Browser tests are plain `def test_...(page)` functions: Playwright's sync API refuses to run
inside a running asyncio loop, so neither they nor their fixtures may be `async`.
"""

from __future__ import annotations

import importlib.util
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require
from tests.portal.infra import CHROMIUM, PgCluster, create_database, drop_database, screenshots_root, start_cluster

TEST_DB = "sealrelay_test"


def _require_psycopg() -> None:
    require(importlib.util.find_spec("psycopg"), "psycopg is not installed (pip install -e '.[test]')")


# ---------------------------------------------------------------------------------------------
# PostgreSQL


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """The session's private PostgreSQL cluster (stopped and deleted at the end)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """URL of the database `sealrelay_test` in the session's cluster, shared by every test that
    asks for it: `postgresql://postgres@127.0.0.1:PORT/sealrelay_test` (trust auth, no password).
    For a database of a test's own, use `fresh_pg_url`."""
    _require_psycopg()
    create_database(pg_cluster.url(), TEST_DB)
    return pg_cluster.url(TEST_DB)


@pytest.fixture
def fresh_pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """URL of a new, empty database `t_<random>` made for this test alone and dropped after it
    (even if the test left connections open)."""
    _require_psycopg()
    name = f"t_{uuid.uuid4().hex[:16]}"
    create_database(pg_cluster.url(), name)
    try:
        yield pg_cluster.url(name)
    finally:
        drop_database(pg_cluster.url(), name)


# ---------------------------------------------------------------------------------------------
# Browser


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Debian's Chromium (the `chromium` package; Playwright never downloads a browser here)."""
    require(CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium; scripts/test does)")
    require(importlib.util.find_spec("playwright"), "playwright is not installed (pip install -e '.[test]')")
    return str(CHROMIUM)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Keep each phase's report on the item, so `page` can tell at teardown that its test failed.
    report = yield
    setattr(item, f"_portal_report_{report.when}", report)
    return report


@pytest.fixture
def page(request: pytest.FixtureRequest, chromium_path: str, screenshots_dir: Path):
    """A fresh page in a fresh headless Chromium: its own browser context (no cookies or storage
    shared with other tests), HTTPS errors ignored (the tests' certificates come from a test CA),
    and the page's CSP left in force. A failing test leaves a full-page screenshot in
    `screenshots_dir`, named after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=["--no-sandbox"], headless=True)
        try:
            context = browser.new_context(ignore_https_errors=True)
            context.set_default_timeout(10_000)
            pg = context.new_page()
            try:
                yield pg
            finally:
                report = getattr(request.node, "_portal_report_call", None)
                if report is not None and report.failed and not pg.is_closed():
                    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
                    try:
                        pg.screenshot(path=str(screenshots_dir / f"{name}.png"), full_page=True)
                    except Exception:  # a screenshot is a bonus: never hide the test's own failure
                        pass
                context.close()
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    """Where browser tests save screenshots: $SEALRELAY_SCREENSHOTS, or else
    tests/portal/.screenshots/ (git-ignored); made when first asked for."""
    return screenshots_root()


# the relay tests' fixtures: an in-process relay from a YAML snippet (test_method.py)
from tests.relay.conftest import start_relay, write_config  # noqa: E402, F401
