"""Policy evaluation: conditions, thresholds, scopes, source and destination, modes, actions."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from engine.config.load import validate_data
from engine.policy.groups import DomainSet, IPSet
from engine.relay.dlp import policy as policy_module
from engine.relay.dlp.classifiers import make_classifier
from engine.relay.dlp.extract import extract
from engine.relay.dlp.policy import Facts, Findings, Policies, redact

HEAD = {
    "version": 1,
    "system": {
        "fqdn": "m.example.com",
        "internal_domains": ["example.com"],
        "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}],
    },
}
PLANS = [
    {"name": "enc", "email": "encrypt"},
    {"name": "blk", "email": "block"},
    {"name": "hold", "email": "quarantine"},
]
OUT = Facts("alice@example.com", ("bob@partner.example",), "10.0.0.5", "outbound")


def policies(rules: str, mode: str = "enforce", extra: dict | None = None) -> Policies:
    rule_list = YAML(typ="safe").load(textwrap.dedent(rules))
    data = {
        **HEAD,
        "ip_groups": {"internal_servers": ["10.0.0.0/8"]},
        "domain_groups": {"partners": ["partner.example"]},
        "dlp": {"mode": mode, "action_plans": PLANS, "policies": [{"name": "p", "rules": rule_list}], **(extra or {})},
    }
    config, diags = validate_data(data)
    assert config is not None, diags
    ips = {k: IPSet.of(v) for k, v in config.ip_groups.items()}
    doms = {k: DomainSet.of(v) for k, v in config.domain_groups.items()}
    return Policies(config, ips, doms)


def mail(body: str, subject: str = "hello", headers: str = "") -> bytes:
    return (
        f"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n{headers}\r\n{body}\r\n".encode()
    )


def test_classifier_with_threshold() -> None:
    p = policies("- {name: cards, conditions: {classifier: credit_card, min_matches: 2}, action_plan: enc}")
    one = p.evaluate(extract(mail("card 4111 1111 1111 1111")), OUT)
    two = p.evaluate(extract(mail("cards 4111 1111 1111 1111 and 5500 0000 0000 0004")), OUT)
    assert one.hits == () and one.action == "permit"
    assert [h.rule for h in two.hits] == ["cards"] and two.action == "encrypt"
    assert two.hits[0].evidence == (
        "4*****************1 (credit_card: high)",
        "5*****************4 (credit_card: high)",
    )


def test_classifier_min_confidence() -> None:
    """A card cut out of a longer run of groups is low; a keyword nearby raises it."""
    rule = "- {{name: cards, conditions: {{classifier: credit_card{}}}, action_plan: enc}}"
    default, low, high = (
        policies(rule.format(extra)) for extra in ("", ", min_confidence: low", ", min_confidence: high")
    )
    cut = mail("ref 4111 1111 1111 1111 0042 done")  # low: the number runs on
    plain = mail("ref 4111 1111 1111 1111 done")  # medium: the format alone
    keyed = mail("visa 4111 1111 1111 1111 done")  # high: a keyword nearby
    assert [bool(p.evaluate(extract(m), OUT).hits) for p in (low, default, high) for m in (cut, plain, keyed)] == [
        True, True, True, False, True, True, False, False, True,
    ]  # fmt: skip
    assert low.evaluate(extract(cut), OUT).hits[0].evidence == ("4*****************1 (credit_card: low)",)
    assert [m.confidence for m in low.classified(extract(keyed), "credit_card", "low")] == ["high"]


def test_pattern_phrases_and_scope() -> None:
    p = policies("""
        - {name: acct, conditions: {pattern: '\\bACCT-\\d{8}\\b', scope: [subject]}, action_plan: enc}
        - {name: words, conditions: {phrases: ['card number', 'account statement']}, action_plan: enc}
    """)
    assert p.evaluate(extract(mail("ACCT-12345678 in the body")), OUT).hits == ()
    assert [h.rule for h in p.evaluate(extract(mail("x", subject="ACCT-12345678")), OUT).hits] == ["acct"]
    hits = p.evaluate(extract(mail("your Card\n  Number please")), OUT).hits  # case and whitespace folded
    assert [h.rule for h in hits] == ["words"]
    assert p.evaluate(extract(mail("cardnumber")), OUT).hits == ()  # word-bounded


def test_all_any_not() -> None:
    p = policies("""
        - name: combo
          conditions:
            all:
              - any: [{phrases: [invoice]}, {phrases: [receipt]}]
              - not: {phrases: [public]}
          action_plan: blk
    """)
    assert p.evaluate(extract(mail("the receipt")), OUT).action == "block"
    assert p.evaluate(extract(mail("the public receipt")), OUT).action == "permit"
    assert p.evaluate(extract(mail("nothing")), OUT).action == "permit"


def test_header_attachment_and_count() -> None:
    p = policies("""
        - {name: hdr, conditions: {header: {name: X-Classification, pattern: '(?i)confidential'}}, action_plan: hold}
        - {name: exe, conditions: {attachment: {type: [exe]}}, action_plan: blk}
    """)
    assert p.evaluate(extract(mail("x", headers="X-Classification: Confidential\r\n")), OUT).action == "quarantine"
    exe = (
        b"From: a@example.com\r\nTo: b@partner.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--B\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=report.pdf\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n--B--\r\n"
    )
    verdict = p.evaluate(extract(exe), OUT)
    assert verdict.action == "block" and verdict.hits[0].evidence == ("r********f",)  # an .exe named .pdf


def test_source_and_destination() -> None:
    p = policies("""
        - name: to-partners
          conditions: {phrases: [secret]}
          action_plan: enc
          source: {senders: ['*@example.com'], ip_groups: [internal_servers]}
          destination: {direction: outbound, domain_groups: [partners]}
    """)
    body = extract(mail("secret"))
    assert p.evaluate(body, OUT).action == "encrypt"
    assert p.evaluate(body, Facts("eve@elsewhere.example", OUT.recipients, OUT.peer_ip, "outbound")).hits == ()
    assert p.evaluate(body, Facts(OUT.sender, OUT.recipients, "192.0.2.1", "outbound")).hits == ()
    assert p.evaluate(body, Facts(OUT.sender, ("c@other.example",), OUT.peer_ip, "outbound")).hits == ()
    assert p.evaluate(body, Facts(OUT.sender, OUT.recipients, OUT.peer_ip, "inbound")).hits == ()


def test_strongest_action_wins_and_monitor_only_records() -> None:
    rules = """
        - {name: a, conditions: {phrases: [alpha]}, action_plan: enc}
        - {name: b, conditions: {phrases: [alpha]}, action_plan: hold}
        - {name: c, conditions: {phrases: [alpha]}, action_plan: blk}
    """
    enforce = policies(rules).evaluate(extract(mail("alpha")), OUT)
    assert enforce.action == "block" and len(enforce.hits) == 3
    monitor = policies(rules, mode="monitor").evaluate(extract(mail("alpha")), OUT)
    assert monitor.action == "permit" and monitor.would == "block" and len(monitor.hits) == 3


def test_custom_classifier_with_checksum() -> None:
    extra = {"classifiers": [{"name": "acct_luhn", "pattern": r"\bACC\d{16}\b", "checksum": "luhn"}]}
    p = policies("- {name: c, conditions: {classifier: acct_luhn}, action_plan: enc}", extra=extra)
    assert p.evaluate(extract(mail("ACC4111111111111111")), OUT).action == "encrypt"
    assert p.evaluate(extract(mail("ACC4111111111111112")), OUT).action == "permit"


def test_disabled_rules_and_policies_are_skipped() -> None:
    p = policies("- {name: off, enabled: false, conditions: {phrases: [alpha]}, action_plan: blk}")
    assert p.empty and p.evaluate(extract(mail("alpha")), OUT).hits == ()


@pytest.mark.parametrize(
    ("text", "shown"), [("4111 1111 1111 1111", "4*****************1"), ("ab", "**"), ("abc", "a*c")]
)
def test_redaction_keeps_first_and_last(text: str, shown: str) -> None:
    assert redact(text) == shown


CUSTOM = [
    ("employee_id", r"\bE\d{7}\b", "luhn"),
    ("ticket", r"TKT-[0-9]{4,6}", "none"),
    ("iban_like", r"[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}", "mod97"),
    ("greedy", r"a+b*", "none"),
]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "E1234567",
                "E0000000",
                "TKT-1234",
                "TKT-123456789",
                "GB82 WEST 1234 5698 7654 32",
                "aaabbb ab",
                " ",
                "\n",
                "x",
            ]
        )
        | st.text(alphabet="aETK-0123456789 GBWS", max_size=12),
        max_size=12,
    )
)
def test_custom_classifiers_through_the_matcher_find_what_their_regex_finds(pieces: list[str]) -> None:
    """A custom classifier's candidates come from the matcher's one scan; its matches must be
    exactly the regex's own (finditer, non-empty, checksum-valid), wherever they are."""
    text = "".join(pieces)
    rules = "\n".join(
        f"- {{name: r{i}, conditions: {{classifier: {name}, min_confidence: low}}, action_plan: enc}}"
        for i, (name, _, _) in enumerate(CUSTOM)
    )
    custom = [{"name": n, "pattern": p, "checksum": c} for n, p, c in CUSTOM]
    p = policies(rules, extra={"classifiers": custom})
    extracted = extract(mail(text.replace("\n", "\r\n")))
    body = next(t.text for t in extracted.texts if t.origin == "body")
    for name, pattern, checksum in CUSTOM:
        expected = [(m.start, m.end, m.value) for m in make_classifier(name, pattern, checksum)(body)]
        got = [
            (m.start, m.end, m.value) for m in p.classified(extracted, name, "low") if body[m.start : m.end] == m.value
        ]
        assert [v for _, _, v in got] == [v for _, _, v in expected], name


