"""Archives DLP opens — zip, tar, and gzip / bzip2 / xz streams — behind one small interface.

``open_archive(kind, data, name)`` gives an ``Archive``: ``members(limit)`` lists at most
``limit`` members (cheap: headers only), ``read(member, cap)`` returns at most ``cap + 1``
bytes of one (so the caller sees that there was more), ``peek(member)`` its first 4 KB for
typing. The budgets (depth, entries, ratio, total bytes) are the caller's (extract.py),
the same for every kind; the readers only promise never to do more work than asked:

- zip: sizes come from the member headers; zipfile never inflates past a declared size,
  and a lying header fails its CRC.
- tar: read by our own parser (ustar, GNU long names, pax paths), one header at a time;
  Python 3.11's tarfile has a pax-header regular expression with catastrophic
  backtracking (CVE-2024-6232, fixed in 3.11.10). Links, devices and directories carry
  no content and are skipped; sparse files are refused (their size is not their bytes).
- gzip / bzip2 / xz: one member (a compressed stream; concatenated streams are read on).
  The size is only known by inflating, so ``read`` stops at ``cap + 1`` bytes.

Any damage is an ``ArchiveError``.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zipfile
import zlib
from dataclasses import dataclass
from typing import Protocol

STREAMS = ("gzip", "bzip2", "xz")
KINDS = ("zip", "tar", *STREAMS)
PEEK = 4096
LZMA_MEMORY = 64 * 1024 * 1024  # an xz header chooses its dictionary size; this caps it


class ArchiveError(Exception):
    """The archive (or one member) cannot be read."""


@dataclass(frozen=True)
class Member:
    """One file in an archive. ``size`` is None for a compressed stream (known only by
    inflating it); ``packed`` is what it takes in the archive; ``refusal`` says why it must
    not be read (encrypted, sparse), empty when it may."""

    name: str
    size: int | None
    packed: int
    key: int
    refusal: str = ""


class Archive(Protocol):
    def members(self, limit: int) -> list[Member]: ...

    def read(self, member: Member, cap: int) -> bytes: ...

    def peek(self, member: Member) -> bytes: ...


def open_archive(kind: str, data: bytes, name: str) -> Archive:
    """The reader for ``kind`` (one of KINDS) over ``data``; ``name`` names a stream's member."""
    try:
        if kind == "zip":
            return _Zip(data)
        if kind == "tar":
            return _Tar(data)
        return _Stream(kind, data, name)
    except ArchiveError:
        raise
    except Exception as error:
        raise ArchiveError(str(error) or type(error).__name__) from None


class _Zip:
    def __init__(self, data: bytes) -> None:
        self.zip = zipfile.ZipFile(io.BytesIO(data))
        self.infos = [info for info in self.zip.infolist() if not info.is_dir()]

    def members(self, limit: int) -> list[Member]:
        return [
            Member(info.filename, info.file_size, info.compress_size, key, "encrypted" if info.flag_bits & 0x1 else "")
            for key, info in enumerate(self.infos[:limit])
        ]

    def read(self, member: Member, cap: int) -> bytes:
        with self.zip.open(self.infos[member.key]) as stream:
            return stream.read(cap + 1)

    def peek(self, member: Member) -> bytes:
        try:
            with self.zip.open(self.infos[member.key]) as stream:
                return stream.read(PEEK)
        except Exception:
            return b""


# --- tar ---------------------------------------------------------------------------------

_TAR_SKIPPED = frozenset(b"123456")  # hard link, symlink, char and block device, directory, fifo
_TAR_META = frozenset(b"gKVM")  # global pax header, GNU long link, volume label, multi-volume


