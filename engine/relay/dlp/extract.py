"""Content extraction for DLP: every piece of text in a message, and what its files really are.

``extract(raw)`` parses an RFC 5322 message (bytes) and returns an ``Extracted`` value:

- ``texts``: the subject (origin ``subject``), body parts (``body``; text/plain as is,
  text/html as its visible and then its hidden text, see htmltext.py), text attachments
  (``attachment:report.txt``), the text of documents (PDF, docx, xlsx, pptx, odt, ods,
  odp, RTF: documents.py, each within its own time and size budget), text members of
  archives (``attachment:a.zip/inner.csv``,
  ``attachment:logs.tar.gz/logs.tar/app.log``) and the subject, body and attachments of
  attached messages (``attachment:fwd.eml/body``). Of a multipart/alternative, the last
  alternative is kept, and an earlier one only when it has words the last one lacks.
- ``attachments``: every file, including archive members and attached messages, with its
  ``true_type`` from magic bytes (never from Content-Type or the file name) and its
  ``depth`` (0 for a file attached to the message, +1 per archive or message it sits in).
- ``problems``: what could not be read and why. A malformed message never raises;
  extraction degrades. ``unscanned`` is the subset of problems that left content unread
  (a limit hit, an archive that cannot be opened, a part that cannot be decoded): DLP
  acts on those (``dlp.unscannable``); the others (an unknown charset decoded as UTF-8,
  a missing closing boundary) are notes.

The cost is linear in the size of the input, whatever it holds (mime.py parses headers
and parameters in one pass, htmltext.py reads HTML in one pass), and ``Limits`` bound
what archives may add: nesting depth, uncompressed bytes for the whole message,
compression ratio of a member, number of members. What breaks a limit is listed as an
attachment but not expanded.
"""

from __future__ import annotations

import binascii
import functools
import mimetypes
import re
import time
from dataclasses import dataclass, field

from engine.relay.dlp import documents, mimetree
from engine.relay.dlp.archives import KINDS as ARCHIVE_KINDS
from engine.relay.dlp.archives import Archive, ArchiveError, Member, open_archive
from engine.relay.dlp.filetypes import UNOPENED_ARCHIVES, sniff
from engine.relay.dlp.htmltext import html_text
from engine.relay.dlp.mime import decode_header, decode_text, text_codec
from engine.relay.dlp.mimetree import Part

__all__ = ["Attachment", "Extracted", "Limits", "TextPart", "extract", "sniff"]


@dataclass(frozen=True)
class Limits:
    """Bounds on the work one message may cause. ``ratio_floor``: members smaller than
    this many uncompressed bytes are not judged by ratio (tiny files compress absurdly
    well). ``max_mime_depth``: MIME parts nested deeper are read as text, not parsed.
    ``max_header_chars``: a decoded header is scanned up to this length."""

    max_depth: int = 3
    max_total_bytes: int = 50 * 1024 * 1024
    max_ratio: int = 100
    max_entries: int = 1000
    ratio_floor: int = 1024 * 1024
    max_mime_depth: int = 20
    max_header_chars: int = 64 * 1024
    max_problems: int = 100
    # documents (documents.py): None is that module's default (MAX_DOCUMENT_BYTES, ...)
    document_bytes: int | None = None
    document_seconds: float | None = None
    message_document_seconds: float | None = None


@dataclass(frozen=True)
class TextPart:
    """A piece of text to scan, and where it came from."""

    origin: str
    text: str


@dataclass(frozen=True)
class Attachment:
    """A file in the message; ``name`` is its path through archives (``a.zip/b.csv``)."""

    name: str
    declared_type: str
    true_type: str
    size: int
    depth: int


@dataclass(frozen=True)
class Extracted:
    """Everything DLP looks at in one message."""

    subject: str
    headers: tuple[tuple[str, str], ...]
    texts: tuple[TextPart, ...]
    attachments: tuple[Attachment, ...]
    problems: tuple[str, ...]
    unscanned: tuple[str, ...] = ()  # the problems that left content unread


