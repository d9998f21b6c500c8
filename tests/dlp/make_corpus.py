"""Generate the labelled DLP corpus: tests/dlp/corpus/*.eml and labels.json.

Deterministic (seeded, fixed dates, boundaries and zip timestamps), so running it again
rewrites the same files; tests/dlp/test_corpus.py checks that. Each message is built from
pieces whose expected classifier hits are known, so the labels are exact:

- ``hits``: expected match count per classifier over all extracted text,
- ``values``: the expected matched strings (the precision/recall test compares these),
- ``attachments``: expected true types in extraction order (archive members after their
  archive, attached messages before their content),
- ``problems``: substrings the extraction problems must contain (zip bomb, depth, ...).

Filler text has no digits and no "@", so only the planted values can match.

    python tests/dlp/make_corpus.py            # rewrite tests/dlp/corpus/
"""

from __future__ import annotations

import io
import json
import random
import sys
import zipfile
import zlib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path

CLASSIFIERS = ("credit_card", "us_ssn", "iban", "email_address")
CORPUS = Path(__file__).resolve().parent / "corpus"
SEED = 20240611
DATE = "Tue, 11 Jun 2024 09:30:00 +0000"
ZIP_TIME = (2024, 6, 11, 9, 30, 0)

FILLER = (
    "please find the quarterly figures below and let me know if anything looks off before friday "
    "the team reviewed the proposal and agreed to move forward with the second option thanks again "
    "for your patience while we sort out the remaining questions with the vendor regards"
).split()


# --- values: positives and near misses -------------------------------------------------


def luhn_complete(prefix_and_body: str) -> str:
    """Append the Luhn check digit."""
    total = 0
    for position, char in enumerate(reversed(prefix_and_body)):
        value = int(char)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return prefix_and_body + str((10 - total % 10) % 10)


CARD_PREFIXES = (
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
    ("34", 15),
    ("37", 15),
    ("6011", 16),
    ("65", 16),
    ("644", 16),
    ("649", 19),
    ("3528", 16),
    ("3589", 16),
    ("300", 14),
    ("305", 14),
    ("36", 14),
    ("38", 14),
)


def card(rng: random.Random, prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    return luhn_complete(body)


def grouped(number: str, separator: str) -> str:
    """Print a card the way issuers do: 4-6-5 for 15 digits, 4-6-4 for 14, else fours."""
    if len(number) == 15:
        parts = [number[:4], number[4:10], number[10:]]
    elif len(number) == 14:
        parts = [number[:4], number[4:10], number[10:]]
    else:
        parts = [number[i : i + 4] for i in range(0, len(number), 4)]
    return separator.join(parts)


def bad_luhn(number: str) -> str:
    last = int(number[-1])
    return number[:-1] + str((last + 1) % 10)


def ssn(rng: random.Random) -> tuple[str, str, str]:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


def iban_of(country: str, bban: str) -> str:
    rearranged = bban + country + "00"
    number = int("".join(str(int(char, 36)) for char in rearranged))
    return f"{country}{98 - number % 97:02d}{bban}"


IBAN_BBANS = {  # country: BBAN shape, "9" digit, "A" letter
    "DE": "999999999999999999",
    "FR": "9999999999AAAAAAAAAAA99",
    "GB": "AAAA99999999999999",
    "NL": "AAAA9999999999",
    "ES": "99999999999999999999",
    "IT": "A9999999999AAAAAAAAAAAA",
    "BE": "999999999999",
    "CH": "99999AAAAAAAAAAAA",
    "NO": "99999999999",
    "PL": "999999999999999999999999",
}


def random_iban(rng: random.Random, country: str) -> str:
    shape = IBAN_BBANS[country]
    bban = "".join(rng.choice("0123456789") if c == "9" else rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for c in shape)
    return iban_of(country, bban)


def spaced(code: str) -> str:
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


# --- building blocks -------------------------------------------------------------------


@dataclass
class Text:
    """Text assembled from filler and planted values, with the values it must yield."""

    rng: random.Random
    pieces: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=lambda: {name: [] for name in CLASSIFIERS})

    def filler(self, low: int = 6, high: int = 18) -> Text:
        self.pieces.append(" ".join(self.rng.choice(FILLER) for _ in range(self.rng.randint(low, high))))
        return self

    def plant(self, value: str, classifier: str | None = None, before: str = " ", after: str = " ") -> Text:
        """Put ``value`` in the text; ``classifier`` names the one that must find it."""
        self.pieces.append(f"{before}{value}{after}")
        if classifier:
            self.values[classifier].append(value)
        return self

    def render(self) -> str:
        return " ".join(self.pieces).strip() + "\n"


