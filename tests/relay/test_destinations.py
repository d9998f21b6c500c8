"""The per-destination state and the active set, on an injected clock: exact numbers."""

from __future__ import annotations

import pytest

from engine.config.model.transport import NextHopHost
from engine.relay.delivery import destinations as dest_module
from engine.relay.delivery.destinations import Destinations, Settings, name_of
from engine.relay.delivery.failures import Failure
from engine.relay.delivery.scheduler import Job, Scheduler
from engine.relay.queue import Leased, Recipient
from engine.relay.runtime import metrics

T0 = 1_900_000_000.0
DOWN = Failure("defer_site", "connection refused", "4.4.1", "connect", True)
TLS_POLICY = Failure("defer_site", "TLS required but not achieved: no STARTTLS", "4.7.5", "tls", False)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table() -> tuple[Destinations, Clock]:
    clock = Clock()
    settings = Settings(initial=2, limit=4, dead_after=3, retry_interval=60, max_retry_interval=200, backoff=2)
    return Destinations(clock, settings), clock


def test_names_follow_postfix() -> None:
    assert name_of(None, "Partner.Example") == "partner.example"
    assert name_of(NextHopHost(host="Smart.Example", port=25), "x.example") == "[smart.example]"
    assert name_of(NextHopHost(host="10.0.0.1", port=2526), "x.example") == "[10.0.0.1]:2526"
    assert name_of(NextHopHost(host="relay.example", port=587, mx_lookup=True), "x.example") == "relay.example:587"


def test_slow_start_grows_a_cohort_at_a_time_up_to_the_limit(table) -> None:
    t, _ = table
    d = t.get("a")
    assert d.window == 2
    for _ in range(4):  # keep deliveries under way so the window is in use
        t.started("a")
    t.report("a", None)
    assert d.window == 2  # half a cohort
    t.report("a", None)
    assert d.window == 3  # a cohort of 2 successes: one more
    for _ in range(3):
        t.report("a", None)
    assert d.window == 4
    for _ in range(20):
        t.report("a", None)
    assert d.window == 4  # the limit


def test_the_window_grows_only_while_it_is_used(table) -> None:
    t, _ = table
    for _ in range(10):  # one delivery at a time, each a success
        t.started("a")
        t.report("a", None)
        t.finished("a")
    assert t.get("a").window == 3  # what is used (1) plus initial (2): a trickle piles up no more


def test_connection_failures_shrink_it_and_kill_it_after_dead_after_in_a_row(table) -> None:
    t, clock = table
    t.report("a", DOWN)
    t.report("a", DOWN)
    d = t.get("a")
    assert (d.window, d.streak, d.state(clock.now)) == (1, 2, "alive")  # a cohort of 2 failures: one less
    t.report("a", None)  # a session in between breaks the run
    assert d.streak == 0
    for _ in range(3):
        t.report("a", DOWN)
    assert d.state(clock.now) == "dead" and d.dead_until == T0 + 60
    assert t.dead("a") is d and not t.ready("a")
    suspended = d.suspension()
    assert suspended.reason == (
        "delivery temporarily suspended: a is dead until 2030-03-17 17:47:40 UTC "
        "(3 connection failures in a row); last: connection refused"
    )
    assert (suspended.status, suspended.cause, suspended.connection_level) == ("4.4.1", "connect", True)
    sample = metrics.REGISTRY.get_sample_value
    assert sample("sealrelay_destination_dead", {"destination": "a"}) == 1
    assert sample("sealrelay_destination_concurrency", {"destination": "a"}) == 1
    t.deferred("a", 40, attempted=False)
    t.deferred("a", 3, attempted=True)
    assert sample("sealrelay_destination_deferred_total", {"destination": "a", "attempted": "no"}) == 40
    assert sample("sealrelay_destination_deferred_total", {"destination": "a", "attempted": "yes"}) == 3
    assert (d.postponed, d.deferred) == (40, 3)


def test_other_failures_are_no_news(table) -> None:
    t, clock = table
    for _ in range(10):
        t.report("a", TLS_POLICY)  # our policy, not the destination: it is there
    d = t.get("a")
    assert (d.window, d.streak, d.state(clock.now)) == (2, 0, "alive")


def test_one_probe_at_the_retry_time_then_dead_for_longer_or_alive(table) -> None:
    t, clock = table
    for _ in range(3):
        t.report("a", DOWN)
    d = t.get("a")
    clock.now = T0 + 59
    assert not t.ready("a")
    clock.now = T0 + 60
    assert t.dead("a") is None and t.ready("a")  # retry: the next delivery is the probe
    t.started("a")
    assert d.state(clock.now) == "probing" and not t.ready("a")  # only one
    t.report("a", DOWN)
    t.finished("a")
    assert d.dead_until == T0 + 60 + 120  # backoff 2
    clock.now = d.dead_until
    t.started("a")
    t.report("a", DOWN)
    t.finished("a")
    assert d.dead_until == clock.now + 200  # capped at max_retry_interval
    clock.now = d.dead_until
    t.started("a")
    t.report("a", None)  # it answers
    t.finished("a")
    assert (d.state(clock.now), d.window, d.streak, d.dead_until) == ("alive", 2, 0, None)


