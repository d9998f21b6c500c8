"""The seam every encryption method plugs into: one `Method` Protocol, one `Protection` answer.

Delivery asks the method chain of the message's config version to protect the recipients of
mail flagged for encryption. Each method answers, per recipient, with exactly one of:

- **sealed**: a copy to deliver (the queued content, or content the method encrypted) and
  the TLS floor that copy must travel under (`tls` demands mandatory TLS; S/MIME keeps the
  floor of the configured method, since the headers still travel in the transport);
- **handed off**: the method took responsibility (the third-party gateway accepted it, a
  portal stored it); delivery records it delivered;
- **refused**: a `Failure` (defer: the recipient waits in the queue; bounce: permanent);
- **passed**: not this method's to handle (S/MIME without the recipient's certificate): the
  next method in the chain gets it.

`Chain` is built at provisioning for each config version (`build_chain`) and swapped with it:
`steps` are tried in order, `backup` receives the recipients of a sealed copy whose TLS
could not be had (the seed's backup method). A method that raises refuses its recipients
(defer, cause `method`): flagged mail never goes out in clear because a method broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from engine.relay.delivery.failures import Failure, because
from engine.relay.queue import Entry


@dataclass(frozen=True)
class TLSFloor:
    """The least TLS a sealed copy may travel under, and the setting that demands it."""

    level: str
    min_protocol: str
    min_bits: int
    source: str


@dataclass(frozen=True)
class Sealed:
    recipients: tuple[str, ...]
    floor: TLSFloor | None  # None: the route's own policy is enough (the content is protected)
    content: bytes | None = None  # None: the message as queued
    note: str = ""  # shown in the delivery record, e.g. "S/MIME"


@dataclass(frozen=True)
class HandedOff:
    recipients: tuple[str, ...]
    detail: str  # what the method did, for the log and `queue show`


@dataclass(frozen=True)
class Protection:
    """One method's answer; every recipient it was given appears in exactly one part."""

    sealed: tuple[Sealed, ...] = ()
    handed: tuple[HandedOff, ...] = ()
    refused: dict[str, Failure] = field(default_factory=dict)
    passed: tuple[str, ...] = ()

    def recipients(self) -> list[str]:
        out = [r for s in self.sealed for r in s.recipients] + [r for h in self.handed for r in h.recipients]
        return out + list(self.refused) + list(self.passed)

    def merge(self, other: Protection) -> Protection:
        """This answer with `other`'s added (its passed recipients replace ours)."""
        return Protection(
            self.sealed + other.sealed, self.handed + other.handed, {**self.refused, **other.refused}, other.passed
        )


class Method(Protocol):
    name: str

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        """Protect `entry` for `recipients` (see the module docstring for the answers)."""
        ...


@dataclass(frozen=True)
class Unavailable:
    """A method the config names that this relay cannot run: its recipients wait."""

    name: str

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        failure = because("method", f"encryption method `{self.name}` is not available in this relay")
        return Protection(refused={r: failure for r in recipients})


@dataclass(frozen=True)
class Chain:
    """The methods of one config version: `steps` in order, then `backup` after TLS failed."""

    steps: tuple[Method, ...]
    backup: Method | None = None

    def with_overrides(self, overrides: dict[str, Method]) -> Chain:
        """The same chain with methods replaced by name (test doubles, or a relay's own)."""
        if not overrides:
            return self
        swap = [overrides.get(m.name, m) for m in self.steps]
        backup = overrides.get(self.backup.name, self.backup) if self.backup else None
        return Chain(tuple(swap), backup)

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        """Run the steps in order, each on what the ones before passed on. Recipients no
        step takes wait (defer): flagged mail is never sent without protection."""
        answer = Protection(passed=tuple(recipients))
        for method in self.steps:
            if not answer.passed:
                break
            answer = answer.merge(await run(method, live, entry, list(answer.passed)))
        if answer.passed:
            failure = because("method", "no encryption method took these recipients")
            answer = Protection(
                answer.sealed, answer.handed, {**answer.refused, **dict.fromkeys(answer.passed, failure)}
            )
        return answer


async def run(method: Method, live, entry: Entry, recipients: list[str]) -> Protection:
    """`method.protect`, with anything it raises (or an answer that loses a recipient)
    turned into a refusal that defers: the recipients wait and are retried."""
    try:
        answer = await method.protect(live, entry, recipients)
    except Exception as exc:  # noqa: BLE001 - a method's failure must never send in clear
        failure = because("method", f"encryption method `{method.name}` failed: {exc}")
        return Protection(refused=dict.fromkeys(recipients, failure))
    missing = [r for r in recipients if r not in set(answer.recipients())]
    if missing:
        failure = because("method", f"encryption method `{method.name}` gave no answer for this recipient")
        answer = Protection(
            answer.sealed, answer.handed, {**answer.refused, **dict.fromkeys(missing, failure)}, answer.passed
        )
    return answer
