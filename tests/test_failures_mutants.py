"""The failure classifier, pinned to the exact `Failure` of every branch: kind, reason and
status together, since all three reach the queue, the delay notice and the NDR. Written
against the surviving mutants of scripts/mutate (docs/mutation-results.md)."""

from __future__ import annotations

import re

import aiosmtplib
import dns.exception
import dns.resolver
import pytest

from engine.config.secrets import SecretError
from engine.relay.delivery.failures import (
    Failure,
    NoMailHost,
    TLSRequiredError,
    because,
    classify,
    delay_status,
    expire,
    next_retry,
)
from engine.relay.delivery.resolve import PermanentDNSError, TemporaryDNSError


def _caused(exc: BaseException, cause: BaseException, *, implicit: bool = False) -> BaseException:
    if implicit:
        exc.__context__ = cause
    else:
        exc.__cause__ = cause
    return exc


HARD = aiosmtplib.SMTPRecipientRefused(550, "5.1.1 unknown", "a@x.net")
GONE = aiosmtplib.SMTPRecipientRefused(551, "5.2.1 disabled", "b@x.net")
SOFT = aiosmtplib.SMTPRecipientRefused(450, "4.2.1 later", "c@x.net")


@pytest.mark.parametrize(
    ("code", "exc", "expected"),
    [
        # every refusal permanent: bounce with the first one's status, all reasons joined
        (
            None,
            aiosmtplib.SMTPRecipientsRefused([HARD, GONE]),
            Failure("bounce", "host said: 550 5.1.1 unknown; host said: 551 5.2.1 disabled", "5.1.1"),
        ),
        (
            None,
            aiosmtplib.SMTPRecipientsRefused([HARD, SOFT]),
            Failure("defer", "host said: 550 5.1.1 unknown; host said: 450 4.2.1 later", "4.2.1"),
        ),
        (
            None,
            aiosmtplib.SMTPRecipientsRefused([]),
            Failure("defer", "SMTPRecipientsRefused: []", "4.0.0", "internal"),
        ),
        (
            None,
            TLSRequiredError("peer offered no STARTTLS"),
            Failure(
                "defer_site",
                "TLS required but not achieved: TLSRequiredError: peer offered no STARTTLS",
                "4.7.5",
                "tls",
            ),
        ),
        (
            None,
            aiosmtplib.SMTPAuthenticationError(535, "5.7.8 bad credentials"),
            Failure(
                "defer_site",
                "SMTP AUTH to the next hop failed: SMTPAuthenticationError: (535, '5.7.8 bad credentials')",
                "4.7.8",
                "auth",
            ),
        ),
        (
            550,
            SecretError("env SMTP_PASSWORD is not set"),
            Failure(
                "defer_site",
                "SMTP AUTH to the next hop failed: SecretError: env SMTP_PASSWORD is not set",
                "4.7.8",
                "auth",
            ),
        ),
        (
            None,
            PermanentDNSError("x.example", "NXDOMAIN"),
            Failure("bounce", "no mail host: x.example: NXDOMAIN", "5.4.4", "dns"),
        ),
        (
            None,
            PermanentDNSError("x.example", "null MX", status="5.1.10"),
            Failure("bounce", "no mail host: x.example: null MX", "5.1.10", "dns"),
        ),
        (  # an empty status falls back to the class's own
            None,
            PermanentDNSError("x.example", "no address", status=""),
            Failure("bounce", "no mail host: x.example: no address", "5.4.4", "dns"),
        ),
        (
            None,
            TemporaryDNSError("x.example", "SERVFAIL"),
            Failure("defer_site", "DNS lookup failed: x.example: SERVFAIL", "4.4.3", "dns", True),
        ),
        (
            None,
            TemporaryDNSError("x.example", "timeout", status=""),
            Failure("defer_site", "DNS lookup failed: x.example: timeout", "4.4.3", "dns", True),
        ),
        (
            None,
            NoMailHost("x.example", "null MX"),
            Failure("bounce", "no mail host: x.example: null MX", "5.4.4", "dns"),
        ),
        (
            None,
            dns.resolver.NXDOMAIN(),
            Failure("bounce", "domain not found: NXDOMAIN: The DNS query name does not exist.", "5.4.4", "dns"),
        ),
        (
            None,
            dns.resolver.NoAnswer(),
            Failure(
                "bounce",
                "domain not found: NoAnswer: The DNS response does not contain an answer to the question.",
                "5.4.4",
                "dns",
            ),
        ),
        (
            None,
            dns.resolver.NoNameservers(),
            Failure(
                "defer_site",
                "DNS lookup failed: NoNameservers: All nameservers failed to answer the query.",
                "4.4.3",
                "dns",
                True,
            ),
        ),
        (
            None,
            dns.exception.DNSException("odd"),
            Failure("defer_site", "DNS lookup failed: DNSException: odd", "4.4.3", "dns", True),
        ),
    ],
)
def test_exceptions(code, exc, expected):
    assert classify(code, exc) == expected


