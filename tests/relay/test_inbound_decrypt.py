"""Inbound S/MIME decryption: real `openssl smime -encrypt` mail through the relay on loopback.

The relay holds bob@example.com's certificate and key (`encryption.smime.keys`, 0600) and
has `encryption.advanced.decrypt_inbound` on. Mail from outside to bob is decrypted before
DLP and stamped `X-Seal-Decryption: success`; mail it cannot open arrives exactly as sent,
stamped `failed (<reason>)`; plain mail `not-encrypted`; outbound mail is never touched.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.relay.decrypt.inbound import decrypted
from tests.conftest import require
from tests.pki import SMimePair, smime_pair
from tests.relay.peers import Sink, submit
from tests.relay.test_retries import routes

OUTSIDE = "eve@outside.example"
MESSAGE = (
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"X-Seal-Decryption: success (written inside the encryption)\r\n"
    b"\r\n"
    b"the word is nightshade\r\n"
)


@pytest.fixture(scope="module")
def bob() -> SMimePair:
    return smime_pair("bob@example.com")


@pytest.fixture(scope="module")
def stranger() -> SMimePair:
    """A certificate the relay holds no key for (bob's name, another key)."""
    return smime_pair("bob@example.com")


@pytest.fixture
def keys(tmp_path: Path, bob: SMimePair) -> Path:
    directory = tmp_path / "keys"
    directory.mkdir(mode=0o700)
    held = directory / "bob@example.com.pem"
    held.write_bytes(bob.cert_pem + bob.key_pem)
    held.chmod(0o600)
    return directory


def openssl_encrypt(tmp_path: Path, pair: SMimePair, *args: str, content: bytes = MESSAGE, to: str = "bob@example.com"):
    """`openssl smime -encrypt -aes256 -in msg.txt cert.pem` (or other `args`), CRLF line ends."""
    require(shutil.which("openssl"), "the openssl command is needed to make real S/MIME")
    (tmp_path / "msg.txt").write_bytes(content)
    cert = tmp_path / "recipient-cert.pem"
    cert.write_bytes(pair.cert_pem)
    done = subprocess.run(
        ["openssl", *(args or ("smime", "-encrypt", "-aes256")), "-in", str(tmp_path / "msg.txt")]
        + ["-from", OUTSIDE, "-to", to, "-subject", "hello", str(cert)],
        capture_output=True,
        check=True,
    )
    return done.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def config(home: int, partner: int, dlp: str = "") -> str:
    return (
        routes(home, f"{{host: 127.0.0.1, port: {partner}}}")
        + """
encryption:
  advanced: {portal_url: "https://secure.example.com", decrypt_inbound: true}
  smime: {keys: keys}
"""
        + dlp
    )


def from_header(content: bytes, name: bytes = b"X-Seal-Decryption") -> bytes:
    """The delivered message from the decryption header on (the Received line before it varies)."""
    return content[content.index(name + b":") :]


async def relayed(start_relay, write_config, message: bytes, recipients: list[str], sender: str = OUTSIDE, dlp=""):
    with Sink(tls=None) as home, Sink(tls=None) as partner:
        relay = await start_relay(write_config(config(home.port, partner.port, dlp)))
        await submit(relay.ports()["mx"], message, sender, recipients)
        sink = home if all(r.endswith("@example.com") for r in recipients) else partner
        [got] = await sink.received(1)
        return got


async def test_openssl_smime_to_an_internal_address_is_decrypted(tmp_path, keys, bob, write_config, start_relay):
    sent = openssl_encrypt(tmp_path, bob)
    got = await relayed(start_relay, write_config, sent, ["bob@example.com"])
    assert from_header(got.content) == (
        b"X-Seal-Decryption: success\r\n"
        b"To: bob@example.com\r\n"
        b"From: eve@outside.example\r\n"
        b"Subject: hello\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"  # only Content-* from inside: not its forged header
        b"\r\n"
        b"the word is nightshade\r\n"
    )


async def test_a_corrupted_message_is_delivered_as_sent_with_the_reason(tmp_path, keys, bob, write_config, start_relay):
    sent = openssl_encrypt(tmp_path, bob)
    head, _, body = sent.partition(b"\r\n\r\n")
    corrupted = head + b"\r\n\r\n" + body[:4] + b"AAAA" + body[8:]  # the OID's tag, length and first byte: zero
    got = await relayed(start_relay, write_config, corrupted, ["bob@example.com"])
    assert from_header(got.content) == (
        b"X-Seal-Decryption: failed (damaged: not a readable enveloped-data structure)\r\n" + corrupted
    )


async def test_a_damaged_ciphertext_names_the_key_it_failed_with(tmp_path, keys, bob, write_config, start_relay):
    sent = openssl_encrypt(tmp_path, bob)
    head, _, body = sent.partition(b"\r\n\r\n")
    der = bytearray(base64.b64decode(body))
    der[-17] ^= 0xFF  # the last byte of the next-to-last block: the padding no longer checks
    damaged = head + b"\r\n\r\n" + base64.encodebytes(bytes(der)).replace(b"\n", b"\r\n")
    got = await relayed(start_relay, write_config, damaged, ["bob@example.com"])
    assert from_header(got.content) == (
        b"X-Seal-Decryption: failed (damaged: does not decrypt with the key for bob@example.com)\r\n" + damaged
    )


async def test_mail_encrypted_to_another_certificate_fails_with_no_key(
    tmp_path, keys, stranger, write_config, start_relay
):
    sent = openssl_encrypt(tmp_path, stranger)
    got = await relayed(start_relay, write_config, sent, ["bob@example.com"])
    assert from_header(got.content) == b"X-Seal-Decryption: failed (no key for bob@example.com)\r\n" + sent


async def test_plain_mail_is_not_encrypted_and_a_forged_header_is_replaced(keys, write_config, start_relay):
    sent = (
        b"From: eve@outside.example\r\nTo: bob@example.com\r\n"
        b"X-Seal-Decryption: success\r\n"
        b"Subject: plain\r\n"
        b"x-seal-decryption : success\r\n\tfolded onto a second line\r\n"
        b"\r\nhello\r\n"
    )
    got = await relayed(start_relay, write_config, sent, ["bob@example.com"])
    assert from_header(got.content) == (
        b"X-Seal-Decryption: not-encrypted\r\n"
        b"From: eve@outside.example\r\nTo: bob@example.com\r\nSubject: plain\r\n\r\nhello\r\n"
    )


async def test_every_internal_recipient_gets_the_decrypted_copy(tmp_path, keys, bob, write_config, start_relay):
    """carol has no key held; the mail was meant for her too, so she reads what bob reads."""
    sent = openssl_encrypt(tmp_path, bob, to="bob@example.com, carol@example.com")
    got = await relayed(start_relay, write_config, sent, ["carol@example.com", "bob@example.com"])
    assert sorted(got.recipients) == ["bob@example.com", "carol@example.com"]
    assert from_header(got.content).startswith(b"X-Seal-Decryption: success\r\n")
    assert got.content.endswith(b"\r\n\r\nthe word is nightshade\r\n")


DLP = """
dlp:
  mode: monitor
  action_plans: [{name: hold, email: quarantine}]
  policies:
    - name: words
      rules: [{name: night, conditions: {phrases: [nightshade]}, action_plan: hold, destination: {direction: any}}]
"""


async def test_dlp_reads_the_decrypted_content(tmp_path, keys, bob, write_config, start_relay, caplog):
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    sent = openssl_encrypt(tmp_path, bob)
    assert b"nightshade" not in sent
    got = await relayed(start_relay, write_config, sent, ["bob@example.com"], dlp=DLP)
    assert from_header(got.content, b"X-Sealrelay-DLP").startswith(
        b"X-Sealrelay-DLP: action=permit; policies=words\r\nX-Seal-Decryption: success\r\n"
    )
    [line] = [json.loads(r.getMessage()) for r in caplog.records if '"event":"received"' in r.getMessage()]
    assert (line["direction"], line["action"], line["would"], line["rules"]) == (
        "inbound",
        "permit",
        "quarantine",
        ["words/night"],
    )


async def test_outbound_mail_is_never_decrypted(tmp_path, keys, bob, write_config, start_relay):
    """An internal sender's mail with an external recipient leaves as it came, for every
    recipient: the external copy must stay encrypted, and intake does not split messages."""
    sent = openssl_encrypt(tmp_path, bob, to="bob@example.com, dave@partner.example")
    with Sink(tls=None) as home, Sink(tls=None) as partner:
        relay = await start_relay(write_config(config(home.port, partner.port)))
        await submit(relay.ports()["mx"], sent, "alice@example.com", ["bob@example.com", "dave@partner.example"])
        [inside], [outside] = await home.received(1), await partner.received(1)
    for got in (inside, outside):
        assert b"X-Seal-Decryption" not in got.content
        assert got.content.endswith(sent)


async def test_without_decrypt_inbound_nothing_is_stamped(tmp_path, keys, bob, write_config, start_relay):
    sent = openssl_encrypt(tmp_path, bob)
    with Sink(tls=None) as home:
        path = write_config(config(home.port, 9).replace("decrypt_inbound: true", "decrypt_inbound: false"))
        relay = await start_relay(path)
        await submit(relay.ports()["mx"], sent, OUTSIDE, ["bob@example.com"])
        [got] = await home.received(1)
    assert b"X-Seal-Decryption" not in got.content and got.content.endswith(sent)


# -- the step itself, on bytes: the reasons for what cannot be opened ---------------------------


def test_unsupported_algorithms_are_named(tmp_path, keys, bob) -> None:
    des = openssl_encrypt(tmp_path, bob, "smime", "-encrypt", "-des3")
    gcm = openssl_encrypt(tmp_path, bob, "cms", "-encrypt", "-aes-256-gcm")
    assert decrypted(des, "X-D", keys, ["bob@example.com"])[1] == (
        "failed (unsupported algorithm: Only AES (with key sizes 128 or 256) with CBC mode is currently "
        "supported for content decryption)"
    )
    assert decrypted(gcm, "X-D", keys, ["bob@example.com"])[1] == (
        "failed (unsupported: authenveloped-data (AES-GCM) cannot be decrypted here)"
    )


def test_aes128_decrypts_too(tmp_path, keys, bob) -> None:
    sent = openssl_encrypt(tmp_path, bob, "smime", "-encrypt", "-aes128")
    content, status = decrypted(sent, "X-D", keys, ["bob@example.com"])
    assert status == "success" and content.endswith(b"\r\n\r\nthe word is nightshade\r\n")


def test_an_unusable_key_file_is_skipped_and_logged(tmp_path, keys, bob, caplog) -> None:
    (keys / "bob@example.com.pem").write_bytes(bob.cert_pem)  # the key is missing
    sent = openssl_encrypt(tmp_path, bob)
    with caplog.at_level(logging.WARNING, logger="engine.relay.decrypt.inbound"):
        content, status = decrypted(sent, "X-D", keys, ["bob@example.com"])
    assert (status, content) == (
        "failed (no key for bob@example.com)",
        b"X-D: failed (no key for bob@example.com)\r\n" + sent,
    )
    assert [r.getMessage() for r in caplog.records] == [
        "S/MIME key for bob@example.com not used: bob@example.com.pem: holds no PEM private key"
    ]


def test_a_long_recipient_list_is_shortened(tmp_path, keys, stranger) -> None:
    sent = openssl_encrypt(tmp_path, stranger)
    rcpts = [f"user{i}@example.com" for i in range(5)]
    assert decrypted(sent, "X-D", keys, rcpts)[1] == (
        "failed (no key for user0@example.com, user1@example.com, user2@example.com and 2 more)"
    )
