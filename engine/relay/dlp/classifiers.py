"""Built-in DLP classifiers: find sensitive values in text and prove them with a checksum.

A classifier is a function ``find(text) -> list[Match]``; matches are returned in text order
and never overlap. The built-ins are registered in ``CLASSIFIERS`` by name:

- ``credit_card``: 13–19 digits, optionally in groups split by one space or one dash, that
  pass Luhn and carry a known issuer prefix with a length that issuer uses. Digits glued to
  a longer run of digits or letters are never a card.
- ``us_ssn``: ``AAA-GG-SSSS`` or nine bare digits, standing alone (no digit, letter or dash
  touching either side), outside the ranges the SSA never issues (area 000, 666, 900–999;
  group 00; serial 0000).
- ``iban``: country code, two check digits and the BBAN, compact or in groups of four split
  by single spaces, exactly as long as that country's IBAN, with ISO 7064 mod-97 == 1.
- ``email_address``: a pragmatic ``local@domain.tld`` address.

Custom classifiers come from a regex plus a checksum name (``none``, ``luhn``, ``mod97``)
through ``make_classifier``. Do not mutate ``CLASSIFIERS``; build a registry per config::

    registry = {**CLASSIFIERS, "employee_id": make_classifier("employee_id", r"\\bE\\d{7}\\b", "luhn")}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Match:
    """One classifier hit: ``text[start:end] == value``."""

    start: int
    end: int
    value: str


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

# (first digits range, allowed lengths); a number matches when one of its prefixes falls in
# a range and its length is one that issuer uses.
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
_DIGIT_RUN = re.compile(r"(?>\d+(?:[ -]\d+)*)", re.ASCII)
_WORD_CHAR = re.compile(r"\w")


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
    """Find payment card numbers (Luhn-valid, known issuer prefix and length)."""
    found: list[Match] = []
    for run in _DIGIT_RUN.finditer(text):
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
            return Match(start, end, text[start:end]), stop
    return None


# --- US social security numbers --------------------------------------------------------

_SSN = re.compile(
    r"(?<![\w-])(?:(\d{3})-(\d{2})-(\d{4})|(\d{3})(\d{2})(\d{4}))(?![\w-])",
    re.ASCII,
)


def ssn_issuable(area: str, group: str, serial: str) -> bool:
    """True unless the parts fall in a range the SSA never assigns."""
    area_number = int(area)
    return area_number != 0 and area_number != 666 and area_number < 900 and group != "00" and serial != "0000"


def us_ssn(text: str) -> list[Match]:
    """Find US social security numbers, dashed or as nine standalone digits."""
    found = []
    for match in _SSN.finditer(text):
        parts = match.groups()
        area, group, serial = parts[0:3] if parts[0] else parts[3:6]
        if _bare_digits_in_number(text, match) or not ssn_issuable(area, group, serial):
            continue
        found.append(Match(match.start(), match.end(), match.group()))
    return found


def _bare_digits_in_number(text: str, match: re.Match[str]) -> bool:
    """Nine bare digits that are part of a decimal or a phone number are not an SSN."""
    if match.group(1):
        return False
    before = text[match.start() - 1] if match.start() else ""
    after = text[match.end() : match.end() + 2]
    return before in {"+", ".", "/"} or (len(after) == 2 and after[0] in "./" and after[1].isdigit())


# --- IBAN ------------------------------------------------------------------------------

# Total IBAN length per country (SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27,
    "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20, "MR": 27,
    "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28,
    "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
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


def iban(text: str) -> list[Match]:
    """Find IBANs of a known country, with the right length and a valid mod-97 check."""
    found: list[Match] = []
    position = 0
    while (start := _IBAN_START.search(text, position)) is not None:
        shapes = _IBAN_SHAPES.get(start.group(1), ())
        hit = next(filter(None, (shape.match(text, start.start()) for shape in shapes)), None)
        if hit is not None and 2 <= int(hit.group()[2:4]) <= 98 and mod97_valid(hit.group()):
            found.append(Match(hit.start(), hit.end(), hit.group()))
            position = hit.end()
        else:
            position = start.start() + 1
    return found


# --- email addresses -------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])([A-Za-z0-9._%+-]+)@"
    r"((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})(?![\w-]|\.\w)",
    re.ASCII,
)


def email_address(text: str) -> list[Match]:
    """Find email addresses (dot-atom local part, dotted domain with an alphabetic TLD)."""
    found = []
    for match in _EMAIL.finditer(text):
        local = match.group(1)
        if local.startswith(".") or local.endswith(".") or ".." in local:
            continue
        found.append(Match(match.start(), match.end(), match.group()))
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
            Match(m.start(), m.end(), m.group())
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
