"""`dlp.unscannable`: outbound mail DLP could not fully read is acted on, with the reason in
the decision; ordinary mail is never flagged. Before: every class below went out as
`permit`, its problems recorded and ignored.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from engine.config.load import load_config
from engine.relay.decision import Decision
from engine.relay.dlp import decide
from engine.relay.dlp import extract as extract_module
from engine.relay.dlp.decide import judge
from engine.relay.dlp.extract import extract
from engine.relay.dlp.notify import owners_report
from engine.relay.dlp.policy import Policies
from engine.relay.dlp.simulate import policy_view
from engine.relay.smtp.message import Message
from tests.dlp.make_corpus import FAKE_FILES

CORPUS = Path(__file__).resolve().parent / "corpus"
UNSCANNABLE_IN_CORPUS = ("nested-zip", "zip-bomb")  # the corpus's only messages DLP cannot fully read
CARD = b"4111 1111 1111 1111"
ALICE, BOB, PEER = "alice@example.com", "bob@partner.example", "10.0.0.5"


def live_for(tmp_path: Path, unscannable: str = "encrypt", mode: str = "enforce", rule: str = ""):
    rule = rule or "{name: card, conditions: {classifier: credit_card}, action_plan: encrypt}"
    config = tmp_path / "relay.yaml"
    config.write_text(
        f"""version: 1
system:
  fqdn: relay.example.com
  internal_domains: [example.com]
  listeners: [{{name: mx, address: 127.0.0.1, port: 2525}}]
ip_groups:
  internal_servers: [10.0.0.0/8]
dlp:
  mode: {mode}
  unscannable: {unscannable}
  action_plans:
    - {{name: encrypt, email: encrypt}}
    - {{name: block, email: block}}
  policies:
    - name: cards
      rules:
        - {rule}
