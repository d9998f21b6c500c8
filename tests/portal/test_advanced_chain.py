"""The advanced method in the chain: the backup when mandatory TLS cannot be had, and
never a clear copy when the portal that holds its keys is not running."""

from __future__ import annotations

from pathlib import Path

from engine.portal import envelope
from tests.portal.harness import PortalRelay
from tests.relay.peers import Sink, eventually, submit, wait_for


def test_mandatory_tls_to_a_peer_without_starttls_sends_the_envelope_instead(tmp_path: Path) -> None:
    with PortalRelay(method="tls+advanced") as relay:
        relay.send("alice@example.com", ["pat@partner.test"], "Payroll", "confidential: the payroll file")
        [notice] = relay.mail_to(relay.outside, "pat@partner.test", "Secure message from alice@example.com")
        [attached] = list(notice.iter_attachments())
        header = envelope.parts(attached.get_content().encode("ascii"))[1]
        assert header["held"] and header["data"] == "inline"
        # the peer never saw the message itself, only the envelope
        assert not [m for m in relay.outside.messages if b"the payroll file" in m.content]
        assert "the payroll file" not in notice.as_string()
        # the delivery record says how it went: TLS failed, the backup's envelope was sent
        line = wait_for(
            lambda: next((ln for ln in relay.logs().splitlines() if "after TLS failed: advanced envelope" in ln), None),
            10,
            "the delivery record",
        )
        assert '"result":"delivered"' in line and '"recipient":"pat@partner.test"' in line


ADVANCED = """\
routes:
  - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: {out}}}, tls: none}}
encryption:
  method: advanced
  advanced: {{portal_url: "https://portal.example.com"}}
dlp:
  action_plans: [{{name: seal, email: encrypt}}]
  policies:
    - name: confidential
      rules:
        - name: marked
          conditions: {{any: [{{phrases: [confidential]}}]}}
          action_plan: seal
"""


async def test_without_the_portal_the_message_waits_never_in_clear(write_config, start_relay) -> None:
    with Sink() as out:
        relay = await start_relay(write_config(ADVANCED.format(out=out.port)))
        mail = "From: alice@example.com\r\nTo: quinn@partner.test\r\nSubject: s\r\n\r\nconfidential: do not leak\r\n"
        queue_id = (await submit(relay.ports()["mx"], mail, "alice@example.com", ["quinn@partner.test"])).split()[-1]

        async def waiting():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(waiting, what="the message to wait for the portal")
        assert detail.recipients[0].last_error == (
            "encryption method `advanced` failed: the secure portal, which holds the message keys, "
            "is not running in this relay"
        )
        assert out.messages == []
