"""Parsing mail for DLP at a cost linear in its size, whatever the sender wrote.

The stdlib's FeedParser finds the MIME structure in one pass, so it stays; nothing here
lets the ``email`` package interpret a header, because that is where its cost depends on
the input: ``policy.default`` parses structured headers with a parser that is quadratic in
encoded words and parameters (a 280 KB Subject of 20,000 encoded words: 6.6 s and 2.9 GB),
and compat32's ``Message`` splits parameters with a scan that is quadratic in semicolons
inside quotes. Instead:

- ``POLICY`` (compat32 otherwise): a header is returned as written, unfolded;
  Content-Transfer-Encoding as its bare token (``base64 `` or ``BASE64 (x)`` must not
  leave a body undecoded); headers written back (``as_bytes``) exactly as read.
- ``Part``, the parser's message class: Content-Type and Content-Disposition parameters
  are parsed once, in one pass (RFC 2045 quoting, RFC 2231 continuations and charsets).
  A part nested deeper than the policy's ``max_mime_depth`` is read as text/plain: the
  parser checks every line against every open boundary, so depth multiplies its cost.
- ``decode_header``: RFC 2047 encoded words decoded in one pass, to a bounded length.
- ``text_codec`` / ``decode_text``: a declared charset's codec, refusing those that are
  not MIME charsets (punycode decodes in quadratic time, unicode_escape runs escapes).
"""

from __future__ import annotations

import binascii
import codecs
import re
from email._policybase import Compat32
from email.message import Message
from urllib.parse import unquote_to_bytes

_FOLD = re.compile(r"\r?\n(?=[ \t])|\r(?=[ \t])")
_COMMENT = re.compile(r"\([^()]*\)")
_QUOTED = re.compile(r'"([^"\\]*(?:\\[\s\S][^"\\]*)*)"?')
_ESCAPED = re.compile(r"\\([\s\S])")
_PARAM_NAME = re.compile(r'[;\s]*([^=;"\s]*)[ \t]*(=?)[ \t]*')
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_REFUSED_CODECS = frozenset({"punycode", "idna", "unicode_escape", "raw_unicode_escape", "undefined"})


def unfold(value: str) -> str:
    """A header value on one line (RFC 5322 unfolding: line breaks before whitespace go)."""
    return _FOLD.sub("", value) if "\n" in value or "\r" in value else value


