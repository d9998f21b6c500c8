"""Everything the relay creates is its owner's alone: directories 0700, files 0600.

`serve` sets the umask; the code paths that create directories and the queue database set
the modes themselves too, so a relay started another way (tests, `Service` in a process
with a loose umask) does not leave its queue or keys readable by others.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from engine.certificates.store import ensure_certificate
from engine.fsutil import private_dir
from engine.relay.queue import Queue
from tests.relay.peers import Sink, eventually, free_port

ROOT = Path(__file__).resolve().parents[2]


def walk(top: Path) -> Iterator[Path]:
    yield top
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            yield Path(directory) / name


def loose(top: Path) -> list[str]:
    """Files and directories under `top` (itself included) that group or others may use."""
    return [
        f"{p.relative_to(top.parent)} {stat.filemode(p.lstat().st_mode)}"
        for p in walk(top)
        if p.lstat().st_mode & 0o077
    ]


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask of a careless shell (022): what the code must not rely on."""
    old = os.umask(0o022)
    yield
    os.umask(old)


async def test_serve_on_a_fresh_data_dir_creates_nothing_others_can_read(tmp_path: Path) -> None:
    smtp = free_port()
    data_dir = tmp_path / "state" / "var"  # two levels that do not exist yet
    with Sink() as sink:
        config = tmp_path / "relay.yaml"
        config.write_text(
            textwrap.dedent(f"""\
                version: 1
                system:
                  fqdn: relay.test.example
                  internal_domains: [example.com]
                  listeners: [{{name: mx, address: 127.0.0.1, port: {smtp}}}]
                  admin: {{address: 127.0.0.1, port: {free_port()}}}
                  metrics: {{address: 127.0.0.1, port: {free_port()}}}
                  data_dir: {data_dir}
                ip_groups:
                  internal_servers: [127.0.0.0/8]
                routes:
                  - {{name: sink, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink.port}}}, tls: none}}
                """)
        )
        # started from a shell with a loose umask: `serve` must tighten it itself
        proc = subprocess.Popen(
            [
                "sh",
                "-c",
                f'umask 022 && exec "{sys.executable}" -m engine.cli.app serve "{config}" --log-level WARNING',
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:

            async def listening() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"relay exited: {proc.stderr.read().decode()}")
                with socket.socket() as s:
                    return s.connect_ex(("127.0.0.1", smtp)) == 0

            await eventually(listening, 30, "the relay to listen")

            async def token_made() -> bool:  # the admin API starts just after the listeners
                return (data_dir / "admin.token").exists()

            await eventually(token_made, 30, "the admin API to start")
            await aiosmtplib.send(
                "Subject: hi\r\n\r\nhello\r\n",
                sender="a@example.com",
                recipients=["b@example.com"],
                hostname="127.0.0.1",
                port=smtp,
                start_tls=False,
                timeout=10,
            )
            await sink.received(1)
            created = {p.name for p in walk(data_dir)}
            assert {"tls", "cert.pem", "key.pem", "queue", "queue.db", "queue.db-wal", "queue.db-shm"} <= created
            assert {"admin.token", "audit.log", "state.json", "running.json"} <= created
            assert loose(tmp_path / "state") == []
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert loose(tmp_path / "state") == []  # nothing looser written at shutdown


def test_the_queue_is_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    queue = Queue.open(tmp_path / "var" / "queue")
    try:
        assert {p.name for p in walk(tmp_path / "var")} >= {"queue.db", "queue.db-wal", "queue.db-shm"}
        assert loose(tmp_path / "var") == []
    finally:
        queue.close()


def test_the_certificate_is_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    private_dir(tmp_path / "var")
    ensure_certificate(tmp_path / "var", "relay.test.example")
    assert {p.name for p in walk(tmp_path / "var")} == {"var", "tls", "cert.pem", "key.pem"}
    assert loose(tmp_path / "var") == []


def test_private_dir_makes_missing_parents_private_and_leaves_existing_ones(tmp_path: Path, loose_umask: None) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    private_dir(tmp_path / "shared" / "a" / "b")
    assert stat.S_IMODE((tmp_path / "shared").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "shared" / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "shared" / "a" / "b").stat().st_mode) == 0o700
    private_dir(tmp_path / "shared" / "a" / "b")  # idempotent


def test_directories_made_in_process_are_owner_only_under_a_loose_umask(tmp_path: Path) -> None:
    """Not only `serve` (which sets umask 077): provisioning, the audit log, the token and the
    quarantine make owner-only directories whatever the umask of the process."""
    from engine.admin.audit import Audit, AuditRecord
    from engine.admin.token import ensure_token
    from engine.config.load import load_config
    from engine.relay.queue.quarantine import Quarantine
    from engine.relay.runtime.live import provision

    config = tmp_path / "relay.yaml"
    config.write_text(
        "version: 1\nsystem:\n  fqdn: relay.test.example\n  internal_domains: [example.com]\n"
        "  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]\n  data_dir: ./a/b/var\n"
    )
    old = os.umask(0o022)
    try:
        live = provision(load_config(config).config, base_dir=tmp_path, version=1)
        Audit.in_dir(tmp_path / "x" / "audit").append(AuditRecord("start", 0, 1, "applied"))
        ensure_token(tmp_path / "y" / "token-dir")
        Quarantine(tmp_path / "z" / "data").put("a@example.com", ["b@x.test"], b"x\r\n", (), "test")
    finally:
        os.umask(old)
    for made in (tmp_path / "a", tmp_path / "a" / "b", live.data_dir, tmp_path / "x", tmp_path / "y", tmp_path / "z"):
        assert stat.S_IMODE(made.stat().st_mode) == 0o700, made
    for path in tmp_path.rglob("*"):
        if path != config:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
