"""Regressions found in review: each test fails on the code before its fix."""

from __future__ import annotations

import asyncio
import ssl

import pytest

from engine.relay.smtp.intake import strip_dlp_headers
from engine.relay.smtp.protocol import RelaySMTP
from tests.relay.peers import Sink, eventually
from tests.relay.test_edge import raw_session, route_to
from tests.relay.test_relay_flow import message, send


async def test_pooled_sessions_keep_each_routes_login(write_config, start_relay, ca, monkeypatch) -> None:
    monkeypatch.setenv("SEAL_A", "pass-a")
    monkeypatch.setenv("SEAL_B", "pass-b")
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    with Sink(tls=ctx, logins={"alice": "pass-a", "bob": "pass-b"}) as sink:
        hop = f"next_hop: {{host: 127.0.0.1, port: {sink.port}}}, tls: mandatory"
        extra = (
            "routes:\n"
            f"  - {{name: a, recipients: {{domains: [a.example]}}, {hop}, auth: {{username: alice, password: {{env: SEAL_A}}}}}}\n"
            f"  - {{name: b, recipients: any, {hop}, auth: {{username: bob, password: {{env: SEAL_B}}}}}}\n"
        )
        relay = await start_relay(write_config(extra))
        await send(relay, message(to="x@a.example"))
        await sink.received(1)
        await send(relay, message(to="y@b.example"))
        await sink.received(2)
        assert sorted(sink.logins) == ["alice", "bob"]


async def test_delivery_survives_a_failing_lease(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        real_lease, calls = relay.queue.lease, []

        async def flaky_lease(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("database is locked")
            return await real_lease(*args, **kwargs)

        relay.queue.lease = flaky_lease
        relay.deliverer.kick()
        await send(relay, message())
        await sink.received(1, timeout=15)
        assert len(calls) >= 2


async def test_made_up_commands_do_not_grow_a_shared_table(write_config, start_relay) -> None:
    relay = await start_relay(write_config(route_to(1)))
    before = len(RelaySMTP.command_size_limits)
    for n in range(20):
        await raw_session(relay.ports()["mx"], [b"EHLO c\r\n", f"MADEUP{n} x\r\n".encode()])
    assert len(RelaySMTP.command_size_limits) == before


async def test_the_reply_to_data_is_sent_even_when_the_session_is_then_closed(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.ports()["mx"])
        await reader.readline()
        writer.write(b"HELO c\r\n")
        await reader.readline()
        writer.write(b"MAIL FROM:<a@example.com>\r\n")
        await reader.readline()
        writer.write(b"RCPT TO:<b@example.com>\r\n")
        await reader.readline()
        writer.write(b"DATA\r\n")
        await reader.readline()
        writer.write(b"Subject: x\r\n\r\nbody\r\n.\r\n" + b"BOGUS\r\n" * 12)
        replies = await asyncio.wait_for(reader.read(), 10)
        assert replies.startswith(b"250 2.0.0 queued as"), replies
        await sink.received(1)


async def test_every_leading_dot_is_removed(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        body = b"Subject: d\r\n\r\nfirst\r\n.second\r\n..third\r\n.\r\n"
        await raw_session(
            relay.ports()["mx"],
            [b"EHLO c\r\n", b"MAIL FROM:<a@example.com>\r\n", b"RCPT TO:<b@example.com>\r\n", b"DATA\r\n", body],
        )
        [got] = await sink.received(1)
        assert got.content.endswith(b"\r\nfirst\r\nsecond\r\n.third\r\n")


@pytest.mark.parametrize(
    "forged", [b"X-Sealrelay-DLP: action=permit", b"x-sealrelay-dlp :action=permit", b"X-Sealrelay-DLP\t: a"]
)
def test_forged_dlp_headers_are_stripped_in_every_spelling(forged: bytes) -> None:
    content = (
        b"From: a@example.com\r\n"
        + forged
        + b"\r\n  continued\r\nSubject: s\r\n\r\nX-Sealrelay-DLP: in the body stays\r\n"
    )
    assert (
        strip_dlp_headers(content) == b"From: a@example.com\r\nSubject: s\r\n\r\nX-Sealrelay-DLP: in the body stays\r\n"
    )


async def test_swap_and_apply_never_share_a_version(write_config, start_relay) -> None:
    from engine.admin.contract import ApplyRequest
    from engine.config.load import load_config
    from engine.plan.diff import canonical
    from engine.relay.runtime.control import RelayControl

    path = write_config(route_to(1))
    relay = await start_relay(path)
    control = RelayControl(relay, source="test")
    running = canonical(relay.live.config)
    by_api = running | {"delivery": running["delivery"] | {"retry_interval": "2s"}}
    by_file = load_config(path).config.model_copy(
        update={"delivery": relay.live.config.delivery.model_copy(update={"max_retry_interval": 9})}
    )
    applied, swapped = await asyncio.gather(
        control.apply(ApplyRequest(by_api, base_version=1), "test"), control.swap(by_file, source="file")
    )
    assert swapped is None
    assert applied.ok or applied.error == "stale_base"  # serialised: the second saw the first's version
    assert relay.live.version == (3 if applied.ok else 2)


async def test_data_dir_cannot_move_while_running(write_config, start_relay) -> None:
    from engine.admin.contract import ApplyRequest
    from engine.plan.diff import canonical
    from engine.relay.runtime.control import RelayControl

    relay = await start_relay(write_config(route_to(1)))
    control = RelayControl(relay, source="test")
    running = canonical(relay.live.config)
    moved = running | {"system": running["system"] | {"data_dir": "./elsewhere"}}
    result = await control.apply(ApplyRequest(moved, base_version=1), "test")
    assert not result.ok and "restart" in result.detail and relay.live.version == 1

    async def still_serving():
        return relay.live.data_dir.name == "var"

    await eventually(still_serving)
