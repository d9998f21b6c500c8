"""Prometheus metrics: what an operator graphs and alerts on.

One registry per process (one relay per process). Counters are bumped where the events
happen (intake, delivery, swaps); gauges are refreshed by the service's components; the
histograms of mail time are observed where delivery outcomes are recorded
(`engine/relay/delivery/deliver.py`). Served
by `serve` on `system.metrics` (the `MetricsEndpoint` component, the admin API's HTTP stack;
loopback by default, no token: expose it only to your Prometheus).

Prometheus' conventions: base units (seconds, bytes), a point in time as a unix timestamp
(`..._timestamp_seconds`: alert on `x - time()`), `_total` counters without `_created`
series, `sealrelay_build_info` (always 1, the facts in its labels), and the standard
`process_*` and `python_*` families of the process.
"""

from __future__ import annotations

import functools
import platform
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

from engine.config.model import LATEST_VERSION
from engine.relay.decision import ACTIONS, DIRECTIONS

disable_created_metrics()  # one `_created` series per counter label set: noise Prometheus does not use

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds, start time
PlatformCollector(registry=REGISTRY)  # python_info
REGISTRY.register(GC_COLLECTOR)  # python_gc_*


def _version() -> str:
    try:
        return version("sealrelay")
    except PackageNotFoundError:  # a tree that was never installed
        return "unknown"


BUILD_INFO = Gauge(
    "sealrelay_build_info",
    "Always 1: the sealrelay version, the config format it reads and the Python it runs on",
    ["version", "config_format", "python"],
    registry=REGISTRY,
)
BUILD_INFO.labels(_version(), str(LATEST_VERSION), platform.python_version()).set(1)

RECEIVED = Counter(
    "sealrelay_messages_received",
    "Messages accepted, by direction and DLP action",
    ["direction", "action"],
    registry=REGISTRY,
)
DLP_MATCHES = Counter("sealrelay_dlp_matches", "Messages matched by each DLP policy", ["policy"], registry=REGISTRY)
DLP_UNSCANNABLE = Counter(
    "sealrelay_dlp_unscannable",
    "Messages DLP could not fully read (an archive too deep, a bomb, an encrypted document, a limit of "
    "dlp.limits), by direction; dlp.unscannable decided what happened to outbound ones",
    ["direction"],
    registry=REGISTRY,
)
DLP_JUDGED = Counter(
    "sealrelay_dlp_judged",
    "Messages DLP judged, by where: loop (plain text the pattern engine found no candidate in, decided "
    "where it arrived) or pool (everything else, in the scanning threads)",
    ["path"],
    registry=REGISTRY,
)
DELIVERIES = Counter(
    "sealrelay_deliveries",
    "Delivery outcomes per recipient, and whether TLS was used",
    ["result", "tls"],
    registry=REGISTRY,
)
SWAPS = Counter(
    "sealrelay_config_changes", "Config changes tried, by source and result", ["source", "result"], registry=REGISTRY
)
CONFIG_VERSION = Gauge("sealrelay_config_version", "The running config version", registry=REGISTRY)
QUEUE_ENTRIES = Gauge("sealrelay_queue_entries", "Messages in the queue", registry=REGISTRY)
QUEUE_HELD = Gauge(
    "sealrelay_queue_held", "Messages on hold (sealrelay queue hold): never delivered until released", registry=REGISTRY
)
QUEUE_RECIPIENTS = Gauge("sealrelay_queue_recipients", "Recipients in the queue by state", ["state"], registry=REGISTRY)
CERT_EXPIRY = Gauge(
    "sealrelay_certificate_expiry_timestamp_seconds",
    "When the relay's certificate expires (its notAfter), as a unix timestamp: alert on `x - time() < 14 * 86400`",
    registry=REGISTRY,
)


