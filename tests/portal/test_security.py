"""The portal's security, over HTTPS against a real relay (`sealrelay serve` in a child process).

The module's relay runs twice: on SQLite (its data dir) and on PostgreSQL (a fresh database of
the session's cluster). One message, sent at the start, reaches every outside recipient the
tests sign in as; each test uses addresses of its own, so the per-address limits on codes and
failed logins of one test never touch another. The failed-login test comes from 127.0.0.2, so
its 100 failures slow only that client (the limit counts per address and per client address);
it runs on SQLite only (100 argon2 logins are slow enough once).
"""

from __future__ import annotations

import base64
import html
import re
import sqlite3
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.portal.harness import PortalRelay
from tests.portal.infra import create_database, drop_database

COOKIE = "__Host-sealrelay-portal"
SENDER = "alice@example.com"
PDF = b"%PDF-1.4 fake report\x00\x01\x02"
HTML_FILE = b"<html><body><script>alert(document.cookie)</script></body></html>"
# every outside address that gets the module's message (each test signs in as its own)
READER = "reader@partner.test"  # the module's signed-in user (`reader`)
OTHER = "other@partner.test"  # never signs in: the owner of someone else's message
RECIPIENTS = [
    READER,
    OTHER,
    "fixation@partner.test",
    "cookies@partner.test",
    "password@partner.test",
    "slow@partner.test",
    "once@partner.test",
    "wrong@partner.test",
    "kate@partner.test",
    "urls@partner.test",
]
CSRF_TEXT = "This form has expired or did not come from this portal. Reload the page and try again."
STRONG = "violet harbor kestrel 1984 quartz"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def relay(request) -> Iterator[PortalRelay]:
    database = None
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("pg_url")
        admin = pg_url.rsplit("/", 1)[0] + "/postgres"
        name = f"portal_{uuid.uuid4().hex[:12]}"
        create_database(admin, name)
        database = pg_url.rsplit("/", 1)[0] + "/" + name
    try:
        with PortalRelay(database=database) as r:
            r.backend = request.param
            r.database = database
            r.send(
                SENDER,
                RECIPIENTS,
                "Q3 numbers",
                "This is confidential: the numbers.",
                {"report.pdf": PDF, "page.html": HTML_FILE},
            )
            r.links = {address: r.link_for(address) for address in RECIPIENTS}
            try:
                yield r
            finally:
                while _CLIENTS:
                    _CLIENTS.pop().close()
    finally:
        if database:
            drop_database(admin, name)


def sql(relay: PortalRelay, statement: str, params: tuple = ()) -> list[tuple]:
    """Read the relay's portal database directly (SQLite in its data dir, or PostgreSQL)."""
    if relay.database is None:
        conn = sqlite3.connect(relay.dir / "var" / "portal" / "portal.db")
        try:
            return conn.execute(statement, params).fetchall()
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(relay.database) as conn:
        return conn.execute(statement.replace("?", "%s"), params).fetchall()


_CLIENTS: list[httpx.Client] = []  # closed before the relay stops (it would wait for their connections)


def client(relay: PortalRelay, **kw) -> httpx.Client:
    """A bare HTTPS client (no cookie unless given)."""
    c = httpx.Client(base_url=relay.url, verify=False, **kw)
    _CLIENTS.append(c)
    return c


class Browser:
    """An HTTPS client that keeps cookies, follows no redirect, and records every Location."""

    def __init__(self, relay: PortalRelay, source: str = "127.0.0.1") -> None:
        self.relay = relay
        self.locations: list[str] = []
        self.signed_in: httpx.Response | None = None
        self.http = httpx.Client(
            base_url=relay.url,
            transport=httpx.HTTPTransport(verify=False, local_address=source),
            follow_redirects=False,
            timeout=20,
            event_hooks={"response": [self._seen]},
        )
        _CLIENTS.append(self.http)

    def _seen(self, response: httpx.Response) -> None:
        if "location" in response.headers:
            self.locations.append(response.headers["location"])

    def get(self, url: str, **kw) -> httpx.Response:
        return self.http.get(url, **kw)

    def post(self, url: str, data: dict | None = None, **kw) -> httpx.Response:
        return self.http.post(url, data=data, **kw)

    @property
    def cookie(self) -> str | None:
        return self.http.cookies.get(COOKIE)

    def csrf(self, url: str = "/login") -> str:
        return csrf_of(self.get(url))

    def close(self) -> None:
        self.http.close()


