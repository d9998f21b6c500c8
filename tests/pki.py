"""A test PKI: a trusted CA and server certificates for every case the TLS levels judge.

`build_pki(root, fqdn)` returns `{case: (cert_file, key_file)}` for the cases good,
wrong_san, expired, untrusted, cn_only and self_signed, plus "ca" (the trusted CA's file
twice). Shared by the TLS level tests and the relay's delivery tests. `smime_pair` makes
an S/MIME recipient (certificate and key) for the inbound decryption tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.certificates.store import make_self_signed

CASES = ("good", "wrong_san", "expired", "untrusted", "cn_only", "self_signed")


def build_pki(root: Path, fqdn: str) -> dict[str, tuple[Path, Path]]:
    """Server (cert_file, key_file) per case, plus the trusted CA's file under "ca"."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    now = dt.datetime.now(dt.UTC)
    leaves = {
        "good": ca.issue_cert(fqdn),
        "wrong_san": ca.issue_cert("other.test.example"),
        "expired": ca.issue_cert(fqdn, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)),
        "untrusted": trustme.CA().issue_cert(fqdn),
    }
    files = {"ca": (root / "ca.pem", root / "ca.pem")}
    for case, leaf in leaves.items():
        cert, key = root / f"{case}.crt", root / f"{case}.key"
        cert.write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key))
        files[case] = (cert, key)
    files["cn_only"] = _cn_only_cert(ca, root, fqdn)
    files["self_signed"] = make_self_signed(fqdn).to_pem_files(root / "self_signed")
    return files


def _cn_only_cert(ca: trustme.CA, root: Path, fqdn: str) -> tuple[Path, Path]:
    """A CA-signed certificate naming `fqdn` only in its CN, with no SAN (trustme always adds one)."""
    ca_key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.bytes())
    key = make_self_signed(fqdn).key
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, fqdn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file = root / "cn_only.crt", root / "cn_only.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass(frozen=True)
class SMimePair:
    """An S/MIME recipient: a self-signed certificate for `address` and its RSA key, PEM."""

    address: str
    cert_pem: bytes
    key_pem: bytes


def smime_pair(address: str) -> SMimePair:
    """An RSA key and a self-signed S/MIME certificate (email SAN) for `address`."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SMimePair(address, cert.public_bytes(serialization.Encoding.PEM), key_pem)
