"""The intake decision (engine/relay/dlp/decide.py) pinned exactly: direction, action, method
and the already-encrypted flag for each envelope and content, including mail from the
encryption gateway and mail that only looks encrypted. Written against the surviving mutants
of scripts/mutate (docs/mutation-results.md)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from engine.config.load import validate_data
from engine.relay.decision import Decision
from engine.relay.dlp.decide import decide, direction_of, judge
from engine.relay.dlp.simulate import policy_view
from engine.relay.methods.smime import MAX_ENCRYPTED_TYPE
from engine.relay.runtime.live import Live
from engine.relay.smtp.message import Message

TRUSTED, GATEWAY, OUTSIDE = "10.0.0.5", "192.0.2.10", "203.0.113.9"
THIRD_PARTY = {
    "servers": [{"host": GATEWAY, "port": 10025}],
    "encrypted_ip_group": "encryption_gateway",
    "headers": {
        "encrypt": "X-Encrypt: yes",
        "success": "X-Encrypt-Result: success",
        "failure": "X-Encrypt-Result: failure",
    },
}


def live(*, rules: list[dict] | None = None, third_party: bool = False, mode: str = "enforce") -> Live:
    encryption = {"method": "third_party", "third_party": THIRD_PARTY} if third_party else {"method": "secure_portal"}
    if not third_party:
        encryption["secure_portal"] = {"url": "https://secure.example.com"}
    data = {
        "version": 1,
        "system": {
            "fqdn": "m.example.com",
            "internal_domains": ["example.com", "*.example.com"],
            "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}],
        },
        "ip_groups": {"internal_servers": ["10.0.0.0/8"], "encryption_gateway": [f"{GATEWAY}/32"]},
        "encryption": encryption,
        "dlp": {
            "mode": mode,
            "action_plans": [{"name": "enc", "email": "encrypt"}, {"name": "blk", "email": "block"}],
            "policies": [{"name": "p", "rules": rules}] if rules else [],
        },
    }
    config, diagnostics = validate_data(data)
    assert config is not None, diagnostics
    return policy_view(config, Path("."))


ENCRYPT_SECRET = [{"name": "r", "conditions": {"phrases": ["secretdata"]}, "action_plan": "enc"}]


def mail(body: str = "hello", subject: str = "hi", headers: str = "") -> bytes:
    return f"From: a@example.com\r\nTo: b@partner.example\r\nSubject: {subject}\r\n{headers}\r\n{body}\r\n".encode()


PGP = "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0Xy\r\n=Ab12\r\n-----END PGP MESSAGE-----"


DIRECTIONS = [
    ("a@example.com", ["b@partner.example"], TRUSTED, "outbound"),
    ("a@example.com", ["b@example.com", "c@partner.example"], TRUSTED, "outbound"),  # any external one
    ("a@example.com", ["b@partner.example"], OUTSIDE, "inbound"),
    ("a@example.com", ["b@partner.example"], GATEWAY, "outbound"),  # the gateway may relay too
    ("a@example.com", ["b@example.com", "c@sub.example.com"], TRUSTED, "internal"),
    ("a@partner.example", ["b@example.com"], TRUSTED, "inbound"),  # external sender, internal mail
    ("a@example.com", ["b@example.com"], OUTSIDE, "inbound"),
    ("a@example.com", ["b@partner.example"], None, "outbound"),  # simulation: an internal sender is trusted
    ("a@partner.example", ["b@example.com"], None, "inbound"),
    ("a@partner.example", ["b@other.example"], None, "inbound"),
    ("a@example.com", ["b@example.com"], None, "internal"),
]


@pytest.mark.parametrize(("sender", "recipients", "peer", "direction"), DIRECTIONS)
def test_direction(sender: str, recipients: list[str], peer: str | None, direction: str) -> None:
    assert direction_of(live(), sender, recipients, peer) == direction


def test_envelopes_are_judged_by_what_each_is_while_they_come_and_go(monkeypatch) -> None:
    """Direction and DLP facts are kept per envelope (`Live.envelopes`), a bounded number of
    them: envelopes asked again and again, in any order, each get their own direction."""
    from engine.relay.runtime import live as live_module

    cases = DIRECTIONS
    monkeypatch.setattr(live_module, "ENVELOPES_KEPT", 4)
    policy = live(rules=ENCRYPT_SECRET)
    assert len(cases) > 4
    for _ in range(3):
        for sender, recipients, peer, direction in cases:
            decision = judge(policy, mail("hello"), sender, recipients, peer, quick=True)
            assert decision.direction == direction, (sender, recipients, peer)
            assert len(policy.envelopes) <= 4
    gateway = judge(policy, mail("hello"), "a@example.com", ["b@partner.example"], GATEWAY)
    assert (
        gateway.already_encrypted
        and not judge(policy, mail("hello"), "a@example.com", ["b@partner.example"], TRUSTED).already_encrypted
    )
    # the secure portal's messages are given their direction: the same envelope, another answer
    assert (
        judge(policy, mail("hello"), "a@example.com", ["b@partner.example"], TRUSTED, direction="inbound").direction
        == "inbound"
    )


def _decision(live_: Live, content: bytes, peer: str | None = TRUSTED, rcpt: str = "b@partner.example") -> tuple:
    d = judge(live_, content, "a@example.com", [rcpt], peer)
    return d.direction, d.action, d.method, d.policies, d.already_encrypted, d.would


def test_dlp_acts_on_outbound_mail_only() -> None:
    policy = live(rules=ENCRYPT_SECRET)
    assert _decision(policy, mail("secretdata")) == ("outbound", "encrypt", "secure_portal", ("p",), False, "encrypt")
    assert _decision(policy, mail("hello")) == ("outbound", "permit", "none", (), False, "permit")
    assert _decision(policy, mail("secretdata"), OUTSIDE) == ("inbound", "permit", "none", (), False, "permit")
    anywhere = live(rules=[{**ENCRYPT_SECRET[0], "destination": {"direction": "any"}}])
    # on inbound and internal mail DLP records what it would have done
    assert _decision(anywhere, mail("secretdata"), OUTSIDE) == ("inbound", "permit", "none", ("p",), False, "encrypt")
    internal = _decision(anywhere, mail("secretdata"), rcpt="c@example.com")
    assert internal == ("internal", "permit", "none", ("p",), False, "encrypt")


def test_block_and_monitor() -> None:
    block = [{"name": "r", "conditions": {"phrases": ["secretdata"]}, "action_plan": "blk"}]
    assert _decision(live(rules=block), mail("secretdata")) == ("outbound", "block", "none", ("p",), False, "block")
    monitored = _decision(live(rules=block, mode="monitor"), mail("secretdata"))
    assert monitored == ("outbound", "permit", "none", ("p",), False, "block")


def test_encrypted_mail_is_not_encrypted_twice() -> None:
    subject_rule = [
        {"name": "r", "conditions": {"phrases": ["secretdata"], "scope": ["subject"]}, "action_plan": "enc"}
    ]
    policy = live(rules=subject_rule)
    # the verdict follows from the subject alone, which stays readable: the structure is trusted
    pgp = mail(PGP, subject="secretdata")
    assert _decision(policy, pgp) == ("outbound", "permit", "none", ("p",), True, "encrypt")
    assert _decision(policy, mail("plain", subject="secretdata")) == (
        "outbound",
        "encrypt",
        "secure_portal",
        ("p",),
        False,
        "encrypt",
    )


def test_readable_body_is_encrypted_whatever_its_structure_says() -> None:
    fake = mail("-----BEGIN PGP MESSAGE-----\r\n\r\nSECRETDATA\r\n-----END PGP MESSAGE-----")
    decision = judge(live(rules=ENCRYPT_SECRET), fake, "a@example.com", ["b@partner.example"], TRUSTED)
    assert (decision.action, decision.method) == ("encrypt", "secure_portal")


def test_readable_body_that_looks_encrypted_still_needs_protection() -> None:
    fake = mail("-----BEGIN PGP MESSAGE-----\r\n\r\nSECRETDATA\r\n-----END PGP MESSAGE-----")
    decision = judge(live(rules=ENCRYPT_SECRET), fake, "a@example.com", ["b@partner.example"], TRUSTED)
    assert decision.needs_protection


@pytest.mark.parametrize(
    ("header", "action"),
    [
        ("X-Encrypt-Result: success\r\n", "permit"),
        ("X-Encrypt-Result: failure\r\n", "quarantine"),
        ("", "quarantine"),  # the gateway said nothing: it must not go out in clear
        ("X-Encrypt-Result: success\r\nX-Encrypt-Result: failure; no key\r\n", "quarantine"),
    ],
)
def test_mail_from_the_gateway(header: str, action: str) -> None:
    policy = live(rules=ENCRYPT_SECRET, third_party=True)
    content = mail("secretdata", headers=header)
    assert _decision(policy, content, GATEWAY) == ("outbound", action, "none", ("p",), True, "encrypt")


def test_gateway_success_from_elsewhere_counts_for_nothing() -> None:
    policy = live(rules=ENCRYPT_SECRET, third_party=True)
    content = mail("secretdata", headers="X-Encrypt-Result: success\r\n")
    assert _decision(policy, content, TRUSTED) == ("outbound", "encrypt", "third_party", ("p",), False, "encrypt")
    assert _decision(policy, content, None) == ("outbound", "encrypt", "third_party", ("p",), False, "encrypt")


def _message(content: bytes, peer: str) -> Message:
    return Message("a@example.com", ("b@partner.example",), content, peer, "client.example", "mx")


async def test_decide_without_policies() -> None:
    plain = live(third_party=True)
    assert await decide(plain, _message(mail("x"), TRUSTED)) == Decision("outbound")
    assert await decide(plain, _message(mail("x"), OUTSIDE)) == Decision("inbound")
    success = mail("x", headers="X-Encrypt-Result: success\r\n")
    assert await decide(plain, _message(success, GATEWAY)) == Decision("outbound", already_encrypted=True)
    for header in ("X-Encrypt-Result: failure\r\n", ""):  # failed, or said nothing: held
        held = await decide(plain, _message(mail("x", headers=header), GATEWAY))
        assert (held.action, held.already_encrypted) == ("quarantine", True)


async def test_decide_runs_the_policies() -> None:
    policy = live(rules=ENCRYPT_SECRET)
    flagged = await decide(policy, _message(mail("secretdata"), TRUSTED))
    assert (flagged.action, flagged.method, flagged.policies) == ("encrypt", "secure_portal", ("p",))
    assert (await decide(policy, _message(mail("x" * 300_000), TRUSTED))).action == "permit"


PGP_MIME = (
    'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
    "--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
    "--b\r\nContent-Type: application/octet-stream\r\n\r\n"
    "-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0Xy\r\n-----END PGP MESSAGE-----\r\n--b--\r\n"
)


@pytest.mark.parametrize(
    ("content", "encrypted"),
    [
        (mail(PGP), True),
        (PGP_MIME.encode(), True),
        (PGP_MIME.replace("application/octet-stream", "multipart/mixed; boundary=c").encode(), False),
        (PGP_MIME.replace("multipart/encrypted", "multipart/mixed").encode(), False),
        (b"Content-Type: message/rfc822\r\n\r\n" + mail(PGP), False),
        (
            b"Content-Type: application/pgp-encrypted; x=" + b"y" * MAX_ENCRYPTED_TYPE + b"\r\n\r\n" + PGP.encode(),
            False,
        ),
        (mail("plain"), False),
    ],
)
def test_what_counts_as_already_encrypted(content: bytes, encrypted: bool) -> None:
    decision = judge(live(rules=ENCRYPT_SECRET), content, "a@example.com", ["b@partner.example"], TRUSTED)
    assert decision.already_encrypted is encrypted


PARTIAL = b"From: a@example.com\r\nSubject: s\r\nContent-Type: message/partial; id=x; number=1\r\n\r\nfragment\r\n"


def test_content_left_unread_is_acted_on_for_outbound_mail_only() -> None:
    policy = live(rules=[{**ENCRYPT_SECRET[0], "destination": {"direction": "any"}}])
    out = judge(policy, PARTIAL, "a@example.com", ["b@partner.example"], TRUSTED)
    unread = ("body: message/partial: a fragment of a message, never seen whole",)
    assert (out.action, out.method, out.would, out.policies, out.unscanned) == (
        "encrypt",
        "secure_portal",
        "encrypt",
        (),
        unread,
    )
    assert out.problems[0] == unread[0]
    inbound = judge(policy, PARTIAL, "a@example.com", ["b@partner.example"], OUTSIDE)
    assert (inbound.action, inbound.would, inbound.unscanned) == ("permit", "encrypt", unread)


async def test_decide_without_policies_sees_internal_mail() -> None:
    internal = Message("a@example.com", ("b@example.com",), mail("x"), TRUSTED, "client.example", "mx")
    assert await decide(live(), internal) == Decision("internal")


def test_the_decision_carries_the_verdict() -> None:
    decision = judge(live(rules=ENCRYPT_SECRET), mail("secretdata"), "a@example.com", ["b@partner.example"], TRUSTED)
    assert [(h.policy, h.rule, h.action) for h in decision.verdict.hits] == [("p", "r", "encrypt")]


def _pgp_mime_with_type(part_type: str) -> bytes:
    return PGP_MIME.replace("Content-Type: application/octet-stream", f"Content-Type: {part_type}").encode()


def test_content_types_up_to_the_limit_are_read() -> None:
    smime_type = "application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m; x="
    top = smime_type + "y" * (MAX_ENCRYPTED_TYPE - len(smime_type))
    body = base64.b64encode(bytes.fromhex("3080") + bytes.fromhex("06092a864886f70d010703") + b"\x00" * 8).decode()
    at_limit = f"Content-Type: {top}\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}\r\n".encode()
    part = "application/octet-stream; x="
    policy = live(rules=ENCRYPT_SECRET)
    for content in (at_limit, _pgp_mime_with_type(part + "y" * (MAX_ENCRYPTED_TYPE - len(part)))):
        assert judge(policy, content, "a@example.com", ["b@partner.example"], TRUSTED).already_encrypted is True


def test_a_nested_part_is_never_encrypted() -> None:
    nested = _pgp_mime_with_type(
        'multipart/mixed; boundary="c"\r\n\r\n--c\r\nContent-Type: text/plain\r\n\r\nx\r\n--c--'
    )
    decision = judge(live(rules=ENCRYPT_SECRET), nested, "a@example.com", ["b@partner.example"], TRUSTED)
    assert decision.already_encrypted is False


def test_a_rule_that_matches_beyond_the_subject_makes_encrypted_mail_count_as_plain() -> None:
    """The encrypted blob of PGP/MIME is an attachment to DLP: a rule that matches it matches
    more than what stays readable in encrypted mail, so the message is encrypted again
    rather than trusted."""
    on_attachments = [{"name": "r", "conditions": {"attachment_count": {"over": 0}}, "action_plan": "enc"}]
    decision = judge(live(rules=on_attachments), PGP_MIME.encode(), "a@example.com", ["b@partner.example"], TRUSTED)
    assert (decision.action, decision.already_encrypted, decision.would) == ("encrypt", False, "encrypt")
    assert decision.needs_protection


def test_a_message_is_parsed_once_for_dlp_and_the_encryption_check(monkeypatch) -> None:
    from engine.relay.dlp import mimetree

    parses: list[int] = []
    real = mimetree.parse
    monkeypatch.setattr(mimetree, "parse", lambda raw, *a: (parses.append(len(raw)), real(raw, *a))[1])
    content = mail("the secretdata plan")
    decision = judge(live(rules=ENCRYPT_SECRET), content, "a@example.com", ["b@partner.example"], TRUSTED)
    assert (decision.action, parses) == ("encrypt", [len(content)])
