"""The advanced method's envelope in a real browser (Debian's Chromium, headless).

The envelope is saved from the delivered notice and opened from a file, as a recipient
does. Offline cases run with every network request refused and recorded: the page must
open without one. Online cases go through the portal in a second tab, as the page sends
the recipient there, and the released key comes back to the file's tab.
"""

from __future__ import annotations

import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from engine.portal import envelope
from tests.portal.harness import PortalRelay
from tests.portal.infra import axe_violations, describe_violations

PASSWORD = "cobalt lantern orchard 2026"
ATTACHMENT = bytes(range(256)) * 8  # binary, all byte values


@pytest.fixture(scope="module")
def relay():
    with PortalRelay(method="advanced") as relay:
        yield relay


@pytest.fixture(scope="module")
def large_relay():
    """Revocable delivery, and every envelope too large to carry its ciphertext (1 KB)."""
    with PortalRelay(method="advanced", delivery="revocable", max_envelope="1KB") as relay:
        yield relay


def envelope_for(
    relay: PortalRelay, tmp_path: Path, address: str, subject: str, n: int = 1
) -> tuple[Path, EmailMessage]:
    relay.send(
        "alice@example.com", [address], subject, f"confidential: the body of {subject}", {"figures.bin": ATTACHMENT}
    )
    notice = relay.mail_to(relay.outside, address, "Secure message from alice@example.com", n)[n - 1]
    [attached] = list(notice.iter_attachments())
    assert attached.get_filename() == "secure-message.html" and attached.get_content_type() == "text/html"
    path = tmp_path / f"{address.split('@')[0]}-{n}.html"
    path.write_bytes(attached.get_content().encode("ascii"))
    return path, notice


def offline(page: Page) -> list[str]:
    """Refuse every request that is not the file itself; the list of what was asked for."""
    asked: list[str] = []

    def refuse(route):
        asked.append(route.request.url)
        route.abort()

    page.context.route(re.compile(r"^(https?|wss?)://"), refuse)
    page.on("request", lambda r: asked.append(r.url) if not r.url.startswith(("file:", "blob:", "data:")) else None)
    return asked


def open_online(page: Page, relay: PortalRelay, address: str, nth: int = 1) -> Page:
    """Click "open with a code", sign in with the code in the new tab; that tab."""
    with page.expect_popup() as opened:
        page.get_by_role("button", name="Open with a code from the portal").click()
    tab = opened.value
    tab.get_by_role("button", name="Email me a code").click()
    tab.get_by_label("One-time code").fill(relay.code_for(address, nth))
    tab.get_by_role("button", name="Open").click()
    return tab


def test_first_contact_opens_online_after_a_code_then_a_key_makes_the_next_open_offline(
    page: Page, relay: PortalRelay, tmp_path: Path
) -> None:
    address = "kim@partner.test"
    first, notice = envelope_for(relay, tmp_path, address, "Q3 figures")
    text = notice.get_body(("plain",)).get_content()
    assert "Save the attachment and open it in a web" in text
    assert "This message opens only through the portal" in text  # no key yet: revocable, said so

    page.goto(first.as_uri())
    expect(page.get_by_role("heading", name="A secure message for you")).to_be_visible()
    expect(page.get_by_label("Password of your secure-message key")).to_be_hidden()  # no key slot
    violations = axe_violations(page)
    assert not violations, describe_violations(violations)
    tab = open_online(page, relay, address)
    expect(tab.get_by_role("status")).to_have_text("The key went to your message: go back to its tab, it is open now.")
    expect(page.locator("#subject")).to_have_text("Q3 figures")
    expect(page.locator("#text")).to_have_text("confidential: the body of Q3 figures")

    # a security phrase (shown by envelopes once open), then a key made in the browser: the
    # next envelope opens offline with its password
    tab.goto(f"{relay.url}/account")
    tab.get_by_label("New password", exact=True).fill("plum anchor glacier ferry 42")
    tab.get_by_label("New password again").fill("plum anchor glacier ferry 42")
    tab.get_by_label("Security phrase").fill("silver heron at noon")
    tab.get_by_role("button", name="Save password").click()
    expect(tab.get_by_role("status")).to_have_text("Your password is saved.")
    tab.goto(f"{relay.url}/account/keys")
    tab.get_by_label("Password for your key").fill(PASSWORD)
    tab.get_by_label("Password again").fill(PASSWORD)
    tab.get_by_role("button", name="Make my key").click()
    expect(tab.get_by_text("Your key is saved.")).to_be_visible(timeout=20_000)
    second, notice = envelope_for(relay, tmp_path, address, "Q4 figures", n=2)
    assert "the sender cannot withdraw it" in notice.get_body(("plain",)).get_content()

    fresh = page.context.browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    try:
        reader = fresh.new_page()
        asked = offline(reader)
        reader.goto(second.as_uri())
        reader.get_by_label("Password of your secure-message key").fill(PASSWORD)
        reader.get_by_role("button", name="Open", exact=True).click()
        expect(reader.locator("#subject")).to_have_text("Q4 figures", timeout=20_000)
        expect(reader.locator("#text")).to_have_text("confidential: the body of Q4 figures")
        expect(reader.locator("#phrase")).to_have_text("silver heron at noon")
        width = reader.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the envelope scrolls sideways on a phone: {width}px"
        with reader.expect_download() as got:
            reader.get_by_role("link", name=re.compile(r"^figures\.bin")).click()
        assert Path(got.value.path()).read_bytes() == ATTACHMENT
        violations = axe_violations(reader)
        assert not violations, describe_violations(violations)
        assert asked == []  # not one request left the page
    finally:
        fresh.close()


