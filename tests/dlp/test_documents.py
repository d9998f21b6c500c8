"""Text inside documents (documents.py): a card number in a PDF, docx, xlsx, ODT or RTF
attachment is found; what cannot be read within its budget is unscannable, with the reason.

The documents are written by independent tools (fpdf2, python-docx, openpyxl, odfpy,
pikepdf for encryption), not by the code under test; hostile ones are built by hand.
"""

from __future__ import annotations

import io
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from engine.config.load import load_config
from engine.relay.dlp import documents
from engine.relay.dlp.decide import judge
from engine.relay.dlp.extract import extract
from engine.relay.dlp.filetypes import sniff
from engine.relay.dlp.simulate import policy_view

CARD = "4111 1111 1111 1111"
ALICE, BOB, PEER = "alice@example.com", "bob@partner.example", "10.0.0.5"


def live_for(tmp_path: Path):
    config = tmp_path / "relay.yaml"
    config.write_text(
        """version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
ip_groups:
  internal_servers: [10.0.0.0/8]
dlp:
  unscannable: quarantine
  action_plans:
    - {name: encrypt, email: encrypt}
  policies:
    - name: cards
      rules:
        - {name: card, conditions: {classifier: credit_card}, action_plan: encrypt}
"""
    )
    result = load_config(config)
    assert result.ok, result.diagnostics
    return policy_view(result.config, result.base_dir)


def mail(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ALICE, BOB, "the file"
    message.set_content("see attached\n")
    maintype, subtype = ctype.split("/")
    message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes()


# --- documents, written by independent tools ---------------------------------------------


def pdf(*lines: str) -> bytes:
    from fpdf import FPDF

    document = FPDF()
    document.add_page()
    document.set_font("Helvetica", size=12)
    for line in lines:
        document.cell(text=line)
        document.ln()
    return bytes(document.output())


def encrypted_pdf(user: str) -> bytes:
    import pikepdf

    source = pikepdf.open(io.BytesIO(pdf(f"card {CARD}")))
    out = io.BytesIO()
    source.save(out, encryption=pikepdf.Encryption(user=user, owner="owner-secret"))
    return out.getvalue()


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    paragraph = document.add_paragraph("Customer card: ")
    paragraph.add_run("4111 1111 ")  # the number split across runs, as Word does after an edit
    paragraph.add_run("1111 1111").bold = True
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx(value) -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet["A1"], sheet["B1"] = "name", "card"
    sheet["A2"], sheet["B2"] = "Alice", value
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def odt() -> bytes:
    from odf.opendocument import OpenDocumentText
    from odf.text import P, Span

    document = OpenDocumentText()
    paragraph = P(text="Card on file: 4111 ")
    paragraph.addElement(Span(text="1111 1111 1111"))
    document.text.addElement(paragraph)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def pptx() -> bytes:
    """A minimal presentation by the spec's layout (python-pptx is not a test dependency):
    the number in a speaker note, split across two runs."""
    out = io.BytesIO()
    a = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", b'<?xml version="1.0"?><Types/>')
        z.writestr("ppt/presentation.xml", b'<p:presentation xmlns:p="urn:p"/>')
        z.writestr(
            "ppt/slides/slide1.xml", f"<p:sld xmlns:p='urn:p' {a}><a:p><a:r><a:t>Q3 plan</a:t></a:r></a:p></p:sld>"
        )
        z.writestr(
            "ppt/notesSlides/notesSlide1.xml",
            f"<p:notes xmlns:p='urn:p' {a}><a:p><a:r><a:t>card 4111 1111</a:t></a:r><a:r><a:t> 1111 1111</a:t></a:r></a:p></p:notes>",
        )
    return out.getvalue()


def ods() -> bytes:
    from odf.opendocument import OpenDocumentSpreadsheet
    from odf.table import Table, TableCell, TableRow
    from odf.text import P

    document = OpenDocumentSpreadsheet()
    table = Table(name="cards")
    for values in (("name", "card"), ("Alice", CARD)):
        row = TableRow()
        for value in values:
            cell = TableCell()
            cell.addElement(P(text=value))
            row.addElement(cell)
        table.addElement(row)
    document.spreadsheet.addElement(table)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


RTF = (
    rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0 Times New Roman;}}{\colortbl;\red0\green0\blue0;}"
    rb"{\*\generator Hand 1.0;}\pard Card: 4111 \'31\'31\'31\'31 1111 \u49?111\par}"
)

FOUND = {
    "pdf": ("statement.pdf", lambda: pdf("Statement", f"Card: {CARD}")),
    "docx": ("customer.docx", docx),
    "xlsx-string": ("cards.xlsx", lambda: xlsx(CARD)),
    "xlsx-number": ("cards.xlsx", lambda: xlsx(4111111111111111)),
    "odt": ("letter.odt", odt),
    "ods": ("cards.ods", ods),
    "pptx": ("deck.pptx", pptx),
    "rtf": ("memo.rtf", lambda: RTF),
}