def csrf_of(response: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert found, f"no csrf field in {response.status_code} {response.text[:500]}"
    return found.group(1)


def normal(text: str) -> str:
    """A page with its csrf token blanked (it differs per session)."""
    return re.sub(r'name="csrf" value="[^"]*"', 'name="csrf" value=""', text)


def msg_id_of(relay: PortalRelay, address: str) -> str:
    return relay.links[address].rsplit("/m/", 1)[1]


def code_mails(relay: PortalRelay, address: str) -> int:
    return sum(1 for m in relay.outside.messages if address in m.recipients and b"portal code" in m.content)


def open_by_code(relay: PortalRelay, address: str, browser: Browser | None = None, n: int = 1) -> Browser:
    """The first-contact flow: the notification link, "email me a code", the code. Signed in."""
    b = browser or Browser(relay)
    msg_id = msg_id_of(relay, address)
    page = b.get(f"/m/{msg_id}")
    assert page.status_code == 200
    asked = b.post(f"/m/{msg_id}/code", {"csrf": csrf_of(page)})
    assert (asked.status_code, asked.headers["location"]) == (303, "/login/code/enter")
    enter = b.get("/login/code/enter")
    code = relay.code_for(address, n)
    done = b.post("/login/code/enter", {"csrf": csrf_of(enter), "code": code})
    assert (done.status_code, done.headers["location"]) == (303, f"/message/{msg_id}"), done.text
    b.signed_in = done
    return b


def set_password(b: Browser, password: str, phrase: str = "blue heron at dawn") -> httpx.Response:
    page = b.get("/account")
    assert page.status_code == 200
    return b.post("/account", {"csrf": csrf_of(page), "password": password, "again": password, "phrase": phrase})


def login_with_password(b: Browser, address: str, password: str) -> httpx.Response:
    step = b.post("/login", {"csrf": b.csrf("/login"), "address": address})
    assert step.status_code == 200
    return b.post("/login/password", {"csrf": csrf_of(step), "address": address, "password": password})


@pytest.fixture(scope="module")
def reader(relay) -> Iterator[Browser]:
    b = open_by_code(relay, READER)
    yield b
    b.close()


@pytest.fixture(scope="module")
def password_account(relay) -> tuple[str, str]:
    b = open_by_code(relay, "password@partner.test")
    saved = set_password(b, STRONG)
    assert (saved.status_code, saved.headers["location"]) == (303, "/account?done=password"), saved.text
    b.close()
    return "password@partner.test", STRONG


# -- CSRF --------------------------------------------------------------------------------------


def test_post_without_csrf_is_refused(relay):
    b = Browser(relay)
    b.get("/login")
    assert b.cookie
    for data in ({"address": "x@partner.test"}, {"address": "x@partner.test", "csrf": "wrong-" + "a" * 30},
                 {"address": "x@partner.test", "csrf": ""}):  # fmt: skip
        refused = b.post("/login", data)
        assert refused.status_code == 403
        assert CSRF_TEXT in html.unescape(refused.text)
        assert "<h1>Not allowed</h1>" in refused.text
    # and where a state change would follow
    for url in ("/login/password", "/login/code", "/logout", f"/m/{msg_id_of(relay, OTHER)}/code"):
        refused = b.post(url, {"address": "x@partner.test", "password": "whatever"})
        assert refused.status_code == 403, url
        assert CSRF_TEXT in html.unescape(refused.text)
    assert code_mails(relay, OTHER) == 0


def test_csrf_of_another_session_is_refused(relay):
    a, b = Browser(relay), Browser(relay)
    token_a = a.csrf("/login")
    b.get("/login")
    refused = b.post("/login", {"csrf": token_a, "address": "x@partner.test"})
    assert refused.status_code == 403
    assert CSRF_TEXT in html.unescape(refused.text)
    # with no cookie at all
    bare = client(relay)
    refused = bare.post("/login", data={"csrf": token_a, "address": "x@partner.test"})
    assert refused.status_code == 403


def test_signed_in_post_without_csrf_is_refused(relay, reader):
    msg_id = msg_id_of(relay, READER)
    refused = reader.post(f"/message/{msg_id}/trash", {"csrf": "nope"})
    assert refused.status_code == 403
    assert CSRF_TEXT in html.unescape(refused.text)
    assert sql(relay, "SELECT folder FROM messages WHERE id = ?", (msg_id,)) == [("inbox",)]


# -- sessions ----------------------------------------------------------------------------------


def test_code_login_gives_a_new_session_id(relay):
    address = "fixation@partner.test"
    b = Browser(relay)
    msg_id = msg_id_of(relay, address)
    page = b.get(f"/m/{msg_id}")
    before = b.cookie
    assert before
    assert b.post(f"/m/{msg_id}/code", {"csrf": csrf_of(page)}).status_code == 303
    assert b.cookie == before  # asking for a code is not signing in
    enter = b.get("/login/code/enter")
    done = b.post("/login/code/enter", {"csrf": csrf_of(enter), "code": relay.code_for(address)})
    assert done.status_code == 303
    after = b.cookie
    assert after and after != before
    assert COOKIE in done.headers["set-cookie"]
    assert b.get(f"/message/{msg_id}").status_code == 200

    # the anonymous cookie an attacker may have planted grants nothing
    old = client(relay, cookies={COOKIE: before})
    for url in ("/inbox", f"/message/{msg_id}", "/account"):
        gone = old.get(url)
        assert (gone.status_code, gone.headers["location"]) == (303, "/login"), url


def test_password_login_gives_a_new_session_id(relay, password_account):
    address, password = password_account
    b = Browser(relay)
    b.get("/login")
    before = b.cookie
    done = login_with_password(b, address, password)
    assert (done.status_code, done.headers["location"]) == (303, "/inbox")
    assert b.cookie and b.cookie != before
    assert b.get("/inbox").status_code == 200
    old = client(relay, cookies={COOKIE: before})
    assert old.get("/inbox").headers["location"] == "/login"


def test_logout_ends_the_session_on_the_server(relay, password_account):
    address, password = password_account
    b = Browser(relay)
    assert login_with_password(b, address, password).status_code == 303
    token = b.cookie
    inbox = b.get("/inbox")
    assert inbox.status_code == 200
    bye = b.post("/logout", {"csrf": csrf_of(inbox)})
    assert (bye.status_code, bye.headers["location"]) == (303, "/login?bye=1")
    cleared = SimpleCookie(bye.headers["set-cookie"])[COOKIE]
    assert cleared.value == "" and cleared["max-age"] == "0"

    replay = client(relay, cookies={COOKIE: token})
    for url in ("/inbox", "/account", f"/message/{msg_id_of(relay, address)}"):
        gone = replay.get(url)
        assert (gone.status_code, gone.headers["location"]) == (303, "/login"), url
    refused = replay.post("/logout", data={"csrf": csrf_of(inbox)})
    assert refused.status_code == 403  # the session and its csrf token are gone


def test_cookie_attributes(relay):
    b = Browser(relay)
    anonymous = b.get("/login")
    open_by_code(relay, "cookies@partner.test", b)
    for response in (anonymous, b.signed_in):
        header = response.headers["set-cookie"]
        name, _, rest = header.partition("=")
        assert name == COOKIE  # the __Host- prefix: Secure, Path=/, no Domain, or browsers drop it
        value, *attrs = [p.strip() for p in rest.split(";")]
        assert len(value) >= 40
        flags = {a.split("=")[0].lower(): (a.split("=", 1)[1] if "=" in a else True) for a in attrs}
        # no Domain, and no Expires or Max-Age: a session cookie
        assert flags == {"httponly": True, "path": "/", "samesite": flags["samesite"], "secure": True}, header
        assert flags["samesite"].lower() == "strict"
    assert len(anonymous.headers.get_list("set-cookie")) == 1


# -- who may see what --------------------------------------------------------------------------


def test_another_users_message_is_exactly_like_none(relay, reader):
    theirs = msg_id_of(relay, OTHER)
    random = base64.urlsafe_b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes[:8]).decode().rstrip("=")
    assert len(random) == len(theirs)
    for path in ("/message/{}", "/message/{}/attachment/0", "/m/{}", "/compose?mode=reply&source={}"):
        a = reader.get(path.format(theirs))
        b = reader.get(path.format(random))
        assert a.status_code == 404, path
        assert b.status_code == 404, path
        assert normal(a.text) == normal(b.text), path
        assert "There is no such message, or it has expired." in a.text
        assert a.headers["content-length"] == b.headers["content-length"]
    csrf = csrf_of(reader.get("/inbox"))
    for action in ("trash", "restore", "delete"):
        a = reader.post(f"/message/{theirs}/{action}", {"csrf": csrf})
        b = reader.post(f"/message/{random}/{action}", {"csrf": csrf})
        assert (a.status_code, b.status_code) == (404, 404), action
        assert normal(a.text) == normal(b.text)
    # and nothing happened to it
    assert sql(relay, "SELECT folder FROM messages WHERE id = ?", (theirs,)) == [("inbox",)]