def test_forgets_idle_alive_destinations_and_their_metrics(table) -> None:
    t, clock = table
    t.report("gone.example", None)
    t.report("kept.example", None)
    assert metrics.REGISTRY.get_sample_value("sealrelay_destination_concurrency", {"destination": "gone.example"}) == 2
    clock.now += dest_module.FORGET_AFTER
    assert t.sweep(keep=["kept.example"]) == 1
    assert [d.name for d in t] == ["kept.example"]
    assert (
        metrics.REGISTRY.get_sample_value("sealrelay_destination_concurrency", {"destination": "gone.example"}) is None
    )


def test_a_smaller_limit_brings_windows_down(table) -> None:
    t, _ = table
    d = t.get("a")
    d.window = 4
    t.configure(Settings(initial=1, limit=3))
    assert d.window == 3


def leased(entry_id: str, *addresses: str) -> Leased:
    rcpts = tuple(Recipient(a, "pending", 0, T0) for a in addresses)
    return Leased(entry_id, "s@example.com", rcpts, {}, T0, False, T0 + 3600, 10)


def split(active) -> list[Job]:
    by_domain: dict[str, list] = {}
    for r in active.leased.recipients:
        by_domain.setdefault(r.address.split("@")[1], []).append(r)
    return [Job(active, d, tuple(rs), d, False) for d, rs in by_domain.items()]


def test_jobs_go_round_robin_over_ready_destinations() -> None:
    s = Scheduler()
    for n in range(3):
        s.add(leased(f"a{n}", "x@a.example"), split)
    s.add(leased("b0", "x@b.example"), split)
    s.add(leased("c0", "x@c.example", "y@a.example"), split)  # one entry, two destinations
    order = []
    while (job := s.next(lambda name: True)) is not None:
        order.append((job.destination, job.active.id))
    assert order == [
        ("a.example", "a0"),
        ("b.example", "b0"),
        ("c.example", "c0"),
        ("a.example", "a1"),
        ("a.example", "a2"),
        ("a.example", "c0"),
    ]


def test_a_destination_not_ready_keeps_its_jobs_and_its_turn_passes() -> None:
    s = Scheduler()
    s.add(leased("a0", "x@a.example"), split)
    s.add(leased("b0", "x@b.example"), split)
    b_job = s.next(lambda name: name != "a.example")
    assert b_job.destination == "b.example"
    assert s.next(lambda name: name != "a.example") is None
    assert s.waiting("a.example") == 1
    [job] = s.take("a.example")
    assert list(s.destinations()) == [] and s.holds("a0")
    assert s.finished(job) and not s.holds("a0")
    assert s.finished(b_job) and len(s) == 0


def test_an_entry_leaves_with_its_last_job() -> None:
    s = Scheduler()
    first, second = s.add(leased("m", "x@a.example", "y@b.example"), split)
    assert not s.finished(first) and s.holds("m")
    assert s.finished(second) and not s.holds("m")


BASE = {
    "version": 1,
    "system": {
        "fqdn": "relay.example.com",
        "internal_domains": ["example.com"],
        "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 2525}],
    },
}


def config_with(routes: list[dict]):
    from engine.config.load import validate_data

    config, diagnostics = validate_data(BASE | {"routes": routes})
    assert config is not None, diagnostics
    return config


def test_a_plan_that_routes_queued_mail_to_a_dead_destination_is_warned(table, monkeypatch) -> None:
    t, clock = table
    for _ in range(3):
        t.report("[10.0.0.9]", DOWN)
    before = config_with([{"name": "p", "recipients": {"domains": ["p.example", "q.example"]}, "next_hop": "mx"}])
    after = config_with(
        [{"name": "p", "recipients": {"domains": ["p.example", "q.example"]}, "next_hop": {"host": "10.0.0.9"}}]
    )
    queued = {"p.example": 70, "q.example": 30, "other.example": 500}
    assert dest_module.moved_to_dead(after, before, queued, t) == [
        "100 queued recipients (p.example, q.example) would be routed to [10.0.0.9], which is dead since "
        "2030-03-17 17:46:40 UTC (connection refused): they would wait until it answers"
    ]
    assert dest_module.moved_to_dead(after, after, queued, t) == []  # already routed there: no news
    assert dest_module.moved_to_dead(after, before, {"p.example": 99}, t) == []  # below the threshold
    monkeypatch.setattr(dest_module, "DEAD_ROUTE_WARNING", 1)
    assert len(dest_module.moved_to_dead(after, before, {"p.example": 1}, t)) == 1
    clock.now += 60
    t.started("[10.0.0.9]")
    t.report("[10.0.0.9]", None)  # alive again: nothing to warn about
    assert dest_module.moved_to_dead(after, before, queued, t) == []
