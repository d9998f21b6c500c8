"""The linear MIME parser (engine/relay/dlp/mimetree.py): the stdlib's structure, a fraction of its memory.

Messages are built by the stdlib's own generator (an independent route), in random shapes
by Hypothesis, and both parsers must find the same parts, types, names and decoded payloads.
"""

from __future__ import annotations

import os
import tracemalloc
from email import errors, message_from_bytes
from email.message import EmailMessage

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.relay.dlp import mimetree
from engine.relay.dlp.extract import extract
from engine.relay.methods.smime import already_encrypted


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _leaves_stdlib(message) -> list[tuple[str, str | None, bytes]]:
    if message.is_multipart():
        return [leaf for part in message.get_payload() for leaf in _leaves_stdlib(part)]
    return [(message.get_content_type(), message.get_filename(), message.get_payload(decode=True) or b"")]


def _leaves_tree(part: mimetree.Part) -> list[tuple[str, str | None, bytes]]:
    if part.is_multipart():
        return [leaf for child in part.get_payload() for leaf in _leaves_tree(child)]
    return [(part.get_content_type(), part.get_filename(), part.payload())]


texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=300)
files = st.tuples(st.binary(max_size=3000), st.sampled_from(["a.bin", "report.pdf", "données.csv", "x y.zip"]))


@st.composite
def messages(draw) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "a@example.com"
    mail["To"] = "b@partner.test"
    mail["Subject"] = draw(texts).replace("\n", " ").replace("\r", " ")
    mail.set_content(draw(texts), cte=draw(st.sampled_from(["quoted-printable", "base64", "8bit"])))
    if draw(st.booleans()):
        mail.add_alternative("<p>" + draw(texts) + "</p>", subtype="html")
    for data, name in draw(st.lists(files, max_size=3)):
        mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    if draw(st.booleans()):
        inner = EmailMessage()
        inner["Subject"] = "forwarded"
        inner.set_content(draw(texts))
        mail.add_attachment(inner)
    return mail


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.booleans())
def test_same_parts_names_and_payloads_as_the_stdlib(mail: EmailMessage, lf_only: bool) -> None:
    raw = _crlf(mail.as_bytes())
    if lf_only:
        raw = raw.replace(b"\r\n", b"\n")
    expected = _leaves_stdlib(message_from_bytes(raw, _class=EmailMessage))
    assert _leaves_tree(mimetree.parse(raw)) == expected


def test_delimiter_lines_as_rfc_2046_reads_them() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\npreamble\r\n'
        b"--b\r\n\r\none\r\n--bx\r\nstill one\r\n--b  \r\n\r\ntwo\r\n--b--\r\nepilogue\r\n"
    )
    top = mimetree.parse(raw)
    assert [p.payload() for p in top.get_payload()] == [b"one\r\n--bx\r\nstill one", b"two"]
    assert top.defects == []


