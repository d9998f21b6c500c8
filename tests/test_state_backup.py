"""`sealrelay state backup | restore`: an online snapshot of data_dir taken while a real relay
(`sealrelay serve`, the portal on) accepts mail over SMTP, restored into a fresh data_dir
whose relay then delivers what was queued; damaged backups refused before a byte is written."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli.app import app
from engine.relay.queue import Queue, store
from tests.portal.harness import PortalRelay
from tests.relay.peers import wait_for

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
  data_dir: ./var
"""


def cli(*args: str, cwd: Path = ROOT, umask: int | None = None) -> subprocess.CompletedProcess:
    """`sealrelay ...` as an operator runs it: its own process."""
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )


def files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def modes(directory: Path) -> set[int]:
    return {p.stat().st_mode & 0o777 for p in [directory, *directory.rglob("*")]}


# -- a data_dir built by hand ------------------------------------------------------------------


def _data_dir(tmp_path: Path) -> Path:
    """A data_dir with every kind of state, its queue open (WAL not checkpointed) by the caller."""
    var = tmp_path / "var"
    for rel, data in {
        "state.json": b'{"version": 4}',
        "running.json": b'{"version": 1}',
        "applied.json": b'{"version": 1}',
        "admin.token": b"sr_token\n",
        "audit.log": b'{"result": "applied"}\n',
        "tls/cert.pem": b"-----BEGIN CERTIFICATE-----\n",
        "tls/key.pem": b"-----BEGIN PRIVATE KEY-----\n",
        "quarantine/0a1b2c3d4e5f.eml": b"Subject: held\r\n\r\ncard\r\n",
        "quarantine/0a1b2c3d4e5f.json": b'{"id": "0a1b2c3d4e5f"}',
        "portal/portal.key": b"a2V5\n",
        "portal/blobs/ab/abcdef": b"\x00sealed\xff",
        "queue/corrupt/queue-20261130T000000Z-abcdef.db": store.SCHEMA[0].encode(),  # set aside: as it is
        "dlp/hs-0123.db": b"compiled patterns",
        ".state.json.x1y2": b"half written",
    }.items():
        (var / rel).parent.mkdir(parents=True, exist_ok=True)
        (var / rel).write_bytes(data)
    portal = sqlite3.connect(var / "portal" / "portal.db", isolation_level=None)
    portal.execute("PRAGMA journal_mode = WAL")
    portal.execute("CREATE TABLE messages (id TEXT PRIMARY KEY)")
    portal.execute("INSERT INTO messages VALUES ('abcdef')")
    portal.close()
    return var


