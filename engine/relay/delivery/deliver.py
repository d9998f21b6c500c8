"""Delivery: leased queue entries out to their next hops, with the TLS their policy demands.

For each entry the recipients are grouped by domain, routed (`Live.route_for`), resolved
to hops (MX or a fixed host), and tried hop by hop until one answers. Every outcome goes
through `failures.classify` (the one place that decides defer or bounce), and every
recipient gets exactly one of delivered / deferred / bounced in the queue, so a crash
leaves at most a duplicate. Mandatory TLS is never downgraded: without the TLS a policy
demands, not one byte of content is sent; flagged mail then goes to the backup method
when one is configured, or waits in the queue.

Mail flagged for encryption goes through the method chain of the config version current at
delivery (`Live.methods`, see `engine.relay.methods.base`): sealed copies are sent here under
their TLS floor, hand-offs are recorded as delivered, refusals are deferred or bounced.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.policy.groups import domain_of
from engine.relay.decision import of_meta
from engine.relay.delivery import ndr
from engine.relay.delivery.failures import (
    DELIVERED,
    Failure,
    because,
    classify,
    delay_status,
    expire,
    expired,
    next_retry,
)
from engine.relay.delivery.pool import ConnectionPool
from engine.relay.delivery.resolve import Hop, Resolver, next_hops, resolver_for
from engine.relay.delivery.transfer import Attempt, transfer
from engine.relay.methods.base import Method, run
from engine.relay.queue import Entry, NotQueued, Queue
from engine.relay.runtime import metrics
from engine.relay.runtime.decisionlog import emit
from engine.relay.runtime.live import Live

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipientOutcome:
    """What became of one recipient in one delivery pass."""

    kind: str  # delivered | defer | bounce
    text: str
    status: str
    tls: str | None = None
    cause: str | None = None  # the failure's cause (None when delivered)


class Deliverer:
    """Runs delivery workers against the queue until `stop`."""

    def __init__(
        self,
        queue: Queue,
        current: Callable[[], Live],
        *,
        methods: dict[str, Method] | None = None,
        resolver_for: Callable[[Live], Resolver] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.clock = clock  # every schedule decision reads this (tests pass their own)
        self.current = current
        self.overrides = methods or {}  # method implementations by name, in place of the config's
        self._resolver_for = resolver_for or _default_resolver
        self._resolvers: dict[int, Resolver] = {}  # one per config version
        self.pool = ConnectionPool()
        self._kick = asyncio.Event()
        self._stopping = False
        self._tasks: set[asyncio.Task] = set()
        self._in_flight: set[str] = set()
        self._wakeups: list[float] = []  # retry times this process scheduled (a heap)

    def kick(self, _queue_id: str | None = None) -> None:
        """Something is due now (a new message, a retry): wake the scheduler."""
        self._kick.set()

    async def run(self, poll_interval: float = 1.0) -> None:
        """Lease due entries and deliver them, `delivery.workers` at a time."""
        while not self._stopping:
            live = self.current()
            free = live.config.delivery.workers - len(self._tasks)
            try:
                leased = await self.queue.due(self.clock(), free, lease_s=_lease_seconds(live)) if free > 0 else []
            except Exception:  # a failing queue must not end delivery for good: log, back off, retry
                log.exception("leasing due messages failed; trying again in %.0f s", poll_interval)
                await asyncio.sleep(poll_interval)
                continue
            leased = [e for e in leased if e.id not in self._in_flight]  # a lapsed lease still in progress
            now = self.clock()
            while self._wakeups and self._wakeups[0] <= now:
                heapq.heappop(self._wakeups)
            for entry in leased:
                self._in_flight.add(entry.id)
                task = asyncio.create_task(self._deliver_guarded(live, entry))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if leased and len(leased) == free:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            if not leased:
                self.pool.sweep()
                try:
                    # wake for the earliest retry this process scheduled, else poll
                    now = self.clock()
                    while self._wakeups and self._wakeups[0] <= now:
                        heapq.heappop(self._wakeups)
                    wait = min(poll_interval, self._wakeups[0] - now + 0.005) if self._wakeups else poll_interval
                    await asyncio.wait_for(self._kick.wait(), wait)
                except TimeoutError:
                    pass
                self._kick.clear()

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._kick.set()

    async def stop(self) -> None:
        self._stopping = True
        self._kick.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=30)
        self.pool.close()

    async def _deliver_guarded(self, live: Live, entry: Entry) -> None:
        try:
            await self.deliver(live, entry)
        except NotQueued:
            pass  # deleted by an operator meanwhile
        except Exception:
            log.exception("delivery of %s failed unexpectedly; it stays queued", entry.id)
            try:
                await self.queue.release(entry.id)
            except Exception:  # the lease lapses by itself
                log.exception("releasing %s failed", entry.id)
        finally:
            self._in_flight.discard(entry.id)

    # -- one entry ------------------------------------------------------------------------

    async def deliver(self, live: Live, entry: Entry) -> None:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for rcpt in entry.recipients:
            by_domain[domain_of(rcpt.address)].append(rcpt.address)
        outcomes: dict[str, RecipientOutcome] = {}
        domains = list(by_domain.items())
        results = await asyncio.gather(
            *(self._deliver_domain(live, entry, d, r) for d, r in domains), return_exceptions=True
        )
        for (domain, rcpts), result in zip(domains, results, strict=True):
            if isinstance(result, BaseException):  # one domain's bug must not cost the others their results
                log.error("delivery of %s to %s failed unexpectedly: %r", entry.id, domain, result)
                failure = because("internal", f"internal error: {type(result).__name__}: {result}")
                result = dict.fromkeys(rcpts, _from_failure(failure))
            outcomes.update(result)
        await self._record(live, entry, outcomes)

    async def _deliver_domain(
        self, live: Live, entry: Entry, domain: str, rcpts: list[str]
    ) -> dict[str, RecipientOutcome]:
        if not of_meta(entry.meta).needs_protection:
            return await self._send(live, entry, domain, rcpts)
        chain = live.methods.with_overrides(self.overrides)
        protection = await chain.protect(live, entry, rcpts)
        out = {r: _from_failure(f) for r, f in protection.refused.items()}
        for handed in protection.handed:
            out.update(dict.fromkeys(handed.recipients, delivered(handed.detail, "handed off")))
        for sealed in protection.sealed:
            copy = entry if sealed.content is None else replace(entry, body=sealed.content)
            sent = await self._send(live, copy, domain, list(sealed.recipients), floor=sealed.floor, note=sealed.note)
            no_tls = [r for r in sealed.recipients if sent[r].cause == "tls"]
            if no_tls and chain.backup is not None:  # the seed's backup method: the TLS could not be had
                sent.update(await self._backup(chain.backup, live, entry, domain, no_tls))
            out.update(sent)
        return out

    async def _send(
        self, live: Live, entry: Entry, domain: str, rcpts: list[str], *, floor=None, note: str = ""
    ) -> dict[str, RecipientOutcome]:
        route = live.route_for(domain)
        try:
            hops = await self._hops(live, route, domain)
        except Exception as exc:  # DNS says no (bounce) or not now (defer)
            failure = classify(None, exc)
            return {r: _from_failure(failure) for r in rcpts}
        last: dict[str, RecipientOutcome] = {}
        for hop in hops:
            policy = live.outbound_policy(route, domain, hop.address, floor)
            attempt = await transfer(
                live, hop, policy, entry, rcpts, self.pool, auth=route.route.auth if route.route else None
            )
            last = _outcomes(attempt, rcpts, note)
            if attempt.site_failure is None:
                return last
            log.info("%s: %s: %s", entry.id, domain, attempt.site_failure.reason)
        return last

    async def _backup(
        self, method, live: Live, entry: Entry, domain: str, rcpts: list[str]
    ) -> dict[str, RecipientOutcome]:
        """Hand what could not get its TLS to the backup method; what it does not take waits.
        A copy the backup sealed itself (the advanced envelope: its content is protected,
        no TLS floor) is sent by the route; one that again demands TLS would loop: it waits."""
        answer = await run(method, live, entry, rcpts)
        why = f"backup method `{method.name}` after TLS failed"
        out = {r: _from_failure(f) for r, f in answer.refused.items()}
        for handed in answer.handed:
            text = f"{why}: {handed.detail}"
            out.update(dict.fromkeys(handed.recipients, delivered(text, f"handed to {method.name}")))
        for sealed in answer.sealed:
            if sealed.floor is None and sealed.content is not None:
                copy = replace(entry, body=sealed.content)
                note = f"{why}: {sealed.note}"
                out.update(await self._send(live, copy, domain, list(sealed.recipients), note=note))
        unhandled = [r for r in rcpts if r not in out]
        out.update(dict.fromkeys(unhandled, _from_failure(because("method", f"{why} did not take the message"))))
        return out

    async def _hops(self, live: Live, route, domain: str) -> list[Hop]:
        resolver = self._resolvers.get(live.version)
        if resolver is None:
            self._resolvers = {live.version: self._resolver_for(live)}
            resolver = self._resolvers[live.version]
        if route.next_hop is None:
            return await resolver.mx_hosts(domain)
        hop = route.next_hop
        return await next_hops(resolver, hop.host, hop.port, hop.mx_lookup)

    # -- recording ------------------------------------------------------------------------

    async def _record(self, live: Live, entry: Entry, outcomes: dict[str, RecipientOutcome]) -> None:
        now = self.clock()
        delivery = live.config.delivery
        attempts = {r.address: r.attempts for r in entry.recipients}
        groups: dict[str, list[str]] = defaultdict(list)
        retry_at = float("inf")
        for rcpt, outcome in outcomes.items():
            if outcome.kind == "defer" and expired(entry.created_at, now, delivery.max_queue_lifetime):
                outcomes[rcpt] = _from_failure(expire(outcome.text), outcome.tls)
            groups[outcomes[rcpt].kind].append(rcpt)
        for rcpt, outcome in outcomes.items():
            if outcome.kind == "delivered":
                await self.queue.mark_delivered(entry.id, [rcpt], outcome.text, tls=outcome.tls)
            elif outcome.kind == "defer":
                wait = next_retry(
                    attempts.get(rcpt, 0) + 1, delivery.retry_interval, delivery.max_retry_interval, delivery.backoff
                )
                await self.queue.mark_deferred(entry.id, [rcpt], outcome.text, now + wait, tls=outcome.tls)
                retry_at = min(retry_at, now + wait)
            metrics.DELIVERIES.labels(outcomes[rcpt].kind, metrics.tls_used(outcomes[rcpt].tls)).inc()
            emit(
                "delivery",
                id=entry.id,
                recipient=rcpt,
                result=outcome.kind,
                status=outcome.status,
                tls=outcome.tls,
                reason=outcome.text,
                config_version=live.version,
            )
        if retry_at != float("inf"):
            heapq.heappush(self._wakeups, retry_at)  # one wake-up per message, trimmed every pass
        if groups["bounce"]:
            await self._notify(live, entry, {r: outcomes[r] for r in groups["bounce"]}, "failure")
            for rcpt in groups["bounce"]:
                await self.queue.mark_bounced(entry.id, [rcpt], outcomes[rcpt].text, tls=outcomes[rcpt].tls)
        elif groups["defer"] and not entry.warned and _delay_warning_due(live, entry, now):
            await self._notify(live, entry, {r: outcomes[r] for r in groups["defer"]}, "delay")
            await self.queue.mark_warned(entry.id)

    async def _notify(self, live: Live, entry: Entry, outcomes: dict[str, RecipientOutcome], kind: str) -> None:
        """Queue a DSN to the sender (never for a bounce, and only if NDRs are enabled)."""
        if not live.config.delivery.ndr.enabled or not ndr.should_send_dsn(entry.sender):
            return
        until = entry.created_at + live.config.delivery.max_queue_lifetime
        statuses = [
            ndr.RecipientStatus(
                address=rcpt,
                action="failed" if kind == "failure" else "delayed",
                status=o.status if kind == "failure" else delay_status(o.status),
                diagnostic=o.text,
                remote_mta=None,
                last_attempt=_dt(self.clock()),
                will_retry_until=_dt(until) if kind == "delay" else None,
            )
            for rcpt, o in outcomes.items()
        ]
        body = ndr.build_dsn(
            reporting_mta=live.config.system.fqdn,
            original_sender=entry.sender,
            original_envelope_id=entry.id,
            arrival_date=_dt(entry.created_at),
            recipients=statuses,
            original_message=entry.body,
            include=live.config.delivery.ndr.include,
            kind=kind,
        )
        dsn_id = await self.queue.enqueue(
            "",
            [entry.sender],
            body,
            meta={"kind": f"dsn-{kind}", "about": entry.id, "config_version": live.version},
            now=self.clock(),
        )
        emit("dsn", id=dsn_id, about=entry.id, kind=kind, to=entry.sender, recipients=list(outcomes))
        self.kick()


def _outcomes(attempt: Attempt, rcpts: list[str], note: str = "") -> dict[str, RecipientOutcome]:
    if attempt.site_failure is not None:
        return {r: _from_failure(attempt.site_failure, attempt.tls) for r in rcpts}
    out = {}
    for rcpt in rcpts:
        result = attempt.results.get(rcpt)
        if result is None or isinstance(result, Failure):
            failure = result or because("internal", "no result for this recipient")
            out[rcpt] = _from_failure(failure, attempt.tls)
        else:
            out[rcpt] = delivered(f"{note}: {result}" if note else result, attempt.tls)
    return out


def delivered(text: str, tls: str | None = None) -> RecipientOutcome:
    return RecipientOutcome("delivered", text, DELIVERED, tls)


def _from_failure(failure: Failure, tls: str | None = None) -> RecipientOutcome:
    return RecipientOutcome(
        "bounce" if failure.permanent else "defer", failure.reason, failure.status, tls, failure.cause
    )


def _lease_seconds(live: Live) -> float:
    """Longer than any delivery attempt can take (connect and every command timing out on
    two hops), so a lease never lapses under a delivery still in progress."""
    d = live.config.delivery
    return max(600.0, 2 * (float(d.connect_timeout) + 6 * float(d.command_timeout)))


def _delay_warning_due(live: Live, entry: Entry, now: float) -> bool:
    after = live.config.delivery.delay_warning_after
    return after is not None and now - entry.created_at >= after


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def _default_resolver(live: Live) -> Resolver:
    return resolver_for(live.config.system.dns)
