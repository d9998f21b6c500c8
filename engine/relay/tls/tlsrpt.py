"""TLS-RPT (RFC 8460), the recording half: what became of each TLS session to a domain's MX hosts.

Every delivery attempt to one of a recipient domain's own MX hosts (not to a smarthost: its
TLS is no business of the recipient domain) adds one to a counter, per UTC day, policy domain,
policy and outcome: `success`, or one of the RFC's result types (§4.3) with the details it
names (sending-mta-ip, receiving-mx-hostname, receiving-ip, failure-reason-code). The counters
live in `<data_dir>/tls-rpt/sessions.sqlite` (directory 0700, file 0600), so a restart loses
no day. `tlsrpt_send` turns a finished day into the reports.

The delivery path calls `Recorder.record`, which hands the upsert to one writer thread and
returns at once: the event loop never waits for SQLite, and one thread means no two writers
contend for the file. `Recorder.call` runs the reporter's reads and deletes on that same
thread, after every write submitted before it.

Which outcome is which (§4.3): a session that completed STARTTLS under our policy is a
success; the peer not offering STARTTLS (or refusing it) is `starttls-not-supported`; a
certificate for another name `certificate-host-mismatch`, an expired one `certificate-expired`,
one without a chain to a trusted CA `certificate-not-trusted`; anything else that broke the
session's TLS (a weak cipher, a broken handshake, an MX host an enforced MTA-STS policy does
not name) `validation-failure`. DANE (policy type `tlsa`, the MX host's records): a chain that
matches no record is `tlsa-invalid`, a TLSA lookup that failed (a bogus signature is a SERVFAIL)
`dnssec-invalid`.

MTA-STS policy failures (§4.3.2.2, `sts_failure`): when the domain announced a policy (its
`_mta-sts` TXT record) that could not be fetched (`mtasts.Lookup.failure`), a session that
went well otherwise counts as `sts-webpki-invalid` (the policy host's certificate did not
verify), `sts-policy-invalid` (the text breaks RFC 8461 §3.2) or `sts-policy-fetch-error`
(anything else), with the reason and without MX details (the policy host failed, not the MX
host). Its policy is the one applied (§4.4 "policy-type"): `sts` while a cached policy is in
force, else `no-policy-found`. A session that failed on its own keeps its own result type:
that says what the MX host did, and the domain's other sessions report the policy failure.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import aiosmtplib

from engine.fsutil import private_dir
from engine.relay.tls.levels import DANEMismatch, NoStartTLS, causes, describe_failure

log = logging.getLogger(__name__)

SUCCESS = "success"
# RFC 8460 §4.3: negotiation failures (4.3.1), then policy failures (4.3.2)
RESULT_TYPES = (
    "starttls-not-supported",
    "certificate-host-mismatch",
    "certificate-expired",
    "certificate-not-trusted",
    "validation-failure",
    "tlsa-invalid",
    "dnssec-invalid",
    "dane-required",
    "sts-policy-fetch-error",
    "sts-policy-invalid",
    "sts-webpki-invalid",
)
NO_POLICY = {"policy-type": "no-policy-found", "policy-string": [], "policy-domain": ""}
MAX_REASON = 200  # a failure-reason-code is a short text, not a log line
DIRECTORY, FILE = "tls-rpt", "sessions.sqlite"

# OpenSSL X509_V_ERR_* codes by the RFC's name for them (the rest are validation-failure)
_BY_VERIFY_CODE = {
    62: "certificate-host-mismatch",
    10: "certificate-expired",
    2: "certificate-not-trusted",
    18: "certificate-not-trusted",
    19: "certificate-not-trusted",
    20: "certificate-not-trusted",
    21: "certificate-not-trusted",
    24: "certificate-not-trusted",
}

T = TypeVar("T")


@dataclass(frozen=True)
class Session:
    """One session's outcome as a report counts it. For a success the details stay empty, so
    every success of a day and policy adds to one counter."""

    day: str  # YYYY-MM-DD, UTC
    domain: str  # the policy domain: the recipient domain
    policy: dict  # the RFC's `policy` object (§4.4), without the domain
    result: str  # SUCCESS or one of RESULT_TYPES
    sending_ip: str = ""
    mx: str = ""  # receiving-mx-hostname
    receiving_ip: str = ""
    reason: str = ""  # failure-reason-code


def day_of(now: float) -> str:
    """The UTC day a Unix time falls on: the key a session is counted under."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


def failure_type(exc: BaseException) -> tuple[str, str]:
    """The RFC result type of a session our TLS policy ended, and its short reason (the
    `failure-reason-code`: `describe_failure`'s words, never our config's rule names)."""
    reason = describe_failure(exc)[:MAX_REASON]
    chain = causes(exc)
    for error in chain:
        if isinstance(error, DANEMismatch):
            return "tlsa-invalid", reason
        if isinstance(error, ssl.SSLCertVerificationError):
            return _BY_VERIFY_CODE.get(error.verify_code, "validation-failure"), reason
    for error in chain:
        if isinstance(error, NoStartTLS | aiosmtplib.SMTPResponseException):
            return "starttls-not-supported", reason
        if "STARTTLS extension not supported" in str(error):  # aiosmtplib's wording
            return "starttls-not-supported", reason
    return "validation-failure", reason


