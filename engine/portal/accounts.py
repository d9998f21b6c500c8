"""Portal accounts: passwords, the TOTP second factor, and the security phrase.

- Passwords: at least 12 characters and a zxcvbn score of 3 or more (zxcvbn ships its
  own lists of common passwords, names and words; it needs no network). The address and
  its parts count as words a guesser knows. Stored as argon2id, 19 MiB, t=2 (OWASP's
  minimum), p=1; hashes with weaker parameters are upgraded at the next login.
- TOTP (RFC 6238, 30 s, 6 digits, one step of clock drift either way) with pyotp; the
  enrolment page shows the secret and a QR code drawn as inline SVG (segno), no network.
- The security phrase: chosen by the user, shown after the address is entered and before
  the password. For an address without an account a phrase is made up from the address
  under a server secret, the same every time, so the page answers alike for both.
"""

from __future__ import annotations

import hashlib
import hmac
import io
from dataclasses import dataclass

import pyotp
import segno
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

MIN_LENGTH = 12
MIN_SCORE = 3
MAX_LENGTH = 256  # argon2 hashes anything; a megabyte password is a denial of service
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=Type.ID)
# verifying against this when the address has no account costs what a real check costs
_DUMMY = HASHER.hash("sealrelay: no such account")


@dataclass(frozen=True)
class Strength:
    ok: bool
    problem: str  # why not, in words a user can act on ("" when ok)


def strength(password: str, address: str = "") -> Strength:
    if len(password) < MIN_LENGTH:
        return Strength(False, f"Use at least {MIN_LENGTH} characters.")
    if len(password) > MAX_LENGTH:
        return Strength(False, f"Use at most {MAX_LENGTH} characters.")
    local, _, domain = address.partition("@")
    hints = [w for w in (address, local, domain, *domain.split(".")) if w]
    result = zxcvbn(password[:100], user_inputs=hints)  # zxcvbn's cost grows with length
    if result["score"] < MIN_SCORE:
        feedback = result.get("feedback") or {}
        why = feedback.get("warning") or "This password would be easy to guess."
        tips = " ".join(feedback.get("suggestions") or ["Add more words or characters that are not common."])
        return Strength(False, f"{why} {tips}".strip())
    return Strength(True, "")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether `password` matches; with no stored hash the same work is done and False returned."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    return HASHER.check_needs_rehash(stored)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_ok(secret: str, code: str, at: float) -> bool:
    code = "".join(code.split())
    return code.isdigit() and len(code) == 6 and pyotp.TOTP(secret).verify(code, for_time=int(at), valid_window=1)


def totp_qr_svg(secret: str, address: str, issuer: str) -> str:
    uri = pyotp.TOTP(secret).provisioning_uri(name=address, issuer_name=issuer)
    out = io.BytesIO()  # segno writes bytes
    segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, svgns=True, scale=5, title="TOTP QR code")
    return out.getvalue().decode("utf-8")


_WORDS = (
    "amber anchor apple arrow aspen badge basil beacon birch bison bloom breeze brook cactus canyon cedar "
    "cherry cinder cobalt comet copper coral cotton crane crystal dawn delta dune eagle ember falcon fern "
    "fjord flint forest fox garnet glacier granite harbor hazel heron indigo iris island ivory jade juniper "
    "kestrel lagoon lantern laurel lemon lilac linen lotus maple marble meadow mesa mint moss nectar nova "
    "oak ocean olive onyx orchid otter pebble pepper pine plum prairie quartz raven reef river robin saffron "
    "sage salmon sequoia shore silver slate spruce summit swan thistle thunder tulip tundra velvet violet "
    "walnut willow winter wren yarrow zephyr"
).split()


def decoy_phrase(secret: bytes, address: str) -> str:
    """The phrase shown for an address without an account: three words, stable per address."""
    mac = hmac.new(secret, b"phrase\0" + address.lower().encode(), hashlib.sha256).digest()
    return " ".join(_WORDS[b % len(_WORDS)] for b in mac[:3])
