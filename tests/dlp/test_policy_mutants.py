"""DLP policy evaluation pinned exactly: which rule applies to which envelope, what each
condition holds on, the evidence it keeps, the hit it records and the action that follows.
The content is given as `Extracted` values, so each case says precisely what DLP sees.
Written against the surviving mutants of scripts/mutate (docs/mutation-results.md)."""

from __future__ import annotations

import pytest

from engine.config.load import validate_data
from engine.policy.groups import DomainSet, IPSet
from engine.relay.dlp.extract import Attachment, Extracted, TextPart
from engine.relay.dlp.policy import Facts, Policies, RuleHit, redact, unscannable_hit

PLANS = [
    {"name": "enc", "email": "encrypt", "notify": ["policy_owners"]},
    {"name": "blk", "email": "block"},
    {"name": "hold", "email": "quarantine"},
    {"name": "let", "email": "permit"},
]
OUT = Facts("Alice@Example.com", ("bob@partner.example",), "10.0.0.5", "outbound")


def compile_(
    policies: list[dict], mode: str = "enforce", classifiers: list[dict] | None = None, **dlp: object
) -> Policies:
    data = {
        "version": 1,
        "system": {
            "fqdn": "m.example.com",
            "internal_domains": ["example.com"],
            "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 25}],
        },
        "ip_groups": {"internal_servers": ["10.0.0.0/8"], "lab": ["192.168.0.0/16"]},
        "domain_groups": {"partners": ["partner.example", "*.bank.example"]},
        "dlp": {"mode": mode, "action_plans": PLANS, "policies": policies, "classifiers": classifiers or [], **dlp},
    }
    config, diagnostics = validate_data(data)
    assert config is not None, diagnostics
    ips = {k: IPSet.of(v) for k, v in config.ip_groups.items()}
    domains = {k: DomainSet.of(v) for k, v in config.domain_groups.items()}
    return Policies(config, ips, domains)


def one_rule(conditions: dict, **rule: object) -> Policies:
    return compile_([{"name": "p", "rules": [{"name": "r", "conditions": conditions, "action_plan": "blk", **rule}]}])


