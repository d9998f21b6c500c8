"""Mail written in the portal goes through the relay's own pipeline: DLP, the queue, routes.
Internal recipients get it from the relay; outside recipients only through their own
portal mailbox; what DLP blocks is not delivered and the writer is told."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.portal.harness import PortalRelay


@pytest.fixture(scope="module")
def relay():
    with PortalRelay(compose=True, compose_to="any") as relay:
        yield relay


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


@contextmanager
def signed_in(relay: PortalRelay, address: str) -> Iterator[httpx.Client]:
    relay.send("alice@example.com", [address], f"Hello {address}", "confidential: hello")
    with httpx.Client(verify=False, base_url=relay.url) as http:
        yield sign_in(relay, http, address)


def sign_in(relay: PortalRelay, http: httpx.Client, address: str) -> httpx.Client:
    link = relay.link_for(address)
    landing = http.get(link)
    http.post(link.split(relay.url)[1] + "/code", data={"csrf": csrf_of(landing.text)})
    page = http.get("/login/code/enter")
    done = http.post("/login/code/enter", data={"csrf": csrf_of(page.text), "code": relay.code_for(address)})
    assert done.status_code == 303 and done.headers["location"].startswith("/message/")
    return http


def compose(http: httpx.Client, to: str, subject: str, body: str) -> httpx.Response:
    page = http.get("/compose")
    return http.post(
        "/compose",
        data={
            "csrf": csrf_of(page.text),
            "mode": "new",
            "source": "",
            "to": to,
            "cc": "",
            "subject": subject,
            "body": body,
        },
    )


def test_to_an_internal_and_an_outside_address_each_goes_its_own_way(relay: PortalRelay) -> None:
    with signed_in(relay, "vic@partner.test") as http:
        sent = compose(http, "dave@example.com, wendy@elsewhere.test", "Plans", "the plans for friday")
        assert (sent.status_code, sent.headers["location"]) == (303, "/sent?done=sent")
        [internal] = relay.mail_to(relay.internal, "dave@example.com", "Plans")
        assert internal["from"] == "vic@partner.test" and "the plans for friday" in internal.get_content()
        assert internal["x-sealrelay-portal"] == "sent from the secure portal"
        assert "secure-portal" in internal["received"]
        # the outside recipient gets a notification, not the message
        [notice] = relay.mail_to(relay.outside, "wendy@elsewhere.test", "secure message")
        assert "the plans for friday" not in notice.get_content()
        assert "vic@partner.test" in str(notice["subject"])
        assert not [m for m in relay.outside.messages if b"the plans for friday" in m.content]
        sent_folder = http.get(sent.headers["location"])
        assert "Plans" in sent_folder.text and "Your message was sent." in sent_folder.text


def test_what_dlp_blocks_is_not_delivered_and_the_writer_is_told(relay: PortalRelay) -> None:
    """To an outside address it is outbound mail, and DLP acts (to internal addresses only it
    is inbound mail, which DLP judges in monitor mode, as for any mail from outside)."""
    with signed_in(relay, "xena@partner.test") as http:
        sent = compose(http, "dave@example.com, yuri@elsewhere.test", "Nightshade", "status of project-nightshade")
        assert sent.headers["location"] == "/sent?done=blocked"
        told = http.get(sent.headers["location"])
        assert "the organisation&#39;s policy blocks it" in told.text
        [dsn] = relay.mail_to(relay.outside, "xena@partner.test", "Undelivered Mail Returned to Sender")
        assert "blocked by data loss protection policy (forbidden/word)" in dsn.as_string()
        assert not [m for m in relay.internal.messages if b"project-nightshade" in m.content]
        assert not [m for m in relay.outside.messages if "yuri@elsewhere.test" in m.recipients]
