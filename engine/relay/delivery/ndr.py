"""Delivery status notifications: the bounce (NDR) and the delay warning sent to a sender.

`build_dsn(...)` returns an RFC 3464 report as bytes with CRLF line endings, ready to queue:

    multipart/report; report-type=delivery-status       (RFC 6522)
     ├── text/plain                 what happened, to whom, why, in plain words
     ├── message/delivery-status    Reporting-MTA, Arrival-Date; per recipient Final-Recipient,
     │                              Action, Status, Remote-MTA, Diagnostic-Code, dates
     └── text/rfc822-headers        the original's header (include="headers"), or
         message/rfc822             the whole original (include="full"), or nothing ("none")

**Send the DSN with an empty envelope sender** (`MAIL FROM:<>`, RFC 5321 §4.5.5, RFC 3464
§2) to the original envelope sender, so that a DSN that cannot be delivered is dropped instead
of bouncing back. `should_send_dsn(sender)` says whether to send one at all: never for mail
whose own sender is empty or a MAILER-DAEMON (never bounce a bounce).

The machine-readable part stays ASCII, as `message/delivery-status` requires: a non-ASCII
address is written with RFC 6533's `utf-8` address type in its 7-bit form (`\\x{E9}` for é),
and non-ASCII diagnostic text with the same escape. The human-readable part carries the text
as it is (UTF-8, quoted-printable). Every value from outside (addresses, the peer's reply, the
envelope id) is reduced to one line before use, so a CR or LF in it cannot start a header.

The report is 7-bit unless the original attached with it has 8-bit bytes (then that part and
the report are labelled `8bit`, and the next hop must offer 8BITMIME: fall back to
`include="headers"` otherwise), or the sender's address is not ASCII (then it needs SMTPUTF8).

The status each recipient reports comes from `failures` (the one place that decides what a
failure means); this module only writes it down.
"""

from __future__ import annotations

import ipaddress
import re
import textwrap
from dataclasses import dataclass
from datetime import datetime
from email import policy as email_policy
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser, BytesParser, Parser
from email.utils import format_datetime, make_msgid
from io import BytesIO
from typing import Literal

Action = Literal["failed", "delayed"]
Include = Literal["headers", "full", "none"]
Kind = Literal["failure", "delay"]

_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$"
)
_MESSAGE_ID = re.compile(r"<[!-;=?-~]{1,250}>")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")
_HEADER_FIELD = re.compile(rb"^[!-9;-~]+:")
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_MAX_VALUE = 900  # characters of one outside value; a header line must stay under 998
_WIDTH = 76
# The report's own parts are emitted exactly as rendered here: no refolding, which would also
# decode RFC 2047 encoded-words found in a peer's reply.
_POLICY = email_policy.SMTP.clone(refold_source="none")


@dataclass(frozen=True, slots=True)
class RecipientStatus:
    """What happened to one recipient. `status` is an RFC 3463 code whose class matches
    `action` (5.x.y failed, 4.x.y delayed); `diagnostic` the peer's reply or our reason;
    `remote_mta` the host that gave it; dates are timezone-aware."""

    address: str
    action: Action
    status: str
    diagnostic: str | None = None
    remote_mta: str | None = None
    last_attempt: datetime | None = None
    will_retry_until: datetime | None = None
    original_recipient: str | None = None  # the ORCPT parameter as given, e.g. "rfc822;a@b"


def should_send_dsn(original_sender: str) -> bool:
    """False when a DSN must not be sent: the null sender (`<>` or empty, i.e. the message is
    itself a DSN) and MAILER-DAEMON addresses."""
    address = original_sender.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    if not address:
        return False
    local = address.rpartition("@")[0] if "@" in address else address
    return local.lower() != "mailer-daemon"