def extract(raw: bytes, limits: Limits | None = None, tree: Part | None = None) -> Extracted:
    """Extract the scannable content of a raw message (within `limits`: the config's
    `dlp.limits`, by default Limits()); `tree`: the message already parsed by the caller
    (`mimetree.parse` with `limits.max_mime_depth`), so it is parsed once. Never raises for
    bad input. A message that is one plain-text body is read directly (`_plain_message`),
    every other one by walking its tree (`_walked`)."""
    limits = limits or Limits()
    try:
        message = tree if tree is not None else mimetree.parse(raw, limits.max_mime_depth)
    except Exception as error:  # the parser is lenient; this is the last resort
        return _unparseable(raw, error)
    try:
        plain = _plain_message(message, limits)
    except Exception:  # the walker reads it again and says what went wrong
        plain = None
    return plain if plain is not None else _walked(raw, message, limits)


def _walked(raw: bytes, message: Part, limits: Limits) -> Extracted:
    """`extract` by walking the message's tree, whatever it holds."""
    walker = _Walker(limits)
    if limits.message_document_seconds is not None:
        walker.document_seconds = limits.message_document_seconds
    try:
        headers = walker.message(message, prefix="", depth=0)
    except Exception as error:  # the parser is lenient; this is the last resort
        return _unparseable(raw, error)
    walker.finish()
    return Extracted(
        subject=_subject(headers),
        headers=tuple(headers),
        texts=tuple(walker.texts),
        attachments=tuple(walker.attachments),
        problems=tuple(walker.problems),
        unscanned=tuple(walker.unscanned),
    )


def _unparseable(raw: bytes, error: Exception) -> Extracted:
    text, _ = decode_text(raw, None)
    problem = f"unparseable: {type(error).__name__}: {error}; read as plain text"
    return Extracted("", (), (TextPart("body", text),), (), (problem,), (problem,))


_PLAIN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})


def _one_plain_body(message: Part) -> bool:
    """A header without defects, text/plain (declared or by default; such a part never has
    children), neither named nor an attachment: what both direct readings start from."""
    if message.defects or message.too_deep:
        return False
    return message.get_content_type() == "text/plain" and not message.get_filename() and not message.is_attachment()


def _plain_message(message: Part, limits: Limits) -> Extracted | None:
    """What the walker finds in a message that is one plain-text body and nothing else, read
    without it; None for any other message, which the walker reads. The usual message is
    one: a header without defects, text/plain (declared or by default) that is neither
    named nor an attachment, 7bit, 8bit, quoted-printable or base64 that decodes, in a
    charset that is a text codec (or none), every header within `max_header_chars`. Any
    note at all (a defect, an unknown charset, a header cut) leaves it to the walker, which
    reads such messages the same way it reads every other one."""
    if not _one_plain_body(message):
        return None
    encoding = message.encoding()
    if encoding not in _PLAIN_ENCODINGS:
        return None
    if encoding == "base64":  # decoded here: a failure would add the lenient decoder's defects to the tree
        try:
            payload = binascii.a2b_base64(message.body())
        except binascii.Error:
            return None
    else:
        payload = message.payload()
    text, problem = decode_text(payload, message.get_content_charset())
    if problem:
        return None
    headers = []
    for name, raw in message.raw_items():
        value, cut = decode_header(raw, limits.max_header_chars)
        if cut:
            return None
        headers.append((name, value))
    subject = _subject(headers)
    texts = (TextPart("subject", subject), TextPart("body", text)) if subject else (TextPart("body", text),)
    return Extracted(subject, tuple(headers), texts, (), ())


_AS_WRITTEN = frozenset({"", "7bit", "8bit", "binary"})  # encodings whose payload is the body as written


class PlainText:
    """A message that is one plain-text body whose text is its bytes as written (`plain_ascii`):
    its decoded subject ("" when none), its body (a view of the message, not a copy), and
    its headers decoded when asked for. Read where an `Extracted` is (`Policies.quick`): it
    has no problems and leaves nothing unread."""

    __slots__ = ("subject", "body", "_message", "_limit")
    problems: tuple[str, ...] = ()
    unscanned: tuple[str, ...] = ()

    def __init__(self, subject: str, body: memoryview, message: Part, limit: int) -> None:
        self.subject, self.body, self._message, self._limit = subject, body, message, limit

    @property
    def headers(self) -> list[tuple[str, str]]:
        """As `extract` gives them (none is cut: `plain_ascii` checked)."""
        return [(name, decode_header(raw, self._limit)[0]) for name, raw in self._message.raw_items()]


