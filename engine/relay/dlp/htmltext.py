"""The text of an HTML document for DLP, in one linear pass: what the reader sees, then
what a sender can hide from the reader but not from the recipient.

``html_text(document)`` returns the visible text (one line per block element, table
cells side by side, ``&nbsp;`` as a space), then the hidden text, one piece per line:

- text-bearing attributes: ``alt``, ``title``, ``aria-label``, ``placeholder``, ``value``…
- HTML comments (Outlook renders the ones written ``<!--[if mso]>…<![endif]-->``);
- the strings of CSS ``content:`` declarations, in ``<style>`` and ``style`` attributes,
  CSS escapes decoded (``"\\34 111"`` is ``4111``).

Text inside ``<noscript>``, ``<template>`` or an element hidden with CSS (``display:none``)
is read like any other text: it still leaves with the message. Script code is not read
(mail clients never run it, and code is full of digit runs), nor are URLs, ids and
classes.

The stdlib's ``html.parser`` is not used: on Python 3.11 it is quadratic on unclosed tags
(``"<a" * 100_000`` took 90 s) and raises on some malformed declarations.
"""

from __future__ import annotations

import html
import re

_BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt footer h1 h2 h3 h4 h5 h6 header hr "
    "li main nav noscript ol p pre section table template title tr ul".split()
)
_CELLS = frozenset({"td", "th"})
_TEXT_ATTRIBUTES = frozenset(
    "alt title aria-label aria-description aria-roledescription placeholder label summary value content abbr".split()
)
_RAW = ("script", "style", "title", "textarea", "xmp")  # content is text up to the end tag
_RAW_END = {name: re.compile(rf"</{name}(?=[\s/>]|$)", re.IGNORECASE) for name in _RAW}
_MARKUP = re.compile(r"<[A-Za-z/!?]")  # a "<" before anything else is text
_TAG_NAME = re.compile(r"[A-Za-z][^\s/>]*")
_SKIP = re.compile(r"[\s/]*")
_ATTR_NAME = re.compile(r"[^\s/>][^\s/>=]*")
_EQUALS = re.compile(r"\s*=\s*")
_UNQUOTED = re.compile(r"[^\s>]*")
_LONG_CHARREF = re.compile(r"&#(?:[xX]0*[0-9a-fA-F]{7,}|0*[0-9]{8,});?")
_CSS_CONTENT = re.compile(r"content\s*:", re.IGNORECASE)
_CSS_TOKEN = re.compile(
    r"\s*(?:\"([^\"\\\n]*(?:\\[\s\S][^\"\\\n]*)*)\"?|'([^'\\\n]*(?:\\[\s\S][^'\\\n]*)*)'?|([;}!])|[^\s;}!\"']+)"
)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6})[ \t\n\f]?|\\\r?\n|\\([\s\S])")
_SPACES = re.compile(r"[ \t\r\f\v]+")
_LINES = re.compile(r" *\n\s*")


def html_text(document: str) -> str:
    """The visible text of an HTML document, then its hidden text (see the module doc)."""
    visible: list[str] = []
    hidden: list[str] = []
    comments: list[str] = []
    _walk(document, visible, hidden, comments)
    for comment in comments:  # their markup is read too, but comments do not nest
        inner: list[str] = []
        _walk(comment, inner, hidden, None)
        hidden.append("".join(inner))
    text = _tidy("".join(visible))
    extra = "\n".join(piece for piece in map(_tidy, hidden) if piece)
    return f"{text}\n{extra}" if text and extra else text or extra


def _tidy(text: str) -> str:
    text = _SPACES.sub(" ", text.replace("\xa0", " "))
    return _LINES.sub("\n", text).strip()


def unescape(text: str) -> str:
    """Character references decoded (an absurdly long number is a replacement character)."""
    if "&" not in text:
        return text
    return html.unescape(_LONG_CHARREF.sub("\ufffd", text))


