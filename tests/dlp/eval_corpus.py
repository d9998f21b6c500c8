"""An evaluation corpus for the DLP classifiers, generated at test time by another route.

The classifiers (engine/relay/dlp/classifiers.py) are never asked anything here: every value
comes from Faker's providers (card numbers, expiry dates, SSNs, IBANs of 26 locales, email
addresses, phone numbers, ISBN-13, EAN-13, ABA routing numbers, UUIDs) or schwifty's
``IBAN.random`` (30 countries, with real bank codes), and the labels are what the
generator planted. Each message has a realistic layout (invoice, bank letter, order
confirmation, HR record, chat log, source code, CSV export, log file) and travels as a
plain body, HTML, quoted-printable, multipart/alternative, a base64 attachment, a zip, or
inside a document written by its own library (PDF by fpdf2, docx by python-docx, xlsx by
openpyxl, odt and ods by odfpy: never by the extractor under test).
Hard negatives (IBANs for the card classifier, account, routing and tracking numbers,
phone numbers, ISBN-13, EAN-13, timestamps, UUIDs, hashes, Luhn-valid numbers with prefixes
no issuer uses, mistyped cards, image names like ``logo@2x.png``, ``git@host:repo`` remotes,
npm scopes, Content-IDs) sit around the positives.

What counts as a positive is the generator's (and a reader's) judgement, stated once:

- a card: a number Faker generates for Visa (13/16/19), Mastercard, Amex, Discover, Diners
  or JCB, printed compact or in its issuer's grouping. Faker's prefix tables are looser
  than the networks' (its JCB ``35`` covers 3500–3599, the IIN range is 3528–3589; its
  Mastercard ``222%`` includes 2220); such draws are not issuable and are drawn again.
  Maestro and Faker's 15-digit "JCB" (1800, 2131) are not planted: the classifier does not
  claim them (see docs/dlp-scanning.md).
- an SSN: Faker's en_US ``ssn()``, dashed anywhere; bare or spaced only where a label
  says what it is ("SSN: 123456789"): nine bare digits with nothing around them are not
  recognisable as an SSN, to a reader or to a classifier.
- an IBAN: compact or in groups of four; an email address: anywhere.

Deterministic for a seed (``SEED``): Faker and ``random.Random`` are seeded, dates fixed.
"""

from __future__ import annotations

import base64
import html
import io
import quopri
import random
import re
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from faker import Faker
from schwifty import IBAN

SEED = 20261130
COUNT = 2400
CLASSIFIERS = ("credit_card", "us_ssn", "iban", "email_address")
LOCALES = ["en_US", "en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES", "it_IT"]
IBAN_LOCALES = [*LOCALES[1:], "pl_PL", "pt_PT", "de_AT", "de_CH", "nl_BE", "sv_SE", "no_NO", "cs_CZ", "ro_RO", "el_GR"]
SCHWIFTY_COUNTRIES = [
    "DE", "AT", "BE", "ES", "FR", "GB", "NL", "IT", "CH", "PL", "SE", "FI", "NO", "DK", "CZ", "SK", "SI", "HR",
    "LU", "LT", "LV", "EE", "IE", "PT", "HU", "RO", "BG", "SA", "AE", "IS",
]  # fmt: skip
CARD_TYPES = ["visa16", "visa16", "visa13", "visa19", "mastercard", "mastercard", "amex", "discover", "diners", "jcb16"]
DOCUMENTS = {  # transport: the attached file's extension and media type
    "pdf": ("pdf", "application/pdf"),
    "docx": ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xlsx": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "odt": ("odt", "application/vnd.oasis.opendocument.text"),
    "ods": ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
}
TRANSPORTS = ["plain", "qp", "html", "alternative", "attachment", "zip", *DOCUMENTS]
FIXED = datetime(2026, 11, 30, 9, 30, tzinfo=UTC)  # every document's dates (the corpus is reproducible)


@dataclass(frozen=True)
class Sample:
    name: str
    raw: bytes
    planted: dict[str, frozenset[str]]  # classifier -> normalized values


def normalize(classifier: str, value: str) -> str:
    """The form in which found and planted values are compared."""
    if classifier in ("credit_card", "us_ssn"):
        return re.sub(r"\D", "", value)
    if classifier == "iban":
        return re.sub(r"[^A-Za-z0-9]", "", value).upper()
    return value.lower()


