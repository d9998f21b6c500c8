"""DANE's record matching and chain checks (`engine.relay.tls.dane`) on certificates made by an
outside CA library (trustme), and the TLSA lookup against a DNSSEC-validating unbound.

The expected digests are computed here with hashlib over the DER that `cryptography` gives,
not by the code under test; the relay's delivery under DANE is tests/relay/test_dane.py.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from engine.relay.delivery.resolve import Resolver
from engine.relay.tls import dane
from engine.relay.tls.levels import TLSLevel

MX = "mx1.partner.example"
DOMAIN = "partner.example"


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(Encoding.DER)


def spki(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def record(usage: int, selector: int, mtype: int, cert: x509.Certificate) -> dane.TLSA:
    selected = der(cert) if selector == 0 else spki(cert)
    data = selected if mtype == 0 else hashlib.new({1: "sha256", 2: "sha512"}[mtype], selected).digest()
    return dane.TLSA(usage, selector, mtype, data)


def chain_of(leaf: trustme.LeafCert) -> list[x509.Certificate]:
    return [x509.load_pem_x509_certificate(pem.bytes()) for pem in leaf.cert_chain_pems]


@pytest.fixture(scope="module")
def pki():
    """A root, an intermediate under it, and leaves: for the MX host, for another name, and
    one for the MX host that expired yesterday."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    now = dt.datetime.now(dt.UTC)
    expired = intermediate.issue_cert(MX, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1))
    return {
        "root": x509.load_pem_x509_certificate(root.cert_pem.bytes()),
        "good": chain_of(intermediate.issue_cert(MX)),
        "other": chain_of(intermediate.issue_cert("other.example.net")),
        "domain": chain_of(intermediate.issue_cert(DOMAIN)),
        "wildcard": chain_of(intermediate.issue_cert("*.partner.example")),
        "expired": chain_of(expired),
        "stranger": chain_of(trustme.CA().create_child_ca().issue_cert(MX)),
    }


def requirement(*records: dane.TLSA) -> dane.Requirement:
    return dane.Requirement(records, (MX, DOMAIN))


# -- which records SMTP may use (RFC 7672 §3.1) ---------------------------------------------


@pytest.mark.parametrize(
    ("usage", "selector", "mtype", "size", "usable"),
    [
        (3, 1, 1, 32, True),
        (3, 0, 2, 64, True),
        (2, 0, 0, 300, True),
        (2, 1, 1, 32, True),
        (0, 0, 1, 32, False),  # PKIX-TA: unusable for SMTP
        (1, 1, 1, 32, False),  # PKIX-EE
        (3, 2, 1, 32, False),  # unknown selector
        (3, 1, 3, 32, False),  # unknown matching type
        (3, 1, 1, 31, False),  # SHA-256 digest one byte short
        (3, 1, 2, 32, False),  # SHA-512 with a SHA-256 sized digest
        (3, 1, 0, 0, False),  # full data, empty
    ],
)
def test_usable_records(usage: int, selector: int, mtype: int, size: int, usable: bool) -> None:
    assert dane.TLSA(usage, selector, mtype, b"\x01" * size).usable is usable


# -- DANE-EE: the leaf itself ---------------------------------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)])
def test_dane_ee_matches_the_leaf_by_every_selector_and_matching_type(pki, selector: int, mtype: int) -> None:
    chain = pki["good"]
    assert dane.check([der(c) for c in chain], requirement(record(3, selector, mtype, chain[0]))) is None


def test_dane_ee_ignores_names_and_dates(pki) -> None:
    """RFC 7672 §3.1.1: a DANE-EE match is enough, whatever the certificate names or its dates."""
    for case in ("other", "expired", "stranger"):
        chain = pki[case]
        assert dane.check([der(chain[0])], requirement(record(3, 1, 1, chain[0]))) is None


def test_dane_ee_of_another_key_does_not_match(pki) -> None:
    presented, published = pki["good"], pki["other"]
    reason = dane.check([der(c) for c in presented], requirement(record(3, 1, 1, published[0])))
    assert (
        reason == f"no TLSA record matches the certificate chain (records: {record(3, 1, 1, published[0]).describe()})"
    )


def test_a_dane_ee_record_does_not_match_an_issuer(pki) -> None:
    """A `3 x x` record naming the intermediate is not satisfied by a leaf it issued."""
    chain = pki["good"]
    assert dane.check([der(c) for c in chain], requirement(record(3, 1, 1, chain[1]))) is not None


# -- DANE-TA: an issuer the leaf chains to, with a name -------------------------------------


@pytest.mark.parametrize(("selector", "mtype"), [(0, 1), (1, 1), (1, 2), (0, 0)])
def test_dane_ta_of_the_intermediate_in_the_chain(pki, selector: int, mtype: int) -> None:
    chain = pki["good"]
    assert dane.check([der(c) for c in chain], requirement(record(2, selector, mtype, chain[1]))) is None


def test_dane_ta_accepts_the_recipient_domain_and_a_wildcard(pki) -> None:
    for case in ("domain", "wildcard"):
        chain = pki[case]
        assert dane.check([der(c) for c in chain], requirement(record(2, 1, 1, chain[1]))) is None, case


def test_dane_ta_refuses_a_leaf_for_another_name(pki) -> None:
    chain = pki["other"]
    reason = dane.check([der(c) for c in chain], requirement(record(2, 1, 1, chain[1])))
    assert reason == (
        "the chain does not validate to the DANE-TA certificate: validation failed: "
        "leaf certificate has no matching subjectAltName"
    )


def test_dane_ta_refuses_an_expired_leaf(pki) -> None:
    chain = pki["expired"]
    reason = dane.check([der(c) for c in chain], requirement(record(2, 1, 1, chain[1])))
    assert reason == (
        "the chain does not validate to the DANE-TA certificate: validation failed: cert is not valid at validation time"
    )