def build_dsn(
    *,
    reporting_mta: str,
    original_sender: str,
    original_envelope_id: str | None,
    arrival_date: datetime,
    recipients: list[RecipientStatus],
    original_message: bytes,
    include: Include,
    kind: Kind,
) -> bytes:
    """The DSN for `recipients` of one message, as bytes. `kind` "failure" reports failed
    recipients, "delay" delayed ones; send it from `<>` (see the module docstring).

    Raises ValueError for a bad host name, a sender `should_send_dsn` refuses, an empty or
    inconsistent recipient list, a status that does not match its action, or a naive datetime.
    """
    if not _HOSTNAME.match(reporting_mta):
        raise ValueError(f"reporting_mta is not a host name: {reporting_mta!r}")
    if include not in ("headers", "full", "none") or kind not in ("failure", "delay"):
        raise ValueError(f"bad include {include!r} or kind {kind!r}")
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    for recipient in recipients:
        _check(recipient, kind)
    _aware(arrival_date)

    if not should_send_dsn(original_sender):
        raise ValueError(f"no DSN may be sent to {original_sender!r}: never bounce a bounce")

    header = _header_section(original_message)
    sender = _one_line(original_sender).strip().strip("<>").strip()
    policy = _POLICY if sender.isascii() else _POLICY.clone(utf8=True)

    report = EmailMessage(policy=policy)
    report["From"] = Address("Mail Delivery System", "MAILER-DAEMON", reporting_mta.lower())
    report["To"] = sender
    report["Subject"] = (
        "Undelivered Mail Returned to Sender" if kind == "failure" else "Delayed Mail (still being retried)"
    )
    report["Date"] = format_datetime(datetime.now().astimezone())
    report["Message-ID"] = make_msgid("dsn", domain=reporting_mta.lower())
    report["Auto-Submitted"] = "auto-replied"
    original_id = _MESSAGE_ID.search(_header_field(header, "message-id"))
    if original_id:
        report["In-Reply-To"] = original_id.group(0)
        report["References"] = original_id.group(0)
    report["MIME-Version"] = "1.0"
    report["Content-Type"] = "multipart/report; report-type=delivery-status"

    human = MIMEPart(policy=policy)
    text = _human_text(reporting_mta, arrival_date, recipients, _header_field(header, "subject"), include, kind)
    human.set_content(text, charset="utf-8", cte="7bit" if text.isascii() else "quoted-printable")
    human["Content-Description"] = "Notification"
    report.attach(human)

    fields = _status_fields(reporting_mta, original_envelope_id, arrival_date, recipients)
    status = Parser(policy=policy).parsestr(
        "Content-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n" + fields
    )
    report.attach(status)

    if include != "none":
        original = header if include == "headers" else original_message
        part = MIMEPart(policy=policy)
        part["Content-Description"] = "Undelivered message headers" if include == "headers" else "Undelivered message"
        part["Content-Transfer-Encoding"] = "7bit" if original.isascii() else "8bit"
        if include == "headers":
            part["Content-Type"] = "text/rfc822-headers"
            # Written as is; bytes that are not ASCII ride through as surrogates.
            part.set_payload(_LINE_ENDS.sub("\r\n", original.decode("ascii", "surrogateescape")))
        else:
            part["Content-Type"] = "message/rfc822"
            # Parsed and written back with this policy, which emits header fields as they came
            # and 8-bit bodies byte for byte: the original, with CRLF line endings.
            part.set_payload([BytesParser(policy=policy).parsebytes(original)])
        report.attach(part)
        if not original.isascii():
            report["Content-Transfer-Encoding"] = "8bit"

    out = BytesIO()
    BytesGenerator(out, policy=policy).flatten(report)
    return out.getvalue()


def _check(recipient: RecipientStatus, kind: Kind) -> None:
    found = _STATUS.match(recipient.status)
    expected = {"failed": "5", "delayed": "4"}.get(recipient.action)
    if expected is None or (recipient.action == "failed") != (kind == "failure"):
        raise ValueError(f"{recipient.address}: action {recipient.action!r} does not belong in a {kind} report")
    if not found or found.group(1) != expected:
        raise ValueError(
            f"{recipient.address}: status {recipient.status!r} must be {expected}.x.y for {recipient.action}"
        )
    for when in (recipient.last_attempt, recipient.will_retry_until):
        if when is not None:
            _aware(when)