# Mail time, in seconds: from a message relayed at once (0.1 s) through the retries of minutes
# and hours to the 5 days past which no sane `max_queue_lifetime` keeps mail.
QUEUE_AGE_BUCKETS = (
    *(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    *(60.0, 300.0, 900.0, 1800.0),  # minutes: the first retries
    *(3600.0, 3 * 3600.0, 6 * 3600.0, 12 * 3600.0),  # hours: delay warnings (4 h by default)
    *(86400.0, 2 * 86400.0, 3 * 86400.0, 5 * 86400.0),  # days: max_queue_lifetime
)
QUEUE_AGE = Histogram(
    "sealrelay_queue_age_seconds",
    "Age of a message (seconds since it was queued) at each attempted delivery outcome, per recipient, by result: "
    "delivered and bounce are the time mail took to leave the queue, defer how old the mail still waiting is",
    ["result"],
    buckets=QUEUE_AGE_BUCKETS,
    registry=REGISTRY,
)
ATTEMPT_DURATION = Histogram(
    "sealrelay_delivery_attempt_duration_seconds",
    "Seconds one delivery attempt took (resolving, connecting, TLS, the transfer; per recipient attempted), by result",
    ["result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0),
    registry=REGISTRY,
)


@functools.lru_cache(maxsize=1024)
def _child(metric, values: tuple[str, ...]):
    return metric.labels(*values)


def child(metric, *values: str):
    """`metric.labels(*values)`, kept: prometheus_client checks and locks on every `labels`
    call, several times per message on the hot path. For closed sets of values only (the
    cache is bounded, so an open set would only lose the saving, never grow memory)."""
    return _child(metric, values)


def observe_attempt(outcomes, seconds: float) -> None:
    """One job's attempt took `seconds`: observed once per recipient it attempted (not those
    deferred without an attempt, their destination being dead), by its outcome."""
    for outcome in outcomes:
        if outcome.retry_at is None:
            child(ATTEMPT_DURATION, outcome.kind).observe(seconds)


def tls_used(note: str | None) -> str:
    """'yes' when the delivery note says a TLS session carried it, else 'no'."""
    return "yes" if note and note.startswith("TLS") else "no"


LIMIT_HITS = Counter(
    "sealrelay_smtp_limit_hits",
    "SMTP sessions refused or replies refused by a system.limits limit",
    ["limit"],
    registry=REGISTRY,
)


# -- delivery scheduling: per-destination state (engine/relay/delivery/destinations.py) ------------
# One label set per destination the scheduler tracks; removed when it forgets the destination
# (idle and alive), so mail to many MX domains does not grow these without bound.

DESTINATION_CONCURRENCY = Gauge(
    "sealrelay_destination_concurrency",
    "Parallel deliveries a destination may have now (slow start: grows on success, shrinks on connection failures)",
    ["destination"],
    registry=REGISTRY,
)
DESTINATION_BUSY = Gauge(
    "sealrelay_destination_busy", "Deliveries to a destination in progress", ["destination"], registry=REGISTRY
)
DESTINATION_DEAD = Gauge(
    "sealrelay_destination_dead",
    "1 while a destination is dead (its mail waits without attempts until a probe succeeds), else 0",
    ["destination"],
    registry=REGISTRY,
)
DESTINATION_DEFERRED = Counter(
    "sealrelay_destination_deferred",
    "Recipients deferred per destination: after an attempt (attempted=yes) or without one, the destination being dead (no)",
    ["destination", "attempted"],
    registry=REGISTRY,
)


# Every series an alert or a dashboard reads exists, at 0, from the first scrape: a series that
# appears only at its first event has no earlier sample, so `increase()` and `rate()` miss that
# event (the first refused reload, the first bounce) and `absent()` cannot tell "none yet"
# from "renamed". The label values are the closed sets the code emits.
for _result in ("delivered", "defer", "bounce"):
    QUEUE_AGE.labels(_result)
    ATTEMPT_DURATION.labels(_result)
    for _tls in ("yes", "no"):
        DELIVERIES.labels(_result, _tls)
for _direction in DIRECTIONS:
    for _action in ACTIONS:
        RECEIVED.labels(_direction, _action)
for _direction in DIRECTIONS:
    DLP_UNSCANNABLE.labels(_direction)
for _path in ("loop", "pool"):
    DLP_JUDGED.labels(_path)
for _source, _outcome in (("api", "applied"), ("file-watch", "applied"), ("file-watch", "refused")):
    SWAPS.labels(_source, _outcome)
for _limit in (
    "max_connections",
    "max_connections_per_client",
    "idle_timeout",
    "max_errors",
    "max_command_repeats",
    "max_recipients",
    "max_header_size",
    "max_header_count",
):
    LIMIT_HITS.labels(_limit)
