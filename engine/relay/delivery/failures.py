"""The one place that decides what a delivery failure means (Postfix's smtp_trouble.c).

`classify(code, exc)` turns an SMTP reply code and/or the exception a delivery attempt raised
into a `Failure`:

- `defer`: this recipient (or message) failed for now; try again on the retry schedule.
- `defer_site`: the next hop is unusable for now (no connection, timeout, DNS temporary
  failure, TLS required but not achieved, 421, a 5xx greeting); defer every recipient
  routed to it, and the scheduler may hold back the site for a while.
- `bounce`: permanent; return the message to the sender with an NDR.

Decisions beyond "4xx defers, 5xx bounces", each as Postfix does it:

- **Mandatory TLS not met defers, whatever the code.** A peer that does not offer STARTTLS,
  answers STARTTLS with 5xx, fails the handshake or presents a certificate we must refuse,
  defers the site (4.7.5): the failure is our policy meeting the peer's configuration, which
  may be fixed; a message must not bounce because a transport could not be secured, and it
  must not go in clear. Delivery raises `TLSRequiredError` (or lets `ssl.SSLError` through).
- **A 530 "must issue STARTTLS" defers the site** (4.7.0), for the same reason.
- **A 5xx greeting defers the site**: Postfix's `smtp_skip_5xx_greeting` default; RFC 5321
  lets a client try the next MX.
- **REQUIRETLS not met is the exception** (RFC 8689 §4.2.1): for a message received with
  REQUIRETLS, a hop without STARTTLS, with a certificate we refuse, or without REQUIRETLS after
  STARTTLS is skipped like a dead hop (`defer_site`, cause `requiretls`, 5.7.30), and when every
  hop failed that way the message bounces (`requiretls_outcome`); delivery raises
  `RequireTLSUnmet`. The sender asked for exactly that, so no retry can help.
- **Only a definite "no such mail domain" bounces among DNS results**: NXDOMAIN, a null MX
  (RFC 7505), or no MX and no address (delivery raises `NoMailHost`, or lets dnspython's
  NXDOMAIN / NoAnswer through after its MX-to-address fallback). Timeouts and SERVFAIL defer.
- **What is not understood defers.** An unknown exception or reply code never bounces.

Failures that do not come from a peer are made here too, from their cause (`because`):
`method` (an encryption method failed or is not available: defer, 4.7.5), `expired` (the
queue lifetime ran out: bounce, 5.4.7, with the last reason), `internal` (a bug of ours:
defer, 4.3.0). Every `Failure` carries its `cause` (connect, smtp, tls, requiretls, dns, auth, method,
expired, internal), so callers decide by cause (the backup method takes what failed on TLS),
never by matching status strings.

**Connection-level failures** (`Failure.connection_level`) are the ones that say the next hop
is not there for us at all: the connection refused, reset or timed out, no greeting (or a 4xx/5xx
one), EHLO refused or unanswered, the TLS handshake broken (not refused by our policy: a peer
without STARTTLS or with a certificate we reject is there, it just does not meet the level), DNS
failing for now. They are what the scheduler counts to declare a destination dead (Postfix's
"connection or handshake failure"); a failure after the session is up (a reply to MAIL, RCPT or
DATA, a timeout there) says nothing about whether the destination is alive.

`next_retry` is the backoff schedule and `expired` the maximum-lifetime test.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, replace
from typing import Literal

import aiosmtplib
import dns.exception
import dns.resolver

from engine.config.secrets import SecretError
from engine.relay.delivery.resolve import PermanentDNSError, TemporaryDNSError

FailureKind = Literal["defer", "defer_site", "bounce"]
Cause = Literal["connect", "smtp", "tls", "requiretls", "dns", "auth", "method", "expired", "internal"]

_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_STARTTLS = re.compile(r"starttls|\btls\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed delivery attempt means: `kind`, a human `reason`, and the RFC 3463
    `status` (e.g. "4.4.1") to put in a delay notice or NDR."""

    kind: FailureKind
    reason: str
    status: str
    cause: Cause = "smtp"
    connection_level: bool = False  # the next hop is not there for us (see the module docstring)

    @property
    def permanent(self) -> bool:
        return self.kind == "bounce"

    def located(self, where: object) -> Failure:
        """The same failure, its reason prefixed with where it happened (a next hop)."""
        return replace(self, reason=f"{where}: {self.reason}")


# Failures of our own making: kind and status by cause (peer failures come from `classify`).
_OWN: dict[str, tuple[FailureKind, str]] = {
    "method": ("defer", "4.7.5"),
    "tls": ("defer", "4.7.5"),
    "internal": ("defer", "4.3.0"),
    "expired": ("bounce", "5.4.7"),
}


DELIVERED = "2.0.0"  # the status of a recipient the next hop (or a method) accepted


def delay_status(status: str) -> str:
    """The status a delay notice reports for a failure: always transient (4.x.x), since the
    recipient is still being tried (RFC 3464 `delayed`)."""
    return status if status.startswith("4") else "4" + status[1:]


