"""Built-in DLP classifiers: find sensitive values in text, prove them, and grade them.

A classifier is a function ``find(text) -> list[Match]``; matches are returned in text order
and never overlap. Each match carries a ``confidence`` (``low``, ``medium``, ``high``), in
the manner of Microsoft Purview's sensitive information types: the value's format sets a
base level (``low`` or ``medium``), and a supporting keyword within ``KEYWORD_WINDOW``
characters before or after it raises that by one level (a card's expiry date counts as a
keyword). A rule's classifier condition counts only matches at or above its
``min_confidence`` (default ``medium``). The built-ins are registered in ``CLASSIFIERS``:

- ``credit_card``: 13–19 digits, compact or in groups split by one space or one dash, that
  pass Luhn and carry an issuer prefix (IIN range) with a length that issuer uses. Never
  digits glued to a longer run of digits or letters, nor inside an IBAN-shaped token.
  ``medium`` when the number stands alone, compact or in its issuer's printed grouping;
  ``low`` when it is cut out of a longer run of groups or grouped otherwise.
- ``us_ssn``: ``AAA-GG-SSSS``, ``AAA GG SSSS`` or nine bare digits, standing alone, outside
  what the SSA never issues (python-stdnum: area 000, 666, 900–999; group 00; serial 0000;
  the numbers published in advertising). ``medium`` when dashed; ``low`` bare or spaced.
- ``iban``: country code, two check digits and the BBAN, compact or in groups of four split
  by single spaces, exactly as long as that country's IBAN, with the BBAN's structure and
  ISO 7064 mod-97 checked by python-stdnum. ``medium``.
- ``email_address``: a pragmatic ``local@domain.tld`` address; ``medium``, ``low`` when the
  top-level domain is a file extension (``logo@2x.png``).

Custom classifiers come from a regex plus a checksum name (``none``, ``luhn``, ``mod97``)
through ``make_classifier``; they have no keywords, so their matches are ``high`` (any
``min_confidence`` counts them). Do not mutate ``CLASSIFIERS``; build a registry per
config::

    registry = {**CLASSIFIERS, "employee_id": make_classifier("employee_id", r"\\bE\\d{7}\\b", "luhn")}
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from stdnum import iban as stdnum_iban
from stdnum.us import ssn as stdnum_ssn

Confidence = Literal["low", "medium", "high"]
CONFIDENCE_LEVELS: tuple[Confidence, ...] = ("low", "medium", "high")
RANK = {level: rank for rank, level in enumerate(CONFIDENCE_LEVELS)}


@dataclass(frozen=True)
class Match:
    """One classifier hit: ``text[start:end] == value``, graded ``confidence``."""

    start: int
    end: int
    value: str
    confidence: Confidence = "medium"


def at_least(confidence: str, minimum: str) -> bool:
    """True when ``confidence`` is ``minimum`` or above (low < medium < high)."""
    return RANK[confidence] >= RANK[minimum]


# --- supporting evidence ----------------------------------------------------------------

# How far (characters, either side of the match) a supporting keyword may be. One line of
# mail is 60–80 characters: a label on the same line or the one before or after counts; a
# keyword a paragraph away (about another value, often) does not.
KEYWORD_WINDOW = 80


def _keywords(*words: str) -> re.Pattern[str]:
    return re.compile(r"(?i)(?<!\w)(?:" + "|".join(words) + r")(?!\w)")


KEYWORDS: dict[str, re.Pattern[str]] = {
    "credit_card": _keywords(
        r"(?:credit|debit|payment|bank)?\s?cards?", r"card\s?(?:number|no|#)", r"cc(?:num|n)?", "visa",
        r"master\s?card", "amex", r"american\s+express", "discover", "jcb", r"diners(?:\s+club)?",
        r"card\s?holder", "expiry", "expiration", "exp", r"valid\s+(?:thru|through)",
        r"cvv2?", r"cvc2?", r"security\s+code", "kreditkarte", r"carte\s+bancaire", "tarjeta",
    ),
    "us_ssn": _keywords(
        "ssns?", r"ssn\s?#", r"ss\s?#", "ss no", r"social\s+security(?:\s+(?:number|no|#))?", "soc sec",
        r"taxpayer\s+id(?:entification)?(?:\s+number)?",
    ),
    "iban": _keywords(
        "iban", "bic", "swift", r"(?:bank\s+)?account", "bank", "wire", "transfer", "sepa", "payee",
        "beneficiary", "remit", "kontonummer", "bankverbindung", "rib", r"n[°o]\s+de\s+compte",
    ),
    "email_address": _keywords(
        r"e-?mails?", "mail", "mailto", "contact", "reply", "sender", "recipient",
        r"(?:from|to|cc|bcc|reply-to)\s?:",
    ),
}  # fmt: skip
_EXPIRY = re.compile(r"(?<!\d)(?:0[1-9]|1[0-2])\s?/\s?(?:\d\d|20\d\d)(?![\d/])")


def supported(name: str, text: str, start: int, end: int) -> bool:
    """True when a keyword of classifier ``name`` is within KEYWORD_WINDOW of the span."""
    pattern = KEYWORDS[name]
    left = text[max(0, start - KEYWORD_WINDOW) : start]
    right = text[end : end + KEYWORD_WINDOW]
    return pattern.search(left) is not None or pattern.search(right) is not None or _expiry_after(name, right)


def labelled(name: str, text: str, start: int, end: int) -> bool:
    """True when a keyword of ``name`` labels the span: it comes before, within
    KEYWORD_WINDOW, with no digit between them ("SSN: 123456789", not "SSN 123-45-6789,
    routing 021000021"); for a card, an expiry date right after it counts too."""
    left = text[max(0, start - KEYWORD_WINDOW) : start]
    last = None
    for last in KEYWORDS[name].finditer(left):  # noqa: B007 - the last keyword is the label
        pass
    if last is not None and not any(char.isdigit() for char in left[last.end() :]):
        return True
    return _expiry_after(name, text[end : end + 30])


def _expiry_after(name: str, right: str) -> bool:
    return name == "credit_card" and _EXPIRY.search(right[:30]) is not None


def graded(name: str, text: str, start: int, end: int, base: Confidence) -> Match:
    """A match at its format's ``base`` level, one level higher with supporting evidence:
    a keyword nearby for a ``medium`` match, a keyword labelling it for a ``low`` one."""
    if (labelled if base == "low" else supported)(name, text, start, end):
        base = CONFIDENCE_LEVELS[min(RANK[base] + 1, 2)]
    return Match(start, end, text[start:end], base)


Classifier = Callable[[str], list[Match]]


# --- checksums -------------------------------------------------------------------------


def luhn_valid(digits: str) -> bool:
    """True when a non-empty string of ASCII digits passes the Luhn (mod 10) check."""
    if not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def ean13_valid(digits: str) -> bool:
    """True when 13 ASCII digits carry a valid EAN-13 (GTIN) check digit (weights 1, 3)."""
    total = sum((3 if position % 2 else 1) * (ord(char) - 48) for position, char in enumerate(digits[:12]))
    return len(digits) == 13 and digits.isdigit() and (10 - total % 10) % 10 == ord(digits[12]) - 48


def mod97_valid(code: str) -> bool:
    """True when an IBAN-shaped code passes ISO 7064 mod 97-10 (ISO 13616).

    The first four characters move to the end, letters become 10..35, and the resulting
    number modulo 97 must be 1. Spaces are ignored; any other non-alphanumeric fails.
    """
    compact = code.replace(" ", "").upper()
    if len(compact) < 5 or not compact.isascii() or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


# --- credit cards ----------------------------------------------------------------------

# (first digits range, allowed lengths): the issuer identification number (IIN) ranges of
# the networks' published tables. A number matches when one of its prefixes falls in a
# range and its length is one that issuer uses. Not listed: Maestro (50, 56–69, 12–19
# digits: its ranges and lengths overlap too many account numbers), UnionPay (62), Mir.
_ISSUERS: tuple[tuple[int, int, frozenset[int]], ...] = (
    (4, 4, frozenset({13, 16, 19})),  # Visa
    (51, 55, frozenset({16})),  # Mastercard
    (2221, 2720, frozenset({16})),  # Mastercard 2-series
    (34, 34, frozenset({15})),  # American Express
    (37, 37, frozenset({15})),  # American Express
    (6011, 6011, frozenset(range(16, 20))),  # Discover
    (65, 65, frozenset(range(16, 20))),  # Discover
    (644, 649, frozenset(range(16, 20))),  # Discover
    (3528, 3589, frozenset(range(16, 20))),  # JCB
    (300, 305, frozenset(range(14, 20))),  # Diners Club
    (36, 36, frozenset(range(14, 20))),  # Diners Club
    (38, 38, frozenset(range(14, 20))),  # Diners Club
)

# A maximal run of digit groups joined by single spaces or dashes; atomic so the run is
# never cut short by backtracking.
# A maximal run of digit groups (single spaces or hyphens between them) long enough to
# hold a card (13 digits or more: 13 characters at least): the regex engine skips the
# short runs (prices, dates, order numbers) without a Python step for each.
_DIGIT_RUN = re.compile(r"(?<!\d)(?<!\d[ -])(?=[\d -]{13})(?>\d+(?:[ -]\d+)*)", re.ASCII)
_WORD_CHAR = re.compile(r"\w")
# An IBAN-shaped token (country code, check digits, groups): the digits inside one are
# never a card, whatever their checksum says.
_IBAN_SHAPE = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,8}(?:[ -]?[A-Z0-9]{1,4})?", re.ASCII)
# How issuers print their numbers: 4-4-4-4(-3), Amex 4-6-5, Diners 4-6-4; Visa 13 4-4-5.
_PRINTED = frozenset({(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4), (4, 4, 5), (4, 4, 4, 1)})


