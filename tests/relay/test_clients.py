"""Outside clients, as administrators use them: swaks and Postfix's smtp-source."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from tests.conftest import require
from tests.relay.peers import Sink
from tests.relay.test_edge import route_to


@pytest.fixture(autouse=True)
def outside_clients() -> None:
    require(shutil.which("swaks") and shutil.which("smtp-source"), "swaks and postfix are installed by scripts/test")


async def run(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(errors="replace")


async def test_swaks_message_is_delivered(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        code, out = await run(
            "swaks",
            "--server",
            "127.0.0.1",
            "--port",
            str(relay.ports()["mx"]),
            "--from",
            "alice@example.com",
            "--to",
            "bob@partner.example",
            "--header",
            "Subject: from swaks",
            "--body",
            "hello from swaks",
            "--tls",
        )
        assert code == 0, out
        assert "250 2.0.0 queued as" in out
        [got] = await sink.received(1)
        assert b"Subject: from swaks" in got.content and got.recipients == ["bob@partner.example"]
        assert b"with ESMTPS" in got.content  # swaks --tls: the relay recorded the STARTTLS session


async def test_swaks_sees_relay_refused_for_an_untrusted_peer(write_config, start_relay) -> None:
    path = write_config(route_to(1))
    path.write_text(path.read_text().replace("internal_servers: [127.0.0.0/8]", "internal_servers: [192.0.2.0/24]"))
    relay = await start_relay(path)
    code, out = await run(
        "swaks",
        "--server",
        "127.0.0.1",
        "--port",
        str(relay.ports()["mx"]),
        "--from",
        "x@outside.example",
        "--to",
        "y@elsewhere.example",
    )
    assert code != 0 and "554 5.7.1" in out and "Relay access denied" in out


async def test_smtp_source_messages_are_all_delivered(write_config, start_relay) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        code, out = await run(
            "smtp-source",
            "-s",
            "5",
            "-m",
            "50",
            "-l",
            "2048",
            "-f",
            "alice@example.com",
            "-t",
            "bob@partner.example",
            f"127.0.0.1:{relay.ports()['mx']}",
        )
        assert code == 0, out
        got = await sink.received(50, timeout=30)
        assert len(got) == 50
        assert all(m.sender == "alice@example.com" and m.recipients == ["bob@partner.example"] for m in got)
