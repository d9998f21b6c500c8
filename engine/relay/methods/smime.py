"""S/MIME for recipients whose certificate the relay holds (beyond the seed, SPEC §3).

`encryption.smime.certificates` is a directory of `<address>.pem` files. Flagged mail to a
recipient with a certificate there is encrypted end to end as RFC 8551 enveloped-data
(AES-256-CBC key transport to the recipient's RSA key, what `openssl smime` and mail clients
read) and then delivered normally: the content is protected whatever the transport.
Recipients without a certificate get the configured method. `already_encrypted` tells
S/MIME, PGP and our own format apart from plain mail, so nothing is encrypted twice.
"""

from __future__ import annotations

import base64
import binascii
import email
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

_CONTENT_HEADERS = (b"content-type", b"content-transfer-encoding", b"mime-version", b"content-disposition")


def certificate_for(directory: Path, address: str) -> x509.Certificate | None:
    """The recipient's certificate from `<directory>/<address>.pem`, or None."""
    name = address.strip().lower()
    if "/" in name or name.startswith("."):
        return None
    path = directory / f"{name}.pem"
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


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
_ARMOR = re.compile(
    rb"\A\s*-----BEGIN PGP MESSAGE-----\r?\n(?:[\x21-\x7e]+: [^\r\n]*\r?\n)*\r?\n[A-Za-z0-9+/=\r\n]+=?[A-Za-z0-9+/=]*\r?\n-----END PGP MESSAGE-----\s*\Z"
)


def already_encrypted(content: bytes) -> str | None:
    """ "smime", "pgp" or None: mail that is encrypted already is never encrypted again.

    The content must really be encrypted, not only say so: a plain message labelled
    `application/pkcs7-mime` would otherwise slip past DLP's `encrypt`. S/MIME: the body
    must decode to a PKCS#7 envelopedData structure. PGP: the body (or the second part of a
    multipart/encrypted) must be one ASCII-armoured message and nothing else.
    """
    head, _, body = content.partition(b"\r\n\r\n")
    lowered = head.lower()
    if b"application/pkcs7-mime" in lowered or b"application/x-pkcs7-mime" in lowered:
        return "smime" if _enveloped(body) else None
    if b"multipart/encrypted" in lowered and b"application/pgp-encrypted" in lowered:
        message = email.message_from_bytes(content)
        parts = message.get_payload() if message.is_multipart() else []
        # RFC 3156: the second part holds the armoured message, and it is all the content
        if len(parts) == 2 and _ARMOR.match(parts[1].get_payload(decode=False).encode("latin-1", "replace")):
            return "pgp"
        return None
    if _ARMOR.match(body):
        return "pgp"
    return None


def _enveloped(body: bytes) -> bool:
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (ValueError, binascii.Error):
        return False
    return der[:1] == b"\x30" and _ENVELOPED_DATA in der[:32]
