"""Property tests for MIME extraction: on arbitrary bytes and on structured but hostile mail,
`extract` never raises, costs time and memory linear in its input, and says so (an
`unscanned` problem) whenever a budget stopped it.

Bounds are generous for a shared machine: a fixed 0.25 s plus 10 ms per KB of input
(measured: under 1 ms per KB for every shape here; before the fix the shapes below took
seconds to minutes: quadratic header, parameter and HTML parsing). Archives are kept
small through `LIMITS`, so a budget is cheap to hit.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import time
import tracemalloc
import zipfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.relay.dlp.extract import Extracted, Limits, extract

LIMITS = Limits(
    max_depth=3,
    max_total_bytes=4 * 2**20,
    max_ratio=20,
    max_entries=40,
    ratio_floor=64 * 1024,
    max_mime_depth=8,
    max_header_chars=8192,
)
FIXED_SECONDS, SECONDS_PER_KB = 0.25, 0.010
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


def bounded(raw: bytes) -> Extracted:
    """Extract, asserting the time bound; never raises (or the test fails with it)."""
    start = time.perf_counter()
    result = extract(raw, LIMITS)
    took = time.perf_counter() - start
    assert took < FIXED_SECONDS + SECONDS_PER_KB * len(raw) / 1024, f"{took:.2f} s for {len(raw)} bytes"
    assert isinstance(result.problems, tuple) and set(result.unscanned) <= set(result.problems) | {
        p for p in result.unscanned if "more problems not listed" in p
    }
    return result


# -- arbitrary bytes -----------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=8192))
def test_arbitrary_bytes_never_raise(raw):
    bounded(raw)


@FUZZ
@given(
    st.lists(
        st.sampled_from(
            [
                b"\r\n",
                b"\n",
                b"--b",
                b":",
                b"=?",
                b"?=",
                b"<",
                b"\x00",
                b"\xff",
                b"Content-Type: multipart/mixed; boundary=b\r\n",
                b" ",
                b'"',
                b";",
            ]
        ),
        max_size=400,
    )
)
def test_mime_punctuation_soup_never_raises(pieces):
    bounded(b"".join(pieces))


# -- structured, hostile mail --------------------------------------------------------------

HEADER_FRAGMENTS = [
    "=?utf-8?q?w?= ",
    "=?utf-8?b?dw==?=",
    "=?x-unknown?q?=FF?= ",
    "=?utf-8?q?",
    "; a=b",
    '; a=";;;;;;;;"',
    '"a";',
    "\r\n ",
    "(c)",
    "\\",
    "é",
]
HTML_FRAGMENTS = [
    "<a",
    "</",
    "<![",
    "<!--",
    '<a b="',
    "<p>x</p>",
    "&#99999999999;",
    "&amp;",
    "<style>p{content:'\\34 1'}</style>",
    "<script>",
    "<noscript>",
    "<img alt='y'>",
    "<",
    ">",
    "<x ",
]


@dataclass(frozen=True)
class Shape:
    """A generated message and whether it must have hit a budget (None: cannot say)."""

    raw: bytes
    over_budget: bool | None

    def __repr__(self) -> str:  # a falsifying example is shown short
        return f"Shape({len(self.raw)} bytes, over_budget={self.over_budget}, raw[:300]={self.raw[:300]!r})"


def zip_of(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_of(count: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for n in range(count):
            info = tarfile.TarInfo(f"f{n}.txt")
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    return buffer.getvalue()


def attachment(name: str, data: bytes) -> str:
    import base64

    encoded = base64.encodebytes(data).decode().replace("\n", "\r\n")
    return (
        f'Content-Type: application/octet-stream; name="{name}"\r\nContent-Disposition: attachment\r\n'
        f"Content-Transfer-Encoding: base64\r\n\r\n{encoded}"
    )


@st.composite
def archives(draw) -> tuple[str, bool | None]:
    """An attachment part with an archive that may break a limit, and whether it does."""
    kind = draw(st.sampled_from(["nested-zip", "nested-gzip", "tar", "bomb"]))
    if kind == "nested-zip":
        depth = draw(st.integers(0, 6))
        data = b"hello"
        for n in range(depth):
            data = zip_of((f"z{n}.zip" if n else "a.txt", data))
        return attachment("a.zip", data), (depth > LIMITS.max_depth + 1) or (
            None if depth > LIMITS.max_depth else False
        )
    if kind == "nested-gzip":
        depth = draw(st.integers(0, 6))
        data = b"hello"
        for _ in range(depth):
            data = gzip.compress(data, mtime=0)
        return attachment("a.gz", data), (depth > LIMITS.max_depth + 1) or (None if depth > LIMITS.max_depth else False)
    if kind == "tar":
        count = draw(st.integers(0, 80))
        return attachment("a.tar", tar_of(count)), count > LIMITS.max_entries or (
            None if count == LIMITS.max_entries else False
        )
    size = draw(st.integers(0, 2 * 2**20))
    bomb = gzip.compress(bytes(size), mtime=0)
    over = size > max(LIMITS.ratio_floor, LIMITS.max_ratio * len(bomb)) * 1.1
    small = size < LIMITS.ratio_floor
    return attachment("zeros.gz", bomb), True if over else (False if small else None)


@st.composite
def hostile_mail(draw) -> Shape:
    over: list[bool | None] = []
    headers = ["From: alice@example.com", "To: bob@partner.example", "MIME-Version: 1.0"]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["Subject", "X-Custom", "To", "Content-Disposition"]))
        fragment = draw(st.sampled_from(HEADER_FRAGMENTS))
        count = draw(st.integers(1, 20_000))
        value = fragment * count
        headers.append(f"{name}: {value}")
        if len(value) <= LIMITS.max_header_chars:  # decoding never makes a header longer
            over.append(False)
        elif "=?" not in fragment and "\r\n" not in fragment:  # decodes to itself
            over.append(True)
        else:
            over.append(None)
    body_kind = draw(st.sampled_from(["html", "nested-multipart", "nested-message", "archive", "plain"]))
    if body_kind == "html":
        html = draw(st.sampled_from(HTML_FRAGMENTS)) * draw(st.integers(1, 30_000))
        body = f"Content-Type: text/html\r\n\r\n{html}\r\n"
    elif body_kind == "nested-multipart":
        depth = draw(st.integers(0, 40))
        opened = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
        closed = "".join(f"--b{i}--\r\n" for i in reversed(range(depth)))
        body = f"{opened}Content-Type: text/plain\r\n\r\nhello\r\n{closed}"
        over.append(True if depth > LIMITS.max_mime_depth + 2 else (False if depth < LIMITS.max_mime_depth else None))
    elif body_kind == "nested-message":
        depth = draw(st.integers(0, 12))
        body = "".join(f"Content-Type: message/rfc822\r\n\r\nSubject: {n}\r\n" for n in range(depth)) + "\r\nhi\r\n"
        over.append(True if depth > LIMITS.max_depth + 1 else (False if depth <= LIMITS.max_depth else None))
    elif body_kind == "archive":
        part, archive_over = draw(archives())
        body = f'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n{part}\r\n--m--\r\n'
        over.append(archive_over)
    else:
        body = "Content-Type: text/plain\r\n\r\n" + draw(st.text(max_size=2000)) + "\r\n"
    raw = ("\r\n".join(headers) + "\r\n" + body).encode("utf-8", "surrogateescape")
    if any(o is True for o in over):
        return Shape(raw, True)
    return Shape(raw, False if all(o is False for o in over) else None)


@FUZZ
@given(hostile_mail())
def test_structured_hostile_mail_is_bounded_and_reports_every_budget_hit(shape):
    result = bounded(shape.raw)
    if shape.over_budget:
        assert result.unscanned and result.problems
    elif shape.over_budget is False:
        assert result.unscanned == (), result.unscanned


# -- memory --------------------------------------------------------------------------------

BIG = 250_000


@pytest.mark.parametrize(
    "raw",
    [
        f"Subject: {'=?utf-8?q?w?= ' * (BIG // 14)}\r\n\r\nhi\r\n".encode(),
        f"Content-Type: text/plain{'; a=b' * (BIG // 5)}\r\n\r\nhi\r\n".encode(),
        f"Content-Type: text/html\r\n\r\n{'<a' * (BIG // 2)}\r\n".encode(),
        f"Content-Type: text/html\r\n\r\n{'<p>x</p>' * (BIG // 8)}\r\n".encode(),
        "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(BIG // 60)).encode(),
        ('Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + "--b\r\n\r\nx\r\n" * (BIG // 11)).encode(),
    ],
    ids=["encoded-words", "parameters", "open-tags", "paragraphs", "nesting", "parts"],
)
def test_memory_is_linear_in_the_input(raw):
    tracemalloc.start()
    try:
        extract(raw, LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * len(raw) + 4 * 2**20, f"{peak / 2**20:.1f} MB traced for {len(raw) / 1024:.0f} KB"
