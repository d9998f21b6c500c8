"""True file types from magic bytes: what a file is, whatever its name or Content-Type say.

``sniff(data)`` is one of TRUE_TYPES (defined with the config model, which names them in
attachment conditions). Archives DLP opens (zip, tar, gzip, bzip2, xz) are
told apart from the ones it cannot open (7z, rar: listed as unscannable by extract.py)
and from documents (pdf, docx, xlsx, pptx, odt, ods, odp, rtf: read by documents.py;
ole2, the old binary Office formats, is typed only).

A document that is a zip inside (OOXML, OpenDocument) is typed as the document, not as
``zip``: an attachment condition's ``type: [zip]`` means archives, and does not match a
docx or an odt (list them beside it to match them too). OOXML is told by its
``[Content_Types].xml`` and its folder, OpenDocument by its ``mimetype`` member (text,
spreadsheet or presentation; other OpenDocument kinds, such as drawings, stay ``zip``).
"""

from __future__ import annotations

import codecs
import io
import zipfile

from engine.config.model.dlp import TRUE_TYPES
from engine.relay.dlp.archives import is_tar
from engine.relay.dlp.documents import OPENDOCUMENT

__all__ = ["TRUE_TYPES", "UNOPENED_ARCHIVES", "sniff"]

UNOPENED_ARCHIVES = ("7z", "rar")

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\x7fELF", "elf"),
    (b"{\\rtf", "rtf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_BZIP2_BLOCKS = (b"1AY&SY", b"\x17rE8P\x90")  # a first block, or the end of an empty stream
_OOXML = (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx"))
_MIMETYPE_SIZE = 100  # the longest OpenDocument media type is 47 bytes
_TEXT_CONTROLS = set(range(32)) - {8, 9, 10, 12, 13, 27}


def sniff(data: bytes) -> str:
    """The true type of a file from its first bytes (and, for zips, its member names).

    The claimed Content-Type and the file name are never consulted.
    """
    if is_tar(data):  # first: a tar's first member starts at byte 512 and may be a PDF
        return "tar"
    if b"%PDF-" in data[:1024]:
        return "pdf"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    if data.startswith(b"BZh") and data[3:4].isdigit() and data[4:10] in _BZIP2_BLOCKS:
        return "bzip2"
    if data.startswith(_ZIP_MAGIC):
        return _zip_flavour(data)
    if data.startswith(b"MZ") and _is_executable(data):
        return "exe"
    return "text" if _looks_like_text(data) else "unknown"


def _zip_flavour(data: bytes) -> str:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except Exception:
        return "zip"
    if "[Content_Types].xml" in names:
        for folder, kind in _OOXML:
            if any(name.startswith(folder) for name in names):
                return kind
    if "mimetype" in names:
        return _opendocument(archive) or "zip"
    return "zip"


def _opendocument(archive: zipfile.ZipFile) -> str | None:
    """odt, ods or odp when the zip's ``mimetype`` member names one (the specification
    wants it first and stored; a lenient reader, like LibreOffice, finds it anywhere)."""
    info = archive.getinfo("mimetype")
    if info.file_size > _MIMETYPE_SIZE:
        return None
    try:
        declared = archive.read(info)  # never inflated past its declared size
    except Exception:  # encrypted, damaged: not a document we can tell
        return None
    return OPENDOCUMENT.get(declared.decode("ascii", "replace").strip())


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