# -- skipping rules the scan gives nothing to hold on (`Policies._needs_hits`) ----------------

_SKIP_RULES = """
- {name: card, conditions: {classifier: credit_card}, action_plan: enc}
- {name: ssn-body, conditions: {classifier: us_ssn, scope: [body]}, action_plan: enc}
- {name: mail, conditions: {classifier: email_address, min_matches: 2}, action_plan: hold}
- {name: iban, conditions: {classifier: iban, min_confidence: high}, action_plan: enc}
- {name: acct, conditions: {classifier: acct}, action_plan: enc}
- {name: in-only, conditions: {phrases: [top secret]}, destination: {direction: inbound}, action_plan: blk}
- {name: alice, conditions: {classifier: credit_card}, source: {senders: ['alice@*']}, action_plan: hold}
- {name: partner, conditions: {not: {phrases: [public]}}, destination: {domains: [partner.example]}, action_plan: enc}
- {name: phrase, conditions: {phrases: [top secret, project x]}, action_plan: blk}
- {name: pattern, conditions: {pattern: 'PRJ-[0-9]{4}', scope: [subject]}, action_plan: hold}
- {name: all, conditions: {all: [{phrases: [invoice]}, {classifier: credit_card}]}, action_plan: blk}
- {name: any, conditions: {any: [{pattern: 'X{5}'}, {phrases: [zz]}]}, action_plan: hold}
- {name: not, conditions: {not: {phrases: [public]}}, action_plan: hold}
- {name: header, conditions: {header: {name: X-Class, pattern: secret}}, action_plan: blk}
"""


