"""The seam to encryption methods other than TLS: the backup hand-off and the methods.

When mail flagged for encryption cannot go out over the TLS it needs and `backup` is set,
delivery hands it to the backup method (advanced or third_party) instead of deferring it;
with `method:` other than tls, flagged mail goes to that method directly. Each method is
one object with `protect`; the relay holds them in a dict by name. A method answers with
`Protected` (it took responsibility for the recipients) or raises: anything it raises
defers the recipients, so the message waits in the queue and is retried.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engine.relay.queue import Entry


@dataclass(frozen=True)
class Protected:
    detail: str  # what the method did, for the log and `queue show`
    refused: dict = field(default_factory=dict)  # recipient -> failures.Failure: not taken


class EncryptionMethod(Protocol):
    name: str

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protected:
        """Take responsibility for delivering `entry` to `recipients`, encrypted."""
        ...
