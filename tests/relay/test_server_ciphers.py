"""What the listeners offer with TLS 1.2: Mozilla's intermediate profile (forward-secret AEAD
only) unless `tls.server_ciphers: compatible`. Real handshakes on loopback."""

from __future__ import annotations

import ssl

import aiosmtplib
import pytest

from tests.relay.test_edge import route_to

LEGACY_CBC = "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA"


def client(ciphers: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


async def handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """The cipher negotiated by STARTTLS, or None when the handshake fails."""
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False, tls_context=ctx, timeout=10)
    await smtp.connect()
    try:
        await smtp.starttls()
    except (aiosmtplib.SMTPException, ssl.SSLError, ConnectionError):
        return None
    cipher = smtp.get_transport_info("cipher")[0]
    smtp.close()
    return cipher


@pytest.mark.parametrize(("profile", "cbc_works"), [(None, False), ("intermediate", False), ("compatible", True)])
async def test_cbc_sha1_suites_only_when_asked_for(write_config, start_relay, profile, cbc_works) -> None:
    extra = route_to(1) + (f"tls:\n  server_ciphers: {profile}\n" if profile else "")
    relay = await start_relay(write_config(extra))
    port = relay.ports()["mx"]
    modern = await handshake(port, client(None))
    assert modern is not None and ("GCM" in modern or "CHACHA20" in modern)  # TLS 1.2 with AEAD
    legacy = await handshake(port, client(LEGACY_CBC))
    assert (legacy is not None) is cbc_works, legacy
    if cbc_works:
        assert legacy.endswith("-SHA")