@pytest.mark.parametrize("case", sorted(FOUND))
def test_a_card_number_inside_a_document_is_found(tmp_path, case):
    name, build = FOUND[case]
    decision = judge(live_for(tmp_path), mail(name, build()), ALICE, [BOB], PEER)
    assert decision.action == "encrypt", decision
    assert decision.policies == ("cards",)
    assert decision.unscanned == ()


def test_document_text_is_scanned_as_attachment_text():
    extracted = extract(mail("letter.odt", odt()))
    texts = {part.origin: part.text for part in extracted.texts}
    assert "4111 1111 1111 1111" in texts["attachment:letter.odt"]
    assert [a.true_type for a in extracted.attachments] == ["odt"]


def opendocument(kind: str) -> bytes:
    from odf import opendocument as odf

    make = {
        "odt": odf.OpenDocumentText,
        "ods": odf.OpenDocumentSpreadsheet,
        "odp": odf.OpenDocumentPresentation,
        "odg": odf.OpenDocumentDrawing,
    }[kind]
    out = io.BytesIO()
    make().save(out)
    return out.getvalue()


def mimetype_last(data: bytes) -> bytes:
    """The same OpenDocument with its `mimetype` member moved last (and deflated), as a
    careless zip tool leaves it: LibreOffice still opens it."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        names = [n for n in source.namelist() if n != "mimetype"] + ["mimetype"]
        for name in names:
            target.writestr(name, source.read(name))
    return out.getvalue()


@pytest.mark.parametrize("kind", ["odt", "ods", "odp"])
def test_opendocument_files_are_typed_as_themselves(kind):
    assert sniff(opendocument(kind)) == kind
    assert sniff(mimetype_last(opendocument(kind))) == kind


def test_what_is_not_a_known_opendocument_stays_zip():
    assert sniff(opendocument("odg")) == "zip"  # a drawing: no text DLP reads
    lying = io.BytesIO()
    with zipfile.ZipFile(lying, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.text" + " " * 100)  # past 100 bytes
        z.writestr("content.xml", "<x/>")
    assert sniff(lying.getvalue()) == "zip"
    encrypted = bytearray(opendocument("odt"))
    central = encrypted.index(b"PK\x01\x02")  # the first member, mimetype, in the central directory
    encrypted[6] |= 1  # flagged encrypted, in its local header and there: it cannot be read
    encrypted[central + 8] |= 1
    assert sniff(bytes(encrypted)) == "zip"


ZIP_RULE = """version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
ip_groups:
  internal_servers: [10.0.0.0/8]
dlp:
  action_plans:
    - {name: stop, email: block}
  policies:
    - name: files
      rules:
        - {name: archives, conditions: {attachment: {type: [zip]}}, action_plan: stop}
        - {name: documents, conditions: {attachment: {type: [%s]}}, action_plan: stop}
"""


@pytest.mark.parametrize(
    ("name", "data", "types"),
    [
        ("letter.odt", lambda: odt(), "odt"),
        ("sheet.ods", lambda: ods(), "ods, odp"),
        ("customer.docx", lambda: docx(), "docx"),
    ],
)
def test_a_zip_rule_does_not_match_an_office_document_its_own_type_does(tmp_path, name, data, types):
    """OOXML and OpenDocument alike: `type: [zip]` means archives; a document matches its own type."""
    config = tmp_path / "relay.yaml"
    config.write_text(ZIP_RULE % types)
    result = load_config(config)
    assert result.ok, result.diagnostics
    relay = policy_view(result.config, result.base_dir)
    decision = judge(relay, mail(name, data()), ALICE, [BOB], PEER)
    assert [hit.rule for hit in decision.verdict.hits] == ["documents"]
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr(name, data())
    decision = judge(relay, mail("files.zip", archive.getvalue()), ALICE, [BOB], PEER)
    assert [hit.rule for hit in decision.verdict.hits] == ["archives", "documents"]  # the zip, and the file in it


def test_a_document_inside_an_archive_is_read():
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("q3/cards.xlsx", xlsx(CARD))
    extracted = extract(mail("reports.zip", archive.getvalue()))
    assert any(CARD in part.text for part in extracted.texts if part.origin == "attachment:reports.zip/q3/cards.xlsx")
    assert extracted.unscanned == ()


def test_an_encrypted_pdf_is_unscannable(tmp_path):
    decision = judge(live_for(tmp_path), mail("locked.pdf", encrypted_pdf("open-sesame")), ALICE, [BOB], PEER)
    assert decision.action == "quarantine"
    assert decision.unscanned == (
        "attachment:locked.pdf: pdf not fully read: encrypted PDF (a password is needed to read it)",
    )
    assert ("dlp", "unscannable") in [(h.policy, h.rule) for h in decision.verdict.hits]


def test_a_pdf_encrypted_without_a_user_password_is_read(tmp_path):
    # anyone can open it (only editing is restricted): its text is readable, and read
    decision = judge(live_for(tmp_path), mail("open.pdf", encrypted_pdf("")), ALICE, [BOB], PEER)
    assert (decision.action, decision.unscanned) == ("encrypt", ())


# --- what cannot be read -----------------------------------------------------------------


def ooxml(document_xml: bytes, extra: tuple[tuple[str, bytes], ...] = (), level: int = 8) -> bytes:
    """A minimal docx by the spec's layout: content types, the main part."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as z:
        z.writestr("[Content_Types].xml", b'<?xml version="1.0"?><Types/>')
        z.writestr("word/document.xml", document_xml)
        for name, data in extra:
            z.writestr(name, data)
    return out.getvalue()