def sts_policy(policy) -> dict:
    """The RFC's `policy` object for an MTA-STS policy (`mtasts.Policy`): its lines as
    `policy-string` and its `mx` patterns as `mx-host` (§4.4)."""
    lines = ["version: STSv1", f"mode: {policy.mode}", *(f"mx: {mx}" for mx in policy.mx), f"max_age: {policy.max_age}"]
    return {"policy-type": "sts", "policy-string": lines, "mx-host": list(policy.mx)}


def sts_failure(lookup, result: str) -> tuple[str, str] | None:
    """The policy failure (§4.3.2.2) and short reason a session of `result` under the MTA-STS
    `lookup` (`mtasts.Lookup`, or None when none was asked for) counts as instead, or None:
    only a session that succeeded, to a domain whose announced policy could not be fetched."""
    failure = lookup.failure if lookup is not None else None
    if failure is None or result != SUCCESS:
        return None
    return failure.result, failure.reason[:MAX_REASON]


def tlsa_policy(host: str, records) -> dict:
    """The RFC's `policy` object for an MX host's TLSA records (`dane.TLSA`): each record in
    presentation form as `policy-string`, the host as `mx-host` (§4.4)."""
    return {"policy-type": "tlsa", "policy-string": [str(record) for record in records], "mx-host": [host]}


class Store:
    """The day counters in one SQLite file. Used from the recorder's one thread only."""

    def __init__(self, data_dir: Path) -> None:
        directory = private_dir(Path(data_dir) / DIRECTORY)
        path = directory / FILE
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # owner-only before SQLite writes to it
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        # counters are advisory: an upsert need not wait for the disk (WAL, no fsync per commit)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS sessions (day TEXT NOT NULL, domain TEXT NOT NULL, policy TEXT NOT NULL,"
            " result TEXT NOT NULL, sending_ip TEXT NOT NULL, mx TEXT NOT NULL, receiving_ip TEXT NOT NULL,"
            " reason TEXT NOT NULL, count INTEGER NOT NULL,"
            " PRIMARY KEY (day, domain, policy, result, sending_ip, mx, receiving_ip, reason)) WITHOUT ROWID"
        )

    def add(self, session: Session) -> None:
        """Count one session: one upsert."""
        self.conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT DO UPDATE SET count = count + 1",
            (
                session.day,
                session.domain,
                json.dumps(session.policy, sort_keys=True),
                session.result,
                session.sending_ip,
                session.mx,
                session.receiving_ip,
                session.reason,
            ),
        )

    def days_before(self, day: str) -> list[tuple[str, str]]:
        """The (day, domain) pairs with counters older than `day`: the reports due."""
        rows = self.conn.execute("SELECT DISTINCT day, domain FROM sessions WHERE day < ? ORDER BY day, domain", (day,))
        return [(row[0], row[1]) for row in rows]

    def sessions(self, day: str, domain: str) -> list[tuple[Session, int]]:
        """`domain`'s counters of `day`, each with its count."""
        rows = self.conn.execute(
            "SELECT policy, result, sending_ip, mx, receiving_ip, reason, count FROM sessions"
            " WHERE day = ? AND domain = ? ORDER BY policy, result, mx, receiving_ip, reason",
            (day, domain),
        )
        return [(Session(day, domain, json.loads(r[0]), *r[1:6]), r[6]) for r in rows]

    def forget(self, day: str, domain: str) -> None:
        """Drop a day's counters of `domain` once its report is made (sent or not)."""
        self.conn.execute("DELETE FROM sessions WHERE day = ? AND domain = ?", (day, domain))

    def close(self) -> None:
        self.conn.close()


class Recorder:
    """Counts sessions without blocking the event loop: one writer thread, one `Store` per
    data directory (a config may move `data_dir`). `clock` gives Unix seconds: the day."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tls-rpt")
        self._stores: dict[Path, Store] = {}
        self._lock = threading.Lock()

    def record(self, data_dir: Path, domain: str, policy: dict, result: str, **details: str) -> None:
        """Count one session of `domain` today; returns at once (the write happens on the
        recorder's thread, and a failing write is logged, never raised into delivery)."""
        session = Session(day_of(self.clock()), domain.lower().rstrip("."), policy, result, **details)
        try:
            future = self._executor.submit(self._add, Path(data_dir), session)
        except RuntimeError:  # closed: the relay is stopping
            return
        future.add_done_callback(_log_failure)

    async def call(self, data_dir: Path, job: Callable[[Store], T]) -> T:
        """Run `job` with the store of `data_dir` on the writer thread, after the writes
        submitted before it."""
        return await asyncio.wrap_future(self._executor.submit(lambda: job(self._store(Path(data_dir)))))

    def close(self) -> None:
        """Finish the writes in hand and close the stores."""
        self._executor.shutdown(wait=True)
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def _add(self, data_dir: Path, session: Session) -> None:
        self._store(data_dir).add(session)

    def _store(self, data_dir: Path) -> Store:
        with self._lock:
            store = self._stores.get(data_dir)
            if store is None:
                store = self._stores[data_dir] = Store(data_dir)
            return store


def _log_failure(future: Future[Any]) -> None:
    exc = future.exception()
    if exc is not None:
        log.warning("TLS-RPT: a session could not be counted: %s", exc)