def content(
    body: str = "",
    subject: str = "",
    attachments: tuple[Attachment, ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
    attached_text: str = "",
    problems: tuple[str, ...] = (),
    unscanned: tuple[str, ...] = (),
) -> Extracted:
    texts = [TextPart("subject", subject)] if subject else []
    texts += [TextPart("body", body)] if body else []
    texts += [TextPart("attachment:a.txt", attached_text)] if attached_text else []
    return Extracted(subject, headers, tuple(texts), attachments, problems + unscanned, unscanned=unscanned)


def matched(policies: Policies, extracted: Extracted, facts: Facts = OUT) -> list[tuple[str, tuple[str, ...]]]:
    """(rule, evidence) of every hit."""
    return [(h.rule, h.evidence) for h in policies.evaluate(extracted, facts).hits]


SECRET = {"phrases": ["secret"]}


@pytest.mark.parametrize(
    ("scope", "facts", "applies"),
    [
        ({"source": {"senders": ["*@EXAMPLE.COM"]}}, OUT, True),  # globs and senders compared in lower case
        ({"source": {"senders": ["*@other.example"]}}, OUT, False),
        ({"source": {"ip_groups": ["lab"]}}, OUT, False),
        ({"source": {"ip_groups": ["lab", "internal_servers"]}}, OUT, True),
        ({"destination": {"direction": "inbound"}}, OUT, False),
        ({"destination": {"direction": "any"}}, Facts("a@x.example", ("b@example.com",), "", "inbound"), True),
        ({"destination": {"direction": "internal"}}, Facts("a@example.com", ("b@example.com",), "", "internal"), True),
        ({"destination": {"domains": ["*.Example"]}}, OUT, True),
        ({"destination": {"domains": ["bank.example"]}}, OUT, False),
        (
            {"destination": {"domain_groups": ["partners"]}},
            Facts("a@example.com", ("x@Y.Bank.Example",), "", "outbound"),
            True,
        ),
        (
            {"destination": {"domain_groups": ["partners"]}},
            Facts("a@example.com", ("x@other.example",), "", "outbound"),
            False,
        ),
    ],
)
def test_rule_applies_to(scope: dict, facts: Facts, applies: bool) -> None:
    policies = one_rule(SECRET, **scope)
    assert matched(policies, content("top secret"), facts) == ([("r", ("s****t",))] if applies else [])


def test_conditions_and_their_evidence() -> None:
    both = one_rule({"all": [{"phrases": ["alpha"]}, {"phrases": ["beta"]}]})
    assert matched(both, content("alpha and beta")) == [("r", ("a***a", "b**a"))]
    assert matched(both, content("alpha only")) == []
    either = one_rule({"any": [{"phrases": ["alpha"]}, {"phrases": ["beta"]}]})
    assert matched(either, content("beta then alpha")) == [("r", ("a***a", "b**a"))]  # evidence of every branch
    assert matched(either, content("gamma")) == []
    negated = one_rule({"all": [{"phrases": ["alpha"]}, {"not": {"phrases": ["public"]}}]})
    assert matched(negated, content("alpha")) == [("r", ("a***a",))]
    assert matched(negated, content("alpha public")) == []
    unless_absent = one_rule({"not": {"phrases": ["public"]}})
    assert matched(unless_absent, content("public")) == []
    assert matched(unless_absent, content("nothing")) == [("r", ())]  # a not keeps no evidence


def test_min_matches_and_scope() -> None:
    twice = one_rule({"phrases": ["alpha", "beta"], "min_matches": 2})
    assert matched(twice, content("alpha beta")) == [("r", ("a***a", "b**a"))]
    assert matched(twice, content("alpha")) == []
    subject_only = one_rule({"pattern": r"ACCT-\d{4}", "scope": ["subject"]})
    assert matched(subject_only, content("ACCT-1234")) == []
    assert matched(subject_only, content(subject="re ACCT-1234")) == [("r", ("A*******4",))]
    attachments = one_rule({"phrases": ["alpha"], "scope": ["attachments"]})
    assert matched(attachments, content("alpha")) == []
    assert matched(attachments, content(attached_text="alpha")) == [("r", ("a***a",))]
    in_headers = one_rule({"pattern": "X-Tag: red", "scope": ["headers"]})
    assert matched(in_headers, content(headers=(("X-Tag", "red"),))) == [("r", ("X********d",))]
    cards = one_rule({"classifier": "credit_card", "min_matches": 2})
    two = content("4111 1111 1111 1111 and 5500 0000 0000 0004")
    assert matched(cards, two) == [
        ("r", ("4*****************1 (credit_card: medium)", "5*****************4 (credit_card: medium)"))
    ]
    assert matched(cards, content("4111 1111 1111 1111")) == []


def _attachment(name: str = "report.ZIP", true_type: str = "zip", size: int = 1000) -> Attachment:
    return Attachment(name, "application/zip", true_type, size, 0)


@pytest.mark.parametrize(
    ("match", "attachment", "holds"),
    [
        ({"name": "*.zip"}, _attachment(), True),  # names compared in lower case
        ({"name": "*.pdf"}, _attachment(), False),
        ({"type": ["zip", "pdf"]}, _attachment(), True),
        ({"type": ["pdf"]}, _attachment(), False),
        ({"size_over": "1KB"}, _attachment(size=1001), True),
        ({"size_over": "1KB"}, _attachment(size=1000), False),  # strictly larger
        ({"name": "*.zip", "type": ["zip"], "size_over": "10B"}, _attachment(), True),
        ({"name": "*.zip", "type": ["pdf"]}, _attachment(), False),
    ],
)
def test_attachment_condition(match: dict, attachment: Attachment, holds: bool) -> None:
    policies = one_rule({"attachment": match})
    assert matched(policies, content(attachments=(attachment,))) == ([("r", ("r********P",))] if holds else [])


def test_attachment_count_and_header() -> None:
    over_one = one_rule({"attachment_count": {"over": 1}})
    assert matched(over_one, content(attachments=(_attachment(),))) == []
    assert matched(over_one, content(attachments=(_attachment(), _attachment("b.zip")))) == [("r", ())]
    header = one_rule({"header": {"name": "x-classification", "pattern": "secret"}})
    headers = (("X-Classification", "top secret"), ("X-Other", "secret"), ("X-CLASSIFICATION", "public"))
    assert matched(header, content(headers=headers)) == [("r", ("t********t",))]
    assert matched(header, content(headers=(("X-Classification", "Secret"),))) == []  # the pattern decides case


def test_hit_verdict_and_action() -> None:
    policies = compile_(
        [
            {"name": "off", "enabled": False, "rules": [{"name": "x", "conditions": SECRET, "action_plan": "blk"}]},
            {
                "name": "cards",
                "owners": ["sec@example.com"],
                "rules": [
                    {"name": "disabled", "enabled": False, "conditions": SECRET, "action_plan": "blk"},
                    {"name": "enc", "severity": "high", "conditions": SECRET, "action_plan": "enc"},
                    {"name": "hold", "conditions": SECRET, "action_plan": "hold"},
                ],
            },
            {"name": "more", "rules": [{"name": "let", "conditions": SECRET, "action_plan": "let"}]},
        ]
    )
    verdict = policies.evaluate(content("secret", problems=("body: unreadable part",)), OUT)
    assert verdict.hits[0] == RuleHit(
        "cards", "enc", "high", "enc", "encrypt", ("policy_owners",), ("sec@example.com",), ("s****t",),
        ("dlp", "policies", 1, "rules", 1),
    )  # fmt: skip
    assert [(h.policy, h.rule, h.action, h.path) for h in verdict.hits[1:]] == [
        ("cards", "hold", "quarantine", ("dlp", "policies", 1, "rules", 2)),
        ("more", "let", "permit", ("dlp", "policies", 2, "rules", 0)),
    ]
    assert (verdict.action, verdict.would, verdict.mode, verdict.policies) == (
        "quarantine",
        "quarantine",
        "enforce",
        ("cards", "more"),
    )
    assert verdict.problems == ("body: unreadable part",)
    assert not policies.empty
    nothing = policies.evaluate(content("hello"), OUT)
    assert (nothing.hits, nothing.action, nothing.would, nothing.policies) == ((), "permit", "permit", ())


def test_monitor_mode_records_and_permits() -> None:
    policies = compile_(
        [{"name": "p", "rules": [{"name": "r", "conditions": SECRET, "action_plan": "blk"}]}], "monitor"
    )
    verdict = policies.evaluate(content("secret"), OUT)
    assert (verdict.action, verdict.would, verdict.mode, len(verdict.hits)) == ("permit", "block", "monitor", 1)


def test_evidence_is_capped_at_five() -> None:
    policies = one_rule({"phrases": ["a1", "a2", "a3", "a4", "a5", "a6"]})
    assert matched(policies, content("a1 a2 a3 a4 a5 a6")) == [("r", ("**",) * 5)]


def test_no_enabled_rule_is_empty() -> None:
    assert compile_([]).empty
    off = [{"name": "p", "enabled": False, "rules": [{"name": "r", "conditions": SECRET, "action_plan": "blk"}]}]
    assert compile_(off).empty
    rule_off = [{"name": "p", "rules": [{"name": "r", "enabled": False, "conditions": SECRET, "action_plan": "blk"}]}]
    assert compile_(rule_off).empty


def test_custom_classifier() -> None:
    policies = compile_(
        [{"name": "p", "rules": [{"name": "r", "conditions": {"classifier": "emp"}, "action_plan": "blk"}]}],
        classifiers=[{"name": "emp", "pattern": r"\bEMP-\d{6}\b"}],
    )
    assert matched(policies, content("id EMP-123456")) == [("r", ("E********6 (emp: high)",))]


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("", ""),
        ("a", "*"),
        ("ab", "**"),
        ("abc", "a*c"),
        ("4111  1111\n1111", "4************1"),  # whitespace folded first
        ("x" * 30, "x" + "*" * 20 + "x"),
        ("x" * 22, "x" + "*" * 20 + "x"),
    ],
)
def test_redact(text: str, shown: str) -> None:
    assert redact(text) == shown


