"""Certificate lifecycle, checked with the openssl CLI as the independent reader."""

from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
from pathlib import Path

import pytest
import trustme

from engine.certificates.store import (
    CertError,
    ensure_certificate,
    load_dir,
    load_pem,
    load_pfx,
    make_csr,
    make_self_signed,
)

FQDN = "mail.example.com"
SUBJECT = dict(
    country="US",
    state="Texas",
    locality="Austin",
    organization="Example Corp",
    organizational_unit="Mail",
    email="postmaster@example.com",
)


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=check)


# -- self-signed ---------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ecdsa-p256", "rsa-2048"])
def test_self_signed_reads_back_with_openssl(tmp_path: Path, key: str) -> None:
    cert_file, key_file = make_self_signed(FQDN, key).to_pem_files(tmp_path)
    shown = openssl(
        "x509", "-in", str(cert_file), "-noout", "-subject",
        "-ext", "subjectAltName,extendedKeyUsage,keyUsage,basicConstraints",
    ).stdout  # fmt: skip
    assert f"subject=CN = {FQDN}" in shown
    assert f"DNS:{FQDN}" in shown
    assert "TLS Web Server Authentication" in shown
    assert "Digital Signature" in shown and "CA:FALSE" in shown
    assert ("Key Encipherment" in shown) == key.startswith("rsa")
    # The key file is private and belongs to the certificate.
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    cert_public = openssl("x509", "-in", str(cert_file), "-noout", "-pubkey").stdout
    assert openssl("pkey", "-in", str(key_file), "-pubout").stdout == cert_public
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem"]


def test_describe_reports_what_cert_show_needs() -> None:
    bundle = make_self_signed("MAIL.Example.com.", "rsa-3072", valid_days=30)
    info = bundle.describe()
    assert info.subject_cn == FQDN and info.sans == (FQDN,)
    assert info.issuer == f"CN={FQDN}" and info.self_signed
    assert (info.key_type, info.key_size) == ("RSA", 3072)
    assert info.days_left == 29  # whole days: a moment has passed since it was signed
    assert len(info.fingerprint_sha256.split(":")) == 32
    later = bundle.describe(now=info.not_after + dt.timedelta(days=1))
    assert later.days_left < 0
    assert bundle.check_fqdn(FQDN) == []


@pytest.mark.parametrize(
    ("fqdn", "key", "days", "message"),
    [
        ("mail_relay.example.com", "ecdsa-p256", 825, "not a valid host name"),
        ("a" * 60 + ".example.com", "ecdsa-p256", 825, "CN allows at most 64"),
        (FQDN, "dsa-1024", 825, "unknown key type 'dsa-1024'"),
        (FQDN, "ecdsa-p256", 0, "valid_days must be between 1 and"),
    ],
)
def test_self_signed_refusals(fqdn: str, key: str, days: int, message: str) -> None:
    with pytest.raises(CertError, match=message):
        make_self_signed(fqdn, key, days)


def test_check_fqdn_names_each_problem(tmp_path: Path) -> None:
    ca = trustme.CA()
    wrong_san = ca.issue_cert("other.example.com", common_name=FQDN)
    bundle = load_pem(b"".join(p.bytes() for p in wrong_san.cert_chain_pems), wrong_san.private_key_pem.bytes())
    assert bundle.check_fqdn(FQDN) == ["mail.example.com is not in the certificate's DNS SANs (other.example.com)"]
    wildcard = ca.issue_cert("*.example.com", common_name="*.example.com")
    bundle = load_pem(wildcard.cert_chain_pems[0].bytes(), wildcard.private_key_pem.bytes())
    assert bundle.check_fqdn(FQDN) == ["certificate CN is *.example.com, but the relay's FQDN is mail.example.com"]
    assert not bundle.describe().self_signed


# -- CSR -----------------------------------------------------------------------------------


def test_csr_verifies_and_carries_the_subject(tmp_path: Path) -> None:
    key_pem, csr_pem = make_csr(FQDN, **SUBJECT, key_password="correct horse")
    (tmp_path / "csr.pem").write_bytes(csr_pem)
    (tmp_path / "key.pem").write_bytes(key_pem)
    shown = openssl("req", "-in", str(tmp_path / "csr.pem"), "-noout", "-verify", "-subject", "-text")
    assert "verify OK" in shown.stdout + shown.stderr
    assert (
        "subject=C = US, ST = Texas, L = Austin, O = Example Corp, OU = Mail, "
        f"CN = {FQDN}, emailAddress = postmaster@example.com"
    ) in shown.stdout
    assert f"DNS:{FQDN}" in shown.stdout
    # The key is encrypted with the password, and is the CSR's key.
    assert b"ENCRYPTED PRIVATE KEY" in key_pem
    key_file = str(tmp_path / "key.pem")
    assert openssl("pkey", "-in", key_file, "-passin", "pass:wrong", check=False).returncode
    public = openssl("pkey", "-in", key_file, "-passin", "pass:correct horse", "-pubout").stdout
    assert public == openssl("req", "-in", str(tmp_path / "csr.pem"), "-noout", "-pubkey").stdout


def test_csr_without_password_and_with_100_characters() -> None:
    key_pem, _ = make_csr(FQDN, **SUBJECT, key="ecdsa-p256")
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key_pem, _ = make_csr(FQDN, **SUBJECT, key="ecdsa-p256", key_password="p" * 100)
    assert b"ENCRYPTED" in key_pem


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key_password": "p" * 101}, "key password is 101 characters; at most 100"),
        ({"key_password": ""}, "key password is empty"),
        ({"country": "USA"}, "country must be a 2-letter code"),
        ({"email": "postmaster"}, "email must be an address"),
        ({"organization": ""}, "organization must be 1 to 64 characters"),
        ({"key": "rsa-1024"}, "unknown key type"),
    ],
)
def test_csr_refusals(changes: dict, message: str) -> None:
    arguments = {**SUBJECT, "key": "ecdsa-p256", "key_password": None, **changes}
    with pytest.raises(CertError, match=message):
        make_csr(FQDN, **arguments)


