"""Delivery: leased queue entries out to their next hops, with the TLS their policy demands.

The scheduler loop (`Deliverer.run`) is Postfix's queue manager in small: it leases due
entries without their bodies into an active set (`scheduler.Scheduler`), split into jobs, one
per recipient domain, each filed under its destination (`destinations.name_of`: the route's
next hop, or the domain's MX). Jobs start round robin over the destinations that may take
one more (`destinations.Destinations`: slow-start concurrency per destination, `workers` in
all), so one slow or dead destination holds only its own slots. A dead destination's jobs
are deferred without an attempt to its retry time, in one queue transaction (`postpone`);
one probe at that time decides whether it is back. The loop's cost follows the work that is
due: an idle relay asks the queue one indexed question per `poll_interval`, whatever it
holds, and a lease moves an entry out of the due index until it ends.

A job routes its domain (`Live.route_for`), resolves it to hops (MX or a fixed host), and
tries hop by hop until one answers (where a setting asks for `mta-sts`, the domain's MTA-STS
policy, `engine.relay.tls.mtasts`, decides each hop's level first, and a hop its enforced
policy does not name is skipped with the reason). Every outcome goes through
`failures.classify` (the one place that decides defer or bounce), and every recipient gets
exactly one of delivered / deferred / bounced in the queue, so a crash leaves at most a
duplicate. Mandatory TLS is never downgraded: without the TLS a policy demands, not one
byte of content is sent; flagged mail then goes to the backup method when one is
configured, or waits in the queue.

Mail flagged for encryption goes through the method chain of the config version current at
delivery (`Live.methods`, see `engine.relay.methods.base`): sealed copies are sent here under
their TLS floor, hand-offs are recorded as delivered, refusals are deferred or bounced. Its
jobs always run (a dead destination's answer then comes from `_send`, with the last failure's
cause), so a TLS failure can still hand it to the backup method.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from engine.policy.groups import domain_of
from engine.relay.decision import of_meta
from engine.relay.delivery import ndr, requiretls
from engine.relay.delivery.destinations import Destination, Destinations, Settings, name_of
from engine.relay.delivery.failures import (
    DELIVERED,
    Failure,
    because,
    classify,
    delay_status,
    expire,
    expired,
    next_retry,
    requiretls_outcome,
    requiretls_unmet,
)
from engine.relay.delivery.hoppolicy import HopPolicies
from engine.relay.delivery.pool import ConnectionPool
from engine.relay.delivery.resolve import Hop, Resolver, next_hops, resolver_for
from engine.relay.delivery.scheduler import ACTIVE_LIMIT, Active, Job, Scheduler
from engine.relay.delivery.transfer import PROGRESS, Attempt, Progress, transfer
from engine.relay.methods.base import Method, run
from engine.relay.queue import Entry, Leased, NotQueued, Queue
from engine.relay.runtime import metrics
from engine.relay.runtime.decisionlog import emit
from engine.relay.runtime.live import Live, ca_bundle_of
from engine.relay.tls import mtasts, tlsrpt

log = logging.getLogger(__name__)

LEASE_BATCH = 500  # entries leased per question to the queue
STOP_GRACE = 30.0  # seconds `stop` waits for deliveries that may already have been accepted


@dataclass(frozen=True)
class RecipientOutcome:
    """What became of one recipient in one delivery pass."""

    kind: str  # delivered | defer | bounce
    text: str
    status: str
    tls: str | None = None
    cause: str | None = None  # the failure's cause (None when delivered)
    retry_at: float | None = None  # deferred without an attempt (a dead destination) until then


class Deliverer:
    """Runs the delivery scheduler against the queue until `stop`."""

    def __init__(
        self,
        queue: Queue,
        current: Callable[[], Live],
        *,
        methods: dict[str, Method] | None = None,
        resolver_for: Callable[[Live], Resolver] | None = None,
        clock: Callable[[], float] = time.time,
        mta_sts: mtasts.MTASTS | None = None,
        tls_reports: tlsrpt.Recorder | None = None,
    ) -> None:
        self.queue = queue
        self.mta_sts = mta_sts or mtasts.MTASTS(clock=clock)  # policies outlive config versions
        self.tls_reports = tls_reports or tlsrpt.Recorder(clock)  # TLS-RPT's day counters
        self.clock = clock  # every schedule decision reads this (tests pass their own)
        self.current = current
        self.overrides = methods or {}  # method implementations by name, in place of the config's
        self._resolver_for = resolver_for or _default_resolver
        self._resolvers: dict[int, Resolver] = {}  # one per config version
        self.pool = ConnectionPool()
        self.destinations = Destinations(clock)
        self.scheduler = Scheduler()
        self._bypass: deque[Job] = deque()  # jobs that run whatever their destination's state
        self._wake: asyncio.Future | None = None  # what the idle scheduler awaits; `kick` resolves it
        self._kicked = False
        self._configured: Live | None = None
        self._want_lease = True  # the queue may hold due entries we have not leased
        self._stopping = False
        self._tasks: dict[asyncio.Task, Progress] = {}
        self._wakeups: list[float] = []  # retry times this process scheduled (a heap)
        self._swept = 0.0
        self._prefetched = 0  # entries waiting in memory with the body their lease brought

    def kick(self, _queue_id: str | None = None) -> None:
        """Something is due now (a new message, a retry): wake the scheduler."""
        self._want_lease = True
        self._nudge()

    def _nudge(self) -> None:
        """Wake the scheduler if it sleeps; else make its next sleep end at once."""
        self._kicked = True
        if self._wake is not None:
            _resolve(self._wake, None)

    def snapshot(self) -> list[dict]:
        """The destinations as `/v1/status` shows them (callable from another thread)."""
        return self.destinations.snapshot(self.scheduler.waiting)

    async def run(self, poll_interval: float = 1.0) -> None:
        """Lease due entries and deliver them: `delivery.workers` at a time in all, each
        destination within its own concurrency, dead destinations without attempts."""
        while not self._stopping:
            live = self.current()
            if live is not self._configured:  # a new config version: the destinations' bounds may change
                self._configured = live
                self.destinations.configure(Settings.of(live.config.delivery))
            try:
                if self._want_lease and len(self.scheduler) < ACTIVE_LIMIT:
                    await self._lease(live)
                await self._postpone_dead(live)
            except Exception:  # a failing queue must not end delivery for good: log, back off, retry
                log.exception("leasing due messages failed; trying again in %.0f s", poll_interval)
                await asyncio.sleep(poll_interval)
                continue
            self._start(live)
            if self._want_lease and len(self.scheduler) < ACTIVE_LIMIT:
                continue  # the last lease was full: more is due
            await self._idle(poll_interval)

    async def _lease(self, live: Live) -> None:
        ask = min(ACTIVE_LIMIT - len(self.scheduler), LEASE_BATCH)
        # bodies come along for what will start soon (a trip saved per message), at most
        # `workers` of them waiting in memory beside those being delivered
        bodies = max(0, 2 * live.config.delivery.workers - len(self._tasks) - self._prefetched)
        leased = await self.queue.lease(self.clock(), ask, lease_s=_lease_seconds(live), bodies=bodies)
        self._want_lease = len(leased) == ask
        for entry in leased:
            if not self.scheduler.holds(entry.id):  # a lapsed lease of an entry still in hand
                if self.scheduler.add(entry, lambda active: self._split(live, active)) and entry.body is not None:
                    self._prefetched += 1

    def _split(self, live: Live, active: Active) -> list[Job]:
        """One job per recipient domain, filed under the destination its route leads to."""
        by_domain: dict[str, list] = defaultdict(list)
        for rcpt in active.leased.recipients:
            by_domain[domain_of(rcpt.address)].append(rcpt)
        protect = of_meta(active.leased.meta).needs_protection
        return [
            Job(active, domain, tuple(rcpts), name_of(live.route_for(domain).next_hop, domain), protect)
            for domain, rcpts in by_domain.items()
        ]

    async def _postpone_dead(self, live: Live) -> None:
        """Take the waiting jobs of dead destinations: plain mail is deferred to the retry
        time in one transaction, without a body read or an attempt; flagged mail, and mail
        that expires or is owed a delay warning now, runs as a job (no connection is made)."""
        for name in self.scheduler.destinations():
            dest = self.destinations.dead(name)
            if dest is None:
                continue
            jobs = self.scheduler.take(name)
            now = self.clock()
            bulk = []
            for job in jobs:
                if job.protect or _owed_notice(live, job.active, now):
                    self._bypass.append(job)
                else:
                    bulk.append(job)
            if bulk:
                await self._postpone(live, dest, bulk)

    async def _postpone(self, live: Live, dest: Destination, jobs: list[Job]) -> None:
        failure, until = dest.suspension(), dest.dead_until
        try:
            await self.queue.postpone([(job.active.id, job.addresses) for job in jobs], failure.reason, until)
        finally:
            for job in jobs:
                self._finish(job)
        count = 0
        for job in jobs:
            for rcpt in job.addresses:
                count += 1
                emit(
                    "delivery",
                    id=job.active.id,
                    recipient=rcpt,
                    result="defer",
                    status=failure.status,
                    tls=None,
                    reason=failure.reason,
                    attempted=False,
                    config_version=live.version,
                )
        self.destinations.deferred(dest.name, count, attempted=False)
        heapq.heappush(self._wakeups, until)

    def _start(self, live: Live) -> None:
        """Start jobs while workers are free: first those that bypass their destination's
        state, then round robin over the destinations ready for one more."""
        while not self._stopping and len(self._tasks) < live.config.delivery.workers:
            if self._bypass:
                job = self._bypass.popleft()
            else:
                job = self.scheduler.next(self.destinations.ready)
                if job is None:
                    return
                self.destinations.started(job.destination)
                job.started = True
            self._begin(job.active)
            progress = Progress()
            task = asyncio.create_task(self._run_job(live, job, progress))
            self._tasks[task] = progress
            task.add_done_callback(self._done)

    async def _idle(self, poll_interval: float) -> None:
        """Sleep until a job ends, new mail or a retry is due, or `poll_interval` passes (it
        finds what other processes made due, like `sealrelay queue retry`)."""
        if time.monotonic() - self._swept >= 1.0:  # housekeeping once a second, not every wake-up
            self._swept = time.monotonic()
            self.pool.sweep()
            self.destinations.sweep(keep=self.scheduler.destinations())
        now = self.clock()
        while self._wakeups and self._wakeups[0] <= now:
            heapq.heappop(self._wakeups)
        wait = min(poll_interval, self._wakeups[0] - now + 0.005) if self._wakeups else poll_interval
        if self._kicked:  # woken while awake: go round again at once
            self._kicked = False
            return
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        timer = loop.call_later(max(wait, 0.0), _resolve, self._wake, "timeout")
        try:
            if await self._wake == "timeout":
                self._want_lease = True
        finally:
            timer.cancel()
            self._wake = None
            self._kicked = False

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.pop(task, None)
        self._nudge()

    def _begin(self, active: Active) -> None:
        """The first job of an entry starts (or the entry leaves without one): a body that came
        with the lease no longer waits."""
        if not active.begun:
            active.begun = True
            if active.leased.body is not None:
                self._prefetched -= 1

    def _finish(self, job: Job) -> None:
        if self.scheduler.finished(job):
            self._begin(job.active)
            job.active.body = None  # the last job of its entry: the body goes

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop starting deliveries. Those that have sent nothing final are cancelled at once
        (a tarpit must not hold the stop); those that may already have been accepted (their
        content's final dot is sent) get `grace` seconds to hear the reply and record it."""
        self._stopping = True
        self._nudge()
        for task, progress in list(self._tasks.items()):
            if not progress.committed:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        self.pool.close()

    async def _run_job(self, live: Live, job: Job, progress: Progress) -> None:
        PROGRESS.set(progress)
        try:
            entry = await self._entry(job.active)
            started = time.monotonic()
            outcomes = await self._deliver_job(live, entry, job.domain, job.addresses, job.protect)
            metrics.observe_attempt(outcomes.values(), time.monotonic() - started)
            progress.committed = True  # outcomes known: recording them must not be cut short
            await self._record(live, entry, outcomes, job.active)
        except NotQueued:
            pass  # deleted by an operator meanwhile, or set aside as damaged
        except Exception:
            log.exception("delivery of %s to %s failed unexpectedly; it stays queued", job.active.id, job.domain)
            try:
                await self.queue.release(job.active.id)
            except Exception:  # the lease lapses by itself
                log.exception("releasing %s failed", job.active.id)
        finally:
            if job.started:
                self.destinations.finished(job.destination)
            self._finish(job)

    async def _entry(self, active: Active) -> Entry:
        """The entry with its body, read once for all its jobs."""
        if active.leased.body is not None:  # it came with the lease
            return active.leased.with_body(active.leased.body)
        if active.jobs == 1:  # its only job: nothing to share
            return await self.queue.load(active.leased)
        if active.body is None:
            active.body = asyncio.ensure_future(self.queue.load(active.leased))
        return await asyncio.shield(active.body)

    # -- one entry, one job ------------------------------------------------------------------

    async def deliver(self, live: Live, entry: Entry) -> None:
        """Deliver every due recipient of a leased `entry` now, its domains in parallel, and
        record the outcomes together (one DSN for its bounces). Outside the scheduler's slots:
        for tests and tools; dead destinations still get no attempt."""
        by_domain: dict[str, list[str]] = defaultdict(list)
        for rcpt in entry.recipients:
            by_domain[domain_of(rcpt.address)].append(rcpt.address)
        results = await asyncio.gather(*(self._deliver_job(live, entry, d, r) for d, r in by_domain.items()))
        outcomes: dict[str, RecipientOutcome] = {}
        for result in results:
            outcomes.update(result)
        await self._record(live, entry, outcomes)

    async def _deliver_job(
        self, live: Live, entry: Entry, domain: str, rcpts: list[str], protect: bool | None = None
    ) -> dict[str, RecipientOutcome]:
        try:
            return await self._deliver_domain(live, entry, domain, rcpts, protect)
        except Exception as exc:  # one domain's bug must not cost the others their results
            log.error("delivery of %s to %s failed unexpectedly: %r", entry.id, domain, exc)
            failure = because("internal", f"internal error: {type(exc).__name__}: {exc}")
            return dict.fromkeys(rcpts, _from_failure(failure))

    async def _deliver_domain(
        self, live: Live, entry: Entry, domain: str, rcpts: list[str], protect: bool | None = None
    ) -> dict[str, RecipientOutcome]:
        if not (of_meta(entry.meta).needs_protection if protect is None else protect):
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
        """One transaction to the first hop of `domain`'s route that takes it; its news goes to
        the route's destination (a session, or the failure at every hop). A dead destination
        gets no attempt: the recipients are deferred to its retry time."""
        route = live.route_for(domain)
        name = name_of(route.next_hop, domain)
        dead = self.destinations.dead(name)
        if dead is not None:
            return dict.fromkeys(rcpts, _postponed(dead))
        try:
            hops = await self._hops(live, route, domain)
        except Exception as exc:  # DNS says no (bounce) or not now (defer)
            failure = classify(None, exc)
            self.destinations.report(name, failure)
            return {r: _from_failure(failure) for r in rcpts}
        last: dict[str, RecipientOutcome] = {}
        failure: Failure | None = None
        failures: list[Failure] = []  # each hop's, for REQUIRETLS's verdict
        tagged = requiretls.requested(entry.meta)
        tls: str | None = None  # the last session's TLS note (None: no hop got a session)
        policies = HopPolicies(
            live, route, domain, floor, self._resolver(live), lambda: self._mta_sts_policy(live, domain)
        )
        for hop in hops:
            decided = await policies.for_hop(hop)
            policy, described = decided.policy, decided.described
            if decided.refusal is not None:  # this MX host gets nothing
                failure = decided.refusal
                last = {r: _from_failure(failure) for r in rcpts}
                failures.append(failure)
                self._count_tls(live, route, domain, hop, policies.sts, decided.result, decided.reason, "", described)
                log.info("%s: %s: %s", entry.id, domain, failure.reason)
                continue
            if tagged and _own_mx(route, domain):  # RFC 8689 §4.2.1: the MX host must be authenticated
                unauthenticated = await self._mx_unauthenticated(live, domain, hop, policies)
                if unauthenticated:
                    failure = requiretls_unmet(unauthenticated).located(hop)
                    last = {r: _from_failure(failure) for r in rcpts}
                    failures.append(failure)
                    log.info("%s: %s: %s", entry.id, domain, failure.reason)
                    continue
            attempt = await transfer(
                live, hop, policy, entry, rcpts, self.pool, auth=route.route.auth if route.route else None
            )
            if attempt.tls_result is not None:
                result, reason = attempt.tls_result, attempt.tls_reason
                self._count_tls(live, route, domain, hop, policies.sts, result, reason, attempt.local_ip, described)
            last, tls = _outcomes(attempt, rcpts, note), attempt.tls
            failure = attempt.site_failure
            if failure is None:
                break
            failures.append(failure)
            log.info("%s: %s: %s", entry.id, domain, failure.reason)
        if failure is not None and any(f.cause == "requiretls" for f in failures):
            failure = requiretls_outcome(failures)  # RFC 8689: every hop fell short, or one may heal
            last = dict.fromkeys(rcpts, _from_failure(failure, tls))
        self.destinations.report(name, failure)
        return last

    def _count_tls(
        self,
        live: Live,
        route,
        domain: str,
        hop: Hop,
        sts: mtasts.Lookup | None,
        result: str,
        reason: str = "",
        local_ip: str = "",
        described: dict | None = None,
    ) -> None:
        """Count one session for `domain`'s TLS-RPT report, when reporting is on and `hop` is
        one of `domain`'s own MX hosts (a smarthost's TLS is none of the domain's business).
        The policy is `described` (the MX host's TLSA records) or else the domain's MTA-STS;
        under MTA-STS a policy that could not be fetched may decide the result (`sts_failure`)."""
        if not live.config.system.tls_reporting.enabled or not _own_mx(route, domain):
            return
        if described is None:
            policy = sts.policy if sts is not None else None
            described = tlsrpt.sts_policy(policy) if policy is not None and policy.mode != "none" else tlsrpt.NO_POLICY
            failed = tlsrpt.sts_failure(sts, result)
            if failed is not None:  # the policy host failed, not this MX host: no MX details
                self.tls_reports.record(live.data_dir, domain, described, failed[0], reason=failed[1])
                return
        details = {} if result == tlsrpt.SUCCESS else {"mx": hop.host, "receiving_ip": hop.address, "reason": reason}
        if details and local_ip:
            details["sending_ip"] = local_ip
        self.tls_reports.record(live.data_dir, domain, described, result, **details)

    async def _mx_unauthenticated(self, live: Live, domain: str, hop: Hop, policies: HopPolicies) -> str:
        """Why MX host `hop` of `domain` is not authenticated for a REQUIRETLS message, or "":
        its MX and address answers were DNSSEC-validated, or the domain's MTA-STS policy in
        enforce mode names it (RFC 8689 §4.2.1)."""
        if hop.secure:
            return ""
        sts = policies.sts = policies.sts or await self._mta_sts_policy(live, domain)
        policy = sts.policy
        if policy is not None and policy.mode == "enforce" and policy.matches(hop.host):
            return ""
        return (
            f"MX host {hop.host} of {domain} is not authenticated: its DNS answers were not DNSSEC-validated "
            f"and no MTA-STS policy in enforce mode names it ({sts.note})"
        )

    async def _mta_sts_policy(self, live: Live, domain: str) -> mtasts.Lookup:
        """`domain`'s MTA-STS policy, through this config version's resolver and CA bundle."""
        return await self.mta_sts.lookup(domain, **self._mta_sts_sources(live))

    async def refresh_mta_sts(self, live: Live) -> list[mtasts.Lookup]:
        """Fetch again the cached MTA-STS policies that are stale (`MTASTS.refresh`), through
        the same resolver, CA bundle and cache as delivery's lookups."""
        return await self.mta_sts.refresh(**self._mta_sts_sources(live))

    def _mta_sts_sources(self, live: Live) -> dict:
        return {
            "resolver": self._resolver(live),
            "ca_bundle": ca_bundle_of(live.config, live.base_dir),
            "cache_dir": live.data_dir / "mta-sts",
        }

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

    def _resolver(self, live: Live) -> Resolver:
        resolver = self._resolvers.get(live.version)
        if resolver is None:
            self._resolvers = {live.version: self._resolver_for(live)}
            resolver = self._resolvers[live.version]
        return resolver

    async def _hops(self, live: Live, route, domain: str) -> list[Hop]:
        resolver = self._resolver(live)
        if route.next_hop is None:
            return await resolver.mx_hosts(domain)
        hop = route.next_hop
        return await next_hops(resolver, hop.host, hop.port, hop.mx_lookup)

    # -- recording ------------------------------------------------------------------------

    async def _record(
        self, live: Live, entry: Entry, outcomes: dict[str, RecipientOutcome], active: Active | None = None
    ) -> None:
        """Record each recipient's outcome, then the notices it owes: a DSN for bounces, one
        delay warning per entry (`active` holds that flag while several jobs of it run)."""
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
            attempted = outcome.retry_at is None
            if outcome.kind == "delivered":
                await self.queue.mark_delivered(entry.id, [rcpt], outcome.text, tls=outcome.tls)
            elif outcome.kind == "defer":
                if attempted:
                    wait = next_retry(
                        attempts.get(rcpt, 0) + 1,
                        delivery.retry_interval,
                        delivery.max_retry_interval,
                        delivery.backoff,
                    )
                    await self.queue.mark_deferred(entry.id, [rcpt], outcome.text, now + wait, tls=outcome.tls)
                    retry_at = min(retry_at, now + wait)
                else:
                    await self.queue.postpone([(entry.id, [rcpt])], outcome.text, outcome.retry_at)
                    retry_at = min(retry_at, outcome.retry_at)
                destination = name_of(live.route_for(domain_of(rcpt)).next_hop, domain_of(rcpt))
                self.destinations.deferred(destination, 1, attempted=attempted)
            if attempted:
                metrics.child(metrics.DELIVERIES, outcome.kind, metrics.tls_used(outcome.tls)).inc()
                metrics.child(metrics.QUEUE_AGE, outcome.kind).observe(max(0.0, now - entry.created_at))
            emit(
                "delivery",
                id=entry.id,
                recipient=rcpt,
                result=outcome.kind,
                status=outcome.status,
                tls=outcome.tls,
                reason=outcome.text,
                config_version=live.version,
                **({} if attempted else {"attempted": False}),
            )
        if retry_at != float("inf"):
            heapq.heappush(self._wakeups, retry_at)  # one wake-up per message, trimmed every pass
        warned = active.warned if active is not None else entry.warned
        if groups["bounce"]:
            await self._notify(live, entry, {r: outcomes[r] for r in groups["bounce"]}, "failure")
            for rcpt in groups["bounce"]:
                await self.queue.mark_bounced(entry.id, [rcpt], outcomes[rcpt].text, tls=outcomes[rcpt].tls)
        elif groups["defer"] and not warned and _delay_warning_due(live, entry.created_at, now):
            if active is not None:
                active.warned = True  # before the first await: another job of the entry may be here too
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
            include=requiretls.dsn_include(entry.meta, live.config.delivery.ndr.include),
            kind=kind,
        )
        dsn_id = await self.queue.enqueue(
            "",
            [entry.sender],
            body,
            meta={
                "kind": f"dsn-{kind}",
                "about": entry.id,
                "config_version": live.version,
                **requiretls.dsn_meta(entry.meta),  # a REQUIRETLS original's DSN travels the same way
            },
            now=self.clock(),
        )
        emit("dsn", id=dsn_id, about=entry.id, kind=kind, to=entry.sender, recipients=list(outcomes))
        self.kick()


