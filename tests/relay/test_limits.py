"""`system.limits`: hostile input costs a bounded amount, gets a proper reply, and spares others.

Every test speaks real SMTP over loopback. Where a limit is hit, another session's NOOP is
timed before and after: it must still answer promptly (within 100 ms, or five times its own
baseline on a loaded machine). Waits are on replies and closes, with timeouts; the only
sleeps are a client's own pace.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiosmtplib
import pytest

from engine.config.load import load_config
from engine.relay.runtime.relay import load_live
from engine.relay.smtp.edge import postmaster
from tests.relay.peers import RawSession as Session
from tests.relay.peers import Sink
from tests.relay.test_edge import route_to


async def greeted(port: int, source: str = "127.0.0.1") -> Session:
    session = await Session.open(port, source)
    assert (await session.reply()).startswith(b"220 "), "the greeting"
    return session


async def bystander(port: int) -> tuple[Session, float]:
    """A session from another address, and its NOOP round trip before anything happens."""
    session = await greeted(port, "127.0.0.2")
    await session.command(b"EHLO bystander.test")
    baseline = min([await session.noop_seconds() for _ in range(3)])
    return session, baseline


async def assert_unaffected(session: Session, baseline: float) -> None:
    took = await session.noop_seconds()
    assert took < max(0.1, 5 * baseline), f"a NOOP in another session took {took * 1000:.1f} ms"


def limits(**values: object) -> str:
    return "  limits: {" + ", ".join(f"{k}: {v}" for k, v in values.items()) + "}\n"


# -- connections ---------------------------------------------------------------------------


async def test_the_default_per_client_limit_refuses_the_51st_connection(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1)))
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)
    sessions = [await greeted(port) for _ in range(50)]
    before = limit_hits("max_connections_per_client")
    extra = await Session.open(port)
    assert await extra.reply() == b"421 4.7.0 relay.test.example Error: too many connections from 127.0.0.1\r\n"
    assert await extra.closed()
    assert limit_hits("max_connections_per_client") == before + 1  # counted for the operator
    await assert_unaffected(other, baseline)
    for session in sessions:  # the first 50 are served
        assert (await session.command(b"NOOP")).startswith(b"250")
    sessions.pop().close()
    await asyncio.wait_for(_admitted(port), 10)  # a slot freed is a slot to use
    for session in (*sessions, other):
        session.close()


def limit_hits(limit: str) -> float:
    """`sealrelay_smtp_limit_hits_total{limit=...}` as /metrics would show it."""
    from engine.relay.runtime.metrics import REGISTRY

    return REGISTRY.get_sample_value("sealrelay_smtp_limit_hits_total", {"limit": limit}) or 0.0


async def _admitted(port: int) -> None:
    while True:
        session = await Session.open(port)
        first = await session.reply()
        session.close()
        if first.startswith(b"220"):
            return
        await asyncio.sleep(0.01)  # the freed slot is released when the server sees the close


FLOOD = """
import asyncio, collections, json, sys, time

async def main(port, count):
    async def connect():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        first = await asyncio.wait_for(reader.readline(), 30)
        return first[:9].decode(), writer

    start = time.monotonic()
    results = await asyncio.gather(*(connect() for _ in range(count)))
    took = time.monotonic() - start
    print(json.dumps({"took": took, "replies": collections.Counter(r for r, _ in results)}), flush=True)
    sys.stdin.read()  # hold the admitted connections open until told

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _flood_size() -> int:
    """800 connections, or fewer where the kernel's accept queue or the descriptor limit is smaller."""
    import resource

    try:
        somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    except (OSError, ValueError):
        somaxconn = 128
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(50, min(800, somaxconn * 3 // 4, (descriptors - 200) // 2))


async def test_a_flood_from_one_address_is_turned_away_quickly(write_config, start_relay) -> None:
    """The tracker's case: hundreds of idle connections at once from one address (in another
    process, as an attacker would be). Those over the limit get their 421 promptly, not after
    a wait in an overflowing accept queue, and a session from another address is answered
    throughout."""
    # the bystander NOOPs all along: as many as it likes
    relay = await start_relay(
        write_config(route_to(1), system=limits(max_connections_per_client=10, max_command_repeats=1000000))
    )
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)
    flood = _flood_size()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        str(port),
        str(flood),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = asyncio.ensure_future(proc.stdout.readline())
        slowest = 0.0
        while not line.done():
            slowest = max(slowest, await other.noop_seconds())
        report = json.loads(await line)
        assert report["replies"] == {"220 relay": 10, "421 4.7.0": flood - 10}
        assert report["took"] < 10, f"{flood} connections took {report['took']:.1f}s to be answered"
        assert relay.connections.total == 11  # the flood's 10 and the bystander
        # asyncio accepts a whole backlog of connections in one callback, so a NOOP may wait for
        # the batch (~0.2 s for 800 here); on uvloop, what `serve` runs, it stays near 20 ms
        assert slowest < 1, f"a NOOP in another session took {slowest * 1000:.1f} ms during the flood"
    finally:
        proc.stdin.close()
        await proc.wait()
    await assert_unaffected(other, baseline)
    other.close()


async def test_one_client_over_its_limit_leaves_other_addresses_served(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_connections_per_client=3)))
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)
    mine = [await greeted(port) for _ in range(3)]
    for _ in range(3):  # every further one is refused, and costs no slot
        refused = await Session.open(port)
        assert (await refused.reply()).startswith(b"421 4.7.0 relay.test.example Error: too many connections")
        assert await refused.closed()
    await assert_unaffected(other, baseline)
    third_address = await greeted(port, "127.0.0.3")
    for session in (*mine, third_address):
        assert (await session.command(b"EHLO c.test")).startswith(b"250")
        session.close()
    other.close()


