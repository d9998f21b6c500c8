"""Connection reuse to next hops (Postfix's connection cache).

A session whose last transaction ended cleanly (the peer accepted DATA) is kept for the
next message to the same hop under the same TLS policy and config version, instead of
paying a new TCP connection, EHLO and STARTTLS each time. Sessions are dropped after
`IDLE_LIMIT` seconds unused or `REUSE_LIMIT` transactions; a reused session that turns
out to be closed is replaced by a fresh one by the caller.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import aiosmtplib

IDLE_LIMIT = 5.0
REUSE_LIMIT = 100
MAX_IDLE_PER_KEY = 20


@dataclass
class Cached:
    client: aiosmtplib.SMTP
    tls: str
    idle_since: float
    uses: int


class ConnectionPool:
    def __init__(self) -> None:
        self._idle: dict[tuple, list[Cached]] = defaultdict(list)

    def take(self, key: tuple) -> Cached | None:
        """An idle, still connected session for `key`, or None."""
        now = time.monotonic()
        idle = self._idle.get(key)
        while idle:
            cached = idle.pop()
            if cached.client.is_connected and now - cached.idle_since < IDLE_LIMIT:
                return cached
            cached.client.close()
        return None

    def give(self, key: tuple, client: aiosmtplib.SMTP, tls: str, uses: int) -> bool:
        """Keep a session whose transaction ended cleanly; False when the caller must close it."""
        idle = self._idle[key]
        if uses >= REUSE_LIMIT or len(idle) >= MAX_IDLE_PER_KEY or not client.is_connected:
            return False
        idle.append(Cached(client, tls, time.monotonic(), uses))
        return True

    def sweep(self) -> None:
        """Close sessions idle for longer than IDLE_LIMIT."""
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            keep = [c for c in idle if now - c.idle_since < IDLE_LIMIT and c.client.is_connected]
            for cached in idle:
                if cached not in keep:
                    cached.client.close()
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        for idle in self._idle.values():
            for cached in idle:
                cached.client.close()
        self._idle.clear()
