"""DLP through the relay on loopback: each action, notify, monitor vs enforce, the header."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import logging
import subprocess
import sys
from pathlib import Path

import aiosmtplib
import pytest

from tests.relay.peers import Sink, eventually, submit
from tests.relay.test_retries import routes

ROOT = Path(__file__).resolve().parents[2]
CARD = "4111 1111 1111 1111"


def dlp(mode: str = "enforce") -> str:
    return f"""
dlp:
  mode: {mode}
  action_plans:
    - {{name: encrypt, email: encrypt, notify: [policy_owners]}}
    - {{name: block, email: block}}
    - {{name: hold, email: quarantine, notify: [dlp-team@example.com]}}
  policies:
    - name: cards
      owners: [security@example.com]
      rules:
        - {{name: card, conditions: {{classifier: credit_card}}, action_plan: encrypt, destination: {{direction: outbound}}}}
    - name: secrets
      rules:
        - {{name: secret, conditions: {{phrases: [top secret]}}, action_plan: block, destination: {{direction: outbound}}}}
    - name: review
      rules:
        - {{name: review, conditions: {{phrases: [for review]}}, action_plan: hold, destination: {{direction: outbound}}}}
"""


async def send(relay, body: str, to: str = "bob@partner.example", extra_headers: str = "") -> str:
    msg = f"From: alice@example.com\r\nTo: {to}\r\nSubject: test\r\n{extra_headers}\r\n{body}\r\n"
    reply = await submit(relay.ports()["mx"], msg, "alice@example.com", [to])
    return reply


def parse(received) -> email.message.Message:
    return email.message_from_bytes(received.content, policy=email.policy.default)


async def test_encrypt_means_mandatory_tls_to_the_next_hop(write_config, start_relay) -> None:
    with Sink() as home, Sink(tls=None) as partner:
        relay = await start_relay(
            write_config(
                routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}").replace(
                    "tls: none}", "tls: opportunistic}", 2
                )
                + dlp()
            )
        )
        await send(relay, "nothing to see")  # permitted: opportunistic, plain to a peer without STARTTLS
        [plain] = await partner.received(1)
        assert parse(plain)["X-Sealrelay-DLP"] == "action=permit; policies="  # judged, nothing matched
        reply = await send(relay, f"card {CARD}")
        queue_id = reply.split()[-1]

        async def deferred():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(deferred, what="the card message to wait for TLS")
        assert "no STARTTLS" in detail.recipients[0].last_error and detail.meta["decision"]["action"] == "encrypt"
        assert len(partner.messages) == 1  # not one byte of the card message in clear
        [report] = await home.received(1)  # the policy owner was told
        assert (
            report.recipients == ["security@example.com"]
            and b"cards" in report.content
            and CARD.encode() not in report.content
        )


async def test_encrypted_mail_is_stamped_for_the_downstream_gateway(write_config, start_relay, ca) -> None:
    import ssl

    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    with Sink() as home, Sink(tls=ctx) as partner:
        relay = await start_relay(write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp()))
        await send(relay, f"card {CARD}", extra_headers="X-Sealrelay-DLP: action=permit; policies=forged\r\n")
        [got] = await partner.received(1)
        assert got.tls is not None
        assert parse(got).get_all("X-Sealrelay-DLP") == ["action=encrypt; policies=cards"]  # the forged one is gone


async def test_block_sends_an_ndr_and_delivers_nothing(write_config, start_relay) -> None:
    with Sink() as home, Sink() as partner:
        relay = await start_relay(write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp()))
        reply = await send(relay, "this is top secret")
        assert "blocked by policy" in reply
        [ndr] = await home.received(1)
        report = parse(ndr)
        assert report.get_content_type() == "multipart/report" and ndr.recipients == ["alice@example.com"]
        assert b"5.7.1" in ndr.content and b"secrets/secret" in ndr.content
        await send(relay, "harmless")
        await partner.received(1)
        assert all(b"top secret" not in m.content for m in partner.messages)


async def test_quarantine_holds_then_release_delivers(write_config, start_relay) -> None:
    with Sink() as home, Sink() as partner:
        config = write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp())
        relay = await start_relay(config)
        reply = await send(relay, "please see the draft for review")
        held_id = reply.split()[-1]
        [report] = await home.received(1)
        assert report.recipients == ["dlp-team@example.com"]

        def cli(*args):
            return subprocess.run(
                [sys.executable, "-m", "engine.cli.app", "quarantine", *args, "--config", str(config)],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )

        listed = await asyncio.to_thread(cli, "list", "--format", "json")
        [held] = json.loads(listed.stdout)
        assert held["id"] == held_id and held["policies"] == ["review"] and partner.messages == []
        released = await asyncio.to_thread(cli, "release", held_id)
        assert released.returncode == 0, released.stderr
        relay.deliverer.kick()
        [got] = await partner.received(1)
        assert b"for review" in got.content
        assert json.loads((await asyncio.to_thread(cli, "list", "--format", "json")).stdout) == []


async def test_monitor_mode_only_records(write_config, start_relay, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink() as home, Sink() as partner:
        relay = await start_relay(
            write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp("monitor"))
        )
        await send(relay, "this is top secret")
        [got] = await partner.received(1)  # delivered despite the block rule
        assert parse(got)["X-Sealrelay-DLP"] == "action=permit; policies=secrets"
        line = next(json.loads(r.getMessage()) for r in caplog.records if '"event":"received"' in r.getMessage())
        assert line["action"] == "permit" and line["would"] == "block" and line["rules"] == ["secrets/secret"]


async def test_inbound_mail_is_only_recorded(write_config, start_relay, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    with Sink() as home:
        relay = await start_relay(write_config(routes(home.port, "{host: 127.0.0.1, port: 9}") + dlp()))
        msg = "From: eve@outside.example\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\ntop secret\r\n"
        await submit(relay.ports()["mx"], msg, "eve@outside.example", ["alice@example.com"])
        [got] = await home.received(1)
        assert got.recipients == ["alice@example.com"]
        line = next(json.loads(r.getMessage()) for r in caplog.records if '"event":"received"' in r.getMessage())
        assert line["direction"] == "inbound" and line["action"] == "permit" and line["would"] == "permit"
        assert line["policies"] == []  # the rules say `direction: outbound`: inbound mail is not theirs


async def test_inbound_match_is_recorded_not_enforced(write_config, start_relay, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    rules = dlp().replace(
        "action_plan: block, destination: {direction: outbound}", "action_plan: block, destination: {direction: any}"
    )
    with Sink() as home:
        relay = await start_relay(write_config(routes(home.port, "{host: 127.0.0.1, port: 9}") + rules))
        msg = "From: eve@outside.example\r\nTo: alice@example.com\r\nSubject: hi\r\n\r\ntop secret\r\n"
        await submit(relay.ports()["mx"], msg, "eve@outside.example", ["alice@example.com"])
        [got] = await home.received(1)
        line = next(json.loads(r.getMessage()) for r in caplog.records if '"event":"received"' in r.getMessage())
        assert (line["direction"], line["action"], line["would"], line["policies"]) == (
            "inbound",
            "permit",
            "block",
            ["secrets"],
        )
        assert b"top secret" in got.content


async def test_matches_are_counted_per_policy(write_config, start_relay) -> None:
    from engine.relay.runtime.metrics import REGISTRY

    def matches() -> dict[str, float]:
        return {
            policy: REGISTRY.get_sample_value("sealrelay_dlp_matches_total", {"policy": policy}) or 0.0
            for policy in ("cards", "secrets", "review")
        }

    with Sink() as home, Sink() as partner:
        relay = await start_relay(write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp()))
        before = matches()
        await send(relay, "harmless")  # judged, matched by nothing
        await send(relay, "this is top secret")  # secrets (blocked)
        await send(relay, "please see the draft for review")  # review (held)
        await send(relay, f"top secret, and the card {CARD}")  # cards and secrets at once
        after = matches()
        assert {policy: after[policy] - before[policy] for policy in after} == {"cards": 1, "secrets": 2, "review": 1}


async def test_unscannable_mail_and_header_limits_are_counted(write_config, start_relay) -> None:
    """sealrelay_dlp_unscannable counts what DLP could not read; the header limits count
    their refusals in sealrelay_smtp_limit_hits_total, as the other limits do."""
    from engine.relay.runtime import metrics

    def value(name: str, labels: dict) -> float:
        return metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    unscannable = {"direction": "outbound"}
    header = {"limit": "max_header_count"}
    before = value("sealrelay_dlp_unscannable_total", unscannable), value("sealrelay_smtp_limit_hits_total", header)
    with Sink() as home, Sink() as partner:
        config = write_config(
            routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp(),
            system="  limits: {max_header_count: 5}\n",
        )
        relay = await start_relay(config)
        seven_zip = "Content-Type: multipart/mixed; boundary=b\r\nMIME-Version: 1.0\r\n\r\n--b\r\n\r\nhi\r\n--b\r\n"
        seven_zip += "Content-Type: application/octet-stream; name=a.7z\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        seven_zip += "N3q8ryccAAQ=\r\n--b--"
        head, _, body = seven_zip.partition("\r\n\r\n")
        assert "queued as" in await send(relay, body, extra_headers=head + "\r\n")
        many = "".join(f"X-Extra-{n}: {n}\r\n" for n in range(6))
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(relay, "hello", extra_headers=many)
    assert (refused.value.code, refused.value.message) == (552, "5.3.4 too many header fields (more than 5)")
    after = value("sealrelay_dlp_unscannable_total", unscannable), value("sealrelay_smtp_limit_hits_total", header)
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


async def test_quiet_mail_is_judged_on_arrival_and_the_rest_in_the_scanning_threads(write_config, start_relay) -> None:
    """Through the relay: plain text with nothing to find is judged on the loop and leaves
    as it came; a phrase (blocked) and an HTML body are judged in the threads
    (`sealrelay_dlp_judged_total{path}`, docs/dlp-scanning.md)."""
    from engine.relay.runtime.metrics import REGISTRY

    def judged() -> tuple[float, float]:
        return tuple(REGISTRY.get_sample_value("sealrelay_dlp_judged_total", {"path": p}) for p in ("loop", "pool"))

    with Sink() as home, Sink() as partner:
        relay = await start_relay(write_config(routes(home.port, f"{{host: 127.0.0.1, port: {partner.port}}}") + dlp()))
        before = judged()
        await send(relay, "harmless words, nothing else")
        assert "blocked by policy" in await send(relay, "this is top secret")
        await send(relay, "<p>harmless, in HTML</p>", extra_headers="Content-Type: text/html\r\n")
        after = judged()
        assert (after[0] - before[0], after[1] - before[1]) == (1, 2)
        delivered = await partner.received(2)
        bodies = sorted(parse(m).get_content().strip() for m in delivered)
        assert bodies == ["<p>harmless, in HTML</p>", "harmless words, nothing else"]
        assert all(parse(m)["X-Sealrelay-DLP"] == "action=permit; policies=" for m in delivered)
