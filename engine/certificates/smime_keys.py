"""The S/MIME keys the relay holds for internal recipients (`encryption.smime.keys`).

One file per address, `<keys>/<address>.pem`: the recipient's certificate and its private
key, both PEM, the key unencrypted (the relay decrypts unattended, so a passphrase would
have to sit beside it anyway), the file mode 0600. The relay reads a file when a message
for its address arrives, so a key added or replaced is used without a reload, as the
outbound certificates are. Both the relay (engine/relay/decrypt) and the config's semantic
checks read keys here, so a file validation warns is unusable is exactly one the relay
skips. A file other users may read is warned about but still used, as the admin token is:
refusing it would not take the key back, only stop the mail being decrypted.
An expired certificate still decrypts: mail encrypted while it was valid must stay readable.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key


class KeyFileError(ValueError):
    """A key file that cannot be used; the message says why, fit to show an admin."""


@dataclass(frozen=True)
class HeldKey:
    """An internal recipient's certificate and the private key that belongs to it."""

    address: str
    certificate: x509.Certificate
    key: rsa.RSAPrivateKey


def key_file(directory: Path, address: str) -> Path | None:
    """`<directory>/<address>.pem` for a plain address, or None for a name that could leave
    the directory or is no file name (a recipient address comes from the client)."""
    name = address.strip().lower()
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        return None
    return directory / f"{name}.pem"


def held_key(directory: Path, address: str) -> HeldKey | None:
    """The key held for `address`, or None when there is no file for it.

    Raises `KeyFileError` for a file that exists but cannot be used."""
    path = key_file(directory, address)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyFileError(f"{path.name}: cannot be read ({exc.strerror})") from None
    return parse_key_file(data, address, path.name)


def parse_key_file(data: bytes, address: str, name: str) -> HeldKey:
    """The certificate and key in one PEM file; `KeyFileError` naming `name` otherwise."""
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise KeyFileError(f"{name}: holds no PEM certificate") from None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise KeyFileError(f"{name}: the private key is encrypted (the relay needs it unencrypted)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise KeyFileError(f"{name}: holds no PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyFileError(f"{name}: the key is not RSA (S/MIME decryption here supports RSA keys only)")
    if key.public_key().public_numbers() != _public_numbers(certificate):
        raise KeyFileError(f"{name}: the private key does not belong to the certificate")
    return HeldKey(address.strip().lower(), certificate, key)


def _public_numbers(certificate: x509.Certificate):
    public = certificate.public_key()
    return public.public_numbers() if isinstance(public, rsa.RSAPublicKey) else None


def exposed_mode(path: Path) -> int | None:
    """The file's mode when users other than its owner may read or write it, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None
