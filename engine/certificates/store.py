"""The relay's certificate lifecycle: generate, request, import, describe, store.

Pure library code with plain-value interfaces: callers pass strings, bytes and paths, and get
back a `CertBundle` (key, leaf, chain) or PEM bytes. Every refusal is a `CertError` whose
message says what is wrong and what to do, fit to show an admin as-is.

On disk the active certificate is an owner-only directory (0700) holding `cert.pem` (leaf
then chain) and `key.pem` (unencrypted), both mode 0600, each replaced atomically (temporary
file, fsync, rename, fsync of the directory). The key is written before the certificate, and a pair whose
key does not match its certificate is treated as damaged, so a crash between the two renames
cannot leave a working-looking but mismatched pair in use.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from engine.fsutil import private_dir, write_atomic

KEY_TYPES = ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")
MAX_PASSWORD_LENGTH = 100  # the seed's limit for key and PFX passwords
MAX_VALID_DAYS = 3650
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class CertError(Exception):
    """A certificate operation was refused; the message is meant for the admin."""


@dataclass(frozen=True)
class CertInfo:
    """What `cert show` prints about a certificate."""

    subject_cn: str | None
    sans: tuple[str, ...]
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    days_left: int
    key_type: str
    key_size: int
    fingerprint_sha256: str
    self_signed: bool


@dataclass(frozen=True)
class CertBundle:
    """A private key, the certificate it belongs to, and the chain up to (not incl.) the root.

    Construct through `make_self_signed`, `load_pfx`, `load_pem` or `load_dir`, which check
    that the key matches the leaf.
    """

    key: PrivateKey
    leaf: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    def cert_pem(self) -> bytes:
        """The leaf followed by the chain, as servers present them."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.leaf, *self.chain))

    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 (the listener must read it unattended)."""
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def to_pem_files(self, directory: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write `cert.pem` and `key.pem` (both 0600) into `directory` atomically (made 0700 if
        missing); return both paths."""
        directory = private_dir(directory)
        key_path = write_atomic(directory / KEY_FILE, self.key_pem(), mode=0o600)
        cert_path = write_atomic(directory / CERT_FILE, self.cert_pem(), mode=0o600)
        return cert_path, key_path

    def describe(self, now: dt.datetime | None = None) -> CertInfo:
        """Summarise the leaf; `days_left` counts whole days from `now` (default: the clock)."""
        now = now or dt.datetime.now(dt.UTC)
        leaf = self.leaf
        public = leaf.public_key()
        key_type = "ECDSA" if isinstance(public, ec.EllipticCurvePublicKey) else "RSA"
        return CertInfo(
            subject_cn=_common_name(leaf),
            sans=_dns_sans(leaf),
            issuer=leaf.issuer.rfc4514_string(),
            not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc,
            days_left=(leaf.not_valid_after_utc - now).days,
            key_type=key_type,
            key_size=public.key_size,
            fingerprint_sha256=leaf.fingerprint(hashes.SHA256()).hex(":").upper(),
            self_signed=_is_self_signed(leaf),
        )

    def check_fqdn(self, fqdn: str) -> list[str]:
        """The problems that make this certificate wrong for a relay named `fqdn` (empty: fine)."""
        name = _normalise_fqdn(fqdn)
        problems = []
        cn = _common_name(self.leaf)
        if cn is None:
            problems.append(f"certificate has no common name (CN); it must be {name}")
        elif cn.lower().rstrip(".") != name:
            problems.append(f"certificate CN is {cn}, but the relay's FQDN is {name}")
        sans = _dns_sans(self.leaf)
        if not any(_san_covers(san, name) for san in sans):
            listed = ", ".join(sans) if sans else "none"
            problems.append(f"{name} is not in the certificate's DNS SANs ({listed})")
        return problems