def _issuable(number: str) -> bool:
    """The networks' IIN ranges where Faker's prefix tables are wider (see the docstring)."""
    return not (number.startswith("2220") or (number.startswith("35") and not 3528 <= int(number[:4]) <= 3589))


def _luhn_complete(body: str) -> str:
    total = 0
    for position, char in enumerate(reversed(body)):
        value = int(char)
        if position % 2 == 0:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return body + str((10 - total % 10) % 10)


class _Message:
    """One message being written: what it planted, and its random sources."""

    def __init__(self, r: random.Random, fake: Faker, banks: Faker, pool: list[str]) -> None:
        self.r, self.fake, self.banks, self.pool, self.us = r, fake, banks, pool, fake["en_US"]
        self.planted: dict[str, set[str]] = defaultdict(set)

    def plant(self, classifier: str, printed: str) -> str:
        self.planted[classifier].add(normalize(classifier, printed))
        return printed

    # -- positives ------------------------------------------------------------------------

    def card(self) -> str:
        while True:
            number = self.us.credit_card_number(card_type=self.r.choice(CARD_TYPES))
            if _issuable(number):
                break
        return self.plant("credit_card", self._printed(number))

    def _printed(self, number: str) -> str:
        style = self.r.random()
        if style < 0.45:
            return number
        sep = " " if style < 0.8 else "-"
        sizes = {15: (4, 6, 5), 14: (4, 6, 4), 13: (4, 4, 5), 19: (4, 4, 4, 4, 3)}.get(len(number), (4, 4, 4, 4))
        groups, at = [], 0
        for size in sizes:
            groups.append(number[at : at + size])
            at += size
        return sep.join(groups)

    def expiry(self) -> str:
        return f"{self.r.randint(1, 12):02d}/{self.r.randint(27, 35)}"

    def moment(self) -> datetime:
        """A fixed-range time (Faker's dates end at "now", so they change from day to day)."""
        return datetime.fromtimestamp(self.r.randint(0, 1_790_000_000) + self.r.random(), tz=UTC)

    def ssn(self, labelled: bool) -> str:
        value = self.us.ssn()
        if labelled and self.r.random() < 0.5:
            value = value.replace("-", "") if self.r.random() < 0.7 else value.replace("-", " ")
        return self.plant("us_ssn", value)

    def iban(self) -> str:
        if self.r.random() < 0.5:
            value = self.r.choice(self.pool)
        else:
            locale = self.r.choice(IBAN_LOCALES)
            value = (self.fake if locale in LOCALES else self.banks)[locale].iban()
        if self.r.random() < 0.5:
            value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
        return self.plant("iban", value)

    def email(self) -> str:
        kind = self.r.random()
        value = self.us.email() if kind < 0.5 else self.us.company_email() if kind < 0.8 else self.us.free_email()
        return self.plant("email_address", value)

    # -- hard negatives -------------------------------------------------------------------

    def negative(self) -> str:
        return self.r.choice(NEGATIVES)(self)

    def words(self, n: int = 12) -> str:
        return " ".join(self.us.words(n))

    def sentence(self) -> str:
        return self.us.sentence(nb_words=self.r.randint(6, 14))


def _wrong_prefix(m: _Message) -> str:
    first = m.r.choice(["1", "7", "8", "9", "0", "2220", "3500", "3599"])
    body = first + "".join(m.r.choice("0123456789") for _ in range(15 - len(first)))
    number = _luhn_complete(body)
    return (
        f"Member ID {number}" if m.r.random() < 0.5 else f"ref {' '.join(number[i : i + 4] for i in range(0, 16, 4))}"
    )


def _mistyped_card(m: _Message) -> str:
    number = m.us.credit_card_number(card_type="visa16")
    wrong = number[:-1] + str((int(number[-1]) + m.r.randint(1, 9)) % 10)
    return f"old card {wrong} (declined)"


def _iban_as_noise(m: _Message) -> str:  # an IBAN is a positive for `iban`, a negative for cards
    return f"Beneficiary account: {m.iban()}"