def _own_mx(route, domain: str) -> bool:
    """Whether `route` takes `domain`'s mail to the domain's own MX hosts (no next hop, or
    a next hop that is the domain itself looked up by MX)."""
    hop = route.next_hop
    return hop is None or (hop.mx_lookup and hop.host.lower().rstrip(".") == domain.lower().rstrip("."))


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


def _resolve(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _postponed(dead: Destination) -> RecipientOutcome:
    failure = dead.suspension()
    return RecipientOutcome("defer", failure.reason, failure.status, None, failure.cause, retry_at=dead.dead_until)


def _lease_seconds(live: Live) -> float:
    """Longer than a delivery can take (every stage timing out on two hops) and than mail
    usually waits in the active set, so a lease seldom lapses under work in hand (if it does,
    the entry is recognised and not taken twice)."""
    timeouts = live.config.delivery.timeouts
    return max(3600.0, 2 * sum(float(seconds) for _, seconds in timeouts))


def _delay_warning_due(live: Live, created_at: float, now: float) -> bool:
    after = live.config.delivery.delay_warning_after
    return after is not None and now - created_at >= after


def _owed_notice(live: Live, active: Active, now: float) -> bool:
    """Whether deferring this entry now bounces it (its lifetime is over) or owes the sender
    a delay warning: both need its content (a DSN), so it cannot be deferred in bulk."""
    leased: Leased = active.leased
    if expired(leased.created_at, now, live.config.delivery.max_queue_lifetime):
        return True
    return not active.warned and _delay_warning_due(live, leased.created_at, now)


def _dt(ts: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC)


def _default_resolver(live: Live) -> Resolver:
    return resolver_for(live.config.system.dns)