def plain_ascii(message: Part, limits: Limits) -> PlainText | None:
    """What `_plain_message` reads in a message whose bytes are all ASCII, sent as written
    (7bit, 8bit, binary or no encoding) in a charset that reads ASCII as ASCII (or none):
    then the body's text is the body's bytes, and DLP's quick pass scans them as they are,
    without decoding them into text. None for any other message. The same conditions as
    `_plain_message`'s, so that what it finds is what `extract` finds (a property test holds
    them together): no defect, text/plain, no name, not an attachment, no header cut."""
    buf = message.buf
    if not isinstance(buf, bytes) or not buf.isascii():
        return None
    if not _one_plain_body(message) or message.encoding() not in _AS_WRITTEN:
        return None
    charset = message.get_content_charset()
    if charset is not None and not _reads_ascii_as_ascii(text_codec(charset)):
        return None
    limit, subject = limits.max_header_chars, None
    for name, raw in message.raw_items():
        # ASCII without encoded words decodes to itself unfolded: never longer than as written
        if len(raw) > limit or "=?" in raw or (subject is None and name.lower() == "subject"):
            value, cut = decode_header(raw, limit)
            if cut:
                return None
            if subject is None and name.lower() == "subject":
                subject = value
    return PlainText(subject or "", message.body(), message, limit)


@functools.lru_cache(maxsize=64)
def _reads_ascii_as_ascii(codec: str | None) -> bool:
    """Whether the codec decodes every ASCII byte to the same character (UTF-16 and UTF-7,
    say, do not); None (an unknown charset) is not one: the walker notes it."""
    return codec is not None and bytes(range(128)).decode(codec, "replace") == "".join(map(chr, range(128)))


def _document_kind(true_type: str, data: bytes) -> str | None:
    """The document kind whose text documents.py reads, or None (an OpenDocument file is
    typed ``zip``: its first member says what it is)."""
    if true_type in documents.KINDS:
        return true_type
    return documents.opendocument_kind(data) if true_type == "zip" else None


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def _subject(headers: list[tuple[str, str]]) -> str:
    return next((value for name, value in headers if name.lower() == "subject"), "")


SNIFF_BYTES = 64 * 1024  # what sniff() reads of a file: magic bytes, a tar header, a text sample
# Types from magic bytes whose content DLP does not read: such a file is only typed and
# sized (a file starting with MZ is decoded whole: its PE header may lie further in)
OPAQUE = frozenset({"png", "jpeg", "gif", "elf", "ole2", "exe", "unknown"})
_KNOWN_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "quoted-printable", "base64"})
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})
_ENCODED = frozenset({"base64", "quoted-printable"})  # not allowed on message/*: the parser reads it as is
# defects after which the parser could not split a multipart: its parts were not decoded
_UNSPLIT = frozenset(
    {
        "NoBoundaryInMultipartDefect",
        "StartBoundaryNotFoundDefect",
        "MultipartInvariantViolationDefect",
        "InvalidBase64LengthDefect",
    }
)