UNREAD = ("a.zip: nested too deep",)
IN_SCOPE = [{"name": "p", "rules": [{"name": "r", "conditions": SECRET, "action_plan": "enc"}]}]


@pytest.mark.parametrize(
    ("policies", "options", "body", "hits", "action", "would"),
    [
        (IN_SCOPE, {}, "hello", [("dlp", "unscannable", "encrypt", True)], "encrypt", "encrypt"),  # the default
        (
            IN_SCOPE,
            {"unscannable": "quarantine"},
            "hello",
            [("dlp", "unscannable", "quarantine", True)],
            "quarantine",
            "quarantine",
        ),
        (IN_SCOPE, {"unscannable": "permit"}, "hello", [], "permit", "permit"),
        (
            IN_SCOPE,
            {"unscannable": "quarantine"},
            "secret",
            [("p", "r", "encrypt", False), ("dlp", "unscannable", "quarantine", True)],
            "quarantine",
            "quarantine",
        ),
        (
            [{"name": "p", "rules": [{"name": "r", "conditions": SECRET, "action_plan": "blk"}]}],
            {"unscannable": "encrypt"},
            "secret",
            [("p", "r", "block", False), ("dlp", "unscannable", "encrypt", True)],
            "block",
            "block",
        ),
        (
            IN_SCOPE,
            {"mode": "monitor", "unscannable": "block"},
            "hello",
            [("dlp", "unscannable", "block", True)],
            "permit",
            "block",
        ),
        # no enabled rule applies to this mail (direction): content left unread changes nothing
        (
            [
                {
                    "name": "p",
                    "rules": [
                        {
                            "name": "r",
                            "conditions": SECRET,
                            "action_plan": "enc",
                            "destination": {"direction": "inbound"},
                        }
                    ],
                }
            ],
            {"unscannable": "block"},
            "hello",
            [],
            "permit",
            "permit",
        ),
        ([], {"unscannable": "block"}, "hello", [], "permit", "permit"),
    ],
)
def test_content_left_unread(policies, options, body, hits, action, would) -> None:
    options = dict(options)
    mode = options.pop("mode", "enforce")
    verdict = compile_(policies, mode, **options).evaluate(content(body, unscanned=UNREAD), OUT)
    assert [(h.policy, h.rule, h.action, h.builtin) for h in verdict.hits] == hits
    assert (verdict.action, verdict.would, verdict.unscanned) == (action, would, UNREAD)
    assert verdict.policies == (("p",) if body == "secret" else ())  # the built-in rule is no policy


