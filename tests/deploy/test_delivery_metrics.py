"""The mail-time histograms on /metrics of a running `serve`: queue age and attempt duration.

A message is deferred once by its next hop (an aiosmtpd sink answering 451), then delivered
at the retry a second later. Read as Prometheus reads them (HTTP, prometheus_client's parser),
compared with a scrape taken before: each histogram's `_count` moved by one per outcome, its
`_sum` by the observed time, and exactly the buckets at or above that time moved. The queue
age of the delivery counts from the message's arrival (past the retry interval), the attempt
only the transfer.

And every `system.limits` limit the engine counts has its series, at 0, from the start.
"""

from __future__ import annotations

import re
import time

from tests.conftest import ROOT
from tests.relay.conftest import write_config  # noqa: F401  (a fixture)
from tests.relay.peers import Sink, eventually, submit
from tests.relay.test_edge import route_to
from tests.relay.test_metrics import Samples, scrape, value
from tests.relay.test_reload import admin_line, service_for  # noqa: F401  (a fixture)

RECIPIENT = "bob@partner.example"
MESSAGE = f"From: alice@example.com\r\nTo: {RECIPIENT}\r\nSubject: late\r\n\r\nhi\r\n"


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return (value(after, name, **labels) or 0.0) - (value(before, name, **labels) or 0.0)


def bucket_moves(before: Samples, after: Samples, name: str, result: str) -> dict[float, float]:
    """How much each bucket (by its upper bound) of `name{result}` moved."""
    bounds = [
        dict(labels)["le"]
        for (sample, labels) in after
        if sample == f"{name}_bucket" and dict(labels).get("result") == result
    ]
    assert bounds, f"no buckets for {name}{{result={result!r}}}"
    return {float(le): moved(before, after, f"{name}_bucket", result=result, le=le) for le in bounds}


def assert_one_observation(before: Samples, after: Samples, name: str, result: str) -> float:
    """`name{result}` observed exactly once since `before`: the count and the +Inf bucket
    moved by one, and a finite bucket moved iff its bound is at or above the observed value
    (the `_sum`'s move). Returns that value."""
    assert moved(before, after, f"{name}_count", result=result) == 1
    observed = moved(before, after, f"{name}_sum", result=result)
    buckets = bucket_moves(before, after, name, result)
    assert buckets[float("inf")] == 1
    expected = {le: (1.0 if observed <= le else 0.0) for le in buckets}
    assert buckets == expected, f"{name}{{result={result!r}}} observed {observed:.3f}s"
    return observed


async def test_queue_age_and_attempt_duration_are_observed_per_outcome(write_config, service_for) -> None:  # noqa: F811
    with Sink() as sink:
        sink.handler.replies[RECIPIENT] = "451 4.3.0 try again later"
        service = await service_for(write_config(route_to(sink.port), system=admin_line()))
        before = await scrape(service)
        arrived = time.time()
        await submit(service.relay.ports()["mx"], MESSAGE, "alice@example.com", [RECIPIENT])

        async def deferred():
            samples = await scrape(service)
            return samples if moved(before, samples, "sealrelay_queue_age_seconds_count", result="defer") else None

        await eventually(deferred, what="the first attempt to be deferred")
        del sink.handler.replies[RECIPIENT]  # the retry (delivery.retry_interval: 1s) is accepted
        await sink.received(1)

        async def delivered():
            samples = await scrape(service)
            done = moved(before, samples, "sealrelay_queue_age_seconds_count", result="delivered")
            return samples if done else None

        after = await eventually(delivered, what="the delivery to be observed")
        elapsed = time.time() - arrived

    age = "sealrelay_queue_age_seconds"
    attempt = "sealrelay_delivery_attempt_duration_seconds"
    first_age = assert_one_observation(before, after, age, "defer")
    delivered_age = assert_one_observation(before, after, age, "delivered")
    assert_one_observation(before, after, attempt, "defer")
    transfer = assert_one_observation(before, after, attempt, "delivered")
    # the delivery's age counts from arrival: past the retry interval, within the test's own time
    assert first_age < 1.0 <= delivered_age <= elapsed
    # the attempt counts only the transfer to a sink on loopback, not the wait before it
    assert transfer < 1.0 <= delivered_age
    assert moved(before, after, f"{age}_count", result="bounce") == 0
    # one observation per counted outcome: the histograms agree with sealrelay_deliveries_total
    for result in ("defer", "delivered"):
        counted = moved(before, after, "sealrelay_deliveries_total", result=result, tls="no")
        assert counted == moved(before, after, f"{age}_count", result=result) == 1


def test_every_limit_the_code_counts_has_its_series_from_the_start() -> None:
    # a limit counted somewhere in the engine but not created at 0 would be missed by the
    # first increase() of the SealrelaySmtpLimitHits alert
    from engine.relay.runtime.metrics import REGISTRY

    counted = {
        name
        for path in (ROOT / "engine").rglob("*.py")
        for name in re.findall(r'LIMIT_HITS\.labels\("(\w+)"\)', path.read_text(encoding="utf-8"))
    }
    assert len(counted) >= 6, counted
    for limit in counted:
        assert REGISTRY.get_sample_value("sealrelay_smtp_limit_hits_total", {"limit": limit}) is not None, limit