def test_control_characters_in_input_are_refused_without_a_crash(relay, reader):
    # PostgreSQL text cannot hold NUL: such input must be turned away before the database
    b = Browser(relay)
    for url in ("/login", "/login/code"):
        answer = b.post(url, {"csrf": b.csrf(url), "address": "a\x00b@partner.test"})
        assert answer.status_code == 400, url
        assert "Enter your email address." in answer.text
        assert_secure_headers(answer)
    answer = b.post("/login/password", {"csrf": b.csrf("/login"), "address": "a\x01b@partner.test", "password": "x"})
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    for path in ("/message/%00x", "/message/%00x/attachment/0", "/m/%00x", "/compose?mode=reply&source=%00x"):
        answer = reader.get(path)
        assert answer.status_code == 404, path
        assert_secure_headers(answer)
    answer = reader.post("/message/%00x/trash", {"csrf": csrf_of(reader.get("/inbox"))})
    assert answer.status_code == 404
    for path in ("/m/%00x", "/k/%00x", "/k/%00x/key"):
        answer = b.get(path)
        assert answer.status_code == 404, path
        assert_secure_headers(answer)
    assert reader.get("/inbox").status_code == 200  # the relay is fine


def test_message_ids_in_links_are_long_and_random(relay):
    ids = [msg_id_of(relay, a) for a in RECIPIENTS]
    assert len(set(ids)) == len(ids)
    for msg_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", msg_id), msg_id
        assert len(base64.urlsafe_b64decode(msg_id + "=" * (-len(msg_id) % 4))) >= 16  # 128 bits


