"""One structured log line per message decision and per delivery outcome (JSON)."""

from __future__ import annotations

import json
import logging

log = logging.getLogger("sealrelay.decisions")


def emit(event: str, **fields) -> None:
    """Log `{"event": ..., **fields}` as one JSON line on the `sealrelay.decisions` logger."""
    if log.isEnabledFor(logging.INFO):
        payload = {"event": event, **fields}  # `--log-format json` writes these at the top level
        log.info(json.dumps(payload, separators=(",", ":"), default=str), extra={"fields": payload})


def log_decision(event: str, queue_id: str, version: int, message, decision) -> None:
    emit(
        event,
        id=queue_id,
        config_version=version,
        direction=decision.direction,
        policies=list(decision.policies),
        action=decision.action,
        would=decision.would,
        method=decision.method,
        rules=[f"{h.policy}/{h.rule}" for h in decision.verdict.hits] if decision.verdict else [],
        sender=message.sender,
        recipients=len(message.recipients),
        size=len(message.content),
        peer=message.peer_ip,
        tls_in=str(message.tls),
    )
