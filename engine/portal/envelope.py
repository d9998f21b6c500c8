"""The advanced method's envelope: one HTML file that decrypts itself in the browser.

The file holds the message (headers that matter, text, the HTML body, attachments) as
AES-256-GCM ciphertext under a fresh key, a header saying how that key may be had, and one
constant script and stylesheet. Its Content-Security-Policy allows exactly those (by hash),
images from `blob:`/`data:` only, and connections to the portal only: the page cannot load or
send anything else, and the sender's HTML is shown in a sandboxed frame without scripts.

- **Recipient slot** (offline): the message key wrapped (AES-KW) under a key agreed between
  an ephemeral P-256 key and the recipient's public key (ECDH, HKDF-SHA256), with the
  recipient's own password-wrapped private key beside it (made in their browser at the
  portal). The password opens it anywhere, offline; the relay never sees the password and
  spends no key derivation per recipient.
- **Held key** (online): the key stays on the relay (`Store.hold_key`) and the portal
  releases it to the page after a one-time code or sign-in; revocable, every release audited.

The header is the GCM associated data, byte for byte as it appears in the file, so a changed
slot, portal address or id makes the message refuse to open ("altered"), as does a changed
ciphertext. `open_with_key` and `open_with_password` read envelopes in Python the way the
script does: the tests check the format against them and against the browser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap

from engine.portal import mail

ASSETS = Path(__file__).parent / "envelope"
SCRIPT = (ASSETS / "envelope.js").read_text(encoding="ascii")
STYLE = (ASSETS / "envelope.css").read_text(encoding="ascii")
PAGE = (ASSETS / "page.html").read_text(encoding="ascii")
INFO = b"sealrelay envelope v1"
VERSION = 1


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("ascii")).digest()).decode()


SCRIPT_HASH = _hash(SCRIPT)
# The file is written with CRLF line ends, as mail carries it (no conversion per notice). A
# browser reads CRLF as LF in script and JSON blocks, so the hashes and the header's bytes as
# associated data are those of the LF text.
_PIECES = [
    piece if i % 2 else piece.replace("\n", "\r\n").encode("ascii")
    for i, piece in enumerate(re.split(r"\{(csp|css|header|data|js)\}", PAGE))
]  # literal, name, literal, name, ...
_SCRIPT_CRLF = SCRIPT.replace("\n", "\r\n").encode("ascii")
_STYLE_CRLF = STYLE.replace("\n", "\r\n").encode("ascii")
STYLE_HASH = _hash(STYLE)


@dataclass(frozen=True)
class RecipientKey:
    """What the portal keeps of a recipient's browser key: the public key (base64 SPKI) and
    the private key as the browser wrapped it (JSON: kdf, iterations, salt, iv, sealed)."""

    public: str
    private: str


@dataclass(frozen=True)
class Envelope:
    html: bytes  # the file
    data: bytes | None  # the ciphertext, when it is too large to travel in the file
    key: bytes  # the message key (for the relay to hold)


def payload(readable: mail.Readable | bytes) -> bytes:
    """The message as the page shows it (JSON): made once per message, sealed per recipient."""
    if isinstance(readable, bytes):
        readable = mail.read(readable)
    head = readable.head
    return json.dumps(
        {
            "from": head.sender,
            "to": list(head.to) + list(head.cc),
            "subject": head.subject,
            "date": datetime.fromtimestamp(head.date, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "text": readable.text,
            "html": readable.html,
            "attachments": [
                {"name": a.name, "data": base64.b64encode(a.data).decode()}
                for a in readable.attachments
                if not (readable.html and a.name.startswith("message-") and a.name.endswith(".html"))
            ],
        }
    ).encode()


def seal(
    body: bytes,
    *,
    portal_url: str,
    held: str | None,
    recipient: RecipientKey | None,
    phrase: str | None = None,
    max_inline: int = 10_000_000,
    key: bytes | None = None,
) -> Envelope:
    """The envelope of `body` (`payload(raw)`) for one recipient. `held`: the id under which
    the relay holds the key (None: no online opening); `recipient`: their browser key (None:
    no offline slot); `phrase`: their security phrase, shown once the message is open (it is
    sealed under the message key, so only a page that could open the message can show it)."""
    if held is None and recipient is None:
        raise ValueError("an envelope needs a recipient key or a held key")
    key = key or AESGCM.generate_key(256)
    iv = os.urandom(12)
    slots = [_recipient_slot(key, recipient)] if recipient is not None else []
    inline = len(body) + 16 <= max_inline
    phrase_iv = os.urandom(12)
    sealed_phrase = AESGCM(key).encrypt(phrase_iv, (phrase or "").encode(), b"phrase")
    header = {
        "v": VERSION,
        "alg": "A256GCM",
        "iv": base64.b64encode(iv).decode(),
        "portal": portal_url.rstrip("/"),
        "held": held,
        "slots": slots,
        "data": "inline" if inline else "portal",
        "phrase": base64.b64encode(phrase_iv + sealed_phrase).decode(),
    }
    header_text = _json_in_html(header)
    sealed = AESGCM(key).encrypt(iv, body, header_text.encode("ascii"))
    data = _lines(base64.b64encode(sealed)) if inline else b""
    fill = {
        "csp": csp(portal_url).encode("ascii"),
        "css": _STYLE_CRLF,
        "header": header_text.replace("\n", "\r\n").encode("ascii"),
        "data": data,
        "js": _SCRIPT_CRLF,
    }
    html = b"".join(fill[piece] if i % 2 else piece for i, piece in enumerate(_PIECES))
    return Envelope(html, None if inline else sealed, key)


def csp(portal_url: str) -> str:
    origin = re.match(r"^(https?://[^/]+)", portal_url.strip())
    connect = f" connect-src {origin.group(1)};" if origin else ""
    return (
        f"default-src 'none'; script-src '{SCRIPT_HASH}'; style-src '{STYLE_HASH}'; img-src blob: data:;"
        f"{connect} base-uri 'none'; form-action 'none'"
    )


def _recipient_slot(key: bytes, recipient: RecipientKey) -> dict:
    public = serialization.load_der_public_key(base64.b64decode(recipient.public))
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise ValueError("the recipient's key is not an ECDH P-256 key")
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    salt = os.urandom(16)
    kek = HKDF(hashes.SHA256(), 32, salt, INFO).derive(ephemeral.exchange(ec.ECDH(), public))
    epk = ephemeral.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return {
        "type": "recipient",
        "epk": base64.b64encode(epk).decode(),
        "salt": base64.b64encode(salt).decode(),
        "wrapped": base64.b64encode(aes_key_wrap(kek, key)).decode(),
        "private": json.loads(recipient.private),
    }


def _json_in_html(value: dict) -> str:
    """JSON that can sit in a <script type="application/json"> block as it is (no `<`, `>`,
    `&` or non-ASCII), one key per line so no line of the file nears SMTP's 998 limit."""
    text = json.dumps(value, indent=0, ensure_ascii=True, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _lines(text: bytes, width: int = 760) -> bytes:
    """Base64 in CRLF lines of `width` (SMTP allows 998; 760 keeps the file 7bit-safe and
    takes a tenth of the slicing 76 columns would on every envelope)."""
    return b"\r\n".join([text[i : i + width] for i in range(0, len(text), width)])


# -- reading (what the page's script does, in Python) --------------------------------------


def parts(html: bytes) -> tuple[str, dict, bytes | None]:
    """The header text, the header, and the inline ciphertext (None when at the portal); line
    ends read as a browser reads them (CRLF as LF)."""
    text = html.decode("ascii").replace("\r\n", "\n")
    header_text = re.search(r'<script type="application/json" id="sealrelay-header">(.*?)</script>', text, re.S).group(
        1
    )
    data = re.search(r'<script type="application/json" id="sealrelay-data">(.*?)</script>', text, re.S).group(1)
    sealed = base64.b64decode("".join(data.split())) if data.strip() else None
    return header_text, json.loads(header_text), sealed


def open_with_key(html: bytes, key: bytes, data: bytes | None = None) -> dict:
    """The message, with the recipient's security phrase as `phrase`."""
    header_text, header, sealed = parts(html)
    plain = AESGCM(key).decrypt(base64.b64decode(header["iv"]), sealed or data, header_text.encode("ascii"))
    phrase = base64.b64decode(header["phrase"])
    return {**json.loads(plain), "phrase": AESGCM(key).decrypt(phrase[:12], phrase[12:], b"phrase").decode()}


def open_with_password(html: bytes, password: str, data: bytes | None = None) -> dict:
    _, header, _ = parts(html)
    slot = next(s for s in header["slots"] if s["type"] == "recipient")
    wrapped = slot["private"]
    unwrap = PBKDF2HMAC(hashes.SHA256(), 32, base64.b64decode(wrapped["salt"]), wrapped["iterations"])
    pkcs8 = AESGCM(unwrap.derive(password.encode())).decrypt(
        base64.b64decode(wrapped["iv"]), base64.b64decode(wrapped["sealed"]), None
    )
    private = serialization.load_der_private_key(pkcs8, None)
    epk = serialization.load_der_public_key(base64.b64decode(slot["epk"]))
    kek = HKDF(hashes.SHA256(), 32, base64.b64decode(slot["salt"]), INFO).derive(private.exchange(ec.ECDH(), epk))
    return open_with_key(html, aes_key_unwrap(kek, base64.b64decode(slot["wrapped"])), data)