# -- failed logins ------------------------------------------------------------------------------


def test_the_101st_failed_login_in_an_hour_is_slowed_not_locked(relay):
    if relay.backend == "postgresql":
        pytest.skip("the limit's logic is the same on both backends; 100 argon2 logins are run once (SQLite)")
    address = "slow@partner.test"
    b = Browser(relay, source="127.0.0.2")  # its failures count against 127.0.0.2 only
    open_by_code(relay, address, b)
    assert set_password(b, STRONG).status_code == 303
    b.close()

    b = Browser(relay, source="127.0.0.2")
    step = b.post("/login", {"csrf": b.csrf("/login"), "address": address})
    csrf = csrf_of(step)
    for n in range(100):
        failed = b.post("/login/password", {"csrf": csrf, "address": address, "password": f"wrong {n}"})
        assert failed.status_code == 401, (n, failed.text[:300])
        assert "That address and password do not match." in failed.text
    right = b.post("/login/password", {"csrf": csrf, "address": address, "password": STRONG})
    assert right.status_code == 429
    wait = int(right.headers["retry-after"])
    assert 1 <= wait <= 30
    text = html.unescape(right.text)
    assert f"Too many failed attempts for this address. Try again in {wait} seconds." in text
    for word in ("locked", "disabled", "blocked", "contact"):
        assert word not in text.lower()
    assert COOKIE not in right.headers.get("set-cookie", "")  # not signed in
    assert b.get("/inbox").headers["location"] == "/login"
    assert_secure_headers(right)
    # the address waits whichever client asks
    assert login_with_password(Browser(relay), address, STRONG).status_code == 429


# -- the same answer for known and unknown addresses --------------------------------------------


