"""S/MIME for recipients with a certificate; already-encrypted mail never encrypted again."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from engine.relay.methods.smime import already_encrypted
from tests.relay.peers import Sink, eventually, submit


def make_recipient(directory: Path, address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.parent / f"{address}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(directory / f"{address}.pem"),
            "-days",
            "30",
            "-subj",
            f"/CN={address}",
            "-addext",
            f"subjectAltName=email:{address}",
        ],
        check=True,
        capture_output=True,
    )
    return key


def config(sink_port: int) -> str:
    return f"""
routes:
  - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: {sink_port}}}, tls: opportunistic}}
encryption:
  method: tls
  smime: {{certificates: certs}}
dlp:
  action_plans: [{{name: enc, email: encrypt}}]
  policies:
    - name: confidential
      rules: [{{name: marked, conditions: {{phrases: [confidential]}}, action_plan: enc}}]
"""


async def send(relay, rcpts: list[str], body: str, subject: str = "s", extra: str = "") -> str:
    msg = f"From: alice@example.com\r\nTo: {', '.join(rcpts)}\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n"
    reply = await submit(relay.ports()["mx"], msg, "alice@example.com", rcpts)
    return reply.split()[-1]


async def test_recipient_with_a_certificate_gets_smime_the_others_the_method(
    tmp_path, write_config, start_relay, ca
) -> None:
    import ssl

    key = make_recipient(tmp_path / "certs", "bob@partner.example")
    cert = ca.issue_cert("127.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(tls)
    with Sink(tls=tls) as sink:  # both copies go over TLS: S/MIME does not lower the transport
        relay = await start_relay(write_config(config(sink.port)))
        await send(relay, ["bob@partner.example", "carol@partner.example"], "this is confidential")
        got = await sink.received(2)
        by_rcpt = {m.recipients[0]: m for m in got}
        assert all(m.tls for m in got)
        assert b"this is confidential" in by_rcpt["carol@partner.example"].content  # method tls: content as is
        sealed_msg = by_rcpt["bob@partner.example"]
        assert b"this is confidential" not in sealed_msg.content and b"application/pkcs7-mime" in sealed_msg.content
        sealed = tmp_path / "sealed.eml"
        sealed.write_bytes(sealed_msg.content)
        opened = subprocess.run(
            [
                "openssl",
                "smime",
                "-decrypt",
                "-in",
                str(sealed),
                "-inkey",
                str(key),
                "-recip",
                str(tmp_path / "certs" / "bob@partner.example.pem"),
            ],
            capture_output=True,
            check=True,
        )
        assert b"this is confidential" in opened.stdout


async def test_an_unusable_certificate_never_means_plain(tmp_path, write_config, start_relay) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(tmp_path / "k"),
            "-out",
            str(certs / "frank@partner.example.pem"),
            "-days",
            "30",
            "-subj",
            "/CN=frank",
        ],
        check=True,
        capture_output=True,
    )
    with Sink(tls=None) as sink:
        relay = await start_relay(write_config(config(sink.port)))
        queue_id = await send(relay, ["frank@partner.example"], "this is confidential")

        async def waits():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(waits, what="frank to wait")  # an EC certificate is ignored: method tls, no TLS here
        assert "no STARTTLS" in detail.recipients[0].last_error and sink.messages == []


async def test_already_encrypted_mail_is_not_encrypted_again(tmp_path, write_config, start_relay) -> None:
    with Sink(tls=None) as sink:
        relay = await start_relay(write_config(config(sink.port)))
        pgp = "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0Xq\r\n-----END PGP MESSAGE-----"
        await send(relay, ["dave@partner.example"], pgp, subject="confidential figures")  # DLP matches the subject
        [got] = await sink.received(1)
        assert b"BEGIN PGP MESSAGE" in got.content


ARMOR = b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0XqABCD\r\n=ab12\r\n-----END PGP MESSAGE-----\r\n"
PGP_MIME = (
    b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary=b\r\n\r\n'
    b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
    b"--b\r\nContent-Type: application/octet-stream\r\n\r\n" + ARMOR + b"--b--\r\n"
)


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (PGP_MIME, "pgp"),
        (b"Subject: x\r\n\r\n" + ARMOR, "pgp"),
        (b"Subject: x\r\n\r\n" + ARMOR + b"and the secret in clear below\r\n", None),
        (
            b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nthe card is 4111 1111 1111 1111\r\n",
            None,
        ),
        (b"Subject: x\r\n\r\nplain text\r\n", None),
    ],
)
def test_encrypted_formats_are_recognised_and_labels_alone_are_not_enough(content: bytes, kind) -> None:
    assert already_encrypted(content) == kind


def test_real_smime_is_recognised(tmp_path) -> None:
    from cryptography import x509

    from engine.relay.methods.smime import encrypt

    make_recipient(tmp_path / "certs", "bob@partner.example")
    cert = x509.load_pem_x509_certificate((tmp_path / "certs" / "bob@partner.example.pem").read_bytes())
    sealed = encrypt(b"From: a@example.com\r\nSubject: s\r\n\r\nsecret\r\n", [cert])
    assert already_encrypted(sealed) == "smime"


async def test_a_label_is_not_encryption(tmp_path, write_config, start_relay) -> None:
    with Sink(tls=None) as sink:  # no STARTTLS: flagged mail must wait, not leave in clear
        relay = await start_relay(write_config(config(sink.port)))
        extra = "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n"
        queue_id = await send(relay, ["erin@partner.example"], "this is confidential, not encrypted", extra=extra)

        async def waits():
            d = await relay.queue.show(queue_id)
            return d if d.recipients[0].state == "deferred" else None

        detail = await eventually(waits, what="the mislabelled message to wait for TLS")
        assert detail.meta["decision"]["action"] == "encrypt" and sink.messages == []