async def test_the_total_limit_counts_every_address(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_connections=4)))
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)  # 1 of 4
    sessions = [await greeted(port, source) for source in ("127.0.0.1", "127.0.0.3", "127.0.0.4")]
    refused = await Session.open(port, "127.0.0.5")
    assert await refused.reply() == b"421 4.3.2 relay.test.example Error: too many connections, try again later\r\n"
    assert await refused.closed()
    await assert_unaffected(other, baseline)
    for session in (*sessions, other):
        session.close()


async def test_a_swap_changes_the_limits_for_new_connections_only(write_config, start_relay) -> None:
    path = write_config(route_to(1), system=limits(max_connections_per_client=2))
    relay = await start_relay(path)
    port = relay.ports()["mx"]
    first = [await greeted(port) for _ in range(2)]
    assert (await (refused := await Session.open(port)).reply()).startswith(b"421 4.7.0")
    refused.close()

    path.write_text(path.read_text().replace("max_connections_per_client: 2", "max_connections_per_client: 4"))
    await relay.switch(load_live(path, version=2))
    more = [await greeted(port) for _ in range(2)]  # 4 open under the new limit
    assert (await (refused := await Session.open(port)).reply()).startswith(b"421 4.7.0")
    refused.close()

    path.write_text(path.read_text().replace("max_connections_per_client: 4", "max_connections_per_client: 1"))
    await relay.switch(load_live(path, version=3))
    assert (await (refused := await Session.open(port)).reply()).startswith(b"421 4.7.0")
    refused.close()
    for session in (*first, *more):  # sessions already open keep going
        assert (await session.command(b"NOOP")).startswith(b"250")
        session.close()


# -- time and commands ---------------------------------------------------------------------


async def test_an_idle_client_is_told_and_closed(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(idle_timeout="1s")))
    port = relay.ports()["mx"]
    session = await greeted(port)
    before = limit_hits("idle_timeout")
    start = time.monotonic()
    assert await session.reply(timeout=10) == b"421 4.4.2 relay.test.example Error: timeout exceeded\r\n"
    assert limit_hits("idle_timeout") == before + 1
    assert 0.9 <= time.monotonic() - start < 5
    assert await session.closed()


