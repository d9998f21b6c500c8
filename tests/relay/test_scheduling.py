"""Delivery scheduling on loopback: one bad destination never delays the others.

Real SMTP and real sockets: a tarpit (accepts, never greets), a refuser (accepts and closes),
a staller (greets, never answers MAIL) and counting sinks, with the relay in-process. Time is
the wall clock here (the scheduler's waits are real), kept short by the config: every wait
is a condition with a timeout, never a blind sleep.
"""

from __future__ import annotations

import asyncio
import time

from engine.relay.runtime.control import RelayControl
from tests.relay.peers import eventually, submit
from tests.relay.slowpeers import CountingSink, Refuser, Staller, Tarpit


def routes(**destinations: int) -> str:
    """One route per domain `<name>.example` to 127.0.0.1:<port>, no TLS."""
    lines = [
        f"  - {{name: {name}, recipients: {{domains: [{name}.example]}}, "
        f"next_hop: {{host: 127.0.0.1, port: {port}}}, tls: none}}"
        for name, port in destinations.items()
    ]
    return "routes:\n" + "\n".join(lines) + "\n"


def delivery(extra: str = "") -> str:
    return (
        "delivery:\n  retry_interval: 1s\n  max_retry_interval: 2s\n  max_queue_lifetime: 1h\n"
        f"  delay_warning_after: null\n{extra}"
    )


async def enqueue(relay, domain: str, count: int) -> list[str]:
    """`count` messages to `user@<domain>` straight into the queue (as intake would after 250)."""
    body = b"Subject: queued\r\n\r\nwaiting\r\n"
    ids = await asyncio.gather(
        *(relay.queue.enqueue("alice@example.com", [f"u{n}@{domain}"], body, meta={}) for n in range(count))
    )
    relay.deliverer.kick()
    return list(ids)


async def test_healthy_mail_goes_out_at_once_while_200_messages_wait_on_a_tarpit(write_config, start_relay) -> None:
    async with Tarpit() as tarpit, CountingSink() as healthy:
        relay = await start_relay(write_config(routes(tarpit=tarpit.port, healthy=healthy.port), delivery=delivery()))
        await enqueue(relay, "tarpit.example", 200)

        async def tarpit_full():
            return tarpit.open == 5  # the default initial concurrency: its first cohort waits for a greeting

        await eventually(tarpit_full, what="the tarpit to hold its first deliveries")
        sent = time.monotonic()
        for n in range(20):
            await submit(
                relay.ports()["mx"], f"Subject: {n}\r\n\r\nhello\r\n", "alice@example.com", [f"bob{n}@healthy.example"]
            )

        async def all_delivered():
            return healthy.messages == 20

        await eventually(all_delivered, 5, "the 20 healthy messages")
        took = time.monotonic() - sent
        assert took < 5, took
        # the tarpit never got more than its window, whatever else waited
        assert tarpit.most_open == 5 and len(tarpit.accepted) == 5
        [row] = [r for r in relay.deliverer.snapshot() if r["name"] == f"[127.0.0.1]:{tarpit.port}"]
        assert (row["state"], row["busy"], row["waiting"]) == ("alive", 5, 195)
        assert await relay.queue.count() == 200
        stopping = time.monotonic()
        await relay.stop()  # nothing was sent to the tarpit: its deliveries are cancelled, not awaited
        assert time.monotonic() - stopping < 3


