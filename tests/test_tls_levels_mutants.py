"""TLS levels without a network: the order and the properties of every level, the contexts
each one builds, the post-handshake check and the reasons `describe_failure` gives, pinned
exactly. Written against the surviving mutants of scripts/mutate (docs/mutation-results.md);
the handshakes against real peers are in test_tls_levels.py."""

from __future__ import annotations

import re
import ssl
import warnings
from pathlib import Path

import aiosmtplib
import pytest
import trustme

from engine.relay.tls.levels import (
    NoStartTLS,
    TLSLevel,
    TLSPolicyError,
    check_negotiated,
    client_context,
    describe_failure,
    server_context,
)

ALL = ("none", "opportunistic", "mandatory", "verify", "secure", "dane", "mta-sts")
# level: (rank, enforced, requires_tls, verifies_chain, checks_hostname)
PROPERTIES = {
    "none": (0, "none", False, False, False),
    "opportunistic": (1, "opportunistic", False, False, False),
    "mandatory": (2, "mandatory", True, False, False),
    "verify": (3, "verify", True, True, False),
    "secure": (4, "secure", True, True, True),
    "dane": (4, "secure", True, True, True),
    "mta-sts": (4, "secure", True, True, True),
}


@pytest.mark.parametrize("name", ALL)
def test_level_properties(name: str) -> None:
    level = TLSLevel.parse(name)
    assert (level.rank, level.enforced, level.requires_tls, level.verifies_chain, level.checks_hostname) == (
        PROPERTIES[name]
    )
    assert type(level.enforced) is TLSLevel


def test_parse_names_the_valid_levels() -> None:
    assert TLSLevel.parse(TLSLevel.VERIFY) is TLSLevel.VERIFY
    message = "unknown TLS level 'strict'; choose one of none, opportunistic, mandatory, verify, secure, dane, mta-sts"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TLSLevel.parse("strict")


@pytest.mark.parametrize("a", ALL)
@pytest.mark.parametrize("b", ALL)
def test_comparisons_follow_the_rank(a: str, b: str) -> None:
    level, ra, rb = TLSLevel.parse(a), PROPERTIES[a][0], PROPERTIES[b][0]
    assert (level < b, level <= b, level > b, level >= b, level.at_least(b)) == (
        ra < rb,
        ra <= rb,
        ra > rb,
        ra >= rb,
        ra >= rb,
    )


def test_strictest() -> None:
    assert TLSLevel.strictest("verify", "opportunistic", "mandatory") is TLSLevel.VERIFY
    assert TLSLevel.strictest("none") is TLSLevel.NONE
    assert TLSLevel.strictest("secure", TLSLevel.DANE) is TLSLevel.SECURE  # equally strict: the first
    assert TLSLevel.strictest("dane", "secure") is TLSLevel.DANE


def test_policy_errors_carry_their_reason() -> None:
    assert TLSPolicyError("cipher too weak").reason == "cipher too weak"
    assert str(TLSPolicyError("cipher too weak")) == "cipher too weak"
    assert (NoStartTLS().reason, str(NoStartTLS())) == ("peer offered no STARTTLS", "peer offered no STARTTLS")
    assert NoStartTLS("STARTTLS refused: 454").reason == "STARTTLS refused: 454"


# -- contexts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA file, server certificate file, server key file)."""
    root = tmp_path_factory.mktemp("ca")
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf = authority.issue_cert("mx.test.example")
    leaf.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    leaf.private_key_pem.write_to_path(str(root / "key.pem"))
    return root / "ca.pem", root / "cert.pem", root / "key.pem"


@pytest.mark.parametrize(
    ("level", "check_hostname", "verify_mode"),
    [
        ("opportunistic", False, ssl.CERT_NONE),
        ("mandatory", False, ssl.CERT_NONE),
        ("verify", False, ssl.CERT_REQUIRED),
        ("secure", True, ssl.CERT_REQUIRED),
        ("dane", True, ssl.CERT_REQUIRED),
    ],
)
def test_client_context_per_level(ca, level: str, check_hostname: bool, verify_mode: ssl.VerifyMode) -> None:
    context = client_context(level, ca_bundle=ca[0])
    assert (context.check_hostname, context.verify_mode) == (check_hostname, verify_mode)
    assert context.hostname_checks_common_name is False
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    loaded = len(context.get_ca_certs())
    assert loaded == (1 if verify_mode == ssl.CERT_REQUIRED else 0)  # the bundle is read only to verify