"""
    )
    result = load_config(config)
    assert result.ok, result.diagnostics
    return policy_view(result.config, result.base_dir)


def mail(*files: tuple[str, bytes], body: str = "see attached", html: str | None = None) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ALICE, BOB, "files"
    message.set_content(body + "\n")
    if html is not None:
        message.add_alternative(html, subtype="html")
    for name, data in files:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes().replace(b"\n", b"\r\n")


def zipped(*members: tuple[str, bytes], level: int | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED) as archive:
        for name, data in members:
            archive.writestr(name, data, compresslevel=level)
    return buffer.getvalue()


def nested_zip(depth: int) -> bytes:
    level = zipped(("cards.csv", b"n," + CARD))
    for n in range(depth):
        level = zipped((f"z{n}.zip", level))
    return level


def nested_messages(depth: int) -> bytes:
    raw = b"Subject: innermost\r\n\r\ncard " + CARD + b"\r\n"
    for n in range(depth):
        raw = f"Subject: level {n}\r\nContent-Type: message/rfc822\r\n\r\n".encode() + raw
    return f"From: {ALICE}\r\nTo: {BOB}\r\n".encode() + raw


def nested_mime(depth: int) -> bytes:
    opened = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    return f"From: {ALICE}\r\nTo: {BOB}\r\nMIME-Version: 1.0\r\n{opened}\r\nhello\r\n".encode()


def locked(data: bytes) -> bytes:
    """The zip with its members flagged encrypted (in the central directory)."""
    flagged = bytearray(data)
    flagged[flagged.index(b"PK\x01\x02") + 8] |= 1
    return bytes(flagged)


UNSCANNABLE = {
    "zip-too-deep": mail(("a.zip", nested_zip(4))),
    "zip-too-many-entries": mail(("many.zip", zipped(*[(f"{n}.txt", b"x") for n in range(1001)]))),
    "zip-bomb": mail(("logs.zip", zipped(("zeros.bin", bytes(20 * 2**20)), level=9))),
    "gzip-bomb": mail(("zeros.gz", gzip.compress(bytes(20 * 2**20), mtime=0))),
    "rfc822-too-deep": nested_messages(5),
    "mime-too-deep": nested_mime(1000),
    "7z": mail(("a.7z", b"7z\xbc\xaf\x27\x1c" + bytes(40))),
    "encrypted-zip-member": mail(("locked.zip", locked(zipped(("a.txt", CARD))))),
}


@pytest.mark.parametrize("setting", ["encrypt", "quarantine", "block"])
@pytest.mark.parametrize("case", sorted(UNSCANNABLE))
def test_outbound_mail_not_fully_scanned_gets_the_unscannable_action(tmp_path, case, setting):
    decision = judge(live_for(tmp_path, setting), UNSCANNABLE[case], ALICE, [BOB], PEER)
    assert decision.action == setting, decision
    assert decision.unscanned and set(decision.unscanned) <= set(decision.problems)
    assert ("dlp", "unscannable") in [(h.policy, h.rule) for h in decision.verdict.hits]
    assert decision.policies == ()  # no policy matched: the built-in rule is not one
    assert decision.to_record()["unscanned"] == list(decision.unscanned)


def test_permit_records_the_problems_and_sends(tmp_path):
    decision = judge(live_for(tmp_path, "permit"), UNSCANNABLE["zip-too-deep"], ALICE, [BOB], PEER)
    assert (decision.action, decision.verdict.hits) == ("permit", ())
    assert decision.unscanned == ("nesting too deep at a.zip/z3.zip/z2.zip/z1.zip: depth 4 > 3",)


def test_the_strongest_action_wins(tmp_path):
    block_cards = "{name: card, conditions: {classifier: credit_card}, action_plan: block}"
    content = mail(("a.zip", nested_zip(4)), body=f"card {CARD.decode()}")
    assert judge(live_for(tmp_path, "encrypt", rule=block_cards), content, ALICE, [BOB], PEER).action == "block"
    assert judge(live_for(tmp_path, "quarantine"), content, ALICE, [BOB], PEER).action == "quarantine"


def test_monitor_mode_inbound_mail_and_mail_no_rule_covers_only_record(tmp_path):
    content = UNSCANNABLE["zip-too-deep"]
    monitored = judge(live_for(tmp_path, "quarantine", mode="monitor"), content, ALICE, [BOB], PEER)
    assert (monitored.action, monitored.would) == ("permit", "quarantine")
    inbound = judge(
        live_for(tmp_path, "quarantine"), content, "eve@outside.example", ["carol@example.com"], "192.0.2.1"
    )
    assert (inbound.direction, inbound.action, inbound.would) == ("inbound", "permit", "permit")
    assert inbound.unscanned
    finance = "{name: card, conditions: {classifier: credit_card}, action_plan: encrypt, source: {senders: ['*@finance.example.com']}}"
    uncovered = judge(live_for(tmp_path, "quarantine", rule=finance), content, ALICE, [BOB], PEER)
    assert (uncovered.action, uncovered.unscanned != ()) == ("permit", True)


def test_hidden_html_text_is_judged(tmp_path):
    """Before: a card in alt text, a CSS content string or <noscript> went out as permit."""
    live = live_for(tmp_path)
    for html in (
        f"<p>hi</p><img alt='{CARD.decode()}'>",
        f"<style>p::after {{ content: '{CARD.decode()}' }}</style><p>hi</p>",
        f"<noscript>{CARD.decode()}</noscript>",
        f"<p title='{CARD.decode()}'>hi</p>",
        f"<div style='display:none'>{CARD.decode()}</div>",
    ):
        decision = judge(live, mail(body="hi", html=html), ALICE, [BOB], PEER)
        assert (decision.action, decision.policies) == ("encrypt", ("cards",)), html
        assert decision.unscanned == ()


def test_a_gz_attachment_is_read(tmp_path):
    """Before: a card in a .gz went out as permit."""
    decision = judge(live_for(tmp_path), mail(("cards.csv.gz", gzip.compress(b"n," + CARD))), ALICE, [BOB], PEER)
    assert (decision.action, decision.policies) == ("encrypt", ("cards",))
    assert decision.unscanned == ()


def test_the_decision_record_keeps_what_was_not_scanned():
    decision = Decision("outbound", "quarantine", problems=("a", "b"), unscanned=("b",))
    assert Decision.from_record(json.loads(json.dumps(decision.to_record()))) == decision
    old = {k: v for k, v in decision.to_record().items() if k != "unscanned"}  # queued before this field
    assert Decision.from_record(old).unscanned == ()


def test_the_owners_report_lists_what_was_not_scanned(tmp_path):
    decision = judge(live_for(tmp_path), UNSCANNABLE["7z"], ALICE, [BOB], PEER)
    report = owners_report(
        "r.example", ["o@example.com"], decision.verdict, sender=ALICE, recipients=[BOB], subject="s", ref="q1"
    )
    assert b"Not fully scanned (dlp.unscannable):" in report and b"a 7z archive, which DLP cannot open" in report


# -- hard negatives ----------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.eml")), ids=lambda p: p.name)
def test_the_corpus_is_unscannable_only_where_it_really_is(tmp_path, path):
    extracted = extract(path.read_bytes())
    expected = path.stem.split("-", 1)[1] in UNSCANNABLE_IN_CORPUS
    assert bool(extracted.unscanned) == expected, extracted.problems


def test_ordinary_mail_with_ordinary_attachments_is_not_flagged(tmp_path):
    ooxml = zipped(("[Content_Types].xml", b"<Types/>"), ("word/document.xml", b'<w:document xmlns:w="urn:w"/>'))
    files = [
        ("report.pdf", FAKE_FILES["pdf"]),  # a valid one-page PDF: documents are read, and these hold no secret
        ("letter.docx", ooxml),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
        ("photo.jpg", b"\xff\xd8\xff\xe0" + bytes(64)),
        ("data.zip", zipped(("a.csv", b"a,b\n1,2\n"), ("b.txt", b"notes\n"), level=6)),
        ("logs.tar.gz", gzip.compress(b"".join([b"x"] * 10))),
        ("page.html", b"<html><body><p>hello</p></body></html>"),
        ("notes.txt", "naïve café".encode("latin-1")),
    ]
    html = (
        "<html><head><style>p {color: red}</style></head><body><p>hello</p><img alt='logo' src='cid:x'></body></html>"
    )
    decision = judge(live_for(tmp_path, "quarantine"), mail(*files, html=html), ALICE, [BOB], PEER)
    assert (decision.action, decision.unscanned, decision.problems) == ("permit", (), ())


# -- off the loop ------------------------------------------------------------------------


async def test_no_message_is_judged_in_full_on_the_event_loop(tmp_path, monkeypatch):
    """Before: messages under 256 KB were scanned in full on the loop, stalling every session.
    Now only `judge`'s quick path runs there (plain text, at most QUICK_BYTES, one candidate
    pass that stops at the first); the rules' evaluation with the classifiers' Python, HTML's
    conversion and every file's reading run in the scanning threads, whatever the size."""
    loop_thread = threading.get_ident()
    evaluated, converted, filed = [], [], []

    def recorder(calls, real):
        def record(*args, **kwargs):
            calls.append(threading.get_ident())
            return real(*args, **kwargs)

        return record

    monkeypatch.setattr(Policies, "evaluate", recorder(evaluated, Policies.evaluate))
    monkeypatch.setattr(extract_module, "html_text", recorder(converted, extract_module.html_text))
    monkeypatch.setattr(extract_module._Walker, "file", recorder(filed, extract_module._Walker.file))  # noqa: SLF001
    live = live_for(tmp_path)
    cards = "4111 1111 1111 1111 " * 2000  # 40 KB of candidates for the card classifier's Python
    for content in (
        mail(body="tiny"),
        mail(body=cards),
        mail(body="x", html=f"<p>{cards}</p>"),
        mail(("a.zip", zipped(("in.txt", b"hi")))),
    ):
        decision = await decide.decide(live, Message(ALICE, (BOB,), content, PEER, "client.example", "mx"))
        assert decision.direction == "outbound"
    assert len(evaluated) == 3 and converted and filed  # the tiny quiet one was decided quickly
    assert loop_thread not in evaluated + converted + filed