async def test_a_dead_destination_gets_one_attempt_per_retry_interval_then_drains_at_its_limit(
    write_config, start_relay
) -> None:
    refuser = Refuser()
    config = write_config(
        routes(down=refuser.port),
        delivery=delivery("  destination_concurrency: {initial: 2, limit: 4}\n  dead_after: 3\n"),
    )
    async with refuser:
        relay = await start_relay(config)
        name = f"[127.0.0.1]:{refuser.port}"
        ids = await enqueue(relay, "down.example", 1000)

        async def dead():
            return relay.deliverer.destinations.dead(name)

        dest = await eventually(dead, what="the destination to be declared dead")
        died = time.monotonic()
        first_round = len(refuser.accepted)
        # dead_after failures in a row, and the deliveries already under way (the window) at most
        assert 3 <= first_round <= 3 + 2 - 1, first_round
        assert dest.last_failure is not None and "connection failed" in dest.last_failure.reason

        async def all_postponed():
            return relay.deliverer.destinations.get(name).postponed >= 1000 - first_round

        await eventually(all_postponed, what="the other messages to be deferred without an attempt")
        detail = await relay.queue.show(ids[-1])
        [rcpt] = detail.recipients
        assert (rcpt.state, rcpt.attempts) == ("deferred", 0)
        assert rcpt.last_error.startswith(f"delivery temporarily suspended: {name} is dead until ")
        assert "3 connection failures in a row" in rcpt.last_error
        assert dest.last_failure.reason in rcpt.last_error  # it names the last real failure
        assert rcpt.next_attempt_at == dest.dead_until

        async def probed_twice():
            return len(refuser.accepted) >= first_round + 2

        await eventually(probed_twice, 8, "two probes")
        probes = refuser.accepted[first_round:]
        # one connection per retry interval: 1s after dying, then 2s (backoff 2, max 2s)
        assert probes[0] - died >= 0.9, probes[0] - died
        assert probes[1] - probes[0] >= 1.9, probes[1] - probes[0]

        async def attempts_recorded():
            attempts = [(await relay.queue.show(i)).recipients[0].attempts for i in ids]
            return sum(attempts) == len(refuser.accepted) and attempts

        # the queue agrees: one attempt per connection; the mail never tried has none counted
        attempts = await eventually(attempts_recorded, what="the probes' attempts in the queue")
        assert attempts.count(0) >= 1000 - len(refuser.accepted)

    # it comes back: the next probe succeeds, and the queue drains at the destination's limit
    async with CountingSink(port=refuser.port, delay=0.002) as sink:

        async def drained():
            return sink.messages == 1000 and await relay.queue.count() == 0

        await eventually(drained, 20, "the 1,000 messages at the sink")
        assert sink.most_open == 4  # slow start from 2, never past the limit
        row = next(r for r in relay.deliverer.snapshot() if r["name"] == name)
        assert (row["state"], row["concurrency"], row["failures_in_a_row"]) == ("alive", 4, 0)


async def test_greeting_timeouts_kill_a_destination_a_stalled_transaction_does_not(write_config, start_relay) -> None:
    timeouts = "  dead_after: 2\n  timeouts: {greeting: 1s, mail: 1s}\n"
    async with Tarpit() as tarpit, Staller() as staller:
        relay = await start_relay(
            write_config(routes(tarpit=tarpit.port, staller=staller.port), delivery=delivery(timeouts))
        )
        [silent] = await enqueue(relay, "tarpit.example", 1)
        [slow] = await enqueue(relay, "staller.example", 1)

        async def both_failed_twice():
            a = (await relay.queue.show(silent)).recipients[0]
            b = (await relay.queue.show(slow)).recipients[0]
            return a.attempts >= 2 and b.attempts >= 2 and (a, b)

        silent_rcpt, slow_rcpt = await eventually(both_failed_twice, 15, "two attempts at each")
        assert "timed out waiting for the greeting (1 s)" in silent_rcpt.last_error
        assert "timed out waiting for the reply to MAIL FROM (1 s)" in slow_rcpt.last_error
        states = {r["name"]: r["state"] for r in relay.deliverer.snapshot()}
        assert states[f"[127.0.0.1]:{tarpit.port}"] in ("dead", "retry", "probing")
        assert states[f"[127.0.0.1]:{staller.port}"] == "alive"  # it greets: it is there, only slow


async def test_round_robin_shares_the_workers_between_destinations(write_config, start_relay) -> None:
    """Two slow destinations with a backlog and one quick, 4 workers in all: the quick one
    gets a worker at every turn of the round, not after the backlogs (first come, first
    served would have delivered all 80 of theirs first)."""
    extra = "  workers: 4\n  destination_concurrency: {initial: 4, limit: 4}\n"
    async with CountingSink(delay=0.05) as a, CountingSink(delay=0.05) as b, CountingSink() as c:
        relay = await start_relay(write_config(routes(a=a.port, b=b.port, c=c.port), delivery=delivery(extra)))
        await enqueue(relay, "a.example", 40)
        await enqueue(relay, "b.example", 40)
        await enqueue(relay, "c.example", 4)

        async def c_done():
            return c.messages == 4

        await eventually(c_done, 5, "the quick destination's mail")
        # before each of c's 4 turns at most the 2 others had one: 4 started at first + 4 x 2
        before = sum(t < c.times[-1] for t in a.times + b.times)
        assert before <= 12, before


async def test_status_shows_the_destinations(write_config, start_relay) -> None:
    async with Refuser() as refuser:
        relay = await start_relay(write_config(routes(down=refuser.port), delivery=delivery("  dead_after: 1\n")))
        await enqueue(relay, "down.example", 3)
        name = f"[127.0.0.1]:{refuser.port}"

        async def dead():
            return relay.deliverer.destinations.dead(name)

        await eventually(dead, what="the destination to die")
        status = RelayControl(relay).status()
        [row] = [r for r in status.to_json()["destinations"] if r["name"] == name]
        assert row["state"] == "dead" and row["failures_in_a_row"] >= 1
        assert row["concurrency"] >= 1 and row["limit"] == 20
        assert "connection failed" in row["last_failure"]
