"""The text of documents: PDF, OOXML (docx, xlsx, pptx), OpenDocument (odt, ods, odp), RTF.

``document_text(kind, data, budget)`` returns what a reader of the document could see, and
more (hidden text, tracked deletions, speaker notes, comments, headers and footers are read
too: they leave with the file). It raises ``DocumentError`` with a reason when the document
cannot be read within its budget; the text read until then is in ``error.partial``, so what
was seen is still scanned. extract.py reports the reason as unscanned content.

Every document is bounded:

- ``MAX_DOCUMENT_BYTES``: a larger file is not opened;
- ``MAX_DOCUMENT_SECONDS``: checked between PDF pages, every few thousand XML events and
  RTF tokens; past it the rest is not read;
- ``MAX_DOCUMENT_CHARS``: text kept per document;
- ``MAX_PDF_PAGES``: pages read of one PDF;
- OOXML and OpenDocument are zips: their XML parts are read with the message's archive
  budgets (``Budget``: the same ratio rule and the same inflated-bytes budget as
  archives), and parsed by ``defusedxml`` with DTDs refused (no entity expansion, no
  external entities: none of these formats has a DTD);
- RTF is read by our own linear parser: no recursion, groups counted, not nested on a stack
  of Python frames.

PDFium (pypdfium2) is not thread-safe, and DLP scans in a small thread pool: one PDF is
read at a time (``_PDFIUM``), each within its own time budget once it has the library.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from engine.relay.dlp.archives import ArchiveError, open_archive

MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
MAX_DOCUMENT_SECONDS = 5.0
MAX_MESSAGE_DOCUMENT_SECONDS = 20.0  # all documents of one message together
MAX_DOCUMENT_CHARS = 4 * 1024 * 1024
MAX_PDF_PAGES = 2000
MAX_RTF_DEPTH = 1000  # RTF group nesting (Word writes about 10)
MAX_DOCUMENT_PARTS = 10_000  # files in an OOXML or OpenDocument zip (a large workbook has a few hundred)

OOXML = ("docx", "xlsx", "pptx")
OPENDOCUMENT = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
}
KINDS = ("pdf", *OOXML, *OPENDOCUMENT.values(), "rtf")

_PDFIUM = threading.Lock()


class DocumentError(Exception):
    """The document could not be read (fully): ``reason``, and the text read before."""

    def __init__(self, reason: str, partial: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


@dataclass
class Budget:
    """What one document may cost: the message's archive budget for inflated bytes (what
    is left of it; ``used`` is added back by the caller), its ratio rule, and a deadline."""

    max_bytes: int
    max_ratio: int
    ratio_floor: int
    seconds: float = MAX_DOCUMENT_SECONDS
    document_bytes: int | None = None  # the largest document opened; None: MAX_DOCUMENT_BYTES
    used: int = 0

    def __post_init__(self) -> None:
        self.deadline = time.monotonic() + self.seconds

    def check_time(self, text: _Text) -> None:
        if time.monotonic() > self.deadline:
            raise DocumentError(f"took longer than {self.seconds:g} s; the rest not read", text.value())


def opendocument_kind(data: bytes) -> str | None:
    """odt, ods or odp for an OpenDocument zip (its first member ``mimetype`` says which)."""
    if data[30:38] != b"mimetype":  # the first local header's file name, stored uncompressed
        return None
    name_length = int.from_bytes(data[26:28], "little")
    extra = int.from_bytes(data[28:30], "little")
    start = 30 + name_length + extra
    declared = data[start : start + 80].split(b"PK", 1)[0].decode("ascii", "replace").strip()
    return OPENDOCUMENT.get(declared)


def document_text(kind: str, data: bytes, budget: Budget) -> str:
    """The text of a document of ``kind`` (one of KINDS); DocumentError when not (fully) read."""
    largest = MAX_DOCUMENT_BYTES if budget.document_bytes is None else budget.document_bytes
    if len(data) > largest:
        raise DocumentError(f"larger than the {largest}-byte document budget; not opened")
    if kind == "pdf":
        return _pdf(data, budget)
    if kind == "rtf":
        return _rtf(data, budget)
    return _zipped_xml(kind, data, budget)


class _Text:
    """Collected text, refusing to grow past MAX_DOCUMENT_CHARS."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def add(self, piece: str) -> None:
        if not piece:
            return
        self.size += len(piece)
        self.parts.append(piece)
        if self.size > MAX_DOCUMENT_CHARS:
            raise DocumentError(f"more than {MAX_DOCUMENT_CHARS} characters of text; the rest not read", self.value())

    def value(self) -> str:
        return "".join(self.parts)[:MAX_DOCUMENT_CHARS]


# --- PDF ---------------------------------------------------------------------------------