# -- the already-encrypted check on hostile structure ------------------------------------

PGP_MIME = (
    f'From: {ALICE}\r\nTo: {BOB}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol="application/'
    'pgp-encrypted"; boundary="b"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\n'
    "Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA1234abcdABCD+/==\r\n"
    "-----END PGP MESSAGE-----\r\n--b--\r\n"
).encode()


@pytest.mark.parametrize(
    "content",
    [PGP_MIME, PGP_MIME.replace(b"--b--", b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--"), mail(body="hi")],
    ids=["pgp-mime", "three-parts", "plain"],
)
def test_the_guarded_check_agrees_with_the_structure_check(content):
    from engine.relay.methods.smime import already_encrypted

    assert decide._already_encrypted(content) == bool(already_encrypted(content))


def test_deep_structure_is_judged_not_encrypted_without_the_recursive_parse(tmp_path):
    """Before: smime.already_encrypted's stdlib parse raised RecursionError, the relay said 451."""
    deep_encrypted = PGP_MIME.replace(
        b"Content-Type: application/octet-stream\r\n", nested_mime(1000).split(b"\r\n", 3)[3]
    )
    for content in (nested_mime(1000), nested_messages(1000), deep_encrypted):
        assert decide._already_encrypted(content) is False
    decision = judge(live_for(tmp_path), nested_mime(1000), ALICE, [BOB], PEER)
    assert (decision.action, decision.already_encrypted) == ("encrypt", False)
