"""Per-destination delivery state: slow-start concurrency and dead destinations.

Postfix's queue manager is the model (`qmgr_queue.c`, `qmgr_feedback.c`, SCHEDULER_README's
concurrency scheduler); the code is ours. A **destination** is where a route sends mail,
named as Postfix names its queues: `[host]:port` for a route to a fixed host, `host:port`
when the route looks up that host's MX, the recipient domain for MX routing (`name_of`).

- **Concurrency** (`window`): a destination starts at `destination_concurrency.initial`
  parallel deliveries. A delivery that got a session adds `1/window` (a cohort of them, as
  many as the window, adds one), a connection-level failure takes `1/window` away (a cohort
  takes one); never above `limit` or `workers`, never below one. The window grows only while
  it is used: not beyond the deliveries in progress plus `initial` (Postfix: "not too
  gentle", and no credit piled up by a trickle).
- **Dead**: after `dead_after` connection-level failures in a row (`Failure.connection_level`:
  refused, timed out, no greeting, EHLO refused, the TLS handshake broken, DNS failing for now)
  the destination is dead until its retry time: `retry_interval` after the failure that killed
  it, then `backoff` times longer each time a probe fails, at most `max_retry_interval`. While
  it is dead no delivery to it starts: the scheduler defers its due mail without an attempt
  to that time, the reason naming the last real failure (`suspension`). When the time comes,
  one delivery probes it: a session makes it alive again at the initial concurrency, a
  connection-level failure makes it dead again, for longer.
- Any other failure (a 4xx to RCPT, an AUTH refusal, a 5xx) is no news about whether the
  destination is there: it neither grows nor shrinks the window, nor breaks a run of failures.

The state lives in memory only (as Postfix's does): a restart forgets it, and the first
deliveries after it find out again. A destination idle and alive for `FORGET_AFTER` seconds
is forgotten; `snapshot()` is what `/v1/status` and `sealrelay queue destinations` show.
Every method is synchronous and reads the injected clock: no I/O here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.config.model.transport import NextHopHost
from engine.policy import rules
from engine.policy.groups import DomainSet
from engine.relay.delivery.failures import Failure
from engine.relay.runtime import metrics

log = logging.getLogger(__name__)

FORGET_AFTER = 600.0  # seconds an alive, idle destination is remembered (its window with it)

ALIVE, DEAD, RETRY, PROBING = "alive", "dead", "retry", "probing"


def name_of(next_hop: NextHopHost | None, domain: str) -> str:
    """The destination of mail to `domain` through a route's `next_hop` (None: the domain's MX)."""
    if next_hop is None:
        return domain.lower()
    port = "" if next_hop.port == 25 else f":{next_hop.port}"
    host = next_hop.host.lower()
    return f"{host}{port}" if next_hop.mx_lookup else f"[{host}]{port}"


@dataclass(frozen=True)
class Settings:
    """What the table takes from `delivery`: the window's bounds, `dead_after`, the retry schedule."""

    initial: int = 5
    limit: int = 20
    dead_after: int = 5
    retry_interval: float = 900.0
    max_retry_interval: float = 14400.0
    backoff: float = 2.0

    @classmethod
    def of(cls, delivery) -> Settings:
        limit = min(delivery.destination_concurrency.limit, delivery.workers)
        return cls(
            initial=min(delivery.destination_concurrency.initial, limit),
            limit=limit,
            dead_after=delivery.dead_after,
            retry_interval=float(delivery.retry_interval),
            max_retry_interval=float(delivery.max_retry_interval),
            backoff=float(delivery.backoff),
        )