@dataclass
class Sample:
    name: str
    message: EmailMessage
    values: dict[str, list[str]]
    attachments: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    deterministic: bool = True


def new_message(number: int, subject: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice Sender <alice@corp.example>"
    message["To"] = "Bob Receiver <bob@partner.example>"
    message["Subject"] = subject
    message["Date"] = DATE
    message["Message-ID"] = f"<corpus-{number:04d}@corp.example>"
    return message


def merge(*texts: Text) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {name: [] for name in CLASSIFIERS}
    for text in texts:
        for name in CLASSIFIERS:
            merged[name].extend(text.values[name])
    return merged


def zip_bytes(members: list[tuple[str, bytes]], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.compress_type = method
            archive.writestr(info, data, compresslevel=9 if compress else None)
    return buffer.getvalue()


def gzip_stored(data: bytes) -> bytes:
    """A gzip file with one stored (uncompressed) deflate block: the same bytes on every zlib."""
    block = b"\x01" + len(data).to_bytes(2, "little") + (len(data) ^ 0xFFFF).to_bytes(2, "little") + data
    trailer = zlib.crc32(data).to_bytes(4, "little") + len(data).to_bytes(4, "little")
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + block + trailer


FAKE_FILES = {
    "pdf": (  # a minimal valid PDF of one empty page (catalog, pages, page, xref)
        b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n2 0 obj\n<< /Type /Pages /Kids [3 0 R] /Count 1 >>\n"
        b"endobj\n3 0 obj\n<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>\nendobj\nxref\n0 4\n"
        b"0000000000 65535 f \n0000000009 00000 n \n0000000058 00000 n \n0000000115 00000 n \n"
        b"trailer\n<< /Size 4 /Root 1 0 R >>\nstartxref\n186\n%%EOF\n"
    ),
    "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(32),
    "jpeg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(32),
    "gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(16),
    "gzip": gzip_stored(b"the build log, nothing else\n"),
    "exe": b"MZ\x90\x00\x03" + bytes(55) + (0x80).to_bytes(4, "little") + bytes(64) + b"PE\x00\x00" + bytes(64),
    "elf": b"\x7fELF\x02\x01\x01\x00" + bytes(56),
    "rtf": b"{\\rtf1\\ansi\\deff0 {\\fonttbl {\\f0 Times;}} hello}",
    "ole2": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
    "docx": zip_bytes([("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b'<w:document xmlns:w="urn:w"/>')]),
    "xlsx": zip_bytes([("[Content_Types].xml", b"<Types/>"), ("xl/workbook.xml", b"<workbook/>")]),
    "pptx": zip_bytes(
        [("[Content_Types].xml", b"<Types/>"), ("ppt/presentation.xml", b'<p:presentation xmlns:p="urn:p"/>')]
    ),
}


# --- the samples -----------------------------------------------------------------------


def card_positives(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    for index in range(count):
        text = Text(rng).filler()
        for _ in range(rng.randint(1, 3)):
            prefix, length = rng.choice(CARD_PREFIXES)
            number = card(rng, prefix, length)
            style = index % 4
            value = number if style == 0 else grouped(number, " " if style in (1, 3) else "-")
            text.plant(
                value,
                "credit_card",
                before=rng.choice([" card ", " number: ", " "]),
                after=rng.choice([" ", ". ", ", "]),
            )
            text.filler()
        out.append(("card", text))
    return out


def card_near_misses(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    for index in range(count):
        prefix, length = rng.choice(CARD_PREFIXES)
        number = card(rng, prefix, length)
        kind = index % 7
        if kind == 0:  # Luhn-invalid
            value = bad_luhn(number)
        elif kind == 1:  # Luhn-invalid, printed in groups
            value = grouped(bad_luhn(number), " ")
        elif kind == 2:  # a valid card inside a longer digit run
            value = f"{rng.randint(10, 99)}{number}{rng.randint(10, 99)}"
        elif kind == 3:  # glued to letters: an order id
            value = f"ORD{number}"
        elif kind == 4:  # Luhn-valid but no issuer starts with 1 or 9
            value = luhn_complete(rng.choice("19") + "".join(rng.choice("0123456789") for _ in range(14)))
        elif kind == 5:  # phone numbers
            value = f"+1 ({rng.randint(200, 989)}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
        else:  # twelve digits: too short
            value = grouped(number[:12], " ")
        out.append(("card-near-miss", Text(rng).filler().plant(value).filler()))
    return out


def ssn_positives(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    for index in range(count):
        text = Text(rng).filler()
        for _ in range(rng.randint(1, 2)):
            area, group, serial = ssn(rng)
            value = f"{area}-{group}-{serial}" if index % 3 else f"{area}{group}{serial}"
            text.plant(value, "us_ssn", before=rng.choice([" SSN ", " social security number ", " "])).filler()
        out.append(("ssn", text))
    return out


def ssn_near_misses(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    for index in range(count):
        area, group, serial = ssn(rng)
        kind = index % 10
        value = [
            f"000-{group}-{serial}",  # area 000
            f"666-{group}-{serial}",  # area 666
            f"9{rng.randint(0, 99):02d}-{group}-{serial}",  # area 9xx
            f"{area}-00-{serial}",  # group 00
            f"{area}-{group}-0000",  # serial 0000
            f"20{rng.randint(10, 30)}-{rng.randint(1, 12):02d}-{rng.randint(1000, 9999)}",  # date-shaped
            f"{rng.randint(200, 989)}-{rng.randint(200, 989)}-{rng.randint(1000, 9999)}",  # phone
            f"{area}{group}{serial}{rng.randint(0, 9)}",  # ten digits
            f"{rng.randint(1, 9)}{area}-{group}-{serial}",  # inside a longer run
            f"{rng.randint(10000, 99999)}-{rng.randint(1000, 9999)}",  # ZIP+4
        ][kind]
        out.append(("ssn-near-miss", Text(rng).filler().plant(value).filler()))
    return out


def iban_positives(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    countries = sorted(IBAN_BBANS)
    for index in range(count):
        text = Text(rng).filler()
        code = random_iban(rng, countries[index % len(countries)])
        value = spaced(code) if index % 2 else code
        text.plant(value, "iban", before=" IBAN: ", after=rng.choice([" ", ". "])).filler()
        out.append(("iban", text))
    return out


def iban_near_misses(rng: random.Random, count: int) -> list[tuple[str, Text]]:
    out = []
    countries = sorted(IBAN_BBANS)
    for index in range(count):
        code = random_iban(rng, countries[index % len(countries)])
        kind = index % 4
        if kind == 0:  # wrong check digits
            check = (int(code[2:4]) + rng.randint(1, 50)) % 97 + 2
            value = code[:2] + f"{check:02d}" + code[4:]
        elif kind == 1:  # wrong check digits, spaced
            check = (int(code[2:4]) + rng.randint(1, 50)) % 97 + 2
            value = spaced(code[:2] + f"{check:02d}" + code[4:])
        elif kind == 2:  # one character short for its country
            value = code[:-1]
        else:  # a country that has no IBAN
            value = "US" + code[2:]
        out.append(("iban-near-miss", Text(rng).filler().plant(value).filler()))
    return out


def email_samples(rng: random.Random, positives: int, near_misses: int) -> list[tuple[str, Text]]:
    out = []
    addresses = [
        "john.doe@example.com",
        "a.b+tag@mail.example.org",
        "ops-team@sub.domain.example.co.uk",
        "x_y@corp.example",
    ]
    for index in range(positives):
        text = (
            Text(rng).filler().plant(addresses[index % len(addresses)], "email_address", before=" write to ").filler()
        )
        out.append(("email", text))
    misses = [
        "john at example dot com",
        "user@localhost",
        "a..b@example.com",
        "@handle",
        "user@@example.com",
        "name@example",
    ]
    for index in range(near_misses):
        out.append(("email-near-miss", Text(rng).filler().plant(misses[index % len(misses)]).filler()))
    return out


def plain_messages(rng: random.Random, start: int) -> list[Sample]:
    """One text/plain message per text sample, cycling through transfer encodings."""
    texts = (
        card_positives(rng, 36)
        + card_near_misses(rng, 28)
        + ssn_positives(rng, 24)
        + ssn_near_misses(rng, 20)
        + iban_positives(rng, 20)
        + iban_near_misses(rng, 16)
        + email_samples(rng, 12, 12)
    )
    samples = []
    for offset, (kind, text) in enumerate(texts):
        number = start + offset
        message = new_message(number, f"{kind} {number}")
        cte = ("7bit", "quoted-printable", "base64")[offset % 3]
        message.set_content(text.render(), cte=cte)
        samples.append(Sample(f"{number:04d}-{kind}-{cte}.eml", message, text.values))
    return samples


def html_messages(rng: random.Random, start: int) -> list[Sample]:
    samples = []
    for offset in range(12):
        number = start + offset
        text = Text(rng).filler()
        prefix, length = rng.choice(CARD_PREFIXES)
        text.plant(grouped(card(rng, prefix, length), " "), "credit_card").filler()
        area, group, serial = ssn(rng)
        text.plant(f"{area}-{group}-{serial}", "us_ssn").filler()
        hidden = card(rng, "4", 16)  # inside <script>: not visible text, must not count
        html = (
            "<html><head><style>p { color: red } /* 078-05-1120 */</style>"
            f'<script>var card = "{hidden}";</script></head><body>'
            + "".join(f"<p>{piece}</p>" for piece in text.pieces)
            + "<table><tr><td>total</td><td>none</td></tr></table></body></html>"
        )
        message = new_message(number, f"html {number}")
        if offset % 2:  # alternative: the same words twice, counted once
            message.set_content(text.render())
            message.add_alternative(html, subtype="html")
            kind = "alternative"
        else:
            message.set_content(html, subtype="html", cte=("quoted-printable", "base64")[offset % 4 // 2])
            kind = "html"
        samples.append(Sample(f"{number:04d}-{kind}.eml", message, text.values))
    return samples


def charset_messages(rng: random.Random, start: int) -> list[Sample]:
    samples = []
    bodies = [
        ("iso-8859-1", "quoted-printable", "Résumé et données: "),
        ("utf-8", "base64", "Grüße aus Zürich, straße: "),
        ("shift_jis", "base64", "日本語のテキスト "),
        ("koi8-r", "8bit", "Привет мир "),
        ("windows-1252", "quoted-printable", "naïve café “quoted” "),
    ]
    for offset, (charset, cte, words) in enumerate(bodies * 2):
        number = start + offset
        text = Text(rng).plant(words, before="", after="").filler()
        text.plant(random_iban(rng, "DE"), "iban").filler()
        text.plant("finance@corp.example", "email_address").filler()
        message = new_message(number, f"charset {charset}")
        message.set_content(text.render(), charset=charset, cte=cte)
        samples.append(Sample(f"{number:04d}-charset-{charset}.eml", message, text.values))
    return samples


def attachment_messages(rng: random.Random, start: int) -> list[Sample]:
    samples = []
    number = start

    def sample(kind: str, message: EmailMessage, values, types, problems=(), deterministic=True) -> None:
        nonlocal number
        samples.append(Sample(f"{number:04d}-{kind}.eml", message, values, list(types), list(problems), deterministic))
        number += 1

    # every true type, under an honest name and under a lying one
    for offset, (kind, data) in enumerate(sorted(FAKE_FILES.items())):
        body = Text(rng).filler()
        message = new_message(number, f"file {kind}")
        message.set_content(body.render())
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=f"file.{kind}")
        liar = ("report.pdf", "notes.txt", "photo.jpg")[offset % 3]
        message.add_attachment(data, maintype="application", subtype="pdf", filename=liar)
        types = [kind, "text"] * 2 if kind == "gzip" else [kind, kind]  # a gzip is opened: its text file
        sample(f"type-{kind}", message, body.values, types)

    # an executable renamed .pdf and claimed as a PDF
    body = Text(rng).filler()
    message = new_message(number, "invoice attached")
    message.set_content(body.render())
    message.add_attachment(FAKE_FILES["exe"], maintype="application", subtype="pdf", filename="invoice.pdf")
    sample("renamed-exe", message, body.values, ["exe"])

    # a zip renamed .txt: expanded anyway, its CSV scanned
    for _ in range(4):
        body = Text(rng).filler()
        rows = Text(rng).plant("name,card\n", before="", after="")
        for _ in range(2):
            rows.plant(card(rng, "51", 16), "credit_card", before="customer,", after="\n")
        data = zip_bytes([("customers.csv", rows.render().encode())])
        message = new_message(number, "notes")
        message.set_content(body.render())
        message.add_attachment(data, maintype="text", subtype="plain", filename="notes.txt")
        sample("renamed-zip", message, merge(body, rows), ["zip", "text"])

    # text attachments: csv, html, log
    for offset in range(8):
        body = Text(rng).filler()
        attached = Text(rng).filler()
        area, group, serial = ssn(rng)
        attached.plant(f"{area}-{group}-{serial}", "us_ssn").filler()
        attached.plant(spaced(random_iban(rng, "FR")), "iban").filler()
        message = new_message(number, "records")
        message.set_content(body.render())
        if offset % 2:
            html = "<html><body>" + "".join(f"<div>{p}</div>" for p in attached.pieces) + "</body></html>"
            message.add_attachment(html, subtype="html", filename="records.html")
        else:
            message.add_attachment(attached.render(), filename="records.csv")
        sample("text-attachment", message, merge(body, attached), ["text"])

    # nested zips: two levels expanded; a fourth level is listed but not opened
    for _ in range(4):
        body = Text(rng).filler()
        shallow = Text(rng).filler().plant(card(rng, "4", 16), "credit_card").filler()
        deep = Text(rng).filler().plant(card(rng, "37", 15), "credit_card").filler()
        too_deep = Text(rng).filler().plant(card(rng, "6011", 16)).filler()  # depth 4: not scanned
        level3 = zip_bytes([("deeper.txt", too_deep.render().encode())])
        level2 = zip_bytes([("level3.zip", level3), ("deep.txt", deep.render().encode())])
        level1 = zip_bytes([("level2.zip", level2), ("shallow.txt", shallow.render().encode())])
        outer = zip_bytes([("level1.zip", level1)])
        message = new_message(number, "archive")
        message.set_content(body.render())
        message.add_attachment(outer, maintype="application", subtype="zip", filename="outer.zip")
        sample(
            "nested-zip",
            message,
            merge(body, shallow, deep),
            ["zip", "zip", "zip", "zip", "text", "text"],
            ["nesting too deep at outer.zip/level1.zip/level2.zip/level3.zip"],
        )

    # attached messages (message/rfc822) with their own attachment
    for offset in range(6):
        body = Text(rng).filler()
        inner_body = Text(rng).filler().plant(f"{'-'.join(ssn(rng))}", "us_ssn").filler()
        inner_file = Text(rng).filler().plant(random_iban(rng, "GB"), "iban").filler()
        inner = new_message(900 + offset, "forwarded statement")
        inner.set_content(inner_body.render())
        inner.add_attachment(inner_file.render(), filename="statement.txt")
        _deterministic_boundaries(inner, f"inner{offset}")
        message = new_message(number, "fwd: statement")
        message.set_content(body.render())
        message.add_attachment(inner, filename="forwarded.eml")
        sample("rfc822", message, merge(body, inner_body, inner_file), ["text", "text"])

    # a zip bomb: 50 MB of zeros next to a small note; the note is scanned, the bomb is not
    body = Text(rng).filler()
    note = Text(rng).filler().plant(card(rng, "55", 16), "credit_card").filler()
    bomb = zip_bytes([("note.txt", note.render().encode()), ("zeros.bin", bytes(50 * 1024 * 1024))], compress=True)
    message = new_message(number, "logs")
    message.set_content(body.render())
    message.add_attachment(bomb, maintype="application", subtype="zip", filename="logs.zip")
    sample(
        "zip-bomb", message, merge(body, note), ["zip", "text", "unknown"], ["zip bomb suspected in logs.zip"], False
    )
    return samples


def malformed_messages(rng: random.Random, start: int) -> list[Sample]:
    """Raw bytes that break MIME rules; extraction must degrade, not raise."""
    area, group, serial = ssn(rng)
    value = f"{area}-{group}-{serial}"
    raws = [
        (
            "bad-charset",
            f"Subject: odd\nContent-Type: text/plain; charset=x-unknown\n\nssn {value} here\n",
            ["unknown charset"],
        ),
        (
            "no-end-boundary",
            f'Subject: cut\nContent-Type: multipart/mixed; boundary="b1"\n\n--b1\nContent-Type: text/plain\n\nssn {value}\n',
            [],
        ),
        ("bad-base64", f"Subject: b64\nContent-Transfer-Encoding: base64\n\n{'c3NuIA'}===\n!!notbase64!!\n", []),
        ("no-headers", f"\nssn {value} with no headers at all\n", []),
        ("binary-junk", "Subject: junk\n\n\x00\x01\x02 ssn " + value + " \xff\xfe\n", []),
    ]
    samples = []
    for offset, (kind, raw, problems) in enumerate(raws):
        values = {name: [] for name in CLASSIFIERS}
        if value in raw and kind != "bad-base64":
            values["us_ssn"].append(value)
        samples.append(Sample(f"{start + offset:04d}-malformed-{kind}.eml", raw, values, [], problems))
    return samples


def subject_messages(rng: random.Random, start: int) -> list[Sample]:
    samples = []
    for offset in range(6):
        number = start + offset
        value = card(rng, "4", 16)
        body = Text(rng).filler()
        message = new_message(number, f"card {value} please")
        message.set_content(body.render())
        values = merge(body)
        values["credit_card"].append(value)
        samples.append(Sample(f"{number:04d}-subject.eml", message, values))
    return samples


def _deterministic_boundaries(message: EmailMessage, stem: str) -> None:
    for index, part in enumerate(message.walk()):
        if part.is_multipart():
            part.set_boundary(f"=={stem}.{index}==")


def build(seed: int = SEED) -> list[Sample]:
    rng = random.Random(seed)
    samples: list[Sample] = []
    for make in (
        plain_messages,
        html_messages,
        charset_messages,
        attachment_messages,
        subject_messages,
        malformed_messages,
    ):
        samples.extend(make(rng, len(samples) + 1))
    return samples


def serialise(sample: Sample) -> bytes:
    if isinstance(sample.message, str):
        return sample.message.encode("latin-1")
    _deterministic_boundaries(sample.message, sample.name.split("-")[0])
    return sample.message.as_bytes(policy=policy.SMTP)


def labels_of(samples: list[Sample]) -> dict:
    return {
        sample.name: {
            "hits": {name: len(sample.values[name]) for name in CLASSIFIERS},
            "values": sample.values,
            "attachments": sample.attachments,
            "problems": sample.problems,
            "deterministic": sample.deterministic,
        }
        for sample in samples
    }


def write(directory: Path, seed: int = SEED) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    samples = build(seed)
    for old in directory.glob("*.eml"):
        old.unlink()
    for sample in samples:
        (directory / sample.name).write_bytes(serialise(sample))
    labels = labels_of(samples)
    (directory / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return labels


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    written = write(target)
    print(f"wrote {len(written)} messages and labels.json to {target}")
