"""TLS levels against real peers on loopback: which certificates each level accepts, and why not.

Every server here is a real TLS endpoint on 127.0.0.1 (asyncio, aiosmtpd, or `openssl
s_server`); every client uses the context `client_context` builds for a level.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP

from engine.relay.tls.levels import (
    NoStartTLS,
    TLSLevel,
    check_negotiated,
    client_context,
    describe_failure,
    server_context,
)
from tests.pki import build_pki

FQDN = "mx.test.example"
TIMEOUT = 10
LEVELS = ("opportunistic", "mandatory", "verify", "secure")


# -- the certificate matrix ----------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Server (cert_file, key_file) per case, plus the trusted CA's file under "ca"."""
    return build_pki(tmp_path_factory.mktemp("pki"), FQDN)


# -- peers ---------------------------------------------------------------------------------


@asynccontextmanager
async def tls_server(context: ssl.SSLContext) -> AsyncIterator[tuple[int, asyncio.Queue]]:
    """A TLS server on 127.0.0.1: greets each client and queues its `ssl_object`."""
    sessions: asyncio.Queue = asyncio.Queue()

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await sessions.put(writer.get_extra_info("ssl_object"))
        writer.write(b"220 ready\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1], sessions
    finally:
        server.close()
        await server.wait_closed()


async def connect(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """Handshake with `context`, read the greeting, return the client's `ssl_object`."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=FQDN), TIMEOUT
    )
    try:
        assert await asyncio.wait_for(reader.readline(), TIMEOUT) == b"220 ready\r\n"
        return writer.get_extra_info("ssl_object")
    finally:
        writer.close()


async def outcome(pki: dict, case: str, context: ssl.SSLContext) -> str:
    """'ok', or the reason `describe_failure` gives for the failed handshake."""
    async with tls_server(server_context(*pki[case])) as (port, _):
        try:
            await connect(port, context)
        except (ssl.SSLError, OSError) as exc:
            return describe_failure(exc)
    return "ok"


# -- which level accepts which certificate -------------------------------------------------

OK = "ok"
EXPECTED = {
    "good": (OK, OK, OK, OK),
    "wrong_san": (OK, OK, OK, "hostname mismatch: certificate is not valid for 'mx.test.example'"),
    "cn_only": (OK, OK, OK, "hostname mismatch: certificate is not valid for 'mx.test.example'"),
    "expired": (OK, OK, "certificate has expired", "certificate has expired"),
    "untrusted": (OK, OK, "unknown CA", "unknown CA"),
    "self_signed": (OK, OK, "self-signed certificate", "self-signed certificate"),
}


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("case", list(EXPECTED))
async def test_certificate_matrix(pki: dict, case: str, level: str) -> None:
    context = client_context(level, ca_bundle=pki["ca"][0])
    expected = EXPECTED[case][LEVELS.index(level)]
    assert await outcome(pki, case, context) == expected


async def test_secure_never_falls_back_to_the_common_name(pki: dict) -> None:
    # Control: the same certificate passes when CN fallback is switched back on, so the
    # refusal above comes from hostname_checks_common_name = False and nothing else.
    context = client_context("secure", ca_bundle=pki["ca"][0])
    assert context.hostname_checks_common_name is False
    context.hostname_checks_common_name = True
    assert await outcome(pki, "cn_only", context) == OK


@pytest.mark.parametrize("level", ["dane", "mta-sts"])
async def test_reserved_levels_are_enforced_like_secure(pki: dict, level: str) -> None:
    context = client_context(level, ca_bundle=pki["ca"][0])
    assert await outcome(pki, "good", context) == OK
    assert (await outcome(pki, "wrong_san", context)).startswith("hostname mismatch")


async def test_own_self_signed_certificate_pinned_as_ca_passes_secure(pki: dict) -> None:
    cert_file, _ = pki["self_signed"]
    context = client_context("secure", ca_bundle=cert_file)
    assert await outcome(pki, "self_signed", context) == OK


def test_level_none_builds_no_context_and_levels_are_ordered() -> None:
    assert client_context("none") is None
    order = [TLSLevel.parse(name) for name in ("none", *LEVELS)]
    assert order == sorted(order)
    assert TLSLevel.MANDATORY > "opportunistic" and TLSLevel.VERIFY < TLSLevel.SECURE
    assert TLSLevel.strictest("opportunistic", "verify", "mandatory") is TLSLevel.VERIFY
    assert TLSLevel.DANE.enforced is TLSLevel.SECURE
    assert not TLSLevel.OPPORTUNISTIC.requires_tls and TLSLevel.MANDATORY.requires_tls
    with pytest.raises(ValueError, match="unknown TLS level 'strict'"):
        TLSLevel.parse("strict")


# -- protocol and cipher strength ----------------------------------------------------------


@asynccontextmanager
async def openssl_server(pki: dict, *options: str) -> AsyncIterator[int]:
    """`openssl s_server` with the good certificate and `options`, as a foreign TLS peer.

    Used where the peer must be pinned to what Python's `ssl` cannot configure (TLS 1.3
    suites), or must answer a refused handshake with a proper alert as MTAs do.
    """
    cert_file, key_file = pki["good"]
    server = await asyncio.create_subprocess_exec(
        *("openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", str(cert_file)),
        *("-key", str(key_file), *options),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield await asyncio.wait_for(_accept_port(server.stdout), TIMEOUT)
    finally:
        server.kill()
        await server.wait()


async def _accept_port(stdout: asyncio.StreamReader) -> int:
    """The port `openssl s_server` prints as `ACCEPT 127.0.0.1:<port>`."""
    while line := await stdout.readline():
        if line.startswith(b"ACCEPT "):
            return int(line.rsplit(b":", 1)[1])
    raise AssertionError("openssl s_server exited without listening")


async def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLObject:
    """Complete a handshake with the peer on `port`; return the client's `ssl_object`."""
    _, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=FQDN), TIMEOUT
    )
    writer.close()
    return writer.get_extra_info("ssl_object")