def test_backup_holds_every_piece_of_state_and_restores_it_whole(tmp_path: Path) -> None:
    var = _data_dir(tmp_path)
    (tmp_path / "relay.yaml").write_text(CONFIG)
    bodies = [f"Subject: m{i}\r\n\r\nbody {i}\r\n".encode() for i in range(3)]
    with Queue.open(var / "queue") as owner:  # a relay's queue: commits sit in the WAL

        async def fill() -> list[str]:
            return [await owner.enqueue("a@x.net", ["b@y.net"], body, meta={}) for body in bodies]

        ids = asyncio.run(fill())
        shutil.copy(var / "queue" / "queue.db", tmp_path / "naive.db")
        backup = tmp_path / "backups" / "state.tar.gz"
        backup.parent.mkdir()
        made = cli("state", "backup", str(backup), "--config", str(tmp_path / "relay.yaml"), umask=0o022)
    assert made.returncode == 0, made.stderr
    assert backup.stat().st_mode & 0o777 == 0o600  # owner-only whatever the umask
    assert made.stdout.startswith(f"backup of {var} written to {backup} (0600): 14 files, ")
    assert "  queue: 2 file(s), snapshot of queue/queue.db (user_version 2), 3 message(s) queued\n" in made.stdout
    assert "  not included: dlp/ (a cache of compiled DLP patterns, rebuilt at start)\n" in made.stdout

    with tarfile.open(backup) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
        members = {m["path"]: m for m in manifest["members"]}
        for path, member in members.items():
            data = tar.extractfile(f"data/{path}").read()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (member["size"], member["sha256"]), path
    assert names[-1] == "manifest.json" and len(names) == 15
    order = [n.removeprefix("data/") for n in names[:-1]]
    assert order[:3] == ["state.json", "running.json", "applied.json"]  # state before what it names
    assert order.index("quarantine/0a1b2c3d4e5f.eml") < order.index("queue/queue.db") < order.index("portal/portal.db")
    assert order.index("portal/portal.db") < order.index("portal/blobs/ab/abcdef")  # rows before their blobs
    assert set(order) == {
        "state.json",
        "running.json",
        "applied.json",
        "admin.token",
        "audit.log",
        "tls/cert.pem",
        "tls/key.pem",
        "quarantine/0a1b2c3d4e5f.eml",
        "quarantine/0a1b2c3d4e5f.json",
        "queue/queue.db",
        "queue/corrupt/queue-20261130T000000Z-abcdef.db",
        "portal/portal.db",
        "portal/portal.key",
        "portal/blobs/ab/abcdef",
    }  # fmt: skip  (no -wal/-shm, no queue.lock, no dlp cache, no temporary file)
    assert (manifest["format"], manifest["format_version"], manifest["data_dir"]) == (
        "sealrelay-state-backup", 1, str(var)
    )  # fmt: skip
    assert manifest["relay_version"] and manifest["created_at"].endswith("Z") and manifest["queue_entries"] == 3
    assert members["queue/queue.db"]["kind"] == "sqlite" and members["queue/queue.db"]["user_version"] == 2
    assert members["queue/corrupt/queue-20261130T000000Z-abcdef.db"]["kind"] == "file"
    assert members["tls/key.pem"]["kind"] == "file"
    naive = sqlite3.connect(tmp_path / "naive.db")  # what copying the file alone would have kept
    with pytest.raises(sqlite3.OperationalError, match="no such table: messages"):
        naive.execute("SELECT count(*) FROM messages")

    fresh = tmp_path / "elsewhere" / "var"
    restored = cli("state", "restore", str(backup), "--data-dir", str(fresh))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith(f"restored 14 files into {fresh} (backup of {var}, ")
    before, after = files(var), files(fresh)
    for rel in set(after) - {"queue/queue.db", "portal/portal.db"}:
        assert after[rel] == before[rel], rel
    assert set(after) == set(order)
    assert modes(fresh) <= {0o700, 0o600}

    async def read_back() -> list[bytes]:
        with Queue.open(fresh / "queue") as queue:
            assert queue.recovery.clean
            assert [e.id for e in await queue.list()] == ids
            return [await queue.body(i) for i in ids]

    assert asyncio.run(read_back()) == bodies
    portal = sqlite3.connect(fresh / "portal" / "portal.db")
    assert portal.execute("SELECT id FROM messages").fetchall() == [("abcdef",)]


def test_what_is_not_in_data_dir_is_named_and_a_missing_data_dir_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U=\n")
    relay = PortalRelay(
        directory=tmp_path, database="postgresql://relay@127.0.0.1:1/portal", master_key=tmp_path / "key"
    )
    missing = CliRunner().invoke(app, ["state", "backup", str(tmp_path / "b.tar.gz"), "-c", str(relay.config)])
    assert missing.exit_code == 66 and not (tmp_path / "b.tar.gz").exists()
    assert missing.stderr == f"error: data_dir {tmp_path / 'var'} is not a directory: nothing to back up\n"
    (tmp_path / "var").mkdir()
    made = CliRunner().invoke(app, ["state", "backup", str(tmp_path / "b.tar.gz"), "-c", str(relay.config)])
    assert made.exit_code == 0, made.output
    assert made.stdout.endswith(
        "  not included: the portal store is in PostgreSQL (encryption.secure_portal.database): back it up with pg_dump\n"
        "  not included: the portal key is outside data_dir (encryption.secure_portal.master_key): keep it with your "
        "secrets\n"
    )
    as_json = CliRunner().invoke(
        app, ["state", "backup", str(tmp_path / "b.tar.gz"), "-c", str(relay.config), "--format", "json"]
    )
    assert len(json.loads(as_json.stdout)["notes"]) == 2 and json.loads(as_json.stdout)["members"] == []