class _NoSkip(Policies):
    def _needs_hits(self, cond):  # every rule evaluated in full: the reference
        return None


def _both() -> tuple[Policies, Policies]:
    extra = {"classifiers": [{"name": "acct", "pattern": "ACC[0-9]{8}"}]}
    rules = textwrap.dedent(_SKIP_RULES)
    fast = policies(rules, extra=extra)
    config, _ = validate_data(
        {
            **HEAD,
            "ip_groups": {"internal_servers": ["10.0.0.0/8"]},
            "dlp": {
                "action_plans": PLANS,
                "policies": [{"name": "p", "rules": YAML(typ="safe").load(rules)}],
                **extra,
            },
        }
    )
    slow = _NoSkip(config, {k: IPSet.of(v) for k, v in config.ip_groups.items()}, {})
    return fast, slow


_FAST, _SLOW = _both()
_PIECES = st.sampled_from(
    [
        "4111 1111 1111 1111",
        "078-05-1120",
        "DE89 3704 0044 0532 0130 00",
        "a@b.example",
        "c@d.example",
        "ACC12345678",
        "top secret",
        "project x",
        "PRJ-1234",
        "invoice",
        "XXXXX",
        "zz",
        "public",
        "café",
        "Ünïcode ００１",
        "４１１１ １１１１ １１１１ １１１１",  # a card in full-width digits: no ASCII candidate
        "12345",
        " ",
        "\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(_PIECES | st.text(max_size=12), max_size=12).map("".join),
    subject=st.lists(_PIECES, max_size=3).map(" ".join),
    secret_header=st.booleans(),
)
def test_skipping_silent_rules_changes_no_verdict(body: str, subject: str, secret_header: bool) -> None:
    """A rule is skipped only where evaluating it could not hold: the verdict of every message
    is the one a full evaluation of every rule gives, its hits in the rules' order (the rules
    are walked in groups by filters and scopes: `Policies._groups`)."""
    headers = "X-Class: secret\r\n" if secret_header else ""
    extracted = extract(mail(body.replace("\r", "").replace("\n", " "), subject.replace("\n", " ") or "s", headers))
    assert _FAST.evaluate(extracted, OUT) == _SLOW.evaluate(extracted, OUT)


def test_the_skip_is_taken_for_quiet_mail_only() -> None:
    """What is skipped: a scan-only rule of a message whose scan found nothing; never a `not`
    or header rule (they hold without a hit)."""
    needs = {rule.name: n for *_, rule, _key, n in _FAST._rules}  # noqa: SLF001
    assert needs["ssn-body"] == frozenset({"body"}) and needs["all"] is not None and needs["any"] is not None
    assert needs["not"] is None and needs["header"] is None
    quiet = _FAST.evaluate(extract(mail("nothing here at all")), OUT)
    assert [h.rule for h in quiet.hits] == ["partner", "not"]  # the `not` rules held: they were evaluated


# -- the quick verdict (`Policies.quick`): decided by one candidate pass, or not at all ------

_SCAN_ONLY = policies(
    "\n".join(
        line for line in textwrap.dedent(_SKIP_RULES).splitlines() if "not:" not in line and "header:" not in line
    ),
    extra={"classifiers": [{"name": "acct", "pattern": "ACC[0-9]{8}"}]},
)


_FACTS = [
    OUT,
    Facts("bob@elsewhere.example", ("carol@example.com",), "192.0.2.1", "inbound"),
    Facts("dave@example.com", ("erin@other.example",), "10.0.0.6", "outbound"),
    Facts("alice@example.com", ("bob@partner.example", "x@other.example"), "10.0.0.5", "outbound"),
]


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(_PIECES | st.text(max_size=12), max_size=12).map("".join),
    subject=st.lists(_PIECES, max_size=3).map(" ".join),
    facts=st.lists(st.sampled_from(_FACTS), min_size=1, max_size=4),
)
def test_a_quick_verdict_is_the_full_one(body: str, subject: str, facts: list[Facts]) -> None:
    """Where `quick` gives a verdict, it is the one `evaluate` gives, for senders, peers,
    recipients and directions that come and go (which rules apply is kept per `Facts`)."""
    extracted = extract(mail(body.replace("\r", "").replace("\n", " "), subject.replace("\n", " ") or "s"))
    for policy in (_FAST, _SCAN_ONLY):
        for each in facts:
            quick = policy.quick(extracted, each)
            assert quick is None or quick == policy.evaluate(extracted, each)


