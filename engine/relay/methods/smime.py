"""S/MIME for recipients whose certificate the relay holds (beyond the seed, SPEC §3).

`encryption.smime.certificates` is a directory of `<address>.pem` files. Flagged mail to a
recipient with a certificate there is encrypted end to end as RFC 8551 enveloped-data
(AES-256-CBC key transport to the recipient's RSA key, what `openssl smime` and mail clients
read) and then delivered normally: the content is protected whatever the transport.
Recipients without a certificate get the configured method. `already_encrypted` tells
S/MIME, PGP and our own format apart from plain mail, so nothing is encrypted twice.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7

from engine.relay.delivery.failures import because
from engine.relay.dlp import mimetree
from engine.relay.methods.base import Protection, Sealed, TLSFloor
from engine.relay.queue import Entry

log = logging.getLogger(__name__)
_CONTENT_HEADERS = (b"content-type", b"content-transfer-encoding", b"mime-version", b"content-disposition")


def certificate_for(directory: Path, address: str) -> x509.Certificate | None:
    """The recipient's certificate from `<directory>/<address>.pem`, or None."""
    name = address.strip().lower()
    if "/" in name or name.startswith("."):
        return None
    path = directory / f"{name}.pem"
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    now = datetime.now(UTC)
    if (
        not isinstance(cert.public_key(), rsa.RSAPublicKey)
        or not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    ):
        log.warning("S/MIME certificate %s is not usable (only valid RSA certificates are): ignored", path)
        return None
    return cert


def encrypt(content: bytes, certificates: list[x509.Certificate]) -> bytes:
    """The message with its MIME entity encrypted for `certificates`; the other top-level
    headers (From, To, Subject, Date, Received, …) stay readable, as RFC 8551 does it."""
    head, _, body = content.partition(b"\r\n\r\n")
    outer, inner = [], []
    current = None
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        current = inner if name in _CONTENT_HEADERS and name != b"mime-version" else outer
        if name != b"mime-version":
            current.append(line)
    if not any(line.lower().startswith(b"content-type:") for line in inner):
        inner.insert(0, b"Content-Type: text/plain; charset=us-ascii")
    entity = b"\r\n".join(inner) + b"\r\n\r\n" + body
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(entity)
    for certificate in certificates:
        builder = builder.add_recipient(certificate)
    smime = builder.encrypt(serialization.Encoding.SMIME, [])
    smime = smime.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return b"\r\n".join(outer) + b"\r\n" + smime


_ENVELOPED_DATA = bytes.fromhex("06092a864886f70d010703")  # OID 1.2.840.113549.1.7.3
_BASE64_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_ARMOR_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+: [^\r\n]*")


def already_encrypted(content: bytes, tree: mimetree.Part | None = None) -> str | None:
    """ "smime", "pgp" or None: mail that is encrypted already is never encrypted again.

    The structure must really be an encrypted message, not only say so: the top-level
    Content-Type (parsed, not searched for) is application/pkcs7-mime with a body that is
    base64 throughout and decodes to PKCS#7 envelopedData, or multipart/encrypted (RFC
    3156) with exactly the control part and one ASCII-armoured message, or a body that is
    one armoured message and nothing else. `decide` adds a backstop: if DLP matched
    readable body text, the message is not encrypted, whatever its structure says.

    Parsed by the DLP's linear MIME parser (dlp/mimetree.py): no copy of the message, no
    recursion, parameters in one pass; an absurd Content-Type (over MAX_ENCRYPTED_TYPE
    characters: a real one has a few hundred) rules a part out.
    """
    message = tree if tree is not None else mimetree.parse(content)  # `tree`: DLP's parse of it
    if _absurd(message):
        return None
    ctype = message.get_content_type()
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        smime_type = (message.get_param("smime-type") or "enveloped-data").lower()
        if smime_type in ("enveloped-data", "authenveloped-data") and _enveloped(message.body()):
            return "smime"
        return None
    if ctype == "multipart/encrypted":
        parts = message.children or []
        if (
            len(parts) == 2
            and not any(_absurd(part) for part in parts)
            and parts[0].get_content_type() == "application/pgp-encrypted"
            and bytes(parts[0].body()[:256]).strip().lower() == b"version: 1"
            and parts[1].get_content_type() == "application/octet-stream"
            and not parts[1].is_multipart()
            and _armoured(parts[1].body())
        ):
            return "pgp"
        return None
    if not message.is_multipart() and _armoured(message.body()):
        return "pgp"
    return None


MAX_ENCRYPTED_TYPE = 1024  # an encrypted message's Content-Type is a few hundred characters


def _absurd(part: mimetree.Part) -> bool:
    return len(part.get("content-type", "")) > MAX_ENCRYPTED_TYPE


def _enveloped(body: memoryview) -> bool:
    """Base64 from end to end (checked a MiB at a time) whose first bytes are the DER of
    PKCS#7 envelopedData."""
    for at in range(0, len(body), mimetree.CHUNK):
        chunk = bytes(body[at : at + mimetree.CHUNK]).translate(None, b" \t\r\n")
        if chunk.translate(None, _BASE64_CHARS):
            return False
    head = bytes(body[:128]).translate(None, b" \t\r\n")
    try:
        der = binascii.a2b_base64(head[: len(head) // 4 * 4], strict_mode=True)
    except (ValueError, binascii.Error):
        return False
    return der[:1] == b"\x30" and _ENVELOPED_DATA in der[:24]


_BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_ARMOUR_START = b"-----BEGIN PGP MESSAGE-----"


def _armoured(body) -> bool:
    """One ASCII-armoured PGP message and nothing else, checked line by line (linear time);
    anything else is ruled out by its first bytes, without a copy."""
    if not bytes(body[:4096]).lstrip().startswith(_ARMOUR_START):
        return False
    lines = bytes(body).strip().split(b"\n")
    lines = [line.rstrip(b"\r") for line in lines]
    if len(lines) < 3 or lines[0] != b"-----BEGIN PGP MESSAGE-----" or lines[-1] != b"-----END PGP MESSAGE-----":
        return False
    inner = lines[1:-1]
    while inner and inner[0] and _ARMOR_HEADER.fullmatch(inner[0]):
        inner = inner[1:]
    if not inner or inner[0] != b"":
        return False
    payload = [line for line in inner[1:] if line]
    return bool(payload) and all(
        _BASE64_LINE.fullmatch(line) or (line[:1] == b"=" and _BASE64_LINE.fullmatch(line[1:])) for line in payload
    )


@dataclass(frozen=True)
class SMIME:
    """The chain's first step when `encryption.smime` is set: recipients with a certificate
    get an end-to-end encrypted copy (under the configured method's TLS floor, if it has
    one: the headers still travel in the transport); the others are passed on."""

    directory: Path
    floor: TLSFloor | None
    name: str = "smime"

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        with_cert, without = [], []
        for rcpt in recipients:
            cert = certificate_for(self.directory, rcpt)
            (with_cert.append((rcpt, cert)) if cert is not None else without.append(rcpt))
        if not with_cert:
            return Protection(passed=tuple(without))
        sealed_for = tuple(r for r, _ in with_cert)
        try:
            body = await asyncio.to_thread(encrypt, entry.body, [c for _, c in with_cert])
        except Exception as exc:  # noqa: BLE001 - never plain instead: the recipients wait
            failure = because("method", f"S/MIME encryption failed: {exc}")
            return Protection(refused=dict.fromkeys(sealed_for, failure), passed=tuple(without))
        return Protection(sealed=(Sealed(sealed_for, self.floor, body, "S/MIME"),), passed=tuple(without))
