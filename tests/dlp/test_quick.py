"""Where DLP judges a message (engine/relay/dlp/decide.py): plain text in which the pattern
engine finds not even a candidate is decided where it arrives, by `judge`'s quick path;
everything else goes to the scanning threads. Either way the decision is the one the full
judgement gives, and the path taken is counted in `sealrelay_dlp_judged_total`."""

from __future__ import annotations

import pytest

from engine.relay.dlp.decide import QUICK_BYTES, QUICK_LINES, QUICK_PARTS, decide, judge
from engine.relay.runtime.metrics import REGISTRY
from tests.dlp.test_decide_mutants import TRUSTED, _message, live, mail

SCAN_ONLY = [
    {"name": "card", "conditions": {"classifier": "credit_card"}, "action_plan": "enc"},
    {"name": "words", "conditions": {"phrases": ["secretdata", "project sierra"]}, "action_plan": "enc"},
    {"name": "acct", "conditions": {"pattern": "ACC[0-9]{8}", "scope": ["subject", "body"]}, "action_plan": "blk"},
    # applies to inbound mail only: never asked about the outbound mail below
    {
        "name": "in",
        "conditions": {"not": {"phrases": ["x"]}},
        "destination": {"direction": "inbound"},
        "action_plan": "blk",
    },
]


def judged(path: str) -> float:
    return REGISTRY.get_sample_value("sealrelay_dlp_judged_total", {"path": path})


def multipart(*parts: str, kind: str = "mixed") -> bytes:
    head = f'From: a@example.com\r\nTo: b@partner.example\r\nContent-Type: multipart/{kind}; boundary="b"\r\n\r\n'
    return (head + "".join(f"--b\r\n{part}\r\n" for part in parts) + "--b--\r\n").encode()


QUIET = "Lines of ordinary prose, numbers like 42 and 2026-11-30, nothing to find.\r\n" * 40
PLAIN = "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + QUIET
SHORT = "Content-Type: text/plain\r\n\r\nnothing here\r\n"