NEGATIVES = [
    _wrong_prefix,
    _mistyped_card,
    _iban_as_noise,
    lambda m: f"Account no. {m.r.randint(10**7, 10**12 - 1)}",
    lambda m: f"ABA routing {m.us.aba()}",
    lambda m: f"Tracking: 1Z{''.join(m.r.choice('0123456789ABCDEFGHJKLMNPRSTUVWXYZ') for _ in range(16))}",
    lambda m: f"FedEx tracking {m.r.randint(10**11, 10**12 - 1)}",
    lambda m: (
        "USPS " + " ".join(["9400"] + [f"{m.r.randint(0, 9999):04d}" for _ in range(4)] + [f"{m.r.randint(0, 99):02d}"])
    ),
    lambda m: f"Phone: {m.us.phone_number()}",
    lambda m: f"Tel. {m.fake[m.r.choice(LOCALES)].phone_number()}",
    lambda m: f"ISBN {m.us.isbn13()}" if m.r.random() < 0.5 else f"ISBN {m.us.isbn13(separator='')}",
    lambda m: f"EAN {m.us.ean13()}",
    lambda m: f"ts={m.r.randint(1_500_000_000_000, 1_800_000_000_000)}",
    lambda m: f"at {m.r.randint(1_500_000_000, 1_800_000_000)} ({m.moment().isoformat()})",
    lambda m: f"request-id {uuid.UUID(int=m.r.getrandbits(128), version=4)}",
    lambda m: f"sha1 {m.r.getrandbits(160):040x}",
    lambda m: f"ZIP {m.r.randint(10000, 99999)}-{m.r.randint(1000, 9999)}",
    lambda m: f"Invoice INV-{m.r.randint(2020, 2026)}-{m.r.randint(0, 999999):06d}",
    lambda m: f"Order #{m.r.randint(10**8, 10**9 - 1)}",
    lambda m: f"Total: ${m.r.randint(1, 99999):,}.{m.r.randint(0, 99):02d}",
    lambda m: f'<img src="logo@{m.r.randint(2, 3)}x.png"> icon@2x.png',
    lambda m: f"cid:image00{m.r.randint(1, 9)}.png@01DA{m.r.getrandbits(32):08X}.{m.r.getrandbits(32):08X}",
    lambda m: f"git clone git@github.com:{m.us.user_name()}/{m.us.word()}.git",
    lambda m: f"npm install @{m.us.word()}/{m.us.word()}@{m.r.randint(1, 9)}.{m.r.randint(0, 20)}.{m.r.randint(0, 9)}",
    lambda m: f"thanks @{m.us.user_name()}!",
    lambda m: f"server {m.us.ipv4()} mac {m.us.mac_address()}",
    lambda m: f"card ending in {m.r.randint(1000, 9999)}",
    lambda m: "**** **** **** " + f"{m.r.randint(0, 9999):04d}",
]


# --- layouts: (filename stem, text) with positives and negatives planted -----------------


def _invoice(m: _Message) -> tuple[str, str]:
    lines = [
        f"INVOICE INV-{m.r.randint(1000, 99999)}",
        m.us.company(),
        m.us.address(),
        f"Date: {m.moment():%Y-%m-%d}",
        "",
    ]
    for _ in range(m.r.randint(2, 6)):
        lines.append(
            f"{m.us.bs().title():<40} {m.r.randint(1, 20):>3} x {m.r.randint(5, 900)}.{m.r.randint(0, 99):02d}"
        )
    lines += ["", m.negative(), m.negative()]
    if m.r.random() < 0.5:
        lines.append(f"Paid by card: {m.card()}  exp {m.expiry()}")
    if m.r.random() < 0.5:
        lines += [f"Bank transfer to IBAN {m.iban()}", f"BIC {m.us.swift()}"]
    lines.append(f"Questions? {m.email()}")
    return "invoice", "\n".join(lines)


def _bank_letter(m: _Message) -> tuple[str, str]:
    name = m.us.name()
    lines = [f"Dear {name},", "", m.sentence(), m.sentence()]
    lines.append(f"Your account {m.iban()} has been updated." if m.r.random() < 0.7 else m.negative())
    lines += [m.sentence(), m.negative()]
    if m.r.random() < 0.4:
        lines.append(f"For your tax records we hold the SSN {m.ssn(labelled=True)} on file.")
    if m.r.random() < 0.3:
        lines.append(f"Your new debit card {m.card()} is on its way.")
    lines += ["", "Kind regards,", m.us.name(), m.us.company(), m.negative()]
    return "letter", "\n".join(lines)