class _Spans:
    """Sorted, non-overlapping spans; ``overlaps`` in O(log n)."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self._starts = [start for start, _ in spans]
        self._ends = [end for _, end in spans]

    def overlaps(self, start: int, end: int) -> bool:
        index = bisect.bisect_right(self._starts, end - 1) - 1  # the last span starting before end
        return index >= 0 and self._ends[index] > start


def _iban_spans(text: str) -> _Spans:
    """Where IBAN-shaped tokens are: the country's own length where it has one, else any
    run of groups after a country code and check digits."""
    spans = []
    position = 0
    while (start := _IBAN_START.search(text, position)) is not None:
        shapes = _IBAN_SHAPES.get(start.group(1), ())
        hit = next(filter(None, (shape.match(text, start.start()) for shape in shapes)), None)
        hit = hit or _IBAN_SHAPE.match(text, start.start())
        end = hit.end() if hit else start.end()
        spans.append((start.start(), end))
        position = end
    return _Spans(spans)


def issuer_known(digits: str) -> bool:
    """True when the digit string starts with a listed issuer prefix and has its length."""
    for low, high, lengths in _ISSUERS:
        width = len(str(low))
        if low <= int(digits[:width]) <= high and len(digits) in lengths:
            return True
    return False


def _card_layout_ok(groups: list[str], separators: list[str]) -> bool:
    """Grouped numbers look like printed cards: a first group of four, one separator kind."""
    if len(groups) == 1:
        return True
    if len(set(separators)) != 1 or len(groups[0]) != 4:
        return False
    middle_ok = all(3 <= len(group) <= 6 for group in groups[1:-1])
    return middle_ok and 1 <= len(groups[-1]) <= 6


def credit_card(text: str) -> list[Match]:
    """Find payment card numbers (Luhn-valid, known issuer prefix and length), graded."""
    found: list[Match] = []
    ibans = _iban_spans(text)
    for run in _DIGIT_RUN.finditer(text):
        if ibans.overlaps(run.start(), run.end()):
            continue
        pieces = re.split(r"([ -])", run.group())
        groups, separators = pieces[0::2], pieces[1::2]
        offsets = [run.start()]
        for group, separator in zip(groups[:-1], separators, strict=True):
            offsets.append(offsets[-1] + len(group) + len(separator))
        # A group glued to letters belongs to a longer token (an order id, "x4111...").
        first, last = 0, len(groups)
        if run.start() > 0 and _WORD_CHAR.match(text[run.start() - 1]):
            first = 1
        if run.end() < len(text) and _WORD_CHAR.match(text[run.end()]):
            last -= 1
        index = first
        while index < last:
            hit = _card_at(text, groups, separators, offsets, index, last)
            if hit is None:
                index += 1
                continue
            found.append(hit[0])
            index = hit[1]
    return found


def _card_at(text, groups, separators, offsets, first, last):
    """The longest valid card starting at group ``first``, with the index after it."""
    # At most 19 digits, so at most 19 groups: bounds the work on long runs of groups.
    for stop in range(min(last, first + 19), first, -1):
        digits = "".join(groups[first:stop])
        if not 13 <= len(digits) <= 19:
            continue
        if not _card_layout_ok(groups[first:stop], separators[first : stop - 1]):
            continue
        if luhn_valid(digits) and issuer_known(digits):
            start = offsets[first]
            end = offsets[stop - 1] + len(groups[stop - 1])
            return graded("credit_card", text, start, end, _card_base(groups, first, stop)), stop
    return None


def _card_base(groups: list[str], first: int, stop: int) -> Confidence:
    """medium: the number stands alone, compact or in its issuer's printed grouping; low:
    cut out of a longer run of groups (unless its neighbours are whole numbers themselves,
    a list of cards) or grouped otherwise."""
    mine = groups[first:stop]
    if len(mine) > 1 and tuple(len(group) for group in mine) not in _PRINTED:
        return "low"
    if len(mine) == 1 and len(mine[0]) == 13 and ean13_valid(mine[0]):
        return "low"  # a barcode as much as a (long-retired) 13-digit Visa
    before = groups[first - 1] if first > 0 else None
    after = groups[stop] if stop < len(groups) else None
    if any(neighbour is not None and len(neighbour) < 13 for neighbour in (before, after)):
        return "low"
    return "medium"


# --- US social security numbers --------------------------------------------------------

_SSN = re.compile(
    r"(?<![\w-])(?:(\d{3})-(\d{2})-(\d{4})|(\d{3}) (\d{2}) (\d{4})|(\d{3})(\d{2})(\d{4}))(?![\w-])",
    re.ASCII,
)


def ssn_issuable(area: str, group: str, serial: str) -> bool:
    """True unless the parts fall in a range the SSA never assigns or were published in
    advertising (python-stdnum's rules: area 000, 666, 900–999; group 00; serial 0000;
    078-05-1120, 219-09-9999, 457-55-5462)."""
    return stdnum_ssn.is_valid(f"{area}-{group}-{serial}")


def us_ssn(text: str) -> list[Match]:
    """Find US social security numbers, dashed (medium), spaced or bare (low), graded."""
    found = []
    for match in _SSN.finditer(text):
        parts = match.groups()
        kind = 0 if parts[0] else 1 if parts[3] else 2
        area, group, serial = parts[3 * kind : 3 * kind + 3]
        if kind and _digits_in_number(text, match):
            continue
        if not ssn_issuable(area, group, serial):
            continue
        found.append(graded("us_ssn", text, match.start(), match.end(), "medium" if kind == 0 else "low"))
    return found


def _digits_in_number(text: str, match: re.Match[str]) -> bool:
    """Nine bare or spaced digits that are part of a decimal, a phone number or a longer
    spaced run are not an SSN."""
    before = text[match.start() - 1] if match.start() else ""
    after = text[match.end() : match.end() + 2]
    if before in {"+", ".", "/", ",", "#"} or (len(after) == 2 and after[0] in "./," and after[1].isdigit()):
        return True
    # "12 345 678 901": the nine digits are part of a longer run of spaced groups
    return (before == " " and text[match.start() - 2 : match.start() - 1].isdigit()) or (
        after[:1] == " " and after[1:2].isdigit()
    )


# --- IBAN ------------------------------------------------------------------------------

# Total IBAN length per country (SWIFT IBAN registry; tests check it against python-stdnum's).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Z]{2})\d{2}(?= ?[A-Z0-9])")


def _iban_shapes(length: int) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Compact and grouped-by-four regexes for an IBAN of ``length`` characters."""
    body = length - 4
    compact = re.compile(rf"[A-Z]{{2}}\d{{2}}[A-Z0-9]{{{body}}}(?![A-Za-z0-9])")
    grouped = rf"[A-Z]{{2}}\d{{2}}(?: [A-Z0-9]{{4}}){{{body // 4}}}"
    if body % 4:
        grouped += rf" [A-Z0-9]{{{body % 4}}}"
    return compact, re.compile(grouped + r"(?![A-Za-z0-9])")


