"""MTA-STS (RFC 8461): a recipient domain's published demand for verified TLS to its MX hosts.

A domain announces a policy with a TXT record at `_mta-sts.<domain>` (`v=STSv1; id=...`) and
publishes it at `https://mta-sts.<domain>/.well-known/mta-sts.txt`. `MTASTS.lookup` finds the
policy a delivery must obey, `verdict` says what it means for one MX host:

    enforce   only MX hosts matching an `mx` pattern, over TLS with a certificate verified
              for the MX host's name (level `secure`); any other host gets nothing
    testing   delivered as without a policy (the fallback level); a would-be failure is logged
    none      no policy (the fallback level)

What the RFC asks and where it is done here:

- §3.1 the TXT record: exactly one record starting `v=STSv1`, with an `id` of 1-32
  alphanumerics; anything else means "no policy announced" (`parse_txt`).
- §3.2 the policy: `version: STSv1`, `mode`, `max_age` (at most 31557600 s), `mx` patterns
  (`*.` covers exactly one label); a policy that breaks this is no policy (`parse_policy`).
- §3.3 the fetch: HTTPS with a certificate verified for `mta-sts.<domain>` (the relay's
  `tls.ca_bundle`), status 200 only, redirects refused, `text/plain`, at most 64 KiB, bounded
  in time (`_get`).
- §5.1 the cache: a policy is kept for `max_age` in `<data_dir>/mta-sts/` (owner-only files,
  so it outlives a restart); it is fetched again when the TXT `id` changes or half its
  `max_age` has passed. While it is unexpired it stays in force when the TXT record vanishes
  or a fetch fails: that is what stops an attacker who blocks DNS or HTTPS from downgrading
  delivery. "Senders SHOULD proactively refresh cached policies before they expire":
  `refresh` fetches again the stale, unexpired ones (the `mta-sts-refresh` component of
  `serve` runs it every hour), so a domain that rarely gets mail keeps its policy.

When a domain announces a policy (its TXT record) but the fetch fails, the lookup says why in
RFC 8460's words (§4.3.2.2), for TLS-RPT: `Lookup.failure`. The exceptions:

    PolicyError             no usable policy: sts-policy-fetch-error (HTTP status, redirect,
                            content type, size, timeout, no address, a broken connection)
    +-- PolicyInvalid       the text breaks §3.2 (or is not UTF-8): sts-policy-invalid
    +-- PolicyUnverified    the HTTPS certificate did not verify: sts-webpki-invalid

Everything that reaches out (DNS, HTTPS, the clock) is passed in, so tests point it at a
DNS server and an HTTPS server on loopback and move time by hand.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import httpx

from engine.fsutil import private_dir, write_atomic
from engine.relay.tls import https
from engine.relay.tls.levels import TLSLevel, causes, client_context, describe_failure

log = logging.getLogger(__name__)

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: about a year
MAX_POLICY_BYTES = 64 * 1024  # RFC 8461 §3.3: senders may refuse bigger policies
FETCH_TIMEOUT = 60.0  # RFC 8461 §3.3: "a reasonable timeout", e.g. one minute
RETRY_FAILED_FETCH = 300.0  # a failed fetch is not repeated for every message of a busy domain
MEMORY_LIMIT = 10_000  # domains whose policy (or failed fetch) is remembered in memory
POLICY_PATH = "/.well-known/mta-sts.txt"
REFRESH_INTERVAL = 3600.0  # how often `serve` looks for stale cached policies
REFRESH_LIMIT = 100  # policies fetched again per pass at most (the oldest first; the rest wait)
REFRESH_PARALLEL = 4  # fetches of one pass under way at once
# RFC 8460 §4.3.2.2: why a policy the domain announced could not be had
FETCH_ERROR, INVALID, WEBPKI_INVALID = "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid"

Mode = Literal["enforce", "testing", "none"]
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_KEY = re.compile(r"[A-Za-z0-9._-]{1,32}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_MX_PATTERN = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})+")
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})*")  # a cache file's name, as `lookup` writes it


class PolicyError(Exception):
    """No usable policy came back; `result` is RFC 8460's name for why (see the module docstring)."""

    result = FETCH_ERROR

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PolicyInvalid(PolicyError):
    """The policy text breaks RFC 8461 §3.2."""

    result = INVALID


