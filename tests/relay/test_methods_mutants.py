"""The method chain's decisions pinned exactly, without a network: what counts as already
encrypted, which certificate S/MIME uses, which headers go to the gateway and what its
answer means, and how the chain answers for every recipient. Written against the surviving
mutants of scripts/mutate (docs/mutation-results.md)."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from engine.relay.delivery.failures import Failure
from engine.relay.methods import smime as smime_module
from engine.relay.methods.base import Chain, HandedOff, Protection, Sealed, TLSFloor, Unavailable, run
from engine.relay.methods.smime import SMIME, already_encrypted, certificate_for, encrypt
from engine.relay.methods.third_party import gateway_result, header_parts, strip_headers
from engine.relay.methods.tls import TLSOnly, floor_of
from engine.relay.queue import Entry

ENVELOPED_DER = bytes.fromhex("3080") + bytes.fromhex("06092a864886f70d010703") + b"\x00" * 8
B64 = base64.b64encode(ENVELOPED_DER).decode()


def _smime(body: str, smime_type: str | None = "enveloped-data", ctype: str = "application/pkcs7-mime") -> bytes:
    param = f"; smime-type={smime_type}" if smime_type else ""
    return f"Content-Type: {ctype}{param}\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n".encode()


ARMOUR = "-----BEGIN PGP MESSAGE-----\r\n{headers}\r\nhQEMA0Xy+/Ab\r\n=Ab12\r\n-----END PGP MESSAGE-----"


def _pgp_inline(headers: str = "") -> bytes:
    return b"Subject: s\r\n\r\n" + ARMOUR.format(headers=headers).encode()


def _pgp_mime(control: str = "Version: 1", armour: str | None = None, extra: str = "") -> bytes:
    armour = ARMOUR.format(headers="") if armour is None else armour
    return (
        'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
        f"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n{control}\r\n"
        f"--b\r\nContent-Type: application/octet-stream\r\n\r\n{armour}\r\n{extra}--b--\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("content", "kind"),
    [
        (_smime(base64.b64encode(ENVELOPED_DER).decode()), "smime"),
        (_smime(base64.b64encode(ENVELOPED_DER).decode(), smime_type=None), "smime"),  # the default type
        (_smime(base64.b64encode(ENVELOPED_DER).decode(), "AuthEnveloped-Data"), "smime"),
        (_smime(base64.b64encode(ENVELOPED_DER).decode(), ctype="application/x-pkcs7-mime"), "smime"),
        (_smime(base64.b64encode(ENVELOPED_DER).decode(), "signed-data"), None),
        (_smime(base64.b64encode(b"\x31" + ENVELOPED_DER[1:]).decode()), None),  # not a SEQUENCE
        (
            _smime(base64.b64encode(bytes.fromhex("3080") + b"\x00" * 30 + ENVELOPED_DER[2:]).decode()),
            None,
        ),  # OID too late
        (_smime("not base64 !!"), None),
        (_smime(B64[:8] + "!" + B64[8:]), None),  # a stray character: not lenient base64
        (_smime(B64[:4] + "\r\n" + B64[4:]), "smime"),  # lines of base64 are joined as they are
        (_smime(base64.b64encode(bytes.fromhex("3080") + b"\x00" * 12 + ENVELOPED_DER[2:13]).decode()), None),
        (_pgp_inline(), "pgp"),
        (_pgp_inline("Version: GnuPG v2\r\nComment: x\r\n"), "pgp"),
        (b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n-----END PGP MESSAGE-----", None),
        (b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n-----END PGP MESSAGE-----", None),  # no payload
        (b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----", None),
        (b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nnot base64!\r\n-----END PGP MESSAGE-----", None),
        (b"Subject: s\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP SIGNATURE-----", None),
        (b"Subject: s\r\n\r\nhello\r\n" + ARMOUR.format(headers="").encode(), None),  # text before it
        (_pgp_mime(), "pgp"),
        (_pgp_mime(control="Version: 2"), None),
        (_pgp_mime(armour="plain text"), None),
        (_pgp_mime(extra="--b\r\nContent-Type: text/plain\r\n\r\nthird\r\n"), None),
        (b"Content-Type: text/plain\r\n\r\nhello\r\n", None),
    ],
)
def test_already_encrypted(content: bytes, kind: str | None) -> None:
    assert already_encrypted(content) == kind


def _certificate(directory: Path, address: str, *, key=None, days: int = 30, start: int = -1) -> Path:
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=start))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{address}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


BOB_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("smime")
    _certificate(directory, "bob@partner.example", key=BOB_KEY)
    _certificate(directory, "old@partner.example", days=-1, start=-30)
    _certificate(directory, "later@partner.example", start=2)
    _certificate(directory, "ec@partner.example", key=ec.generate_private_key(ec.SECP256R1()))
    (directory / "junk@partner.example.pem").write_text("not a certificate")
    _certificate(directory, ".hidden@partner.example")
    (directory / "sub").mkdir()
    return directory


@pytest.mark.parametrize(
    ("address", "found"),
    [
        ("bob@partner.example", True),
        ("  BOB@Partner.Example ", True),  # addresses compared in lower case, trimmed
        ("old@partner.example", False),  # expired
        ("later@partner.example", False),  # not yet valid
        ("ec@partner.example", False),  # only RSA keys
        ("junk@partner.example", False),
        ("nobody@partner.example", False),
        ("../smime/bob@partner.example", False),
        ("sub/../bob@partner.example", False),  # no path of any kind
        (".hidden@partner.example", False),  # nor a hidden file
    ],
)
def test_certificate_for(certs: Path, address: str, found: bool) -> None:
    cert = certificate_for(certs, address)
    assert (cert is not None) is found
    if found:
        assert cert.subject.rfc4514_string() == "CN=bob@partner.example"


def _sealed_for_bob(certs: Path, content: bytes) -> tuple[bytes, bytes]:
    """(the readable header section, the decrypted entity) of `content` encrypted for bob."""
    cert = certificate_for(certs, "bob@partner.example")
    sealed = encrypt(content, [cert])
    assert b"\n" not in sealed.replace(b"\r\n", b"") and b"\r\r" not in sealed  # CRLF lines only
    assert already_encrypted(sealed) == "smime"
    entity = pkcs7.pkcs7_decrypt_smime(sealed, cert, BOB_KEY, [])
    return sealed.partition(b"\r\n\r\n")[0], entity


def test_encrypt_keeps_the_outer_headers_readable(certs: Path) -> None:
    content = (
        b"From: a@example.com\r\nSubject: s\r\n folded\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b'Content-Disposition: inline;\r\n filename="a:b.txt"\r\nX-After: kept\r\n\r\n'
        b"secret\r\n\r\nsecond paragraph\r\n"
    )
    head, entity = _sealed_for_bob(certs, content)
    assert head.startswith(b"From: a@example.com\r\nSubject: s\r\n folded\r\nX-After: kept\r\nMIME-Version: 1.0\r\n")
    assert head.count(b"MIME-Version") == 1 and b"charset=utf-8" not in head and b"a:b.txt" not in head
    assert entity == (
        b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n"
        b'Content-Disposition: inline;\r\n filename="a:b.txt"\r\n\r\nsecret\r\n\r\nsecond paragraph\r\n'
    )


def test_encrypt_gives_an_entity_without_a_type_the_default_one(certs: Path) -> None:
    content = b" odd first line\r\nSubject: s\r\nContent-Transfer-Encoding: 7bit\r\n\r\nsecret\r\n"
    head, entity = _sealed_for_bob(certs, content)
    assert head.startswith(b" odd first line\r\nSubject: s\r\n")
    assert entity == b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\nsecret\r\n"


def test_an_unusable_certificate_is_logged(certs: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert certificate_for(certs, "old@partner.example") is None
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"S/MIME certificate {certs / 'old@partner.example.pem'} is not usable "
            "(only valid RSA certificates are): ignored",
        )
    ]


async def test_smime_that_fails_to_encrypt_refuses_and_passes_the_rest_on(
    certs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(content: bytes, certificates: list) -> bytes:
        raise ValueError("bad key")

    monkeypatch.setattr(smime_module, "encrypt", broken)
    entry = Entry("q1", "a@example.com", (), b"Subject: s\r\n\r\nsecret\r\n", {}, 0.0, False, 0.0)
    answer = await SMIME(certs, None).protect(None, entry, ["bob@partner.example", "carol@partner.example"])
    assert answer == Protection(
        refused={"bob@partner.example": Failure("defer", "S/MIME encryption failed: bad key", "4.7.5", "method")},
        passed=("carol@partner.example",),
    )


async def test_smime_seals_for_the_recipients_with_a_certificate(certs: Path) -> None:
    floor = TLSFloor("mandatory", "TLSv1.2", 128, "encryption.tls")
    entry = Entry("q1", "a@example.com", (), b"Subject: s\r\n\r\nsecret\r\n", {}, 0.0, False, 0.0)
    answer = await SMIME(certs, floor).protect(None, entry, ["bob@partner.example", "carol@partner.example"])
    ((sealed,),) = (answer.sealed,)
    assert (sealed.recipients, sealed.floor, sealed.note, answer.passed) == (
        ("bob@partner.example",),
        floor,
        "S/MIME",
        ("carol@partner.example",),
    )
    assert already_encrypted(sealed.content) == "smime" and not answer.handed and not answer.refused
    nobody = await SMIME(certs, floor).protect(None, entry, ["carol@partner.example"])
    assert nobody == Protection(passed=("carol@partner.example",))


@pytest.mark.parametrize(
    ("line", "parts"),
    [("X-Encrypt: yes", ("X-Encrypt", "yes")), (" X-Result :  a: b ", ("X-Result", "a: b")), ("X", ("X", ""))],
)
def test_header_parts(line: str, parts: tuple[str, str]) -> None:
    assert header_parts(line) == parts


def test_strip_headers_removes_every_copy_with_its_continuations() -> None:
    content = (
        b"From: a@example.com\r\nX-Encrypt: forged\r\n  more\r\nSubject: s\r\n\tfolded\r\n"
        b"x-encrypt-result: success\r\nX-Encrypt-Results: kept\r\n\r\nX-Encrypt: in the body\r\n"
    )
    stripped = strip_headers(content, {"X-Encrypt", "X-Encrypt-Result"})
    assert stripped == (
        b"From: a@example.com\r\nSubject: s\r\n\tfolded\r\nX-Encrypt-Results: kept\r\n\r\nX-Encrypt: in the body\r\n"
    )
    assert strip_headers(b"Subject: s", {"Subject"}) == b""
    assert strip_headers(b"Subject: s\r\n\r\nbody", set()) == b"Subject: s\r\n\r\nbody"


def _live(third_party: bool = True) -> SimpleNamespace:
    headers = SimpleNamespace(
        encrypt="X-Encrypt: yes", success="X-Encrypt-Result: Success", failure="X-Encrypt-Result: failure"
    )
    tp = SimpleNamespace(headers=headers) if third_party else None
    return SimpleNamespace(config=SimpleNamespace(encryption=SimpleNamespace(third_party=tp)))


@pytest.mark.parametrize(
    ("headers", "result"),
    [
        ("X-Encrypt-Result: success\r\n", "success"),
        ("x-encrypt-result:   SUCCESS  done\r\n", "success"),
        ("X-Encrypt-Result: failure; reason=no key\r\n", "failure"),
        ("X-Encrypt-Result:\r\n failure\r\n", "failure"),  # folded
        ("X-Encrypt-Result: success\r\nX-Encrypt-Result: failure\r\n", "failure"),  # any failure copy wins
        ("X-Encrypt-Result: unknown\r\n", "none"),
        ("X-Other: success\r\n", "none"),
        ("", "none"),
    ],
)
def test_gateway_result(headers: str, result: str) -> None:
    content = f"From: gw@example.com\r\n{headers}\r\nX-Encrypt-Result: failure in the body\r\n".encode()
    assert gateway_result(_live(), content) == result


def test_gateway_result_without_a_gateway() -> None:
    assert gateway_result(_live(third_party=False), b"X-Encrypt-Result: failure\r\n\r\nx") is None


# -- the chain ---------------------------------------------------------------------------------

ENTRY = Entry("q1", "a@example.com", (), b"Subject: s\r\n\r\nx\r\n", {}, 0.0, False, 0.0)
FLOOR = TLSFloor("verify", "TLSv1.2", 128, "encryption.tls")


class Step:
    """A method answering from a table: recipient -> "seal", "hand", "refuse", "pass" or "lose"."""

    def __init__(self, name: str, answers: dict[str, str], fail: Exception | None = None) -> None:
        self.name, self.answers, self.fail, self.seen = name, answers, fail, []

    async def protect(self, live, entry: Entry, recipients: list[str]) -> Protection:
        self.seen.append(list(recipients))
        if self.fail:
            raise self.fail
        pick = {a: tuple(r for r in recipients if self.answers.get(r) == a) for a in ("seal", "hand", "refuse", "pass")}
        return Protection(
            sealed=(Sealed(pick["seal"], FLOOR),) if pick["seal"] else (),
            handed=(HandedOff(pick["hand"], f"{self.name} took it"),) if pick["hand"] else (),
            refused={r: Failure("bounce", "no", "5.7.1") for r in pick["refuse"]},
            passed=pick["pass"],
        )


def _outcome(answer: Protection) -> dict[str, str]:
    out = {r: f"sealed {s.floor and s.floor.level}" for s in answer.sealed for r in s.recipients}
    out |= {r: f"handed {h.detail}" for h in answer.handed for r in h.recipients}
    out |= {r: f"refused {f.kind} {f.status} {f.cause} {f.reason}" for r, f in answer.refused.items()}
    return out | {r: "passed" for r in answer.passed}


async def test_chain_runs_each_step_on_what_the_ones_before_passed() -> None:
    first = Step("smime", {"a": "seal", "b": "pass", "c": "pass", "d": "refuse"})
    second = Step("tls", {"b": "hand", "c": "pass"})
    answer = await Chain((first, second)).protect(None, ENTRY, ["a", "b", "c", "d"])
    assert second.seen == [["b", "c"]]
    assert _outcome(answer) == {
        "a": "sealed verify",
        "b": "handed tls took it",
        "c": "refused defer 4.7.5 method no encryption method took these recipients",
        "d": "refused bounce 5.7.1 smtp no",
    }
    assert answer.passed == ()


async def test_chain_stops_when_nothing_is_left() -> None:
    first, second = Step("one", {"a": "hand"}), Step("two", {})
    answer = await Chain((first, second)).protect(None, ENTRY, ["a"])
    assert second.seen == [] and _outcome(answer) == {"a": "handed one took it"}
    assert await Chain(()).protect(None, ENTRY, []) == Protection()


async def test_run_turns_a_failing_or_forgetful_method_into_refusals() -> None:
    broken = await run(Step("third_party", {}, fail=RuntimeError("gateway down")), None, ENTRY, ["a", "b"])
    reason = "refused defer 4.7.5 method encryption method `third_party` failed: gateway down"
    assert _outcome(broken) == {"a": reason, "b": reason}
    forgetful = await run(Step("tls", {"a": "hand", "c": "pass"}), None, ENTRY, ["a", "b", "c"])
    assert _outcome(forgetful) == {
        "a": "handed tls took it",
        "b": "refused defer 4.7.5 method encryption method `tls` gave no answer for this recipient",
        "c": "passed",
    }


async def test_unavailable_method_defers_everyone() -> None:
    answer = await Unavailable("secure_portal").protect(None, ENTRY, ["a", "b"])
    reason = "refused defer 4.7.5 method encryption method `secure_portal` is not available in this relay"
    assert _outcome(answer) == {"a": reason, "b": reason}


def test_protection_recipients_and_merge() -> None:
    one = Protection(
        sealed=(Sealed(("a",), None),), handed=(HandedOff(("b",), "x"),), refused={"c": 1}, passed=("d", "e")
    )
    assert one.recipients() == ["a", "b", "c", "d", "e"]
    two = Protection(sealed=(Sealed(("d",), FLOOR),), refused={"c": 2, "e": 3}, passed=())
    merged = one.merge(two)
    assert merged == Protection(
        sealed=(Sealed(("a",), None), Sealed(("d",), FLOOR)),
        handed=(HandedOff(("b",), "x"),),
        refused={"c": 2, "e": 3},
        passed=(),
    )


def test_with_overrides() -> None:
    tls, backup, double = Step("tls", {}), Step("third_party", {}), Step("third_party", {})
    chain = Chain((tls,), backup)
    assert chain.with_overrides({}) is chain
    assert chain.with_overrides({"third_party": double}) == Chain((tls,), double)
    swapped = Chain((backup, tls), None).with_overrides({"third_party": double})
    assert swapped == Chain((double, tls), None)


async def test_tls_only_seals_every_recipient_under_the_configured_floor() -> None:
    tls = SimpleNamespace(level="verify", min_protocol="TLSv1.3", min_cipher_bits=256)
    floor = floor_of(SimpleNamespace(encryption=SimpleNamespace(tls=tls)))
    assert floor == TLSFloor("verify", "TLSv1.3", 256, "encryption.tls")
    answer = await TLSOnly(floor).protect(None, ENTRY, ["a", "b"])
    assert answer == Protection(sealed=(Sealed(("a", "b"), floor),))
    assert TLSOnly(floor).name == "tls"