_IBAN_SHAPES = {country: _iban_shapes(length) for country, length in IBAN_LENGTHS.items()}


def iban_valid(code: str) -> bool:
    """Check digits 02–98, the country's BBAN structure and mod-97 (python-stdnum)."""
    compact = code.replace(" ", "")
    return 2 <= int(compact[2:4]) <= 98 and stdnum_iban.is_valid(compact, check_country=False)


def iban(text: str) -> list[Match]:
    """Find IBANs of a known country, with its length, BBAN structure and mod-97, graded."""
    found: list[Match] = []
    position = 0
    while (start := _IBAN_START.search(text, position)) is not None:
        shapes = _IBAN_SHAPES.get(start.group(1), ())
        hit = next(filter(None, (shape.match(text, start.start()) for shape in shapes)), None)
        if hit is not None and iban_valid(hit.group()):
            found.append(graded("iban", text, hit.start(), hit.end(), "medium"))
            position = hit.end()
        else:
            position = start.start() + 1
    return found


# --- email addresses -------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9._%+-]+)@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,63}))(?![\w-]|\.\w)",
    re.ASCII,
)
# Top-level "domains" that are file extensions: `logo@2x.png`, `icon@3x.jpg` are image names.
_FILE_TLDS = frozenset(
    "png jpg jpeg gif svg webp bmp ico tif tiff css js ts map json xml yml yaml txt log csv pdf doc docx "
    "xls xlsx ppt pptx htm html php asp aspx exe dll bin dat tmp bak".split()
)