@pytest.mark.parametrize(
    ("code", "exc", "expected"),
    [
        (450, None, Failure("defer", "host said: 450", "4.0.0")),  # no text: nothing after the code
        (421, None, Failure("defer_site", "host said: 421", "4.4.2")),
        (
            None,
            aiosmtplib.SMTPResponseException(421, "closing"),
            Failure("defer_site", "host said: 421 closing", "4.4.2"),
        ),
        # the code given wins over the exception's own
        (
            421,
            aiosmtplib.SMTPResponseException(550, "5.1.1 x"),
            Failure("defer_site", "host said: 421 5.1.1 x", "4.4.2"),
        ),
        (400, None, Failure("defer", "host said: 400", "4.0.0")),
        (499, None, Failure("defer", "host said: 499", "4.0.0")),
        (500, None, Failure("bounce", "host said: 500", "5.0.0")),
        (599, None, Failure("bounce", "host said: 599", "5.0.0")),
        (399, None, Failure("defer", "unexpected reply: host said: 399", "4.5.0")),
        (
            530,
            None,
            Failure("bounce", "host said: 530", "5.0.0"),  # no word of STARTTLS: an ordinary 5xx
        ),
        (
            None,
            aiosmtplib.SMTPResponseException(530, "5.7.0 Must issue a STARTTLS command first"),
            Failure(
                "defer_site",
                "peer requires STARTTLS: host said: 530 5.7.0 Must issue a STARTTLS command first",
                "4.7.0",
                "tls",
            ),
        ),
        (600, None, Failure("defer", "unexpected reply: host said: 600", "4.5.0")),
    ],
)
def test_reply_codes(code, exc, expected):
    assert classify(code, exc) == expected


REFUSED = ConnectionRefusedError("refused")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            _caused(aiosmtplib.SMTPConnectError("Error connecting to h"), REFUSED),
            Failure(
                "defer_site", "connection refused: SMTPConnectError: Error connecting to h", "4.4.1", "connect", True
            ),
        ),
        (
            _caused(aiosmtplib.SMTPConnectError("Error connecting to h"), REFUSED, implicit=True),
            Failure(
                "defer_site", "connection refused: SMTPConnectError: Error connecting to h", "4.4.1", "connect", True
            ),
        ),
        (  # only a connect error's cause counts; a connection lost during the session is not connection-level
            _caused(aiosmtplib.SMTPServerDisconnected("lost"), REFUSED),
            Failure("defer_site", "connection failed: SMTPServerDisconnected: lost", "4.4.2", "connect"),
        ),
        (
            OSError("[Errno 111] Connect call failed ('127.0.0.1', 25)"),
            Failure(
                "defer_site",
                "connection refused: OSError: [Errno 111] Connect call failed ('127.0.0.1', 25)",
                "4.4.1",
                "connect",
                True,
            ),
        ),
        (TimeoutError(), Failure("defer_site", "timed out: TimeoutError", "4.4.1", "connect", True)),
        (
            REFUSED,
            Failure("defer_site", "connection refused: ConnectionRefusedError: refused", "4.4.1", "connect", True),
        ),
        (
            OSError(113, "No route to host"),
            Failure("defer_site", "connection failed: OSError: [Errno 113] No route to host", "4.4.2", "connect", True),
        ),
        (None, Failure("defer", "delivery failed for an unknown reason", "4.0.0", "internal")),
        (RuntimeError(), Failure("defer", "unclassified failure: RuntimeError", "4.0.0", "internal")),
    ],
)
def test_without_a_code(exc, expected):
    assert classify(None, exc) == expected


def test_no_mail_host_keeps_the_domain():
    exc = NoMailHost("x.example", "no MX and no address")
    assert (str(exc), exc.domain, exc.status) == ("x.example: no MX and no address", "x.example", "5.4.4")


def test_next_retry_edges():
    assert next_retry(1, 0.5, 10) == 0.5  # an interval under a second is fine
    assert next_retry(3, 10, 10) == 10  # the cap may equal the interval
    message = "need 0 < retry_interval_s <= max_retry_interval_s and backoff >= 1"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        next_retry(1, 0, 10)


@pytest.mark.parametrize(
    ("cause", "expected"),
    [
        ("method", Failure("defer", "no method", "4.7.5", "method")),
        ("tls", Failure("defer", "no method", "4.7.5", "tls")),
        ("internal", Failure("defer", "no method", "4.3.0", "internal")),
        ("expired", Failure("bounce", "no method", "5.4.7", "expired")),
    ],
)
def test_failures_of_our_own(cause, expected):
    assert because(cause, "no method") == expected


def test_expire_keeps_the_last_reason():
    last = Failure("defer", "host said: 450 busy", "4.0.0")
    expected = Failure("bounce", "delivery time expired: host said: 450 busy", "5.4.7", "expired")
    assert expire(last) == expected
    assert expire("host said: 450 busy") == expected


def test_located_prefixes_the_reason_only():
    failure = Failure("defer_site", "timed out: TimeoutError", "4.4.1", "connect")
    assert failure.located("mx.example[192.0.2.1]:25") == Failure(
        "defer_site", "mx.example[192.0.2.1]:25: timed out: TimeoutError", "4.4.1", "connect"
    )


@pytest.mark.parametrize(("status", "delayed"), [("4.4.1", "4.4.1"), ("5.1.1", "4.1.1"), ("5.7.0", "4.7.0")])
def test_a_delay_notice_reports_a_transient_status(status: str, delayed: str) -> None:
    assert delay_status(status) == delayed
