"""TLS-RPT (RFC 8460), the sending half: a finished day's counters become reports.

Once a day (`system.tls_reporting.send_at`, UTC; the `TLSReports` component of `serve`)
`Reporter.send_due` takes every (day, domain) of the recorder (`tlsrpt`) older than today and
asks the domain where its reports go: the `_smtp._tls` TXT record (§3, `parse_record`). A domain
without exactly one `v=TLSRPTv1` record gets nothing; one with it gets the report (§4.4,
`build_report`), gzipped, at each of its `rua` URIs and nowhere else:

    mailto:   a multipart/report; report-type="tlsrpt" message through the relay's own queue
              (§5.3: the subject, `TLS-Report-Domain`, `TLS-Report-Submitter`, the report as an
              application/tlsrpt+gzip attachment named per §5.1)
    https:    a POST of application/tlsrpt+gzip (§5.4), the certificate verified for the URI's
              host (`tls.ca_bundle`), bounded in time and in what the answer may send back

A day's counters of a domain are dropped once its report was made, whether or not every
`rua` took it (a report is advisory: RFC 8460 §5.4 lets a sender give up), or once DNS said
the domain has no record; a DNS failure keeps them for the next run, for up to `KEEP_DAYS`.

Mailed reports are DKIM-signed (§5.3) when `system.tls_reporting.dkim` names a key (`dkim_sign`,
dkimpy, relaxed/simple, no `l=`): the From, To, Subject, Date, Message-ID, the two TLS-Report
fields and the MIME structure are covered. A key that cannot be read sends nothing to mailto
addresses (logged): a report is advisory, an unsigned one where a signature was configured is not
what the operator asked for.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from urllib.parse import unquote, urlsplit

import dkim
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from engine.config.secrets import SecretError, resolve
from engine.relay.delivery.resolve import PermanentDNSError
from engine.relay.runtime.live import ca_bundle_of
from engine.relay.tls import https, tlsrpt
from engine.relay.tls.levels import TLSLevel, client_context
from engine.relay.tls.mtasts import TXTResolver

log = logging.getLogger(__name__)

POST_TIMEOUT = 60.0  # one HTTPS submission in all
MAX_ANSWER_BYTES = 64 * 1024  # what a report server may send back before we stop reading
MAX_REPORT_BYTES = 10 * 1024 * 1024  # a gzipped report bigger than this is not sent
MEDIA_TYPE = "application/tlsrpt+gzip"  # RFC 8460 §6.4
_ADDRESS = re.compile(r"[^@\s,;<>\"()\[\]]{1,64}@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
KEEP_DAYS = 7  # a day whose rua DNS cannot name for this long is dropped unreported

Enqueue = Callable[[str, list[str], bytes, dict], Awaitable[str]]


def parse_record(records: list[str]) -> list[str]:
    """The `rua` URIs (mailto: and https: only) of the `_smtp._tls` TXT records; none when
    they are not exactly one `v=TLSRPTv1` record (RFC 8460 §3)."""
    ours = [record for record in records if record.startswith("v=TLSRPTv1")]
    if len(ours) != 1:
        return []
    fields: dict[str, str] = {}
    for part in ours[0].split(";"):
        key, _, value = part.strip().partition("=")
        if key:
            fields.setdefault(key.strip(), value.strip())
    if fields.get("v") != "TLSRPTv1":
        return []
    uris = [uri.strip() for uri in fields.get("rua", "").split(",")]
    return [uri for uri in uris if uri.lower().startswith(("mailto:", "https://"))]


def day_range(day: str) -> tuple[datetime, datetime]:
    """The first and last second of a UTC day (RFC 8460 §4.4's date-range, as its example)."""
    start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return start, start + timedelta(days=1, seconds=-1)


def build_report(
    day: str, domain: str, counted: list[tuple[tlsrpt.Session, int]], organization: str, contact: str, report_id: str
) -> dict:
    """The report of `domain`'s sessions on `day` (RFC 8460 §4.4): one `policies` entry per
    policy the sessions were under, with its summary and failure details."""
    start, end = day_range(day)
    by_policy: dict[str, list[tuple[tlsrpt.Session, int]]] = {}
    for session, count in counted:
        by_policy.setdefault(json.dumps(session.policy, sort_keys=True), []).append((session, count))
    policies = [_policy_entry(domain, json.loads(key), rows) for key, rows in by_policy.items()]
    return {
        "organization-name": organization,
        "date-range": {"start-datetime": _rfc3339(start), "end-datetime": _rfc3339(end)},
        "contact-info": contact,
        "report-id": report_id,
        "policies": policies,
    }


def _policy_entry(domain: str, policy: dict, rows: list[tuple[tlsrpt.Session, int]]) -> dict:
    successes = sum(count for session, count in rows if session.result == tlsrpt.SUCCESS)
    failures = [_failure_detail(session, count) for session, count in rows if session.result != tlsrpt.SUCCESS]
    return {
        "policy": {**policy, "policy-domain": domain},
        "summary": {
            "total-successful-session-count": successes,
            "total-failure-session-count": sum(detail["failed-session-count"] for detail in failures),
        },
        "failure-details": failures,
    }


def _failure_detail(session: tlsrpt.Session, count: int) -> dict:
    detail: dict[str, object] = {"result-type": session.result}
    for key, value in (
        ("sending-mta-ip", session.sending_ip),
        ("receiving-mx-hostname", session.mx),
        ("receiving-ip", session.receiving_ip),
    ):
        if value:
            detail[key] = value
    detail["failed-session-count"] = count
    if session.reason:
        detail["failure-reason-code"] = session.reason
    return detail


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def filename(submitter: str, domain: str, day: str) -> str:
    """RFC 8460 §5.1: `sender!policy-domain!begin-timestamp!end-timestamp.json.gz`."""
    start, end = day_range(day)
    return f"{submitter}!{domain}!{int(start.timestamp())}!{int(end.timestamp())}.json.gz"


def report_message(
    report: bytes, *, domain: str, submitter: str, sender: str, to: str, report_id: str, name: str
) -> bytes:
    """The mail that carries a gzipped report (RFC 8460 §5.3): multipart/report with
    report-type "tlsrpt", a short human part, and the report as application/tlsrpt+gzip."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain=submitter)
    message["Subject"] = f"Report Domain: {domain} Submitter: {submitter} Report-ID: <{report_id}>"
    message["TLS-Report-Domain"] = domain
    message["TLS-Report-Submitter"] = submitter
    message.set_content(
        f"This is an aggregate TLS report from {submitter} about mail to {domain} (RFC 8460).\n"
        "The report is attached as gzipped JSON.\n"
    )
    message.add_attachment(report, maintype="application", subtype="tlsrpt+gzip", filename=name)
    message.replace_header("Content-Type", 'multipart/report; report-type="tlsrpt"')
    return message.as_bytes(policy=message.policy.clone(linesep="\r\n"))


# What a report's signature covers: the fields §5.3 names and those that give the content meaning
SIGNED_FIELDS = (
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"tls-report-domain",
    b"tls-report-submitter",
    b"mime-version",
    b"content-type",
)


def dkim_sign(content: bytes, key, base_dir: Path) -> bytes:
    """`content` with a DKIM-Signature field first, by `key` (`DKIMKey`: a PEM RSA or Ed25519
    private key, given by reference). Raises ValueError when the key cannot be used."""
    pem = resolve(key.private_key, Path(base_dir)).encode()
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"DKIM key for {key.domain} is not an unencrypted PEM private key: {exc}") from exc
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        algorithm, secret = b"ed25519-sha256", base64.b64encode(raw)
    elif isinstance(private, rsa.RSAPrivateKey) and private.key_size >= 1024:
        algorithm = b"rsa-sha256"
        secret = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    else:
        raise ValueError(f"DKIM key for {key.domain} must be RSA (at least 1024 bits) or Ed25519")
    field = dkim.sign(
        content,
        key.selector.encode(),
        key.domain.encode(),
        secret,
        signature_algorithm=algorithm,
        include_headers=list(SIGNED_FIELDS),
        tlsrpt=True,
    )
    return field + content


class Reporter:
    """Sends the reports of finished days. `enqueue(sender, recipients, content, meta)` puts a
    message in the relay's queue (and wakes delivery); `clock` gives Unix seconds."""

    def __init__(self, recorder: tlsrpt.Recorder, enqueue: Enqueue, clock: Callable[[], float]) -> None:
        self.recorder = recorder
        self.enqueue = enqueue
        self.clock = clock
        self.posted: list[str] = []  # https URIs that took a report (for tests and the log)

    async def send_due(self, live, resolver: TXTResolver) -> int:
        """Send every report due (days before today, UTC); returns how many domains got one.
        Nothing while reporting is off (the counters of earlier days wait)."""
        if not live.config.system.tls_reporting.enabled:
            return 0
        data_dir = live.data_dir
        now = self.clock()
        due = await self.recorder.call(data_dir, lambda store: store.days_before(tlsrpt.day_of(now)))
        give_up = tlsrpt.day_of(now - KEEP_DAYS * 86400)
        sent = 0
        for day, domain in due:
            try:
                done = await self._send(live, resolver, day, domain)
            except Exception:  # one domain's trouble must not hold back the others
                log.exception("TLS-RPT report of %s for %s failed", day, domain)
                done = 0
            if done is None and day > give_up:
                continue  # DNS could not say where the report goes: the next run asks again
            sent += done or 0
            await self.recorder.call(data_dir, lambda store, d=day, n=domain: store.forget(d, n))
        return sent

    async def _send(self, live, resolver: TXTResolver, day: str, domain: str) -> int | None:
        """Report `domain`'s `day` to its `rua`: 1 when it went out, 0 when the domain wants no
        report, None when DNS failed for now (the counters wait for the next run)."""
        try:
            uris = parse_record(await resolver.txt(f"_smtp._tls.{domain}"))
        except PermanentDNSError:  # no such name: no record
            uris = []
        except Exception as exc:  # noqa: BLE001 - DNS trouble for now
            log.warning("TLS-RPT: _smtp._tls.%s lookup failed: %s", domain, getattr(exc, "reason", exc))
            return None
        if not uris:
            return 0
        settings = live.config.system.tls_reporting
        contact = settings.contact or f"postmaster@{live.config.system.fqdn}"
        submitter = contact.rpartition("@")[2]
        report_id = f"{day}.{uuid.uuid4().hex}@{submitter}"
        counted = await self.recorder.call(live.data_dir, lambda store: store.sessions(day, domain))
        report = build_report(
            day, domain, counted, settings.organization or live.config.system.fqdn, contact, report_id
        )
        body = gzip.compress(json.dumps(report, indent=1).encode(), mtime=0)
        if len(body) > MAX_REPORT_BYTES:
            log.warning("TLS-RPT report of %s for %s is %d bytes gzipped: not sent", day, domain, len(body))
            return 0
        name = filename(submitter, domain, day)
        for uri in uris:
            if uri.lower().startswith("mailto:"):
                signing = (settings.dkim, live.base_dir) if settings.dkim is not None else None
                await self._mail(uri, body, domain, submitter, contact, report_id, name, signing)
            else:
                await self._post(live, resolver, uri, body)
        return 1

    async def _mail(
        self,
        uri: str,
        body: bytes,
        domain: str,
        submitter: str,
        sender: str,
        report_id: str,
        name: str,
        signing: tuple | None = None,
    ) -> None:
        """Queue the report for the address of a `mailto:` rua (its query part ignored),
        DKIM-signed when `signing` gives a key (`DKIMKey`) and the directory its file is under."""
        to = unquote(uri[len("mailto:") :].split("?", 1)[0]).strip()
        if not _ADDRESS.fullmatch(to):  # a TXT record is not trusted to write our headers
            log.warning("TLS-RPT: %s is not a mail address; no report sent there", uri)
            return
        content = report_message(
            body, domain=domain, submitter=submitter, sender=sender, to=to, report_id=report_id, name=name
        )
        if signing is not None:
            try:
                content = dkim_sign(content, *signing)
            except (ValueError, SecretError, dkim.DKIMException) as exc:
                log.error("TLS-RPT report for %s not mailed to %s: DKIM signing failed: %s", domain, to, exc)
                return
        queue_id = await self.enqueue(sender, [to], content, {"kind": "tls-report", "about": domain})
        log.info("TLS-RPT report for %s queued to %s as %s", domain, to, queue_id)

    async def _post(self, live, resolver: TXTResolver, uri: str, body: bytes) -> None:
        ca_bundle = ca_bundle_of(live.config, live.base_dir)
        try:
            async with asyncio.timeout(POST_TIMEOUT):
                status = await post(uri, body, resolver, ca_bundle)
        except Exception as exc:  # noqa: BLE001 - an unreachable report server is logged
            log.warning("TLS-RPT report POST to %s failed: %s", uri, exc)
            return
        if 200 <= status < 300:
            self.posted.append(uri)
            log.info("TLS-RPT report posted to %s (HTTP %d)", uri, status)
        else:
            log.warning("TLS-RPT report POST to %s: HTTP %d", uri, status)


async def post(uri: str, body: bytes, resolver: TXTResolver, ca_bundle: str) -> int:
    """POST `body` to the https `uri` (certificate verified for its host, no redirects
    followed); returns the HTTP status. Reads at most `MAX_ANSWER_BYTES` of the answer."""
    parts = urlsplit(uri)
    host, port = parts.hostname or "", parts.port or 443
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    context = client_context(TLSLevel.SECURE, ca_bundle=ca_bundle)
    problem: Exception | None = None
    for address in await resolver.host_addresses(host):
        try:
            answer = await https.exchange(
                "POST",
                host,
                address,
                port,
                target,
                context,
                headers={"Content-Type": MEDIA_TYPE},
                body=body,
                limit=MAX_ANSWER_BYTES,
            )
        except https.AnswerTooLarge as exc:  # the report was taken; what the server says after does not matter
            return exc.status
        except httpx.ConnectError as exc:
            problem = exc
            continue
        return answer.status
    raise ConnectionError(f"no address of {host} took the connection: {problem}")


def next_run(now: float, send_at: str) -> float:
    """The next Unix time at `send_at` (HH:MM, UTC) after `now`."""
    hour, minute = (int(part) for part in send_at.split(":"))
    moment = datetime.fromtimestamp(now, UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    if moment.timestamp() <= now:
        moment += timedelta(days=1)
    return moment.timestamp()