@dataclass
class _Walker:
    """Mutable state of one extraction: what was found and how much budget is left."""

    limits: Limits
    texts: list[TextPart] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unscanned: list[str] = field(default_factory=list)
    expanded_bytes: int = 0
    expanded_entries: int = 0
    unnamed: int = 0
    dropped: int = 0
    dropped_unscanned: int = 0
    document_seconds: float = field(default_factory=lambda: documents.MAX_MESSAGE_DOCUMENT_SECONDS)

    def parse(self, raw: bytes) -> Part:
        return mimetree.parse(raw, self.limits.max_mime_depth)

    def note(self, problem: str, *, unscanned: bool = False) -> None:
        """Record a problem; ``unscanned`` when content was left unread because of it."""
        if len(self.problems) >= self.limits.max_problems:
            self.dropped += 1
            self.dropped_unscanned += unscanned
            return
        self.problems.append(problem)
        if unscanned:
            self.unscanned.append(problem)

    def finish(self) -> None:
        if self.dropped:
            summary = f"{self.dropped} more problems not listed ({self.dropped_unscanned} of them left content unread)"
            self.problems.append(summary)
            if self.dropped_unscanned:
                self.unscanned.append(summary)

    def headers(self, message: Part, where: str) -> list[tuple[str, str]]:
        """Decoded headers (RFC 2047), each cut at ``max_header_chars`` (with a problem)."""
        found = []
        limit = self.limits.max_header_chars
        for name, raw in message.raw_items():
            value, cut = decode_header(str(raw), limit)
            if cut:
                self.note(
                    f"{where}: {name[:80]} header longer than {limit} characters; the rest not scanned", unscanned=True
                )
            found.append((name, value))
        return found

    def message(self, message: Part, prefix: str, depth: int) -> list[tuple[str, str]]:
        """Walk one (possibly attached) message; ``prefix`` locates it in origins."""
        headers = self.headers(message, prefix.rstrip("/") or "message")
        if subject := _subject(headers):
            self.texts.append(TextPart(prefix + "subject", subject))
        self.part(message, prefix, depth)
        return headers

    def part(self, part: Part, prefix: str, depth: int) -> None:
        origin = prefix + "body"
        try:
            self._part(part, prefix, depth)
        except Exception as error:  # one broken part must not hide the others
            self.note(f"{origin}: unreadable part: {type(error).__name__}: {error}", unscanned=True)
        for defect in part.defects:
            kind = type(defect).__name__
            detail = f": {defect}" if str(defect) else ""
            self.note(f"{origin}: {kind}{detail}", unscanned=kind in _UNSPLIT)

    def _part(self, part: Part, prefix: str, depth: int) -> None:
        content_type = part.get_content_type()
        if part.too_deep and part.declared_type().startswith(("multipart/", "message/")):
            self.note(
                f"{prefix}body: MIME parts nested deeper than {self.limits.max_mime_depth} "
                f"({part.declared_type()}): read as text, not decoded",
                unscanned=True,
            )
        if content_type == "message/partial":
            self.note(f"{prefix}body: message/partial: a fragment of a message, never seen whole", unscanned=True)
        if part.get_content_maintype() == "message" and part.get("content-transfer-encoding", "") in _ENCODED:
            self.note(
                f"{prefix}body: {content_type} in {part.get('content-transfer-encoding')}: not decoded", unscanned=True
            )
        if part.is_multipart():
            if part.get_content_maintype() == "message" and content_type != "message/delivery-status":
                self.attached_message(part, prefix, depth)
                return
            start = len(self.texts)
            for child in part.get_payload():
                self.part(child, prefix, depth)
            if content_type == "multipart/alternative":
                self._drop_repeated_alternatives(start, prefix + "body")
            return
        name = part.get_filename()
        name = decode_header(name, 255)[0] if name else None
        is_body = part.get_content_maintype() in ("text", "multipart") and not name and not part.is_attachment()
        self._check_encoding(part, prefix + (name or "body"))
        if is_body:
            text, problem = decode_text(part.payload(), part.get_content_charset())  # the bytes go at once
            if problem:
                self.note(f"{prefix}body: {problem}; decoded as UTF-8 or cp1252")
            if content_type == "text/html":
                text = html_text(text)
            self.texts.append(TextPart(prefix + "body", text))
            return
        name = name or self._unnamed(content_type)
        head = part.head(SNIFF_BYTES)
        true_type = sniff(head)
        if true_type in OPAQUE and not head.startswith(b"MZ"):
            # nothing in it is read: typed from its first bytes, sized without decoding it whole
            path = prefix.removeprefix("attachment:") + name
            self.attachments.append(Attachment(path, content_type, true_type, part.decoded_size(), depth))
            return
        self.file(name, content_type, [part.payload()], prefix, depth, part.get_content_charset())

    def _check_encoding(self, part: Part, origin: str) -> None:
        encoding = part.encoding()
        if encoding not in _KNOWN_ENCODINGS and encoding not in _UUENCODE:
            self.note(f"{origin}: unknown Content-Transfer-Encoding {encoding[:40]!r}; read undecoded", unscanned=True)

    def attached_message(self, part: Part, prefix: str, depth: int) -> None:
        name = part.get_filename() or self._unnamed("message/rfc822")
        path = prefix.removeprefix("attachment:") + name
        inner = part.get_payload(0)
        span = inner.span()
        self.attachments.append(
            Attachment(path, part.get_content_type(), sniff(bytes(span[:SNIFF_BYTES])), len(span), depth)
        )
        if depth + 1 > self.limits.max_depth:
            self.note(f"nesting too deep at {path}: depth {depth + 1} > {self.limits.max_depth}", unscanned=True)
            return
        self.message(inner, f"attachment:{path}/", depth + 1)

    def file(self, name: str, declared: str, handed: list[bytes], prefix: str, depth: int, charset=None):
        """Record a file, then read it: text is decoded, an archive expanded within limits.

        The bytes come handed over in a one-item list that no one else holds, so that a large
        text file's bytes are let go once decoded, not kept beside its text while it is scanned."""
        data = handed.pop()
        true_type = sniff(data)
        path = prefix.removeprefix("attachment:") + name
        self.attachments.append(Attachment(path, declared, true_type, len(data), depth))
        origin = "attachment:" + path
        if true_type == "text" and (declared.startswith("message/") or name.lower().endswith(".eml")):
            self.embedded_message(path, data, depth)
        elif true_type == "text":
            text, problem = decode_text(data, charset)
            del data
            if problem:
                self.note(f"{origin}: {problem}; decoded as UTF-8 or cp1252")
            if declared == "text/html" or name.lower().endswith((".html", ".htm")):
                text = html_text(text)
            self.texts.append(TextPart(origin, text))
        elif (kind := _document_kind(true_type, data)) is not None:
            self.document(kind, origin, data)
        elif true_type in ARCHIVE_KINDS:
            self.archive(true_type, path, data, depth)
        elif true_type in UNOPENED_ARCHIVES:
            self.note(f"{origin}: a {true_type} archive, which DLP cannot open", unscanned=True)

    def document(self, kind: str, origin: str, data: bytes) -> None:
        """Read a document's text within its budgets (documents.py); what is left unread is
        unscanned, and the text read before a budget ran out is still scanned."""
        limits = self.limits
        if self.document_seconds <= 0:
            total = limits.message_document_seconds
            total = documents.MAX_MESSAGE_DOCUMENT_SECONDS if total is None else total
            self.note(f"{origin}: {kind} not read: the message's documents used their {total:g} s", unscanned=True)
            return
        room = max(limits.max_total_bytes - self.expanded_bytes, 0)
        each = documents.MAX_DOCUMENT_SECONDS if limits.document_seconds is None else limits.document_seconds
        budget = documents.Budget(
            room, limits.max_ratio, limits.ratio_floor, min(each, self.document_seconds), limits.document_bytes
        )
        started = time.monotonic()
        try:
            text = documents.document_text(kind, data, budget)
        except documents.DocumentError as error:
            text = error.partial
            self.note(f"{origin}: {kind} not fully read: {error.reason}", unscanned=True)
        except Exception as error:  # the PDF library's own failure: unread, never a crash
            text = ""
            self.note(f"{origin}: {kind} unreadable: {type(error).__name__}: {error}", unscanned=True)
        finally:
            self.expanded_bytes += budget.used
            self.document_seconds -= time.monotonic() - started
        if text.strip():
            self.texts.append(TextPart(origin, text))

    def embedded_message(self, path: str, data: bytes, depth: int) -> None:
        """A message sent as a file (an .eml attachment of any type): read as a message."""
        if depth + 1 > self.limits.max_depth:
            self.note(f"nesting too deep at {path}: depth {depth + 1} > {self.limits.max_depth}", unscanned=True)
            return
        self.message(self.parse(data), f"attachment:{path}/", depth + 1)

    def archive(self, kind: str, path: str, data: bytes, depth: int) -> None:
        """Expand an archive; members that break a limit are listed but not read."""
        limits = self.limits
        if depth + 1 > limits.max_depth:
            self.note(f"nesting too deep at {path}: depth {depth + 1} > {limits.max_depth}", unscanned=True)
            return
        room = limits.max_entries - self.expanded_entries
        try:
            archive = open_archive(kind, data, path)
            members = archive.members(room + 1)
        except ArchiveError as error:
            self.note(f"unreadable {kind} {path}: {error}", unscanned=True)
            return
        if len(members) > room:
            self.note(
                f"too many archive entries in {path}: limit {limits.max_entries} per message; not expanded",
                unscanned=True,
            )
            return
        self.expanded_entries += len(members)
        for member in members:
            self.member(archive, kind, member, path, depth + 1)

    def member(self, archive: Archive, kind: str, member: Member, path: str, depth: int) -> None:
        declared = mimetypes.guess_type(member.name)[0] or "application/octet-stream"
        refusal = self._refusal(kind, member, path)
        data = b""
        if refusal is None:
            cap, why = self._cap(kind, member, path)
            try:
                data = archive.read(member, cap)
            except Exception as error:
                refusal = f"unreadable archive member {path}/{member.name}: {error}"
            else:
                refusal = why if len(data) > cap else None
        if refusal is not None:
            self.note(refusal, unscanned=True)
            size = member.size if member.size is not None else len(data)
            self.attachments.append(
                Attachment(f"{path}/{member.name}", declared, sniff(archive.peek(member)), size, depth)
            )
            return
        self.expanded_bytes += len(data)
        handed = [data]
        del data
        self.file(member.name, declared, handed, f"attachment:{path}/", depth)

    def _refusal(self, kind: str, member: Member, path: str) -> str | None:
        """Why a member must not be read, or None. Declared sizes come from its header,
        and readers never return more than declared, so the header cannot lie upward."""
        limits = self.limits
        if member.refusal == "encrypted":
            return f"encrypted archive member {path}/{member.name}: not scanned"
        if member.refusal:
            return f"{member.refusal} in {path}: {member.name} not scanned"
        if member.size is None:
            return None  # a stream: judged while it is read (_cap)
        ratio = member.size / max(member.packed, 1)
        if member.size >= limits.ratio_floor and ratio > limits.max_ratio:
            return f"{kind} bomb suspected in {path}: ratio {round(ratio)}:1 ({member.name})"
        if self.expanded_bytes + member.size > limits.max_total_bytes:
            return (
                f"{kind} bomb suspected in {path}: {member.name} would pass the "
                f"{limits.max_total_bytes}-byte extraction budget"
            )
        return None

    def _cap(self, kind: str, member: Member, path: str) -> tuple[int, str]:
        """How many bytes of a member to read, and what it means when there are more.
        A stream is allowed what a zip member of its packed size would be allowed."""
        limits = self.limits
        if member.size is not None:
            return member.size, ""
        budget = max(limits.max_total_bytes - self.expanded_bytes, 0)
        by_ratio = max(limits.ratio_floor - 1, limits.max_ratio * member.packed)
        if by_ratio <= budget:
            return by_ratio, f"{kind} bomb suspected in {path}: ratio over {limits.max_ratio}:1 ({member.name})"
        return budget, (
            f"{kind} bomb suspected in {path}: {member.name} would pass the "
            f"{limits.max_total_bytes}-byte extraction budget"
        )

    def _drop_repeated_alternatives(self, start: int, origin: str) -> None:
        """Keep the last alternative (what mail clients show); keep an earlier one only if
        it has words the last one lacks, so nothing hidden there goes unscanned."""
        bodies = [index for index in range(start, len(self.texts)) if self.texts[index].origin == origin]
        if len(bodies) < 2:
            return
        shown = _words(self.texts[bodies[-1]].text)
        redundant = {index for index in bodies[:-1] if _words(self.texts[index].text) <= shown}
        self.texts[start:] = [part for index, part in enumerate(self.texts[start:], start) if index not in redundant]

    def _unnamed(self, content_type: str) -> str:
        self.unnamed += 1
        is_message = content_type.startswith("message/")
        extension = ".eml" if is_message else mimetypes.guess_extension(content_type)
        return f"unnamed-{self.unnamed}{extension or '.bin'}"
