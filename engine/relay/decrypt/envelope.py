"""S/MIME enveloped-data in a received message: find it, open it, put the message back together.

Three pure steps on bytes, no I/O (the keys come in as values):

- `find`: whether the message is S/MIME encrypted, from its top-level Content-Type read
  with DLP's linear parser (a client wrote it): `application/pkcs7-mime` or the older
  `application/x-pkcs7-mime` with `smime-type=enveloped-data` (or no smime-type and a body
  that is enveloped-data), or the ".p7m" form, `application/octet-stream` named `*.p7m`
  whose body is enveloped-data. A message labelled enveloped-data is encrypted even when
  its body is damaged: it is then reported as failed, not as plain.
- `open_envelope`: the decrypted MIME entity, with the first held key whose certificate
  matches a RecipientInfo; `Undecryptable` with a short reason otherwise. The reasons are
  ours, not the library's, so the header a recipient sees stays stable across versions.
- `rebuild`: the decrypted message. The outer header fields stay (From, To, Subject, Date,
  Received, …) except Content-* and MIME-Version, which come from the decrypted entity.
  Only its Content-* fields are taken: anything else inside was written by the sender
  under the encryption and must not become a header the relay vouches for.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import pkcs7

from engine.certificates.smime_keys import HeldKey
from engine.relay.dlp.mime import POLICY

PKCS7_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
ENCRYPTED = ("enveloped-data", "authenveloped-data")
_OIDS = {  # ContentInfo.contentType, DER-encoded (tag, length, value)
    bytes.fromhex("06092a864886f70d010703"): "enveloped-data",  # 1.2.840.113549.1.7.3
    bytes.fromhex("060b2a864886f70d0109100117"): "authenveloped-data",  # 1.2.840.113549.1.9.16.1.23
    bytes.fromhex("06092a864886f70d010702"): "signed-data",  # 1.2.840.113549.1.7.2
}
DAMAGED = "damaged: not a readable enveloped-data structure"
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")
_LINE_END = re.compile(rb"\r\n|\r|\n")


class Undecryptable(Exception):
    """An encrypted message the relay cannot open; `reason` goes into the header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """An encrypted message's payload: the DER (None when the body could not be decoded)
    and what it is, `enveloped-data` or `authenveloped-data`."""

    der: bytes | None
    kind: str


def find(content: bytes) -> Envelope | None:
    """The S/MIME envelope of `content`, or None when the message is not encrypted."""
    top = BytesHeaderParser(policy=POLICY).parsebytes(content)
    ctype = top.get_content_type()
    body = content.partition(b"\r\n\r\n")[2]
    if ctype in PKCS7_TYPES:
        declared = (top.get_param("smime-type") or "").strip().lower()
        der = _decoded(body, top.get("content-transfer-encoding", ""))
        kind = content_type_of(der) if der is not None else None
        if kind in ENCRYPTED:
            return Envelope(der, kind)
        if kind is None and declared in ("", *ENCRYPTED):  # labelled encrypted, body unreadable
            return Envelope(der, declared or "enveloped-data")
        return None  # signed-data, certs-only, compressed-data: readable as they are
    if ctype == "application/octet-stream" and _p7m_name(top):
        der = _decoded(body, top.get("content-transfer-encoding", ""))
        kind = content_type_of(der) if der is not None else None
        return Envelope(der, kind) if kind in ENCRYPTED else None
    return None


def _p7m_name(top) -> bool:
    name = top.get_param("name") or top.get_param("filename", header="content-disposition") or ""
    return name.strip().lower().endswith(".p7m")


