"""The byte checks every message passes on its way in and out: only CRLF line breaks
(`crlf_only`: intake refuses anything else, delivery sends content in wire form only
then) and no line over the limit (`long_line`). Both are written for speed, so each is
held to the plain definition it replaced, on any bytes."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.relay.smtp.message import crlf_only, line_breaks
from engine.relay.smtp.protocol import long_line

LINE_BYTES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"x", b"yy", b"\n\r", b"\xff"]), max_size=60).map(
    b"".join
)


@settings(max_examples=1000, deadline=None)
@given(LINE_BYTES)
def test_crlf_only_is_as_many_crlf_as_cr_and_lf(data: bytes) -> None:
    crlf = data.count(b"\r\n")
    assert crlf_only(data) is (data.count(b"\n") == crlf and data.count(b"\r") == crlf)
    # and intake's line count, which DLP's quick path uses, is the number of lines
    assert line_breaks(data) == (crlf if crlf_only(data) else None)


def test_crlf_only_cases() -> None:
    assert crlf_only(b"") and crlf_only(b"a\r\nb\r\n") and crlf_only(b"no break at all")
    for data in (b"a\nb", b"a\rb", b"a\r", b"\n", b"a\r\r\n", b"a\r\n\n", b"a\rb\nc", b"\n\r"):
        assert not crlf_only(data), data


@settings(max_examples=1000, deadline=None)
@given(LINE_BYTES, st.integers(min_value=1, max_value=8))
def test_long_line_is_a_run_of_more_than_the_limit_without_a_line_feed(data: bytes, limit: int) -> None:
    reference = len(data) > limit and (
        data.find(b"\n", 0, limit + 1) < 0 or re.search(rb"\n[^\n]{%d}" % (limit + 1), data) is not None
    )
    assert long_line(data, limit) is reference


def test_long_line_cases() -> None:
    assert not long_line(b"x" * 1000 + b"\r\n" + b"y" * 999 + b"\r\n", 1001)
    assert long_line(b"x" * 1002 + b"\n", 1001) and long_line(b"a\n" + b"x" * 1002, 1001)
    assert not long_line(b"", 5) and not long_line(b"\n" * 50, 1)
