"""Client-side PIPELINING (RFC 2920) in delivery, against a scripted SMTP peer on loopback.

The peer is a real TCP server in the test's event loop. It records every chunk it reads, so a
test sees whether MAIL, RCPT and DATA came in one write, and it answers as scripted: replies
all in one write or one byte at a time, a refused sender or recipient, DATA refused or
accepted with no recipient, a reply too many, or no reply at all."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from tests.relay.peers import eventually
from tests.relay.test_relay_flow import message, send


@dataclass
class Script:
    pipelining: bool = True
    rcpt: dict[str, str] = field(default_factory=dict)  # address -> reply (default 250)
    mail: str = "250 2.1.0 ok"
    data: str = "354 go ahead"
    split: bool = False  # every reply one byte at a time
    extra_after_data: str | None = None  # a reply nobody asked for
    silent_on_data: bool = False


class Peer:
    """A scripted SMTP server; `chunks` are the command chunks it read, per session."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.sessions: list[list[bytes]] = []
        self.contents: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Peer:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _reply(self, writer: asyncio.StreamWriter, text: str) -> None:
        data = text.encode() + b"\r\n"
        if self.script.split:
            for i in range(len(data)):
                writer.write(data[i : i + 1])
                await writer.drain()
                await asyncio.sleep(0)
        else:
            writer.write(data)
            await writer.drain()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: list[bytes] = []
        self.sessions.append(chunks)
        script = self.script
        try:
            await self._reply(writer, "220 peer.test ESMTP")
            pending = b""
            mail_ok, accepted = False, 0
            while True:
                while b"\r\n" not in pending:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    chunks.append(chunk)
                    pending += chunk
                line, pending = pending.split(b"\r\n", 1)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    lines = (
                        ["250-peer.test", "250-PIPELINING", "250 8BITMIME"] if script.pipelining else ["250 peer.test"]
                    )
                    await self._reply(writer, "\r\n".join(lines))
                elif verb == b"MAIL":
                    mail_ok, accepted = script.mail.startswith("250"), 0
                    await self._reply(writer, script.mail)
                elif verb == b"RCPT":
                    address = line.split(b"<", 1)[1].split(b">", 1)[0].decode()
                    reply = script.rcpt.get(address, "250 2.1.5 ok") if mail_ok else "503 5.5.1 MAIL first"
                    accepted += reply.startswith("250")
                    await self._reply(writer, reply)
                elif verb == b"DATA":
                    if script.silent_on_data:
                        await reader.read()  # never answers
                        return
                    reply = script.data if mail_ok else "503 5.5.1 MAIL first"
                    await self._reply(writer, reply)
                    if script.extra_after_data:
                        await self._reply(writer, script.extra_after_data)
                    if reply.startswith("354"):
                        while not (pending.startswith(b".\r\n") or b"\r\n.\r\n" in pending):
                            chunk = await reader.read(65536)
                            if not chunk:
                                return  # the client went away before the end of data: nothing received
                            pending += chunk
                        if pending.startswith(b".\r\n"):
                            content, pending = b"", pending[3:]
                        else:
                            content, _, pending = pending.partition(b"\r\n.\r\n")
                        self.contents.append(content)
                        await self._reply(writer, "250 2.0.0 queued")
                elif verb == b"RSET" or verb == b"NOOP":
                    await self._reply(writer, "250 ok")
                elif verb == b"QUIT":
                    await self._reply(writer, "221 bye")
                    return
                else:
                    await self._reply(writer, "502 unknown")
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


def _config(write_config, port: int, timeouts: str = "") -> object:
    route = f"routes:\n  - {{name: peer, recipients: any, next_hop: {{host: 127.0.0.1, port: {port}}}, tls: none}}\n"
    delivery = (
        "delivery:\n  retry_interval: 30s\n  max_retry_interval: 60s\n  max_queue_lifetime: 1h\n"
        f"  delay_warning_after: null\n{timeouts}"
    )
    return write_config(route, delivery=delivery)


async def _settled(relay, queue_id: str):
    async def settled():
        try:
            detail = await relay.queue.show(queue_id)
        except KeyError:  # every recipient final: the entry is gone
            return "gone"
        return detail if all(r.state != "pending" for r in detail.recipients) else None

    return await eventually(settled, what=f"{queue_id} attempted")


async def _submit(relay, recipients: list[str]) -> str:
    msg = message(to=", ".join(recipients))
    _, reply = await send(relay, msg)
    return reply.split()[-1]


@pytest.mark.parametrize("split", [False, True], ids=["replies-together", "replies-byte-by-byte"])
async def test_envelope_and_data_go_in_one_write_and_refusals_stay_per_recipient(
    write_config, start_relay, split
) -> None:
    script = Script(rcpt={"nobody@partner.example": "550 5.1.1 no such user"}, split=split)
    async with Peer(script) as peer:
        relay = await start_relay(_config(write_config, peer.port))
        await _submit(relay, ["bob@partner.example", "nobody@partner.example"])
        await eventually(lambda: _async(peer.contents), what="content delivered")
        pipelined = [c for c in peer.sessions[0] if c.startswith(b"MAIL")]
        assert pipelined[0] == (
            b"MAIL FROM:<alice@example.com>\r\nRCPT TO:<bob@partner.example>\r\n"
            b"RCPT TO:<nobody@partner.example>\r\nDATA\r\n"
        )
        assert b"Hello Bob" in peer.contents[0]
        # the refused recipient bounced: the NDR to the sender goes out through the same peer
        await eventually(lambda: _async(len(peer.contents) == 2), what="the bounce delivered")
        assert b"550 5.1.1 no such user" in peer.contents[1]
        assert all(c.startswith(b"MAIL FROM:<>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n") for c in pipelined[1:])


