"""The DLP quarantine: messages held for review under `<data_dir>/quarantine/`.

Each held message is two files written atomically (temporary name, fsync, rename, fsync of
the directory): `<id>.eml` (the content as received) and `<id>.json` (envelope and why).
Plain files so an operator can inspect them, and so `sealrelay quarantine` works whether
or not the relay runs. `release` hands the message back to the queue for delivery.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engine.fsutil import fsync_dir, private_dir, write_atomic


@dataclass(frozen=True)
class Held:
    id: str
    sender: str
    recipients: tuple[str, ...]
    policies: tuple[str, ...]
    reason: str
    held_at: float
    size: int
    subject: str = ""


class NotHeld(KeyError):
    def __str__(self) -> str:
        return f"not in the quarantine: {self.args[0]}"


class Quarantine:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / "quarantine"

    def put(self, sender: str, recipients, content: bytes, policies, reason: str, subject: str = "") -> str:
        if not self.dir.exists():
            private_dir(self.dir)
            fsync_dir(self.dir.parent)  # the new directory itself must survive a power loss
        held_id = secrets.token_hex(6)
        record = Held(held_id, sender, tuple(recipients), tuple(policies), reason, time.time(), len(content), subject)
        write_atomic(self.dir / f"{held_id}.eml", content)
        try:
            write_atomic(self.dir / f"{held_id}.json", json.dumps(asdict(record)).encode())
        except BaseException:
            (self.dir / f"{held_id}.eml").unlink(missing_ok=True)
            raise
        return held_id

    def list(self) -> list[Held]:
        if not self.dir.exists():
            return []
        held = [self._record(p) for p in self.dir.glob("*.json")]
        return sorted((h for h in held if h), key=lambda h: h.held_at)

    def get(self, held_id: str) -> tuple[Held, bytes]:
        record = self._record(self.dir / f"{held_id}.json") if _safe(held_id) else None
        body = self.dir / f"{held_id}.eml"
        if record is None or not body.exists():
            raise NotHeld(held_id)
        return record, body.read_bytes()

    def delete(self, held_id: str) -> None:
        self.get(held_id)
        (self.dir / f"{held_id}.json").unlink()
        (self.dir / f"{held_id}.eml").unlink()
        fsync_dir(self.dir)

    def _record(self, path: Path) -> Held | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Held(**{**data, "recipients": tuple(data["recipients"]), "policies": tuple(data["policies"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None


def _safe(held_id: str) -> bool:
    return held_id.isalnum() and len(held_id) <= 64
