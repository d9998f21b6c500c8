"""Content extraction: MIME walking, decoding, HTML, archives and their limits, true types."""

import io
import random
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.relay.dlp import mimetree
from engine.relay.dlp.decide import _plain as quick_plain_enough
from engine.relay.dlp.extract import Extracted, Limits, TextPart, _plain_message, _walked, extract, plain_ascii, sniff
from engine.relay.dlp.htmltext import html_text

from .eval_corpus import generate

CORPUS = Path(__file__).resolve().parent / "corpus"


def message(body: str = "hello", subject: str = "hi") -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "a@corp.example"
    mail["To"] = "b@partner.example"
    mail["Subject"] = subject
    mail.set_content(body)
    return mail


def zipped(*members: tuple[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def origins(extracted) -> dict[str, str]:
    return {part.origin: part.text for part in extracted.texts}


def test_plain_message_gives_subject_headers_and_body():
    extracted = extract(message("the body\n", subject="the subject").as_bytes())
    assert extracted.subject == "the subject"
    assert ("To", "b@partner.example") in extracted.headers
    assert origins(extracted) == {"subject": "the subject", "body": "the body\n"}
    assert extracted.attachments == () and extracted.problems == ()


@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
@pytest.mark.parametrize("charset", ["utf-8", "iso-8859-1", "windows-1252"])
def test_transfer_encodings_and_charsets_decode(cte, charset):
    body = "Résumé " + "x" * 90 + " 4111 1111 1111 1111\n"
    mail = message()
    mail.set_content(body, charset=charset, cte=cte)
    assert origins(extract(mail.as_bytes()))["body"] == body


def test_unknown_charset_degrades_with_a_problem():
    raw = b"Subject: x\nContent-Type: text/plain; charset=x-nope\n\nplain words\n"
    extracted = extract(raw)
    assert origins(extracted)["body"] == "plain words\n"
    assert extracted.problems == ("body: unknown charset 'x-nope'; decoded as UTF-8 or cp1252",)


def test_html_keeps_visible_text_only():
    html = (
        "<html><head><title>T</title><style>.a{}</style><script>var s='4111111111111111'</script></head>"
        "<body><p>one&nbsp;two</p><div>three</div><table><tr><td>4</td><td>5</td></tr></table></body></html>"
    )
    assert html_text(html) == "T\none two\nthree\n4 5"


def test_html_body_and_alternatives():
    mail = message("Card 4111 1111 1111 1111\n")
    mail.add_alternative("<p>Card 4111 1111 1111 1111</p><p>Footer</p>", subtype="html")
    assert [part.origin for part in extract(mail.as_bytes()).texts] == ["subject", "body"]
    assert origins(extract(mail.as_bytes()))["body"] == "Card 4111 1111 1111 1111\nFooter"

    hidden = message("only in plain: 4111 1111 1111 1111\n")
    hidden.add_alternative("<p>nothing to see</p>", subtype="html")
    bodies = [part.text for part in extract(hidden.as_bytes()).texts if part.origin == "body"]
    assert bodies == ["only in plain: 4111 1111 1111 1111\n", "nothing to see"]


def test_text_attachment_and_declared_versus_true_type():
    mail = message()
    mail.add_attachment(b"id,ssn\n1,123-45-6789\n", maintype="application", subtype="pdf", filename="list.pdf")
    extracted = extract(mail.as_bytes())
    [attachment] = extracted.attachments
    assert (attachment.name, attachment.declared_type, attachment.true_type) == ("list.pdf", "application/pdf", "text")
    assert origins(extracted)["attachment:list.pdf"] == "id,ssn\n1,123-45-6789\n"


def test_attached_message_contributes_subject_body_and_files():
    inner = message("inner body\n", subject="inner subject")
    inner.add_attachment("IBAN DE89370400440532013000\n", filename="iban.txt")
    outer = message()
    outer.add_attachment(inner, filename="fwd.eml")
    extracted = extract(outer.as_bytes())
    texts = origins(extracted)
    assert texts["attachment:fwd.eml/subject"] == "inner subject"
    assert texts["attachment:fwd.eml/body"] == "inner body\n"
    assert texts["attachment:fwd.eml/iban.txt"] == "IBAN DE89370400440532013000\n"
    assert [(a.name, a.depth) for a in extracted.attachments] == [("fwd.eml", 0), ("fwd.eml/iban.txt", 1)]


def test_zip_members_are_scanned_with_paths():
    inner = zipped(("deep.csv", b"4111111111111111\n"))
    mail = message()
    mail.add_attachment(
        zipped(("a.txt", b"alpha\n"), ("b.zip", inner)), maintype="application", subtype="zip", filename="a.zip"
    )
    extracted = extract(mail.as_bytes())
    assert origins(extracted)["attachment:a.zip/b.zip/deep.csv"] == "4111111111111111\n"
    assert [(a.name, a.true_type, a.depth) for a in extracted.attachments] == [
        ("a.zip", "zip", 0),
        ("a.zip/a.txt", "text", 1),
        ("a.zip/b.zip", "zip", 1),
        ("a.zip/b.zip/deep.csv", "text", 2),
    ]


def test_depth_limit_lists_but_does_not_open():
    level = zipped(("secret.txt", b"4111111111111111\n"))
    for depth in range(3):
        level = zipped((f"z{depth}.zip", level))
    mail = message()
    mail.add_attachment(level, maintype="application", subtype="zip", filename="top.zip")
    extracted = extract(mail.as_bytes(), Limits(max_depth=2))
    assert [a.name for a in extracted.attachments] == ["top.zip", "top.zip/z2.zip", "top.zip/z2.zip/z1.zip"]
    assert "secret" not in " ".join(part.text for part in extracted.texts)
    assert extracted.problems == ("nesting too deep at top.zip/z2.zip/z1.zip: depth 3 > 2",)


def test_zip_bomb_is_reported_not_expanded_and_its_neighbours_still_scanned():
    bomb = zipped(("note.txt", b"ssn 123-45-6789\n"), ("zeros.bin", bytes(20 * 1024 * 1024)), compress=True)
    assert len(bomb) < 100_000
    mail = message()
    mail.add_attachment(bomb, maintype="application", subtype="zip", filename="a.zip")
    extracted = extract(mail.as_bytes())
    assert origins(extracted)["attachment:a.zip/note.txt"] == "ssn 123-45-6789\n"
    [problem] = extracted.problems
    assert problem.startswith("zip bomb suspected in a.zip: ratio ") and problem.endswith(":1 (zeros.bin)")
    assert [(a.name, a.true_type, a.size) for a in extracted.attachments][-1] == (
        "a.zip/zeros.bin",
        "unknown",
        20 * 1024 * 1024,
    )


def test_total_budget_and_entry_limits():
    archive = zipped(*[(f"f{index}.txt", b"x" * 1000) for index in range(5)])
    mail = message()
    mail.add_attachment(archive, maintype="application", subtype="zip", filename="many.zip")
    raw = mail.as_bytes()
    budget = extract(raw, Limits(max_total_bytes=2500))
    assert len([part for part in budget.texts if part.origin.startswith("attachment:many.zip/")]) == 2
    assert sum("would pass the 2500-byte extraction budget" in problem for problem in budget.problems) == 3
    entries = extract(raw, Limits(max_entries=4))
    assert entries.problems == ("too many archive entries in many.zip: limit 4 per message; not expanded",)


def test_encrypted_and_corrupt_members_are_problems_not_crashes():
    data = zipped(("a.txt", b"hello world " * 20), compress=True)
    corrupt = bytearray(data)
    corrupt[38:48] = b"\xff" * 10  # inside the deflate stream
    encrypted = bytearray(data)  # flag bit 0 set in the local header and the central directory
    encrypted[data.index(b"PK\x03\x04") + 6] |= 1
    encrypted[data.index(b"PK\x01\x02") + 8] |= 1
    mail = message()
    mail.add_attachment(bytes(corrupt), maintype="application", subtype="zip", filename="corrupt.zip")
    mail.add_attachment(bytes(encrypted), maintype="application", subtype="zip", filename="locked.zip")
    extracted = extract(mail.as_bytes())
    assert extracted.problems[0].startswith("unreadable archive member corrupt.zip/a.txt: ")
    assert extracted.problems[1] == "encrypted archive member locked.zip/a.txt: not scanned"
    assert [(a.name, a.true_type) for a in extracted.attachments][-1] == ("locked.zip/a.txt", "unknown")


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"%PDF-1.7\n", "pdf"),
        (b"\x89PNG\r\n\x1a\n....", "png"),
        (b"\xff\xd8\xff\xe0", "jpeg"),
        (b"GIF87a..", "gif"),
        (b"\x1f\x8b\x08\x00", "gzip"),
        (b"MZ" + bytes(58) + (64).to_bytes(4, "little") + b"PE\x00\x00", "exe"),
        (b"\x7fELF\x02\x01", "elf"),
        (b"{\\rtf1 hi}", "rtf"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(8), "ole2"),
        (zipped(("x.txt", b"x")), "zip"),
        (zipped(("[Content_Types].xml", b""), ("word/document.xml", b"")), "docx"),
        (zipped(("[Content_Types].xml", b""), ("xl/workbook.xml", b"")), "xlsx"),
        (zipped(("[Content_Types].xml", b""), ("ppt/slides/1.xml", b"")), "pptx"),
        ("plain text, café".encode(), "text"),
        ("latin-1 café".encode("latin-1"), "text"),
        ("utf-16 text".encode("utf-16"), "text"),
        (b"MZ is a text that starts like an exe", "text"),
        (bytes(range(256)), "unknown"),
        (b"", "unknown"),
    ],
)
def test_sniff_uses_magic_bytes(data, kind):
    assert sniff(data) == kind