def test_security_phrase_for_an_unknown_address(relay):
    b = Browser(relay)

    def phrase_page(address: str) -> tuple[str, str]:
        page = b.post("/login", {"csrf": b.csrf("/login"), "address": address})
        assert page.status_code == 200
        phrase = re.search(r"Your security phrase: <strong>([^<]+)</strong>", page.text)
        assert phrase, page.text
        return phrase.group(1), normal(page.text).replace(phrase.group(1), "PHRASE").replace(address, "ADDRESS")

    first, unknown_page = phrase_page("nobody-here@partner.test")
    again, _ = phrase_page("Nobody-Here@partner.test")
    assert first == again  # stable: asking twice cannot tell a made-up phrase from a real one
    assert re.fullmatch(r"[a-z]+ [a-z]+ [a-z]+", first)
    assert phrase_page("someone-else@partner.test")[0] != first  # made up per address
    # a known address that has no phrase (and no password) gets a made-up one too, alike
    known, known_page = phrase_page(OTHER)
    assert re.fullmatch(r"[a-z]+ [a-z]+ [a-z]+", known)
    assert known_page == unknown_page


def test_wrong_password_answers_alike_for_known_and_unknown(relay, password_account):
    address, _ = password_account
    b = Browser(relay)
    pages = []
    for who in (address, "ghost-user@partner.test"):
        step = b.post("/login", {"csrf": b.csrf("/login"), "address": who})
        phrase = re.search(r"Your security phrase: <strong>([^<]+)</strong>", step.text).group(1)
        failed = b.post("/login/password", {"csrf": csrf_of(step), "address": who, "password": "not it at all"})
        assert failed.status_code == 401
        pages.append(normal(failed.text).replace(phrase, "PHRASE").replace(who, "ADDRESS"))
    assert pages[0] == pages[1]


def test_code_login_answers_alike_for_known_and_unknown(relay):
    known, unknown = "kate@partner.test", "kurt@partner.test"  # masked alike: k•••@partner.test
    pages = {}
    for address in (known, unknown):
        b = Browser(relay)
        asked = b.post("/login/code", {"csrf": b.csrf("/login/code"), "address": address})
        assert (asked.status_code, asked.headers["location"]) == (303, "/login/code/enter")
        enter = b.get("/login/code/enter")
        assert enter.status_code == 200
        assert "k•••@partner.test" in enter.text
        wrong = b.post("/login/code/enter", {"csrf": csrf_of(enter), "code": "00000000"})
        pages[address] = (normal(enter.text), wrong.status_code, normal(wrong.text))
    code = relay.code_for(known)  # the known address did get a code
    assert code != "00000000"
    assert pages[known] == pages[unknown]
    assert pages[known][1] == 401
    # the unknown one got none: a code was made for it (so a guess answers alike), never sent
    assert code_mails(relay, unknown) == 0
    assert sql(relay, "SELECT COUNT(*) FROM codes WHERE address = ?", (unknown,)) == [(1,)]
    assert sql(relay, "SELECT COUNT(*) FROM audit WHERE event = 'code_sent' AND address = ?", (unknown,)) == [(0,)]


# -- one-time codes ----------------------------------------------------------------------------


def test_a_code_works_once_and_a_second_within_a_minute_is_not_sent(relay):
    address = "once@partner.test"
    b = open_by_code(relay, address)
    code = relay.code_for(address)
    b.close()

    again = Browser(relay)
    msg_id = msg_id_of(relay, address)
    asked = again.post(f"/m/{msg_id}/code", {"csrf": csrf_of(again.get(f"/m/{msg_id}"))})
    assert (asked.status_code, asked.headers["location"]) == (303, "/login/code/enter?wait=1")
    enter = again.get("/login/code/enter?wait=1")
    assert "A code was sent a moment ago" in enter.text
    reused = again.post("/login/code/enter", {"csrf": csrf_of(enter), "code": code})
    assert reused.status_code == 401
    assert "That code has expired or was already used. Ask for a new one." in reused.text
    assert again.get("/inbox").headers["location"] == "/login"
    # one code mail only, and one code made and sent
    assert code_mails(relay, address) == 1
    assert sql(relay, "SELECT COUNT(*) FROM codes WHERE address = ?", (address,)) == [(1,)]
    sent = sql(relay, "SELECT COUNT(*) FROM audit WHERE event = 'code_sent' AND address = ?", (address,))
    assert sent == [(1,)]


