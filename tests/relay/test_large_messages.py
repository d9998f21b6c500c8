"""Large messages cross the relay held once: spooled as they arrive, queued and sent in pieces.

Byte-exact delivery of messages whose dot-stuffed lines straddle the pieces the relay reads
and writes in; the refusals (size, line length) still drained to the dot with the session
going on; and the memory each stage may take for a 20 MB body (tracemalloc, deterministic).
The whole relay's peak RSS with ten 40 MB messages in flight is bench/bench_large.py's.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tracemalloc
from pathlib import Path

import aiosmtplib
import pytest

from engine.relay.delivery.transfer import wire_pieces
from engine.relay.queue import Queue
from engine.relay.smtp.protocol import SPOOL_AFTER
from tests.relay.peers import Sink, eventually, free_port
from tests.relay.test_edge import raw_session, route_to

MB = 1_000_000
ROOT = Path(__file__).resolve().parents[2]


RAW_SENDER = """
import socket, sys
port, path = int(sys.argv[1]), sys.argv[2]
with socket.create_connection(("127.0.0.1", port)) as s:
    f = s.makefile("rb")
    def reply():
        while (line := f.readline())[3:4] == b"-":
            pass
        return line
    reply()
    for command in (b"EHLO big\\r\\n", b"MAIL FROM:<a@example.com>\\r\\n", b"RCPT TO:<b@example.com>\\r\\n", b"DATA\\r\\n"):
        s.sendall(command)
        reply()
    with open(path, "rb") as wire:
        s.sendfile(wire)
    sys.exit(0 if reply().startswith(b"250") else 1)
"""


def dotted_body(size: int) -> bytes:
    """CRLF lines of varying length, many starting with a dot (stuffed on the wire), one a lone dot."""
    lines, total, n = [], 0, 0
    while total < size:
        n += 1
        line = (b"." * (n % 3) + os.urandom(20).hex().encode() * (1 + n % 7))[: 1 + n % 990]
        lines.append(line)
        total += len(line) + 2
    lines[len(lines) // 2] = b"."
    return b"\r\n".join(lines) + b"\r\n"


def message(body: bytes) -> bytes:
    return b"From: a@example.com\r\nTo: b@example.com\r\nSubject: large\r\n\r\n" + body


@pytest.mark.parametrize("size", [SPOOL_AFTER // 2, 3 * SPOOL_AFTER])
async def test_a_large_message_arrives_byte_exact(write_config, start_relay, size: int) -> None:
    content = message(dotted_body(size))
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False)
        async with client:
            await client.sendmail("a@example.com", ["b@example.com"], content)
        (received,) = await sink.received(1, timeout=30)
    delivered = received.content
    assert delivered.startswith(b"Received: from ")  # the relay's own header line, then what was sent
    assert delivered[delivered.index(b"From: a@example.com") :] == content
    spool = relay.live.data_dir / "spool"
    if size > SPOOL_AFTER:  # spooled while it arrived: an unlinked file in an owner-only directory
        assert (spool.stat().st_mode & 0o777, list(spool.iterdir())) == (0o700, [])
    else:
        assert not spool.exists()


async def test_a_message_sent_a_few_bytes_at_a_time(write_config, start_relay) -> None:
    """The terminator and stuffed dots split across reads: `.` then `\\r\\n` in separate segments."""
    content = message(b".one\r\n..two\r\nthree\r\n")
    wire = content.replace(b"\r\n.", b"\r\n..") + b".\r\n"
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.ports()["mx"])
        await reader.readline()
        for command in (b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"):
            writer.write(command)
            while (await reader.readline())[3:4] == b"-":  # a multi-line reply: read to its last line
                pass
        for at in range(0, len(wire), 3):
            writer.write(wire[at : at + 3])
            await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 10)
        writer.write(b"QUIT\r\n")
        writer.close()
        (received,) = await sink.received(1)
    assert reply.startswith(b"250 "), reply
    assert received.content.endswith(b"\r\n\r\n.one\r\n..two\r\nthree\r\n")


async def test_refusals_drain_to_the_dot_and_the_session_goes_on(write_config, start_relay) -> None:
    too_long = message(b"x" * 100 + b"\r\n" + b"y" * 1001 + b"\r\n" + b"z\r\n" * 400_000)
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port), system="  message_size_limit: 2MB\n"))
        port = relay.ports()["mx"]
        envelope = [b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n"]
        replies = await raw_session(
            port,
            [
                *envelope,
                too_long + b".\r\n",
                b"RSET\r\n",
                *envelope[1:],
                message(b"w" * 998 + b"\r\n") * 3000 + b".\r\n",  # 3 MB of good lines: over the limit
                b"RSET\r\n",
                *envelope[1:],
                message(b"fine\r\n") + b".\r\n",
            ],
        )
        await sink.received(1)
    assert replies[5].startswith(b"500 5.5.2 Line too long"), replies[5]
    assert replies[10].startswith(b"552 5.3.4"), replies[10]
    assert replies[-1].startswith(b"250 "), replies[-1]

    async def emptied() -> bool:  # the sink has it before the relay records the delivery
        return await relay.queue.count() == 0

    await eventually(emptied, what="the delivered message to leave the queue")  # only the last one was queued


def _peak(step) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = step()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


async def test_queue_writes_and_reads_a_large_body_without_extra_copies(tmp_path) -> None:
    """What Python allocates (tracemalloc does not see SQLite's own buffers: bench_large's
    RSS does): the body is written from the caller's bytes and read into one object."""
    body = os.urandom(20 * MB)
    queue = Queue.open(tmp_path / "queue")
    try:
        tracemalloc.start()
        try:
            msg_id = await queue.enqueue("a@example.com", ["b@example.com"], body, meta={}, prefix=b"Received: x\r\n")
            written = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        tracemalloc.start()
        try:
            stored = await queue.body(msg_id)
            read = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        queue.close()
    assert stored == b"Received: x\r\n" + body
    assert written < 4 * MB  # no joined prefix + body
    assert read < 21 * MB  # the body itself, once


