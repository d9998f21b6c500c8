"""A DLP action plan can make its mail's envelopes revocable (or offline) whatever
`encryption.advanced.delivery` says; the decision carries it through the queue."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.config.load import load_config
from engine.portal import envelope
from engine.portal.service import PortalService, Wiring, open_store, portal_settings
from engine.relay.decision import Decision
from engine.relay.dlp.decide import judge
from engine.relay.methods.advanced import seal_all
from engine.relay.queue import Entry
from engine.relay.runtime.live import provision

CONFIG = """\
version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
  data_dir: ./var
encryption:
  method: advanced
  advanced: {portal_url: "https://portal.example.com", delivery: offline}
dlp:
  action_plans:
    - {name: seal, email: encrypt}
    - {name: seal-revocable, email: encrypt, advanced_delivery: revocable}
  policies:
    - name: p
      rules:
        - {name: ordinary, conditions: {phrases: [quarterly]}, action_plan: seal}
        - {name: board, conditions: {phrases: [merger]}, action_plan: seal-revocable}
"""


@pytest.fixture
def live(tmp_path: Path):
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG)
    result = load_config(path)
    assert result.ok, result.diagnostics
    return provision(result.config, base_dir=tmp_path, version=1, tls=False)


def mail(words: str) -> bytes:
    return f"From: alice@example.com\r\nTo: bob@partner.test\r\nSubject: s\r\n\r\n{words}\r\n".encode()


@pytest.mark.parametrize(
    ("words", "delivery"),
    [("quarterly figures", ""), ("merger terms", "revocable"), ("quarterly merger", "revocable"), ("hello", "")],
)
def test_the_decision_carries_the_plans_delivery(live, words: str, delivery: str) -> None:
    decision = judge(live, mail(words), "alice@example.com", ["bob@partner.test"], None)
    assert decision.delivery == delivery
    assert Decision.from_record(decision.to_record()).delivery == delivery
    assert ("delivery" in decision.to_record()) == bool(delivery)


def test_a_revocable_plan_leaves_out_the_recipient_slot(live) -> None:
    store = open_store(portal_settings(live.config), live.base_dir, live.data_dir)
    try:
        service = PortalService(store, Wiring(asyncio.new_event_loop(), None, None, lambda: live), live.data_dir)
        private = ec.generate_private_key(ec.SECP256R1())
        spki = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        wrapped = {"kdf": "pbkdf2-sha256", "iterations": 600000, "salt": "", "iv": "", "sealed": ""}
        store.ensure_account("bob@partner.test")
        store.set_browser_key("bob@partner.test", base64.b64encode(spki).decode(), json.dumps(wrapped))
        slots = {}
        for words in ("quarterly figures", "merger terms"):
            decision = judge(live, mail(words), "alice@example.com", ["bob@partner.test"], None)
            entry = Entry(
                os.urandom(4).hex(),
                "alice@example.com",
                (),
                mail(words),
                {"decision": decision.to_record()},
                0.0,
                False,
                0.0,
            )
            notice = seal_all(service, live, entry, ["bob@partner.test"])["bob@partner.test"]
            html = notice.split(b"Content-Transfer-Encoding: 7bit\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
            header = envelope.parts(html.replace(b"\r\n", b"\n"))[1]
            slots[words] = ([s["type"] for s in header["slots"]], bool(header["held"]))
            text = message_from_bytes(notice, policy=default).get_body(("plain",)).get_content()
            said = "can be opened with your key's password for good" in " ".join(text.split())
            assert said == (words == "quarterly figures")
        assert slots == {"quarterly figures": (["recipient"], True), "merger terms": ([], True)}
    finally:
        store.close()