def _decoded(body: bytes, encoding: str) -> bytes | None:
    """The body's bytes under its transfer encoding; None when base64 does not decode."""
    if encoding == "base64":
        try:
            return base64.b64decode(b"".join(body.split()), validate=True)
        except (ValueError, binascii.Error):
            return None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def content_type_of(der: bytes) -> str | None:
    """What a DER ContentInfo holds (enveloped-data, authenveloped-data, signed-data), read
    from its first field, or None when it is none of those or not DER at all."""
    if der[:1] != b"\x30" or len(der) < 2:
        return None
    start = 2 + (der[1] & 0x7F if der[1] & 0x80 else 0)  # past the SEQUENCE's tag and length
    return next((kind for oid, kind in _OIDS.items() if der[start : start + len(oid)] == oid), None)


def open_envelope(envelope: Envelope, keys: list[HeldKey], recipients: list[str]) -> bytes:
    """The decrypted MIME entity. `keys` are those held for the message's internal
    `recipients` (named in the reason when none of them opens it)."""
    if envelope.kind == "authenveloped-data":
        raise Undecryptable("unsupported: authenveloped-data (AES-GCM) cannot be decrypted here")
    if envelope.der is None:
        raise Undecryptable(DAMAGED)
    for held in keys:
        try:
            return pkcs7.pkcs7_decrypt_der(envelope.der, held.certificate, held.key, [])
        except UnsupportedAlgorithm as exc:
            raise Undecryptable(f"unsupported algorithm: {_first_sentence(exc)}") from None
        except ValueError as exc:
            text = str(exc)
            if text.startswith("No recipient found"):
                continue  # encrypted to someone else: the next key
            if "parsing asn1" in text or "Not an S/MIME enveloped" in text:
                raise Undecryptable(DAMAGED) from None
            raise Undecryptable(f"damaged: does not decrypt with the key for {held.address}") from None
    raise Undecryptable(f"no key for {names(recipients)}")


def names(addresses: list[str], most: int = 3) -> str:
    """`a, b, c and 2 more`: a header stays short however many recipients there are."""
    shown = ", ".join(addresses[:most])
    return shown + (f" and {len(addresses) - most} more" if len(addresses) > most else "")


def _first_sentence(exc: Exception) -> str:
    text = " ".join(str(exc).split()).rstrip(".")
    return text[:150] or type(exc).__name__


def rebuild(content: bytes, entity: bytes) -> bytes:
    """The message with the decrypted `entity` as its content (see the module docstring)."""
    head = content.partition(b"\r\n\r\n")[0]
    outer = [line for name, lines in _fields(head.split(b"\r\n"), strict=False) if not _mime(name) for line in lines]
    inner, body = _entity(_LINE_END.sub(b"\r\n", entity))
    return b"\r\n".join([*outer, b"MIME-Version: 1.0", *inner]) + b"\r\n\r\n" + body


def _mime(name: bytes) -> bool:
    return name.startswith(b"content-") or name == b"mime-version"


def _entity(entity: bytes) -> tuple[list[bytes], bytes]:
    """The entity's Content-* header lines and its body. An entity whose first lines are
    not MIME header fields (a plain text encrypted as it was) is all body: no text is lost."""
    if entity.startswith(b"\r\n"):
        return [], entity[2:]
    head, sep, body = entity.partition(b"\r\n\r\n")
    fields = _fields(head.split(b"\r\n")) if sep else None
    if not fields or not any(name.startswith(b"content-") for name, _ in fields):
        return [], entity
    return [line for name, lines in fields if name.startswith(b"content-") for line in lines], body


def _fields(lines: list[bytes], *, strict: bool = True) -> list[tuple[bytes, list[bytes]]] | None:
    """Header lines grouped into fields, `(lower-case name, lines)`. A line that is neither a
    field nor a continuation: `strict`, None (it was no header section); else a field of its
    own with the empty name (the received header section is kept as the client sent it)."""
    fields: list[tuple[bytes, list[bytes]]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line)
        elif _FIELD.match(line):
            fields.append((line.split(b":", 1)[0].strip().lower(), [line]))
        elif strict and line:
            return None
        elif line:
            fields.append((b"", [line]))
    return fields
