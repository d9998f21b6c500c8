"""Content extraction for DLP: every piece of text in a message, and what its files really are.

``extract(raw)`` parses an RFC 5322 message (bytes) with the stdlib ``email`` package and
returns an ``Extracted`` value:

- ``texts``: the subject (origin ``subject``), body parts (``body``; text/plain as is,
  text/html reduced to its visible text), text attachments (``attachment:report.txt``),
  text members of zip archives (``attachment:a.zip/inner.csv``) and the subject, body and
  attachments of attached messages (``attachment:fwd.eml/body``). Of a
  multipart/alternative, the last alternative is kept, and an earlier one only when it has
  words the last one lacks.
- ``attachments``: every file, including archive members and attached messages, with its
  ``true_type`` from magic bytes (never from Content-Type or the file name) and its
  ``depth`` (0 for a file attached to the message, +1 per archive or message it sits in).
- ``problems``: what could not be read and why (a zip bomb, an unknown charset, a broken
  MIME structure). A malformed message never raises; extraction degrades.

``Limits`` bound archive work: nesting depth, uncompressed bytes for the whole message,
compression ratio of a member, number of members. What breaks a limit is listed as an
attachment but not expanded.
"""

from __future__ import annotations

import codecs
import io
import mimetypes
import re
import zipfile
from dataclasses import dataclass, field
from email import policy
from email.message import Message
from email.parser import BytesParser
from html.parser import HTMLParser


@dataclass(frozen=True)
class Limits:
    """Bounds on archive expansion. ``ratio_floor``: members smaller than this many
    uncompressed bytes are not judged by ratio (tiny files compress absurdly well)."""

    max_depth: int = 3
    max_total_bytes: int = 50 * 1024 * 1024
    max_ratio: int = 100
    max_entries: int = 1000
    ratio_floor: int = 1024 * 1024


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


def extract(raw: bytes, limits: Limits = Limits()) -> Extracted:
    """Extract the scannable content of a raw message. Never raises for bad input."""
    walker = _Walker(limits)
    try:
        message = BytesParser(policy=policy.default).parsebytes(raw)
    except Exception as error:  # the parser is lenient; this is the last resort
        text, _ = _decode(raw, None)
        return Extracted("", (), (TextPart("body", text),), (), (f"unparseable: {error}",))
    headers = walker.message(message, prefix="", depth=0)
    return Extracted(
        subject=_subject(headers),
        headers=tuple(headers),
        texts=tuple(walker.texts),
        attachments=tuple(walker.attachments),
        problems=tuple(walker.problems),
    )


def _words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.casefold()))


def _subject(headers: list[tuple[str, str]]) -> str:
    return next((value for name, value in headers if name.lower() == "subject"), "")


# --- true file types -------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x1f\x8b", "gzip"),
    (b"\x7fELF", "elf"),
    (b"{\\rtf", "rtf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_OOXML = (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx"))
_TEXT_CONTROLS = set(range(32)) - {8, 9, 10, 12, 13, 27}


def sniff(data: bytes) -> str:
    """The true type of a file from its first bytes (and, for zips, its member names).

    One of: pdf, zip, docx, xlsx, pptx, png, jpeg, gif, gzip, exe, elf, rtf, ole2, text,
    unknown. The claimed Content-Type and the file name are never consulted.
    """
    if b"%PDF-" in data[:1024]:
        return "pdf"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data.startswith(_ZIP_MAGIC):
        return _zip_flavour(data)
    if data.startswith(b"MZ") and _is_executable(data):
        return "exe"
    return "text" if _looks_like_text(data) else "unknown"


def _zip_flavour(data: bytes) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except Exception:
        return "zip"
    if "[Content_Types].xml" in names:
        for folder, kind in _OOXML:
            if any(name.startswith(folder) for name in names):
                return kind
    return "zip"


