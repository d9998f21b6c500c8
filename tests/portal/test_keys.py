"""A key pair made in the browser: only the public key and the password-wrapped private
key reach the portal, and what is stored opens with the password (checked here in Python,
independently of the page's script)."""

from __future__ import annotations

import base64
import json
import re
import sqlite3

import httpx
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_der_private_key

from tests.portal.harness import PortalRelay

PASSWORD = "violet harbor thistle 2026 kite"


@pytest.fixture(scope="module")
def relay():
    with PortalRelay() as relay:
        yield relay


def sign_in_by_code(relay: PortalRelay, page, address: str) -> None:
    relay.send("alice@example.com", [address], "Key test", "confidential: key test")
    page.goto(relay.link_for(address))
    page.get_by_role("button", name="Email me a code").click()
    page.get_by_label("One-time code").fill(relay.code_for(address))
    page.get_by_role("button", name="Open").click()
    page.get_by_role("heading", name="Key test").wait_for()


def test_a_key_made_in_the_browser_opens_with_its_password_only(relay: PortalRelay, page) -> None:
    address = "kim@partner.test"
    sign_in_by_code(relay, page, address)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(f"{r.method} {r.url}"))
    page.goto(f"{relay.url}/account/keys")
    page.get_by_label("Password for your key").fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_role("button", name="Make my key").click()
    page.get_by_text("Your key is saved.").wait_for(timeout=20_000)

    # the password went nowhere: the one POST carried no password field
    posts = [r for r in requests if r.startswith("POST")]
    assert posts == [f"POST {relay.url}/account/keys"]

    db = sqlite3.connect(relay.dir / "var" / "portal" / "portal.db")
    public_b64, private_json = db.execute(
        "SELECT public_key, private_key FROM accounts WHERE address = ?", (address,)
    ).fetchone()
    wrapped = json.loads(private_json)
    assert wrapped["kdf"] == "pbkdf2-sha256" and wrapped["iterations"] == 600_000
    assert PASSWORD.encode() not in private_json.encode() and PASSWORD.encode() not in public_b64.encode()

    kdf = PBKDF2HMAC(SHA256(), 32, base64.b64decode(wrapped["salt"]), wrapped["iterations"])
    key = kdf.derive(PASSWORD.encode())
    pkcs8 = AESGCM(key).decrypt(base64.b64decode(wrapped["iv"]), base64.b64decode(wrapped["sealed"]), None)
    private = load_der_private_key(pkcs8, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    derived_public = private.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert base64.b64encode(derived_public).decode() == public_b64

    wrong = PBKDF2HMAC(SHA256(), 32, base64.b64decode(wrapped["salt"]), wrapped["iterations"]).derive(b"not it")
    with pytest.raises(InvalidTag):
        AESGCM(wrong).decrypt(base64.b64decode(wrapped["iv"]), base64.b64decode(wrapped["sealed"]), None)


def test_the_key_endpoint_refuses_what_is_not_a_p256_key_or_lacks_csrf(relay: PortalRelay, page) -> None:
    address = "lee@partner.test"
    sign_in_by_code(relay, page, address)
    cookie = next(c for c in page.context.cookies() if c["name"] == "__Host-sealrelay-portal")
    html = page.goto(f"{relay.url}/account/keys").text()
    csrf = re.search(r'data-csrf="([^"]+)"', html).group(1)
    weak = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    body = {
        "public_key": base64.b64encode(weak).decode(),
        "private_key": {
            "kdf": "pbkdf2-sha256",
            "iterations": 600000,
            "salt": "AAAAAAAAAAAAAAAAAAAAAA==",
            "iv": "AAAAAAAAAAAAAAAA",
            "sealed": base64.b64encode(bytes(150)).decode(),
        },
    }
    with httpx.Client(verify=False, base_url=relay.url, cookies={cookie["name"]: cookie["value"]}) as http:
        no_csrf = http.post("/account/keys", json=body)
        assert no_csrf.status_code == 403
        p384 = http.post("/account/keys", json=body, headers={"x-csrf-token": csrf})
        assert p384.status_code == 400
        assert p384.json() == {"error": "not a key this portal accepts: the public key must be ECDH P-256"}
        few = dict(body, private_key=dict(body["private_key"], iterations=1000))
        few["public_key"] = base64.b64encode(
            ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        ).decode()
        low = http.post("/account/keys", json=few, headers={"x-csrf-token": csrf})
        assert low.status_code == 400
        assert "600,000" in low.json()["error"]