def test_client_context_floor_and_strength() -> None:
    assert client_context("none") is None
    defaults = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).options
    assert client_context("mandatory").options & defaults == defaults  # Python's safe defaults are kept
    system = ssl.create_default_context().cert_store_stats()
    assert client_context("verify").cert_store_stats() == system  # the system store unless told otherwise
    assert client_context("mandatory", min_protocol="TLSv1.3").minimum_version is ssl.TLSVersion.TLSv1_3
    bits = {c["strength_bits"] for c in client_context("mandatory").get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert 128 in bits and 256 in bits
    strong = client_context("mandatory", min_cipher_bits=256).get_ciphers()
    assert {c["strength_bits"] for c in strong if c["protocol"] != "TLSv1.3"} == {256}


def test_client_context_refusals() -> None:
    with pytest.raises(ValueError, match=f"^{re.escape('min_cipher_bits must be 128 or 256, not 64')}$"):
        client_context("mandatory", min_cipher_bits=64)
    message = "min_protocol must be one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3, not 'SSLv3'"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        client_context("mandatory", min_protocol="SSLv3")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        server_context("cert.pem", "key.pem", min_protocol="SSLv3")
    message = "CA bundle '/nonexistent/ca.pem' is neither a file nor a directory"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        client_context("verify", ca_bundle="/nonexistent/ca.pem")
    client_context("mandatory", ca_bundle="/nonexistent/ca.pem")  # not read below verify


def test_ca_bundle_sources(ca, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert client_context("verify", ca_bundle=tmp_path / "empty").verify_mode == ssl.CERT_REQUIRED
    assert client_context("verify", ca_bundle=str(ca[0])).get_ca_certs()[0]["subject"]
    system = client_context("verify", ca_bundle="system")
    assert system.cert_store_stats() == ssl.create_default_context().cert_store_stats()


@pytest.mark.parametrize("protocol", ["TLSv1", "TLSv1.1"])
def test_legacy_protocols_without_a_warning(protocol: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        context = client_context("mandatory", min_protocol=protocol)
    assert context.minimum_version is ssl.TLSVersion[protocol.replace(".", "_")]
    assert context.security_level == 0  # OpenSSL 3 refuses TLS 1.0/1.1 above level 0


def test_modern_protocols_keep_the_security_level() -> None:
    assert client_context("mandatory").security_level > 0


def test_server_context(ca) -> None:
    context = server_context(ca[1], ca[2])
    defaults = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).options
    assert context.protocol is ssl.PROTOCOL_TLS_SERVER
    assert context.options & defaults == defaults  # Python's safe defaults are kept
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_CIPHER_SERVER_PREFERENCE and context.options & ssl.OP_NO_COMPRESSION
    assert 128 in {c["strength_bits"] for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"}
    assert server_context(ca[1], ca[2], min_protocol="TLSv1.3").minimum_version is ssl.TLSVersion.TLSv1_3
    assert server_context(ca[1], ca[2], min_protocol="TLSv1").security_level == 0


# -- after the handshake ---------------------------------------------------------------------


class Session:
    """What `check_negotiated` reads of an `ssl.SSLObject`."""

    def __init__(self, version: str | None, cipher: tuple[str, str, int] | None) -> None:
        self._version, self._cipher = version, cipher

    def version(self) -> str | None:
        return self._version

    def cipher(self) -> tuple[str, str, int] | None:
        return self._cipher


AES256 = ("TLS_AES_256_GCM_SHA384", "TLSv1.3", 256)
AES128 = ("ECDHE-RSA-AES128-GCM-SHA256", "TLSv1.2", 128)


@pytest.mark.parametrize(
    ("session", "bits", "protocol", "expected"),
    [
        (Session("TLSv1.2", AES128), 128, "TLSv1.2", None),  # exactly the floor passes
        (Session("TLSv1.3", AES256), 256, "TLSv1.3", None),
        (Session("TLSv1.2", AES128), 128, "TLSv1.3", "protocol TLSv1.2 is below the required TLSv1.3"),
        (Session("TLSv1.1", AES128), 128, "TLSv1", None),
        (Session(None, AES128), 128, "TLSv1.2", "protocol unknown is below the required TLSv1.2"),
        (Session("SSLv3", AES128), 128, "TLSv1", "protocol SSLv3 is below the required TLSv1"),
        (Session("TLSv1.2", None), 128, "TLSv1.2", "no cipher was negotiated"),
        (
            Session("TLSv1.2", AES128),
            256,
            "TLSv1.2",
            "cipher ECDHE-RSA-AES128-GCM-SHA256 is 128-bit, 256-bit required",
        ),
    ],
)
def test_check_negotiated(session: Session, bits: int, protocol: str, expected: str | None) -> None:
    assert check_negotiated(session, bits, protocol) == expected


# -- why a handshake failed ------------------------------------------------------------------


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    error.verify_code, error.verify_message = code, message
    return error


def _ssl_error(reason: str | None, text: str = "handshake failed") -> ssl.SSLError:
    error = ssl.SSLError(1, text)
    error.reason = reason
    return error


def _wrapped(error: BaseException, *, implicit: bool = False) -> BaseException:
    outer = aiosmtplib.SMTPConnectError("Error connecting to mx.test.example")
    if implicit:
        outer.__context__ = error
    else:
        outer.__cause__ = error
    return outer


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (TLSPolicyError("cipher too weak"), "cipher too weak"),
        (_verify_error(10, "certificate has expired"), "certificate has expired"),
        (_verify_error(20, "unable to get local issuer certificate"), "unknown CA"),
        (_verify_error(99, "something new"), "certificate verification failed: something new"),
        (
            _verify_error(62, "Hostname mismatch, certificate is not valid for 'mx.test.example'."),
            "hostname mismatch: certificate is not valid for 'mx.test.example'",
        ),
        (_verify_error(62, "hostname mismatch"), "hostname mismatch: hostname mismatch"),  # another wording
        (  # only OpenSSL's own prefix is cut
            _verify_error(62, "Hostname mismatch, certificate is not valid for 'a', nor for 'b'."),
            "hostname mismatch: certificate is not valid for 'a', nor for 'b'",
        ),
        (ssl.SSLZeroReturnError(6, "TLS/SSL connection has been closed"), "connection closed during TLS handshake"),
        (ssl.SSLEOFError(8, "EOF occurred"), "connection closed during TLS handshake"),
        (_ssl_error("NO_SHARED_CIPHER"), "no shared cipher"),
        (_ssl_error("WRONG_VERSION_NUMBER"), "peer did not answer with TLS"),
        (_ssl_error("SOMETHING_ELSE"), "TLS error: SOMETHING_ELSE"),
        (_ssl_error(None, "odd"), "TLS error: odd"),
        (aiosmtplib.SMTPException("SMTP STARTTLS extension not supported by server."), "peer offered no STARTTLS"),
        (ConnectionResetError(104, "reset"), "connection reset during TLS handshake"),
        (TimeoutError(), "TLS handshake timed out"),
        (ValueError("odd"), "TLS failure: ValueError: odd"),
        (_wrapped(_ssl_error("NO_SHARED_CIPHER")), "no shared cipher"),
        (_wrapped(TimeoutError(), implicit=True), "TLS handshake timed out"),
        (_wrapped(ValueError("odd")), "TLS failure: SMTPConnectError: Error connecting to mx.test.example"),
    ],
)
def test_describe_failure(exc: BaseException, expected: str) -> None:
    assert describe_failure(exc) == expected


def test_describe_failure_survives_a_cycle() -> None:
    first, second = ValueError("a"), KeyError("b")
    first.__context__, second.__context__ = second, first
    assert describe_failure(first) == "TLS failure: ValueError: a"