def _peek(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    """The true type of a member from its first bytes only (for members not expanded)."""
    try:
        with archive.open(info) as stream:
            return sniff(stream.read(4096))
    except Exception:
        return "unknown"


def _is_executable(data: bytes) -> bool:
    """MZ with a PE header where e_lfanew points, or binary bytes in the DOS header."""
    if len(data) >= 64:
        offset = int.from_bytes(data[60:64], "little")
        if data[offset : offset + 4] == b"PE\x00\x00":
            return True
    return b"\x00" in data[:64]


def _looks_like_text(data: bytes) -> bool:
    if not data:
        return False
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    sample = data[:8192]
    if b"\x00" in sample:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
        return True
    except UnicodeDecodeError:
        controls = sum(1 for byte in sample if byte in _TEXT_CONTROLS)
        return controls <= len(sample) // 100


# --- text decoding and HTML ------------------------------------------------------------


def _decode(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Bytes to text: the declared charset if usable, else UTF-8 (BOM-aware), else cp1252.

    Returns the text and a problem string when the declared charset was unusable.
    """
    problem = None
    if charset:
        try:
            return data.decode(codecs.lookup(charset).name, errors="replace"), None
        except (LookupError, ValueError, TypeError):
            problem = f"unknown charset {charset!r}"
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace"), problem
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), problem
    try:
        return data.decode("utf-8"), problem
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), problem


class _HTMLText(HTMLParser):
    """Collects the visible text of an HTML document; scripts and styles are dropped."""

    _BLOCKS = frozenset(
        "address article aside blockquote br dd div dl dt footer h1 h2 h3 h4 h5 h6 header hr "
        "li main nav ol p pre section table title tr ul".split()
    )
    _CELLS = frozenset({"td", "th"})
    _HIDDEN = frozenset({"script", "style", "template", "noscript"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._HIDDEN:
            self.hidden += 1
        self._separate(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self.hidden:
            self.hidden -= 1
        self._separate(tag)

    def handle_data(self, data: str) -> None:
        if not self.hidden:
            self.pieces.append(data)

    def _separate(self, tag: str) -> None:
        if tag in self._BLOCKS:
            self.pieces.append("\n")
        elif tag in self._CELLS:
            self.pieces.append(" ")


def html_to_text(html: str) -> str:
    """The visible text of an HTML document, one line per block element."""
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.pieces).replace("\xa0", " ")
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r" *\n[\s]*", "\n", text).strip()


# --- the walk --------------------------------------------------------------------------


@dataclass
class _Walker:
    """Mutable state of one extraction: what was found and how much budget is left."""

    limits: Limits
    texts: list[TextPart] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    expanded_bytes: int = 0
    expanded_entries: int = 0
    unnamed: int = 0

    def headers(self, message: Message, where: str) -> list[tuple[str, str]]:
        """Decoded headers; a header the policy cannot parse is kept raw, with a problem."""
        found = []
        for name, raw in message.raw_items():
            try:
                value = str(message.policy.header_fetch_parse(name, raw))
            except Exception as error:
                value = str(raw)
                self.problems.append(f"{where}: unparseable {name} header: {error}")
            found.append((name, value))
        return found

    def message(self, message: Message, prefix: str, depth: int) -> list[tuple[str, str]]:
        """Walk one (possibly attached) message; ``prefix`` locates it in origins."""
        headers = self.headers(message, prefix.rstrip("/") or "message")
        if subject := _subject(headers):
            self.texts.append(TextPart(prefix + "subject", subject))
        self.part(message, prefix, depth)
        return headers

    def part(self, part: Message, prefix: str, depth: int) -> None:
        origin = prefix + "body"
        try:
            self._part(part, prefix, depth)
        except Exception as error:  # one broken part must not hide the others
            self.problems.append(f"{origin}: unreadable part: {type(error).__name__}: {error}")
        for defect in part.defects:
            detail = f": {defect}" if str(defect) else ""
            self.problems.append(f"{origin}: {type(defect).__name__}{detail}")

    def _part(self, part: Message, prefix: str, depth: int) -> None:
        content_type = part.get_content_type()
        maintype = part.get_content_maintype()
        if part.is_multipart():
            if content_type == "message/rfc822":
                self.attached_message(part, prefix, depth)
                return
            start = len(self.texts)
            for child in part.get_payload():
                self.part(child, prefix, depth)
            if content_type == "multipart/alternative":
                self._drop_repeated_alternatives(start, prefix + "body")
            return
        name = part.get_filename()
        is_body = maintype in ("text", "multipart") and not name and not part.is_attachment()
        data = part.get_payload(decode=True) or b""
        if is_body:
            text, problem = _decode(data, part.get_content_charset())
            if problem:
                self.problems.append(f"{prefix}body: {problem}; decoded as UTF-8 or cp1252")
            if content_type == "text/html":
                text = html_to_text(text)
            self.texts.append(TextPart(prefix + "body", text))
            return
        name = name or self._unnamed(content_type)
        self.file(name, content_type, data, prefix, depth, part.get_content_charset())

    def attached_message(self, part: Message, prefix: str, depth: int) -> None:
        name = part.get_filename() or self._unnamed("message/rfc822")
        path = prefix.removeprefix("attachment:") + name
        inner = part.get_payload(0)
        try:
            data = inner.as_bytes()
        except Exception:
            data = b""
        self.attachments.append(Attachment(path, "message/rfc822", sniff(data), len(data), depth))
        if depth + 1 > self.limits.max_depth:
            self.problems.append(f"nesting too deep at {path}: depth {depth + 1} > {self.limits.max_depth}")
            return
        self.message(inner, f"attachment:{path}/", depth + 1)

    def file(self, name: str, declared: str, data: bytes, prefix: str, depth: int, charset=None):
        """Record a file, then read it: text is decoded, a zip is expanded within limits."""
        true_type = sniff(data)
        path = prefix.removeprefix("attachment:") + name
        self.attachments.append(Attachment(path, declared, true_type, len(data), depth))
        origin = "attachment:" + path
        if true_type == "text":
            text, problem = _decode(data, charset)
            if problem:
                self.problems.append(f"{origin}: {problem}; decoded as UTF-8 or cp1252")
            if declared == "text/html" or name.lower().endswith((".html", ".htm")):
                text = html_to_text(text)
            self.texts.append(TextPart(origin, text))
        elif true_type == "zip":
            self.archive(path, data, depth)

    def archive(self, path: str, data: bytes, depth: int) -> None:
        """Expand a zip archive; members that break a limit are listed but not read."""
        limits = self.limits
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
            members = [info for info in archive.infolist() if not info.is_dir()]
        except Exception as error:
            self.problems.append(f"unreadable zip {path}: {error}")
            return
        if depth + 1 > limits.max_depth:
            self.problems.append(f"nesting too deep at {path}: depth {depth + 1} > {limits.max_depth}")
            return
        if self.expanded_entries + len(members) > limits.max_entries:
            self.problems.append(
                f"too many archive entries in {path}: {len(members)}, limit "
                f"{limits.max_entries} per message; not expanded"
            )
            return
        self.expanded_entries += len(members)
        for info in members:
            self.member(archive, info, path, depth + 1)

    def member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, depth: int) -> None:
        declared = mimetypes.guess_type(info.filename)[0] or "application/octet-stream"
        refusal = self._refusal(info, path)
        if refusal is None:
            try:
                data = self._read_member(archive, info)
            except Exception as error:
                refusal = f"unreadable archive member {path}/{info.filename}: {error}"
        if refusal is not None:
            self.problems.append(refusal)
            true_type = _peek(archive, info)
            self.attachments.append(Attachment(f"{path}/{info.filename}", declared, true_type, info.file_size, depth))
            return
        self.file(info.filename, declared, data, f"attachment:{path}/", depth)

    def _refusal(self, info: zipfile.ZipInfo, path: str) -> str | None:
        """Why a member must not be decompressed, or None. Sizes come from its header;
        zipfile never inflates past the declared size, so the header cannot lie upward."""
        limits = self.limits
        ratio = info.file_size / max(info.compress_size, 1)
        if info.flag_bits & 0x1:
            return f"encrypted archive member {path}/{info.filename}: not scanned"
        if info.file_size >= limits.ratio_floor and ratio > limits.max_ratio:
            return f"zip bomb suspected in {path}: ratio {round(ratio)}:1 ({info.filename})"
        if self.expanded_bytes + info.file_size > limits.max_total_bytes:
            return (
                f"zip bomb suspected in {path}: {info.filename} would pass the "
                f"{limits.max_total_bytes}-byte extraction budget"
            )
        return None

    def _read_member(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
        with archive.open(info) as stream:
            data = stream.read(info.file_size + 1)
        self.expanded_bytes += len(data)
        return data

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
        is_message = content_type == "message/rfc822"
        extension = ".eml" if is_message else mimetypes.guess_extension(content_type)
        return f"unnamed-{self.unnamed}{extension or '.bin'}"
