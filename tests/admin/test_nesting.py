"""The admin API's depth check reads the body's bytes: it must agree with the parsed value's depth."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.admin.api import nesting

tricky = st.text(alphabet='[]{}"\\\\ a\u00e9\n', max_size=8)  # brackets, quotes and backslashes inside strings
values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(tricky, inner, max_size=4),
    max_leaves=40,
)


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(values, st.booleans())
def test_nesting_from_the_bytes_is_the_depth_of_the_value(value, ascii_only: bool) -> None:
    raw = json.dumps(value, ensure_ascii=ascii_only, indent=None if ascii_only else 1).encode()
    assert nesting(raw) == depth(value)
