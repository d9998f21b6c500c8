"""The audit log: one JSON line per apply attempt, appended under data_dir, never rewritten.

Each record says who (a token id, never the token), when (UTC, ISO 8601), from which
version to which, the config's git commit and hash, the reason and whether a downgrade was
allowed, the summary of the diff (`+ ~ -` counts and loosenings) and the result: `applied`,
`unchanged` (the idempotent no-op), `refused` (with the error code and why) or `failed`.

Durability follows the queue's discipline: the file is opened with O_APPEND, each record
is one `write` of one line, then fsync; a record is reported written only after that. A
line torn by a crash is ended before the next record is written, and a reader skips a
line it cannot parse instead of failing.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.admin.contract import ChangeCounts
from engine.fsutil import private_dir

__all__ = ["AUDIT_FILE", "Audit", "AuditRecord", "utc_now"]

AUDIT_FILE = "audit.log"
RESULTS = ("applied", "unchanged", "refused", "failed")

log = logging.getLogger(__name__)


def utc_now() -> str:
    """Now, as the audit log writes it: `2025-01-31T12:00:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    """One apply attempt. `error`/`detail` are set when `result` is `refused` or `failed`."""

    who: str
    from_version: int
    to_version: int
    result: str  # one of RESULTS
    commit: str | None = None
    hash: str | None = None  # hash of the config running after the attempt (as GET /v1/config)
    reason: str | None = None
    allow_downgrade: bool = False
    summary: ChangeCounts = field(default_factory=ChangeCounts)
    error: str | None = None
    detail: str | None = None
    source: str = "api"  # api, file-watch or start: what asked for the change
    dirty: bool = False  # the config's files had uncommitted changes (`commit` is the HEAD they are based on)
    at: str = field(default_factory=utc_now)

    def __post_init__(self) -> None:
        if self.result not in RESULTS:
            raise ValueError(f"audit result must be one of {', '.join(RESULTS)}, not {self.result!r}")

    def to_json(self) -> dict:
        data = asdict(self)
        data["summary"] = self.summary.to_json()
        # `at` first: the log reads well with `tail`.
        return {"at": data.pop("at"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditRecord:
        data = dict(data)
        data["summary"] = ChangeCounts.from_json(data.get("summary") or {})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def when(self) -> datetime:
        return datetime.fromisoformat(self.at)


class Audit:
    """The append-only log at `path` (usually `<data_dir>/audit.log`). Blocking: call from a thread."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    @classmethod
    def in_dir(cls, data_dir: str | os.PathLike) -> Audit:
        return cls(Path(data_dir) / AUDIT_FILE)

    def append(self, record: AuditRecord) -> None:
        """Write `record` as one line and fsync it. Raises OSError if it could not be made durable."""
        line = json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"
        data = line.encode("utf-8")
        private_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # end a line torn by a crash, so this record stays whole
            written = os.write(fd, data)
            if written != len(data):  # a regular file takes it whole, short of a full disk
                raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self, limit: int = 100, since: datetime | str | None = None) -> list[AuditRecord]:
        """The last `limit` records at or after `since` (UTC if naive), oldest first."""
        if limit <= 0:
            return []
        if isinstance(since, str):
            since = datetime.fromisoformat(since)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        kept: deque[AuditRecord] = deque(maxlen=limit)
        try:
            handle = self.path.open("r", encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        with handle:
            for number, line in enumerate(handle, 1):
                record = self._parse(line, number)
                if record is None:
                    continue
                if since is not None and record.when < since:
                    continue
                kept.append(record)
        return list(kept)

    def _parse(self, line: str, number: int) -> AuditRecord | None:
        if not line.strip():
            return None
        try:
            record = AuditRecord.from_json(json.loads(line))
            record.when  # noqa: B018  (a record whose time cannot be read is unreadable)
            return record
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("%s:%d: skipping an unreadable audit record (%s)", self.path, number, exc)
            return None