def _tampered(source: Path, target: Path, edit) -> None:
    """`source` rewritten as a valid archive with `edit(name, data)` applied to each member."""
    with tarfile.open(source) as tar, tarfile.open(target, "w:gz") as out:
        for info in tar.getmembers():
            data = edit(info.name, tar.extractfile(info).read())
            if data is None:
                continue
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _flip(name: str, data: bytes, which: str = "data/queue/queue.db") -> bytes:
    if name != which:
        return data
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _unsafe(name: str, data: bytes) -> bytes:
    if name != "manifest.json":
        return data
    manifest = json.loads(data)
    manifest["members"][0]["path"] = "../outside"
    return json.dumps(manifest).encode()


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("member", "is damaged: queue/queue.db does not match its SHA-256 in the manifest"),
        ("extra", "is damaged: data/planted is not in its manifest"),
        ("missing", "is damaged: tls/key.pem is missing"),
        ("unsafe", "is damaged: unsafe path '../outside' in its manifest"),
        ("truncated", "cannot be read: "),
        ("not-a-backup", "cannot be read: "),
    ],
)
def test_a_damaged_backup_is_refused_and_nothing_is_written(tmp_path: Path, damage: str, says: str) -> None:
    var = _data_dir(tmp_path)
    (tmp_path / "relay.yaml").write_text(CONFIG)
    Queue.open(var / "queue").close()
    good = tmp_path / "good.tar.gz"
    assert CliRunner().invoke(app, ["state", "backup", str(good), "-c", str(tmp_path / "relay.yaml")]).exit_code == 0
    bad = tmp_path / "bad.tar.gz"
    if damage == "member":
        _tampered(good, bad, _flip)
    elif damage == "extra":
        _tampered(good, bad, lambda name, data: data)
        with tarfile.open(bad, "r:gz") as tar:
            kept = [(i, tar.extractfile(i).read()) for i in tar.getmembers()]
        with tarfile.open(bad, "w:gz") as tar:
            for info, data in kept:
                tar.addfile(info, io.BytesIO(data))
            info = tarfile.TarInfo("data/planted")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    elif damage == "missing":
        _tampered(good, bad, lambda name, data: None if name == "data/tls/key.pem" else data)
    elif damage == "unsafe":
        _tampered(good, bad, _unsafe)
    elif damage == "truncated":
        bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    else:
        bad.write_bytes(gzip.compress(b"just some text\n"))
    existing = tmp_path / "existing"
    (existing / "queue").mkdir(parents=True)
    (existing / "keep.txt").write_bytes(b"mine")
    for target in (tmp_path / "fresh" / "var", existing):
        before = sorted(tmp_path.rglob("*"))
        result = CliRunner().invoke(app, ["state", "restore", str(bad), "--data-dir", str(target)])
        assert result.exit_code == 65, result.output
        assert result.stderr.startswith(f"error: backup {bad} {says}") and result.stderr.count("\n") == 1
        assert result.stdout == ""
        assert sorted(tmp_path.rglob("*")) == before  # nothing written, nothing moved, no staging left
    assert files(existing) == {"keep.txt": b"mine"}


# -- with `sealrelay serve` running ------------------------------------------------------------