async def test_a_slow_but_steady_message_is_not_cut_off(write_config, start_relay) -> None:
    """The idle timeout is time without input: DATA that trickles in for longer still arrives."""
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port), system=limits(idle_timeout="1s")))
        session = await greeted(relay.ports()["mx"])
        for line in (b"EHLO c.test", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA"):
            assert (await session.command(line))[:1] in b"23"
        start = time.monotonic()
        session.writer.write(b"Subject: slow\r\n\r\n")
        while time.monotonic() - start < 2.5:  # 2.5 s of DATA, never 1 s without a line
            await asyncio.sleep(0.3)  # the client's pace, not a wait for the server
            session.writer.write(b"a line\r\n")
            await session.writer.drain()
        assert (await session.command(b".")).startswith(b"250 2.0.0 queued as")
        await sink.received(1)
        session.close()


async def _stream_until_closed(session: Session, chunk: bytes, seconds: float) -> tuple[bytes, float]:
    """Send `chunk` every 0.1 s (never a complete command) until the server hangs up; what it
    said and when, from the first chunk."""
    start = time.monotonic()
    said = asyncio.ensure_future(session.reader.read())
    while not said.done() and time.monotonic() - start < seconds:
        try:
            session.writer.write(chunk)
            await session.writer.drain()
        except ConnectionError:
            break
        await asyncio.wait([said], timeout=0.1)  # the client's pace
    return await asyncio.wait_for(said, 10), time.monotonic() - start


async def test_an_endless_command_line_is_cut_off(write_config, start_relay) -> None:
    """Input keeps a session alive only within DATA: a command that never ends is timed out."""
    relay = await start_relay(write_config(route_to(1), system=limits(idle_timeout="1s")))
    session = await greeted(relay.ports()["mx"])
    said, took = await _stream_until_closed(session, b"A" * 500, 10)
    assert said.endswith(b"421 4.4.2 relay.test.example Error: timeout exceeded\r\n"), said
    assert took < 5


async def test_an_endless_oversized_message_is_cut_off(write_config, start_relay) -> None:
    """Past the size limit the relay only drains; input no longer counts as activity."""
    relay = await start_relay(
        write_config(route_to(1), system="  message_size_limit: 10KB\n" + limits(idle_timeout="1s"))
    )
    session = await greeted(relay.ports()["mx"])
    for line in (b"EHLO c.test", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA"):
        assert (await session.command(line))[:1] in b"23"
    said, took = await _stream_until_closed(session, b"x" * 990 + b"\r\n", 10)
    assert said == b"421 4.4.2 relay.test.example Error: timeout exceeded\r\n"
    assert took < 5


async def test_a_repeated_command_is_bounded(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_command_repeats=5)))
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)
    session = await greeted(port)
    before = limit_hits("max_command_repeats")
    for _ in range(5):
        assert (await session.command(b"NOOP")).startswith(b"250")
    assert await session.command(b"NOOP") == b"421 4.7.0 NOOP sent too many times\r\n"
    assert await session.closed()
    assert limit_hits("max_command_repeats") == before + 1  # counted for the operator
    await assert_unaffected(other, baseline)
    other.close()


async def test_messages_in_one_session_are_not_repeated_commands(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port), system=limits(max_command_repeats=2)))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False) as client:
            for n in range(6):
                await client.sendmail("a@example.com", ["b@example.com"], f"Subject: {n}\r\n\r\nx\r\n")
        await sink.received(6)


async def test_errors_are_bounded_and_an_accepted_message_forgives_them(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_errors=3)))
    port = relay.ports()["mx"]
    other, baseline = await bystander(port)
    session = await greeted(port)
    await session.command(b"EHLO c.test")
    for _ in range(3):
        assert (await session.command(b"RCPT TO:<b@example.com>")).startswith(b"503")
    for line in (b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA"):
        assert (await session.command(line))[:1] in b"23"
    assert (await session.command(b"Subject: ok\r\n\r\nx\r\n.")).startswith(b"250 2.0.0 queued as")
    for _ in range(3):  # counted from zero again
        assert (await session.command(b"RCPT TO:<b@example.com>")).startswith(b"503")
    assert (await session.command(b"RCPT TO:<b@example.com>")).startswith(b"503")
    assert await session.reply() == b"421 4.7.0 relay.test.example Error: too many errors\r\n"
    assert await session.closed()
    await assert_unaffected(other, baseline)
    other.close()


# -- recipients and headers ----------------------------------------------------------------


async def test_recipients_over_the_limit_get_452_and_an_endless_stream_is_cut(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port), system=limits(max_recipients=3, max_errors=2)))
        port = relay.ports()["mx"]
        other, baseline = await bystander(port)
        session = await greeted(port)
        await session.command(b"EHLO c.test")
        await session.command(b"MAIL FROM:<a@example.com>")
        for n in range(3):
            assert (await session.command(b"RCPT TO:<r%d@example.com>" % n)).startswith(b"250")
        for n in range(3, 6):  # 452s are not errors: max_errors=2 does not close the session
            assert await session.command(b"RCPT TO:<r%d@example.com>" % n) == b"452 4.5.3 Too many recipients\r\n"
        assert (await session.command(b"DATA")).startswith(b"354")
        assert (await session.command(b"Subject: three\r\n\r\nx\r\n.")).startswith(b"250 2.0.0 queued as")
        [got] = await sink.received(1)
        assert got.recipients == ["r0@example.com", "r1@example.com", "r2@example.com"]
        await session.command(b"MAIL FROM:<a@example.com>")
        for n in range(3):
            assert (await session.command(b"RCPT TO:<s%d@example.com>" % n)).startswith(b"250")
        # as many again over the limit as the limit itself: the client ignores the 452s
        assert (
            await session.command(b"RCPT TO:<s3@example.com>")
            == b"421 4.5.3 relay.test.example Error: too many recipients\r\n"
        )
        assert await session.closed()
        await assert_unaffected(other, baseline)
        other.close()