def test_a_wrong_password_shows_an_error_and_nothing_else(page: Page, relay: PortalRelay, tmp_path: Path) -> None:
    path = registered_envelope(page, relay, tmp_path, "lou@partner.test")
    asked = offline(page)
    page.goto(path.as_uri())
    page.get_by_label("Password of your secure-message key").fill("not my password at all")
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.get_by_role("status")).to_have_text("That password is not right.", timeout=20_000)
    expect(page.locator("#message")).to_be_hidden()
    assert "the body of" not in page.locator("body").inner_text()
    assert asked == []


def test_a_tampered_envelope_is_refused(page: Page, relay: PortalRelay, tmp_path: Path) -> None:
    path = registered_envelope(page, relay, tmp_path, "max@partner.test")
    html = path.read_text()
    data = re.search(r'id="sealrelay-data">(.*?)</script>', html, re.S)
    at = data.start(1) + 40
    path.write_text(html[:at] + ("A" if html[at] != "A" else "B") + html[at + 1 :])
    asked = offline(page)
    page.goto(path.as_uri())
    page.get_by_label("Password of your secure-message key").fill(PASSWORD)
    page.get_by_role("button", name="Open", exact=True).click()
    expect(page.get_by_role("status")).to_have_text(
        "This message was altered or damaged and cannot be opened.", timeout=20_000
    )
    expect(page.locator("#message")).to_be_hidden()
    assert asked == []


def test_a_revoked_message_no_longer_opens(page: Page, relay: PortalRelay, tmp_path: Path) -> None:
    address = "ned@partner.test"
    path, _ = envelope_for(relay, tmp_path, address, "Withdrawn")
    held = envelope.parts(path.read_bytes())[1]["held"]
    revoke = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "portal", "revoke", held, "-c", str(relay.config)],
        capture_output=True,
        text=True,
        cwd=relay.dir,
    )
    assert (revoke.returncode, revoke.stdout) == (0, f"revoked {held}\n"), revoke.stderr
    page.goto(path.as_uri())
    tab = open_online(page, relay, address)
    expect(tab.locator("#releasestatus")).to_have_text("this message was revoked")
    expect(page.locator("#message")).to_be_hidden()


def test_a_large_message_stays_at_the_portal_until_the_key_is_released(
    page: Page, large_relay: PortalRelay, tmp_path: Path
) -> None:
    address = "ola@partner.test"
    path, notice = envelope_for(large_relay, tmp_path, address, "Big deck")
    _, header, inline = envelope.parts(path.read_bytes())
    assert header["data"] == "portal" and inline is None and header["slots"] == []
    assert "figures.bin" not in path.read_text()
    page.goto(path.as_uri())
    open_online(page, large_relay, address)
    expect(page.locator("#subject")).to_have_text("Big deck")
    with page.expect_download() as got:
        page.get_by_role("link", name=re.compile(r"^figures\.bin")).click()
    assert Path(got.value.path()).read_bytes() == ATTACHMENT


def registered_envelope(page: Page, relay: PortalRelay, tmp_path: Path, address: str) -> Path:
    """An envelope with a recipient slot for `address` (who made a key at the portal first)."""
    first, _ = envelope_for(relay, tmp_path, address, "Hello")
    page.goto(first.as_uri())
    tab = open_online(page, relay, address)
    tab.get_by_role("link", name="Make a key in this browser").click()
    tab.get_by_label("Password for your key").fill(PASSWORD)
    tab.get_by_label("Password again").fill(PASSWORD)
    tab.get_by_role("button", name="Make my key").click()
    expect(tab.get_by_text("Your key is saved.")).to_be_visible(timeout=20_000)
    tab.close()
    path, _ = envelope_for(relay, tmp_path, address, "Secret plans", n=2)
    assert envelope.parts(path.read_bytes())[1]["slots"][0]["type"] == "recipient"
    return path