def test_malformed_input_never_raises():
    """Every corpus message, cut and corrupted at seeded random places, still extracts."""
    rng = random.Random(7)
    for path in sorted(CORPUS.glob("*.eml"))[::5]:
        raw = bytearray(path.read_bytes())
        for _ in range(4):
            mangled = bytearray(raw[: rng.randint(0, len(raw))])
            for _ in range(rng.randint(1, 20)):
                if mangled:
                    mangled[rng.randrange(len(mangled))] = rng.randrange(256)
            extracted = extract(bytes(mangled))
            assert isinstance(extracted.problems, tuple)
    for junk in (
        b"",
        b"\x00" * 100,
        b"Content-Type: multipart/mixed\n\n",
        b"Content-Type: message/rfc822\n\nSubject: x",
    ):
        extract(junk)


# -- the plain message, read without walking ------------------------------------------------

PLAIN_HEADERS = [
    "",
    "Content-Type: text/plain\r\n",
    "Content-Type: text/plain; charset=utf-8\r\n",
    'Content-Type: TEXT/PLAIN; charset="ISO-8859-1"; format=flowed\r\n',
    "Content-Type: text/plain; charset=x-nope\r\n",
    "Content-Type: text/plain; charset=utf-16\r\n",
    "Content-Type: text/plain; name=notes.txt\r\n",
    "Content-Type: textplain\r\n",
    "Content-Type: text/html\r\n",
    "Content-Type: text/plain\r\nContent-Type: text/html\r\n",
    "Content-Type: multipart/mixed; boundary=b\r\n",
    "Content-Type: message/rfc822\r\n",
    "Content-Transfer-Encoding: quoted-printable\r\n",
    "Content-Transfer-Encoding: BASE64 (yes)\r\n",
    "Content-Transfer-Encoding: base64\r\n",
    "Content-Transfer-Encoding: 8bit\r\n",
    "Content-Transfer-Encoding: x-uuencode\r\n",
    "Content-Transfer-Encoding: x-unknown\r\n",
    "Content-Disposition: inline\r\n",
    "Content-Disposition: attachment\r\n",
    "Content-Disposition: inline; filename=a.txt\r\n",
    "Subject: =?utf-8?q?caf=C3=A9?= ACC12345678\r\n",
    "Subject: =?utf-8?b?Y2Fmw6k=?=\r\n folded\r\n",
    "Subject: " + "long " * 30 + "\r\n",
    "X-Note: \xe9t\xe9\r\n",
    "From sender@example.com Mon Nov 30\r\n",
    "Subject x\r\n",
]
PLAIN_BODIES = [
    b"nothing here\r\n",
    b"",
    b"caf=C3=A9 =\r\nsoft break 4111 1111 1111 1111\r\n",
    b"Y2Fmw6kgNDExMSAxMTExIDExMTEgMTExMQ==\r\n",
    b"Y2Fmw6k\r\n",  # base64 that does not decode
    b"\xef\xbb\xbfwith a BOM\r\n",
    b"\xff\xfeh\x00i\x00",
    b"caf\xe9 in latin-1\r\n",
    b"-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA\r\n-----END PGP MESSAGE-----\r\n",
    b"begin 644 a.txt\r\n#86)C\r\n`\r\nend\r\n",
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PLAIN_HEADERS), max_size=4),
    st.sampled_from(PLAIN_BODIES),
    st.sampled_from(["\r\n", "\n"]),
    st.sampled_from([64 * 1024, 40]),
)
def test_a_plain_message_read_directly_is_read_as_the_walker_reads_it(headers, body, newline, header_chars):
    """`extract` reads a message that is one plain-text body without walking its tree
    (`_plain_message`); for any header and body, whichever way it goes, what it finds must
    be what the walker finds: the same headers, texts, attachments and problems."""
    raw = ("From: a@example.com\r\n" + "".join(headers) + "\r\n").replace("\r\n", newline).encode("latin-1") + body
    limits = Limits(max_header_chars=header_chars)
    assert extract(raw, limits) == _walked(raw, mimetree.parse(raw), limits)