async def _data_reply(port: int, content: bytes) -> bytes:
    session = await greeted(port)
    for line in (b"EHLO c.test", b"MAIL FROM:<a@example.com>", b"RCPT TO:<b@example.com>", b"DATA"):
        assert (await session.command(line))[:1] in b"23"
    reply = await session.command(content + b".")
    session.close()
    return reply


async def test_a_header_section_over_the_size_limit_is_refused(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_header_size="1KiB")))
    port = relay.ports()["mx"]
    big = b"".join(b"X-Filler-%02d: %s\r\n" % (n, b"a" * 80) for n in range(12))  # ~1.2 KB
    assert await _data_reply(port, big + b"\r\nbody\r\n") == b"552 5.3.4 message header larger than 1KiB\r\n"
    assert await _data_reply(port, big) == b"552 5.3.4 message header larger than 1KiB\r\n"  # no body at all
    small = big[:900]
    small = small[: small.rindex(b"\r\n") + 2]
    assert (await _data_reply(port, small + b"\r\n" + b"b" * 900 + b"\r\n")).startswith(b"250 2.0.0 queued as")
    assert await relay.queue.count() == 1


async def test_too_many_header_fields_are_refused(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1), system=limits(max_header_count=5)))
    port = relay.ports()["mx"]
    six = b"".join(b"X-F%d: v\r\n" % n for n in range(6))
    assert await _data_reply(port, six + b"\r\nbody\r\n") == b"552 5.3.4 too many header fields (more than 5)\r\n"
    folded = b"".join(b"X-F%d: v\r\n  continued\r\n\tand again\r\n" % n for n in range(5))  # 5 fields, 15 lines
    assert (await _data_reply(port, folded + b"\r\nbody\r\n")).startswith(b"250 2.0.0 queued as")


# -- postmaster ----------------------------------------------------------------------------


@pytest.mark.parametrize("recipient", ["postmaster", "Postmaster"])
async def test_postmaster_without_a_domain_is_accepted(write_config, start_relay, recipient: str) -> None:
    """RFC 5321 4.5.1: `RCPT TO:<Postmaster>` must be accepted; it goes to the first internal domain."""
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False) as client:
            await client.ehlo()
            await client.mail("someone@partner.test")
            code, text = await client.rcpt(recipient)
            assert (code, text) == (250, "2.1.5 OK")
            code, _ = await client.data(b"Subject: to the postmaster\r\n\r\nhello\r\n")
            assert code == 250
        [got] = await sink.received(1)
        assert got.recipients == ["postmaster@example.com"]


def test_the_postmaster_domain_is_the_first_plain_internal_domain() -> None:
    assert postmaster(["*.corp.example.com", "example.com", "example.org"]) == "postmaster@example.com"
    assert postmaster(["*.corp.example.com"]) is None
    assert postmaster([]) is None


# -- the config ----------------------------------------------------------------------------


def _diagnostics(write_config, system: str) -> list[tuple[str, str]]:
    result = load_config(Path(write_config(route_to(1), system=system)))
    return [(d.severity.value, d.dotted) for d in result.diagnostics if d.dotted.startswith("system.limits")]


def test_limits_that_cannot_work_are_diagnosed(write_config) -> None:
    assert _diagnostics(write_config, limits(idle_timeout="0s")) == [("error", "system.limits.idle_timeout")]
    assert _diagnostics(write_config, limits(idle_timeout="30s")) == [("warning", "system.limits.idle_timeout")]
    assert _diagnostics(write_config, limits(max_header_size="0B")) == [("error", "system.limits.max_header_size")]
    assert _diagnostics(write_config, limits(max_connections=10)) == [
        ("warning", "system.limits.max_connections_per_client")
    ]
    assert _diagnostics(write_config, limits(max_recipients=0)) != []  # the schema: at least 1
    assert _diagnostics(write_config, "") == []