def make_self_signed(fqdn: str, key: str = "ecdsa-p256", valid_days: int = 825) -> CertBundle:
    """A new self-signed server certificate: CN and SAN = `fqdn`, serverAuth, fresh key."""
    name = _check_cn(fqdn)
    if not 1 <= valid_days <= MAX_VALID_DAYS:
        raise CertError(f"valid_days must be between 1 and {MAX_VALID_DAYS}, not {valid_days}")
    private_key = _new_key(key)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    # Back-date a little so a peer whose clock runs slightly behind accepts it at once.
    now = dt.datetime.now(dt.UTC)
    public = private_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_server_key_usage(private_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    return CertBundle(private_key, builder.sign(private_key, hashes.SHA256()))


def make_csr(
    fqdn: str,
    *,
    country: str,
    state: str,
    locality: str,
    organization: str,
    organizational_unit: str,
    email: str,
    key: str = "rsa-2048",
    key_password: str | None = None,
) -> tuple[bytes, bytes]:
    """A new key and a CSR for it, ready to send to a CA; returns `(key_pem, csr_pem)`.

    The CN is set from `fqdn` (the seed: it must equal the relay's FQDN) and the fqdn is the
    CSR's DNS SAN. With `key_password` the key is encrypted (PKCS#8, best available cipher).
    """
    name = _check_cn(fqdn)
    if not re.fullmatch(r"[A-Za-z]{2}", country):
        raise CertError(f"country must be a 2-letter code such as US, not {country!r}")
    if not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
        raise CertError(f"email must be an address such as admin@example.com, not {email!r}")
    fields = (
        (NameOID.STATE_OR_PROVINCE_NAME, "state", state, 128),
        (NameOID.LOCALITY_NAME, "locality", locality, 128),
        (NameOID.ORGANIZATION_NAME, "organization", organization, 64),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "organizational_unit", organizational_unit, 64),
        (NameOID.EMAIL_ADDRESS, "email", email, 255),
    )
    attributes = [x509.NameAttribute(NameOID.COUNTRY_NAME, country.upper())]
    for oid, label, value, limit in fields:
        if not value.strip() or len(value) > limit:
            raise CertError(f"{label} must be 1 to {limit} characters, got {len(value)}")
        attributes.append(x509.NameAttribute(oid, value))
    attributes.insert(-1, x509.NameAttribute(NameOID.COMMON_NAME, name))
    encryption = _key_encryption(key_password)
    private_key = _new_key(key)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(private_key, hashes.SHA256())
    )
    key_pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


def load_pfx(data: bytes, password: str) -> CertBundle:
    """Import a PKCS#12 (.pfx/.p12) file holding the key, the certificate and its chain."""
    _check_password_length(password, "PFX password")
    if data.lstrip().startswith(b"-----BEGIN"):
        raise CertError("this is a PEM file, not PKCS#12 (PFX); import it as PEM instead")
    if not _looks_like_pkcs12(data):
        raise CertError("not a PKCS#12 (PFX) file: expected the binary output of openssl pkcs12")
    # An empty password may mean "no password" or "the empty password": try both.
    attempts = [password.encode()] if password else [None, b""]
    for attempt in attempts:
        try:
            key, leaf, extra = pkcs12.load_key_and_certificates(data, attempt)
            break
        except ValueError:
            continue
    else:
        raise CertError("wrong PFX password (or a damaged PFX file)")
    if key is None or leaf is None:
        raise CertError("the PFX file must hold both the private key and its certificate")
    return _bundle(key, leaf, tuple(extra))


