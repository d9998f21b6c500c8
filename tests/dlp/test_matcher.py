"""The multi-pattern matcher: phrase and regex semantics, backends that agree, errors."""

import random
import re
import threading

import pytest

from engine.relay.dlp import matcher as matcher_module
from engine.relay.dlp.matcher import Matcher, hyperscan_available, phrase_regex
from tests.conftest import require

BACKENDS = ["python", "hyperscan"]


@pytest.fixture
def hyperscan_required() -> None:
    require(hyperscan_available(), "hyperscan is not installed here")


needs_hyperscan = pytest.mark.usefixtures("hyperscan_required")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "hyperscan":
        request.getfixturevalue("hyperscan_required")
    return request.param


def test_phrases_are_case_insensitive_word_bounded_and_space_flexible(backend):
    matcher = Matcher.compile([("p", "phrase", "Project  Falcon")], backend=backend)
    text = "project falcon, PROJECT\n\t FALCON; projectfalcon; project falconry; subproject falcon"
    assert matcher.scan(text) == {"p": [(0, 14), (16, 32)]}


def test_phrases_starting_or_ending_with_punctuation(backend):
    matcher = Matcher.compile([("cpp", "phrase", "C++"), ("tag", "phrase", "#secret")], backend=backend)
    assert matcher.scan("we use C++ daily; #secret, not #secrets") == {"cpp": [(7, 10)], "tag": [(18, 25)]}


def test_phrase_regex_escapes_and_bounds():
    assert phrase_regex("a.b  c") == r"(?i)\ba\.b\s+c\b"
    with pytest.raises(ValueError):
        phrase_regex("   ")


def test_regex_counts_non_overlapping_matches(backend):
    matcher = Matcher.compile([("ssn", "regex", r"\b\d{3}-\d{2}-\d{4}\b"), ("aa", "regex", "aa")], backend=backend)
    assert matcher.scan("123-45-6789 and 1234-45-6789, aaaaa") == {"ssn": [(0, 11)], "aa": [(30, 32), (32, 34)]}


def test_only_matching_ids_are_returned(backend):
    matcher = Matcher.compile([("a", "regex", "alpha"), ("b", "phrase", "beta")], backend=backend)
    assert matcher.scan("nothing here") == {}
    assert matcher.scan("") == {}


def test_backend_choice_and_environment(monkeypatch):
    monkeypatch.setenv("SEALRELAY_DLP_BACKEND", "python")
    assert Matcher.compile([("a", "regex", "a")]).backend == "python"
    monkeypatch.delenv("SEALRELAY_DLP_BACKEND")
    expected = "hyperscan" if hyperscan_available() else "python"
    assert Matcher.compile([("a", "regex", "a")]).backend == expected
    monkeypatch.setenv("SEALRELAY_DLP_BACKEND", "pcre")
    with pytest.raises(ValueError, match="unknown DLP backend 'pcre'"):
        Matcher.compile([("a", "regex", "a")])


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([("a", "regex", "x"), ("a", "phrase", "y")], "duplicate pattern id 'a'"),
        ([("a", "glob", "x")], "pattern 'a': unknown kind 'glob'"),
        ([("bad", "regex", "(unclosed")], "pattern 'bad': invalid regex"),
        ([("blank", "phrase", "  ")], "pattern 'blank': invalid phrase: empty phrase"),
    ],
)
def test_errors_name_the_entry(entries, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Matcher.compile(entries, backend="python")


@needs_hyperscan
def test_untranslatable_or_refused_patterns_fall_back_to_re_alone():
    entries = [
        ("backref", "regex", r"(\w)\1"),  # no regular superset
        ("empty", "regex", r"x*"),  # can match the empty string: hyperscan refuses it
        ("plain", "regex", r"plain"),
    ]
    fast = Matcher.compile(entries, backend="hyperscan")
    assert fast.python_only == ("backref", "empty")
    text = "aa plain xx"
    assert (
        fast.scan(text)
        == Matcher.compile(entries, backend="python").scan(text)
        == {
            "backref": [(0, 2), (9, 11)],
            "empty": [(9, 11)],
            "plain": [(3, 8)],
        }
    )


UNICODE_ENTRIES = [
    ("fold-s", "phrase", "status"),  # "ſtatus" matches under re's case folding
    ("fold-k", "phrase", "kelvin"),  # so does the Kelvin sign
    ("dotless", "phrase", "istanbul"),
    ("sharp", "phrase", "straße"),
    ("word", "regex", r"\b\w+ion\b"),
    ("digits", "regex", r"\d{3}"),  # Arabic-Indic digits are \d for re
    ("space", "regex", r"a\sb"),  # \x1c and \u2028 are \s for re
    ("ascii", "regex", r"(?a)\bcaf\w*"),
    ("after-word", "regex", r"(?<=\w)é"),
    ("anchored", "regex", r"(?m)^total: \d+$"),
    ("lazy", "regex", r"<.+?>"),
    ("atomic", "regex", r"(?>ab|a)c"),
    ("possessive", "regex", r"x++y"),
    ("dot-all", "regex", r"(?s)begin.{0,20}end"),
    ("negated", "regex", r"[^\W\d_]{4}\d"),
]
UNICODE_TEXT = (
    "ſtatus STATUS ſtatuſ \u212aelvin İstanbul ıstanbul STRASSE STRAẞE straße nation Nation élection\n"
    "٣٤٥ 123 ۱۲۳ a\x1cb a\u2028b a b café caféine xé é\ntotal: 12\ntotal: x\n<a><b> ac abc xxxy "
    "begin\n\nend wordé\x00 "
)


@needs_hyperscan
def test_backends_agree_on_unicode_edge_cases():
    fast = Matcher.compile(UNICODE_ENTRIES, backend="hyperscan")
    slow = Matcher.compile(UNICODE_ENTRIES, backend="python")
    assert fast.python_only == ()
    assert fast.scan(UNICODE_TEXT) == slow.scan(UNICODE_TEXT)
    assert slow.scan(UNICODE_TEXT)["fold-s"] == [(0, 6), (7, 13), (14, 20)]


@needs_hyperscan
def test_backends_agree_on_seeded_random_texts():
    """Realistic DLP patterns over texts built to look like mail, numbers and markup."""
    rng = random.Random(11)
    entries = [
        ("ssn", "regex", r"\b\d{3}-\d{2}-\d{4}\b"),
        ("card", "regex", r"\b(?:\d[ -]?){13,16}\b"),
        ("email", "regex", r"[\w.+-]+@[\w-]+\.[\w.]+"),
        ("amount", "regex", r"\$\d{1,3}(?:,\d{3})*(?:\.\d\d)?"),
        ("decimal", "regex", r"\d+\.\d+"),
        ("ip", "regex", r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
        ("password", "regex", r"(?i)passw(?:or)?d\s*[:=]\s*\S+"),
        ("near", "regex", r"(?i)\bconfidential\b.{0,40}\bproject\b"),
        ("falcon", "phrase", "project falcon"),
        ("secret", "phrase", "trade secret"),
        ("naive", "phrase", "naïve"),
    ]
    fast = Matcher.compile(entries, backend="hyperscan")
    slow = Matcher.compile(entries, backend="python")
    words = (
        "project falcon confidential trade secret naïve NAÏVE password: x 1.5 $1,200.50 10.0.0.1 a@b.example".split()
    )
    words += ["4111 1111 1111 1111", "078-05-1120", "日本", "ſecret", "\u00a0", "\n", "<b>", "</b>"]
    for _ in range(300):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(0, 120)))
        assert fast.scan(text) == slow.scan(text), text