def _pdf(data: bytes, budget: Budget) -> str:
    import pypdfium2 as pdfium

    text = _Text()
    with _PDFIUM:
        budget.deadline = time.monotonic() + budget.seconds  # the budget starts with the library
        try:
            document = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as error:
            if getattr(error, "err_code", None) == pdfium.raw.FPDF_ERR_PASSWORD:
                raise DocumentError("encrypted PDF (a password is needed to read it)") from None
            raise DocumentError(f"damaged PDF: {error}") from None
        try:
            pages = len(document)
            for number in range(min(pages, MAX_PDF_PAGES)):
                budget.check_time(text)
                page = document[number]
                try:
                    textpage = page.get_textpage()
                    try:
                        text.add(textpage.get_text_range() + "\n")
                    finally:
                        textpage.close()
                finally:
                    page.close()
            if pages > MAX_PDF_PAGES:
                raise DocumentError(f"more than {MAX_PDF_PAGES} pages; the rest not read", text.value())
        except pdfium.PdfiumError as error:
            raise DocumentError(f"damaged PDF: {error}", text.value()) from None
        finally:
            document.close()
    return text.value()


# --- OOXML and OpenDocument: zips of XML -------------------------------------------------

# XML parts with text; everything else in the zip (images, styles of OOXML, relations) is not text
_OOXML_SKIPPED = ("/theme/", "/_rels/", "styles.xml", "fontTable.xml", "settings.xml", "webSettings.xml")
_OOXML_FOLDERS = ("word/", "xl/", "ppt/", "docProps/core.xml")
_OPENDOCUMENT_PARTS = ("content.xml", "styles.xml", "meta.xml")  # headers and footers live in styles.xml
# where one piece of text ends: paragraphs and rows end a line, cells and breaks a word
_LINE_ENDS = frozenset({"p", "h", "tr", "row", "si", "table-row", "list-item", "br", "line-break", "cr"})
_WORD_ENDS = frozenset({"tc", "c", "f", "v", "table-cell", "tab", "s", "ptab"})


def _zipped_xml(kind: str, data: bytes, budget: Budget) -> str:
    try:
        archive = open_archive("zip", data, "")
        members = archive.members(MAX_DOCUMENT_PARTS + 1)
    except ArchiveError as error:
        raise DocumentError(f"damaged {kind}: {error}") from None
    if len(members) > MAX_DOCUMENT_PARTS:
        raise DocumentError(f"more than {MAX_DOCUMENT_PARTS} parts; not read")
    if kind in OOXML:
        wanted = [
            m
            for m in members
            if m.name.endswith(".xml")
            and m.name.startswith(_OOXML_FOLDERS)
            and not any(s in m.name for s in _OOXML_SKIPPED)
        ]
    else:
        wanted = [m for m in members if m.name in _OPENDOCUMENT_PARTS]
    text = _Text()
    for member in wanted:
        budget.check_time(text)
        if member.refusal:
            raise DocumentError(f"{member.refusal} part {member.name}", text.value())
        ratio = member.size / max(member.packed, 1)
        if member.size >= budget.ratio_floor and ratio > budget.max_ratio:
            raise DocumentError(f"zip bomb suspected: ratio {round(ratio)}:1 ({member.name})", text.value())
        if budget.used + member.size > budget.max_bytes:
            raise DocumentError(f"{member.name} would pass the extraction budget", text.value())
        try:
            xml = archive.read(member, member.size)
        except Exception as error:
            raise DocumentError(f"damaged {kind}: {member.name}: {error}", text.value()) from None
        budget.used += len(xml)
        _xml_text(xml, text, budget, f"{kind} part {member.name}")
        text.add("\n")
    return text.value()


def _xml_text(xml: bytes, text: _Text, budget: Budget, where: str) -> None:
    """All character data of one XML part, in document order, runs joined as they are
    (a number split across runs stays whole), with a break where a block or cell ends."""
    events = 0
    try:
        for event, element in iterparse(io.BytesIO(xml), events=("start", "end"), forbid_dtd=True):
            events += 1
            if events % 4096 == 0:
                budget.check_time(text)
            if event == "start":
                text.add(element.text or "")
                continue
            name = element.tag.rsplit("}", 1)[-1]
            if name in _LINE_ENDS:
                text.add("\n")
            elif name in _WORD_ENDS:
                text.add("\t")
            text.add(element.tail or "")
            element.clear()  # keep memory flat: the tree is never needed
    except DocumentError:
        raise
    except DefusedXmlException as error:
        raise DocumentError(f"{where}: refused XML: {type(error).__name__}", text.value()) from None
    except Exception as error:  # ParseError and friends: a damaged part
        raise DocumentError(f"{where}: damaged XML: {error}", text.value()) from None


# --- RTF ---------------------------------------------------------------------------------

