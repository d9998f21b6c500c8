"""Sender-routed recipients (percent hack, bang paths, a quoted @) are refused at RCPT: their
domain is internal, but a next hop that honours the old forms would send them outside, past
the relay check and outbound DLP."""

from __future__ import annotations

import aiosmtplib
import pytest

from engine.relay.smtp.edge import sender_routed
from tests.relay.peers import Sink
from tests.relay.test_edge import route_to


@pytest.mark.parametrize(
    "recipient",
    ["bob%partner.example@example.com", "partner.example!bob@example.com", '"bob@partner.example"@example.com'],
)
async def test_sender_routed_recipients_are_refused(write_config, start_relay, recipient: str) -> None:
    with Sink() as sink:
        relay = await start_relay(write_config(route_to(sink.port)))
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False) as client:
            await client.ehlo()
            await client.mail("someone@partner.test")
            with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                await client.rcpt(recipient)
            assert refused.value.code == 550
            assert refused.value.message == (
                f"5.7.1 <{recipient}>: sender-routed addresses (%, !, a quoted @) are not accepted"
            )
            code, _ = await client.rcpt("bob@example.com")  # an ordinary recipient still is
            assert code == 250


def test_only_routing_forms_count() -> None:
    assert not sender_routed("bob@example.com")
    assert not sender_routed('"bob smith"@example.com')  # a quoted local part without @ is fine
    assert not sender_routed("bob+tag@example.com")
    assert sender_routed("<bob%x.example@example.com>")
