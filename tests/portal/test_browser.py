"""The secure portal in a real browser (Debian's Chromium through Playwright), driven the way a
person uses it: links and buttons found by their accessible role and name, fields by their
label. Mail goes through a real `sealrelay serve` (tests/portal/harness.py): alice@example.com
writes "confidential" mail, the DLP policy sends it to the portal, and the external recipient
reads the notification and the one-time codes at the `outside` mailbox.

Every page a test visits is checked with axe-core (no serious or critical violations) and
saved as a screenshot in `screenshots_dir`. `SEALRELAY_DOC_SCREENSHOTS=1` also rewrites
docs/portal-inbox.png (the inbox shown in the documentation).

One relay serves the whole module (a second one runs with other permissions); the tests stay
independent by each using recipient addresses of their own.
"""

from __future__ import annotations

import os
import re
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.portal.harness import PortalRelay
from tests.portal.infra import axe_violations, describe_violations

pytest.importorskip("playwright")

from playwright.sync_api import Page, expect  # noqa: E402

ALICE = "alice@example.com"
PASSWORD = "plum anchor glacier ferry 42"
PHRASE = "blue heron over the quay"
FORWARD_REFUSED = "Your organisation does not allow you to forward messages from the secure portal."
COMPOSE_REFUSED = "Your organisation does not allow you to write new messages from the secure portal."


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(scope="module")
def relay():
    """The default portal: reply all allowed, forward refused, compose to internal addresses only."""
    with PortalRelay(forward=False, compose=True, compose_to="internal") as running:
        yield running


@pytest.fixture(scope="module")
def forwarding_relay():
    """The other way round: forward allowed (to internal addresses), compose refused."""
    with PortalRelay(forward=True, forward_to="internal", compose=False) as running:
        yield running


@pytest.fixture
def shots(screenshots_dir: Path):
    """`check(page, name)`: the page has no serious/critical axe violations; saves a screenshot."""

    def check(page: Page, name: str) -> None:
        page.screenshot(path=str(screenshots_dir / f"portal-{name}.png"), full_page=True)
        violations = axe_violations(page)
        assert violations == [], f"axe on the {name} page ({page.url}):\n{describe_violations(violations)}"

    return check


def notices(relay: PortalRelay, address: str) -> list[EmailMessage]:
    """The notifications `address` has got so far (no waiting)."""
    from email import message_from_bytes
    from email.policy import default

    found = []
    for item in list(relay.outside.messages):
        msg = message_from_bytes(item.content, policy=default)
        if address in item.recipients and "secure message" in str(msg["subject"]):
            found.append(msg)
    return found


