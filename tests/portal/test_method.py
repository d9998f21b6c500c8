"""The `secure_portal` method inside a relay: stored and notified, never sent in clear.

An in-process relay (the relay tests' fixtures) with real aiosmtpd mailboxes; the portal's
service is wired to that relay as the `serve` component wires it.
"""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from engine.portal.service import PortalService, Wiring, open_store
from engine.relay.queue import Entry, NotQueued
from engine.relay.runtime.relay import Relay, load_live
from tests.relay.peers import Sink, eventually, submit

PORTAL = """\
routes:
  - {{name: home, recipients: {{domains: [example.com]}}, next_hop: {{host: 127.0.0.1, port: {home}}}, tls: none}}
  - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: {out}}}, tls: none}}
encryption:
  method: secure_portal
  secure_portal:
    url: https://portal.example.com
    retention: 30d
    notification:
      subject: "Secure mail from {{{{ sender }}}} about {{{{ subject }}}}"
      template: notice.txt.j2
      sender: secure@example.com
dlp:
  action_plans: [{{name: portal, email: encrypt}}]
  policies:
    - name: confidential
      rules:
        - name: marked
          conditions: {{any: [{{phrases: [confidential]}}]}}
          action_plan: portal
"""

NOTICE = "To {{ recipient }}: {{ attachment_count }} attachment(s), read by {{ expires }} at {{ link }}\n"

MAIL = (
    "From: alice@example.com\r\nTo: bob@partner.test\r\nSubject: Merger\r\nMIME-Version: 1.0\r\n"
    'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
    "confidential: the merger terms\r\n--b\r\nContent-Type: application/pdf\r\n"
    'Content-Disposition: attachment; filename="terms.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
    "JVBERi0xLjQK\r\n--b--\r\n"
)


def wire(relay) -> PortalService:
    live = relay.live

    async def enqueue(sender, recipients, content, meta):
        ref = await relay.queue.enqueue(sender, recipients, content, meta=meta)
        relay.deliverer.kick()
        return ref

    store = open_store(live.config.encryption.secure_portal, live.base_dir, live.data_dir)
    wiring = Wiring(asyncio.get_running_loop(), enqueue, relay.intake.receive, relay.runtime.current)
    return PortalService(store, wiring, live.data_dir)


async def test_without_a_portal_the_message_waits_then_goes_to_the_portal_not_the_recipient(
    write_config, start_relay, tmp_path: Path
) -> None:
    with Sink() as home, Sink() as out:
        (tmp_path / "notice.txt.j2").write_text(NOTICE)
        relay = await start_relay(write_config(PORTAL.format(home=home.port, out=out.port)))
        queue_id = (await submit(relay.ports()["mx"], MAIL, "alice@example.com", ["bob@partner.test"])).split()[-1]

        async def waiting():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(waiting, what="the flagged message to wait for the portal")
        assert detail.recipients[0].last_error == (
            "encryption method `secure_portal` failed: the secure portal is not running in this relay "
            "(it starts with `serve`)"
        )
        assert out.messages == []  # nothing of it left the relay

        service = wire(relay)
        service.register()
        try:
            await relay.queue.retry(queue_id)
            relay.deliverer.kick()
            [notice] = await out.received(1)
        finally:
            service.unregister()
        mail = message_from_bytes(notice.content, policy=default)
        assert notice.recipients == ["bob@partner.test"] and notice.sender == "secure@example.com"
        assert mail["subject"] == "Secure mail from alice@example.com about Merger"
        assert b"merger terms" not in notice.content and b"JVBERi0xLjQK" not in notice.content
        body = mail.get_content()
        link = re.fullmatch(
            r"To bob@partner.test: 1 attachment\(s\), read by \d{4}-\d\d-\d\d at (https://portal.example.com/m/(\S+))\r?\n",
            body,
        )
        assert link, repr(body)
        msg_id = link.group(2)
        assert len(msg_id) >= 22 and "@" not in link.group(1)
        row, raw = service.store.get("bob@partner.test", msg_id)
        assert b"confidential: the merger terms" in raw and row.head.attachments == ("terms.pdf",)
        assert round((row.expires - row.created) / 86400) == 30

        async def settled():  # delivered to the portal: the entry leaves the queue
            try:
                await relay.queue.show(queue_id)
            except NotQueued:
                return True
            return False

        await eventually(settled, what="the entry to be settled")
        service.store.close()


async def test_storing_twice_for_one_queue_entry_keeps_one_copy_and_one_notice(write_config, tmp_path: Path) -> None:
    with Sink() as home, Sink() as out:
        (tmp_path / "notice.txt.j2").write_text(NOTICE)
        relay = Relay(
            load_live(write_config(PORTAL.format(home=home.port, out=out.port)))
        )  # not started: nothing delivers
        service = wire(relay)
        try:
            entry = Entry("q-1", "alice@example.com", (), MAIL.encode(), {}, 0.0, False, 0.0)
            first = await service.protect(relay.live, entry, ["bob@partner.test"])
            again = await service.protect(relay.live, entry, ["bob@partner.test"])  # a retry after a crash
            assert first == again
            assert service.store.folder("bob@partner.test", "inbox")[1] == 1
            assert await relay.queue.count() == 1  # one notification queued, not two
        finally:
            service.store.close()
            await relay.stop()