def because(cause: Cause, reason: str) -> Failure:
    """A failure that no peer reported: an encryption method, the queue lifetime, our own bug."""
    kind, status = _OWN[cause]
    return Failure(kind, reason, status, cause)


def expire(last: Failure | str) -> Failure:
    """The permanent failure of a recipient whose queue lifetime ran out while deferred."""
    text = last.reason if isinstance(last, Failure) else last
    return because("expired", f"delivery time expired: {text}")


class TLSRequiredError(Exception):
    """The TLS level required for this peer was not achieved; nothing was sent in clear.

    `handshake` is True when the TLS handshake itself broke (or timed out), False when the
    peer refused or fell short of our policy (no STARTTLS, a weak cipher, a certificate we
    do not accept): only a broken handshake is a connection-level failure."""

    def __init__(self, reason: str, *, handshake: bool = False) -> None:
        super().__init__(reason)
        self.handshake = handshake


class RequireTLSUnmet(TLSRequiredError):
    """A message received with REQUIRETLS (RFC 8689) cannot go to this hop: no STARTTLS, a
    certificate that does not verify or name the hop, or no REQUIRETLS offered after STARTTLS.
    Nothing was sent; the next hop may still do (see `requiretls_outcome`)."""


REQUIRETLS_STATUS = "5.7.30"  # RFC 8689 §7: "REQUIRETLS support required"


def requiretls_unmet(reason: str) -> Failure:
    """A hop a REQUIRETLS message may not go to, for a reason found before connecting (an MX
    host not authenticated): skipped like one short of REQUIRETLS (`classify`'s)."""
    return Failure("defer_site", f"REQUIRETLS not met: {reason}", REQUIRETLS_STATUS, "requiretls")


def requiretls_outcome(failures: list[Failure]) -> Failure:
    """What a REQUIRETLS message's failure at every hop means (RFC 8689 §4.2.1, §5).

    Every hop fell short of REQUIRETLS: bounce with 5.7.30. Some hop failed for a passing
    reason (down, a broken handshake): defer with that reason, since it may come back with
    REQUIRETLS and no retry of the others can help."""
    passing = [failure for failure in failures if failure.cause != "requiretls"]
    if passing:
        return passing[-1]
    reasons = "; ".join(failure.reason for failure in failures)
    return Failure("bounce", f"REQUIRETLS support required: {reasons}", REQUIRETLS_STATUS, "requiretls")


# The SMTP client's stages, in order; a timeout in the first four is connection-level.
STAGES = ("connect", "greeting", "helo", "starttls", "mail", "rcpt", "data", "data_done")
SESSION_STAGES = frozenset(STAGES[:4])
_WAITING_FOR = {
    "connect": "connecting",
    "greeting": "waiting for the greeting",
    "helo": "waiting for the reply to EHLO",
    "starttls": "during STARTTLS",
    "mail": "waiting for the reply to MAIL FROM",
    "rcpt": "waiting for the reply to RCPT TO",
    "data": "waiting for the reply to DATA",
    "data_done": "sending the content or waiting for the reply to its end (the message may arrive twice)",
}


class StageTimeout(TimeoutError):
    """A next hop did not answer within the timeout of one stage (`delivery.timeouts.<stage>`)."""

    def __init__(self, stage: str, seconds: float) -> None:
        super().__init__(f"timed out {_WAITING_FOR[stage]} ({seconds:g} s)")
        self.stage = stage
        self.seconds = seconds


class NoMailHost(Exception):
    """The recipient domain definitely cannot receive mail (NXDOMAIN, null MX, no address)."""

    def __init__(self, domain: str, reason: str, *, status: str = "5.4.4") -> None:
        super().__init__(f"{domain}: {reason}")
        self.domain = domain
        self.status = status


