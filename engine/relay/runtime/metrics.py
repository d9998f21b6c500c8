"""Prometheus metrics: what an operator graphs and alerts on.

One registry per process (one relay per process). Counters are bumped where the events
happen (intake, delivery, swaps); gauges are refreshed by the service's components. Served
by `serve` on `system.metrics` (the `MetricsEndpoint` component, the admin API's HTTP stack;
loopback by default, no token: expose it only to your Prometheus).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

REGISTRY = CollectorRegistry()

RECEIVED = Counter(
    "sealrelay_messages_received",
    "Messages accepted, by direction and DLP action",
    ["direction", "action"],
    registry=REGISTRY,
)
DLP_MATCHES = Counter("sealrelay_dlp_matches", "Messages matched by each DLP policy", ["policy"], registry=REGISTRY)
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
QUEUE_RECIPIENTS = Gauge("sealrelay_queue_recipients", "Recipients in the queue by state", ["state"], registry=REGISTRY)
CERT_DAYS_LEFT = Gauge(
    "sealrelay_certificate_days_left", "Days until the relay's certificate expires", registry=REGISTRY
)


def tls_used(note: str | None) -> str:
    """'yes' when the delivery note says a TLS session carried it, else 'no'."""
    return "yes" if note and note.startswith("TLS") else "no"


LIMIT_HITS = Counter(
    "sealrelay_smtp_limit_hits",
    "SMTP sessions refused or replies refused by a system.limits limit",
    ["limit"],
    registry=REGISTRY,
)