# destinations whose text is not the document's (fonts, colours, styles, pictures, binary data)
_RTF_SKIPPED = frozenset(
    {
        b"fonttbl",
        b"colortbl",
        b"stylesheet",
        b"listtable",
        b"listoverridetable",
        b"rsidtbl",
        b"generator",
        b"pict",
        b"objdata",
        b"datastore",
        b"themedata",
        b"colorschememapping",
        b"latentstyles",
        b"xmlnstbl",
        b"filetbl",
        b"revtbl",
        b"pgdsctbl",
    }
)
_RTF_BREAKS = {b"par": "\n", b"line": "\n", b"row": "\n", b"sect": "\n", b"page": "\n", b"cell": "\t", b"tab": "\t"}
_RTF_CHARS = {b"emdash": "\u2014", b"endash": "\u2013", b"bullet": "\u2022", b"lquote": "\u2018", b"rquote": "\u2019"}


def _rtf(data: bytes, budget: Budget) -> str:
    """Text of an RTF document in one pass over its bytes.

    Handled: groups, control words with their numeric parameter and delimiting space,
    ``\\'hh`` bytes (in the ``\\ansicpg`` code page, else cp1252), ``\\uN`` with ``\\ucN``
    fallback skipping, ``\\*`` and non-text destinations skipped, ``\\binN`` data skipped.
    Text in skipped groups (fonts, pictures) is not the document's.
    """
    text = _Text()
    codepage = "cp1252"
    skip_depth = None  # depth at which a skipped destination began
    depth = 0
    uc = [1]  # \ucN per group: fallback characters after each \uN
    pending_skip = 0
    raw = bytearray()  # \'hh bytes, decoded together (a multi-byte code page needs them together)
    size, pos, steps = len(data), 0, 0

    def flush() -> None:
        if raw:
            if skip_depth is None:
                text.add(bytes(raw).decode(codepage, "replace"))
            raw.clear()

    while pos < size:
        steps += 1
        if steps % 8192 == 0:
            budget.check_time(text)
        byte = data[pos]
        if byte == 0x7B:  # {
            flush()
            depth += 1
            if depth > MAX_RTF_DEPTH:
                raise DocumentError(f"RTF groups nested deeper than {MAX_RTF_DEPTH}", text.value())
            uc.append(uc[-1])
            pos += 1
            if data.startswith(b"\\*", pos) and skip_depth is None:
                skip_depth = depth
            continue
        if byte == 0x7D:  # }
            flush()
            if skip_depth == depth:
                skip_depth = None
            depth -= 1
            if len(uc) > 1:
                uc.pop()
            pos += 1
            continue
        if byte in (0x0D, 0x0A):
            pos += 1
            continue
        if byte != 0x5C:  # plain text
            end = pos
            while end < size and data[end] not in b"{}\\\r\n":
                end += 1
            piece = data[pos:end]
            if pending_skip:
                dropped = min(pending_skip, len(piece))
                piece, pending_skip = piece[dropped:], pending_skip - dropped
            flush()
            if skip_depth is None and piece:
                text.add(piece.decode(codepage, "replace"))
            pos = end
            continue
        # a control word or symbol
        if pos + 1 >= size:
            break
        nxt = data[pos + 1]
        if nxt == 0x27:  # \'hh
            try:
                value = int(data[pos + 2 : pos + 4], 16)
            except ValueError:
                value = None
            pos += 4
            if pending_skip:
                pending_skip -= 1
            elif value is not None:
                raw.append(value)
            continue
        flush()
        if not (0x61 <= nxt <= 0x7A or 0x41 <= nxt <= 0x5A):  # a control symbol: \\ \{ \} \~ \- \_ \*
            if nxt in b"\\{}" and skip_depth is None:
                text.add(chr(nxt))
            elif nxt == 0x7E and skip_depth is None:
                text.add("\u00a0")
            pos += 2
            continue
        end = pos + 1
        while end < size and end - pos < 34 and (0x61 <= data[end] <= 0x7A or 0x41 <= data[end] <= 0x5A):
            end += 1
        word = data[pos + 1 : end]
        number_end = end + (end < size and data[end] == 0x2D)
        while number_end < size and number_end - end < 11 and 0x30 <= data[number_end] <= 0x39:
            number_end += 1
        parameter = int(data[end:number_end]) if number_end > end + (data[end : end + 1] == b"-") else None
        pos = number_end + (number_end < size and data[number_end] == 0x20)
        if word == b"bin" and parameter:
            pos += max(parameter, 0)  # raw binary data
        elif word in _RTF_SKIPPED and skip_depth is None:
            skip_depth = depth
        elif skip_depth is not None:
            continue
        elif word == b"ansicpg" and parameter:
            codepage = _codepage(parameter)
        elif word == b"uc" and parameter is not None:
            uc[-1] = max(parameter, 0)
        elif word == b"u" and parameter is not None:
            text.add(chr(parameter % 65536) if -32768 <= parameter <= 65535 else "\ufffd")
            pending_skip = uc[-1]
        elif word in _RTF_BREAKS:
            text.add(_RTF_BREAKS[word])
        elif word in _RTF_CHARS:
            text.add(_RTF_CHARS[word])
    flush()
    return text.value()


def _codepage(number: int) -> str:
    name = f"cp{number}"
    try:
        "".encode(name)
    except LookupError:
        return "cp1252"
    return name