@needs_hyperscan
def test_scanning_from_many_threads_at_once():
    entries = [("ssn", "regex", r"\b\d{3}-\d{2}-\d{4}\b"), ("p", "phrase", "trade secret")]
    fast = Matcher.compile(entries, backend="hyperscan")
    text = "trade secret 123-45-6789 " * 200
    expected = fast.scan(text)
    failures = []

    def work():
        for _ in range(50):
            if fast.scan(text) != expected:
                failures.append("mismatch")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(expected["ssn"]) == 200


@needs_hyperscan
@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,  # only the engine's wrong answer; a missing hyperscan under CI must fail
    reason="Vectorscan 5.4.12 (hyperscan wheel 0.9.1) misses '[0-9]\\.+' matches past the first vector "
    "on this CPU (double-shufti bug, fixed upstream in VectorCamp/vectorscan#368); the matcher is exact "
    "only as far as the engine is",
)
def test_known_engine_false_negative():
    database = matcher_module._database({0: r"[0-9]\.+"})
    ends = []
    database.scan(b"x" * 40 + b"8. tail", match_event_handler=lambda *report: ends.append(report[2]))
    assert ends == [42]


@needs_hyperscan
def test_quiet_over_several_texts_is_quiet_over_each() -> None:
    """`quiet(*texts)` scans the texts as one, joined by line breaks. Every entry's
    translation drops its anchors and other assertions, so a candidate that one text holds
    the joined text holds too: quiet over all of them means quiet over each (the property),
    and a candidate in any of them, first or last, anchored or not, is seen (the cases)."""
    entries = [
        ("start", "regex", r"^ACC[0-9]{4}"),
        ("whole", "regex", r"\AZZ\Z"),
        ("word", "regex", r"\bPRJ\b"),
        ("phrase", "phrase", "top secret"),
    ]
    fast = Matcher.compile(entries, backend="hyperscan")
    rng = random.Random(7)
    pieces = ["ACC1234", "ZZ", "PRJ", "xPRJx", "top", "secret", "top secret", " ", "\n", "plain", ""]
    for _ in range(400):
        texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(1, 3))]
        if fast.quiet(*texts):
            assert all(fast.quiet(text) and not fast.scan(text) for text in texts), texts
        # an ASCII text given as its bytes (a view of them, or the bytes) is read as the text
        as_sent = [memoryview(text.encode()) if n % 2 else text.encode() for n, text in enumerate(texts)]
        assert fast.quiet(*as_sent) is fast.quiet(*texts), texts
    for texts in (["plain", "ACC1234"], ["ACC1234", "plain"], ["plain", "", "ZZ"], ["top secret", "x"]):
        assert not fast.quiet(*texts), texts
        assert not fast.quiet(*(memoryview(text.encode()) for text in texts)), texts
    assert fast.quiet("plain", "", "words") and fast.quiet() and fast.quiet("", "")
    assert not fast.quiet("top", "secret")  # a candidate across the join: the long way, never a miss
    assert not Matcher.compile(entries, backend="python").quiet("plain")  # python only: never quiet