def test_five_wrong_codes_kill_the_code(relay):
    address = "wrong@partner.test"
    b = Browser(relay)
    msg_id = msg_id_of(relay, address)
    assert b.post(f"/m/{msg_id}/code", {"csrf": csrf_of(b.get(f"/m/{msg_id}"))}).status_code == 303
    code = relay.code_for(address)
    csrf = csrf_of(b.get("/login/code/enter"))
    wrong = [c for c in ("11111111", "22222222", "33333333", "44444444", "55555555", "66666666") if c != code][:5]
    for guess in wrong:
        answer = b.post("/login/code/enter", {"csrf": csrf, "code": guess})
        assert answer.status_code == 401
        assert "That code is not right. Check the latest mail from the portal." in answer.text
    late = b.post("/login/code/enter", {"csrf": csrf, "code": code})
    assert late.status_code == 401
    assert "That code has expired or was already used. Ask for a new one." in late.text
    assert b.get("/inbox").headers["location"] == "/login"


# -- passwords ---------------------------------------------------------------------------------


def test_password_is_stored_as_argon2id(relay, password_account):
    address, password = password_account
    ((stored,),) = sql(relay, "SELECT password FROM accounts WHERE address = ?", (address,))
    assert stored.startswith("$argon2id$v=19$")
    m, t, p = map(int, re.match(r"\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$", stored).groups())
    assert m >= 19456 and t >= 2 and p >= 1
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert password not in stored


def test_weak_passwords_are_refused(relay, reader):
    page = reader.get("/account")
    for password, problem in (
        (
            "password1234567",
            "This is similar to a commonly used password. Add another word or two. Uncommon words are better.",
        ),
        ("Sh0rt!pass", "Use at least 12 characters."),
        ("readerpartner", None),  # the parts of the address are words a guesser knows
    ):
        refused = reader.post(
            "/account", {"csrf": csrf_of(page), "password": password, "again": password, "phrase": "green owl"}
        )
        assert refused.status_code == 400, password
        if problem:
            assert problem in html.unescape(refused.text), refused.text
    assert sql(relay, "SELECT password FROM accounts WHERE address = ?", (READER,)) in ([], [(None,)])


# -- headers -----------------------------------------------------------------------------------