async def test_client_demanding_tls13_refuses_a_tls12_only_server(pki: dict) -> None:
    async with openssl_server(pki, "-tls1_2") as port:
        with pytest.raises(ssl.SSLError) as failure:
            await handshake(port, client_context("mandatory", min_protocol="TLSv1.3"))
    async with openssl_server(pki, "-tls1_2") as port:
        assert (await handshake(port, client_context("mandatory"))).version() == "TLSv1.2"
    assert describe_failure(failure.value) == "no common TLS protocol version"


async def test_legacy_protocol_only_when_a_rule_allows_it(pki: dict) -> None:
    # TLS 1.0 is refused by default and needs OpenSSL security level 0 when a rule allows it.
    legacy = ("-tls1", "-cipher", "ECDHE+AES:@SECLEVEL=0")
    async with openssl_server(pki, *legacy) as port:
        with pytest.raises(ssl.SSLError) as failure:
            await handshake(port, client_context("mandatory"))
    assert describe_failure(failure.value) == "no common TLS protocol version"
    async with openssl_server(pki, *legacy) as port:
        session = await handshake(port, client_context("mandatory", min_protocol="TLSv1"))
    assert session.version() == "TLSv1"
    assert check_negotiated(session, 128, "TLSv1") is None
    assert check_negotiated(session, 128, "TLSv1.2") == ("protocol TLSv1 is below the required TLSv1.2")