def _order(m: _Message) -> tuple[str, str]:
    lines = [f"Thank you for your order, {m.us.first_name()}!", m.negative(), m.negative()]
    for _ in range(m.r.randint(1, 4)):
        lines.append(f"- {m.us.catch_phrase()}  ISBN {m.us.isbn13()}  ${m.r.randint(5, 80)}.99")
    lines.append(m.negative())
    lines.append("Payment: " + (m.card() if m.r.random() < 0.4 else m.negative()))
    lines.append(f"Shipping confirmation goes to {m.email()}")
    return "order", "\n".join(lines)


def _chat(m: _Message) -> tuple[str, str]:
    people = [m.us.first_name().lower() for _ in range(3)]
    lines = []
    for _ in range(m.r.randint(6, 14)):
        say = m.r.random()
        if say < 0.08:
            text = f"here's the card {m.card()} exp {m.expiry()}"
        elif say < 0.14:
            text = f"my ssn is {m.ssn(labelled=True)}"
        elif say < 0.2:
            text = f"send it to {m.email()}"
        elif say < 0.25:
            text = f"iban {m.iban()}"
        elif say < 0.55:
            text = m.negative()
        else:
            text = m.sentence().lower()
        lines.append(f"[{m.moment():%Y-%m-%d %H:%M:%S}] {m.r.choice(people)}: {text}")
    return "chat", "\n".join(lines)


def _code(m: _Message) -> tuple[str, str]:
    lines = [
        '"""' + m.sentence() + '"""',
        "import uuid",
        "",
        f'AUTHOR = "{m.us.name()} <{m.email()}>"',
        f'REQUEST_ID = "{uuid.UUID(int=m.r.getrandbits(128), version=4)}"',
        f"TIMEOUT_MS = {m.r.randint(100, 100000)}",
        f"# {m.negative()}",
        f'ASSET = "static/logo@{m.r.randint(2, 3)}x.png"',
        f"def {m.us.word()}_{m.us.word()}(x):",
        f"    return x * {m.r.randint(10**9, 10**13)}  # {m.negative()}",
    ]
    if m.r.random() < 0.3:
        lines.append(f'TEST_CARD = "{m.card()}"  # sandbox card')
    return "code.py", "\n".join(lines)


def _csv(m: _Message) -> tuple[str, str]:
    kind = m.r.choice(["cards", "people", "payees", "contacts"])
    rows = []
    if kind == "cards":
        rows.append("name,email,card_number,expiry,phone")
        for _ in range(m.r.randint(3, 15)):
            rows.append(f"{m.us.name()},{m.email()},{m.card()},{m.expiry()},{m.us.phone_number()}")
    elif kind == "people":
        rows.append("employee,ssn,dob,employee_id")
        for _ in range(m.r.randint(3, 15)):
            rows.append(f"{m.us.name()},{m.ssn(labelled=False)},{m.moment():%Y-%m-%d},{m.r.randint(10**5, 10**9)}")
    elif kind == "payees":
        rows.append("payee,iban,amount,reference")
        for _ in range(m.r.randint(3, 15)):
            rows.append(f"{m.us.company()},{m.iban()},{m.r.randint(1, 9999)}.{m.r.randint(0, 99):02d},{m.negative()}")
    else:
        rows.append("name,email,phone,order,tracking")
        for _ in range(m.r.randint(3, 15)):
            rows.append(f"{m.us.name()},{m.email()},{m.us.phone_number()},{m.negative()},{m.negative()}")
    return "export.csv", "\n".join(row.replace('"', "") for row in rows)


def _log(m: _Message) -> tuple[str, str]:
    lines = []
    for _ in range(m.r.randint(5, 20)):
        event = m.r.random()
        detail = m.negative() if event < 0.8 else f"user={m.email()}"
        lines.append(f"{m.moment().isoformat()} INFO [{m.us.word()}] {detail}")
    return "app.log", "\n".join(lines)


LAYOUTS = [_invoice, _bank_letter, _order, _chat, _code, _csv, _log]


# --- transports --------------------------------------------------------------------------


def _html(text: str) -> str:
    rows = "".join(f"<tr><td>{html.escape(line)}</td></tr>" for line in text.splitlines())
    return f"<html><body><p>{html.escape('Please see below.')}</p><table>{rows}</table></body></html>"


