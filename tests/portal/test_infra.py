"""The portal's test infrastructure works: a real PostgreSQL, a real Chromium, a real axe-core."""

from __future__ import annotations

import pytest

from tests.portal.infra import axe_violations, create_database, describe_violations, drop_database

# --- PostgreSQL


def test_pg_url_is_a_postgresql_server(pg_url):
    import psycopg

    assert pg_url.startswith("postgresql://postgres@127.0.0.1:")
    with psycopg.connect(pg_url) as conn:
        (version,) = conn.execute("SELECT version()").fetchone()
        (db,) = conn.execute("SELECT current_database()").fetchone()
    assert version.startswith("PostgreSQL ")
    assert db == "sealrelay_test"


def test_pg_server_is_private(pg_cluster):
    # Loopback only, on its own port, never the system cluster's.
    assert pg_cluster.port != 5432
    import psycopg

    with psycopg.connect(pg_cluster.url()) as conn:
        (listen,) = conn.execute("SHOW listen_addresses").fetchone()
        (fsync,) = conn.execute("SHOW fsync").fetchone()
    assert listen == "127.0.0.1"
    assert fsync == "off"


def _user_tables(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("round_", [1, 2])
def test_fresh_pg_url_is_empty_and_private_to_the_test(fresh_pg_url, round_):
    import psycopg

    # Empty though the previous round made a table in its own database.
    assert _user_tables(fresh_pg_url) == []
    with psycopg.connect(fresh_pg_url) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
        conn.commit()
    assert _user_tables(fresh_pg_url) == ["public.leftover"]


def _databases(pg_cluster) -> set[str]:
    import psycopg

    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


def test_drop_database_despite_an_open_connection(pg_cluster):
    # What fresh_pg_url does at teardown, with a connection the "test" forgot to close.
    import psycopg

    create_database(pg_cluster.url(), "t_leaky")
    leaked = psycopg.connect(pg_cluster.url("t_leaky"))
    try:
        assert "t_leaky" in _databases(pg_cluster)
        drop_database(pg_cluster.url(), "t_leaky")
        assert "t_leaky" not in _databases(pg_cluster)
    finally:
        leaked.close()


def test_fresh_pg_url_databases_are_gone(pg_cluster, fresh_pg_url):
    # Only this test's own t_ database exists: the earlier tests' were dropped.
    mine = fresh_pg_url.rsplit("/", 1)[1]
    assert {d for d in _databases(pg_cluster) if d.startswith("t_")} == {mine}


# --- Browser and axe-core

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in</title></head>
<body><main>
  <h1>Sign in</h1>
  <form>
    <label for="email">Email</label> <input id="email" name="email" type="email">
    <input id="code" name="code" type="text">
  </form>
</main></body></html>"""

# The portal's kind of policy: no 'unsafe-inline', no 'unsafe-eval'.
STRICT_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


def _serve(page, html: str, url: str = "https://portal.test/login") -> None:
    """Answer `url` with `html` and the strict CSP as a real header, then open it."""

    def handle(route):
        route.fulfill(
            status=200,
            body=html,
            headers={"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": STRICT_CSP},
        )

    def app_js(route):
        # The page's own script: under this CSP it may not eval.
        route.fulfill(
            status=200,
            body="try { eval('1'); window.pageEval = 'allowed'; } catch (e) { window.pageEval = e.name; }",
            headers={"Content-Type": "text/javascript"},
        )

    page.route(url, handle)
    page.route("https://portal.test/app.js", app_js)
    page.goto(url)


def _only_label(violations):
    return [v for v in violations if v["id"] == "label"]


def test_axe_reports_the_unlabelled_input_set_content(page):
    page.set_content(FORM)
    violations = axe_violations(page)
    label = _only_label(violations)
    assert len(label) == 1, describe_violations(violations)
    assert label[0]["impact"] == "critical"
    targets = [node["target"] for node in label[0]["nodes"]]
    assert targets == [["#code"]], targets


def test_axe_runs_under_a_strict_csp_header(page):
    from playwright.sync_api import Error as PlaywrightError

    messages = []
    page.on("console", lambda msg: messages.append(msg.text))
    _serve(page, FORM.replace("</title>", '</title><script src="/app.js"></script>'))
    # The policy is really in force: the page's own script may not eval, and an inline script
    # tag (what add_script_tag(content=) makes) is refused...
    assert page.evaluate("window.pageEval") == "EvalError"
    with pytest.raises(PlaywrightError):
        page.add_script_tag(content="window.inlineRan = true")
    assert page.evaluate("window.inlineRan") is None
    assert any("Content Security Policy" in m for m in messages), messages
    # ...and axe still runs, through evaluate.
    label = _only_label(axe_violations(page))
    assert [node["target"] for node in label[0]["nodes"]] == [["#code"]]
    # Twice in a row works (axe is injected once per document), and after a navigation too.
    assert _only_label(axe_violations(page, rules=["label"]))
    _serve(
        page,
        FORM.replace('<input id="code"', '<label for="code">Code</label><input id="code"'),
        "https://portal.test/ok",
    )
    assert axe_violations(page) == []


def test_axe_impacts_filter(page):
    page.set_content(FORM)
    assert _only_label(axe_violations(page, impacts=("critical",)))
    assert axe_violations(page, impacts=("minor",)) == []


def test_page_fixture_context(page, screenshots_dir):
    # A plain sync test (no asyncio loop), HTTPS errors ignored, screenshots land in screenshots_dir.
    page.set_content("<p>hello</p>")
    shot = screenshots_dir / "test_infra_hello.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shot.unlink()
    assert page.context.browser.version.split(".")[0].isdigit()