def test_defects_of_a_broken_multipart() -> None:
    no_boundary = mimetree.parse(b"Content-Type: multipart/mixed\r\n\r\nbody\r\n")
    no_start = mimetree.parse(b"Content-Type: multipart/mixed; boundary=z\r\n\r\nbody\r\n")
    no_close = mimetree.parse(b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\r\nbody\r\n")
    assert [type(d).__name__ for d in no_boundary.defects] == ["NoBoundaryInMultipartDefect"]
    assert [type(d).__name__ for d in no_start.defects] == ["StartBoundaryNotFoundDefect"]
    assert [type(d).__name__ for d in no_close.defects] == ["CloseBoundaryNotFoundDefect"]
    assert not no_boundary.is_multipart() and not no_start.is_multipart()
    assert [p.payload() for p in no_close.get_payload()] == [b"body\r\n"]


def test_parts_deeper_than_the_limit_are_text() -> None:
    raw = b""
    for level in range(30):
        raw += f"Content-Type: multipart/mixed; boundary=b{level}\r\n\r\n--b{level}\r\n".encode()
    raw += b"Content-Type: text/plain\r\n\r\nsecret\r\n"
    top = mimetree.parse(raw, max_mime_depth=5)
    part, depth = top, 0
    while part.is_multipart():
        part, depth = part.get_payload(0), depth + 1
    assert (depth, part.get_content_type(), part.declared_type()) == (6, "text/plain", "multipart/mixed")
    assert b"secret" in part.payload()


def _large(size: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "a@example.com", "b@partner.test", "large"
    mail.set_content("see the attachment\n")
    mail.add_attachment(os.urandom(size), maintype="application", subtype="octet-stream", filename="blob.bin")
    return _crlf(mail.as_bytes())


def test_extracting_a_large_attachment_copies_none_of_it() -> None:
    """Before: the stdlib parse of this 27 MB message peaked at 7.7 times its size
    (the whole message as text, as a list of lines, the payload string, its bytes)."""
    raw = _large(20_000_000)
    tracemalloc.start()
    try:
        found = extract(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"extract peaked at {peak / len(raw):.2f} x the message"  # a few 1 MiB steps
    (attachment,) = found.attachments
    assert (attachment.name, attachment.true_type, attachment.size) == ("blob.bin", "unknown", 20_000_000)


def test_already_encrypted_reads_no_copy_of_a_large_message() -> None:
    raw = _large(20_000_000)
    tracemalloc.start()
    try:
        verdict = already_encrypted(raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert verdict is None
    assert peak < 4 * 2**20


# -- the header read at once ----------------------------------------------------------------

VALUE_PIECES = [b" ", b"\t", b"value", b"\r", b"\xe9t\xe9", b":", b"=?utf-8?q?w?=", b"\x00"]
NAMES = [b"Subject", b"X-Tag", b"Content-Type", b"From ", b"From", b"", b"a b", b"\xe9"]
BREAKS = [b"\r\n", b"\n", b"\r\r\n", b"\r"]


@st.composite
def header_blocks(draw) -> bytes:
    """Header lines as senders write them and get them wrong: fields (a name, a colon, a
    value of blanks, words, stray CRs and 8-bit bytes), folds, lines that are no field,
    envelope lines, each ending in CRLF, LF, CR CR LF or a bare CR; then an empty line,
    or none, and a body."""
    value = st.lists(st.sampled_from(VALUE_PIECES), max_size=5).map(b"".join)
    field = st.tuples(st.sampled_from(NAMES), st.sampled_from([b":", b""]), value).map(b"".join)
    fold = st.tuples(st.sampled_from([b" ", b"\t"]), value).map(b"".join)
    line = st.one_of(field, fold, st.sampled_from([b"From sender@example.com Mon", b"no colon", b""]))
    lines = draw(st.lists(st.tuples(line, st.sampled_from(BREAKS)), max_size=8))
    end = draw(st.sampled_from([b"\r\n", b"\n", b""]))
    return b"".join(text + brk for text, brk in lines) + end + draw(st.sampled_from([b"", b"body\r\n", b"a: b\r\n"]))


def _read_both(raw: bytes, start: int = 0) -> tuple[tuple, tuple]:
    clean: list = []
    lines: list = []
    one = mimetree._headers(raw, start, len(raw), clean)
    other = mimetree._header_lines(raw, start, len(raw), lines)
    return (one, [type(d) for d in clean]), (other, [type(d) for d in lines])


@settings(max_examples=1000, deadline=None)
@given(header_blocks())
def test_a_header_read_at_once_is_read_as_line_by_line(raw: bytes) -> None:
    """`_headers` reads the usual header with one regular expression (`_CLEAN_HEADERS`) and
    anything else line by line: the fields, where the body starts and the defects must be
    the same either way."""
    fast, slow = _read_both(raw)
    assert fast == slow


def test_the_usual_header_is_read_at_once_and_folds_are_kept() -> None:
    raw = b"Subject:  \t\r\n folded\r\n\tagain\r\nX-Empty:\r\nX-8bit: \xe9\r\n\r\nbody:\r\n"
    assert mimetree._CLEAN_HEADERS.match(raw) is not None
    fast, slow = _read_both(raw)
    assert fast == slow
    fields, body_start = fast[0]
    assert fields == [("Subject", "\r\n folded\r\n\tagain"), ("X-Empty", ""), ("X-8bit", "\udce9")]
    assert raw[body_start:] == b"body:\r\n"
    # a header the expression does not take: a line that is not a field ends it, with a defect
    fast, slow = _read_both(b"Subject: x\r\nnot a field\r\n\r\nbody")
    assert fast == slow and fast[1] == [errors.MissingHeaderBodySeparatorDefect]
