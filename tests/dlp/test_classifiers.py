"""Built-in classifiers: what they find, what they refuse, and custom classifiers."""

import pytest

from engine.relay.dlp.classifiers import (
    CLASSIFIERS,
    Match,
    credit_card,
    email_address,
    iban,
    luhn_valid,
    make_classifier,
    mod97_valid,
    us_ssn,
)


def values(found: list[Match]) -> list[str]:
    return [match.value for match in found]


def test_registry_names_the_four_builtins():
    assert sorted(CLASSIFIERS) == ["credit_card", "email_address", "iban", "us_ssn"]


def test_matches_carry_their_span():
    text = "pay 4111 1111 1111 1111 now"
    [match] = credit_card(text)
    assert text[match.start : match.end] == match.value == "4111 1111 1111 1111"


@pytest.mark.parametrize(
    "number",
    [
        "4111111111111111",  # Visa 16
        "4222222222222",  # Visa 13
        "5500000000000004",  # Mastercard 55
        "2223003122003222",  # Mastercard 2-series
        "378282246310005",  # Amex 37
        "371449635398431",  # Amex 37
        "6011111111111117",  # Discover 6011
        "3530111333300000",  # JCB
        "30569309025904",  # Diners 305
        "38520000023237",  # Diners 38
    ],
)
def test_credit_card_finds_each_issuer(number):
    assert values(credit_card(f"card {number}.")) == [number]


@pytest.mark.parametrize(
    "printed",
    ["4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005", "3056 930902 5904"],
)
def test_credit_card_accepts_printed_groups(printed):
    assert values(credit_card(f"on file: {printed}, thanks")) == [printed]


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "4111 1111 1111 1112",  # Luhn fails, grouped
        "9111111111111119",  # Luhn passes, no issuer starts with 9
        "1234567812345670",  # Luhn passes, no issuer starts with 1
        "99411111111111111112",  # a card inside a longer digit run
        "ORD4111111111111111",  # glued to letters
        "4111111111111111X",
        "4111-1111 1111-1111",  # mixed separators
        "+1 (555) 123-4567",
        "555-123-4567 555-987-6543",  # two phone numbers side by side
        "4111 1111 1111",  # twelve digits
    ],
)
def test_credit_card_refuses_near_misses(text):
    assert credit_card(text) == []


def test_credit_card_cuts_a_card_out_of_a_run_of_groups():
    # expiry after the number, and two cards in a row
    assert values(credit_card("4111 1111 1111 1111 12/25")) == ["4111 1111 1111 1111"]
    assert values(credit_card("4111111111111111 5500000000000004")) == ["4111111111111111", "5500000000000004"]


def test_luhn_and_mod97_helpers():
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")
    assert not luhn_valid("") and not luhn_valid("12a4")
    assert mod97_valid("GB82 WEST 1234 5698 7654 32") and not mod97_valid("GB82 WEST 1234 5698 7654 33")
    assert not mod97_valid("GB82-WEST")


@pytest.mark.parametrize("text", ["123-45-6789", "SSN 123456789.", "ssn:078-05-1121", "SSN 123 45 6789"])
def test_us_ssn_finds_dashed_and_bare(text):
    assert len(us_ssn(text)) == 1


@pytest.mark.parametrize(
    "text",
    [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-12-3456",
        "123-00-4567",
        "123-45-0000",
        "2023-10-1234",  # date-shaped
        "555-123-4567",  # phone
        "12345-6789",  # ZIP+4
        "1234567890",  # ten digits
        "9123-45-6789",  # inside a longer run
        "123-45-67890",
        "12-345-6789",
        "3.123456789",  # a decimal
        "+123456789",  # a phone number
        "A123456789",
        "078-05-1120",  # published in advertising (python-stdnum's list)
        "219-09-9999",
        "12 123 45 6789",  # part of a longer run of spaced groups
    ],
)
def test_us_ssn_refuses_invalid_ranges_and_lookalikes(text):
    assert us_ssn(text) == []


@pytest.mark.parametrize(
    "code",
    [
        "DE89370400440532013000",
        "DE89 3704 0044 0532 0130 00",
        "GB29NWBK60161331926819",
        "GB29 NWBK 6016 1331 9268 19",
        "FR14 2004 1010 0505 0001 3M02 606",
        "BE68 5390 0754 7034",
        "NO9386011117947",
    ],
)
def test_iban_finds_compact_and_grouped(code):
    assert values(iban(f"IBAN: {code}. Thanks")) == [code]


@pytest.mark.parametrize(
    "text",
    [
        "DE89 3704 0044 0532 0130 01",  # wrong checksum
        "DE88370400440532013000",  # wrong check digits
        "DE89 3704 0044 0532 0130 0",  # too short for Germany
        "US89370400440532013000",  # no IBAN in the US
        "xDE89370400440532013000",  # glued to a word
        "DE89370400440532013000X",
    ],
)
def test_iban_refuses_bad_checksums_lengths_and_countries(text):
    assert iban(text) == []


def test_iban_stops_at_its_country_length_before_following_words():
    assert values(iban("BE68 5390 0754 7034 WIRE today")) == ["BE68 5390 0754 7034"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe@example.com now", ["john.doe@example.com"]),
        ("a.b+tag@mail.example.co.uk.", ["a.b+tag@mail.example.co.uk"]),
        ("john at example dot com", []),
        ("user@localhost", []),
        ("a..b@example.com", []),
        (".a@example.com", []),
        ("user@@example.com", []),
        ("@handle", []),
    ],
)
def test_email_address(text, expected):
    assert values(email_address(text)) == expected