def _status_fields(
    reporting_mta: str, envelope_id: str | None, arrival: datetime, recipients: list[RecipientStatus]
) -> str:
    """The message/delivery-status body: a per-message block, then one block per recipient."""
    blocks = [[f"Reporting-MTA: dns; {reporting_mta.lower()}"]]
    if envelope_id:
        blocks[0].append(f"Original-Envelope-Id: {_ascii(envelope_id)}")
    blocks[0].append(f"Arrival-Date: {format_datetime(arrival)}")
    for recipient in recipients:
        lines = []
        if recipient.original_recipient:
            lines.append(f"Original-Recipient: {_ascii(recipient.original_recipient)}")
        lines += [
            f"Final-Recipient: {_address_field(recipient.address)}",
            f"Action: {recipient.action}",
            f"Status: {recipient.status}",
        ]
        if recipient.remote_mta:
            lines.append(f"Remote-MTA: dns; {_mta_name(recipient.remote_mta)}")
        if recipient.diagnostic:
            diagnostic = _ascii(recipient.diagnostic)
            # "smtp" says the text is an SMTP reply; our own reasons get an X- type.
            diagnostic_type = "smtp" if re.match(r"[245]\d\d(?:[ -]|$)", diagnostic) else "X-Sealrelay"
            # Folded with one space, which unfolding (RFC 5322 §2.2.3) turns back into the original.
            lines += _wrap(f"Diagnostic-Code: {diagnostic_type}; {diagnostic}", " ")
        if recipient.last_attempt:
            lines.append(f"Last-Attempt-Date: {format_datetime(recipient.last_attempt)}")
        if recipient.will_retry_until and recipient.action == "delayed":
            lines.append(f"Will-Retry-Until: {format_datetime(recipient.will_retry_until)}")
        blocks.append(lines)
    return "\r\n\r\n".join("\r\n".join(lines) for lines in blocks) + "\r\n"


def _human_text(
    reporting_mta: str,
    arrival: datetime,
    recipients: list[RecipientStatus],
    subject: str,
    include: Include,
    kind: Kind,
) -> str:
    """The part a person reads: what happened, to which recipients, why, and what to do."""
    whom = "recipients" if len(recipients) > 1 else "recipient"
    if kind == "failure":
        summary = (
            f"Your message could not be delivered to the {whom} below."
            " We have stopped trying: this is a permanent failure."
        )
    else:
        latest = max((r.will_retry_until for r in recipients if r.will_retry_until), default=None)
        until = f" until {format_datetime(latest)}" if latest else ""
        summary = (
            f"Your message has not been delivered yet to the {whom} below. No action is needed on"
            f" your part: we keep trying{until}, and will tell you if we give up."
        )
    lines = [f"This is the mail delivery system at {reporting_mta.lower()}.", "", *_wrap(summary), ""]
    lines += _wrap(f"Subject: {_one_line(subject) or '(none)'}", "         ")
    lines += [f"Sent:    {format_datetime(arrival)}", ""]
    for recipient in recipients:
        lines.append(f"<{_one_line(recipient.address)}>")
        lines += _wrap(f"    Why: {_plain_reason(recipient.status)} ({recipient.status}).", "      ")
        if recipient.diagnostic:
            speaker = "The receiving server said" if recipient.remote_mta else "Details"
            lines += _wrap(f"    {speaker}: {_one_line(recipient.diagnostic)}", "      ")
        if recipient.remote_mta:
            lines.append(f"    Server: {_one_line(recipient.remote_mta)}")
        if recipient.last_attempt:
            lines.append(f"    Last attempt: {format_datetime(recipient.last_attempt)}")
        if recipient.action == "delayed" and recipient.will_retry_until:
            lines.append(f"    We keep trying until: {format_datetime(recipient.will_retry_until)}")
        lines.append("")
    attached = {
        "headers": "The headers of your message are attached below.",
        "full": "Your message is attached below.",
        "none": "Your message is not attached.",
    }
    lines += [attached[include], "If you need help, forward this report to your mail administrator."]
    return "\n".join(lines) + "\n"


