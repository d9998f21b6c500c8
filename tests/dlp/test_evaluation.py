"""The classifiers on an independent corpus: precision and recall per classifier, printed.

The corpus (eval_corpus.py) is generated once per session from Faker and schwifty, never
from the classifiers, and labelled by what it planted. Every message goes through the
relay's own path: `decide.judge` under a config with one `block` rule per built-in
classifier at the default `min_confidence` (medium), so extraction, the policy's texts and
the rule's confidence filter are the relay's. Value-level counts come from the same
`Policies` object (`Policies.classified`, the cache a rule reads); the message-level
counts from the rules that matched in the decision.

Scoring per message and classifier, on normalized values (digits; IBAN compact; email
lower-case): TP = planted and found, FP = found but not planted, FN = planted, not found.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from engine.config.load import validate_data
from engine.relay.dlp.decide import judge
from engine.relay.dlp.extract import extract
from engine.relay.dlp.simulate import policy_view

from .eval_corpus import CLASSIFIERS, COUNT, DOCUMENTS, Sample, generate, normalize

MIN_PRECISION = MIN_RECALL = 0.99
CONFIG = {
    "version": 1,
    "system": {
        "fqdn": "relay.corp.example",
        "internal_domains": ["corp.example"],
        "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 2525}],
    },
    "dlp": {
        "action_plans": [{"name": "stop", "email": "block"}],
        "policies": [
            {"name": name, "rules": [{"name": name, "conditions": {"classifier": name}, "action_plan": "stop"}]}
            for name in CLASSIFIERS
        ],
    },
}


@cache
def corpus() -> list[Sample]:
    return generate()


@cache
def live():
    config, diagnostics = validate_data(CONFIG)
    assert config is not None, diagnostics
    return policy_view(config, Path("."))


@cache
def evaluation() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """(value-level, message-level) [TP, FP, FN] per classifier."""
    values = {name: [0, 0, 0] for name in CLASSIFIERS}
    messages = {name: [0, 0, 0] for name in CLASSIFIERS}
    relay = live()
    for sample in corpus():
        decision = judge(relay, sample.raw, "sender@corp.example", ["recipient@partner.example"], None)
        matched = {hit.policy for hit in decision.verdict.hits}
        extracted = extract(sample.raw)
        for name in CLASSIFIERS:
            found = {normalize(name, m.value) for m in relay.policies.classified(extracted, name)}
            planted = sample.planted[name]
            for counts, got, want in ((values[name], found, planted), (messages[name], found, planted)):
                if counts is messages[name]:
                    got, want = {True} if name in matched else set(), {True} if planted else set()
                counts[0] += len(got & want)
                counts[1] += len(got - want)
                counts[2] += len(want - got)
    return values, messages


def table(counts: dict[str, list[int]], what: str) -> str:
    rows = [
        f"Built-in classifiers at min_confidence medium, {what}, {COUNT} generated messages",
        "| classifier    |   TP |  FP |  FN | precision | recall |",
        "|---------------|-----:|----:|----:|----------:|-------:|",
    ]
    for name, (tp, fp, fn) in counts.items():
        rows.append(f"| {name:<13} | {tp:>4} | {fp:>3} | {fn:>3} | {ratio(tp, fp):>9.3f} | {ratio(tp, fn):>6.3f} |")
    return "\n".join(rows)


def ratio(tp: int, other: int) -> float:
    return tp / (tp + other) if tp + other else 1.0


def test_corpus_is_large_labelled_and_reproducible():
    samples = corpus()
    assert len(samples) >= 2000
    for name in CLASSIFIERS:
        assert sum(len(s.planted[name]) for s in samples) >= 500, name
        assert sum(1 for s in samples if not s.planted[name]) >= 300, name  # messages without it
    again = generate(count=50)
    assert [s.raw for s in again] == [s.raw for s in samples[:50]]


def test_every_transport_and_layout_is_present():
    kinds = {tuple(s.name.split("-")[1:]) for s in corpus()}
    assert {layout for layout, _ in kinds} == {"invoice", "bank_letter", "order", "chat", "code", "csv", "log"}
    assert {transport for _, transport in kinds} == {
        *("plain", "qp", "html", "alternative", "attachment", "zip"),
        *("pdf", "docx", "xlsx", "odt", "ods"),
    }
    assert len(kinds) == 7 * 11  # every layout in every transport


@pytest.mark.parametrize("transport", list(DOCUMENTS))
def test_documents_are_real_documents_read_whole(transport):
    """Each document transport attaches a file the relay types as that document and reads
    to the end; positives and negatives both travel that way."""
    samples = [s for s in corpus() if s.name.endswith(f"-{transport}")]
    assert len(samples) >= 200
    for name in CLASSIFIERS:
        assert sum(len(s.planted[name]) for s in samples) >= 30, name
    for sample in samples:
        extracted = extract(sample.raw)
        assert [a.true_type for a in extracted.attachments] == [transport], sample.name
        assert extracted.unscanned == (), sample.name
        assert any(part.origin.startswith("attachment:") and part.text.strip() for part in extracted.texts)


@pytest.mark.parametrize("level", ["values", "messages"])
def test_precision_and_recall_per_classifier(level, capsys):
    values, messages = evaluation()
    counts = values if level == "values" else messages
    shown = table(counts, "per value" if level == "values" else "per message")
    with capsys.disabled():
        print("\n" + shown)
    failures = [
        name for name, (tp, fp, fn) in counts.items() if ratio(tp, fp) < MIN_PRECISION or ratio(tp, fn) < MIN_RECALL
    ]
    assert failures == [], shown
