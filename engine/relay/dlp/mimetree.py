"""MIME structure located in the raw bytes: parts as offsets, payloads decoded on demand.

The stdlib's parser turns a message into text first (the whole message as a `str`), splits
it into a list of lines, joins each part's lines into a payload string and, to decode a
base64 part, encodes that string back to bytes and joins its lines again: a 40 MB message
with a 30 MB attachment costs about seven times its size in memory. Here a `Part` is a
span of the message's bytes (`buf[start:end]`, the body from `body_start`): finding the
structure copies nothing but header lines, and a payload is decoded only when, and only as
far as, it is read:

- `payload()` decodes the whole body (base64 straight from the span, no copy in between);
- `head(n)`: the first n decoded bytes, enough to tell a file's type from its magic bytes;
- `decoded_size()`: the decoded length, counted in 1 MiB steps without keeping any.

The structure is the stdlib's (RFC 2045/2046, compat32): headers to the first empty line,
a line that is not a header field ends them (MissingHeaderBodySeparatorDefect); multipart
bodies split at delimiter lines (`--boundary`, optional `--`, trailing blanks), the line
break before a delimiter belonging to it; the defects for a multipart without a boundary,
without its first or closing delimiter; message/* bodies parsed as a message;
multipart/digest parts are message/rfc822 by default; a part nested deeper than
`max_mime_depth` is text/plain. Header values are kept as written (folded, 8-bit bytes as
surrogates, as the stdlib keeps them) and interpreted by mime.py's one-pass functions.
Line breaks are CRLF or LF. Every step is linear in the size of the message.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from email import errors
from email._encoded_words import decode_b
from email.message import _decode_uu

from engine.relay.dlp.mime import _transfer_encoding, parse_params, unfold

__all__ = ["Part", "parse"]

CHUNK = 1 << 20
MAX_MIME_DEPTH = 20
_HEADER = re.compile(rb"[\041-\071\073-\176]*:")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64 = bytes(b for b in range(256) if b not in _B64_ALPHABET)
_UU = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


def parse(buf: bytes, max_mime_depth: int = MAX_MIME_DEPTH) -> Part:
    """The message in `buf` (bytes, or anything with bytes' find/count: an mmap) as a tree."""
    return Part(buf, 0, len(buf), 0, "text/plain", max_mime_depth)


class Part:
    """One message or MIME part: a span of the message's bytes, its headers, its children.

    The methods the DLP walker uses have the stdlib `Message`'s names and meaning
    (`get`, `get_content_type`, `get_payload`, `get_filename`, ...)."""

    __slots__ = (
        "buf", "start", "end", "depth", "default_type", "max_mime_depth", "defects",
        "_headers", "body_start", "_params", "_type", "children",
    )  # fmt: skip

    def __init__(self, buf: bytes, start: int, end: int, depth: int, default_type: str, max_mime_depth: int) -> None:
        self.buf, self.start, self.end, self.depth = buf, start, end, depth
        self.default_type = default_type
        self.max_mime_depth = max_mime_depth
        self.defects: list[errors.MessageDefect] = []
        self._headers, self.body_start = _headers(buf, start, end, self.defects)
        self._params: dict[str, list[tuple[str, str]] | None] = {}
        self._type: str | None = None  # declared_type(), once read
        self.children: list[Part] | None = None
        self._structure()

    # -- headers -----------------------------------------------------------------------

    def raw_items(self) -> list[tuple[str, str]]:
        """Every header field as written (value folded, without its final line break)."""
        return list(self._headers)

    def get(self, name: str, failobj=None):
        """The first field of that name, unfolded and stripped (a transfer encoding as its
        bare lower-case token), or `failobj`."""
        wanted, size = name.lower(), len(name)
        for field, value in self._headers:
            if len(field) == size and field.lower() == wanted:
                value = unfold(value).strip()
                return _transfer_encoding(value) if wanted == "content-transfer-encoding" else value
        return failobj

    def get_params(self, failobj=None, header: str = "content-type"):
        key = header.lower()
        if key not in self._params:
            value = self.get(header)
            self._params[key] = None if value is None else parse_params(value)
        params = self._params[key]
        return failobj if params is None else params

    def get_param(self, param: str, failobj=None, header: str = "content-type"):
        params = self.get_params(None, header)
        if params is None:
            return failobj
        wanted = param.lower()
        return next((text for name, text in params[1:] if name == wanted), failobj)

    @property
    def too_deep(self) -> bool:
        return self.depth > self.max_mime_depth

    def declared_type(self) -> str:
        """The Content-Type as declared (compat32's reading), also for a part too deep."""
        if self._type is None:
            params = self.get_params(None)
            if params is None:
                self._type = self.default_type
            else:
                ctype = params[0][0].lower()
                self._type = ctype if ctype.count("/") == 1 else "text/plain"
        return self._type

    def get_content_type(self) -> str:
        return "text/plain" if self.too_deep else self.declared_type()

    def get_content_maintype(self) -> str:
        return self.get_content_type().split("/")[0]

    def get_content_subtype(self) -> str:
        return self.get_content_type().split("/")[1]

    def get_content_charset(self, failobj=None):
        charset = self.get_param("charset", None)
        if charset is None or not charset.isascii():
            return failobj
        return charset.lower()

    def get_content_disposition(self) -> str | None:
        params = self.get_params(None, "content-disposition")
        return None if params is None else params[0][0].lower()

    def is_attachment(self) -> bool:
        return self.get_content_disposition() == "attachment"

    def get_filename(self, failobj=None):
        name = self.get_param("filename", None, "content-disposition")
        if name is None:
            name = self.get_param("name", None)
        return failobj if name is None else name.strip()

    # -- structure and payload ------------------------------------------------------------

    def is_multipart(self) -> bool:
        return self.children is not None

    def get_payload(self, i: int | None = None, decode: bool = False):
        """The children of a multipart or message part (`i`: one of them); for a leaf with
        `decode`, the decoded body (as `payload()`), without it the body as text."""
        if self.children is not None:
            return self.children if i is None else self.children[i]
        if decode:
            return self.payload()
        return bytes(self.body()).decode("ascii", "surrogateescape")

    def body(self) -> memoryview:
        """The body as written (transfer-encoded), without copying it."""
        return memoryview(self.buf)[self.body_start : self.end]

    def span(self) -> memoryview:
        """The whole part, headers included, as written."""
        return memoryview(self.buf)[self.start : self.end]

    def encoding(self) -> str:
        return self.get("content-transfer-encoding", "")

    def payload(self) -> bytes:
        """The body with its transfer encoding undone (stdlib's `get_payload(decode=True)`,
        with its defects): base64 and quoted-printable decoded from the span directly."""
        body, cte = self.body(), self.encoding()
        if cte == "base64":
            try:
                return binascii.a2b_base64(body)
            except binascii.Error:  # bad padding or length: the stdlib's lenient decoder, with its defects
                value, defects = decode_b(bytes(body).translate(None, b"\r\n"))
                self.defects.extend(defects)
                return value
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
        if cte in _UU:
            try:
                return _decode_uu(bytes(body))
            except ValueError:
                return bytes(body)
        return bytes(body)

    def head(self, size: int) -> bytes:
        """About the first `size` bytes of the decoded body (fewer at its end): a file's
        magic bytes and a sample of its text, without decoding the rest."""
        body, cte = self.body(), self.encoding()
        if cte == "base64":
            data = bytes(body[: size * 4 // 3 + size // 8 + 8]).translate(None, _NOT_B64 + b"=")
            try:
                return binascii.a2b_base64(data[: len(data) // 4 * 4])
            except binascii.Error:
                return b""
        if cte == "quoted-printable":
            return binascii.a2b_qp(body[: size * 3 + 3])[:size]
        if cte in _UU:
            return self.payload()[:size]
        return bytes(body[:size])

    def decoded_size(self) -> int:
        """The decoded body's length, counted a MiB at a time (for base64: data characters
        up to the padding, three bytes per four); nothing decoded is kept."""
        body, cte = self.body(), self.encoding()
        if cte == "base64":
            count = 0
            for at in range(0, len(body), CHUNK):
                chunk = bytes(body[at : at + CHUNK])
                pad = chunk.find(b"=")
                count += len((chunk if pad < 0 else chunk[:pad]).translate(None, _NOT_B64))
                if pad >= 0:
                    break
            return count * 3 // 4
        if cte in ("quoted-printable", *_UU):
            return sum(len(piece) for piece in self.decoded_chunks())
        return len(body)

    def decoded_chunks(self) -> Iterator[bytes]:
        """The decoded body in pieces of about a MiB (quoted-printable cut at line breaks)."""
        body, cte = self.body(), self.encoding()
        if cte == "quoted-printable":
            at = 0
            while at < len(body):
                cut = self.buf.rfind(b"\n", self.body_start + at, self.body_start + at + CHUNK)
                stop = len(body) if cut < 0 or at + CHUNK >= len(body) else cut + 1 - self.body_start
                yield binascii.a2b_qp(body[at:stop])
                at = stop
            return
        yield self.payload()

    # -- parsing ----------------------------------------------------------------------

    def _structure(self) -> None:
        if self.too_deep:
            return
        ctype = self.get_content_type()
        maintype = ctype.split("/")[0]
        if maintype == "message":
            if ctype == "message/delivery-status":
                self.children = []  # status fields, not content (the stdlib: header blocks)
            else:
                self.children = [
                    Part(self.buf, self.body_start, self.end, self.depth + 1, "text/plain", self.max_mime_depth)
                ]
        elif maintype == "multipart":
            self._split(ctype)

    def _split(self, ctype: str) -> None:
        boundary = self.get_param("boundary")
        if not boundary or not boundary.rstrip():
            self.defects.append(errors.NoBoundaryInMultipartDefect())
            return
        delimiter = b"--" + boundary.rstrip().encode("utf-8", "surrogateescape")
        lines = _delimiters(self.buf, delimiter, self.body_start, self.end)
        if not lines:
            self.defects.append(errors.StartBoundaryNotFoundDefect())
            return
        default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        self.children = []
        closed = lines[-1][2]
        if not closed:
            self.defects.append(errors.CloseBoundaryNotFoundDefect())
        for (_, after, close), following in zip(lines, [*lines[1:], None], strict=True):
            if close:
                break
            stop = self.end if following is None else _before_break(self.buf, following[0], after)
            self.children.append(Part(self.buf, after, stop, self.depth + 1, default, self.max_mime_depth))


def _delimiters(buf: bytes, delimiter: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """Delimiter lines in buf[start:end] up to the closing one: (where the line starts,
    where the next line starts, whether it closes)."""
    found = []
    at = start
    size = len(delimiter)
    while (where := buf.find(delimiter, at, end)) >= 0:
        at = where + 1
        if where != start and buf[where - 1] != 0x0A:
            continue
        tail = where + size
        close = buf.startswith(b"--", tail, end)
        tail += 2 if close else 0
        while tail < end and buf[tail] in (0x20, 0x09):
            tail += 1
        if tail == end:
            next_line = end
        elif buf.startswith(b"\r\n", tail, end):
            next_line = tail + 2
        elif buf[tail] == 0x0A:
            next_line = tail + 1
        else:
            continue  # `--boundary` followed by other text: not a delimiter line
        found.append((where, next_line, close))
        if close:
            break
        at = next_line
    return found


def _before_break(buf: bytes, where: int, floor: int) -> int:
    """Where a part ends: before the line break that belongs to the delimiter at `where`."""
    if where - 2 >= floor and buf.startswith(b"\r\n", where - 2):
        return where - 2
    if where - 1 >= floor and buf[where - 1] == 0x0A:
        return where - 1
    return max(where, floor)


def _headers(buf: bytes, start: int, end: int, defects: list) -> tuple[list[tuple[str, str]], int]:
    """The header fields from `start` and where the body begins (after the empty line; at
    the first line that is not a field, with a defect; at `end` when there is no body)."""
    clean = _CLEAN_HEADERS.match(buf, start, end)
    if clean is not None:  # the usual header: fields, folded or not, and the empty line
        return clean_fields(buf, start, clean.end()), clean.end()
    return _header_lines(buf, start, end, defects)


def _header_lines(buf: bytes, start: int, end: int, defects: list) -> tuple[list[tuple[str, str]], int]:
    """`_headers` line by line, with the stdlib's defects."""
    fields: list[list[str]] = []
    at = start
    while at < end:
        newline = buf.find(b"\n", at, end)
        stop = end if newline < 0 else newline + 1
        line = buf[at:stop]
        content = line.rstrip(b"\r\n")
        if not content:
            return _joined(fields), stop
        first = content[:1]
        if first in (b" ", b"\t"):
            if fields:
                fields[-1].append(line.decode("ascii", "surrogateescape"))
            else:
                defects.append(errors.FirstHeaderLineIsContinuationDefect(line.decode("ascii", "replace")))
        elif content.startswith(b"From ") and not _HEADER.match(content):
            if at != start:
                defects.append(errors.MisplacedEnvelopeHeaderDefect(content.decode("ascii", "replace")))
        elif content[:1] == b":":
            defects.append(errors.InvalidHeaderDefect("Missing header name."))
        elif _HEADER.match(content):
            colon = content.index(b":")
            name = content[:colon].decode("ascii", "surrogateescape")
            value = line[colon + 1 :].decode("ascii", "surrogateescape").lstrip(" \t")
            fields.append([name, value])
        else:
            defects.append(errors.MissingHeaderBodySeparatorDefect())
            return _joined(fields), at
        at = stop
    return _joined(fields), end


# A header every line of which is a field or a continuation, up to an empty line (CRLF or
# LF): what `_headers`' line loop reads without a defect, read by one regular expression.
# `.` is every byte but LF, so a line's CRs, its break's included, stay in the value and
# are cut at the end as the loop cuts them; sre runs `.*` at memchr-like speed, where a
# class such as `[^\r\n]*` costs ~10 ns a byte (a 31 KB Subject: 0.4 ms). Anything else
# (a line that is not a field, an envelope "From " line, an empty line of CRs, no empty
# line) takes the loop.
_FIELD = rb"[\041-\071\073-\176]+:.*(?:\n[ \t].*)*\n"
_CLEAN_HEADERS = re.compile(rb"(?:" + _FIELD + rb")*\r?\n")
_CLEAN_FIELD = re.compile(rb"([\041-\071\073-\176]+):[ \t]*(.*(?:\n[ \t].*)*)\n")


def clean_fields(buf: bytes, start: int, end: int) -> list[tuple[str, str]]:
    """The fields of a header `_CLEAN_HEADERS` matched in buf[start:end], as `_headers`'
    loop reads them: the value after the colon and its blanks, folds kept, the CRs and LFs
    at its end cut."""
    return [
        (name.decode("ascii"), value.decode("ascii", "surrogateescape").rstrip("\r\n"))
        for name, value in _CLEAN_FIELD.findall(buf, start, end)
    ]


def _joined(fields: list[list[str]]) -> list[tuple[str, str]]:
    return [(name, "".join(pieces).rstrip("\r\n")) for name, *pieces in fields]