def test_custom_classifier_with_luhn():
    employee = make_classifier("employee_id", r"\bE\d{7}\b", "luhn")
    assert values(employee("ids E0000000 and E1234567")) == ["E0000000"]
    assert employee.name == "employee_id"


def test_custom_classifier_with_mod97_and_none():
    account = make_classifier("account", r"\bGB\d\d[A-Z]{4}\d{14}\b", "mod97")
    assert values(account("GB29NWBK60161331926819 GB28NWBK60161331926819")) == ["GB29NWBK60161331926819"]
    anything = make_classifier("ticket", r"TICKET-\d+")
    assert values(anything("TICKET-1 and TICKET-22")) == ["TICKET-1", "TICKET-22"]


def test_custom_classifier_errors_name_the_classifier():
    with pytest.raises(ValueError, match="'x'.*unknown checksum 'crc'.*luhn"):
        make_classifier("x", r"\d+", "crc")
    with pytest.raises(ValueError, match="'y': invalid regex"):
        make_classifier("y", r"(\d+", "none")


def test_registry_extends_without_mutation():
    registry = {**CLASSIFIERS, "ticket": make_classifier("ticket", r"TICKET-\d+")}
    assert "ticket" in registry and "ticket" not in CLASSIFIERS


# --- confidence ----------------------------------------------------------------------------


def graded(find, text: str) -> list[tuple[str, str]]:
    return [(match.value, match.confidence) for match in find(text)]


@pytest.mark.parametrize(
    ("text", "confidence"),
    [
        ("ref 4111111111111111 done", "medium"),  # compact, standing alone
        ("ref 4111 1111 1111 1111 done", "medium"),  # the issuer's printed grouping
        ("ref 3782 822463 10005 done", "medium"),  # Amex 4-6-5
        ("ref 4111 111111 111111 done", "low"),  # grouped otherwise
        ("ref 4111 1111 1111 1111 0042 done", "low"),  # cut out of a longer run of groups
        ("Visa 4111 1111 1111 1111 0042", "medium"),  # ... labelled by a keyword before it
        ("ref 4111 1111 1111 1111 12/25", "medium"),  # ... or an expiry date after it
        ("card number: 4111111111111111", "high"),
        ("4111111111111111 exp 04/29", "high"),
        ("EAN 4650781196025", "low"),  # also a valid EAN-13 barcode
    ],
)
def test_credit_card_confidence(text, confidence):
    [(_, found)] = graded(credit_card, text)
    assert found == confidence


def test_credit_card_keyword_window_is_80_characters():
    far = "visa " + "x" * 80 + " 4111111111111111"
    near = "visa " + "x" * 70 + " 4111111111111111"
    assert graded(credit_card, far)[0][1] == "medium" and graded(credit_card, near)[0][1] == "high"


@pytest.mark.parametrize(
    "text",
    [
        "IBAN FR76 3000 6000 0112 3456 7890 189",  # digits inside an IBAN pass Luhn: 3000 6000 0112 3456 ...
        "DE89 3704 0044 0532 0130 00",
    ],
)
def test_credit_card_never_inside_an_iban(text):
    assert credit_card(text) == []


@pytest.mark.parametrize(
    ("text", "confidence"),
    [
        ("id 123-45-6789 ok", "medium"),
        ("SSN 123-45-6789", "high"),
        ("id 123456789 ok", "low"),
        ("SSN: 123456789", "medium"),
        ("social security number 123 45 6789", "medium"),
    ],
)
def test_us_ssn_confidence(text, confidence):
    [(_, found)] = graded(us_ssn, text)
    assert found == confidence


def test_a_keyword_labels_a_weak_match_only_with_no_digit_between():
    # the ssn's label does not label the routing number after it
    found = graded(us_ssn, "my ssn is 123-45-6789, routing 026013673")
    assert found == [("123-45-6789", "high"), ("026013673", "low")]
    assert graded(us_ssn, "Order #123456789 for the SSN holder") == []  # "#": an order number


def test_iban_confidence_and_stdnum_structure():
    assert graded(iban, "transfer to DE89370400440532013000 now") == [("DE89370400440532013000", "high")]
    assert graded(iban, "ref GB29 NWBK 6016 1331 9268 19 x") == [("GB29 NWBK 6016 1331 9268 19", "medium")]
    # mod-97 holds, but a British BBAN starts with four letters (the bank code)
    assert iban("GB94 1234 6016 1331 9268 19") == []


def test_iban_lengths_agree_with_python_stdnum():
    import re

    from stdnum import iban as stdnum_iban

    from engine.relay.dlp.classifiers import IBAN_LENGTHS

    registry = {
        low: 4 + sum(int(n) for n in re.findall(r"(\d+)!?[nace]", props["bban"]))
        for _, low, _, props, _ in stdnum_iban._ibandb.prefixes
        if props.get("bban")
    }
    assert registry == IBAN_LENGTHS


@pytest.mark.parametrize(
    ("text", "confidence"),
    [
        ("ping john.doe@example.com today", "medium"),
        ("email: john.doe@example.com", "high"),
        ('<img src="logo@2x.png">', "low"),  # an image name
        ("git clone git@github.com:acme/app.git", "low"),  # an scp-style remote
    ],
)
def test_email_confidence(text, confidence):
    [(_, found)] = graded(email_address, text)
    assert found == confidence


def test_custom_classifier_matches_are_high():
    assert graded(make_classifier("t", r"T-\d+"), "T-1") == [("T-1", "high")]


def test_confidence_levels_are_the_config_models():
    from engine.config.model.dlp import CONFIDENCE_ORDER
    from engine.relay.dlp.classifiers import CONFIDENCE_LEVELS

    assert CONFIDENCE_LEVELS == CONFIDENCE_ORDER
