"""The labelled corpus: reproducible, extracted as labelled, classifiers scored, backends equal."""

import json
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from engine.relay.dlp.classifiers import CLASSIFIERS
from engine.relay.dlp.extract import Extracted, extract
from engine.relay.dlp.matcher import Matcher, hyperscan_available
from tests.conftest import require

from . import make_corpus

CORPUS = Path(__file__).resolve().parent / "corpus"
LABELS = json.loads((CORPUS / "labels.json").read_text())
MIN_PRECISION, MIN_RECALL = 0.98, 0.99


@cache
def extracted(name: str) -> Extracted:
    return extract((CORPUS / name).read_bytes())


def test_corpus_is_large_enough_and_covers_every_classifier():
    assert len(LABELS) >= 200
    assert sorted(path.name for path in CORPUS.glob("*.eml")) == sorted(LABELS)
    for classifier in CLASSIFIERS:
        assert sum(label["hits"][classifier] for label in LABELS.values()) >= 20
        assert sum(1 for name in LABELS if name.split("-", 1)[1].startswith(classifier_kind(classifier))) >= 10


def classifier_kind(classifier: str) -> str:
    return {"credit_card": "card", "us_ssn": "ssn", "iban": "iban", "email_address": "email"}[classifier]


def test_corpus_regenerates_identically(tmp_path):
    """The committed corpus is what make_corpus.py writes (compressed ones: same content)."""
    labels = make_corpus.write(tmp_path)
    assert labels == LABELS
    for name, label in LABELS.items():
        if label["deterministic"]:
            assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name
        else:  # zlib versions may compress differently; the extraction must not change
            assert extract((tmp_path / name).read_bytes()) == extracted(name), name


@pytest.mark.parametrize("name", sorted(LABELS))
def test_extraction_matches_labels(name):
    label, result = LABELS[name], extracted(name)
    assert [attachment.true_type for attachment in result.attachments] == label["attachments"]
    for expected in label["problems"]:
        assert any(expected in problem for problem in result.problems), result.problems


def score() -> dict[str, tuple[int, int, int]]:
    """(true positives, false positives, false negatives) per classifier over the corpus.

    A found value counts as a true positive when the labels expect that value in that
    message (as a multiset), so a wrong hit cannot hide behind a missed one.
    """
    totals = {name: [0, 0, 0] for name in CLASSIFIERS}
    for name, label in LABELS.items():
        texts = [part.text for part in extracted(name).texts]
        for classifier, find in CLASSIFIERS.items():
            found = Counter(match.value for text in texts for match in find(text))
            expected = Counter(label["values"][classifier])
            hits = sum((found & expected).values())
            totals[classifier][0] += hits
            totals[classifier][1] += sum(found.values()) - hits
            totals[classifier][2] += sum(expected.values()) - hits
    return {name: tuple(counts) for name, counts in totals.items()}


def test_precision_and_recall_per_classifier(capsys):
    rows = []
    failures = []
    for classifier, (true, false_positive, false_negative) in score().items():
        precision = true / (true + false_positive) if true + false_positive else 1.0
        recall = true / (true + false_negative) if true + false_negative else 1.0
        rows.append(
            f"| {classifier:<13} | {true:>4} | {false_positive:>3} | {false_negative:>3} | {precision:.3f} | {recall:.3f} |"
        )
        if precision < MIN_PRECISION or recall < MIN_RECALL:
            failures.append(classifier)
    table = "\n".join(
        [
            f"\nDLP classifiers on {len(LABELS)} labelled messages",
            "| classifier    |   TP |  FP |  FN | precision | recall |",
            "|---------------|-----:|----:|----:|----------:|-------:|",
            *rows,
        ]
    )
    with capsys.disabled():
        print(table)
    assert failures == [], table


def corpus_texts() -> list[str]:
    return [part.text for name in sorted(LABELS) for part in extracted(name).texts]


REGEXES = [
    r"\b\d{3}-\d{2}-\d{4}\b",
    r"\b\d{9}\b",
    r"\b(?:\d[ -]?){13,19}\b",
    r"\b4\d{3}(?:[ -]?\d{4}){3}\b",
    r"\b3[47]\d{2}[ -]?\d{6}[ -]?\d{5}\b",
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+",
    r"(?i)\bssn\b\W{0,3}\d",
    r"(?i)\biban\b:?\s*[A-Z]{2}",
    r"(?i)social security number",
    r"\b20\d\d-\d\d-\d{4}\b",
    r"\+\d \(\d{3}\) \d{3}-\d{4}",
    r"\b\d{5}-\d{4}\b",
    r"(?m)^name,card$",
    r"customer,\d+",
    r"(?i)r[ée]sum[ée]",
    r"[^\x00-\x7f]+",
    r"\w+ß\w*",
    r"(?i)straße",
    r"[日本語]+",
    r"\d+(?:\.\d+)?",
    r"(?<=card )\d{4}",
    r"(?<!\d)\d{4}(?!\d)",
    r"\b(?:please|thanks|regards)\b",
    r"(?i)\bquarterly figures?\b",
    r"(?s)begin.*?end",
    r"(\w)\1",  # back-reference: on re alone
    r"<[^>]+>",
    r"&\w+;",
    r"\bORD\d+\b",
    r"(?i)\bfinance@corp\.example\b",
    r"[A-Z]{4}\d{2}",
    r"\s{2,}",
    r"\.\s+[A-Z]",
    r"(?x) \d{3} - \d{3} - \d{4}  # phone, verbose",
    r"\b(?:0\d|1[0-2])/\d\d\b",
    r"[€$£]\s?\d",
    r"(?i)\b(?:confidential|internal|restricted)\b",
    r"\b[A-Fa-f0-9]{32}\b",
    r"(?i)\bpasswor[dt]\b",
    r"(?:ab|cd){2,}",
    r"x*y",  # starts with an optional run
    r"[[:alpha:]]+",  # re reads this as a set of characters plus "]"
    r"(?i)ſ",
    r"\d{3}(?=-)",
    r"^Sub",
    r"\Z",  # matches only the empty string: on re alone, never counted
    r"(?a)\w{12,}",
    r"(?i)[a-zà-ÿ]{15,}",
    r"\b\w{3}\b",
]
PHRASES = [
    f"{adjective} {noun}"
    for adjective in ["confidential", "internal", "quarterly", "second", "remaining", "trade", "card", "social"]
    for noun in ["figures", "proposal", "option", "questions", "vendor", "secret", "number", "security", "report"]
]
PHRASES += ["please find", "let me know", "move forward", "before friday", "looks off", "thanks again", "regards"]
PHRASES += ["C++", "#secret", "straße", "données", "naïve café", "日本語", "Zürich", "résumé et données"]
PHRASES += [f"term{index} alpha" for index in range(200 - len(PHRASES))]


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
def test_backends_agree_on_the_whole_corpus():
    require(hyperscan_available(), "hyperscan is not installed here")
    assert len(REGEXES) == 50 and len(PHRASES) == 200
    entries = [(f"r{index}", "regex", pattern) for index, pattern in enumerate(REGEXES)]
    entries += [(f"p{index}", "phrase", phrase) for index, phrase in enumerate(PHRASES)]
    fast = Matcher.compile(entries, backend="hyperscan")
    slow = Matcher.compile(entries, backend="python")
    assert set(fast.python_only) == {"r26", "r46"}  # the back-reference, the empty-only match
    matched = Counter()
    for text in corpus_texts():
        expected = slow.scan(text)
        assert fast.scan(text) == expected, text[:200]
        matched.update(expected.keys())
    assert len(matched) >= 60  # the comparison is not vacuous
