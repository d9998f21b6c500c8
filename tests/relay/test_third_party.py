"""The third-party encryption gateway: flagged mail goes there with the x-header and comes
back encrypted (delivered) or failed (held), and unflagged mail never goes there."""

from __future__ import annotations

import base64
import smtplib
import threading

from aiosmtpd.controller import Controller

from tests.relay.peers import Sink, eventually, free_port, submit

GATEWAY_IP = "127.0.0.2"
GROUPS = f"  encryption_gateway: [{GATEWAY_IP}/32]\n"


class FakeGateway:
    """An encryption gateway on 127.0.0.2: 'encrypts' (base64) and sends the mail back to the
    relay from 127.0.0.2, stamped with the success (or, when told to, failure) header."""

    def __init__(self, relay_port_ref: list[int], fail: bool = False) -> None:
        self.port = free_port()
        self.relay_port_ref = relay_port_ref
        self.fail = fail
        self.seen: list[bytes] = []
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname=GATEWAY_IP, port=self.port, ready_timeout=10)

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content
        with self.lock:
            self.seen.append(content)
        head, _, body = content.partition(b"\r\n\r\n")
        result = b"X-Encrypt-Result: failure" if self.fail else b"X-Encrypt-Result: success"
        sealed = (
            head + b"\r\n" + result + b"\r\n\r\n-----BEGIN FAKE ENCRYPTED-----\r\n" + base64.b64encode(body) + b"\r\n"
        )
        threading.Thread(target=self._send_back, args=(envelope.mail_from, list(envelope.rcpt_tos), sealed)).start()
        return "250 2.0.0 taken for encryption"

    def _send_back(self, sender, rcpts, content) -> None:
        with smtplib.SMTP("127.0.0.1", self.relay_port_ref[0], source_address=(GATEWAY_IP, 0), timeout=10) as smtp:
            smtp.sendmail(sender, rcpts, content)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


def config(gateway_port: int, sink_port: int) -> str:
    return f"""
routes:
  - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink_port}}}, tls: none}}
encryption:
  method: third_party
  third_party:
    servers: [{{host: {GATEWAY_IP}, port: {gateway_port}}}]
    tls: none
    headers: {{encrypt: "X-Encrypt: yes", success: "X-Encrypt-Result: success", failure: "X-Encrypt-Result: failure"}}
dlp:
  action_plans: [{{name: enc, email: encrypt}}]
  policies:
    - name: confidential
      rules: [{{name: marked, conditions: {{phrases: [confidential]}}, action_plan: enc}}]
"""


async def send(relay, body: str, extra: str = "") -> str:
    msg = f"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: s\r\n{extra}\r\n{body}\r\n"
    reply = await submit(relay.ports()["mx"], msg, "alice@example.com", ["bob@partner.example"])
    return reply


async def test_flagged_mail_goes_through_the_gateway_and_comes_back_encrypted(write_config, start_relay) -> None:
    port_ref: list[int] = [0]
    with Sink() as sink, FakeGateway(port_ref) as gateway:
        relay = await start_relay(write_config(config(gateway.port, sink.port), groups=GROUPS))
        port_ref[0] = relay.ports()["mx"]
        await send(relay, "this is confidential", extra="X-Encrypt-Result: success\r\n")  # a forged result header
        [got] = await sink.received(1)
        assert b"confidential" not in got.content and b"-----BEGIN FAKE ENCRYPTED-----" in got.content
        assert b"X-Encrypt-Result: success" in got.content
        [handed] = gateway.seen
        assert handed.startswith(b"X-Encrypt: yes\r\n") and handed.count(b"X-Encrypt-Result") == 0
        await send(relay, "nothing special")
        await sink.received(2)
        assert len(gateway.seen) == 1  # unflagged mail never goes to the gateway