class Writer(threading.Thread):
    """Sends plain mail to the relay over SMTP until stopped; records when each was accepted."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.acked: list[tuple[str, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=10) as client:
                n = 0
                while not self.stop.is_set():
                    msg = EmailMessage()
                    subject = f"load-{n}"
                    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "x@partner.test", subject
                    msg.set_content(f"message {n}\n")
                    client.send_message(msg)
                    self.acked.append((subject, time.monotonic()))
                    n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def count_after(self, when: float) -> int:
        return sum(1 for _, at in list(self.acked) if at > when)


def _subjects_queued(data_dir: Path) -> dict[str, str]:
    """Subject -> queue id of everything queued in `data_dir` (the queue opened as an operator)."""

    async def read() -> dict[str, str]:
        with Queue.open(data_dir / "queue", shared=True) as queue:
            out = {}
            for entry in await queue.list(10_000):
                msg = message_from_bytes(await queue.body(entry.id))
                out[str(msg["subject"])] = entry.id
            return out

    return asyncio.run(read())


def test_an_online_backup_under_load_restores_into_a_relay_that_delivers_it(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    relay = PortalRelay(directory=tmp_path / "one")  # its sinks stay down: outside mail waits in the queue
    one_var = relay.dir / "var"
    writer = None
    try:
        relay.start()
        relay.send("alice@example.com", ["pat@partner.test"], "contract", "confidential terms\n")  # to the portal
        wait_for(lambda: list((one_var / "portal" / "blobs").glob("*/*")), 30, "the portal to store the message")
        writer = Writer(relay.ports["smtp"])
        writer.start()
        wait_for(lambda: len(writer.acked) >= 5 or writer.error, 30, "mail accepted before the backup")
        backup = tmp_path / "state.tar.gz"
        started = time.monotonic()
        made = cli("state", "backup", str(backup), "--config", str(relay.config))
        finished = time.monotonic()
        assert made.returncode == 0, made.stderr
        wait_for(lambda: writer.count_after(finished) >= 3 or writer.error, 30, "mail accepted after the backup")
        assert writer.error is None, writer.error
        accepted_before = {s for s, at in writer.acked if at < started}
        accepted_during = [s for s, at in writer.acked if started <= at <= finished]
        assert accepted_during, "the relay accepted nothing while the backup ran"

        refused = cli("state", "restore", str(backup), "--config", str(relay.config))
        assert refused.returncode == 1 and refused.stdout == ""
        assert refused.stderr == (
            f"error: a relay is running on {one_var.resolve()} (it holds {one_var.resolve()}/queue/queue.lock): "
            "stop it first; nothing restored\n"
        )
        assert not [p for p in relay.dir.iterdir() if "restore" in p.name]
        writer.stop.set()
        writer.join(15)
        relay.send("alice@example.com", ["x@partner.test"], "after the refusal", "still serving\n")
    finally:
        if writer is not None:
            writer.stop.set()
        relay.stop()
    portal_one = files(one_var / "portal")

    two = tmp_path / "two"  # a fresh machine: the same config file, an empty directory
    two.mkdir()
    shutil.copy(relay.config, two / "relay.yaml")
    restored = cli("state", "restore", str(backup), "--config", str(two / "relay.yaml"))
    assert restored.returncode == 0, restored.stderr
    two_var = two / "var"
    queued = _subjects_queued(two_var)
    loads = {s for s in queued if s.startswith("load-")}
    assert accepted_before <= loads <= {s for s, _ in writer.acked}  # nothing acknowledged before is missing
    assert "after the refusal" not in queued and len(queued) > len(loads)  # and the portal's notification
    assert {p: d for p, d in files(two_var / "portal").items() if p != "portal.db"} == {
        p: d for p, d in portal_one.items() if p != "portal.db" and not p.endswith(("-wal", "-shm"))
    }  # the portal key and every blob
    rows = sqlite3.connect(two_var / "portal" / "portal.db").execute("SELECT count(*) FROM messages").fetchone()
    assert rows == (1,)

    relay.dir, relay.config, relay.log = two, two / "relay.yaml", two / "serve.log"
    with relay.outside, relay.internal:
        relay.start()
        try:
            wait_for(
                lambda: {str(message_from_bytes(m.content)["subject"]) for m in relay.outside.messages} >= set(queued),
                60,
                f"the restored relay to deliver the {len(queued)} queued messages\n{relay.logs()[-3000:]}",
            )
            got = [str(message_from_bytes(m.content)["subject"]) for m in relay.outside.messages]
            assert sorted(got) == sorted(queued)  # each once, nothing that was not in the backup

            def empty() -> bool:
                listed = cli("queue", "list", "--config", str(relay.config), "--format", "json")
                return listed.returncode == 0 and json.loads(listed.stdout) == []

            wait_for(empty, 30, "the restored queue to empty")
        finally:
            relay.stop()