ASCII_BODIES = [b"nothing here\r\n", b"", b"card 4111 1111 1111 1111\r\n =?utf-8?q?x?= \r\n", b"tab\tand ~\r\n"]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.sampled_from(PLAIN_HEADERS), max_size=4),
    st.sampled_from(PLAIN_BODIES + ASCII_BODIES),
    st.sampled_from(["\r\n", "\n"]),
    st.sampled_from([64 * 1024, 40]),
)
def test_a_plain_ascii_message_is_what_extract_reads(headers, body, newline, header_chars):
    """Where `plain_ascii` reads a message (its body's bytes are its text), `extract` finds
    exactly that: the same subject and headers, the body as its text, nothing else and no
    problem. Where it does not, the message is still extracted as before."""
    raw = ("From: a@example.com\r\n" + "".join(headers) + "\r\n").replace("\r\n", newline).encode("latin-1") + body
    limits = Limits(max_header_chars=header_chars)
    tree = mimetree.parse(raw)
    plain = plain_ascii(tree, limits)
    if plain is None:
        return
    assert quick_plain_enough(tree)  # the quick path takes it without asking `_plain`
    subject = (TextPart("subject", plain.subject),) if plain.subject else ()
    assert extract(raw, limits) == Extracted(
        plain.subject, tuple(plain.headers), (*subject, TextPart("body", bytes(plain.body).decode("ascii"))), (), ()
    )