async def test_a_failure_from_the_gateway_is_held_not_delivered(write_config, start_relay) -> None:
    port_ref: list[int] = [0]
    with Sink() as sink, FakeGateway(port_ref, fail=True) as gateway:
        relay = await start_relay(write_config(config(gateway.port, sink.port), groups=GROUPS))
        port_ref[0] = relay.ports()["mx"]
        await send(relay, "this is confidential")
        from engine.relay.queue.quarantine import Quarantine

        quarantine = Quarantine(relay.live.data_dir)

        async def held():
            return quarantine.list()

        [item] = await eventually(held, what="the failed message to be held")
        assert "did not report the message encrypted" in item.reason and sink.messages == [] and len(gateway.seen) == 1


def test_gateway_results_fail_closed(write_config) -> None:
    from engine.relay.methods.third_party import gateway_result
    from engine.relay.runtime.relay import load_live

    live = load_live(write_config(config(1, 2), groups=GROUPS))
    head = b"From: a@example.com\r\n"
    assert gateway_result(live, head + b"X-Encrypt-Result: success\r\n\r\nx") == "success"
    assert gateway_result(live, head + b"X-Encrypt-Result: failure; reason=no key\r\n\r\nx") == "failure"
    assert gateway_result(live, head + b"X-Encrypt-Result:\r\n failure\r\n\r\nx") == "failure"  # folded
    both = head + b"X-Encrypt-Result: failure\r\nX-Encrypt-Result: success\r\n\r\nx"
    assert gateway_result(live, both) == "failure"  # any failure copy wins
    assert gateway_result(live, head + b"\r\nx") == "none"


async def test_a_recipient_the_gateway_refuses_bounces_and_the_others_are_handed_over_once(
    write_config, start_relay
) -> None:
    port_ref: list[int] = [0]
    with Sink() as sink, FakeGateway(port_ref) as gateway:
        refuse = "550 5.1.1 no key for this recipient"
        original = gateway.handle_DATA

        async def handle_RCPT(server, session, envelope, address, options):
            if address == "carol@partner.example":
                return refuse
            envelope.rcpt_tos.append(address)
            return "250 OK"

        gateway.handle_RCPT = handle_RCPT
        gateway.handle_DATA = original
        relay = await start_relay(write_config(config(gateway.port, sink.port), groups=GROUPS))
        port_ref[0] = relay.ports()["mx"]
        msg = "From: alice@example.com\r\nTo: bob@partner.example, carol@partner.example\r\nSubject: s\r\n\r\nthis is confidential\r\n"
        await submit(relay.ports()["mx"], msg, "alice@example.com", ["bob@partner.example", "carol@partner.example"])
        got = await sink.received(2)  # bob's encrypted copy, and the DSN about carol to alice
        by_rcpt = {m.recipients[0]: m for m in got}
        assert b"-----BEGIN FAKE ENCRYPTED-----" in by_rcpt["bob@partner.example"].content
        assert (
            b"carol@partner.example" in by_rcpt["alice@example.com"].content
            and b"no key" in by_rcpt["alice@example.com"].content
        )

        async def settled():
            return await relay.queue.count() == 0

        await eventually(settled, what="the message to leave the queue")
        assert len(gateway.seen) == 1  # handed over once


async def test_gateway_mail_without_a_result_is_held_even_without_dlp_policies(write_config, start_relay) -> None:
    """Fail closed whether or not DLP policies exist: the shortcut for a config without
    policies must hold gateway mail that says neither success nor failure, as `judge` does."""
    import asyncio

    from engine.relay.queue.quarantine import Quarantine

    with Sink() as sink:
        without_dlp = config(free_port(), sink.port).split("dlp:")[0]
        relay = await start_relay(write_config(without_dlp, groups=GROUPS))
        content = b"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: s\r\n\r\nplain after all\r\n"

        def from_gateway() -> None:
            with smtplib.SMTP("127.0.0.1", relay.ports()["mx"], source_address=(GATEWAY_IP, 0), timeout=10) as smtp:
                smtp.sendmail("alice@example.com", ["bob@partner.example"], content)

        await asyncio.to_thread(from_gateway)
        quarantine = Quarantine(relay.live.data_dir)

        async def held():
            return quarantine.list()

        [entry] = await eventually(held, what="the message to be held")
        assert "did not report the message encrypted" in entry.reason and sink.messages == []