def test_content_read_in_full_is_judged_by_the_rules_alone() -> None:
    verdict = compile_(IN_SCOPE, unscannable="block").evaluate(content("hello", problems=("odd charset",)), OUT)
    assert (verdict.hits, verdict.action, verdict.unscanned, verdict.problems) == ((), "permit", (), ("odd charset",))


def test_the_unscannable_hit() -> None:
    assert unscannable_hit("quarantine") == RuleHit(
        "dlp", "unscannable", "high", "dlp.unscannable", "quarantine", (), (), (), ("dlp", "unscannable"), True
    )


def test_every_rule_is_judged_after_one_that_does_not_apply() -> None:
    policies = compile_(
        [
            {
                "name": "p",
                "rules": [
                    {"name": "in", "conditions": SECRET, "action_plan": "blk", "destination": {"direction": "inbound"}},
                    {"name": "out", "conditions": SECRET, "action_plan": "enc"},
                ],
            }
        ]
    )
    assert matched(policies, content("secret")) == [("out", ("s****t",))]


def test_patterns_of_different_rules_are_told_apart() -> None:
    policies = compile_(
        [
            {
                "name": "p",
                "rules": [
                    {"name": "alpha", "conditions": {"pattern": r"ALPHA-\d+"}, "action_plan": "enc"},
                    {"name": "beta", "conditions": {"pattern": r"BETA-\d+"}, "action_plan": "blk"},
                ],
            }
        ]
    )
    assert matched(policies, content("ALPHA-1")) == [("alpha", ("A*****1",))]


def test_conditions_nested_in_all_any_not_see_the_whole_message() -> None:
    two = content("secret", attachments=(_attachment(), _attachment("b.zip")))
    nested = one_rule(
        {
            "all": [
                SECRET,
                {"any": [{"attachment_count": {"over": 1}}, {"not": {"header": {"name": "X", "pattern": "y"}}}]},
            ]
        }
    )
    assert matched(nested, two) == [("r", ("s****t",))]
    negated = one_rule({"not": {"attachment": {"name": "*.zip"}}})
    assert matched(negated, two) == []


def test_texts_of_one_scope_are_joined_line_by_line() -> None:
    extracted = Extracted("", (), (TextPart("body", "alpha"), TextPart("body", "beta")), (), ())
    policies = one_rule({"all": [{"phrases": ["alpha"]}, {"phrases": ["beta"]}]})
    assert matched(policies, extracted) == [("r", ("a***a", "b**a"))]
