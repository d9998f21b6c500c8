"""The retry schedule on an injected clock: asserted to the second, not against the wall clock.

The relay runs for real (a queue file, SMTP to a closed port on loopback); only time is the
test's: each delivery pass is run by hand at a chosen instant.
"""

from __future__ import annotations

import pytest

from engine.relay.queue import NotQueued
from engine.relay.runtime.relay import Relay, load_live
from tests.relay.peers import free_port

T0 = 1_900_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def relay(write_config):
    clock = Clock(T0)
    extra = f"""
routes:
  - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: {free_port()}}}, tls: none}}
"""
    delivery = "delivery:\n  retry_interval: 10m\n  max_retry_interval: 30m\n  backoff: 2\n  max_queue_lifetime: 1h\n"
    relay = Relay(load_live(write_config(extra, delivery=delivery)), clock=clock)
    await relay.start(deliver=False)  # passes are run by hand below
    yield relay, clock
    await relay.stop()


async def one_pass(relay: Relay, clock: Clock) -> int:
    """Lease what is due at the clock's time and deliver it; how many entries were due."""
    due = await relay.queue.due(clock(), 10, lease_s=600)
    for entry in due:
        await relay.deliverer.deliver(relay.live, entry)
    return len(due)


async def test_retries_follow_the_backoff_schedule_then_expire(relay) -> None:
    relay, clock = relay
    queue_id = await relay.queue.enqueue(
        "alice@example.com", ["bob@partner.test"], b"Subject: s\r\n\r\nx\r\n", meta={}, now=T0
    )
    expected = [T0 + 600, T0 + 600 + 1200, T0 + 600 + 1200 + 1800]  # 10m, 20m, then capped at 30m
    for attempt, retry_at in enumerate(expected, 1):
        assert await one_pass(relay, clock) == 1
        [rcpt] = (await relay.queue.show(queue_id)).recipients
        assert (rcpt.state, rcpt.attempts, rcpt.next_attempt_at) == ("deferred", attempt, retry_at)
        clock.now = retry_at - 1
        assert await one_pass(relay, clock) == 0  # not a second early
        clock.now = retry_at
    # at T0 + 3600 the lifetime (1h) is over: this attempt fails for good and bounces
    assert clock.now == T0 + 3600
    assert await one_pass(relay, clock) == 1
    with pytest.raises(NotQueued):  # finished: bounced
        await relay.queue.show(queue_id)
    [dsn] = [await relay.queue.show(e.id) for e in await relay.queue.list()]
    assert (dsn.sender, [r.address for r in dsn.recipients]) == ("", ["alice@example.com"])
    assert dsn.meta["kind"] == "dsn-failure" and dsn.meta["about"] == queue_id
    assert dsn.created_at == T0 + 3600  # queued on the injected clock too