def email_address(text: str) -> list[Match]:
    """Find email addresses (dot-atom local part, dotted domain with an alphabetic TLD)."""
    found = []
    for match in _EMAIL.finditer(text):
        local = match.group(1)
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        scp = text[match.end() : match.end() + 2]  # git@github.com:org/repo.git is a remote
        weak = match.group(3).lower() in _FILE_TLDS or (scp[:1] == ":" and scp[1:2] not in ("", " ", "\n"))
        base: Confidence = "low" if weak else "medium"
        found.append(graded("email_address", text, match.start(), match.end(), base))
    return found


# --- registry and custom classifiers ---------------------------------------------------

CHECKSUMS: dict[str, Callable[[str], bool]] = {
    "none": lambda value: True,
    "luhn": lambda value: luhn_valid("".join(c for c in value if "0" <= c <= "9")),
    "mod97": mod97_valid,
}


@dataclass(frozen=True)
class PatternClassifier:
    """A classifier made from a regex and a checksum; call it like a built-in."""

    name: str
    pattern: re.Pattern[str]
    checksum: str

    def __call__(self, text: str) -> list[Match]:
        valid = CHECKSUMS[self.checksum]
        return [
            Match(m.start(), m.end(), m.group(), "high")
            for m in self.pattern.finditer(text)
            if m.end() > m.start() and valid(m.group())
        ]


