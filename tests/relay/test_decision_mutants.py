"""The intake decision's record (engine/relay/decision.py) pinned exactly: what the queue
keeps, what it reads back, what it refuses, and how entries without a record are read, so
no flagged mail loses its flag across a restart. Written against the surviving mutants of
scripts/mutate (docs/mutation-results.md)."""

from __future__ import annotations

import re

import pytest

from engine.relay.decision import Decision, DecisionError, of_meta

FULL = Decision(
    "outbound", "encrypt", "secure_portal", ("cards", "ids"), False, None, "encrypt", ("a: odd charset",), ("b: zip",)
)
RECORD = {
    "format": 1,
    "direction": "outbound",
    "action": "encrypt",
    "method": "secure_portal",
    "policies": ["cards", "ids"],
    "already_encrypted": False,
    "would": "encrypt",
    "problems": ["a: odd charset"],
    "unscanned": ["b: zip"],
}


def test_the_record_and_back() -> None:
    assert FULL.to_record() == RECORD
    assert Decision.from_record(RECORD) == FULL
    assert of_meta({"decision": RECORD, "encrypt": False}) == FULL  # the record wins over flat keys


def test_a_minimal_record_takes_the_defaults() -> None:
    minimal = {"format": 1, "direction": "inbound", "action": "quarantine"}
    assert Decision.from_record(minimal) == Decision("inbound", "quarantine", "none", (), False, None, "quarantine")
    values = {
        **minimal,
        "policies": [1],
        "method": 2,
        "would": 3,
        "already_encrypted": 1,
        "problems": [4],
        "unscanned": [5],
    }
    assert Decision.from_record(values) == Decision(
        "inbound", "quarantine", "2", ("1",), True, None, "3", ("4",), ("5",)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (["not", "a", "dict"], "the stored decision is not an object"),
        ({"direction": "inbound", "action": "permit"}, "stored decision format None, this relay reads 1"),
        ({**RECORD, "format": 2}, "stored decision format 2, this relay reads 1"),
        ({**RECORD, "action": "drop"}, "stored decision has action 'drop', direction 'outbound'"),
        ({**RECORD, "direction": "sideways"}, "stored decision has action 'encrypt', direction 'sideways'"),
    ],
)
def test_a_record_that_cannot_be_read(data: object, message: str) -> None:
    with pytest.raises(DecisionError, match=f"^{re.escape(message)}$"):
        Decision.from_record(data)
    assert issubclass(DecisionError, ValueError)


@pytest.mark.parametrize(
    ("meta", "expected"),
    [
        ({}, Decision("inbound")),
        ({"encrypt": True}, Decision("inbound", "encrypt")),
        ({"encrypt": True, "action": "permit"}, Decision("inbound", "encrypt")),  # the flag is never lost
        ({"action": "quarantine", "direction": "outbound"}, Decision("outbound", "quarantine")),
        ({"direction": "sideways"}, Decision("inbound")),
        (
            {"direction": "internal", "method": "tls", "policies": ["p"], "already_encrypted": 1, "encrypt": 1},
            Decision("internal", "encrypt", "tls", ("p",), True),
        ),
    ],
)
def test_entries_without_a_record(meta: dict, expected: Decision) -> None:
    assert of_meta(meta) == expected


@pytest.mark.parametrize(
    ("decision", "encrypt", "needs_protection"),
    [
        (Decision("outbound", "encrypt"), True, True),
        (Decision("outbound", "encrypt", already_encrypted=True), True, False),
        (Decision("outbound", "permit"), False, False),
        (Decision("outbound", "quarantine"), False, False),
    ],
)
def test_what_delivery_must_protect(decision: Decision, encrypt: bool, needs_protection: bool) -> None:
    assert (decision.encrypt, decision.needs_protection) == (encrypt, needs_protection)
