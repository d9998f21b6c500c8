"""Failure classification (defer, defer the site, bounce), the retry schedule and the lifetime
check; the exceptions come from real aiosmtplib sessions against aiosmtpd on loopback where
the library raises them."""

from __future__ import annotations

import socket
import ssl

import aiosmtplib
import dns.resolver
import pytest
from aiosmtpd.controller import Controller

from engine.relay.delivery.failures import (
    Failure,
    NoMailHost,
    StageTimeout,
    TLSRequiredError,
    because,
    classify,
    delay_status,
    expire,
    expired,
    next_retry,
)

# -- reply codes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "text", "kind", "status"),
    [
        (450, "4.2.0 mailbox busy", "defer", "4.2.0"),
        (451, "try again later", "defer", "4.0.0"),
        (452, "4.3.1 insufficient storage", "defer", "4.3.1"),
        (421, "4.3.2 shutting down", "defer_site", "4.3.2"),
        (550, "5.1.1 no such user", "bounce", "5.1.1"),
        (554, "transaction failed", "bounce", "5.0.0"),
        (552, "4.2.2 mismatched class is ignored", "bounce", "5.0.0"),
        (530, "5.7.0 Must issue a STARTTLS command first", "defer_site", "4.7.0"),
        (530, "5.7.0 Authentication required", "bounce", "5.7.0"),
        (250, "ok", "defer", "4.5.0"),  # not a failure code at all: never bounce on it
        (999, "??", "defer", "4.5.0"),
    ],
)
def test_reply_codes(code, text, kind, status):
    failure = classify(code, aiosmtplib.SMTPResponseException(code, text))
    assert (failure.kind, failure.status) == (kind, status)
    assert str(code) in failure.reason


def test_code_without_exception():
    assert classify(550, None).kind == "bounce"
    assert classify(450, None).kind == "defer"
    assert classify(421, None).kind == "defer_site"


def test_greeting_and_helo_failures_concern_the_site():
    assert classify(None, aiosmtplib.SMTPConnectResponseError(554, "5.7.1 go away")).kind == "defer_site"
    assert classify(None, aiosmtplib.SMTPHeloError(451, "4.3.0 later")).kind == "defer_site"
    assert classify(None, aiosmtplib.SMTPHeloError(501, "5.5.2 bad HELO")).kind == "bounce"


def test_refused_recipients_in_aggregate():
    hard = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x.net")
    soft = aiosmtplib.SMTPRecipientRefused(450, "4.2.1 later", "b@x.net")
    assert classify(None, aiosmtplib.SMTPRecipientsRefused([hard, hard])).kind == "bounce"
    mixed = classify(None, aiosmtplib.SMTPRecipientsRefused([hard, soft]))
    assert (mixed.kind, mixed.status) == ("defer", "4.2.1")
    assert classify(None, aiosmtplib.SMTPRecipientsRefused([])).kind == "defer"


# -- transport, TLS, DNS -----------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(104, "Connection reset by peer"),
        TimeoutError(),
        OSError(113, "No route to host"),
        aiosmtplib.SMTPServerDisconnected("lost"),
        aiosmtplib.SMTPConnectTimeoutError("timed out"),
        aiosmtplib.SMTPReadTimeoutError("timed out"),
    ],
)
def test_connection_failures_defer_the_site(exc):
    assert classify(None, exc).kind == "defer_site"


@pytest.mark.parametrize(
    "exc",
    [
        TLSRequiredError("peer does not offer STARTTLS"),
        ssl.SSLCertVerificationError("certificate verify failed: hostname mismatch"),
        ssl.SSLError("handshake failure"),
    ],
)
def test_mandatory_tls_not_met_defers_the_site_never_bounces(exc):
    failure = classify(None, exc)
    assert (failure.kind, failure.status) == ("defer_site", "4.7.5")
    assert classify(554, exc).kind == "defer_site"  # even if the peer said 5xx to STARTTLS


@pytest.mark.parametrize(
    ("exc", "connection_level"),
    [
        (aiosmtplib.SMTPConnectError("Error connecting to h on port 25: refused"), True),
        (aiosmtplib.SMTPConnectResponseError(421, "4.3.2 busy"), True),  # the greeting says no
        (aiosmtplib.SMTPConnectResponseError(554, "5.7.1 go away"), True),
        (aiosmtplib.SMTPHeloError(451, "4.3.0 later"), True),
        (TLSRequiredError("handshake failure; mandatory required", handshake=True), True),
        (ssl.SSLError("handshake failure"), True),
        (dns.resolver.LifetimeTimeout(timeout=5.0, errors=[]), True),
        # the peer is there: our policy, its reply to a command, a connection lost mid-session
        (TLSRequiredError("peer does not offer STARTTLS"), False),
        (ssl.SSLCertVerificationError("certificate verify failed"), False),
        (aiosmtplib.SMTPResponseException(421, "4.3.2 closing"), False),
        (aiosmtplib.SMTPResponseException(450, "4.2.1 busy"), False),
        (aiosmtplib.SMTPServerDisconnected("lost"), False),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), False),
    ],
)
def test_connection_level_failures_are_the_ones_that_say_the_destination_is_not_there(exc, connection_level):
    assert classify(None, exc).connection_level is connection_level