def is_tar(data: bytes) -> bool:
    """A ustar (or GNU) header with a valid checksum at the start."""
    return len(data) >= 512 and data[257:262] == b"ustar" and _checksum_ok(data[:512])


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _number(block[148:156])
    except ArchiveError:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:512])
    signed = unsigned - 2 * sum(b for b in block[:148] + block[156:512] if b > 127)
    return stored in (unsigned, signed)


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # GNU base-256
        return int.from_bytes(field[1:], "big")
    digits = field.replace(b"\0", b" ").strip()
    try:
        return int(digits or b"0", 8)
    except ValueError:
        raise ArchiveError(f"bad number field {digits[:16]!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "replace")


def _pax_path(records: bytes) -> str | None:
    """The ``path`` of a pax extended header (records ``LEN key=value\\n``), read linearly."""
    path, pos = None, 0
    while pos < len(records):
        space = records.find(b" ", pos, pos + 20)
        if space < 0 or not records[pos:space].isdigit():
            break
        length = int(records[pos:space])
        if length <= 0 or pos + length > len(records):
            break
        key, _, value = records[space + 1 : pos + length].partition(b"=")
        if key == b"path":
            path = value.rstrip(b"\n").decode("utf-8", "replace")
        pos += length
    return path


class _Tar:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def members(self, limit: int) -> list[Member]:
        data, found, pos = self.data, [], 0
        long_name = pax_name = None
        while pos + 512 <= len(data) and len(found) < limit:
            block = data[pos : pos + 512]
            if not block.strip(b"\0"):
                break  # the end-of-archive blocks
            if not _checksum_ok(block):
                raise ArchiveError(f"bad header checksum at offset {pos}")
            size, kind = _number(block[124:136]), block[156]
            start = pos + 512
            if start + size > len(data):
                raise ArchiveError(f"member at offset {pos} runs past the end of the archive")
            pos = start + (size + 511) // 512 * 512
            if kind == ord("L"):
                long_name = _text(data[start : start + size])
            elif kind in (ord("x"), ord("X")):
                pax_name = _pax_path(data[start : start + size]) or pax_name
            elif kind in _TAR_META:
                continue
            else:
                name = pax_name or long_name or self._name(block)
                long_name = pax_name = None
                if kind not in _TAR_SKIPPED:
                    found.append(Member(name, size, size, start, "sparse file" if kind == ord("S") else ""))
        return found

    @staticmethod
    def _name(block: bytes) -> str:
        name = _text(block[:100])
        prefix = _text(block[345:500]) if block[257:262] == b"ustar" else ""
        return f"{prefix}/{name}" if prefix else name

    def read(self, member: Member, cap: int) -> bytes:
        return self.data[member.key : member.key + min(member.size or 0, cap + 1)]

    def peek(self, member: Member) -> bytes:
        return self.data[member.key : member.key + min(member.size or 0, PEEK)]


# --- compressed streams ------------------------------------------------------------------

_SUFFIXES = {
    ".gz": "",
    ".gzip": "",
    ".tgz": ".tar",
    ".bz2": "",
    ".tbz2": ".tar",
    ".tbz": ".tar",
    ".xz": "",
    ".txz": ".tar",
}


def _member_name(kind: str, data: bytes, name: str) -> str:
    """The file a stream holds: gzip's FNAME field, else the archive's name without its suffix."""
    if kind == "gzip" and len(data) > 10 and data[3] & 0x08:
        pos = 10
        if data[3] & 0x04:
            pos += 2 + int.from_bytes(data[10:12], "little")
        end = data.find(b"\0", pos, pos + 1024)
        if end > pos:
            stored = data[pos:end].decode("latin-1").replace("\\", "/").rsplit("/", 1)[-1]
            if stored and stored not in (".", ".."):
                return stored
    base = name.rsplit("/", 1)[-1]
    for suffix, replacement in _SUFFIXES.items():
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + replacement
    return base + ".content"


def _decompressor(kind: str):
    if kind == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if kind == "bzip2":
        return bz2.BZ2Decompressor()
    return lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=LZMA_MEMORY)


def inflate(kind: str, data: bytes, limit: int) -> bytes:
    """At most ``limit`` bytes of a gzip, bzip2 or xz stream (concatenated streams read on;
    trailing bytes that start no stream, as padding, are ignored; a cut stream gives what
    it holds)."""
    out = bytearray()
    rest = data
    try:
        while rest and len(out) < limit:
            engine = _decompressor(kind)
            out += engine.decompress(rest, limit - len(out))
            while kind != "gzip" and not engine.eof and not engine.needs_input and len(out) < limit:
                out += engine.decompress(b"", limit - len(out))
            if not engine.eof:
                break
            rest = engine.unused_data
            if not rest.startswith(data[:3]):
                break
    except (zlib.error, OSError, EOFError, lzma.LZMAError, ValueError) as error:
        if not out:
            raise ArchiveError(str(error) or type(error).__name__) from None
    return bytes(out)


class _Stream:
    def __init__(self, kind: str, data: bytes, name: str) -> None:
        self.kind, self.data = kind, data
        self.name = _member_name(kind, data, name)
        inflate(kind, data, 1)  # fails now, as other kinds do, when the header is broken

    def members(self, limit: int) -> list[Member]:
        return [Member(self.name, None, len(self.data), 0)][:limit]

    def read(self, member: Member, cap: int) -> bytes:
        return inflate(self.kind, self.data, cap + 1)

    def peek(self, member: Member) -> bytes:
        try:
            return inflate(self.kind, self.data, PEEK)
        except ArchiveError:
            return b""