# RFC 3463 subject.detail in plain words; the subject alone when the detail is unknown.
_PLAIN_DETAIL = {
    "1.1": "the mailbox does not exist at the recipient's domain",
    "1.2": "the recipient's domain does not exist",
    "1.10": "the recipient's domain accepts no mail",
    "2.1": "the mailbox is disabled and accepts no messages",
    "2.2": "the recipient's mailbox is full",
    "2.3": "the message is larger than the recipient accepts",
    "3.4": "the message is too large for the receiving system",
    "4.1": "the recipient's mail server did not answer",
    "4.2": "the connection to the recipient's mail server broke off",
    "4.3": "the recipient's domain could not be looked up in DNS",
    "4.4": "the recipient's domain could not be found or has no mail server",
    "4.7": "it could not be delivered within the time allowed",
    "5.3": "the message had too many recipients",
    "7.0": "a security requirement was not met",
    "7.1": "the recipient's mail server refused to accept it",
    "7.5": "a secure (TLS) connection to the recipient's mail server could not be made,"
    " and our policy does not allow sending without one",
}
_PLAIN_SUBJECT = {
    "1": "there is a problem with the address",
    "2": "there is a problem with the recipient's mailbox",
    "3": "there is a problem with the receiving mail system",
    "4": "there is a network or routing problem",
    "5": "the mail servers could not agree on the delivery",
    "6": "there is a problem with the message's content",
    "7": "it was refused for a security or policy reason",
}


def _plain_reason(status: str) -> str:
    _, subject, detail = status.split(".")
    return _PLAIN_DETAIL.get(f"{subject}.{detail}") or _PLAIN_SUBJECT.get(subject, "an unexpected error occurred")


def _header_section(message: bytes) -> bytes:
    """The original's header fields: every line up to the empty line, stopping early at a
    line that is neither a field nor a continuation (parsers start the body there), so that
    no body text is ever reported as header."""
    lines: list[bytes] = []
    for line in message.splitlines(keepends=True):
        if not (_HEADER_FIELD.match(line) or (lines and line[:1] in (b" ", b"\t"))):
            break
        lines.append(line)
    return b"".join(lines)


def _header_field(header: bytes, name: str) -> str:
    """One field of the original's header, decoded, or "" (a broken header is not our problem)."""
    try:
        value = BytesHeaderParser(policy=email_policy.default).parsebytes(header).get(name)
        return str(value or "")
    except Exception:  # any defect in someone else's header: do without the field
        return ""


def _one_line(value: str) -> str:
    """`value` as one line of at most _MAX_VALUE characters: CR, LF and the other control
    characters become a space, and undecodable bytes (lone surrogates) a "?"."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return _CONTROLS.sub(" ", value).strip()[:_MAX_VALUE]


def _ascii(value: str) -> str:
    """One line of printable ASCII, at most _MAX_VALUE long; any other character escaped as
    RFC 6533's `\\x{HEX}` (an escape is never cut in half)."""
    pieces: list[str] = []
    size = 0
    for ch in _one_line(value):
        piece = ch if ch.isascii() else f"\\x{{{ord(ch):02X}}}"
        size += len(piece)
        if size > _MAX_VALUE:
            break
        pieces.append(piece)
    return "".join(pieces)


def _wrap(text: str, indent: str = "") -> list[str]:
    """`text` wrapped at spaces to _WIDTH columns, continuation lines indented by `indent`."""
    return textwrap.wrap(text, _WIDTH, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False) or [""]


def _address_field(address: str) -> str:
    """A Final-Recipient value: `rfc822; a@b`, or RFC 6533's `utf-8` type for a non-ASCII address."""
    address = _one_line(address).strip("<>")
    if address.isascii():
        return f"rfc822; {address}"
    # utf-8-addr-xtext: "\", "+" and "=" are escaped too, so the form is unambiguous.
    escaped = "".join(ch if ch.isascii() and ch not in "\\+=" else f"\\x{{{ord(ch):02X}}}" for ch in address)
    return f"utf-8; {escaped}"


def _mta_name(name: str) -> str:
    """An MTA for Remote-MTA: a host name, or an IP address as a literal in brackets."""
    name = _ascii(name)
    try:
        return f"[{ipaddress.ip_address(name)}]"
    except ValueError:
        return name


def _aware(when: datetime) -> None:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"datetime must be timezone-aware: {when.isoformat()}")