@pytest.mark.parametrize(
    ("stage", "reason", "status", "cause", "connection_level"),
    [
        ("connect", "timed out connecting (30 s)", "4.4.1", "connect", True),
        ("greeting", "timed out waiting for the greeting (30 s)", "4.4.2", "connect", True),
        ("helo", "timed out waiting for the reply to EHLO (30 s)", "4.4.2", "connect", True),
        ("starttls", "timed out during STARTTLS (30 s)", "4.4.2", "connect", True),
        ("mail", "timed out waiting for the reply to MAIL FROM (30 s)", "4.4.2", "smtp", False),
        ("rcpt", "timed out waiting for the reply to RCPT TO (30 s)", "4.4.2", "smtp", False),
        ("data", "timed out waiting for the reply to DATA (30 s)", "4.4.2", "smtp", False),
        (
            "data_done",
            "timed out sending the content or waiting for the reply to its end (the message may arrive twice) (30 s)",
            "4.4.2",
            "smtp",
            False,
        ),
    ],
)
def test_a_stage_timeout_says_where_the_peer_stopped_answering(stage, reason, status, cause, connection_level):
    assert classify(None, StageTimeout(stage, 30)) == Failure("defer_site", reason, status, cause, connection_level)


def test_dns():
    assert classify(None, dns.resolver.NXDOMAIN()).kind == "bounce"
    assert classify(None, dns.resolver.NoAnswer()).kind == "bounce"
    null_mx = classify(None, NoMailHost("x.example", "null MX (RFC 7505)", status="5.1.10"))
    assert (null_mx.kind, null_mx.status) == ("bounce", "5.1.10")
    assert classify(None, dns.resolver.LifetimeTimeout(timeout=5.0, errors=[])).kind == "defer_site"
    assert classify(None, dns.resolver.NoNameservers()).kind == "defer_site"


def test_what_is_not_understood_defers():
    assert classify(None, RuntimeError("surprise")) == Failure(
        "defer", "unclassified failure: RuntimeError: surprise", "4.0.0", "internal"
    )


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (TLSRequiredError("no STARTTLS"), "tls"),
        (aiosmtplib.SMTPResponseException(530, "5.7.0 Must issue a STARTTLS command first"), "tls"),
        (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"), "auth"),
        (dns.resolver.NXDOMAIN(), "dns"),
        (dns.resolver.NoNameservers(), "dns"),
        (ConnectionRefusedError(111, "refused"), "connect"),
        (TimeoutError("slow"), "connect"),
        (aiosmtplib.SMTPResponseException(450, "4.2.1 mailbox busy"), "smtp"),
        (aiosmtplib.SMTPResponseException(550, "5.1.1 no such user"), "smtp"),
        (RuntimeError("surprise"), "internal"),
    ],
)
def test_every_failure_names_its_cause(exc, cause):
    assert classify(None, exc).cause == cause


def test_failures_of_our_own_making_by_cause():
    assert because("method", "gateway down") == Failure("defer", "gateway down", "4.7.5", "method")
    assert because("internal", "bug") == Failure("defer", "bug", "4.3.0", "internal")
    assert expire(classify(None, TimeoutError("slow"))) == Failure(
        "bounce", "delivery time expired: timed out: TimeoutError: slow", "5.4.7", "expired"
    )
    located = classify(None, TLSRequiredError("no STARTTLS")).located("mx.example:25")
    assert (located.reason, located.cause) == (
        "mx.example:25: TLS required but not achieved: TLSRequiredError: no STARTTLS",
        "tls",
    )
    assert classify(None, None).kind == "defer"
    assert not classify(None, None).permanent and classify(550, None).permanent


# -- the same, raised by real sessions on loopback ---------------------------------------


class _Refusing:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return "550 5.1.1 no such user" if address.startswith("gone") else "450 4.2.1 try later"


@pytest.fixture
def peer():
    controller = Controller(_Refusing(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    yield controller
    controller.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _send(port: int, rcpt: str) -> BaseException:
    with pytest.raises(Exception) as caught:
        await aiosmtplib.send(
            b"Subject: t\r\n\r\nx\r\n", sender="a@x.net", recipients=[rcpt], hostname="127.0.0.1", port=port, timeout=10
        )
    return caught.value


async def test_real_peer_refusals(peer):
    assert classify(None, await _send(peer.port, "gone@x.net")).kind == "bounce"
    assert classify(None, await _send(peer.port, "busy@x.net")).kind == "defer"


async def test_real_closed_port_defers_the_site():
    failure = classify(None, await _send(_free_port(), "a@x.net"))
    assert failure.kind == "defer_site" and failure.status.startswith("4.")


# -- schedule and lifetime ---------------------------------------------------------------


def test_next_retry_doubles_up_to_the_cap():
    assert [next_retry(n, 300, 3600) for n in range(1, 7)] == [300, 600, 1200, 2400, 3600, 3600]
    assert next_retry(0, 300, 3600) == 300
    assert next_retry(10_000, 300, 3600) == 3600  # no overflow
    assert next_retry(5, 60, 600, backoff=1.0) == 60
    assert next_retry(3, 60, 6000, backoff=3.0) == 540


@pytest.mark.parametrize("args", [(1, 0, 10), (1, 10, 5), (1, 10, 20, 0.5)])
def test_next_retry_refuses_nonsense(args):
    with pytest.raises(ValueError):
        next_retry(*args)


def test_expired():
    assert not expired(1000.0, 1000.0 + 432_000 - 0.001, 432_000)
    assert expired(1000.0, 1000.0 + 432_000, 432_000)
    assert expired(1000.0, 1000.0, 0)  # lifetime 0: one attempt only


def test_a_delay_notice_reports_a_transient_status():
    assert delay_status("4.4.1") == "4.4.1"
    assert delay_status("5.7.1") == "4.7.1"  # still being tried: never a permanent code in a delay notice
