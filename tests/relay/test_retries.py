"""Non-delivery: the retry schedule, delay warnings, NDRs, DNS answers, and the backup hand-off."""

from __future__ import annotations

import email
import email.policy
import inspect
import time
from email.message import EmailMessage

import aiosmtplib

from engine.relay.methods.base import HandedOff, Protection
from tests.relay.peers import Sink, eventually, free_port

HOME = "example.com"


def routes(home_port: int, partner: str) -> str:
    """Mail to example.com goes to the home sink (where DSNs arrive); the rest to `partner`."""
    return f"""
routes:
  - {{name: home, recipients: {{domains: [{HOME}]}}, next_hop: {{host: 127.0.0.1, port: {home_port}}}, tls: none}}
  - {{name: partner, recipients: any, next_hop: {partner}, tls: none}}
"""


def delivery(lifetime: str = "1h", warn: str = "null") -> str:
    return f"delivery:\n  retry_interval: 1s\n  max_retry_interval: 2s\n  max_queue_lifetime: {lifetime}\n  delay_warning_after: {warn}\n"


async def send(relay, to: str = "bob@partner.example") -> str:
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "alice@example.com", to, "report"
    m.set_content("quarterly numbers\n")
    _, reply = await aiosmtplib.send(m, hostname="127.0.0.1", port=relay.ports()["mx"], timeout=10, start_tls=False)
    return reply.split()[-1]


def report(received) -> email.message.Message:
    msg = email.message_from_bytes(received.content, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert received.sender == "<>"  # a DSN goes out with the null sender (aiosmtpd's spelling)
    return msg


def status_fields(msg) -> str:
    part = next(p for p in msg.walk() if p.get_content_type() == "message/delivery-status")
    return part.as_string()


async def test_retries_follow_the_schedule_then_expiry_bounces(write_config, start_relay, monkeypatch) -> None:
    down = free_port()
    with Sink() as home:
        relay = await start_relay(
            write_config(routes(home.port, f"{{host: 127.0.0.1, port: {down}}}"), delivery=delivery("4s"))
        )
        # Record each deferral as the deliverer reports it: when, and the retry time it asked for.
        calls: list[tuple[str, float, float]] = []
        mark_deferred = relay.queue.mark_deferred
        signature = inspect.signature(mark_deferred)

        async def recording(*args, **kwargs):
            given = signature.bind(*args, **kwargs).arguments
            calls.append((given["msg_id"], time.time(), given["next_attempt_at"]))
            return await mark_deferred(*args, **kwargs)

        monkeypatch.setattr(relay.queue, "mark_deferred", recording)
        queue_id = await send(relay)
        [ndr_msg] = await home.received(1, timeout=20)
        bounced_at = time.time()
        deferrals = [(at, retry_at) for msg_id, at, retry_at in calls if msg_id == queue_id]
        # The schedule asked for, not the wall clock it ran at: 1s after the first failure, then
        # 2s (backoff 2), then 2s again (capped at max_retry_interval). A loaded machine only
        # makes attempts later, so the lifetime (4s) may end the series after two deferrals.
        waits = [retry_at - at for at, retry_at in deferrals]
        assert 2 <= len(waits) <= 3, waits  # a fourth attempt (due at 5s) is past the 4s lifetime: bounced
        for wait, wanted in zip(waits, [1.0, 2.0, 2.0], strict=False):
            assert wanted - 0.25 <= wait <= wanted + 0.01, waits
        # Never early: each attempt came after the retry time the previous one set.
        attempts = [at for at, _ in deferrals[1:]] + [bounced_at]
        assert all(attempt >= retry_at for attempt, (_, retry_at) in zip(attempts, deferrals, strict=True)), deferrals
        msg = report(ndr_msg)
        assert ndr_msg.recipients == ["alice@example.com"]
        fields = status_fields(msg)
        assert (
            "Final-Recipient: rfc822; bob@partner.example" in fields
            and "Status: 5.4.7" in fields
            and "Action: failed" in fields
        )

        async def gone():
            return await relay.queue.count() == 0

        await eventually(gone, what="the bounced message to leave the queue")


async def test_delay_warning_is_sent_once(write_config, start_relay) -> None:
    down = free_port()
    with Sink() as home:
        relay = await start_relay(
            write_config(routes(home.port, f"{{host: 127.0.0.1, port: {down}}}"), delivery=delivery("1h", "1s"))
        )
        queue_id = await send(relay)
        [warning] = await home.received(1, timeout=15)
        fields = status_fields(report(warning))
        assert "Action: delayed" in fields and "Will-Retry-Until:" in fields

        async def retried_after_warning():
            d = await relay.queue.show(queue_id)
            return d.warned and d.recipients[0].attempts >= 4

        await eventually(retried_after_warning, 20, "more attempts after the warning")
        assert len(home.messages) == 1  # warned once, not at every retry


async def test_permanent_refusal_bounces_without_retry(write_config, start_relay) -> None:
    with Sink() as home, Sink() as partner:
        partner.handler.replies["bob@partner.example"] = "550 5.1.1 no such user"
        relay = await start_relay(
            write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}"), delivery=delivery())
        )
        await send(relay)
        [bounce] = await home.received(1)
        fields = status_fields(report(bounce))
        assert "Status: 5.1.1" in fields and "no such user" in fields
        assert partner.messages == []