def make_classifier(name: str, pattern: str, checksum: str = "none") -> Classifier:
    """Build a custom classifier from a Python regex and a checksum name.

    ``checksum`` is ``none`` (every match counts), ``luhn`` (the match's digits must pass
    Luhn) or ``mod97`` (the match, spaces ignored, must pass the IBAN mod-97 rule). Raises
    ``ValueError`` naming the problem for an unknown checksum or an invalid regex.
    """
    if checksum not in CHECKSUMS:
        raise ValueError(
            f"classifier {name!r}: unknown checksum {checksum!r}; use one of " + ", ".join(sorted(CHECKSUMS))
        )
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise ValueError(f"classifier {name!r}: invalid regex: {error}") from error
    return PatternClassifier(name, compiled, checksum)


CLASSIFIERS: dict[str, Classifier] = {
    "credit_card": credit_card,
    "us_ssn": us_ssn,
    "iban": iban,
    "email_address": email_address,
}

# What every match of a built-in must contain, as a pattern the hyperscan matcher runs in
# the same scan as the rules' patterns and phrases: where it finds none in a scope, the
# classifier's Python is not run there (most mail has no 13-digit run, no 9 digits in SSN
# form, no IBAN start, no "@"). A necessary condition, so skipping loses nothing; the
# patterns read ASCII digits, so text with other characters is always classified.
CANDIDATES: dict[str, str] = {
    "credit_card": r"[0-9](?:[ -]?[0-9]){12}",  # 13 digits, single separators: _DIGIT_RUN's least
    "us_ssn": r"[0-9]{3}[ -]?[0-9]{2}[ -]?[0-9]{4}",  # _SSN's three forms
    "iban": r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]",  # _IBAN_START
    "email_address": r"[A-Za-z0-9._%+-]@[A-Za-z0-9]",  # _EMAIL: a local part, @, a domain's first character
}