def test_sending_pieces_are_views_of_the_body() -> None:
    body = dotted_body(5 * MB)
    expected = (b"." + body if body.startswith(b".") else body).replace(b"\r\n.", b"\r\n..")

    def send() -> bytes:  # as the transport takes them: one piece at a time
        sha = hashlib.sha256()
        for piece in wire_pieces(body):
            sha.update(piece)
        return sha.digest()

    digest, peak = _peak(send)
    assert digest == hashlib.sha256(expected).digest()
    assert peak < 2 * MB  # one stuffed piece at a time, not a stuffed copy of the whole
    assert b"".join(bytes(p) for p in wire_pieces(b"no final break")) == b"no final break\r\n"


async def test_other_sessions_stay_responsive_while_a_large_message_is_taken(
    write_config, start_relay, tmp_path
) -> None:
    """Issue 12: no message holds the event loop for more than a few milliseconds. While a
    30 MB message is received, scanned by DLP, queued and delivered, another session's NOOPs are
    answered within 100 ms each. The sender and the next hop are other processes, so only
    the relay's own work shares this loop."""
    content = message(b"".join(os.urandom(57).hex().encode()[:76] + b"\r\n" for _ in range(400_000)))
    wire = tmp_path / "wire.eml"
    wire.write_bytes(content + b".\r\n")  # no line starts with a dot: the wire form as it is
    sink_port = free_port()
    sink = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "sinks.py"), "--port", str(sink_port), "--expect", "1", "--timeout", "60"
    )
    try:
        await eventually(lambda: _listening(sink_port), 15, "the sink to listen")
        system = "  message_size_limit: 100MB\n  limits: {max_command_repeats: 100000}\n"
        dlp = (
            "dlp:\n  action_plans: [{name: enc, email: encrypt}]\n  policies:\n    - name: cards\n"
            "      rules: [{name: r, conditions: {classifier: credit_card}, action_plan: enc}]\n"
        )
        relay = await start_relay(write_config(route_to(sink_port) + dlp, system=system))
        port = relay.ports()["mx"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readline()
        latencies: list[float] = []
        done = asyncio.Event()

        async def noops() -> None:
            loop = asyncio.get_running_loop()
            while not done.is_set():
                started = loop.time()
                writer.write(b"NOOP\r\n")
                assert (await reader.readline()).startswith(b"250")
                latencies.append(loop.time() - started)
                await asyncio.sleep(0.005)  # a NOOP every 5 ms: the probe's pace, not a wait for a state

        probe = asyncio.create_task(noops())
        sender = await asyncio.create_subprocess_exec(sys.executable, "-c", RAW_SENDER, str(port), str(wire))
        assert await asyncio.wait_for(sender.wait(), 60) == 0
        assert await asyncio.wait_for(sink.wait(), 60) == 0  # the sink exits 0 once the message arrived
        done.set()
        await probe
        writer.close()
    finally:
        if sink.returncode is None:
            sink.kill()
            await sink.wait()
    assert len(latencies) > 20
    assert max(latencies) < 0.1, f"slowest NOOP {max(latencies) * 1000:.0f} ms"


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True