# -- PFX and PEM import --------------------------------------------------------------------


@pytest.fixture()
def pfx(tmp_path: Path) -> tuple[bytes, trustme.CA]:
    """A PFX made by `openssl pkcs12 -export`: leaf, key, and the intermediate as chain."""
    root = trustme.CA()
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert(FQDN, common_name=FQDN)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "leaf.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "leaf.key"))
    intermediate.cert_pem.write_to_path(str(tmp_path / "chain.pem"))
    out = tmp_path / "relay.pfx"
    openssl(
        "pkcs12", "-export", "-inkey", str(tmp_path / "leaf.key"),
        "-in", str(tmp_path / "leaf.pem"), "-certfile", str(tmp_path / "chain.pem"),
        "-passout", "pass:Secret123", "-out", str(out),
    )  # fmt: skip
    return out.read_bytes(), root


def test_pfx_import_keeps_the_chain(tmp_path: Path, pfx: tuple[bytes, trustme.CA]) -> None:
    data, root = pfx
    bundle = load_pfx(data, "Secret123")
    assert bundle.check_fqdn(FQDN) == []
    assert len(bundle.chain) == 1 and bundle.chain[0].subject == bundle.leaf.issuer
    # Written out, the chain lets openssl build the path to the root by itself.
    cert_file, _ = bundle.to_pem_files(tmp_path / "tls")
    root.cert_pem.write_to_path(str(tmp_path / "root.pem"))
    verified = openssl(
        "verify", "-CAfile", str(tmp_path / "root.pem"), "-untrusted", str(cert_file),
        str(cert_file),
    )  # fmt: skip
    assert verified.stdout.strip().endswith(": OK")
    assert load_dir(tmp_path / "tls").chain == bundle.chain


def test_pfx_refusals(pfx: tuple[bytes, trustme.CA]) -> None:
    data, _ = pfx
    with pytest.raises(CertError, match="^wrong PFX password"):
        load_pfx(data, "Secret124")
    with pytest.raises(CertError, match="PFX password is 101 characters"):
        load_pfx(data, "S" * 101)
    with pytest.raises(CertError, match="not a PKCS#12"):
        load_pfx(os.urandom(2048), "Secret123")
    with pytest.raises(CertError, match="this is a PEM file"):
        load_pfx(make_self_signed(FQDN).cert_pem(), "Secret123")


def test_pem_import_refusals() -> None:
    bundle = make_self_signed(FQDN)
    key_pem, _ = make_csr(FQDN, **SUBJECT, key="ecdsa-p256", key_password="s3cret")
    with pytest.raises(CertError, match="encrypted: give its password"):
        load_pem(bundle.cert_pem(), key_pem)
    with pytest.raises(CertError, match="wrong key password"):
        load_pem(bundle.cert_pem(), key_pem, "nope")
    with pytest.raises(CertError, match="does not belong to the certificate"):
        load_pem(bundle.cert_pem(), key_pem, "s3cret")
    with pytest.raises(CertError, match="no readable PEM certificate"):
        load_pem(b"garbage", bundle.key_pem())
    assert load_pem(bundle.cert_pem(), bundle.key_pem(), "unneeded").leaf == bundle.leaf


# -- first start ---------------------------------------------------------------------------


def test_ensure_certificate_creates_keeps_and_replaces(tmp_path: Path) -> None:
    tls_dir = ensure_certificate(tmp_path, FQDN)
    assert tls_dir == tmp_path / "tls"
    first = load_dir(tls_dir).describe()
    assert first.subject_cn == FQDN and first.self_signed and first.key_type == "ECDSA"

    assert load_dir(ensure_certificate(tmp_path, FQDN)).describe() == first  # idempotent

    renamed = load_dir(ensure_certificate(tmp_path, "relay.example.com", "rsa-2048")).describe()
    assert renamed.subject_cn == "relay.example.com" and renamed.key_type == "RSA"


def test_ensure_certificate_replaces_a_damaged_or_mismatched_pair(tmp_path: Path) -> None:
    tls_dir = ensure_certificate(tmp_path, FQDN)
    before = load_dir(tls_dir).describe().fingerprint_sha256
    # A crash between the two renames: a new key next to the old certificate.
    (tls_dir / "key.pem").write_bytes(make_self_signed(FQDN).key_pem())
    with pytest.raises(CertError, match="does not belong"):
        load_dir(tls_dir)
    after = load_dir(ensure_certificate(tmp_path, FQDN)).describe().fingerprint_sha256
    assert after != before
    (tls_dir / "cert.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ntrunc")
    assert load_dir(ensure_certificate(tmp_path, FQDN)).check_fqdn(FQDN) == []


def test_ensure_certificate_replaces_an_expired_certificate(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    expired = trustme.CA().issue_cert(FQDN, common_name=FQDN, not_before=now - dt.timedelta(days=9), not_after=now)
    old = load_pem(expired.cert_chain_pems[0].bytes(), expired.private_key_pem.bytes())
    old.to_pem_files(tmp_path / "tls")
    current = load_dir(ensure_certificate(tmp_path, FQDN))
    assert current.leaf != old.leaf and current.describe().days_left > 800