def test_quick_scans_only_the_scopes_its_rules_need() -> None:
    """One pass over the scopes the applying rules name: a candidate in a scope no rule
    reads leaves the message to be decided quickly; one in a scope a rule reads does not.
    Which rules apply, and so which scopes, follows the message's facts."""
    p = policies(
        """
        - {name: body, conditions: {pattern: 'ACC[0-9]{8}', scope: [body]}, destination: {direction: any},
           action_plan: enc}
        - {name: in, conditions: {pattern: 'TKT-[0-9]{4}', scope: [subject]}, destination: {direction: inbound},
           action_plan: blk}
        """
    )
    inbound = _FACTS[1]
    subject_only = extract(mail("nothing here", subject="ACC12345678 TKT-1234"))
    assert p.quick(subject_only, OUT) == p.evaluate(subject_only, OUT) == Findings((), "permit", "permit", "enforce")
    assert p.quick(subject_only, inbound) is None  # the inbound rule reads the subject too
    assert p.evaluate(subject_only, inbound).action == "block"
    body = extract(mail("ACC12345678", subject="plain"))
    assert p.quick(body, OUT) is None and p.evaluate(body, OUT).action == "encrypt"


def test_which_rules_apply_is_kept_for_a_bounded_number_of_facts(monkeypatch) -> None:
    monkeypatch.setattr(policy_module, "_ASKED_KEPT", 3)
    p = policies("- {name: c, conditions: {classifier: credit_card}, action_plan: enc}")
    quiet = extract(mail("nothing"))
    for n in range(10):
        facts = Facts(f"u{n}@example.com", ("b@partner.example",), "10.0.0.5", "outbound")
        assert p.quick(quiet, facts) == p.evaluate(quiet, facts)
        assert len(p._asked_memo) <= 3  # noqa: SLF001