async def test_256_bit_minimum_against_a_server_forced_to_aes128(pki: dict) -> None:
    forced = ("-tls1_2", "-cipher", "ECDHE+AES128")
    # Our TLS 1.2 cipher list for 256 bits offers no AES-128 suite: no handshake at all.
    async with openssl_server(pki, *forced) as port:
        with pytest.raises(ssl.SSLError) as failure:
            await handshake(port, client_context("mandatory", min_cipher_bits=256))
    assert describe_failure(failure.value).startswith("no shared cipher")
    # A 128-bit client gets through, and the post-handshake check names the weak cipher.
    async with openssl_server(pki, *forced) as port:
        session = await handshake(port, client_context("mandatory", min_cipher_bits=128))
    reason = check_negotiated(session, 256, "TLSv1.2")
    assert reason is not None and "AES128" in reason and "256-bit required" in reason
    assert check_negotiated(session, 128, "TLSv1.2") is None


async def test_inbound_rule_checks_the_peer_after_the_handshake(pki: dict) -> None:
    weak_client = ssl.create_default_context(cafile=pki["ca"][0])
    weak_client.maximum_version = ssl.TLSVersion.TLSv1_2
    weak_client.set_ciphers("ECDHE+AES128")
    async with tls_server(server_context(*pki["good"])) as (port, sessions):
        await connect(port, weak_client)
        peer = await asyncio.wait_for(sessions.get(), TIMEOUT)
    assert "128-bit, 256-bit required" in check_negotiated(peer, 256, "TLSv1.2")
    assert "TLSv1.2 is below the required TLSv1.3" in check_negotiated(peer, 128, "TLSv1.3")
    assert check_negotiated(peer, 128, "TLSv1.2") is None


async def test_tls13_suite_below_256_bits_is_caught_after_the_handshake(pki: dict) -> None:
    # Python cannot restrict TLS 1.3 suites, so a server choosing AES-128-GCM completes the
    # handshake; check_negotiated is what stops the transfer.
    context = client_context("secure", ca_bundle=pki["ca"][0], min_cipher_bits=256)
    async with openssl_server(pki, "-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256") as port:
        session = await handshake(port, context)
    assert session.version() == "TLSv1.3"
    assert check_negotiated(session, 256, "TLSv1.2") == ("cipher TLS_AES_128_GCM_SHA256 is 128-bit, 256-bit required")


def test_cipher_lists_hold_only_suites_of_the_required_strength() -> None:
    for bits in (128, 256):
        context = client_context("mandatory", min_cipher_bits=bits)
        tls12 = [c for c in context.get_ciphers() if c["protocol"] != "TLSv1.3"]
        assert tls12 and all(c["strength_bits"] >= bits for c in tls12)
    with pytest.raises(ValueError, match="min_cipher_bits"):
        client_context("mandatory", min_cipher_bits=64)
    with pytest.raises(ValueError, match="min_protocol"):
        client_context("mandatory", min_protocol="SSLv3")


# -- STARTTLS through SMTP peers -----------------------------------------------------------


class _Sink:
    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        return "250 OK"


@asynccontextmanager
async def smtp_server(tls: ssl.SSLContext | None) -> AsyncIterator[int]:
    """An aiosmtpd server on 127.0.0.1 that offers STARTTLS only when given a context."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(_Sink(), hostname=FQDN, tls_context=tls), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def starttls_outcome(port: int, context: ssl.SSLContext) -> str:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, timeout=TIMEOUT)
    await client.connect()
    try:
        await client.ehlo()
        await client.starttls(tls_context=context, server_hostname=FQDN)
        return "ok"
    except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
        return describe_failure(exc)
    finally:
        client.close()


async def test_peer_without_starttls_is_named(pki: dict) -> None:
    async with smtp_server(None) as port:
        assert await starttls_outcome(port, client_context("mandatory")) == ("peer offered no STARTTLS")
    assert describe_failure(NoStartTLS()) == "peer offered no STARTTLS"


async def test_starttls_failure_through_an_smtp_client_is_named(pki: dict) -> None:
    async with smtp_server(server_context(*pki["expired"])) as port:
        assert await starttls_outcome(port, client_context("mandatory")) == OK
        verify = client_context("verify", ca_bundle=pki["ca"][0])
        assert await starttls_outcome(port, verify) == "certificate has expired"