def load_pem(cert_pem: bytes, key_pem: bytes, key_password: str | None = None) -> CertBundle:
    """Build a bundle from PEM: `cert_pem` holds the leaf first, then any chain."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CertError("the certificate file holds no readable PEM certificate") from None
    if key_password is not None:
        _check_password_length(key_password, "key password")
    password = key_password.encode() if key_password else None
    try:
        key = serialization.load_pem_private_key(key_pem, password)
    except TypeError:
        if password is None:
            raise CertError("the private key is encrypted: give its password") from None
        key = serialization.load_pem_private_key(key_pem, None)  # a password it did not need
    except ValueError:
        if key_password:
            raise CertError("wrong key password (or the key file is damaged)") from None
        raise CertError("the key file holds no readable PEM private key") from None
    return _bundle(key, certs[0], tuple(certs[1:]))


def load_dir(directory: str | os.PathLike[str]) -> CertBundle:
    """Load the `cert.pem`/`key.pem` pair that `CertBundle.to_pem_files` wrote."""
    directory = Path(directory)
    try:
        cert_pem = (directory / CERT_FILE).read_bytes()
        key_pem = (directory / KEY_FILE).read_bytes()
    except OSError as exc:
        raise CertError(f"cannot read the certificate in {directory}: {exc.strerror}") from None
    return load_pem(cert_pem, key_pem)


def ensure_certificate(
    data_dir: str | os.PathLike[str], fqdn: str, key: str = "ecdsa-p256", valid_days: int = 825
) -> Path:
    """Make sure `<data_dir>/tls` holds a usable certificate for `fqdn`; return that directory.

    Used at first start with a self-signed setting. Idempotent: a readable, unexpired pair
    whose CN and SAN match `fqdn` is kept; a missing, damaged, mismatched or expired one is
    replaced by a new self-signed certificate.
    """
    tls_dir = Path(data_dir) / "tls"
    try:
        current = load_dir(tls_dir)
    except CertError:
        current = None
    if current is not None:
        expired = current.leaf.not_valid_after_utc <= dt.datetime.now(dt.UTC)
        if not expired and not current.check_fqdn(fqdn):
            return tls_dir
    make_self_signed(fqdn, key, valid_days).to_pem_files(tls_dir)
    return tls_dir


# -- helpers -----------------------------------------------------------------------------


def _new_key(key: str) -> PrivateKey:
    if key == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if key in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key[4:]))
    raise CertError(f"unknown key type {key!r}; choose one of {', '.join(KEY_TYPES)}")


def _server_key_usage(key: PrivateKey) -> x509.KeyUsage:
    # RSA keys may be used for RSA key transport in TLS 1.2; EC keys only sign (ECDHE).
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=is_rsa,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _key_encryption(password: str | None) -> serialization.KeySerializationEncryption:
    if password is None:
        return serialization.NoEncryption()
    if password == "":
        raise CertError("key password is empty: give one, or none for an unencrypted key")
    _check_password_length(password, "key password")
    return serialization.BestAvailableEncryption(password.encode())


def _check_password_length(password: str, what: str) -> None:
    if len(password) > MAX_PASSWORD_LENGTH:
        raise CertError(f"{what} is {len(password)} characters; at most {MAX_PASSWORD_LENGTH} are allowed")


def _normalise_fqdn(fqdn: str) -> str:
    name = fqdn.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise CertError(f"{fqdn!r} is not a valid host name (letters, digits, '-' and dots)")
    return name


def _check_cn(fqdn: str) -> str:
    name = _normalise_fqdn(fqdn)
    if len(name) > 64:
        raise CertError(f"{name} is {len(name)} characters; a certificate CN allows at most 64")
    return name


def _bundle(key: object, leaf: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> CertBundle:
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CertError(f"unsupported key type {type(key).__name__}; use an RSA or ECDSA key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        raise CertError(f"the RSA key has {key.key_size} bits; at least 2048 are required")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*raw) != leaf.public_key().public_bytes(*raw):
        raise CertError("the private key does not belong to the certificate")
    return CertBundle(key, leaf, chain)


def _looks_like_pkcs12(data: bytes) -> bool:
    """True when `data` opens like a DER PFX: SEQUENCE { INTEGER 3, ... } (RFC 7292)."""
    if len(data) < 8 or data[0] != 0x30:
        return False
    length_byte = data[1]
    offset = 2 + (length_byte & 0x7F if length_byte & 0x80 else 0)
    return data[offset : offset + 3] == b"\x02\x01\x03"


def _common_name(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(values[0].value) if values else None


def _dns_sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return tuple(ext.value.get_values_for_type(x509.DNSName))


def _san_covers(san: str, name: str) -> bool:
    """RFC 6125 matching: exact, or a wildcard standing for exactly one leftmost label."""
    san = san.lower().rstrip(".")
    if san.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == san[2:]
    return san == name


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