CASES = {
    # plain text, no candidate: decided on arrival
    "quiet": (mail(QUIET), "loop", "permit"),
    "quiet multipart": (multipart(PLAIN, PLAIN, kind="alternative"), "loop", "permit"),
    "quoted-printable": (
        mail("caf=3D " + QUIET, headers="Content-Transfer-Encoding: quoted-printable\r\n"),
        "loop",
        "permit",
    ),
    # something the scan finds, or may: the threads
    "phrase": (mail(QUIET + "about project sierra\r\n"), "pool", "encrypt"),
    "card": (mail(QUIET + "4111 1111 1111 1111\r\n"), "pool", "encrypt"),
    "card candidate only": (mail(QUIET + "order 1234567890123\r\n"), "pool", "permit"),
    "pattern in the subject": (mail(QUIET, subject="ACC12345678"), "pool", "block"),
    "non-ASCII": (mail("café " + QUIET), "pool", "permit"),
    # what the quick path does not read
    "html": (mail("<p>" + QUIET + "</p>", headers="Content-Type: text/html\r\n"), "pool", "permit"),
    "attachment": (
        multipart(
            PLAIN, 'Content-Type: text/plain\r\nContent-Disposition: attachment; filename="a.txt"\r\n\r\n' + QUIET
        ),
        "pool",
        "permit",
    ),
    "attached message": (multipart("Content-Type: message/rfc822\r\n\r\n" + mail(QUIET).decode()), "pool", "permit"),
    f"{QUICK_PARTS} parts": (multipart(*[SHORT] * QUICK_PARTS), "loop", "permit"),
    # past the quick path's bounds: bytes, lines (header fields cost parsing), parts
    "too large": (mail("Nothing here at all, really nothing. " * (QUICK_BYTES // 36)), "pool", "permit"),
    "too many lines": (mail("x\r\n" * QUICK_LINES), "pool", "permit"),
    "too many parts": (multipart(*[SHORT] * (QUICK_PARTS + 1)), "pool", "permit"),
    # content left unread: dlp.unscannable (its default, encrypt) decides, in the threads
    "unread part": (mail(QUIET, headers="Content-Transfer-Encoding: x-unknown\r\n"), "pool", "encrypt"),
}


@pytest.mark.parametrize("case", CASES)
async def test_where_each_message_is_judged(case: str) -> None:
    content, path, action = CASES[case]
    policy = live(rules=SCAN_ONLY)
    loop, pool = judged("loop"), judged("pool")
    decision = await decide(policy, _message(content, TRUSTED))
    assert (judged("loop") - loop, judged("pool") - pool) == ((1, 0) if path == "loop" else (0, 1))
    assert decision.action == action
    assert decision == judge(policy, content, "a@example.com", ["b@partner.example"], TRUSTED)


@pytest.mark.parametrize(
    "rule",
    [
        {"name": "not", "conditions": {"not": {"phrases": ["public"]}}, "action_plan": "enc"},
        {"name": "header", "conditions": {"header": {"name": "X-Class", "pattern": "secret"}}, "action_plan": "enc"},
        {"name": "files", "conditions": {"attachment": {"size_over": "5MB"}}, "action_plan": "enc"},
    ],
)
async def test_rules_that_hold_without_a_hit_are_judged_in_full(rule: dict) -> None:
    """A `not`, header or attachment condition may hold on mail the scan found nothing in:
    such a rule, where it applies, sends every message to the threads."""
    policy = live(rules=[*SCAN_ONLY, rule])
    pool = judged("pool")
    decision = await decide(policy, _message(mail(QUIET), TRUSTED))
    assert judged("pool") - pool == 1
    assert decision == judge(policy, mail(QUIET), "a@example.com", ["b@partner.example"], TRUSTED)


def test_the_line_count_intake_gives_bounds_the_quick_path() -> None:
    """Intake counts a message's line breaks (checking they are all CRLF) and hands the count
    on: the quick path uses it rather than counting again."""
    policy = live(rules=SCAN_ONLY)
    quiet = mail(QUIET)
    envelope = (policy, quiet, "a@example.com", ["b@partner.example"], TRUSTED)
    assert judge(*envelope, quick=True).action == "permit"
    assert judge(*envelope, quick=True, lines=quiet.count(b"\n")).action == "permit"
    assert judge(*envelope, quick=True, lines=QUICK_LINES + 1) is None  # said to be too long: the pool's


async def test_intake_hands_its_line_count_to_the_judgement(monkeypatch, tmp_path) -> None:
    from engine.relay.dlp import decide as decide_module
    from engine.relay.queue import Queue
    from engine.relay.smtp.intake import Intake

    seen = []
    real = decide_module.judge

    def spy(*args, **kwargs):
        seen.append(kwargs.get("lines"))
        return real(*args, **kwargs)

    monkeypatch.setattr(decide_module, "judge", spy)
    content = mail(QUIET)
    queue = Queue.open(tmp_path / "queue")
    try:
        verdict = await Intake(queue).receive(live(rules=SCAN_ONLY), _message(content, TRUSTED))
    finally:
        queue.close()
    assert verdict.text.startswith("queued as ") and seen == [content.count(b"\r\n")]


def test_quick_gives_back_what_it_read() -> None:
    """A message the quick path cannot decide comes back as its tree and, when it was
    extracted, its content, which the full judgement goes on from (a plain ASCII message
    was scanned as sent, not extracted); one it does not read comes back as None."""
    policy = live(rules=SCAN_ONLY)
    for body, extracted_too in (("4111 1111 1111 1111", False), ("café 4111 1111 1111 1111", True)):
        content = mail(QUIET + body + "\r\n")
        read = judge(policy, content, "a@example.com", ["b@partner.example"], TRUSTED, quick=True)
        tree, extracted = read
        assert tree.get_content_type() == "text/plain"
        assert (extracted is not None) is extracted_too
        if extracted_too:
            assert body in extracted.texts[-1].text
        full = judge(policy, content, "a@example.com", ["b@partner.example"], TRUSTED)
        assert full.action == "encrypt"
        assert judge(policy, content, "a@example.com", ["b@partner.example"], TRUSTED, read=read) == full
    html = mail("<p>x</p>", headers="Content-Type: text/html\r\n")
    assert judge(policy, html, "a@example.com", ["b@partner.example"], TRUSTED, quick=True) is None
