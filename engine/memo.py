"""`Kept`: answers a process keeps because it is asked the same questions all day, bounded.

A relay sees the same peers, senders and recipients again and again, and some answers about
them cost more than looking them up (an address against a list of networks, which DLP rules
apply to an envelope). What a client sends decides the keys, so what is kept is bounded:
when `limit` answers are kept, all are forgotten at once (the next ones are computed again),
which costs nothing per lookup, unlike keeping them in order of use.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Kept(dict, Generic[K, V]):
    """A dict of answers, at most `limit` of them: read with `get`, add with `keep`."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def keep(self, key: K, value: V) -> V:
        """Keep `value` as the answer for `key` (forgetting every other one first when full); it is returned."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value
