"""`encryption.smime.keys` and `decrypt_inbound`: the checks, with real key files on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.diagnostics import Severity
from engine.config.load import load_config
from tests.pki import SMimePair, smime_pair

HEAD = "version: 1\nsystem:\n  fqdn: mail.example.com\n  internal_domains: [example.com]\n  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]\n"
DECRYPT = (
    "encryption:\n  advanced: {portal_url: 'https://s.example.com', decrypt_inbound: true}\n  smime: {keys: keys}\n"
)
KEYS = ("encryption", "smime", "keys")


@pytest.fixture(scope="module")
def bob() -> SMimePair:
    return smime_pair("bob@example.com")


def findings(tmp_path: Path, text: str) -> list[tuple[Severity, tuple, str]]:
    path = tmp_path / "relay.yaml"
    path.write_text(HEAD + text, encoding="utf-8")
    return [(d.severity, d.path, d.message) for d in load_config(path).diagnostics]


def key_dir(tmp_path: Path, files: dict[str, tuple[bytes, int]]) -> None:
    directory = tmp_path / "keys"
    directory.mkdir()
    for name, (data, mode) in files.items():
        (directory / name).write_bytes(data)
        (directory / name).chmod(mode)


def test_usable_private_keys_are_quiet(tmp_path: Path, bob: SMimePair) -> None:
    key_dir(tmp_path, {"bob@example.com.pem": (bob.cert_pem + bob.key_pem, 0o600), "README": (b"x", 0o644)})
    assert findings(tmp_path, DECRYPT) == []


def test_a_key_file_others_may_read_is_a_warning_naming_it(tmp_path: Path, bob: SMimePair) -> None:
    key_dir(tmp_path, {"bob@example.com.pem": (bob.key_pem + bob.cert_pem, 0o644)})
    assert findings(tmp_path, DECRYPT) == [
        (Severity.WARNING, KEYS, "bob@example.com.pem holds a private key and other users may read it (mode 0644)")
    ]


def test_unusable_key_files_are_warnings_saying_why(tmp_path: Path, bob: SMimePair) -> None:
    carol = smime_pair("carol@example.com")
    key_dir(
        tmp_path,
        {
            "a@example.com.pem": (bob.cert_pem, 0o600),
            "b@example.com.pem": (bob.key_pem, 0o600),
            "c@example.com.pem": (bob.cert_pem + carol.key_pem, 0o600),
        },
    )
    assert findings(tmp_path, DECRYPT) == [
        (
            Severity.WARNING,
            KEYS,
            "a@example.com.pem: holds no PEM private key: mail to a@example.com will not be decrypted",
        ),
        (
            Severity.WARNING,
            KEYS,
            "b@example.com.pem: holds no PEM certificate: mail to b@example.com will not be decrypted",
        ),
        (
            Severity.WARNING,
            KEYS,
            "c@example.com.pem: the private key does not belong to the certificate: "
            "mail to c@example.com will not be decrypted",
        ),
    ]


def test_an_encrypted_private_key_is_refused(tmp_path: Path, bob: SMimePair) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(bob.key_pem, None)
    locked = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")
    )
    key_dir(tmp_path, {"bob@example.com.pem": (bob.cert_pem + locked, 0o600)})
    assert findings(tmp_path, DECRYPT) == [
        (
            Severity.WARNING,
            KEYS,
            "bob@example.com.pem: the private key is encrypted (the relay needs it unencrypted): "
            "mail to bob@example.com will not be decrypted",
        )
    ]


def test_a_missing_key_directory_is_an_error(tmp_path: Path) -> None:
    assert findings(tmp_path, DECRYPT) == [(Severity.ERROR, KEYS, "the key directory `keys` does not exist")]


def test_decryption_without_keys_is_an_error_at_the_setting(tmp_path: Path) -> None:
    text = "encryption:\n  advanced: {portal_url: 'https://s.example.com', decrypt_inbound: true}\n"
    assert findings(tmp_path, text) == [
        (
            Severity.ERROR,
            ("encryption", "advanced", "decrypt_inbound"),
            "inbound decryption needs the internal recipients' keys, and `encryption.smime.keys` is not set",
        )
    ]


def test_keys_without_decryption_are_a_warning(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    assert findings(tmp_path, "encryption:\n  smime: {keys: keys}\n") == [
        (
            Severity.WARNING,
            KEYS,
            "the relay holds these keys but decrypts nothing: `encryption.advanced.decrypt_inbound` is off",
        )
    ]


def test_an_empty_smime_block_is_an_error(tmp_path: Path) -> None:
    assert findings(tmp_path, "encryption:\n  smime: {}\n") == [
        (
            Severity.ERROR,
            ("encryption", "smime"),
            "`encryption.smime` sets neither `certificates` nor `keys`, so it does nothing",
        )
    ]


def test_keys_alone_do_not_conflict_with_the_secure_portal(tmp_path: Path) -> None:
    """The portal excludes other methods; inbound decryption is no method."""
    (tmp_path / "keys").mkdir()
    text = (
        "encryption:\n  method: secure_portal\n  secure_portal: {url: 'https://s.example.com'}\n"
        "  advanced: {portal_url: 'https://s.example.com', decrypt_inbound: true}\n  smime: {keys: keys}\n"
    )
    assert findings(tmp_path, text) == []


@pytest.mark.parametrize("header", ["Subject", "content-type", "X-Sealrelay-DLP"])
def test_the_decryption_header_may_not_be_one_mail_uses(tmp_path: Path, header: str) -> None:
    """The relay removes every copy a sender wrote: `Subject` would lose every subject."""
    (tmp_path / "keys").mkdir()
    text = DECRYPT.replace("decrypt_inbound: true", f"decrypt_inbound: true, decryption_header: {header}")
    assert findings(tmp_path, text) == [
        (
            Severity.ERROR,
            ("encryption", "advanced", "decryption_header"),
            f"`{header}` is a header mail itself uses, and the relay removes every copy of the decryption "
            "header a sender wrote",
        )
    ]
