"""`dlp.limits`: the admin's bounds on what reading a message may cost, and what happens past them."""

from __future__ import annotations

import io
import zipfile
from email.message import EmailMessage

import pytest

from engine.config.load import validate_data
from engine.relay.dlp.extract import extract
from engine.relay.dlp.policy import Facts, Policies
from tests.dlp.test_policy import HEAD, OUT, PLANS


def policies(limits: dict | None) -> Policies:
    dlp = {
        "action_plans": PLANS,
        "unscannable": "quarantine",
        "policies": [
            {
                "name": "p",
                "rules": [{"name": "cards", "conditions": {"classifier": "credit_card"}, "action_plan": "enc"}],
            }
        ],
    }
    if limits is not None:
        dlp["limits"] = limits
    config, diags = validate_data({**HEAD, "ip_groups": {"internal_servers": ["10.0.0.0/8"]}, "dlp": dlp})
    assert config is not None, diags
    return Policies(config, {}, {})


def zipped(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data)
    return buffer.getvalue()


def mail_with(name: str, data: bytes) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = "alice@example.com", "bob@partner.example", "files"
    mail.set_content("see attached")
    mail.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return mail.as_bytes()


NESTED = mail_with("outer.zip", zipped("inner.zip", zipped("cards.txt", b"card 4111 1111 1111 1111\n")))


def judge(p: Policies, raw: bytes, facts: Facts = OUT):
    return p.evaluate(extract(raw, p.limits), facts)


def test_defaults_read_an_archive_in_an_archive() -> None:
    verdict = judge(policies(None), NESTED)
    assert ([h.rule for h in verdict.hits], verdict.unscanned) == (["cards"], ())


def test_a_lower_archive_depth_leaves_the_inner_archive_unread_and_unscannable_acts() -> None:
    verdict = judge(policies({"archive_depth": 1}), NESTED)
    assert verdict.unscanned == ("nesting too deep at outer.zip/inner.zip: depth 2 > 1",)
    assert (verdict.action, [h.rule for h in verdict.hits]) == ("quarantine", ["unscannable"])


@pytest.mark.parametrize(
    ("limits", "unscanned"),
    [
        ({"archive_entries": 1}, "too many archive entries in outer.zip/inner.zip: limit 1 per message; not expanded"),
        (
            {"expanded_size": "10B"},
            "zip bomb suspected in outer.zip: inner.zip would pass the 10-byte extraction budget",
        ),
    ],
)
def test_member_and_size_budgets_come_from_the_config(limits: dict, unscanned: str) -> None:
    verdict = judge(policies(limits), NESTED)
    assert verdict.unscanned == (unscanned,)


def test_document_size_limit_from_the_config() -> None:
    rtf = b"{\\rtf1\\ansi card 4111 1111 1111 1111 " + b"x" * 3000 + b"}"
    raw = mail_with("letter.rtf", rtf)
    assert [h.rule for h in judge(policies(None), raw).hits] == ["cards"]
    small = judge(policies({"document_size": "1KiB"}), raw)
    assert small.unscanned == (
        "attachment:letter.rtf: rtf not fully read: larger than the 1024-byte document budget; not opened",
    )


def test_limits_are_validated_where_they_are_written() -> None:
    _, diags = validate_data({**HEAD, "dlp": {"limits": {"archive_depth": 0, "document_time": "soon"}}})
    assert sorted(d.path for d in diags) == [("dlp", "limits", "archive_depth"), ("dlp", "limits", "document_time")]