class PolicyUnverified(PolicyError):
    """The policy host's certificate did not verify for `mta-sts.<domain>` (RFC 8461 §3.3)."""

    result = WEBPKI_INVALID


class TXTResolver(Protocol):
    """What the lookup needs of DNS (`engine.relay.delivery.resolve.Resolver` has both)."""

    async def txt(self, name: str) -> list[str]: ...

    async def host_addresses(self, host: str) -> list[str]: ...


@dataclass(frozen=True)
class Policy:
    """A parsed policy, with the TXT `id` it was fetched under and when (Unix seconds)."""

    mode: Mode
    mx: tuple[str, ...]
    max_age: int
    id: str = ""
    fetched_at: float = 0.0

    def expired(self, now: float) -> bool:
        return now >= self.fetched_at + self.max_age

    def stale(self, now: float) -> bool:
        """Time to fetch again: half its `max_age` has passed, so an unreachable server
        still leaves the other half to keep the cached policy in force."""
        return now >= self.fetched_at + self.max_age / 2

    def matches(self, host: str) -> bool:
        """Whether MX host `host` is one the policy names (RFC 8461 §4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


@dataclass(frozen=True)
class FetchFailure:
    """Why the policy a domain announced could not be had: RFC 8460's result type (one of
    FETCH_ERROR, INVALID, WEBPKI_INVALID) and a short reason."""

    result: str
    reason: str


@dataclass(frozen=True)
class Lookup:
    """The policy in force for `domain` (None: the domain has none), and where it came from.
    `failure` is set when the domain announced a policy (its TXT record) that could not be
    fetched: `policy` is then the cached one while it lasts, else None."""

    domain: str
    policy: Policy | None
    note: str
    failure: FetchFailure | None = None


@dataclass(frozen=True)
class Verdict:
    """What a policy means for one MX host: the level to deliver at, or why not to deliver."""

    level: TLSLevel | None  # None: do not deliver to this host
    reason: str = ""  # why not (enforce) or what would have failed (testing)
    source: str = ""  # names the policy for the TLS notes and failure reasons


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: case-insensitive equality, or `*.` standing for exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return host == pattern


def parse_txt(records: list[str]) -> str | None:
    """The policy `id` of the `_mta-sts` TXT records, or None when they announce no policy
    (RFC 8461 §3.1: not exactly one `v=STSv1` record, or that record malformed)."""
    ours = [record for record in records if record.startswith("v=STSv1")]
    if len(ours) != 1:
        return None
    fields: dict[str, str] = {}
    for part in ours[0].split(";"):
        key, sep, value = part.strip().partition("=")
        if not part.strip():
            continue
        if not sep:
            return None
        fields.setdefault(key, value)
    if fields.get("v") != "STSv1" or not _ID.fullmatch(fields.get("id", "")):
        return None
    return fields["id"]


def parse_policy(text: str, *, id: str = "", fetched_at: float = 0.0) -> Policy:
    """A policy from its text (RFC 8461 §3.2), strictly: a missing or bad `version`, `mode` or
    `max_age`, an `mx` that is not a host pattern, or no `mx` outside mode `none` raises
    `PolicyInvalid`. Lines end with LF or CRLF; unknown keys are ignored, as the RFC asks."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not _KEY.fullmatch(key):
            raise PolicyInvalid(f"policy line {number} is not `key: value`: {line[:80]!r}")
        value = value.strip(" \t")
        if key == "mx":
            if not _MX_PATTERN.fullmatch(value):
                raise PolicyInvalid(f"policy line {number}: {value[:80]!r} is not an MX host pattern")
            mx.append(value.lower())
        else:
            fields.setdefault(key, value)
    if fields.get("version") != "STSv1":
        raise PolicyInvalid(f"policy version is {fields.get('version')!r}, not 'STSv1'")
    mode = fields.get("mode")
    if mode not in ("enforce", "testing", "none"):
        raise PolicyInvalid(f"policy mode is {mode!r}, not enforce, testing or none")
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit() and len(age) <= 10) or int(age) > MAX_AGE_LIMIT:
        raise PolicyInvalid(f"policy max_age {age!r} is not a number of seconds up to {MAX_AGE_LIMIT}")
    if mode != "none" and not mx:
        raise PolicyInvalid(f"policy in mode {mode} names no mx")
    return Policy(mode, tuple(mx), int(age), id, fetched_at)  # type: ignore[arg-type]