def text_codec(charset: str | None) -> str | None:
    """The codec for a declared MIME charset, or None when unknown or not a text charset."""
    if not charset or len(charset) > 64:
        return None
    try:
        info = codecs.lookup(charset.strip().strip('"'))
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name.replace("-", "_") in _REFUSED_CODECS:
        return None
    return info.name


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Bytes to text: the declared charset if usable, else UTF-8 (BOM-aware), else cp1252.

    Returns the text and a problem string when the declared charset was unusable.
    """
    problem = None
    if charset:
        codec = text_codec(charset)
        if codec:
            return data.decode(codec, errors="replace"), None
        problem = f"unknown charset {charset[:64]!r}"
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8", errors="replace"), problem
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16", errors="replace"), problem
    try:
        return data.decode("utf-8"), problem
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace"), problem


def _as_text(value: str) -> str:
    """A header as the parser read it (bytes smuggled as surrogates) to real text."""
    if value.isascii():
        return value
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _word_bytes(encoding: str, text: str) -> bytes | None:
    try:
        data = text.encode("ascii")
        if encoding in "bB":
            return binascii.a2b_base64(data + b"=" * (-len(data) % 4))
        return binascii.a2b_qp(data, header=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return None


def decode_header(value: str, limit: int) -> tuple[str, bool]:
    """RFC 2047: a raw header value as text, at most ``limit`` characters; True when cut.

    One pass: encoded words of one charset that follow each other (whitespace between
    them is dropped, as the RFC says) are joined as bytes before decoding, so a character
    split across words survives; an encoded word that does not decode stays as written.
    """
    value = _as_text(unfold(value))
    if "=?" not in value:
        return (value, False) if len(value) <= limit else (value[:limit], True)
    out: list[str] = []
    size = 0
    pending = bytearray()
    pending_charset = ""
    end = 0

    def flush() -> None:
        nonlocal size, pending
        if pending:
            text, _ = decode_text(bytes(pending), pending_charset)
            out.append(text)
            size += len(text)
            pending = bytearray()

    for word in _WORD.finditer(value):
        gap = value[end : word.start()]
        data = _word_bytes(word.group(2), word.group(3))
        if data is None:  # not a word after all: literal text
            continue
        if not (pending and (not gap or gap.isspace())):
            flush()
            out.append(gap)
            size += len(gap)
        charset = word.group(1).partition("*")[0].lower()
        if charset != pending_charset:
            flush()
            pending_charset = charset
        pending += data
        end = word.end()
        if size + len(pending) > limit:
            break
    flush()
    out.append(value[end:])
    text = "".join(out)
    return (text, False) if len(text) <= limit else (text[:limit], True)


def parse_params(value: str) -> list[tuple[str, str]]:
    """A Content-Type / Content-Disposition value as ``[(main value, ""), (name, value), ...]``.

    Names are lower-cased; quoted values unquoted; RFC 2231 forms (``name*=utf-8''…``,
    ``name*0*=…; name*1=…``) joined and decoded under their plain name. One pass, tolerant
    of junk between parameters (skipped to the next ``;``).
    """
    value = unfold(value)
    main, _, rest = value.partition(";")
    pairs: list[tuple[str, str]] = []
    pos, size = 0, len(rest)
    while pos < size:
        match = _PARAM_NAME.match(rest, pos)
        name, equals = match.group(1), match.group(2)
        pos = match.end()
        if not name and not equals:  # a stray quote or the like: skip to the next parameter
            semi = rest.find(";", pos + 1)
            pos = size if semi < 0 else semi
            continue
        text = ""
        if equals:
            if rest.startswith('"', pos):
                quoted = _QUOTED.match(rest, pos)
                text = _ESCAPED.sub(r"\1", quoted.group(1))
                semi = rest.find(";", quoted.end())
                pos = size if semi < 0 else semi
            else:
                semi = rest.find(";", pos)
                end = size if semi < 0 else semi
                text, pos = rest[pos:end].strip(), end
        if name:
            pairs.append((name.lower(), text))
    return [(main.strip(), ""), *_rfc2231(pairs)]


def _rfc2231(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    plain: dict[str, str] = {}
    pieces: dict[str, dict[int, tuple[str, bool]]] = {}
    for name, text in pairs:
        base, star, tail = name.partition("*")
        if not star:
            plain.setdefault(name, text)
        elif tail == "":
            pieces.setdefault(base, {}).setdefault(0, (text, True))
        else:
            number, encoded = tail.removesuffix("*"), tail.endswith("*")
            if number.isdigit() and len(number) <= 4:
                pieces.setdefault(base, {}).setdefault(int(number), (text, encoded))
    for base, parts in pieces.items():
        charset, chunks = None, []
        for index in sorted(parts):
            text, encoded = parts[index]
            if encoded:
                if index == min(parts) and text.count("'") >= 2:
                    charset, _, text = text.split("'", 2)
                chunks.append(unquote_to_bytes(text))
            else:
                chunks.append(text.encode("utf-8", "surrogateescape"))
        plain[base], _ = decode_text(b"".join(chunks), charset or "utf-8")
    return list(plain.items())


def _transfer_encoding(value: str) -> str:
    return _COMMENT.sub(" ", value).strip().strip('"').strip().lower()


class _Policy(Compat32):
    """compat32 without interpreting headers: values as written (unfolded), the transfer
    encoding as a bare token, and headers written back exactly as read."""

    max_mime_depth = 20
    message_factory = None  # set to Part below

    def header_fetch_parse(self, name, value):
        if not isinstance(value, str):
            return value
        value = unfold(value).strip()
        return _transfer_encoding(value) if name.lower() == "content-transfer-encoding" else value

    def fold(self, name, value):
        return f"{name}: {value}{self.linesep}"

    def fold_binary(self, name, value):
        return self.fold(name, str(value)).encode("utf-8", "surrogateescape")


class Part(Message):
    """A message or MIME part as the parser builds it, with linear parameter parsing and a
    nesting depth (the root is 0; each attached part one more than its parent)."""

    depth = 0

    def attach(self, payload):
        if isinstance(payload, Part):
            payload.depth = self.depth + 1
        super().attach(payload)

    @property
    def too_deep(self) -> bool:
        return self.depth > getattr(self.policy, "max_mime_depth", _Policy.max_mime_depth)

    def declared_type(self) -> str:
        """The Content-Type as declared, also for a part too deep to be parsed as one."""
        return super().get_content_type()

    def get_content_type(self) -> str:
        return "text/plain" if self.too_deep else super().get_content_type()

    def is_attachment(self) -> bool:
        return self.get_content_disposition() == "attachment"

    def get_params(self, failobj=None, header="content-type", unquote=True):
        value = self.get(header)
        if value is None:
            return failobj
        cache = self.__dict__.setdefault("_parsed_params", {})
        key = (header.lower(), value)
        if key not in cache:
            cache[key] = parse_params(value)
        return cache[key]

    def get_param(self, param, failobj=None, header="content-type", unquote=True):
        params = self.get_params(None, header)
        if params is None:
            return failobj
        wanted = param.lower()
        return next((text for name, text in params[1:] if name == wanted), failobj)


_Policy.message_factory = Part
POLICY = _Policy(linesep="\r\n")
