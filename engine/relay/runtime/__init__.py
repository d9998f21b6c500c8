"""The running relay: a provisioned config (`live`), listeners and workers (`relay`), config
changes and their record (`control`, `state`), the `serve` process and its components
(`service`), and what it reports (`metrics`, `decisionlog`, `logbuffer`)."""