@pytest.mark.parametrize(
    ("headers", "body", "as_sent"),
    [
        ("", b"plain words\r\n", True),
        ("Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n", b"words\r\n", True),
        ("Subject: =?utf-8?q?caf=C3=A9?=\r\n", b"plain words\r\n", True),  # the subject is decoded
        ("Content-Type: text/plain; charset=utf-16\r\n", b"plain words\r\n", False),  # not ASCII as ASCII
        ("Content-Type: text/plain; charset=utf-7\r\n", b"a+AGE-b\r\n", False),
        ("Content-Type: text/plain; charset=x-nope\r\n", b"plain words\r\n", False),  # the walker notes it
        ("Content-Transfer-Encoding: quoted-printable\r\n", b"plain words\r\n", False),  # decoded first
        ("Content-Transfer-Encoding: base64\r\n", b"cGxhaW4=\r\n", False),
        ("", "caf\u00e9\r\n".encode(), False),  # not ASCII
        ("X-Note: caf\u00e9\r\n", b"plain words\r\n", False),
        ("Content-Type: text/html\r\n", b"<p>plain</p>\r\n", False),
        ("Content-Disposition: attachment\r\n", b"plain words\r\n", False),
        ("X-Long: " + "x" * 100 + "\r\n", b"plain words\r\n", False),  # cut at 64 characters below
    ],
)
def test_which_messages_are_scanned_as_sent(headers: str, body: bytes, as_sent: bool) -> None:
    raw = ("From: a@example.com\r\nSubject: hi\r\n" + headers + "\r\n").encode() + body
    limits = Limits(max_header_chars=64)
    assert (plain_ascii(mimetree.parse(raw), limits) is not None) is as_sent


@pytest.mark.parametrize(
    ("headers", "body", "direct"),
    [
        ("", b"plain words\r\n", True),
        (
            "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n",
            b"caf=C3=A9\r\n",
            True,
        ),
        ("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n", b"Y2Fmw6k=\r\n", True),
        ("Content-Disposition: inline\r\n", b"plain words\r\n", True),
        # what the walker reads: a note to make, a file, another type, another encoding
        ("Content-Type: text/plain; charset=x-nope\r\n", b"plain words\r\n", False),
        ("Content-Transfer-Encoding: base64\r\n", b"Y2Fmw6k\r\n", False),
        ("Content-Disposition: attachment\r\n", b"plain words\r\n", False),
        ("Content-Type: text/plain; name=a.txt\r\n", b"plain words\r\n", False),
        ("Content-Type: text/html\r\n", b"<p>plain words</p>\r\n", False),
        ("Content-Transfer-Encoding: x-uuencode\r\n", b"begin 644 a.txt\r\n#86)C\r\n`\r\nend\r\n", False),
        ("Subject x\r\n", b"plain words\r\n", False),
    ],
)
def test_which_messages_are_read_directly(headers: str, body: bytes, direct: bool) -> None:
    raw = ("From: a@example.com\r\nSubject: hi\r\n" + headers + "\r\n").encode() + body
    assert (_plain_message(mimetree.parse(raw), Limits()) is not None) is direct
    assert extract(raw) == _walked(raw, mimetree.parse(raw), Limits())


def test_the_corpora_are_read_as_the_walker_reads_them() -> None:
    """Every message of the evaluation corpus (generated by an independent route) and of the
    project's corpus: read directly or walked, the same content; and the usual plain
    messages among them are read directly."""
    raws = [sample.raw for sample in generate()] + [path.read_bytes() for path in sorted(CORPUS.glob("*.eml"))]
    direct = 0
    for raw in raws:
        tree = mimetree.parse(raw)
        direct += _plain_message(tree, Limits()) is not None
        assert extract(raw, tree=tree) == _walked(raw, mimetree.parse(raw), Limits())
    assert direct > len(raws) // 10, f"only {direct} of {len(raws)} messages read directly"