def test_dane_ta_of_another_ca_does_not_match(pki) -> None:
    chain = pki["stranger"]
    reason = dane.check([der(c) for c in chain], requirement(record(2, 1, 1, pki["good"][1])))
    assert reason is not None and reason.startswith("no TLSA record matches the certificate chain")


def test_dane_ta_full_certificate_of_a_root_the_server_does_not_send(pki) -> None:
    """`2 0 0` carries the whole trust anchor: the chain (leaf, intermediate) need not include
    it. A digest of that root cannot be checked without the root: no match."""
    chain = [der(c) for c in pki["good"]]
    assert dane.check(chain, requirement(record(2, 0, 0, pki["root"]))) is None
    assert dane.check(chain, requirement(record(2, 0, 1, pki["root"]))) is not None


def test_a_matching_record_among_others_is_enough(pki) -> None:
    chain = pki["good"]
    records = (record(3, 1, 1, pki["other"][0]), record(2, 1, 1, pki["stranger"][1]), record(3, 0, 1, chain[0]))
    assert dane.check([der(c) for c in chain], requirement(*records)) is None


def test_no_certificate_or_garbage(pki) -> None:
    good = requirement(record(3, 1, 1, pki["good"][0]))
    assert dane.check([], good) == "the peer presented no certificate"
    assert dane.check([b"\x30\x03\x02\x01\x00"], good).startswith("the peer's certificate could not be read")


# -- what the level means at one hop ----------------------------------------------------------


def lookup(state: str, *records: dane.TLSA) -> dane.Lookup:
    return dane.Lookup(MX, 25, state, records, reason="why")


def test_verdicts(pki) -> None:
    good = record(3, 1, 1, pki["good"][0])
    unusable = dane.TLSA(1, 1, 1, b"\x00" * 32)
    fallback = TLSLevel.OPPORTUNISTIC

    said = dane.verdict(lookup("usable", good, unusable), DOMAIN, fallback, hop_secure=True)
    assert said.level is TLSLevel.DANE and said.requirement == dane.Requirement((good,), (MX, DOMAIN))
    assert said.source == f"DANE (_25._tcp.{MX})"

    said = dane.verdict(lookup("unusable", unusable), DOMAIN, fallback, hop_secure=True)
    assert said.level is TLSLevel.MANDATORY and said.requirement is None

    assert dane.verdict(lookup("none"), DOMAIN, fallback, hop_secure=True).level is TLSLevel.OPPORTUNISTIC
    failed = dane.verdict(lookup("failed"), DOMAIN, fallback, hop_secure=True)
    assert failed.level is None and failed.reason == "why"
    # an MX or address answer that was not validated: the records say nothing about this host
    insecure = dane.verdict(lookup("usable", good), DOMAIN, fallback, hop_secure=False)
    assert insecure.level is TLSLevel.OPPORTUNISTIC and insecure.requirement is None


# -- the lookup through a validating resolver ---------------------------------------------------


async def test_lookup_through_a_validating_resolver(validating_resolver, pki) -> None:
    good = record(3, 1, 1, pki["good"][0])
    validating_resolver.zone(DOMAIN, [f"_25._tcp.mx1 TLSA {good}", "_25._tcp.mx2 TLSA 1 1 1 " + "00" * 32])
    validating_resolver.zone("plain.example", [f"_25._tcp.mx1 TLSA {good}"], signed=False)
    validating_resolver.zone("broken.example", [f"_25._tcp.mx1 TLSA {good}"], bogus=True)
    validating_resolver.start()
    stub = Resolver([validating_resolver.host], port=validating_resolver.port, timeout=2.0, dnssec=True)

    found = await dane.lookup(stub, MX)
    assert (found.state, found.records) == ("usable", (good,))
    assert (await dane.lookup(stub, "mx2.partner.example")).state == "unusable"
    none = await dane.lookup(stub, "mx3.partner.example")  # validated NXDOMAIN
    assert (none.state, none.reason) == ("none", "no TLSA records at _25._tcp.mx3.partner.example")
    plain = await dane.lookup(stub, "mx1.plain.example")
    assert (plain.state, plain.reason) == ("none", "TLSA answer for _25._tcp.mx1.plain.example is not DNSSEC-signed")
    broken = await dane.lookup(stub, "mx1.broken.example")
    assert broken.state == "failed" and broken.reason.startswith("TLSA lookup of _25._tcp.mx1.broken.example failed")
    # the same resolver not declared validating: nothing counts as signed
    untrusting = Resolver([validating_resolver.host], port=validating_resolver.port, timeout=2.0)
    assert (await dane.lookup(untrusting, MX)).state == "none"


async def test_hops_carry_whether_dnssec_validated_them(validating_resolver, tmp_path: Path) -> None:
    validating_resolver.zone(DOMAIN, ["@ MX 10 mx1", "mx1 A 127.0.0.1", "@ MX 20 mx.plain.example."])
    validating_resolver.zone("plain.example", ["mx A 127.0.0.2", "@ MX 10 mx"], signed=False)
    validating_resolver.start()
    stub = Resolver([validating_resolver.host], port=validating_resolver.port, timeout=2.0, dnssec=True)
    hops = await stub.mx_hosts(DOMAIN)
    assert [(h.host, h.address, h.secure) for h in hops] == [
        (MX, "127.0.0.1", True),
        ("mx.plain.example", "127.0.0.2", False),  # signed MX, unsigned address
    ]
    assert [h.secure for h in await stub.mx_hosts("plain.example")] == [False]
    assert [h.secure for h in await stub.host_hops(MX, 2525, mx_lookup=False)] == [True]