async def _async(value):
    return value


@pytest.mark.parametrize(
    ("data", "contents"),
    [
        ("554 5.5.1 no valid recipients", []),  # DATA refused, as RFC 2920 expects: nothing sent
        ("354 go ahead anyway", [b""]),  # a 354 all the same: a lone "." and nothing before it
    ],
    ids=["data-refused", "data-accepted-anyway"],
)
async def test_every_recipient_refused_sends_no_content(write_config, start_relay, data, contents) -> None:
    script = Script(rcpt={"bob@partner.example": "450 4.2.1 try later"}, data=data)
    async with Peer(script) as peer:
        relay = await start_relay(_config(write_config, peer.port))
        queue_id = await _submit(relay, ["bob@partner.example"])
        detail = await _settled(relay, queue_id)
        assert peer.contents == contents
        [rcpt] = detail.recipients
        assert rcpt.state == "deferred" and "450 4.2.1 try later" in rcpt.last_error


async def test_a_refused_sender_defers_without_content(write_config, start_relay) -> None:
    async with Peer(Script(mail="451 4.3.0 sender check failed")) as peer:
        relay = await start_relay(_config(write_config, peer.port))
        queue_id = await _submit(relay, ["bob@partner.example"])
        detail = await _settled(relay, queue_id)
        assert peer.contents == []
        assert "451 4.3.0 sender check failed" in detail.recipients[0].last_error


async def test_a_reply_too_many_is_not_trusted(write_config, start_relay) -> None:
    async with Peer(Script(extra_after_data="250 2.0.0 surprise")) as peer:
        relay = await start_relay(_config(write_config, peer.port))
        queue_id = await _submit(relay, ["bob@partner.example"])
        detail = await _settled(relay, queue_id)
        assert peer.contents == []
        [rcpt] = detail.recipients
        assert rcpt.state == "deferred" and "answered more than it was asked" in rcpt.last_error


async def test_a_peer_without_pipelining_gets_one_command_at_a_time(write_config, start_relay) -> None:
    async with Peer(Script(pipelining=False)) as peer:
        relay = await start_relay(_config(write_config, peer.port))
        await _submit(relay, ["bob@partner.example", "carol@partner.example"])
        await eventually(lambda: _async(peer.contents), what="content delivered")
        [session] = peer.sessions
        commands = [c for c in session if c[:4] in (b"MAIL", b"RCPT", b"DATA")]
        assert commands == [
            b"MAIL FROM:<alice@example.com>\r\n",
            b"RCPT TO:<bob@partner.example>\r\n",
            b"RCPT TO:<carol@partner.example>\r\n",
            b"DATA\r\n",
        ]


async def test_no_answer_to_a_pipelined_data_times_out_at_the_data_stage(write_config, start_relay) -> None:
    async with Peer(Script(silent_on_data=True)) as peer:
        relay = await start_relay(_config(write_config, peer.port, "  timeouts: {data: 1s}\n"))
        queue_id = await _submit(relay, ["bob@partner.example"])
        detail = await _settled(relay, queue_id)
        [rcpt] = detail.recipients
        assert rcpt.state == "deferred" and "timed out waiting for the reply to DATA" in rcpt.last_error
        assert peer.contents == []


async def test_replies_arriving_in_two_reads_before_the_first_is_taken_are_all_kept() -> None:
    """Two reads in one pass of the loop (libuv reads a socket up to 32 times per wake-up):
    the second arrives while the first reply waits to be taken. aiosmtplib's own protocol
    drops it as unsolicited; a pipelined group must not."""
    import socket

    from engine.relay.delivery.pipelining import PipeliningProtocol

    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    protocol = PipeliningProtocol(loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, sock=ours)
    try:
        with protocol.group(3):
            protocol.send_group([b"MAIL FROM:<a@x>", b"RCPT TO:<b@y>", b"DATA"])
            protocol.data_received(b"250 2.1.0 sender ok\r\n")  # completes the first reply
            protocol.data_received(b"250 2.1.5 rcpt ok\r\n354 go")  # before anyone took it
            protocol.data_received(b" ahead\r\n")
            replies = [await protocol.next_reply(1.0) for _ in range(3)]
        assert [(r.code, r.message) for r in replies] == [
            (250, "2.1.0 sender ok"),
            (250, "2.1.5 rcpt ok"),
            (354, "go ahead"),
        ]
        assert not protocol.leftover
        assert theirs.recv(4096) == b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n"  # one write
    finally:
        transport.close()
        theirs.close()
