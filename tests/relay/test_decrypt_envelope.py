"""engine/relay/decrypt/envelope.py on bytes: what counts as encrypted, and the rebuilt message."""

from __future__ import annotations

import base64

import pytest

from engine.relay.decrypt.envelope import (
    DAMAGED,
    Envelope,
    Undecryptable,
    content_type_of,
    find,
    open_envelope,
    rebuild,
)

ENVELOPED = bytes.fromhex("3080") + bytes.fromhex("06092a864886f70d010703") + b"\xa0\x80rest"
SIGNED = bytes.fromhex("3082ffff") + bytes.fromhex("06092a864886f70d010702") + b"rest"
AUTH = bytes.fromhex("3081ff") + bytes.fromhex("060b2a864886f70d0109100117") + b"rest"


def message(ctype: str, der: bytes, extra: str = "") -> bytes:
    body = base64.encodebytes(der).replace(b"\n", b"\r\n")
    head = f"From: a@outside.example\r\nContent-Type: {ctype}\r\n{extra}Content-Transfer-Encoding: base64\r\n\r\n"
    return head.encode() + body


def test_content_type_of_reads_the_first_field_in_every_length_form() -> None:
    assert [content_type_of(d) for d in (ENVELOPED, SIGNED, AUTH, b"\x30", b"", b"junk")] == [
        "enveloped-data",
        "signed-data",
        "authenveloped-data",
        None,
        None,
        None,
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            message("application/pkcs7-mime; smime-type=enveloped-data", ENVELOPED),
            Envelope(ENVELOPED, "enveloped-data"),
        ),
        (message("application/x-pkcs7-mime", ENVELOPED), Envelope(ENVELOPED, "enveloped-data")),
        (
            message('application/pkcs7-mime; smime-type="authEnveloped-data"', AUTH),
            Envelope(AUTH, "authenveloped-data"),
        ),
        (message("application/pkcs7-mime; smime-type=signed-data", SIGNED), None),
        (message("application/pkcs7-mime", SIGNED), None),  # no smime-type: the body says signed
        (message("application/pkcs7-mime; smime-type=enveloped-data", SIGNED), None),  # the label lies
        (message("application/pkcs7-mime; smime-type=certs-only", b"junk"), None),
        (message('application/octet-stream; name="smime.p7m"', ENVELOPED), Envelope(ENVELOPED, "enveloped-data")),
        (
            message("application/octet-stream", ENVELOPED, 'Content-Disposition: attachment; filename="x.P7M"\r\n'),
            Envelope(ENVELOPED, "enveloped-data"),
        ),
        (message('application/octet-stream; name="smime.p7m"', SIGNED), None),
        (message("application/octet-stream", ENVELOPED), None),  # no .p7m name: an attachment like any other
        (message("text/plain", ENVELOPED), None),
    ],
)
def test_what_counts_as_encrypted(content: bytes, expected: Envelope | None) -> None:
    assert find(content) == expected


def test_a_message_labelled_encrypted_whose_body_is_not_base64_is_encrypted_and_damaged() -> None:
    content = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%\r\n"
    envelope = find(content)
    assert envelope == Envelope(None, "enveloped-data")
    with pytest.raises(Undecryptable) as raised:
        open_envelope(envelope, [], ["bob@example.com"])
    assert raised.value.reason == DAMAGED


def test_without_keys_the_reason_names_the_recipients() -> None:
    with pytest.raises(Undecryptable) as raised:
        open_envelope(Envelope(ENVELOPED, "enveloped-data"), [], ["bob@example.com", "carol@example.com"])
    assert raised.value.reason == "no key for bob@example.com, carol@example.com"


OUTER = (
    b"Received: from x\r\n\tby y; date\r\n"
    b"From: a@outside.example\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: application/pkcs7-mime;\r\n smime-type=enveloped-data\r\n"
    b"Subject: s\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\nMIIB...\r\n"
)


def test_rebuild_keeps_the_outer_fields_and_takes_content_fields_from_inside() -> None:
    entity = (
        b"Content-Type: multipart/mixed;\n boundary=b\n"
        b"Subject: forged inside\n"
        b"Content-Transfer-Encoding: 7bit\n"
        b"\n--b\nbody\n--b--\n"
    )
    assert rebuild(OUTER, entity) == (
        b"Received: from x\r\n\tby y; date\r\n"
        b"From: a@outside.example\r\n"
        b"Subject: s\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed;\r\n boundary=b\r\n"
        b"Content-Transfer-Encoding: 7bit\r\n"
        b"\r\n--b\r\nbody\r\n--b--\r\n"
    )


@pytest.mark.parametrize(
    "entity",
    [
        b"Note: not a header\r\nline two\r\n\r\nmore\r\n",  # a second line that is no field: all body
        b"Note: a header-like line, but no Content field\r\n\r\nmore\r\n",
        b"just text, no header at all\r\n",
    ],
)
def test_an_entity_that_is_not_mime_is_all_body(entity: bytes) -> None:
    assert rebuild(b"From: a@outside.example\r\n\r\nx", entity) == (
        b"From: a@outside.example\r\nMIME-Version: 1.0\r\n\r\n" + entity
    )


def test_an_entity_with_an_empty_header_section() -> None:
    assert rebuild(b"From: a@outside.example\r\n\r\nx", b"\r\nbody\r\n") == (
        b"From: a@outside.example\r\nMIME-Version: 1.0\r\n\r\nbody\r\n"
    )
