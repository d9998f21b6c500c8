"""How `serve` writes a log record: `text` for a terminal, `json` for a log pipeline.

`--log-format json` writes every record as one JSON object on one line, whatever logged it
(the relay, uvicorn, aiosmtpd, a Python warning, the CLI's own start and stop lines):

    {"ts":"2026-01-05T10:00:00.123Z","level":"INFO","logger":"engine.relay.runtime.service","message":"config version 3 serving (start: the config files)"}
    {"ts":"2026-01-05T10:00:01.456Z","level":"INFO","logger":"sealrelay.decisions","event":"received","id":"c8034825a456","config_version":3,...}
    {"ts":"...","level":"ERROR","logger":"engine.relay.runtime.service","message":"config reload refused ...","exc":"Traceback (most recent call last):\\n..."}

A decision (`decisionlog.emit`) puts its fields at the top level beside `ts`, `level` and
`logger`, so a pipeline filters on `event` without parsing a string; other records carry
`message`, and `exc` when they have a traceback. Text is the classic `time LEVEL logger:
message` line; a decision's message there is its JSON.
"""

from __future__ import annotations

import json
import logging
import time

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FORMATS = ("text", "json")


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line (newlines inside values are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        doc: dict = {"ts": f"{seconds}.{int(record.msecs):03d}Z", "level": record.levelname, "logger": record.name}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update((k, v) for k, v in fields.items() if k not in doc)
        else:
            doc["message"] = record.getMessage()
        extra = getattr(record, "detail", None)
        if extra is not None:
            doc["detail"] = extra
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter for `--log-format` (`text` or `json`)."""
    if fmt == "json":
        return JsonLines()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r}: use {' or '.join(FORMATS)}")
