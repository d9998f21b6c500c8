"""The advanced envelope's format, read back by an independent Python reader (the page's
script is checked in a real browser in test_envelope.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.portal import envelope

RAW = (
    b"From: Alice <alice@example.com>\r\nTo: bob@partner.test\r\nSubject: Merger </script><b>\r\n"
    b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    b"the terms </script><script>alert(1)</script>\r\n--b\r\nContent-Type: application/pdf\r\n"
    b'Content-Disposition: attachment; filename="terms.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    b"JVBERi0xLjQK\r\n--b--\r\n"
)
PASSWORD = "orchid walnut meadow 77"


def browser_key(password: str = PASSWORD, iterations: int = 600_000) -> envelope.RecipientKey:
    """A key pair as the portal's page makes it (keys.js): SPKI public, PKCS#8 private
    wrapped with PBKDF2-SHA256 + AES-GCM."""
    private = ec.generate_private_key(ec.SECP256R1())
    spki = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, iv = os.urandom(16), os.urandom(12)
    wrap = PBKDF2HMAC(hashes.SHA256(), 32, salt, iterations).derive(password.encode())
    wrapped = {
        "kdf": "pbkdf2-sha256",
        "iterations": iterations,
        "salt": base64.b64encode(salt).decode(),
        "iv": base64.b64encode(iv).decode(),
        "sealed": base64.b64encode(AESGCM(wrap).encrypt(iv, pkcs8, None)).decode(),
    }
    return envelope.RecipientKey(base64.b64encode(spki).decode(), json.dumps(wrapped))


@pytest.fixture(scope="module")
def key() -> envelope.RecipientKey:
    return browser_key()


def test_both_slots_open_the_same_message(key) -> None:
    sealed = envelope.seal(
        envelope.payload(RAW), portal_url="https://portal.example.com", held="H1", recipient=key, phrase="amber fox"
    )
    by_password = envelope.open_with_password(sealed.html, PASSWORD)
    by_key = envelope.open_with_key(sealed.html, sealed.key)
    assert by_password == by_key
    assert by_key["subject"] == "Merger </script><b>"
    assert by_key["text"] == "the terms </script><script>alert(1)</script>"
    assert by_key["to"] == ["bob@partner.test"] and by_key["phrase"] == "amber fox"
    assert [(a["name"], base64.b64decode(a["data"])) for a in by_key["attachments"]] == [("terms.pdf", b"%PDF-1.4\n")]


def test_the_file_holds_no_plaintext_and_no_markup_from_the_message(key) -> None:
    sealed = envelope.seal(envelope.payload(RAW), portal_url="https://p.example", held="H", recipient=key)
    assert b"Merger" not in sealed.html and b"the terms" not in sealed.html and b"JVBERi0" not in sealed.html
    assert sealed.html.count(b"<script") == 3  # two JSON blocks and the one constant script
    assert sealed.html.isascii()
    assert max(len(line) for line in sealed.html.split(b"\r\n")) < 998  # travels as 7bit mail
    assert sealed.html.count(b"\n") == sealed.html.count(b"\r\n")  # CRLF, as mail carries it


def test_the_csp_pins_the_constant_script_and_style_by_hash() -> None:
    sealed = envelope.seal(envelope.payload(RAW), portal_url="https://p.example:8443/x", held="H", recipient=None)
    html = sealed.html.decode().replace("\r\n", "\n")  # as a browser reads it
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    digest = lambda text: "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()  # noqa: E731
    assert csp == (
        f"default-src 'none'; script-src '{digest(script)}'; style-src '{digest(style)}'; img-src blob: data:; "
        "connect-src https://p.example:8443; base-uri 'none'; form-action 'none'"
    )
    assert ' style="' not in html and " onclick" not in html and " onload" not in html


@pytest.mark.parametrize("where", ["header", "ciphertext"])
def test_any_change_to_the_file_is_refused(key, where: str) -> None:
    sealed = envelope.seal(envelope.payload(RAW), portal_url="https://p.example", held="H", recipient=key)
    html = sealed.html.decode()
    if where == "header":
        html = html.replace('"held": "H"', '"held": "X"')
    else:
        data = re.search(r'id="sealrelay-data">(.*?)</script>', html, re.S)
        start = data.start(1) + 10
        html = html[:start] + ("A" if html[start] != "A" else "B") + html[start + 1 :]
    with pytest.raises(InvalidTag):
        envelope.open_with_key(html.encode(), sealed.key)


def test_a_wrong_password_opens_nothing(key) -> None:
    sealed = envelope.seal(envelope.payload(RAW), portal_url="https://p.example", held=None, recipient=key)
    with pytest.raises(InvalidTag):
        envelope.open_with_password(sealed.html, "not the password at all")


def test_large_messages_leave_the_ciphertext_out_of_the_file() -> None:
    sealed = envelope.seal(
        envelope.payload(RAW), portal_url="https://p.example", held="H", recipient=None, max_inline=100
    )
    _, header, inline = envelope.parts(sealed.html)
    assert header["data"] == "portal" and inline is None and sealed.data
    assert envelope.open_with_key(sealed.html, sealed.key, sealed.data)["subject"] == "Merger </script><b>"


def test_an_envelope_needs_a_way_to_open() -> None:
    with pytest.raises(ValueError, match="needs a recipient key or a held key"):
        envelope.seal(b"{}", portal_url="https://p.example", held=None, recipient=None)


@settings(max_examples=25, deadline=None)
@given(
    subject=st.text(st.characters(categories=("L", "N", "P", "S", "Zs")), max_size=80),
    text=st.text(st.characters(categories=("L", "N", "P", "S", "Zs"), include_characters="\n"), max_size=500),
)
def test_any_text_survives_the_round_trip(subject: str, text: str) -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = subject
    msg.set_content(text)
    raw = msg.as_bytes().replace(b"\n", b"\r\n")
    sealed = envelope.seal(envelope.payload(raw), portal_url="https://p.example", held="H", recipient=None)
    opened = envelope.open_with_key(sealed.html, sealed.key)
    assert opened["text"].strip() == text.strip()
    # folding may change whitespace, never the words
    assert opened["subject"].split() == (subject.split() or ["(no", "subject)"])
