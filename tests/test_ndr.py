"""Delivery status notifications: parsed back with the stdlib `email` package, field by field,
plus the status choice and the never-bounce-a-bounce rule."""

from __future__ import annotations

import email
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.utils import parsedate_to_datetime

import pytest

from engine.relay.delivery.failures import expire
from engine.relay.delivery.ndr import RecipientStatus, build_dsn, should_send_dsn

ARRIVAL = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
LAST = ARRIVAL + timedelta(hours=5)
UNTIL = ARRIVAL + timedelta(days=5)
ORIGINAL = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@partner.example\r\n"
    b"Subject: Quarterly numbers\r\n"
    b"Message-ID: <q1@example.org>\r\n"
    b"\r\n"
    b"SECRET-BODY-TOKEN: the numbers are confidential\r\n"
)
BOUNCED = RecipientStatus(
    "bob@partner.example",
    "failed",
    "5.1.1",
    "550 5.1.1 <bob@partner.example>: Recipient address rejected",
    "mx1.partner.example",
    LAST,
    None,
)


def dsn(**overrides) -> bytes:
    arguments = {
        "reporting_mta": "relay.example.org",
        "original_sender": "alice@example.org",
        "original_envelope_id": "QQ314159",
        "arrival_date": ARRIVAL,
        "recipients": [BOUNCED],
        "original_message": ORIGINAL,
        "include": "headers",
        "kind": "failure",
    }
    arguments.update(overrides)
    return build_dsn(**arguments)


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def status_blocks(message: EmailMessage) -> list:
    part = message.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status"
    return part.get_payload()


def test_failure_report_structure_and_headers() -> None:
    raw = dsn()
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert [part.get_content_type() for part in message.get_payload()] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    assert message["From"].addresses[0].addr_spec == "MAILER-DAEMON@relay.example.org"
    assert message["To"].addresses[0].addr_spec == "alice@example.org"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["Subject"] == "Undelivered Mail Returned to Sender"
    assert message["In-Reply-To"] == "<q1@example.org>"
    assert re.fullmatch(r"<[^<>@\s]+@relay\.example\.org>", message["Message-ID"])
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert parse(dsn())["Message-ID"] != message["Message-ID"]
    assert not message.defects and all(not part.defects for part in message.walk())
    # Ready for SMTP DATA: CRLF only, no line over 998 octets, 7-bit here.
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert raw.isascii()