def test_what_quick_decides() -> None:
    """Quiet ASCII text under scan-only rules is decided; a candidate, non-ASCII text, content
    left unread or a rule that may hold without a hit (`not`, header) is not."""
    quiet = extract(mail("nothing here at all, 42 times"))
    assert (
        _SCAN_ONLY.quick(quiet, OUT) == _SCAN_ONLY.evaluate(quiet, OUT) == Findings((), "permit", "permit", "enforce")
    )
    assert _FAST.quick(quiet, OUT) is None  # its `not` and header rules
    for body in ("card 4111 1111 1111 1111", "a 13-digit candidate 1234567890123", "café", "invoice"):
        assert _SCAN_ONLY.quick(extract(mail(body)), OUT) is None, body
    unread = extract(mail("quiet", headers="Content-Transfer-Encoding: x-unknown\r\n"))
    assert unread.unscanned and _SCAN_ONLY.quick(unread, OUT) is None


# -- the plain ASCII message, scanned as sent (`Policies.quick` on `PlainText`) ------------------------

_HEADER_SCOPED = policies(
    """
    - {name: hdr, conditions: {pattern: 'ACC[0-9]{8}', scope: [headers]}, action_plan: enc}
    - {name: subj, conditions: {phrases: [project x], scope: [subject]}, action_plan: blk}
    - {name: body, conditions: {classifier: credit_card, scope: [body]}, action_plan: hold}
    """
)
_ASCII_PIECES = st.sampled_from(
    ["4111 1111 1111 1111", "ACC12345678", "project x", "top secret", "PRJ-1234", "zz", "public", "12345", " ", "\r\n"]
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(_ASCII_PIECES | st.text(st.characters(max_codepoint=127), max_size=12), max_size=12).map("".join),
    subject=st.lists(_ASCII_PIECES | st.just("=?utf-8?q?project_x?="), max_size=3).map(" ".join),
    header=st.sampled_from(
        ["", "X-Ref: ACC12345678\r\n", "X-Ref: =?utf-8?b?QUNDMTIzNDU2Nzg=?=\r\n", "X-Note: quiet\r\n"]
    ),
    facts=st.lists(st.sampled_from(_FACTS), min_size=1, max_size=3),
)
def test_a_plain_ascii_message_scanned_as_sent_gets_the_quick_verdict(body, subject, header, facts) -> None:
    """Where `plain_ascii` reads a message, `quick` on it (its body's bytes scanned as they
    are) gives the verdict `quick` gives on its extraction, and so the full one; for rules
    that read the subject, the body or the headers (encoded words among them)."""
    from engine.relay.dlp import mimetree
    from engine.relay.dlp.extract import Limits, plain_ascii

    raw = mail(body.replace("\r", "").replace("\n", " "), subject.replace("\n", " ") or "s", header)
    plain = plain_ascii(mimetree.parse(raw), Limits())
    assert plain is not None  # ASCII, text/plain by default, no encoding
    extracted = extract(raw)
    for policy in (_FAST, _SCAN_ONLY, _HEADER_SCOPED):
        for each in facts:
            verdict = policy.quick(plain, each)
            assert verdict == policy.quick(extracted, each)
            assert verdict is None or verdict == policy.evaluate(extracted, each)