def _part(content_type: str, body: bytes, encoding: str, disposition: str = "") -> bytes:
    if encoding == "base64":
        data = base64.encodebytes(body)
    elif encoding == "quoted-printable":
        data = quopri.encodestring(body)
    else:
        data = body
    head = f"Content-Type: {content_type}\r\nContent-Transfer-Encoding: {encoding}\r\n{disposition}"
    return head.encode() + b"\r\n" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode()
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return head + body + b"--" + boundary.encode() + b"--\r\n"


# --- documents: written by fpdf2, python-docx, openpyxl and odfpy (never by the extractor) --


def _rows(stem: str, text: str) -> list[list[str]]:
    """The text as a spreadsheet would hold it: a CSV's fields in cells, other lines in one."""
    return [line.split(",") if stem.endswith(".csv") else [line] for line in text.splitlines()]


def _number(cell: str) -> int | None:
    """What a spreadsheet keeps as a number: digits alone, no leading zero, at most 15 (a
    16-digit card typed into Excel loses its last digit; people type those as text)."""
    return int(cell) if re.fullmatch(r"[1-9]\d{0,14}", cell) else None


def _pdf(m: _Message, stem: str, text: str) -> bytes:
    from fpdf import FPDF

    document = FPDF(orientation="landscape")
    document.set_creation_date(FIXED)
    document.set_auto_page_break(True, margin=10)
    document.add_page()
    width = document.w - document.l_margin - document.r_margin
    for line in text.splitlines():
        line = line.encode("latin-1", "replace").decode("latin-1")  # the core fonts' alphabet
        if not line.strip():
            document.ln(5)
            continue
        size = 10.0
        document.set_font("Helvetica", size=size)
        while size > 4 and document.get_string_width(line) > width:  # one line, as a reader sees it
            size -= 0.5
            document.set_font("Helvetica", size=size)
        document.cell(text=line, new_x="LMARGIN", new_y="NEXT")
    return bytes(document.output())


def _docx(m: _Message, stem: str, text: str) -> bytes:
    import docx

    document = docx.Document()
    document.core_properties.created = document.core_properties.modified = FIXED.replace(tzinfo=None)
    if stem.endswith(".csv"):  # an export pasted into Word: a table
        rows = _rows(stem, text)
        table = document.add_table(rows=len(rows), cols=max(len(r) for r in rows))
        for row, cells in zip(table.rows, rows, strict=True):
            for cell, value in zip(row.cells, cells, strict=False):
                cell.text = value
    else:
        for line in text.splitlines():
            paragraph = document.add_paragraph()
            # Word splits a paragraph into runs where it was edited: anywhere, inside numbers too
            cuts = sorted(m.r.sample(range(1, len(line)), min(len(line) - 1, m.r.randint(0, 2)))) if line else []
            for start, end in zip([0, *cuts], [*cuts, len(line)], strict=True):
                paragraph.add_run(line[start:end]).bold = m.r.random() < 0.1
    return _fixed_zip(document, "save")


def _xlsx(m: _Message, stem: str, text: str) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.properties.created = book.properties.modified = FIXED.replace(tzinfo=None)
    sheet = book.active
    for cells in _rows(stem, text):
        sheet.append([n if (n := _number(cell)) is not None else cell for cell in cells])
    return _fixed_zip(book, "save")


def _odt(m: _Message, stem: str, text: str) -> bytes:
    from odf import teletype
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    document = OpenDocumentText()
    for line in text.splitlines():
        paragraph = P()
        teletype.addTextToElement(paragraph, line)  # runs of spaces as <text:s>, as ODF writes them
        document.text.addElement(paragraph)
    return _fixed_zip(document, "save")


def _ods(m: _Message, stem: str, text: str) -> bytes:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name=stem.split(".")[0])
    for cells in _rows(stem, text):
        row = TableRow()
        for value in cells:
            number = _number(value)
            cell = TableCell(valuetype="float", value=number) if number is not None else TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    document.spreadsheet.addElement(table)
    return _fixed_zip(document, "save")


def _fixed_zip(document, save: str) -> bytes:
    """A zipped document saved, then made reproducible: member times and the time of saving
    fixed, and the attributes of the root elements (odfpy writes its namespace
    declarations in set order, which changes from run to run) sorted."""
    out = io.BytesIO()
    getattr(document, save)(out)
    source = zipfile.ZipFile(io.BytesIO(out.getvalue()))
    fixed = io.BytesIO()
    with zipfile.ZipFile(fixed, "w") as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".xml"):
                data = re.sub(rb"<[\w:-]+(?: [\w:-]+=\"[^\"]*\")+", _sorted_attributes, data, count=1)
            if info.filename == "docProps/core.xml":  # openpyxl stamps the time of saving
                data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b"2026-11-30T09:30:00Z", data)
            target.writestr(zipfile.ZipInfo(info.filename, (2026, 11, 30, 9, 30, 0)), data, info.compress_type)
    return fixed.getvalue()


