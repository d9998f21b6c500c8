"""`sealrelay cert …` as an admin runs it: real processes, temp configs, openssl as the judge."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.certificates.ops import set_certificate
from engine.config.load import load_config

ROOT = Path(__file__).resolve().parent.parent
FQDN = "mail.example.com"
PFX_PASSWORD = "Pfx0Password1"
SUBJECT = [
    "--country", "US", "--state", "Texas", "--locality", "Austin",
    "--organization", "Example Corp", "--unit", "Mail", "--email", "postmaster@example.com",
]  # fmt: skip

CONFIG = f"""\
# The relay for example.com (kept in git).
version: 1

system:
  fqdn: {FQDN}   # the certificate must name this host
  listeners:
    - name: mx
      address: 127.0.0.1
      port: 2525

# The relay's own certificate.
tls:
  # generated at first start until the CA-issued one arrives
  certificate:
    self_signed:
      key: ecdsa-p256   # small and fast
  # whom we trust when verifying peers
  ca_bundle: system   # the OS store

delivery:
  retry_interval: 10m  # the seed's default was 15 minutes
"""


def cert(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `sealrelay cert ARGS` in `cwd` as a fresh process."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    code = "from engine.cli.cert import cert_app; cert_app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120
    )


def openssl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30, check=check)


def fingerprint(pem_file: Path) -> str:
    out = openssl("x509", "-in", str(pem_file), "-noout", "-fingerprint", "-sha256").stdout
    return out.strip().split("=", 1)[1]


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and directory under `directory`: to prove that nothing changed."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "relay.yaml").write_text(CONFIG, encoding="utf-8")
    return tmp_path


def make_pfx(directory: Path, name: str = FQDN, password: str = PFX_PASSWORD) -> Path:
    """A PFX as the seed makes it: `openssl pkcs12 -export`, leaf from an intermediate CA."""
    root = trustme.CA(organization_name="Test Root CA")
    intermediate = root.create_child_ca()
    leaf = intermediate.issue_cert(name, common_name=name)
    key_file, leaf_file, chain_file = directory / "certificate.key", directory / "leaf.crt", directory / "chain.crt"
    leaf.private_key_pem.write_to_path(str(key_file))
    leaf.cert_chain_pems[0].write_to_path(str(leaf_file))
    intermediate.cert_pem.write_to_path(str(chain_file))
    out = directory / "certificate.pfx"
    openssl(
        "pkcs12", "-export", "-inkey", str(key_file), "-in", str(leaf_file), "-certfile", str(chain_file),
        "-out", str(out), "-passout", f"pass:{password}",
    )  # fmt: skip
    return out


def import_ok(site: Path, pfx: Path) -> subprocess.CompletedProcess[str]:
    proc = cert("import-pfx", str(pfx), "--password-env", "PFXPW", cwd=site, env={"PFXPW": PFX_PASSWORD})
    assert proc.returncode == 0, proc.stderr
    return proc


# -- self-signed ---------------------------------------------------------------------------


def test_self_signed_names_the_fqdn_and_replaces_the_old_one(site: Path) -> None:
    first = cert("self-signed", cwd=site)
    assert first.returncode == 0, first.stderr
    cert_file, key_file = site / "var/tls/cert.pem", site / "var/tls/key.pem"
    shown = openssl("x509", "-in", str(cert_file), "-noout", "-subject", "-ext", "subjectAltName").stdout
    assert f"subject=CN = {FQDN}" in shown and f"DNS:{FQDN}" in shown
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    first_fp = fingerprint(cert_file)
    assert f"new certificate: {first_fp}" in first.stdout and "old certificate: none" in first.stdout

    second = cert("self-signed", "--key", "rsa-2048", "--days", "90", cwd=site)
    assert second.returncode == 0, second.stderr
    assert f"old certificate: {first_fp}" in second.stdout
    assert f"new certificate: {fingerprint(cert_file)}" in second.stdout and fingerprint(cert_file) != first_fp
    assert "Public-Key: (2048 bit)" in openssl("x509", "-in", str(cert_file), "-noout", "-text").stdout
    assert (site / "relay.yaml").read_text(encoding="utf-8") == CONFIG  # a self_signed config stays as it is


def test_self_signed_on_a_pfx_config_needs_switch(site: Path) -> None:
    import_ok(site, make_pfx(site))
    before = snapshot(site)
    refused = cert("self-signed", cwd=site, env={"PFXPW": PFX_PASSWORD})
    assert refused.returncode == 1 and "--switch" in refused.stderr
    assert snapshot(site) == before

    switched = cert("self-signed", "--switch", "--key", "rsa-2048", cwd=site, env={"PFXPW": PFX_PASSWORD})
    assert switched.returncode == 0, switched.stderr
    text = (site / "relay.yaml").read_text(encoding="utf-8")
    assert "self_signed:\n      key: rsa-2048\n      valid_days: 825" in text and "pfx" not in text
    assert "# whom we trust when verifying peers" in text
    assert load_config(site / "relay.yaml").ok
    assert f"subject=CN = {FQDN}" in openssl("x509", "-in", str(site / "var/tls/cert.pem"), "-noout", "-subject").stdout


# -- csr -----------------------------------------------------------------------------------


def test_csr_has_the_seed_subject_and_verifies(site: Path) -> None:
    proc = cert("csr", *SUBJECT, cwd=site)
    assert proc.returncode == 0, proc.stderr
    assert f"CN = {FQDN}" in proc.stdout and "system.fqdn" in proc.stdout
    csr, key = site / "certificate.csr", site / "certificate.key"
    subject = openssl("req", "-in", str(csr), "-noout", "-subject", "-nameopt", "sep_multiline,sname").stdout
    for field in ("C=US", "ST=Texas", "L=Austin", "O=Example Corp", "OU=Mail", f"CN={FQDN}"):
        assert field in subject
    assert "postmaster@example.com" in subject
    assert "verify OK" in openssl("req", "-in", str(csr), "-noout", "-verify").stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert "Private-Key: (2048 bit" in openssl("pkey", "-in", str(key), "-noout", "-text").stdout
    # The CSR is for this key.
    csr_pub = openssl("req", "-in", str(csr), "-noout", "-pubkey").stdout
    assert openssl("pkey", "-in", str(key), "-pubout").stdout == csr_pub


def test_csr_key_password_and_no_overwrite(site: Path) -> None:
    password = "correct horse battery staple"
    (site / "kp.txt").write_text(password + "\n", encoding="utf-8")
    out = ["--out-key", "keys/relay.key", "--out-csr", "keys/relay.csr"]
    proc = cert("csr", *SUBJECT, "--key-password-file", "kp.txt", *out, cwd=site)
    assert proc.returncode == 0, proc.stderr
    key = site / "keys/relay.key"
    assert "ENCRYPTED PRIVATE KEY" in key.read_text()
    assert openssl("pkey", "-in", str(key), "-passin", "pass:wrong", "-noout", check=False).returncode != 0
    assert openssl("pkey", "-in", str(key), "-passin", f"pass:{password}", "-noout").returncode == 0
    assert password not in proc.stdout + proc.stderr

    before = snapshot(site)
    again = cert("csr", *SUBJECT, *out, cwd=site)
    assert again.returncode == 1 and "--force" in again.stderr
    assert snapshot(site) == before
    forced = cert("csr", *SUBJECT, *out, "--force", cwd=site)
    assert forced.returncode == 0, forced.stderr
    assert key.read_bytes() != before["keys/relay.key"] and stat.S_IMODE(key.stat().st_mode) == 0o600


def test_csr_refuses_a_password_over_100_characters(site: Path) -> None:
    proc = cert("csr", *SUBJECT, "--key-password-env", "KP", cwd=site, env={"KP": "x" * 101})
    assert proc.returncode == 1 and "at most 100" in proc.stderr
    assert not (site / "certificate.key").exists() and not (site / "certificate.csr").exists()


# -- import-pfx ----------------------------------------------------------------------------


def test_import_pfx_rewrites_the_config_and_keeps_the_chain(site: Path) -> None:
    pfx = make_pfx(site)
    proc = import_ok(site, pfx)
    assert PFX_PASSWORD not in proc.stdout + proc.stderr
    copied = site / "secrets/relay.pfx"
    assert copied.read_bytes() == pfx.read_bytes() and stat.S_IMODE(copied.stat().st_mode) == 0o600
    text = (site / "relay.yaml").read_text(encoding="utf-8")
    expected = CONFIG.replace(
        "    self_signed:\n      key: ecdsa-p256   # small and fast\n",
        "    pfx:\n      path: secrets/relay.pfx\n      password:\n        env: PFXPW\n",
    )
    assert text == expected  # every comment, the order and the indentation kept; only the source changed
    result = load_config(site / "relay.yaml")
    assert result.ok, result.diagnostics

    # The copied PFX holds the leaf and the intermediate; `show` sees the same.
    certs_out = openssl("pkcs12", "-in", str(copied), "-nokeys", "-passin", f"pass:{PFX_PASSWORD}").stdout
    assert certs_out.count("BEGIN CERTIFICATE") == 2
    shown = cert("show", "--format", "json", cwd=site, env={"PFXPW": PFX_PASSWORD})
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["source"] == "pfx" and doc["chain_length"] == 2 and not doc["self_signed"]
    assert doc["subject_cn"] == FQDN and doc["matches_fqdn"] and doc["ok"]


def test_import_pfx_with_a_password_file_refers_to_it(site: Path) -> None:
    (site / "secrets").mkdir()
    (site / "secrets/pfx-password").write_text(PFX_PASSWORD + "\n", encoding="utf-8")
    proc = cert("import-pfx", str(make_pfx(site)), "--password-file", "secrets/pfx-password", cwd=site)
    assert proc.returncode == 0, proc.stderr
    assert "password:\n        file: secrets/pfx-password\n" in (site / "relay.yaml").read_text(encoding="utf-8")
    assert load_config(site / "relay.yaml").ok


def test_import_pfx_wrong_password_changes_nothing(site: Path) -> None:
    import_ok(site, make_pfx(site))  # an earlier import: its PFX must survive too
    newer = make_pfx(site / "secrets", password="AnotherPassword")
    before = snapshot(site)
    proc = cert("import-pfx", str(newer), "--password-env", "PFXPW", cwd=site, env={"PFXPW": "NotThePassword"})
    assert proc.returncode == 1
    assert "wrong PFX password" in proc.stderr and "NotThePassword" not in proc.stdout + proc.stderr
    assert snapshot(site) == before


def test_import_pfx_name_mismatch_is_refused(site: Path) -> None:
    pfx = make_pfx(site, name="other.example.net")
    before = snapshot(site)
    env = {"PFXPW": PFX_PASSWORD}
    proc = cert("import-pfx", str(pfx), "--password-env", "PFXPW", cwd=site, env=env)
    assert proc.returncode == 1 and f"not for {FQDN}" in proc.stderr and "other.example.net" in proc.stderr
    assert snapshot(site) == before
    # Past this command's check, the config engine still requires the name: all is put back.
    forced = cert("import-pfx", str(pfx), "--password-env", "PFXPW", "--allow-name-mismatch", cwd=site, env=env)
    assert forced.returncode == 65 and "put back" in forced.stderr  # the rewritten config is invalid
    assert re.search(r"relay\.yaml:\d+:\d+: tls\.certificate\.pfx\.path: certificate CN is other", forced.stderr)
    assert snapshot(site) == before


def test_import_pfx_into_directory_configs(tmp_path: Path) -> None:
    split = tmp_path / "split"
    shutil.copytree(ROOT / "examples/split", split)
    pfx = make_pfx(tmp_path)
    others = {p.name: p.read_bytes() for p in split.glob("[12]*.yaml")}
    proc = cert("import-pfx", str(pfx), str(split), "--password-env", "PFXPW", cwd=tmp_path, env={"PFXPW": "x"})
    assert proc.returncode == 1 and "wrong PFX password" in proc.stderr
    proc = cert(
        "import-pfx", str(pfx), str(split), "--password-env", "PFXPW", cwd=tmp_path, env={"PFXPW": PFX_PASSWORD}
    )
    assert proc.returncode == 0, proc.stderr
    # No file had `tls`: it goes to the file with `version`; the DLP files are untouched.
    system = (split / "00-system.yaml").read_text(encoding="utf-8")
    assert system.startswith("# yaml-language-server") and system.rstrip().endswith(
        "tls:\n  certificate:\n    pfx:\n      path: secrets/relay.pfx\n      password:\n        env: PFXPW"
    )
    assert {p.name: p.read_bytes() for p in split.glob("[12]*.yaml")} == others
    assert (split / "secrets/relay.pfx").read_bytes() == pfx.read_bytes()
    assert load_config(split).ok

    # A directory where a later file owns `tls`: that file is the one rewritten.
    (split / "30-tls.yaml").write_text(
        "# TLS, owned by the platform team\ntls:\n  certificate: {self_signed: {key: rsa-2048}}  # flow\n"
        "  ca_bundle: system\n",
        encoding="utf-8",
    )
    (split / "00-system.yaml").write_text(system.split("tls:")[0], encoding="utf-8")
    proc = cert(
        "import-pfx", str(pfx), str(split), "--password-env", "PFXPW", cwd=tmp_path, env={"PFXPW": PFX_PASSWORD}
    )
    assert proc.returncode == 0, proc.stderr
    lines = (split / "30-tls.yaml").read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["# TLS, owned by the platform team", "tls:"] and lines[3:] == ["  ca_bundle: system"]
    # Flow style stays flow style, and the comment after it stays (ruamel may move its column).
    assert re.fullmatch(
        r"  certificate: \{pfx: \{path: secrets/relay.pfx, password: \{env: PFXPW\}\}\} +# flow", lines[2]
    )
    assert "tls" not in (split / "00-system.yaml").read_text(encoding="utf-8")
    assert load_config(split).ok


# -- show ----------------------------------------------------------------------------------


def write_expired(tls_dir: Path, name: str = FQDN) -> None:
    """A self-signed pair for `name` that expired yesterday, where `ensure_certificate` keeps it."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=400))
        .not_valid_after(now - dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    tls_dir.mkdir(parents=True, exist_ok=True)
    (tls_dir / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tls_dir / "key.pem").write_bytes(pem)


def test_show_reports_the_active_certificate(site: Path) -> None:
    assert cert("self-signed", cwd=site).returncode == 0
    proc = cert("show", cwd=site)
    assert proc.returncode == 0, proc.stderr
    fp = fingerprint(site / "var/tls/cert.pem")
    for line in (f"subject CN    {FQDN}", f"SANs          {FQDN}", f"SHA-256       {fp}", "self-signed   yes"):
        assert line in proc.stdout
    assert "key           ECDSA 256" in proc.stdout and f"matches fqdn  yes ({FQDN})" in proc.stdout


def test_show_exits_1_when_expired(site: Path) -> None:
    write_expired(site / "var/tls")
    proc = cert("show", cwd=site)
    assert proc.returncode == 1 and "error: expired" in proc.stderr
    doc = json.loads(cert("show", "--format", "json", cwd=site).stdout)
    assert doc["validity"]["status"] == "error" and doc["days_left"] < 0 and not doc["ok"]


def test_show_exits_1_when_the_name_does_not_match(site: Path) -> None:
    assert cert("self-signed", cwd=site).returncode == 0
    config = site / "relay.yaml"
    config.write_text(CONFIG.replace(f"fqdn: {FQDN}", "fqdn: relay.example.org"), encoding="utf-8")
    proc = cert("show", cwd=site)
    assert proc.returncode == 1 and "matches fqdn  NO (relay.example.org)" in proc.stdout
    assert "error: certificate CN is mail.example.com" in proc.stderr


def test_show_without_a_certificate_says_what_to_do(site: Path) -> None:
    proc = cert("show", cwd=site)
    assert proc.returncode == 1 and "sealrelay cert self-signed" in proc.stderr


def test_an_invalid_config_is_reported_not_touched(site: Path) -> None:
    (site / "relay.yaml").write_text(CONFIG.replace("version: 1", "version: 7"), encoding="utf-8")
    before = snapshot(site)
    proc = cert("self-signed", cwd=site)
    assert proc.returncode == 65 and "relay.yaml:2:10: version: unsupported config version 7" in proc.stderr
    assert snapshot(site) == before


@pytest.mark.parametrize("command", ["show", "self-signed", "csr", "import-pfx"])
def test_every_command_has_an_example(command: str, tmp_path: Path) -> None:
    proc = cert(command, "--help", cwd=tmp_path)
    assert proc.returncode == 0 and f"Example: sealrelay cert {command}" in proc.stdout


def test_set_certificate_keeps_the_files_own_indentation_and_trailing_comments() -> None:
    text = (
        "version: 1\n"
        "system:\n"
        "  listeners:\n"
        "  - name: mx       # sequences not indented\n"
        "    port: 2525\n"
        "tls:\n"
        "  ca_bundle: system\n"
        "  certificate:\n"
        "    self_signed:\n"
        "      key: rsa-2048\n"
        "\n"
        "# Routes, owned by the mail team\n"
        "routes: []\n"
    )
    new = set_certificate(text, {"pfx": {"path": "secrets/relay.pfx", "password": {"env": "PW"}}})
    assert new == text.replace(
        "    self_signed:\n      key: rsa-2048\n",
        "    pfx:\n      path: secrets/relay.pfx\n      password:\n        env: PW\n",
    )
    # A file without `tls` gets one at the end.
    assert set_certificate("version: 1\n", {"self_signed": {}}).endswith("tls:\n  certificate:\n    self_signed: {}\n")