async def test_mx_lookup_through_dns_and_null_mx_bounces(write_config, start_relay, dns_server) -> None:
    dns_server.zone[("partner.example", "MX")] = [(10, "mx1.partner.example")]
    dns_server.zone[("mx1.partner.example", "A")] = ["127.0.0.1"]
    dns_server.zone[("nomail.example", "MX")] = [(0, ".")]
    dns = f"  dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2s}}\n"
    with Sink() as home, Sink() as partner:
        extra = f"""
routes:
  - {{name: home, recipients: {{domains: [{HOME}]}}, next_hop: {{host: 127.0.0.1, port: {home.port}}}, tls: none}}
  - {{name: partners, recipients: {{domains: [partner.example]}}, next_hop: {{host: partner.example, port: {partner.port}, mx_lookup: true}}, tls: none}}
  - {{name: default, recipients: any, next_hop: mx}}
"""
        relay = await start_relay(write_config(extra, system=dns, delivery=delivery()))
        await send(relay, "bob@partner.example")
        await partner.received(1)
        assert dns_server.queried("partner.example", "MX") and dns_server.queried("mx1.partner.example", "A")
        await send(relay, "carol@nomail.example")
        [bounce] = await home.received(1)
        fields = status_fields(report(bounce))
        assert "carol@nomail.example" in fields and "Status: 5.1.10" in fields


class RecordingMethod:
    """A test double for an encryption method behind the hand-off seam."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name, self.fail, self.calls = name, fail, []

    async def protect(self, live, entry, recipients):
        self.calls.append((entry.id, list(recipients)))
        if self.fail:
            raise RuntimeError("gateway unreachable")
        return Protection(handed=(HandedOff(tuple(recipients), f"encrypted for {len(recipients)} recipient(s)"),))


async def _enqueue_flagged(relay) -> str:
    """Queue a message as DLP would flag it (DLP itself is another module's job)."""
    live = relay.live
    queue_id = await relay.queue.enqueue(
        "alice@example.com",
        ["bob@partner.example"],
        b"Subject: secret\r\n\r\ncard 4111\r\n",
        meta={"encrypt": True, "config_version": live.version, "direction": "outbound"},
    )
    relay.deliverer.kick()
    return queue_id


async def test_tls_failure_hands_flagged_mail_to_the_backup_method(write_config, start_relay) -> None:
    backup = RecordingMethod("advanced")
    with Sink(tls=None) as partner:  # offers no STARTTLS: mandatory TLS for flagged mail fails
        extra = routes(free_port(), f"{{host: 127.0.0.1, port: {partner.port}}}").replace(
            "tls: none}", "tls: opportunistic}"
        )
        extra += (
            "encryption:\n  method: tls\n  backup: advanced\n  advanced: {portal_url: 'https://secure.example.com'}\n"
        )
        relay = await start_relay(write_config(extra, delivery=delivery()), methods={"advanced": backup})
        queue_id = await _enqueue_flagged(relay)

        async def handed():
            return backup.calls

        await eventually(handed, what="the backup method to be called")
        assert backup.calls == [(queue_id, ["bob@partner.example"])]
        assert partner.messages == []  # not one byte in plain text
        unflagged = await send(relay)
        await partner.received(1)  # unflagged mail still goes out (opportunistic, plain)
        assert unflagged != queue_id


async def test_failing_backup_leaves_the_message_waiting(write_config, start_relay) -> None:
    backup = RecordingMethod("advanced", fail=True)
    with Sink(tls=None) as partner:
        extra = routes(free_port(), f"{{host: 127.0.0.1, port: {partner.port}}}")
        extra += (
            "encryption:\n  method: tls\n  backup: advanced\n  advanced: {portal_url: 'https://secure.example.com'}\n"
        )
        relay = await start_relay(write_config(extra, delivery=delivery()), methods={"advanced": backup})
        queue_id = await _enqueue_flagged(relay)

        async def deferred():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" and backup.calls else None

        detail = await eventually(deferred, what="the message to be deferred")
        assert "gateway unreachable" in detail.recipients[0].last_error
        assert partner.messages == []
        _ = time
