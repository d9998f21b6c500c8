"""The portal's cryptography: every message sealed under its own key, every key wrapped.

- A message's parts are sealed with AES-256-GCM under a fresh 256-bit key (`seal`), the
  message id as associated data, so a blob moved to another row does not open.
- That key is stored wrapped by the portal key (AES-256-GCM again, `wrap`), which lives in
  `data_dir/portal/portal.key` (made on first use, owner-only) or comes from the config
  (`encryption.secure_portal.master_key`: relays sharing one database must share it).
- Search runs over a blind index: each word of a message becomes HMAC-SHA256 under a key
  derived from the portal key, so the database holds no searchable plaintext.
- Ids in links are 192 random bits; codes and session tokens are stored only as hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.fsutil import private_dir, write_atomic

NONCE = 12
KEY_BYTES = 32


class PortalKeyError(Exception):
    """The portal key is missing, malformed, or not the one the stored messages were sealed with."""


def random_id() -> str:
    """An id for a link: 192 random bits, URL-safe, no padding, never starting with `-` (a
    command line would read it as an option: `sealrelay portal revoke -8AJ...`)."""
    while True:
        ident = secrets.token_urlsafe(24)
        if ident[0] != "-":
            return ident


def digest(token: str) -> str:
    """What is stored of a secret token (session id, one-time code): its SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    """The plaintext; raises cryptography's InvalidTag when it was altered or moved."""
    return AESGCM(key).decrypt(sealed[:NONCE], sealed[NONCE:], aad)


class PortalKey:
    """The key that wraps message keys, and the keys derived from it."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise PortalKeyError(f"the portal key must be {KEY_BYTES} bytes, not {len(key)}")
        self._wrap = _derive(key, b"sealrelay portal wrap v1")
        self._index = _derive(key, b"sealrelay portal index v1")
        self._fields = _derive(key, b"sealrelay portal fields v1")
        self.check = hashlib.sha256(_derive(key, b"sealrelay portal check v1")).hexdigest()[:16]

    @classmethod
    def from_text(cls, text: str) -> PortalKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except ValueError:
            raise PortalKeyError("the portal key is not base64") from None
        return cls(raw)

    @classmethod
    def in_dir(cls, directory: Path) -> PortalKey:
        """The key kept in `directory/portal.key`, made (owner-only) on first use."""
        path = directory / "portal.key"
        if not path.exists():
            private_dir(directory)
            try:
                write_atomic(path, base64.b64encode(new_key()) + b"\n", mode=0o600, exclusive=True)
            except FileExistsError:
                pass  # another process made it first: use theirs
        return cls.from_text(path.read_text())

    def wrap(self, key: bytes, owner: str) -> bytes:
        return seal(self._wrap, key, owner.encode())

    def unwrap(self, wrapped: bytes, owner: str) -> bytes:
        return open_sealed(self._wrap, wrapped, owner.encode())

    def seal_field(self, value: bytes, context: str) -> bytes:
        """A small value kept at rest under the portal key itself (a TOTP secret, a phrase)."""
        return seal(self._fields, value, context.encode())

    def open_field(self, sealed: bytes, context: str) -> bytes:
        return open_sealed(self._fields, sealed, context.encode())

    def code_digest(self, code: str) -> str:
        """What is stored of a one-time code: keyed (8 digits hash in no time without the key)."""
        return hmac.new(self._index, b"code\0" + code.encode(), hashlib.sha256).hexdigest()

    def tokens(self, owner: str, text: str) -> set[str]:
        """The blind index entries of `text` for `owner` (the same word of two owners differs)."""
        prefix = owner.lower().encode() + b"\0"
        key = self._index
        return {hmac.digest(key, prefix + word.encode(), "sha256").hex()[:32] for word in words(text)}

    def token(self, owner: str, word: str) -> str:
        return hmac.digest(self._index, owner.lower().encode() + b"\0" + word.encode(), "sha256").hex()[:32]


# word characters and the combining marks case folding can add ("İ" folds to "i" + U+0307)
_WORD = re.compile(r"[\w\u0300-\u036f]{2,40}", re.UNICODE)
MAX_WORDS = 5000  # per message: the index of a huge body stays bounded


def words(text: str) -> list[str]:
    """The distinct words of `text`, case-folded, in order of first appearance (bounded).
    Folded before it is split (folding can lengthen a word: "ß" → "ss"), so that a word of
    the result, searched for again, is that same word."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.casefold()):
        seen.setdefault(match.group(), None)
        if len(seen) >= MAX_WORDS:
            break
    return list(seen)


def _derive(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)