def verdict(lookup: Lookup, host: str, fallback: TLSLevel) -> Verdict:
    """The level for delivering `lookup.domain`'s mail to MX host `host`, or the refusal.

    `fallback` is the level without a policy (and in `testing` mode): `tls.mta_sts.fallback`."""
    policy = lookup.policy
    if policy is None or policy.mode == "none":
        return Verdict(fallback, source=f"no MTA-STS policy for {lookup.domain}")
    source = f"MTA-STS policy of {lookup.domain} ({policy.mode})"
    if policy.matches(host):
        return Verdict(TLSLevel.SECURE if policy.mode == "enforce" else fallback, source=source)
    reason = f"MX host {host} is not in the MTA-STS policy of {lookup.domain} (mx: {', '.join(policy.mx)})"
    if policy.mode == "enforce":
        return Verdict(None, reason, source)
    return Verdict(fallback, reason, source)


class MTASTS:
    """Finds and caches domains' policies. One per relay; safe for concurrent lookups.

    `https_port` is where policies are fetched (443; tests use their own server's port),
    `clock` gives Unix seconds (tests move it), `timeout` bounds one fetch in all.
    """

    def __init__(
        self, *, https_port: int = 443, clock: Callable[[], float] = time.time, timeout: float = FETCH_TIMEOUT
    ) -> None:
        self.https_port = https_port
        self.clock = clock
        self.timeout = timeout
        self.fetches = 0  # policy fetches attempted (for tests and metrics)
        self._memory: dict[Path, Policy] = {}
        self._failed: dict[tuple[Path, str], tuple[float, FetchFailure]] = {}  # (cache file, id) -> when, why
        self._locks: dict[str, asyncio.Lock] = {}

    async def lookup(self, domain: str, *, resolver: TXTResolver, ca_bundle: str, cache_dir: Path) -> Lookup:
        """The policy in force for mail to `domain` now. Never raises for DNS or HTTPS
        trouble: that is a cached policy or none, with the reason in `note` (and the log)."""
        domain = domain.lower().rstrip(".")
        if len(self._locks) > MEMORY_LIMIT:
            self._locks = {name: lock for name, lock in self._locks.items() if lock.locked()}
        lock = self._locks.setdefault(domain, asyncio.Lock())
        async with lock:  # one fetch per domain, however many deliveries wait for it
            return await self._lookup(domain, resolver, ca_bundle, cache_dir / f"{domain}.json")

    async def refresh(
        self, *, resolver: TXTResolver, ca_bundle: str, cache_dir: Path, limit: int = REFRESH_LIMIT
    ) -> list[Lookup]:
        """Fetch again the policies cached in `cache_dir` that are stale (half their `max_age`
        gone) but unexpired: at most `limit`, those closest to expiry first, `REFRESH_PARALLEL`
        at a time (RFC 8461 §5.1's proactive refresh). Each goes through `lookup`, with what
        that implies: a domain whose TXT record is gone, or whose fetch fails, keeps its cached
        policy until it expires; a fetch failed less than `RETRY_FAILED_FETCH` ago is not
        repeated. The cache directory is read in a worker thread. Returns the lookups made;
        never raises for one domain's trouble."""
        now = self.clock()
        try:
            domains = await asyncio.to_thread(_due, cache_dir, now, limit)
        except OSError as exc:
            log.warning("MTA-STS refresh: cannot read the cache %s: %s", cache_dir, exc)
            return []
        gate = asyncio.Semaphore(REFRESH_PARALLEL)

        async def one(domain: str) -> Lookup | None:
            async with gate:
                try:
                    return await self.lookup(domain, resolver=resolver, ca_bundle=ca_bundle, cache_dir=cache_dir)
                except Exception:  # one domain's trouble is not the pass's end
                    log.exception("MTA-STS refresh of %s failed", domain)
                    return None

        done = await asyncio.gather(*(one(domain) for domain in domains))
        return [lookup for lookup in done if lookup is not None]

    async def _lookup(self, domain: str, resolver: TXTResolver, ca_bundle: str, file: Path) -> Lookup:
        now = self.clock()
        cached = await self._load(file)
        if cached is not None and cached.expired(now):
            cached = None
        try:
            txt_id = parse_txt(await resolver.txt(f"_mta-sts.{domain}"))
            why = "no valid _mta-sts TXT record"
        except Exception as exc:  # noqa: BLE001 - DNS trouble is no policy (or the cached one)
            txt_id, why = None, f"_mta-sts TXT lookup failed: {getattr(exc, 'reason', exc)}"
        if txt_id is None:
            if cached is not None:  # RFC 8461 §5.1: a vanished record does not end a policy
                return Lookup(domain, cached, f"cached policy ({why})")
            return Lookup(domain, None, why)
        if cached is not None and cached.id == txt_id and not cached.stale(now):
            return Lookup(domain, cached, "cached policy")
        failed = self._failed.get((file, txt_id))
        if failed is not None and now - failed[0] < RETRY_FAILED_FETCH:
            return _without_fetch(domain, cached, failed[1])
        try:
            policy = await self._fetch(domain, resolver, ca_bundle, txt_id)
        except PolicyError as exc:
            if len(self._failed) > MEMORY_LIMIT:
                self._failed.clear()
            failure = FetchFailure(exc.result, exc.reason)
            self._failed[(file, txt_id)] = (now, failure)
            log.warning("MTA-STS policy of %s: %s", domain, exc.reason)
            return _without_fetch(domain, cached, failure)
        self._failed.pop((file, txt_id), None)
        await self._store(file, policy)
        log.info("MTA-STS policy of %s fetched: mode %s, max_age %d s", domain, policy.mode, policy.max_age)
        return Lookup(domain, policy, "policy fetched")

    async def _fetch(self, domain: str, resolver: TXTResolver, ca_bundle: str, txt_id: str) -> Policy:
        host = f"mta-sts.{domain}"
        self.fetches += 1
        try:
            addresses = await resolver.host_addresses(host)
        except Exception as exc:  # noqa: BLE001 - no address: no policy
            raise PolicyError(f"{host} has no address: {getattr(exc, 'reason', exc)}") from exc
        context = client_context(TLSLevel.SECURE, ca_bundle=ca_bundle)
        problem, unverified = "", ""
        for address in addresses:
            try:
                async with asyncio.timeout(self.timeout):
                    text = await _get(address, self.https_port, host, context)
            except PolicyError:
                raise
            except Exception as exc:  # noqa: BLE001 - try the next address
                tls_error = next((e for e in causes(exc) if isinstance(e, ssl.SSLError)), None)
                problem = describe_failure(tls_error) if tls_error else f"{type(exc).__name__}: {exc}"
                if isinstance(tls_error, ssl.SSLCertVerificationError):
                    unverified = unverified or problem  # the diagnosis a later timeout must not hide
                continue
            return parse_policy(text, id=txt_id, fetched_at=self.clock())
        where = f"fetching https://{host}{POLICY_PATH} failed"
        if unverified:
            raise PolicyUnverified(f"{where}: {unverified}")
        raise PolicyError(f"{where}: {problem or 'no address'}")

    async def _load(self, file: Path) -> Policy | None:
        """The cached policy (memory, else the file a previous run left); a damaged file is none."""
        if file in self._memory:
            return self._memory[file]
        try:
            policy = _from_json(json.loads(await asyncio.to_thread(file.read_text, "utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring the damaged MTA-STS cache file %s: %s", file, exc)
            return None
        self._memory[file] = policy
        return policy

    async def _store(self, file: Path, policy: Policy) -> None:
        """Keep `policy` in memory and on disk (0600, replaced atomically, in a worker thread:
        the write waits for the disk)."""
        if len(self._memory) > MEMORY_LIMIT:  # the files still hold them all
            self._memory.clear()
        self._memory[file] = policy
        try:
            await asyncio.to_thread(_write, file, json.dumps(asdict(policy), indent=1).encode())
        except OSError as exc:  # the policy still holds for this run
            log.warning("could not cache the MTA-STS policy in %s: %s", file, exc)


def _write(file: Path, data: bytes) -> None:
    private_dir(file.parent)
    write_atomic(file, data, 0o600)


def _without_fetch(domain: str, cached: Policy | None, failure: FetchFailure) -> Lookup:
    """The answer when the policy could not be fetched: the cached one while it lasts."""
    if cached is not None:
        return Lookup(domain, cached, f"cached policy (fetch failed: {failure.reason})", failure)
    return Lookup(domain, None, f"no usable MTA-STS policy: {failure.reason}", failure)


def _due(cache_dir: Path, now: float, limit: int) -> list[str]:
    """The domains of `cache_dir` whose cached policy is stale but unexpired, those closest to
    expiry first, at most `limit` (blocking: run in a thread). A missing directory is none;
    a damaged file is skipped (a delivery's lookup logs it)."""
    due: list[tuple[float, str]] = []
    try:
        files = list(cache_dir.glob("*.json"))
    except FileNotFoundError:
        return []
    for file in files:
        domain = file.name.removesuffix(".json")
        if not _DOMAIN.fullmatch(domain):  # not a file `_store` wrote (its temporary files start with a dot)
            continue
        try:
            policy = _from_json(json.loads(file.read_text("utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            continue
        if policy.stale(now) and not policy.expired(now):
            due.append((policy.fetched_at + policy.max_age, domain))
    return [domain for _, domain in sorted(due)[:limit]]


def _from_json(data: dict) -> Policy:
    """A policy from its cache file, checked as strictly as a fetched one."""
    mx = data["mx"]
    if not isinstance(mx, list) or not all(isinstance(p, str) and _MX_PATTERN.fullmatch(p) for p in mx):
        raise ValueError("mx is not a list of MX host patterns")
    if data["mode"] not in ("enforce", "testing", "none") or not 0 <= int(data["max_age"]) <= MAX_AGE_LIMIT:
        raise ValueError(f"mode {data['mode']!r} or max_age {data['max_age']!r} out of range")
    return Policy(data["mode"], tuple(mx), int(data["max_age"]), str(data["id"]), float(data["fetched_at"]))


async def _get(address: str, port: int, host: str, context: ssl.SSLContext) -> str:
    """GET the policy from `address`:`port`, verifying the certificate for `host`. Only a
    200 `text/plain` answer of at most `MAX_POLICY_BYTES` is a policy (RFC 8461 §3.3)."""
    where = f"https://{host}{POLICY_PATH}"
    try:
        answer = await https.exchange(
            "GET", host, address, port, POLICY_PATH, context, headers={"Accept": "text/plain"}, limit=MAX_POLICY_BYTES
        )
    except https.AnswerTooLarge as exc:
        raise PolicyError(f"{where}: policy larger than {MAX_POLICY_BYTES} bytes") from exc
    except httpx.RemoteProtocolError as exc:
        raise PolicyError(f"{where}: malformed HTTP answer ({exc})") from exc
    _check_response(host, answer)
    try:
        return answer.body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyInvalid(f"{where}: policy is not UTF-8 text") from exc


def _check_response(host: str, answer: https.Answer) -> None:
    where = f"https://{host}{POLICY_PATH}"
    if 300 <= answer.status < 400:
        raise PolicyError(f"{where}: HTTP {answer.status} redirect refused (RFC 8461 §3.3)")
    if answer.status != 200:
        raise PolicyError(f"{where}: HTTP {answer.status}")
    if answer.media_type != "text/plain":
        raise PolicyError(f"{where}: content type {answer.media_type or 'missing'}, not text/plain")
