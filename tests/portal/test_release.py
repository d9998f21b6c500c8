"""Key release for the advanced method: a held message key goes to its owner's browser after
a one-time code, never to anyone else, and not at all once revoked or expired."""

from __future__ import annotations

import base64
import os
import re
import time

import httpx
import pytest

from engine.config.load import load_config
from engine.portal.service import open_store
from tests.portal.harness import PortalRelay


@pytest.fixture(scope="module")
def relay():
    with PortalRelay() as relay:
        yield relay


@pytest.fixture
def store(relay: PortalRelay):
    config = load_config(relay.config).config
    store = open_store(config.encryption.secure_portal, relay.dir, relay.dir / "var")
    yield store
    store.close()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def sign_in_for_key(relay: PortalRelay, http: httpx.Client, key_id: str, address: str, nth: int = 1) -> None:
    landing = http.get(f"/k/{key_id}")
    assert landing.status_code == 200 and "A secure message is waiting for you" in landing.text
    sent = http.post(f"/k/{key_id}/code", data={"csrf": csrf_of(landing.text)})
    assert (sent.status_code, sent.headers["location"]) == (303, "/login/code/enter")
    page = http.get("/login/code/enter")
    assert f"{address[0]}" in page.text and address not in page.text  # masked
    entered = http.post("/login/code/enter", data={"csrf": csrf_of(page.text), "code": relay.code_for(address, nth)})
    assert (entered.status_code, entered.headers["location"]) == (303, f"/k/{key_id}")


def test_a_held_key_is_released_to_its_owner_after_a_code_and_never_after_revocation(relay, store) -> None:
    address = "rita@partner.test"
    secret = os.urandom(32)
    key_id = store.hold_key(address, secret, time.time() + 3600)
    with httpx.Client(verify=False, base_url=relay.url) as http:
        before = http.get(f"/k/{key_id}/key")
        assert before.status_code == 401 and before.json()["error"] == "sign in first"
        sign_in_for_key(relay, http, key_id, address)
        released = http.get(f"/k/{key_id}/key")
        assert released.status_code == 200
        assert base64.b64decode(released.json()["key"]) == secret
        assert [e["event"] for e in store.audit_events(address=address)][-2:] == ["login", "key_released"]

        store.revoke(key_id)
        refused = http.get(f"/k/{key_id}/key")
        assert (refused.status_code, refused.json()) == (410, {"error": "this message was revoked"})


def test_another_users_key_is_not_found_and_an_expired_one_is_gone(relay, store) -> None:
    mine = store.hold_key("sam@partner.test", os.urandom(32), time.time() + 3600)
    theirs = store.hold_key("tom@partner.test", os.urandom(32), time.time() + 3600)
    expired = store.hold_key("sam@partner.test", os.urandom(32), time.time() - 1)
    with httpx.Client(verify=False, base_url=relay.url) as http:
        sign_in_for_key(relay, http, mine, "sam@partner.test")
        other = http.get(f"/k/{theirs}/key")
        unknown = http.get("/k/" + "A" * 32 + "/key")
        assert other.status_code == unknown.status_code == 404 and other.json() == unknown.json()
        gone = http.get(f"/k/{expired}/key")
        assert (gone.status_code, gone.json()) == (410, {"error": "this message has expired"})


def test_a_new_code_replaces_the_old_one_and_is_rate_limited(relay, store) -> None:
    address = "uma@partner.test"
    key_id = store.hold_key(address, os.urandom(32), time.time() + 3600)
    with httpx.Client(verify=False, base_url=relay.url) as http:
        landing = http.get(f"/k/{key_id}")
        http.post(f"/k/{key_id}/code", data={"csrf": csrf_of(landing.text)})
        first = relay.code_for(address, 1)
        page = http.get("/login/code/enter")
        again = http.post("/login/code/resend", data={"csrf": csrf_of(page.text)})
        assert again.headers["location"] == "/login/code/enter?wait=1"  # within a minute: not sent
        waiting = http.get(again.headers["location"])
        assert "wait a minute before asking for another" in waiting.text
        assert len(relay.mail_to(relay.outside, address, "Your secure portal code")) == 1
        ok = http.post("/login/code/enter", data={"csrf": csrf_of(waiting.text), "code": first})
        assert ok.headers["location"] == f"/k/{key_id}"