BODY = b'<w:document xmlns:w="urn:w"><w:body><w:p><w:r><w:t>%s</w:t></w:r></w:p></w:body></w:document>'
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    b"<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;\">]><w:document xmlns:w='urn:w'><w:t>&lol3;</w:t></w:document>"
)
XXE = b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>'

UNSCANNABLE = {
    "encrypted-pdf": ("locked.pdf", lambda: encrypted_pdf("pw"), "encrypted PDF"),
    "damaged-pdf": ("broken.pdf", lambda: b"%PDF-1.7\n" + bytes(200), "damaged PDF"),
    "billion-laughs": ("lol.docx", lambda: ooxml(LAUGHS), "refused XML: DTDForbidden"),
    "xxe": ("xxe.docx", lambda: ooxml(XXE), "refused XML: DTDForbidden"),
    "damaged-xml": ("bad.docx", lambda: ooxml(b"<w:document><w:t>4111"), "damaged XML"),
    "xml-bomb-part": ("big.docx", lambda: ooxml(BODY % bytes(30 * 2**20), level=9), "zip bomb suspected"),
}


@pytest.mark.parametrize("case", sorted(UNSCANNABLE))
def test_a_document_that_cannot_be_read_is_unscannable_with_its_reason(tmp_path, case):
    name, build, reason = UNSCANNABLE[case]
    decision = judge(live_for(tmp_path), mail(name, build()), ALICE, [BOB], PEER)
    assert decision.action == "quarantine", decision
    (problem,) = decision.unscanned
    assert problem.startswith(f"attachment:{name}: ") and reason in problem, problem


def test_text_read_before_a_budget_ran_out_is_still_scanned(monkeypatch):
    monkeypatch.setattr(documents, "MAX_DOCUMENT_CHARS", 64)
    extracted = extract(mail("long.docx", ooxml(BODY % (CARD.encode() + b" " + b"x" * 500))))
    assert any(CARD in part.text for part in extracted.texts)
    assert extracted.unscanned == (
        "attachment:long.docx: docx not fully read: more than 64 characters of text; the rest not read",
    )


def test_a_document_over_the_size_budget_is_not_opened(monkeypatch):
    monkeypatch.setattr(documents, "MAX_DOCUMENT_BYTES", 1000)
    extracted = extract(mail("big.pdf", pdf(*["line"] * 200)))
    assert extracted.unscanned == (
        "attachment:big.pdf: pdf not fully read: larger than the 1000-byte document budget; not opened",
    )


def test_the_time_budget_stops_a_document(monkeypatch):
    monkeypatch.setattr(documents, "MAX_DOCUMENT_SECONDS", 0.0)
    extracted = extract(mail("slow.pdf", pdf(f"card {CARD}")))
    assert extracted.unscanned == ("attachment:slow.pdf: pdf not fully read: took longer than 0 s; the rest not read",)


def test_the_message_wide_document_time_is_shared(monkeypatch):
    monkeypatch.setattr(documents, "MAX_MESSAGE_DOCUMENT_SECONDS", 0.0)
    extracted = extract(mail("a.rtf", RTF))
    assert extracted.unscanned == ("attachment:a.rtf: rtf not read: the message's documents used their 0 s",)


def test_rtf_parser_is_linear_and_bounded_on_hostile_input():
    budget = documents.Budget(10**9, 100, 2**20)
    for hostile in (b"{" * 200_000, b"{\\rtf1 " + b"\\u-1?" * 100_000, b"\\" * 300_000, b"{\\rtf1\\bin999999999 x}"):
        started = time.perf_counter()
        try:
            documents.document_text("rtf", hostile, budget)
        except documents.DocumentError as error:
            assert "nested deeper" in error.reason
        assert time.perf_counter() - started < 2.0


def test_rtf_text_with_escapes_unicode_and_skipped_destinations():
    text = documents.document_text("rtf", RTF, documents.Budget(10**9, 100, 2**20))
    assert text == "Card: 4111 1111 1111 1111\n"