@dataclass
class Destination:
    """One destination's state. Read it; change it only through `Destinations`."""

    name: str
    window: int
    busy: int = 0
    streak: int = 0  # connection-level failures in a row
    credit: float = 0.0  # feedback not yet worth a whole step of the window (+ grow, - shrink)
    dead_until: float | None = None  # set while dead, probing, or waiting for its probe
    dead_for: float = 0.0  # length of the current dead period (grows while probes fail)
    dead_since: float | None = None
    probing: bool = False
    last_failure: Failure | None = None  # the last connection-level failure
    last_failure_at: float | None = None
    sessions: int = 0  # deliveries that got a session
    failures: int = 0  # connection-level failures
    deferred: int = 0  # recipients deferred after an attempt
    postponed: int = 0  # recipients deferred without one (dead)
    idle_since: float = 0.0
    gauges: tuple = ()  # its metric series (concurrency, busy, dead), labelled once

    def state(self, now: float) -> str:
        """`alive`; `dead` (no delivery starts before `dead_until`); `retry` (its retry time has
        come: the next delivery is the probe); `probing` (the probe is under way)."""
        if self.dead_until is None:
            return ALIVE
        if self.probing:
            return PROBING
        return DEAD if now < self.dead_until else RETRY

    def suspension(self) -> Failure:
        """The failure that mail waiting for a dead destination is deferred with: it names the
        last real failure, keeps its status and cause (a TLS handshake failure stays `tls`)."""
        last = self.last_failure or Failure("defer_site", "connection failures", "4.4.1", "connect", True)
        until = datetime.fromtimestamp(self.dead_until or 0, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        reason = (
            f"delivery temporarily suspended: {self.name} is dead until {until} "
            f"({self.streak} connection failure{'s' if self.streak != 1 else ''} in a row); last: {last.reason}"
        )
        return Failure("defer_site", reason, last.status, last.cause, True)


class Destinations:
    """The table of destinations the scheduler knows, on an injectable clock."""

    def __init__(self, clock: Callable[[], float], settings: Settings | None = None) -> None:
        self.clock = clock
        self.settings = settings or Settings()
        self._table: dict[str, Destination] = {}

    def configure(self, settings: Settings) -> None:
        """Take new bounds (a config change): windows above the new limit come down to it."""
        if settings == self.settings:
            return
        self.settings = settings
        for d in self._table.values():
            d.window = max(1, min(d.window, settings.limit))
            self._export(d)

    def get(self, name: str) -> Destination:
        d = self._table.get(name)
        if d is None:
            d = self._table[name] = Destination(name, self.settings.initial, idle_since=self.clock())
            d.gauges = tuple(g.labels(name) for g in _GAUGES)
            self._export(d)
        return d

    def known(self, name: str) -> Destination | None:
        return self._table.get(name)

    def __iter__(self):
        return iter(tuple(self._table.values()))

    # -- the scheduler's questions ---------------------------------------------------------

    def ready(self, name: str) -> bool:
        """May another delivery to `name` start now? Alive: while fewer than its window are
        under way. Its retry time come: one, the probe. Dead or probing: no."""
        d = self.get(name)
        state = d.state(self.clock())
        if state == ALIVE:
            return d.busy < d.window
        return state == RETRY and d.busy == 0

    def dead(self, name: str) -> Destination | None:
        """The destination if it is dead right now (its mail is deferred without attempts)."""
        d = self._table.get(name)
        return d if d is not None and d.state(self.clock()) == DEAD else None

    def wakeup(self) -> float | None:
        """The earliest time a dead destination may be probed (for the scheduler's sleep)."""
        times = [d.dead_until for d in self._table.values() if d.dead_until is not None and not d.probing]
        return min(times, default=None)

    # -- what happened -----------------------------------------------------------------------

    def started(self, name: str) -> None:
        d = self.get(name)
        if d.state(self.clock()) == RETRY:
            d.probing = True
            log.info("destination %s: probing (dead since %s)", name, _when(d.dead_since))
        d.busy += 1
        d.idle_since = self.clock()
        d.gauges[1].set(d.busy)

    def finished(self, name: str) -> None:
        d = self.get(name)
        d.busy = max(0, d.busy - 1)
        d.idle_since = self.clock()
        d.gauges[1].set(d.busy)

    def report(self, name: str, failure: Failure | None) -> None:
        """One delivery's news about the destination: None for a session (whatever the replies
        to MAIL, RCPT and DATA), else the failure that ended it at every hop."""
        d = self.get(name)
        now = self.clock()
        s = self.settings
        d.idle_since = now
        if failure is None:
            d.sessions += 1
            d.streak = 0
            if d.dead_until is not None:
                log.info("destination %s is alive again (dead since %s)", name, _when(d.dead_since))
                d.dead_until, d.dead_for, d.dead_since, d.probing = None, 0.0, None, False
                d.window, d.credit = s.initial, 0.0
            elif d.window < s.limit and d.window < d.busy + s.initial:
                d.credit += 1 / d.window
                if d.credit >= 1:
                    d.window, d.credit = d.window + 1, 0.0
        elif failure.connection_level:
            d.failures += 1
            d.streak += 1
            d.last_failure, d.last_failure_at = failure, now
            d.credit -= 1 / d.window
            if d.credit <= -1:
                d.window, d.credit = max(1, d.window - 1), 0.0
            if d.probing:
                d.dead_for = min(d.dead_for * s.backoff, s.max_retry_interval)
                self._die(d, now, "the probe failed")
            elif d.dead_until is None and d.streak >= s.dead_after:
                d.dead_for, d.dead_since = min(s.retry_interval, s.max_retry_interval), now
                self._die(d, now, f"{d.streak} connection failures in a row")
        self._export(d)

    def deferred(self, name: str, count: int, *, attempted: bool) -> None:
        """Recipients deferred: after an attempt, or without one (postponed: the destination is dead)."""
        d = self.get(name)
        if attempted:
            d.deferred += count
        else:
            d.postponed += count
        metrics.DESTINATION_DEFERRED.labels(name, "yes" if attempted else "no").inc(count)

    def _die(self, d: Destination, now: float, why: str) -> None:
        d.dead_until, d.probing = now + d.dead_for, False
        log.warning(
            "destination %s is dead until %s (%s); its mail waits without attempts; last: %s",
            d.name,
            _when(d.dead_until),
            why,
            d.last_failure.reason if d.last_failure else "-",
        )

    # -- housekeeping and views --------------------------------------------------------------

    def sweep(self, keep: Iterable[str] = ()) -> int:
        """Forget destinations idle and alive (or past their retry time with nothing waiting)
        for `FORGET_AFTER`, except those in `keep` (mail waits for them). Returns how many."""
        now = self.clock()
        keep = set(keep)
        gone = [
            d
            for d in self._table.values()
            if d.name not in keep
            and d.busy == 0
            and d.state(now) in (ALIVE, RETRY)
            and now - max(d.idle_since, d.dead_until or 0) >= FORGET_AFTER
        ]
        for d in gone:
            del self._table[d.name]
            _forget_metrics(d.name)
        return len(gone)

    def snapshot(self, waiting: Callable[[str], int] = lambda name: 0, limit: int = 1000) -> list[dict]:
        """Plain data for `/v1/status`: dead ones first, then the busiest. Safe to call from
        another thread (it copies the table first; a value may be a moment old)."""
        now = self.clock()
        rows = []
        for d in tuple(self._table.values()):
            state = d.state(now)
            rows.append(
                {
                    "name": d.name,
                    "state": state,
                    "concurrency": d.window,
                    "limit": self.settings.limit,
                    "busy": d.busy,
                    "waiting": waiting(d.name),
                    "failures_in_a_row": d.streak,
                    "dead_until": d.dead_until,
                    "dead_since": d.dead_since,
                    "last_failure": d.last_failure.reason if d.last_failure else None,
                    "last_failure_at": d.last_failure_at,
                    "sessions": d.sessions,
                    "connection_failures": d.failures,
                    "deferred": d.deferred,
                    "postponed": d.postponed,
                }
            )
        rows.sort(key=lambda r: (r["state"] == ALIVE, -r["busy"] - r["waiting"], r["name"]))
        return rows[:limit]

    def _export(self, d: Destination) -> None:
        concurrency, busy, dead = d.gauges
        concurrency.set(d.window)
        busy.set(d.busy)
        dead.set(0 if d.dead_until is None else 1)


# -- a plan's warning ------------------------------------------------------------------------------

DEAD_ROUTE_WARNING = 100  # queued recipients newly routed to a dead destination worth a warning


def moved_to_dead(desired, current, queued: dict[str, int], table: Destinations) -> list[str]:
    """Warnings for a plan from `current` to `desired` (RelayConfigs): the queued recipients
    (`queued`: open recipients per domain) whose route would lead to a destination that is
    dead now, and not already there, at least `DEAD_ROUTE_WARNING` for one destination. The
    change is not refused: the mail would wait there until the destination answers."""
    dead = {d.name: d for d in table if d.dead_until is not None}
    if not dead:
        return []
    after, before = _routing(desired), _routing(current)
    moved: dict[str, list[tuple[int, str]]] = {}
    for domain, count in queued.items():
        to = name_of(rules.route_for(after, domain).next_hop, domain)
        if to in dead and to != name_of(rules.route_for(before, domain).next_hop, domain):
            moved.setdefault(to, []).append((count, domain))
    out = []
    for name, domains in sorted(moved.items()):
        total = sum(count for count, _ in domains)
        if total < DEAD_ROUTE_WARNING:
            continue
        domains.sort(key=lambda item: (-item[0], item[1]))
        shown = ", ".join(domain for _, domain in domains[:3]) + (", ..." if len(domains) > 3 else "")
        d = dead[name]
        last = d.last_failure.reason if d.last_failure else "connection failures"
        out.append(
            f"{total} queued recipient{'s' if total != 1 else ''} ({shown}) would be routed to {name}, "
            f"which is dead since {_when(d.dead_since)} ({last}): they would wait until it answers"
        )
    return out


@dataclass(frozen=True)
class _Routed:
    domains: object
    next_hop: NextHopHost | None


def _routing(config) -> tuple[_Routed, ...]:
    """A config's routing table as the relay builds it (`rules.routing_table`), with next hops."""
    groups = {name: DomainSet.of(entries) for name, entries in config.domain_groups.items()}
    return tuple(
        _Routed(
            choice.domains,
            choice.route.next_hop if choice.route and isinstance(choice.route.next_hop, NextHopHost) else None,
        )
        for choice in rules.routing_table(config.routes, groups, config.tls.outbound_default)
    )


_GAUGES = (metrics.DESTINATION_CONCURRENCY, metrics.DESTINATION_BUSY, metrics.DESTINATION_DEAD)


def _forget_metrics(name: str) -> None:
    for gauge in _GAUGES:
        try:
            gauge.remove(name)
        except KeyError:
            pass
    for attempted in ("yes", "no"):
        try:
            metrics.DESTINATION_DEFERRED.remove(name, attempted)
        except KeyError:
            pass


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