def assert_secure_headers(response: httpx.Response) -> None:
    h = response.headers
    csp = h["content-security-policy"]
    directives = {d.strip().split(" ", 1)[0]: d.strip() for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == "default-src 'none'", csp
    assert directives["frame-ancestors"] == "frame-ancestors 'none'", csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["cache-control"] == "no-store"
    assert h["referrer-policy"] == "no-referrer"
    for name in ("content-security-policy", "x-frame-options", "cache-control"):
        assert len(h.get_list(name)) == 1, name


def test_security_headers_everywhere(relay, reader):
    anonymous = Browser(relay)
    responses = {
        "login": anonymous.get("/login"),
        "code request": anonymous.get("/login/code"),
        "landing": anonymous.get(f"/m/{msg_id_of(relay, OTHER)}"),
        "redirect": anonymous.get("/inbox"),
        "css": anonymous.get("/static/portal.css"),
        "missing css": anonymous.get("/static/nope.css"),
        "no route": anonymous.get("/no/such/page"),
        "wrong method": anonymous.get("/logout"),
        "csrf": anonymous.post("/login", {"address": "x@partner.test"}),
        "inbox": reader.get("/inbox"),
        "message": reader.get(f"/message/{msg_id_of(relay, READER)}"),
        "attachment": reader.get(f"/message/{msg_id_of(relay, READER)}/attachment/0"),
        "not found": reader.get(f"/message/{msg_id_of(relay, OTHER)}"),
    }
    assert responses["css"].status_code == 200
    assert responses["css"].headers["content-type"].startswith("text/css")
    assert responses["missing css"].status_code == 404
    assert responses["no route"].status_code == 404
    assert responses["wrong method"].status_code == 405
    assert responses["csrf"].status_code == 403
    assert responses["redirect"].status_code == 303
    for name, response in responses.items():
        try:
            assert_secure_headers(response)
        except (AssertionError, KeyError) as exc:
            raise AssertionError(f"{name} ({response.status_code}): {exc!r} {dict(response.headers)}") from None


def test_a_database_restart_costs_no_request(relay):
    """Connections the database dropped are checked out of the pool, not handed to a request."""
    if relay.backend != "postgresql":
        pytest.skip("PostgreSQL's connection pool")
    import psycopg

    from tests.relay.peers import wait_for

    admin, name = relay.database.rsplit("/", 1)
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        wait_for(
            lambda: not conn.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s", (name,)).fetchall(),
            10,
            "the relay's connections to end",
        )
    for _ in range(10):  # more than the pool holds
        with client(relay) as c:
            assert c.get("/login").status_code == 200


def test_a_server_error_page_has_the_security_headers(relay, reader):
    """A message whose stored blob is gone (damaged storage) is a 500, answered with our own
    page and every security header, not the framework's bare text."""
    if relay.backend != "sqlite":
        pytest.skip("made by deleting a blob file (SQLite keeps blobs as files)")
    msg_id = msg_id_of(relay, READER)
    [blob] = list((relay.dir / "var" / "portal" / "blobs").glob(f"*/{msg_id}"))
    saved = blob.read_bytes()
    blob.unlink()
    try:
        answer = reader.get(f"/message/{msg_id}")
    finally:
        blob.write_bytes(saved)
    assert answer.status_code == 500
    assert_secure_headers(answer)
    assert "Something went wrong" in answer.text
    assert reader.get(f"/message/{msg_id}").status_code == 200


# -- URLs --------------------------------------------------------------------------------------


def test_no_address_in_any_url(relay):
    address = "urls@partner.test"
    b = open_by_code(relay, address)
    b.get("/inbox")
    b.post("/login", {"csrf": b.csrf("/inbox"), "address": address})
    b.post("/login/code", {"csrf": b.csrf("/inbox"), "address": address})
    bye = b.post("/logout", {"csrf": b.csrf("/login/code")})
    assert bye.status_code == 303
    anonymous = Browser(relay)
    anonymous.post("/login/code", {"csrf": anonymous.csrf("/login/code"), "address": "someone@partner.test"})
    anonymous.post("/login/password", {"csrf": anonymous.csrf("/login"), "address": address, "password": "x"})
    anonymous.get("/inbox")
    locations = b.locations + anonymous.locations
    assert len(locations) >= 6
    for location in locations:
        assert "@" not in location and "%40" not in location.lower(), location
        assert "partner" not in location, location

    # every URL in every mail the portal sent (notifications and codes)
    urls = []
    for item in relay.outside.messages:
        urls += re.findall(rb"https?://\S+", item.content)
    assert len(urls) >= len(RECIPIENTS)
    for url in urls:
        assert b"@" not in url and b"%40" not in url.lower(), url


# -- attachments and retention -----------------------------------------------------------------


def test_attachments_download_as_bytes(relay, reader):
    msg_id = msg_id_of(relay, READER)
    page = reader.get(f"/message/{msg_id}")
    assert "report.pdf" in page.text and "page.html" in page.text
    for index, (name, data) in enumerate((("report.pdf", PDF), ("page.html", HTML_FILE))):
        got = reader.get(f"/message/{msg_id}/attachment/{index}")
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"] == f"attachment; filename*=UTF-8''{name}"
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.content == data
    assert reader.get(f"/message/{msg_id}/attachment/2").status_code == 404
    anonymous = client(relay)
    assert anonymous.get(f"/message/{msg_id}/attachment/0").headers["location"] == "/login"


def test_message_shows_when_it_will_be_deleted(relay, reader):
    msg_id = msg_id_of(relay, READER)
    ((created, expires),) = sql(relay, "SELECT created, expires FROM messages WHERE id = ?", (msg_id,))
    assert abs(expires - (created + 90 * 86400)) < 5
    assert created <= time.time()
    page = reader.get(f"/message/{msg_id}")
    shown = re.search(r"Deleted on</dt>\s*<dd>([^<]+)</dd>", page.text)
    assert shown, page.text
    assert shown.group(1) == datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%d %H:%M UTC")
