"""Reading stored mail for the portal's pages, and writing the mail users send from it.

Reading uses the DLP parser's linear policy (engine.relay.dlp.mime): a message in the
portal was accepted from anyone, so its headers get no quadratic decoder either. HTML
bodies are shown as their text (the page never renders a sender's HTML); the original
HTML is offered as an attachment to download.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import SMTP
from email.utils import formatdate, getaddresses, make_msgid, parsedate_to_datetime

from engine.portal.store import Head
from engine.relay.dlp.htmltext import html_text
from engine.relay.dlp.mime import POLICY, decode_header, decode_text

HEADER_LIMIT = 2000
MAX_PARTS = 500
SNIPPET = 140


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class Readable:
    head: Head
    text: str
    attachments: tuple[Attachment, ...]
    message_id: str
    references: str
    html: str = ""  # the first HTML body, when there is one (the envelope shows it sandboxed)


def header(msg, name: str) -> str:
    value = msg.get(name)
    return decode_header(str(value), HEADER_LIMIT)[0].strip() if value is not None else ""


def addresses(value: str) -> tuple[str, ...]:
    return tuple(addr.lower() for _, addr in getaddresses([value]) if "@" in addr)


def read(raw: bytes) -> Readable:
    """What a person reads of `raw`: headers, the text of the body, the attachments."""
    msg = BytesParser(policy=POLICY).parsebytes(raw)
    texts: list[str] = []
    html: list[str] = []
    files: list[Attachment] = []
    for count, part in enumerate(msg.walk()):
        if count > MAX_PARTS:
            break
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        name = part.get_param("filename", None, "content-disposition") or part.get_param("name")
        data = part.get_payload(decode=True) or b""
        if name or part.is_attachment() or not ctype.startswith("text/"):
            files.append(Attachment(clean_name(decode_header(name or "attachment", 255)[0]), ctype, data))
        elif ctype == "text/html":
            html.append(decode_text(data, part.get_param("charset"))[0])
        else:
            texts.append(decode_text(data, part.get_param("charset"))[0])
    if not texts and html:
        texts = [html_text(h) for h in html]
        files += [Attachment(f"message-{i + 1}.html", "text/html", h.encode()) for i, h in enumerate(html)]
    text = "\n\n".join(t.replace("\r\n", "\n") for t in texts).strip()
    head = Head(
        header(msg, "from"),
        addresses(header(msg, "to")),
        addresses(header(msg, "cc")),
        header(msg, "subject") or "(no subject)",
        _date(header(msg, "date")),
        tuple(f.name for f in files),
        " ".join(text.split())[:SNIPPET],
    )
    return Readable(
        head, text, tuple(files), header(msg, "message-id"), header(msg, "references"), html[0] if html else ""
    )


def readable_text(raw: bytes) -> str:
    return searchable(read(raw))


def searchable(message: Readable) -> str:
    """The words search should find: the text and the attachments' names."""
    return message.text + " " + " ".join(a.name for a in message.attachments)


def compose(
    sender: str,
    to: list[str],
    cc: list[str],
    subject: str,
    body: str,
    files: list[Attachment],
    *,
    domain: str,
    in_reply_to: str = "",
    references: str = "",
) -> bytes:
    """A message written in the portal, as the bytes that enter the relay (CRLF)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = formatdate(time.time(), localtime=False)
    msg["Message-ID"] = make_msgid(domain=domain)
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = f"{references} {in_reply_to}".strip()
    msg["X-Sealrelay-Portal"] = "sent from the secure portal"
    msg.set_content(body)
    for f in files:
        maintype, _, subtype = (f.content_type or "").partition("/")
        if maintype in ("", "text", "message", "multipart") or not subtype:
            maintype, subtype = "application", "octet-stream"  # bytes as given, never re-encoded as text
        msg.add_attachment(f.data, maintype=maintype, subtype=subtype, filename=f.name)
    return msg.as_bytes()


def _date(value: str) -> float:
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, OverflowError):
        return time.time()


def clean_name(name: str) -> str:
    """A file name safe to offer: no path, no control characters, bounded."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '"<>|:*?')
    return name.strip(" .")[:150] or "attachment"
