"""Durability: a 250 is a promise. Kill -9 under load, a full disk, a damaged queue entry."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from tests.conftest import require
from tests.relay.peers import Sink, eventually, free_port, wait_for
from tests.relay.test_edge import route_to

ROOT = Path(__file__).resolve().parents[2]


def start_process(config: Path) -> subprocess.Popen:
    """`sealrelay serve CONFIG` as a real process; returns once its listener answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.app", "serve", str(config), "--log-level", "WARNING"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = int(config.read_text().split("port: ", 1)[1].split("}", 1)[0])

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"relay exited: {proc.stderr.read().decode()}")
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(ready, 30, "the relay to listen")
    return proc


def msg(n: int) -> EmailMessage:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"], m["Message-ID"] = (
        "alice@example.com",
        "bob@partner.example",
        f"n{n}",
        f"<n{n}@test>",
    )
    m.set_content(f"message number {n}\n" + "x" * 1000)
    return m


@pytest.mark.slow
async def test_kill_9_under_load_loses_no_accepted_message(write_config) -> None:
    """1,000 messages from 20 sessions into a relay that is delivering them; SIGKILL when half
    are accepted; restart: every message that got 250 arrives (duplicates are counted)."""
    with Sink() as sink:
        config = write_config(route_to(sink.port))
        port = int(config.read_text().split("port: ", 1)[1].split("}", 1)[0])
        accepted: set[str] = set()
        proc = await asyncio.to_thread(start_process, config)
        killed = asyncio.Event()

        async def sender(worker: int) -> None:
            for n in range(worker, 1000, 20):
                if killed.is_set():
                    return
                try:
                    await aiosmtplib.send(msg(n), hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
                except (aiosmtplib.SMTPException, OSError):
                    continue  # refused or cut off: no promise was made
                accepted.add(f"n{n}")
                if len(accepted) >= 500 and not killed.is_set():
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)

        await asyncio.gather(*(sender(w) for w in range(20)))
        await asyncio.to_thread(proc.wait, 10)
        assert proc.returncode == -signal.SIGKILL
        before_restart = len(sink.messages)
        proc = await asyncio.to_thread(start_process, config)
        try:

            def subjects() -> list[str]:
                return [m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode() for m in sink.messages]

            async def all_arrived() -> bool:
                return accepted <= set(subjects())

            await eventually(all_arrived, 120, "every accepted message at the sink")
            got = subjects()
            duplicates = len(got) - len(set(got))
            print(
                f"accepted {len(accepted)}, at the sink before restart {before_restart}, delivered {len(set(got))}, duplicates {duplicates}"
            )
            assert accepted <= set(got)
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 10)


async def test_full_disk_answers_4xx_and_keeps_nothing(tmp_path: Path, write_config, start_relay) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    require(done.returncode == 0, f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        config = write_config(route_to(1))
        config.write_text(config.read_text().replace("data_dir: ./var", f"data_dir: {mount}"))
        relay = await start_relay(config)
        free = os.statvfs(mount).f_bavail * os.statvfs(mount).f_frsize
        (mount / "filler").write_bytes(b"\0" * (free - 200 * 1024))  # leave too little room
        big = EmailMessage()
        big["From"], big["To"], big["Subject"] = "a@example.com", "b@example.com", "big"
        big.set_content("y" * 600_000)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await aiosmtplib.send(big, hostname="127.0.0.1", port=relay.ports()["mx"], timeout=10, start_tls=False)
        assert refused.value.code in (451, 452), refused.value
        assert await relay.queue.count() == 0
        (mount / "filler").unlink()
        _, reply = await aiosmtplib.send(
            big, hostname="127.0.0.1", port=relay.ports()["mx"], timeout=10, start_tls=False
        )
        assert "queued as" in reply  # room again: accepted again
        await relay.stop()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_damaged_entry_is_set_aside_on_restart(write_config, start_relay) -> None:
    """Three messages wait for a next hop that refuses; the relay stops; one entry's body is
    damaged on disk; a relay started again on the same data_dir (the next hop now up) sets
    that entry aside at start and delivers the other two, never the damaged one."""
    down = free_port()
    config = write_config(route_to(down))
    relay = await start_relay(config)
    port = relay.ports()["mx"]
    ids = []
    for n in range(3):
        _, reply = await aiosmtplib.send(msg(n), hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
        ids.append(reply.split()[-1])
    await relay.stop()
    damaged = ids[1]
    db = config.parent / "var" / "queue" / "queue.db"
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM messages").fetchone() == (3,)  # all still queued
    [size] = conn.execute("SELECT size FROM messages WHERE id = ?", (damaged,)).fetchone()
    conn.execute("UPDATE bodies SET data = substr(data, 1, 100) WHERE msg_id = ?", (damaged,))
    conn.commit()
    conn.close()
    with Sink() as sink:
        config.write_text(config.read_text().replace(f"port: {down}}}", f"port: {sink.port}}}"))
        relay = await start_relay(config)
        reason = f"body truncated: 100 of {size} bytes"
        assert relay.queue.recovery.set_aside == ((damaged, reason),)  # at start, before any delivery
        delivered = await sink.received(2)

        async def drained():
            return await relay.queue.count() == 0

        await eventually(drained, what="the two sound entries to be delivered")
        subjects = sorted(m.content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0] for m in delivered)
        assert subjects == [b"n0", b"n2"] and len(sink.messages) == 2
        [corrupt] = await relay.queue.corrupt()
        assert corrupt.id == damaged and corrupt.reason == reason
        assert corrupt.recipients == (("bob@partner.example", "deferred"),)


async def test_sigterm_stops_gracefully_and_flushes_the_log(write_config) -> None:
    config = write_config(route_to(free_port()))
    config.write_text(
        config.read_text().replace(
            "  data_dir: ./var\n",
            f"  data_dir: ./var\n  admin: {{address: 127.0.0.1, port: {free_port()}}}\n  metrics: {{address: 127.0.0.1, port: {free_port()}}}\n",
        )
    )
    port = int(config.read_text().split("port: ", 1)[1].split("}", 1)[0])
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.cli.app", "serve", str(config), "--log-level", "INFO"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def ready() -> bool:
        import socket

        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    await asyncio.to_thread(wait_for, ready, 30, "the relay to listen")
    _, reply = await aiosmtplib.send(msg(1), hostname="127.0.0.1", port=port, timeout=10, start_tls=False)
    queue_id = reply.split()[-1]
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0
    assert f'"event":"received","id":"{queue_id}"' in err.decode()  # the buffered decision line was written