def _sorted_attributes(match: re.Match) -> bytes:
    name, *attributes = re.split(rb" (?=[\w:-]+=\")", match.group(0))
    return b" ".join([name, *sorted(attributes)])


BUILDERS = {"pdf": _pdf, "docx": _docx, "xlsx": _xlsx, "odt": _odt, "ods": _ods}


def _wrap(m: _Message, stem: str, text: str, transport: str, index: int) -> bytes:
    headers = (
        "From: sender@corp.example\r\nTo: recipient@partner.example\r\n"
        f"Subject: {m.us.catch_phrase()}\r\nDate: Mon, 30 Nov 2026 09:30:00 +0000\r\n"
        f"Message-ID: <eval-{index}@corp.example>\r\nMIME-Version: 1.0\r\n"
    ).encode()
    plain, utf8 = "text/plain; charset=utf-8", text.encode()
    note = _part(plain, m.sentence().encode(), "7bit")
    filename = stem if "." in stem else f"{stem}.txt"
    attached = f'Content-Disposition: attachment; filename="{filename}"\r\n'
    boundary = f"=_eval_{index}_{m.r.getrandbits(32):08x}"
    if transport == "plain":
        body = _part(plain, utf8, "8bit")
    elif transport == "qp":  # long lines: soft line breaks fall inside numbers and addresses
        body = _part(plain, (" ".join(text.splitlines()) + "\n" + text).encode(), "quoted-printable")
    elif transport == "html":
        body = _part("text/html; charset=utf-8", _html(text).encode(), "quoted-printable")
    elif transport == "alternative":
        html_part = _part("text/html; charset=utf-8", _html(text).encode(), "base64")
        body = _multipart("alternative", boundary, [_part(plain, utf8, "quoted-printable"), html_part])
    elif transport == "attachment":
        kind = "text/csv" if filename.endswith(".csv") else "text/plain"
        body = _multipart("mixed", boundary, [note, _part(f"{kind}; charset=utf-8", utf8, "base64", attached)])
    elif transport in DOCUMENTS:
        extension, kind = DOCUMENTS[transport]
        document = BUILDERS[transport](m, stem, text)
        named = f'Content-Disposition: attachment; filename="{stem.split(".")[0]}.{extension}"\r\n'
        body = _multipart("mixed", boundary, [note, _part(kind, document, "base64", named)])
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(zipfile.ZipInfo(filename, (2026, 11, 30, 9, 30, 0)), text)
        zipped = f'Content-Disposition: attachment; filename="{stem}.zip"\r\n'
        body = _multipart("mixed", boundary, [note, _part("application/zip", buffer.getvalue(), "base64", zipped)])
    return headers + body


def generate(seed: int = SEED, count: int = COUNT) -> list[Sample]:
    """``count`` labelled messages, the same ones for the same seed."""
    r = random.Random(seed)
    fake = Faker(LOCALES, use_weighting=False)
    fake.seed_instance(seed)
    banks = Faker(IBAN_LOCALES[len(LOCALES) - 1 :], use_weighting=False)
    banks.seed_instance(seed + 1)
    # schwifty draws real bank codes per country (slow: a pool, drawn from again)
    pool = [str(IBAN.random(country_code=cc, random=r).compact) for cc in SCHWIFTY_COUNTRIES for _ in range(10)]
    for build in (_odt, _ods):  # odfpy declares more namespaces once it has written a document
        build(_Message(random.Random(0), fake, banks, pool), "warm-up", "")
    samples = []
    for index in range(count):
        m = _Message(r, fake, banks, pool)
        layout = LAYOUTS[index % len(LAYOUTS)]
        stem, text = layout(m)
        transport = TRANSPORTS[(index // len(LAYOUTS)) % len(TRANSPORTS)]
        raw = _wrap(m, stem, text, transport, index)
        planted = {name: frozenset(m.planted.get(name, ())) for name in CLASSIFIERS}
        samples.append(Sample(f"{index:04d}-{layout.__name__[1:]}-{transport}", raw, planted))
    return samples
