"""Logging for `serve`: lines collected in memory and written in batches.

Two decision lines per message (received, delivered) written one `write` each cost the
event loop two system calls per message. A `MemoryHandler` holds records and writes them
together when 500 have gathered, when a WARNING or worse arrives, or when the service's
flush task runs (every 0.2 s), so a log line is at most 0.2 s late. What a crash can lose is
log lines from that last 0.2 s — never mail: the queue, not the log, holds the promise.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from engine.relay.runtime.logformat import formatter

FLUSH_INTERVAL = 0.2

_buffer: logging.handlers.MemoryHandler | None = None


def install(level: str, fmt: str = "text") -> None:
    """Root logging for the relay process: buffered stderr at `level` in `fmt` (`text` or
    `json`: logformat.py), Python's warnings through it too, aiosmtpd quieter."""
    global _buffer
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter(fmt))
    logging.captureWarnings(True)
    _buffer = logging.handlers.MemoryHandler(capacity=500, flushLevel=logging.WARNING, target=stream)
    root = logging.getLogger()
    root.handlers[:] = [_buffer]
    root.setLevel(level)
    # aiosmtpd logs every SMTP command at INFO; our decision log says what matters per message.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, root.level))


def flush() -> None:
    if _buffer is not None:
        _buffer.flush()