def deliver(
    relay: PortalRelay,
    to: str,
    subject: str,
    body: str,
    attachments: dict[str, bytes] | None = None,
    sender: str = ALICE,
    message_id: str | None = None,
) -> str:
    """Send `to` a message through the relay's SMTP listener (the DLP policy puts it in the
    portal), with a Message-ID like any mail client's; the portal link from the notification
    `to` gets for it."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    msg.set_content(body)
    for name, data in (attachments or {}).items():
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    before = len(notices(relay, to))
    with smtplib.SMTP("127.0.0.1", relay.ports["smtp"], timeout=10) as client:
        client.send_message(msg, from_addr=sender, to_addrs=[to])
    notice = relay.mail_to(relay.outside, to, "secure message", count=before + 1)[before]
    assert f'sent you a secure message: "{subject}"' in notice.get_content()
    return re.search(r"https://\S+/m/[A-Za-z0-9_-]+", notice.get_content()).group(0)


def open_with_code(page: Page, relay: PortalRelay, address: str, link: str, check=None, codes: int = 1) -> None:
    """Open a notification's link and sign in with the code mailed to `address` (the
    `codes`-th code it gets); ends on the message."""
    page.goto(link)
    expect(page.get_by_role("heading", level=1)).to_have_text("A secure message is waiting for you")
    if check:
        check(page, "landing")
    page.get_by_role("button", name="Email me a code").click()
    expect(page).to_have_url(f"{relay.url}/login/code/enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Enter your code")
    local, domain = address.split("@")
    masked = f"{local[0]}{'•' * max(1, min(len(local) - 1, 6))}@{domain}"
    expect(page.get_by_text("We sent a one-time code to")).to_contain_text(masked)
    if check:
        check(page, "code-enter")
    page.get_by_label("One-time code").fill(relay.code_for(address, codes))
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(link.replace("/m/", "/message/"))


def message_id(page: Page) -> str:
    return page.url.rsplit("/", 1)[1]


def expect_message(page: Page, subject: str, body: str, sender: str = ALICE) -> None:
    expect(page.get_by_role("heading", level=1)).to_have_text(subject)
    article = page.get_by_role("article")
    expect(article.locator("dt:text-is('From') + dd")).to_have_text(sender)
    expect(article.locator(".body")).to_have_text(body)


def expect_listed(page: Page, subjects: list[str]) -> None:
    """The mailbox page on screen lists exactly these subjects, in this order."""
    expect(page.get_by_role("table").get_by_role("link")).to_have_text(subjects)


def sign_out(page: Page, relay: PortalRelay) -> None:
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{relay.url}/login?bye=1")
    expect(page.get_by_role("status")).to_have_text("You are signed out.")


def plain_text(msg: EmailMessage) -> str:
    return msg.get_body(preferencelist=("plain",)).get_content()


def attachments_of(msg: EmailMessage) -> dict[str, bytes]:
    return {part.get_filename(): part.get_content() for part in msg.iter_attachments()}


def page_width(page: Page) -> tuple[int, int]:
    """The page's width and the window's, once the page (and its stylesheet) has loaded."""
    page.wait_for_load_state("load")
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


# ---------------------------------------------------------------------------------------------
# Reading: first contact, password, sign-out


def test_first_contact_opens_the_message_and_downloads_the_attachment(page: Page, relay, shots):
    bob = "bob-first@partner.test"
    data = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
    body = "This is confidential: the Q3 numbers for the partner review."
    link = deliver(relay, bob, "Q3 numbers", body, {"q3-numbers.pdf": data})

    open_with_code(page, relay, bob, link, check=shots)

    expect_message(page, "Q3 numbers", body)
    expect(page.get_by_role("article").locator("dt:text-is('To') + dd")).to_have_text(bob)
    expect(page.get_by_role("status")).to_have_text(
        "Set a password on the Account page to sign in without a code next time."
    )
    expect(page.get_by_role("listitem").filter(has_text="q3-numbers.pdf")).to_have_text("q3-numbers.pdf (2.1 KB)")
    shots(page, "message")

    with page.expect_download() as info:
        page.get_by_role("link", name="q3-numbers.pdf").click()
    download = info.value
    assert download.suggested_filename == "q3-numbers.pdf"
    assert Path(download.path()).read_bytes() == data


def test_set_a_password_then_sign_in_with_it(page: Page, relay, shots):
    bob = "bob-password@partner.test"
    subject, body = "Board minutes", "The confidential minutes of the March board meeting."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body))

    page.get_by_role("link", name="Account").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Account")
    expect(page.get_by_role("heading", level=2, name="Set a password")).to_be_visible()
    expect(page.get_by_label("Current password")).to_have_count(0)  # none yet
    shots(page, "account")
    page.get_by_label("New password", exact=True).fill(PASSWORD)
    page.get_by_label("New password again").fill(PASSWORD)
    page.get_by_label("Security phrase").fill(PHRASE)
    page.get_by_role("button", name="Save password").click()
    expect(page).to_have_url(f"{relay.url}/account?done=password")
    expect(page.get_by_role("status")).to_have_text("Your password is saved.")
    expect(page.get_by_role("heading", level=2, name="Change your password")).to_be_visible()
    expect(page.get_by_text("Shown when you sign in")).to_contain_text(f"Now: {PHRASE}. Leave empty to keep it.")

    sign_out(page, relay)
    page.get_by_label("Email address").fill(bob)
    page.get_by_role("button", name="Next").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_role("note").get_by_role("paragraph").first).to_have_text(f"Your security phrase: {PHRASE}")
    expect(page.get_by_label("Email address")).to_have_value(bob)
    shots(page, "password")
    page.get_by_label("Password", exact=True).fill("plum anchor glacier ferry 24")  # a slip of the fingers
    with page.expect_response(f"{relay.url}/login/password") as answer:
        page.get_by_role("button", name="Sign in").click()
    assert answer.value.status == 401
    expect(page.get_by_role("alert")).to_have_text("That address and password do not match.")
    expect(page.get_by_role("note").get_by_role("paragraph").first).to_have_text(f"Your security phrase: {PHRASE}")
    shots(page, "password-refused")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{relay.url}/inbox")
    expect(page.get_by_role("heading", level=1)).to_have_text("Inbox")
    expect_listed(page, [subject])
    expect(page.get_by_role("row").nth(1).get_by_role("cell").first).to_have_text(ALICE)
    page.get_by_role("link", name=subject).click()
    expect_message(page, subject, body)
    expect(page.get_by_text("Set a password on the")).to_have_count(0)  # it has one now


def test_sign_out_leaves_nothing_behind_the_back_button(page: Page, relay, shots):
    bob = "bob-logout@partner.test"
    subject, body = "Merger timetable", "Strictly confidential: the merger closes on the 30th."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body))
    expect_message(page, subject, body)

    sign_out(page, relay)
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    shots(page, "login")

    page.go_back()
    expect(page).to_have_url(f"{relay.url}/login")  # the message page now redirects to sign-in
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    html = page.content()
    assert subject not in html
    assert "merger closes" not in html

    page.goto(f"{relay.url}/inbox")
    expect(page).to_have_url(f"{relay.url}/login")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")


# ---------------------------------------------------------------------------------------------
# Writing: reply, forward, compose


def test_reply_reaches_the_sender_and_is_in_sent(page: Page, relay, shots):
    bob = "bob-reply@partner.test"
    subject, body = "Draft contract", "Please review the confidential draft by Friday."
    original = make_msgid(domain="example.com")
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body, message_id=original))

    page.get_by_role("link", name="Reply", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Reply")
    expect(page.get_by_label("To", exact=True)).to_have_value(ALICE)
    expect(page.get_by_label("To", exact=True)).not_to_be_editable()
    expect(page.get_by_label("Subject", exact=True)).to_have_value(f"Re: {subject}")
    expect(page.get_by_label("Message", exact=True)).to_have_value(f"\n\n{ALICE} wrote:\n> {body}")
    shots(page, "compose-reply")
    reply = "Thanks Alice, clause 4 needs another look; the rest is fine."
    page.get_by_label("Message", exact=True).fill(reply)
    page.get_by_role("button", name="Send securely").click()

    expect(page).to_have_url(f"{relay.url}/sent?done=sent")
    expect(page.get_by_role("status")).to_have_text("Your message was sent.")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sent")
    expect_listed(page, [f"Re: {subject}"])
    expect(page.get_by_role("columnheader").first).to_have_text("To")
    expect(page.get_by_role("row").nth(1).get_by_role("cell").first).to_have_text(ALICE)
    shots(page, "sent")

    (mail,) = relay.mail_to(relay.internal, ALICE, f"Re: {subject}")
    assert mail["From"] == bob
    assert plain_text(mail).strip() == reply
    assert mail["In-Reply-To"] == original  # threaded under the original
    assert mail["References"] == original


def test_forward_is_refused_when_not_allowed(page: Page, relay, shots):
    bob = "bob-forward@partner.test"
    subject, body = "Pricing sheet", "Confidential pricing for the renewal."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body))
    expect(page.get_by_role("link", name="Reply", exact=True)).to_be_visible()  # the actions are there...
    expect(page.get_by_role("link", name="Forward")).to_have_count(0)  # ...but no Forward
    expect(page.get_by_role("button", name="Forward")).to_have_count(0)
    msg = message_id(page)

    answer = page.goto(f"{relay.url}/compose?mode=forward&source={msg}")
    assert answer.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_have_text(FORWARD_REFUSED)
    shots(page, "error-403")

    # Nor does a hand-made form get through: the server checks, whatever the page offered.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    sent = page.request.post(
        f"{relay.url}/compose",
        multipart={"csrf": csrf, "mode": "forward", "source": msg, "to": "erin@example.com", "body": "fwd"},
    )
    assert sent.status == 403
    assert FORWARD_REFUSED in sent.text()
    assert not any("erin@example.com" in item.recipients for item in relay.internal.messages)


def test_forward_when_allowed_carries_the_attachments(page: Page, forwarding_relay, shots):
    relay = forwarding_relay
    bob = "bob-forward-ok@partner.test"
    data = b"PK\x03\x04 spreadsheet bytes \x00\xff"
    subject, body = "Budget 2025", "The confidential budget, as discussed."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body, {"budget.xlsx": data}))

    # compose is refused on this portal: no link, and the page itself says so
    expect(page.get_by_role("navigation", name="Mailbox").get_by_role("link")).to_have_text(
        ["Inbox", "Sent", "Trash", "Account"]
    )
    msg = message_id(page)
    answer = page.goto(f"{relay.url}/compose")
    assert answer.status == 403
    expect(page.get_by_role("alert")).to_have_text(COMPOSE_REFUSED)
    page.goto(f"{relay.url}/message/{msg}")

    page.get_by_role("link", name="Forward").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Forward")
    expect(page.get_by_label("Subject", exact=True)).to_have_value(f"Fwd: {subject}")
    expect(page.get_by_text("The original attachments are forwarded too.")).to_be_visible()
    shots(page, "compose-forward")
    page.get_by_label("To", exact=True).fill("dave@example.com")
    page.get_by_role("button", name="Send securely").click()
    expect(page).to_have_url(f"{relay.url}/sent?done=sent")
    expect_listed(page, [f"Fwd: {subject}"])

    (mail,) = relay.mail_to(relay.internal, "dave@example.com", f"Fwd: {subject}")
    assert mail["From"] == bob
    assert "--- Forwarded message ---" in plain_text(mail)
    assert body in plain_text(mail)
    assert attachments_of(mail) == {"budget.xlsx": data}


def test_compose_to_an_outside_address_is_refused_then_an_internal_one_is_sent(page: Page, relay, shots):
    bob = "bob-compose@partner.test"
    open_with_code(page, relay, bob, deliver(relay, bob, "Kick-off", "Confidential agenda for the kick-off."))

    page.get_by_role("link", name="New message").click()
    expect(page).to_have_url(f"{relay.url}/compose")
    expect(page.get_by_role("heading", level=1)).to_have_text("New message")
    shots(page, "compose")
    page.get_by_label("To", exact=True).fill("carol@elsewhere.test")
    page.get_by_label("Subject", exact=True).fill("Agenda question")
    page.get_by_label("Message", exact=True).fill("Can we add the logistics item to the agenda?")
    with page.expect_response(lambda r: r.url == f"{relay.url}/compose" and r.request.method == "POST") as answer:
        page.get_by_role("button", name="Send securely").click()
    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_have_text(
        "You can only send to addresses at example.com. Not allowed: carol@elsewhere.test."
    )
    # the draft is kept
    expect(page.get_by_label("Subject", exact=True)).to_have_value("Agenda question")
    expect(page.get_by_label("Message", exact=True)).to_have_value("Can we add the logistics item to the agenda?")
    shots(page, "compose-refused")

    page.get_by_label("To", exact=True).fill("dave@example.com")
    page.get_by_role("button", name="Send securely").click()
    expect(page).to_have_url(f"{relay.url}/sent?done=sent")
    expect_listed(page, ["Agenda question"])

    (mail,) = relay.mail_to(relay.internal, "dave@example.com", "Agenda question")
    assert mail["From"] == bob
    assert plain_text(mail).strip() == "Can we add the logistics item to the agenda?"
    assert not any("carol@elsewhere.test" in item.recipients for item in relay.outside.messages)


# ---------------------------------------------------------------------------------------------
# The mailbox: search, trash


def test_search_finds_a_word_of_the_body(page: Page, relay, shots):
    bob = "bob-search@partner.test"
    subject, body = "Travel plans", "Confidential: the walrus team flies to Lisbon on Monday."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body))

    page.get_by_role("searchbox", name="Search your messages").fill("walrus")
    page.get_by_role("button", name="Search").click()
    expect(page).to_have_url(f"{relay.url}/search?q=walrus")
    expect(page.get_by_role("heading", level=1)).to_have_text("Search results for “walrus”")
    expect_listed(page, [subject])
    expect(page.get_by_role("searchbox", name="Search your messages")).to_have_value("walrus")
    shots(page, "search")

    page.get_by_role("searchbox", name="Search your messages").fill("zeppelin")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Search results for “zeppelin”")
    expect(page.get_by_role("main").get_by_role("paragraph")).to_have_text("No messages match.")
    expect(page.get_by_role("table")).to_have_count(0)
    shots(page, "search-empty")

    page.get_by_role("searchbox", name="Search your messages").fill("Lisbon")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name=subject).click()
    expect_message(page, subject, body)


def test_trash_and_restore(page: Page, relay, shots):
    bob = "bob-trash@partner.test"
    subject, body = "Old quote", "The confidential quote from last year."
    open_with_code(page, relay, bob, deliver(relay, bob, subject, body))

    page.get_by_role("button", name="Move to trash").click()
    expect(page).to_have_url(f"{relay.url}/inbox?done=trashed")
    expect(page.get_by_role("status")).to_have_text("Moved to the trash.")
    expect(page.get_by_role("main").get_by_role("paragraph").last).to_have_text("No messages here.")
    expect(page.get_by_role("link", name=subject)).to_have_count(0)
    shots(page, "inbox-empty")

    page.get_by_role("link", name="Trash").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Trash")
    expect_listed(page, [subject])
    shots(page, "trash")
    page.get_by_role("link", name=subject).click()
    expect_message(page, subject, body)
    expect(page.get_by_role("button", name="Delete for good")).to_be_visible()
    shots(page, "message-in-trash")
    page.get_by_role("button", name="Restore").click()

    expect(page).to_have_url(f"{relay.url}/trash?done=restored")
    expect(page.get_by_role("status")).to_have_text("Restored.")
    expect(page.get_by_role("link", name=subject)).to_have_count(0)
    page.get_by_role("link", name="Inbox").click()
    expect_listed(page, [subject])


# ---------------------------------------------------------------------------------------------
# The pages a visitor sees before signing in, and the account's other pages


def test_sign_in_by_code_pages(page: Page, relay, shots):
    bob = "bob-code@partner.test"
    subject, body = "Site survey", "Confidential survey results for the north site."
    deliver(relay, bob, subject, body)

    page.goto(relay.url)
    expect(page).to_have_url(f"{relay.url}/login")
    page.get_by_role("link", name="Sign in with a code sent to your email").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in with a code")
    shots(page, "code-request")
    page.get_by_label("Email address").fill(bob)
    page.get_by_role("button", name="Send me a code").click()
    expect(page).to_have_url(f"{relay.url}/login/code/enter")
    page.get_by_label("One-time code").fill("00000000")
    page.get_by_role("button", name="Open").click()
    expect(page.get_by_role("alert")).to_have_text("That code is not right. Check the latest mail from the portal.")
    shots(page, "code-wrong")
    page.get_by_label("One-time code").fill(relay.code_for(bob))
    page.get_by_role("button", name="Open").click()
    expect(page).to_have_url(f"{relay.url}/inbox")
    expect_listed(page, [subject])
    shots(page, "inbox")


def test_totp_enrolment_then_sign_in_asks_for_the_second_factor(page: Page, relay, shots):
    import pyotp

    bob = "bob-totp@partner.test"
    open_with_code(page, relay, bob, deliver(relay, bob, "Keys", "Confidential key ceremony notes."))
    page.get_by_role("link", name="Account").first.click()
    with page.expect_response(f"{relay.url}/account/totp") as answer:
        page.get_by_role("link", name="Turn on two-step sign-in").click()
    assert answer.value.status == 200
    expect(page.get_by_role("heading", level=1)).to_have_text("Set up two-step sign-in")
    expect(page.locator(".qr svg title")).to_have_text("TOTP QR code")
    shots(page, "totp-enrol")
    secret = page.locator("code.secret").inner_text()
    page.get_by_label("Code from the app").fill("000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("alert")).to_have_text(
        "That code is not right; check the time on your phone and try the current code."
    )
    page.get_by_label("Code from the app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Turn on").click()
    expect(page.get_by_role("status")).to_have_text("Two-step sign-in is on.")

    # a password too (a second code within the minute would be refused by the rate limit)
    page.get_by_label("New password", exact=True).fill("plum anchor glacier ferry 42")
    page.get_by_label("New password again").fill("plum anchor glacier ferry 42")
    page.get_by_label("Security phrase").fill("quiet lantern")
    page.get_by_role("button", name="Save password").click()
    expect(page.get_by_role("status")).to_have_text("Your password is saved.")

    sign_out(page, relay)
    page.get_by_label("Email address").fill(bob)
    page.get_by_role("button", name="Next").click()
    page.get_by_label("Password").fill("plum anchor glacier ferry 42")
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{relay.url}/login/totp")
    expect(page.get_by_role("heading", level=1)).to_have_text("Two-step sign-in")
    page.goto(f"{relay.url}/inbox")  # the mailbox waits for the second factor
    expect(page).to_have_url(f"{relay.url}/login/totp")
    shots(page, "totp-sign-in")
    page.get_by_label("6-digit code from your authenticator app").fill(pyotp.TOTP(secret).now())
    page.get_by_role("button", name="Continue").click()
    expect(page).to_have_url(f"{relay.url}/inbox")
    expect_listed(page, ["Keys"])


# ---------------------------------------------------------------------------------------------
# Layout


def test_phone_viewport_has_no_horizontal_scrolling(page: Page, relay, shots):
    page.set_viewport_size({"width": 390, "height": 844})
    bob = "bob-phone@partner.test"
    subject = "Countersigned master services agreement — Harbour Logistics (final, with all schedules)"
    body = (
        "Hi Bob,\n\nThe confidential countersigned agreement is attached. The signing record is at "
        "https://sign.example.com/envelopes/3f9a2c71-8d4e-4b0a-9c51-2e7d6f1a8b90/documents/combined?download=true"
        "\n\nRegards,\nAlice"
    )
    name = "Harbour-Logistics-MSA-final-countersigned-including-schedules-A-to-F.pdf"
    link = deliver(
        relay, bob, subject, body, {name: b"%PDF-1.7 signed"}, sender="contracts.management.team@example.com"
    )
    open_with_code(page, relay, bob, link)

    expect_message(page, subject, body, sender="contracts.management.team@example.com")
    width, viewport = page_width(page)
    assert width <= viewport, f"the message page scrolls sideways: {width}px wide in a {viewport}px window"
    shots(page, "phone-message")

    page.get_by_role("link", name="Inbox").click()
    expect_listed(page, [subject])
    width, viewport = page_width(page)
    assert width <= viewport, f"the inbox scrolls sideways: {width}px wide in a {viewport}px window"
    shots(page, "phone-inbox")


# ---------------------------------------------------------------------------------------------
# The documentation's screenshot

DOC_MESSAGES = [
    (
        "maria.lopez@example.com",
        "Q3 board pack (final)",
        "Hi Jordan,\n\nAttached is the final board pack for Thursday. Please treat the figures as "
        "confidential until the results are published on the 14th.\n\nMaria",
        {"Q3-board-pack.pdf": b"%PDF-1.7\n" + bytes(48_000)},
    ),
    (
        "legal@example.com",
        "Signed NDA, Project Heron",
        "Jordan, the countersigned NDA is attached for your records. Its terms are confidential; "
        "please share it only with the people named in section 2.",
        {"NDA-Project-Heron-signed.pdf": b"%PDF-1.7\n" + bytes(120_000)},
    ),
    (
        "accounts.payable@example.com",
        "New bank details for invoice 4471",
        "Hello, our bank details change on 1 July. The confidential details are below; please "
        "confirm them by phone before the next payment run.",
        None,
    ),
    (
        "sam.okafor@example.com",
        "Site visit on the 21st",
        "Thanks Jordan. I have added the confidential floor plans for the visit; see you at the north gate at 9:30.",
        None,
    ),
]


def test_inbox_with_several_messages(page: Page, relay, shots, screenshots_dir):
    jordan = "jordan.lee@partner.test"
    links = [
        deliver(relay, jordan, subject, body, files, sender=sender) for sender, subject, body, files in DOC_MESSAGES
    ]
    page.set_viewport_size({"width": 1280, "height": 800})
    open_with_code(page, relay, jordan, links[0])  # the oldest: read, the others unread
    page.get_by_role("link", name="Inbox").click()

    expected = [subject for _, subject, _, _ in reversed(DOC_MESSAGES)]  # newest first
    expect_listed(page, expected)
    expect(page.get_by_role("table").get_by_role("caption")).to_have_text("4 messages")
    expect(page.locator("tr.unread")).to_have_count(3)
    expect(page.get_by_role("row").filter(has_text="Signed NDA")).to_contain_text("(1 attachment)")
    shots(page, "inbox-several")

    target = ROOT / "docs" / "portal-inbox.png" if os.environ.get("SEALRELAY_DOC_SCREENSHOTS") == "1" else None
    page.screenshot(path=str(target or screenshots_dir / "docs-portal-inbox.png"))