def test_delivery_status_fields() -> None:
    message = parse(dsn())
    per_message, recipient = status_blocks(message)
    assert per_message["Reporting-MTA"] == "dns; relay.example.org"
    assert per_message["Original-Envelope-Id"] == "QQ314159"
    assert parsedate_to_datetime(per_message["Arrival-Date"]) == ARRIVAL
    assert recipient["Final-Recipient"] == "rfc822; bob@partner.example"
    assert recipient["Action"] == "failed"
    assert recipient["Status"] == "5.1.1"
    assert recipient["Remote-MTA"] == "dns; mx1.partner.example"
    assert recipient["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@partner.example>: Recipient address rejected"
    assert parsedate_to_datetime(recipient["Last-Attempt-Date"]) == LAST
    assert "Will-Retry-Until" not in recipient


def test_human_readable_part_says_what_why_and_for_whom() -> None:
    text = " ".join(parse(dsn()).get_payload()[0].get_content().split())
    assert "could not be delivered" in text and "permanent" in text
    assert "<bob@partner.example>" in text
    assert "the mailbox does not exist" in text
    assert "550 5.1.1 <bob@partner.example>: Recipient address rejected" in text
    assert "Subject: Quarterly numbers" in text


def test_delay_warning() -> None:
    delayed = RecipientStatus("bob@partner.example", "delayed", "4.4.1", None, "mx1.partner.example", LAST, UNTIL)
    message = parse(dsn(kind="delay", recipients=[delayed]))
    assert message["Subject"] == "Delayed Mail (still being retried)"
    _, recipient = status_blocks(message)
    assert recipient["Action"] == "delayed"
    assert recipient["Status"] == "4.4.1"
    assert parsedate_to_datetime(recipient["Will-Retry-Until"]) == UNTIL
    assert "Diagnostic-Code" not in recipient
    text = " ".join(message.get_payload()[0].get_content().split())
    assert "No action is needed" in text
    assert "we keep trying until Sat, 07 Mar 2026 09:00:00 +0000" in text


def test_several_recipients_get_a_block_each() -> None:
    second = RecipientStatus("carol@partner.example", "failed", "5.2.2", "552 5.2.2 mailbox full", None, LAST, None)
    blocks = status_blocks(parse(dsn(recipients=[BOUNCED, second])))
    assert [block["Final-Recipient"] for block in blocks[1:]] == [
        "rfc822; bob@partner.example",
        "rfc822; carol@partner.example",
    ]
    assert "Remote-MTA" not in blocks[2]


def test_include_headers_does_not_leak_the_body() -> None:
    raw = dsn(include="headers")
    assert b"SECRET-BODY-TOKEN" not in raw
    headers = parse(raw).get_payload()[2]
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Quarterly numbers" in headers.get_content()


def test_include_headers_stops_at_a_line_that_is_not_a_header() -> None:
    # No empty line before the body: a parser starts the body at the first non-header line.
    raw = dsn(original_message=b"Subject: hi\r\nSECRET-BODY-TOKEN without a colon\r\nmore body: text\r\n")
    assert b"SECRET-BODY-TOKEN" not in raw and b"more body" not in raw


def test_include_full_attaches_the_message_verbatim() -> None:
    original = ORIGINAL + "Grüße\r\n".encode()
    raw = dsn(include="full", original_message=original)
    assert original in raw  # byte for byte, 8-bit included
    attached = parse(raw).get_payload()[2]
    assert attached.get_content_type() == "message/rfc822"
    assert attached["Content-Transfer-Encoding"] == "8bit"
    inner = attached.get_payload()[0]
    assert inner["Subject"] == "Quarterly numbers"


def test_include_full_keeps_a_multipart_original_intact() -> None:
    original = (
        b"From: alice@example.org\r\n"
        b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and a header folded\r\n"
        b"   over two lines\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n'
        b"\r\n"
        b"preamble\r\n"
        b"--b1\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"first part\r\n"
        b"--b1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n"
        b"AAECAwQ=\r\n"
        b"--b1--\r\n"
    )
    raw = dsn(include="full", original_message=original)
    assert original in raw
    assert parse(raw).get_payload()[2]["Content-Transfer-Encoding"] == "7bit"


def test_include_headers_with_8bit_header_bytes() -> None:
    original = "Subject: Grüße\r\nFrom: a@example.org\r\n\r\nbody\r\n".encode()
    raw = dsn(original_message=original)
    assert "Subject: Grüße\r\nFrom: a@example.org\r\n".encode() in raw
    assert b"body" not in raw.split(b"Subject: Gr")[-1]


def test_include_none_has_two_parts() -> None:
    message = parse(dsn(include="none"))
    assert [part.get_content_type() for part in message.get_payload()] == ["text/plain", "message/delivery-status"]


@pytest.mark.parametrize(
    "evil",
    [
        "550 no\r\nBcc: victim@example.net",
        "550 no\nBcc: victim@example.net",
        "550 no\rBcc: victim@example.net",
        "550 no =?utf-8?q?x=0D=0ABcc:_victim@example.net?=",
    ],
)
def test_header_injection_through_the_diagnostic_is_neutralised(evil: str) -> None:
    injected = RecipientStatus("bob@partner.example\r\nBcc: victim2@example.net", "failed", "5.0.0", evil, None)
    raw = dsn(
        recipients=[injected],
        original_envelope_id="id\r\nBcc: victim3@example.net",
        original_sender="alice@example.org\r\nBcc: victim4@example.net",
    )
    assert re.search(rb"(^|\n)Bcc:", raw, re.IGNORECASE) is None
    message = parse(raw)
    assert "Bcc" not in message
    per_message, recipient = status_blocks(message)
    assert set(per_message.keys()) == {"Reporting-MTA", "Original-Envelope-Id", "Arrival-Date"}
    assert set(recipient.keys()) == {"Final-Recipient", "Action", "Status", "Diagnostic-Code"}
    assert "victim@example.net" in recipient["Diagnostic-Code"]


def test_non_ascii_recipient_and_diagnostic() -> None:
    recipient = RecipientStatus(
        "jürgen@bücher.example", "failed", "5.1.1", "550 5.1.1 Empfänger unbekannt", "mx.bücher.example", LAST
    )
    raw = dsn(recipients=[recipient])
    assert raw.isascii()  # machine part escaped, human part quoted-printable
    message = parse(raw)
    _, block = status_blocks(message)
    assert block["Final-Recipient"] == "utf-8; j\\x{FC}rgen@b\\x{FC}cher.example"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 Empf\\x{E4}nger unbekannt"
    text = " ".join(message.get_payload()[0].get_content().split())
    assert "<jürgen@bücher.example>" in text and "Empfänger unbekannt" in text


def test_non_ascii_sender_gets_a_utf8_header() -> None:
    raw = dsn(original_sender="anaïs@example.org")
    assert "To: anaïs@example.org\r\n".encode() in raw
    message = email.message_from_string(raw.decode("utf-8"), policy=policy.default)
    assert message["To"].addresses[0].addr_spec == "anaïs@example.org"


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="must be 5"):
        dsn(recipients=[RecipientStatus("b@x.example", "failed", "4.4.1")])
    with pytest.raises(ValueError, match="does not belong"):
        dsn(recipients=[RecipientStatus("b@x.example", "delayed", "4.4.1")])
    with pytest.raises(ValueError, match="timezone-aware"):
        dsn(arrival_date=datetime(2026, 3, 2, 9, 0))
    with pytest.raises(ValueError, match="host name"):
        dsn(reporting_mta="relay.example.org\r\nBcc: x")
    with pytest.raises(ValueError, match="at least one"):
        dsn(recipients=[])
    with pytest.raises(ValueError, match="never bounce a bounce"):
        dsn(original_sender="<>")


def test_long_non_ascii_diagnostic_stays_within_line_limits() -> None:
    recipient = RecipientStatus("b@x.example", "failed", "5.0.0", "550 " + "ü" * 2000)
    raw = dsn(recipients=[recipient])
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    code = status_blocks(parse(raw))[1]["Diagnostic-Code"]
    assert code.startswith("smtp; 550 \\x{FC}") and code.endswith("\\x{FC}")


@pytest.mark.parametrize(
    ("sender", "send"),
    [
        ("", False),
        ("<>", False),
        (" <> ", False),
        ("MAILER-DAEMON@relay.example.org", False),
        ("<mailer-daemon@partner.example>", False),
        ("alice@example.org", True),
        ("<alice@example.org>", True),
        ("postmaster@example.org", True),
    ],
)
def test_should_send_dsn(sender: str, send: bool) -> None:
    assert should_send_dsn(sender) is send


def test_an_expired_recipient_is_reported_failed_with_5_4_7() -> None:
    failure = expire("connection refused")
    expired = RecipientStatus("b@x.example", "failed", failure.status, failure.reason)
    assert status_blocks(parse(dsn(recipients=[expired])))[1]["Status"] == "5.4.7"