def classify(code: int | None, exc: BaseException | None) -> Failure:
    """Decide whether a failure defers the recipient, defers the site, or bounces.

    Pass the reply code when there was one (an exception carrying `.code`, like
    aiosmtplib's `SMTPResponseException`, supplies its own) and/or the exception raised.
    """
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        # Delivery should classify each refused recipient on its own; for the aggregate,
        # bounce only if every refusal was permanent.
        parts = [classify(None, refused) for refused in exc.recipients]
        reason = "; ".join(part.reason for part in parts) or _text(exc)
        if parts and all(part.permanent for part in parts):
            return Failure("bounce", reason, parts[0].status)
        soft = next((part for part in parts if not part.permanent), _unknown(exc))
        return Failure("defer", reason, soft.status, soft.cause)
    if isinstance(exc, StageTimeout):
        session = exc.stage in SESSION_STAGES
        status = "4.4.1" if exc.stage == "connect" else "4.4.2"
        return Failure("defer_site", str(exc), status, "connect" if session else "smtp", session)
    if isinstance(exc, RequireTLSUnmet):
        return requiretls_unmet(str(exc))
    if isinstance(exc, TLSRequiredError | ssl.SSLError):
        broken = (
            exc.handshake if isinstance(exc, TLSRequiredError) else not isinstance(exc, ssl.SSLCertVerificationError)
        )
        return Failure("defer_site", f"TLS required but not achieved: {_text(exc)}", "4.7.5", "tls", broken)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | SecretError):
        # wrong or missing credentials are ours to fix: the mail waits, it does not bounce
        return Failure("defer_site", f"SMTP AUTH to the next hop failed: {_text(exc)}", "4.7.8", "auth")
    if isinstance(exc, PermanentDNSError):
        return Failure("bounce", f"no mail host: {exc}", exc.status or "5.4.4", "dns")
    if isinstance(exc, TemporaryDNSError):
        return Failure("defer_site", f"DNS lookup failed: {exc}", exc.status or "4.4.3", "dns", True)
    if isinstance(exc, NoMailHost):
        return Failure("bounce", f"no mail host: {exc}", exc.status, "dns")
    if isinstance(exc, dns.resolver.NXDOMAIN | dns.resolver.NoAnswer):
        return Failure("bounce", f"domain not found: {_text(exc)}", "5.4.4", "dns")
    if isinstance(exc, dns.exception.DNSException):
        return Failure("defer_site", f"DNS lookup failed: {_text(exc)}", "4.4.3", "dns", True)

    message = ""
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        code = exc.code if code is None else code
        message = exc.message
    if code is None:
        return _without_code(exc)
    said = f"host said: {code} {message}".rstrip()
    greeting = isinstance(exc, aiosmtplib.SMTPConnectResponseError)
    if greeting or code == 421:
        return Failure("defer_site", said, _status(message, "4", "4.4.2"), connection_level=greeting)
    if code == 530 and _STARTTLS.search(message):
        return Failure("defer_site", f"peer requires STARTTLS: {said}", "4.7.0", "tls")
    site = isinstance(exc, aiosmtplib.SMTPHeloError)
    if 400 <= code < 500:
        return Failure("defer_site" if site else "defer", said, _status(message, "4", "4.0.0"), connection_level=site)
    if 500 <= code < 600:
        return Failure("bounce", said, _status(message, "5", "5.0.0"))
    return Failure("defer", f"unexpected reply: {said}", "4.5.0")


def next_retry(attempts: int, retry_interval_s: float, max_retry_interval_s: float, backoff: float = 2.0) -> float:
    """Seconds to wait after the `attempts`-th failed attempt.

    `retry_interval_s * backoff ** (attempts - 1)`, capped at `max_retry_interval_s`
    (Postfix's minimal/maximal backoff time). Callers may add jitter.
    """
    if retry_interval_s <= 0 or max_retry_interval_s < retry_interval_s or backoff < 1:
        raise ValueError("need 0 < retry_interval_s <= max_retry_interval_s and backoff >= 1")
    try:
        delay = retry_interval_s * backoff ** max(attempts - 1, 0)
    except OverflowError:
        return max_retry_interval_s
    return min(delay, max_retry_interval_s)


def expired(created_at: float, now: float, max_lifetime_s: float) -> bool:
    """True once a message has been queued for `max_lifetime_s` (0: try once only)."""
    return now - created_at >= max_lifetime_s


def _without_code(exc: BaseException | None) -> Failure:
    connecting = isinstance(exc, aiosmtplib.SMTPConnectError)  # no session yet: aiosmtplib's connect
    cause = exc.__cause__ or exc.__context__ if connecting else None
    if isinstance(cause, ConnectionRefusedError) or "Errno 111" in str(exc or ""):
        return Failure("defer_site", f"connection refused: {_text(exc)}", "4.4.1", "connect", True)
    if isinstance(exc, TimeoutError):  # includes asyncio's and aiosmtplib's timeouts
        return Failure("defer_site", f"timed out: {_text(exc)}", "4.4.1", "connect", True)
    if isinstance(exc, ConnectionRefusedError):
        return Failure("defer_site", f"connection refused: {_text(exc)}", "4.4.1", "connect", True)
    if isinstance(exc, ConnectionError | OSError):  # resets, unreachable, lost connection
        lost = isinstance(exc, aiosmtplib.SMTPServerDisconnected) and not connecting  # during the session
        return Failure("defer_site", f"connection failed: {_text(exc)}", "4.4.2", "connect", not lost)
    return _unknown(exc)


def _unknown(exc: BaseException | None) -> Failure:
    if exc is None:
        return Failure("defer", "delivery failed for an unknown reason", "4.0.0", "internal")
    return Failure("defer", f"unclassified failure: {_text(exc)}", "4.0.0", "internal")


def _status(message: str, klass: str, default: str) -> str:
    """The enhanced status code in the reply if it matches the reply's class, else default."""
    found = _ENHANCED.search(message or "")
    if found and found.group(1) == klass:
        return found.group(0)
    return default


def _text(exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