def _walk(doc: str, visible: list[str], hidden: list[str], comments: list[str] | None) -> None:
    """One pass over ``doc``; every step moves forward, so the cost is linear."""
    pos, size = 0, len(doc)
    while pos < size:
        markup = _MARKUP.search(doc, pos)
        if not markup:
            visible.append(unescape(doc[pos:]))
            return
        if markup.start() > pos:
            visible.append(unescape(doc[pos : markup.start()]))
        pos = markup.start()
        after = doc[pos + 1]
        if doc.startswith("<!--", pos):
            end = doc.find("-->", pos + 4)
            body = doc[pos + 4 : size if end < 0 else end]
            if comments is None:
                hidden.append(body)
            else:
                comments.append(body)
            pos = size if end < 0 else end + 3
        elif after in "!?" or (after == "/" and not _TAG_NAME.match(doc, pos + 2)):
            end = doc.find(">", pos + 2)  # a declaration, processing instruction or bogus comment
            pos = size if end < 0 else end + 1
        elif after == "/":
            name = _TAG_NAME.match(doc, pos + 2)
            end = doc.find(">", name.end())
            _separate(name.group().lower(), visible)
            pos = size if end < 0 else end + 1
        else:
            name = _TAG_NAME.match(doc, pos + 1)
            tag = name.group().lower()
            pos = _start_tag(doc, name.end(), tag, visible, hidden)
            if tag in _RAW and pos < size:
                pos = _raw_text(doc, pos, tag, visible, hidden)


def _start_tag(doc: str, pos: int, tag: str, visible: list[str], hidden: list[str]) -> int:
    """Read a start tag's attributes from ``pos``; return where the tag ends."""
    _separate(tag, visible)
    size = len(doc)
    while True:
        pos = _SKIP.match(doc, pos).end()
        if pos >= size:
            return size
        if doc[pos] == ">":
            return pos + 1
        name = _ATTR_NAME.match(doc, pos)
        attribute = name.group().lower()
        pos = name.end()
        equals = _EQUALS.match(doc, pos)
        if not equals:
            continue
        pos = equals.end()
        if pos < size and doc[pos] in "\"'":
            end = doc.find(doc[pos], pos + 1)
            if end < 0:  # the value runs to the end of the document: so does the tag
                return size
            value, pos = doc[pos + 1 : end], end + 1
        else:
            unquoted = _UNQUOTED.match(doc, pos)
            value, pos = unquoted.group(), unquoted.end()
        if attribute in _TEXT_ATTRIBUTES:
            hidden.append(unescape(value))
        elif attribute == "style":
            hidden.extend(css_strings(unescape(value)))


def _raw_text(doc: str, pos: int, tag: str, visible: list[str], hidden: list[str]) -> int:
    """The content of a raw-text element (up to its end tag); return where it ends."""
    end = _RAW_END[tag].search(doc, pos)
    content = doc[pos : end.start() if end else len(doc)]
    if tag == "style":
        hidden.extend(css_strings(content))
    elif tag == "xmp":
        visible.append(content)
    elif tag != "script":
        visible.append(unescape(content))
    if not end:
        return len(doc)
    _separate(tag, visible)
    close = doc.find(">", end.end())
    return len(doc) if close < 0 else close + 1


def _separate(tag: str, visible: list[str]) -> None:
    if tag in _BLOCKS:
        visible.append("\n")
    elif tag in _CELLS:
        visible.append(" ")


def css_strings(css: str) -> list[str]:
    """The strings of every ``content:`` declaration, CSS escapes decoded."""
    found: list[str] = []
    pos = 0
    while match := _CSS_CONTENT.search(css, pos):
        pos = match.end()
        while token := _CSS_TOKEN.match(css, pos):
            if token.end() == pos:
                break
            pos = token.end()
            if token.group(3):  # ; } ! end the declaration's value
                break
            text = token.group(1) if token.group(1) is not None else token.group(2)
            if text:
                found.append(_CSS_ESCAPE.sub(_css_char, text))
    return found


def _css_char(match: re.Match) -> str:
    if match.group(1):
        code = int(match.group(1), 16)
        return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else "\ufffd"
    return match.group(2) or ""
