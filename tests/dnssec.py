"""A DNSSEC-validating resolver for tests: a private Debian `unbound` answering from test zones.

    resolver = ValidatingResolver(tmp_path / "unbound")
    resolver.zone("partner.example", ["@ MX 10 mx1", "mx1 A 127.0.0.1",
                                      "_25._tcp.mx1 TLSA 3 1 1 <sha256 hex>"])
    resolver.zone("plain.example", ["@ MX 10 mx1", "mx1 A 127.0.0.1"], signed=False)
    resolver.zone("broken.example", ["@ MX 10 mx1"], bogus=True)
    resolver.start()
    stub = Resolver([resolver.host], port=resolver.port, timeout=2.0)
    ...
    resolver.stop()

or, in a test, the `validating_resolver` fixture (not yet started: add zones, then `start()`).
Zone records are zone-file lines, names relative to the origin or absolute; an SOA and an NS
(`localhost.`) are added unless the records have their own. Answers from a signed zone are
secure (the AD bit, for a query with AD or DO set); an unsigned zone's are insecure (no AD); a
bogus zone's are SERVFAIL. Signed zones (dnspython, one ECDSAP256SHA256 key with the SEP flag,
NSEC, signatures valid from an hour ago for 30 days) have their DS as a trust anchor; a bogus
zone is signed the same way but its trust anchor is the DS of another key, so no chain of trust
can be built. There is no root trust anchor: a zone with no zone above it is an island of trust
(signed) or outside any (unsigned). A zone below another is delegated from it (NS, and the DS
of a signed child), so an unsigned zone below a signed one is provably insecure, as in the DNS.

Zones take effect at `start()` or `restart()` (a new process: a cold cache, the same port; a
start takes some 40 ms). Names outside the zones get REFUSED from unbound itself (those under
unbound's built-in local zones, such as `localhost.` or `test.`, their built-in answers).
Nothing leaves loopback: unbound's outgoing sockets are bound to 127.0.0.1, which the kernel
will not route elsewhere, the zones are served from files (`auth-zone`), and the root is a stub
pointing at unbound itself, so a lookup that escapes the zones (a CNAME out of them) fails fast
with SERVFAIL. Everything lives in `workdir`: `unbound.conf`, the zone files and `unbound.log`
(query-level: every query sent upstream is logged as `sending to target: <zone> addr#port`).

`dns.dnssec` is forced on: dnspython 2.9 will not sign unless cryptography is 50 or newer, while
ECDSA P-256 works with the older one the project may have installed (`cryptography>=42`).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns._features
import pytest

if not dns._features.have("dnssec"):
    dns._features.force("dnssec", True)

import dns.dnssec  # noqa: E402  (after the force: dns.dnssecalgs reads it on import)
import dns.message  # noqa: E402
import dns.name  # noqa: E402
import dns.rdata  # noqa: E402
import dns.rdataclass  # noqa: E402
import dns.rdatatype  # noqa: E402
import dns.zone  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from dns.rdtypes.ANY.DNSKEY import DNSKEY  # noqa: E402
from dns.rdtypes.ANY.DS import DS  # noqa: E402

_TTL = 60
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 5.0
_PORT_ATTEMPTS = 5
_LOG_TAIL = 30


@dataclass(frozen=True)
class _Zone:
    origin: dns.name.Name
    records: tuple[str, ...]
    key: ec.EllipticCurvePrivateKey | None  # None for an unsigned zone
    dnskey: DNSKEY | None
    trusted: DNSKEY | None  # the key of its trust anchor and DS: `dnskey`, or another if bogus

    @property
    def filename(self) -> str:
        return self.origin.to_text(omit_final_dot=True) + ".zone"

    @property
    def ds(self) -> DS | None:
        return None if self.trusted is None else dns.dnssec.make_ds(self.origin, self.trusted, "SHA256")


class ValidatingResolver:
    """A validating unbound on 127.0.0.1 and a free port (UDP and TCP), serving `zone()`s."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.host = "127.0.0.1"
        self.port = 0
        self.log = self.workdir / "unbound.log"
        self._zones: dict[dns.name.Name, _Zone] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def zone(self, origin: str, records: list[str], *, signed: bool = True, bogus: bool = False) -> None:
        """Add or replace the zone at `origin` (served from the next `start()` or `restart()`)."""
        if bogus and not signed:
            raise ValueError("a bogus zone is a signed one that fails validation")
        name = dns.name.from_text(origin)
        if name == dns.name.root:
            raise ValueError("the root is unbound's own (every name outside the zones is refused)")
        self._zones[name] = _make_zone(name, records, signed=signed, bogus=bogus)

    def start(self) -> ValidatingResolver:
        """Write the config and zones, start unbound and return once it answers queries.

        Raises RuntimeError, with the end of unbound's log, if it exits or does not answer.
        """
        if self._process is not None:
            raise RuntimeError("the validating resolver is already running")
        if self.port:
            self._launch()
            return self
        for attempt in range(_PORT_ATTEMPTS):
            self.port = _free_port(self.host)
            try:
                self._launch()
                return self
            except _PortTaken:
                if attempt == _PORT_ATTEMPTS - 1:
                    raise
        return self

    def restart(self) -> None:
        """Stop and start again on the same port: the current zones, a cold cache."""
        self.stop()
        self.start()

    def stop(self) -> None:
        """Stop unbound (the port stays this resolver's for a later `start()`)."""
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> ValidatingResolver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- process -----------------------------------------------------------------------

    def _launch(self) -> None:
        zonedir = self.workdir / "zones"
        if zonedir.exists():
            shutil.rmtree(zonedir)
        zonedir.mkdir(parents=True)
        zones = list(self._zones.values())
        for zone in zones:
            (zonedir / zone.filename).write_text(_zone_file(zone, _children(zone, zones)))
        config = self.workdir / "unbound.conf"
        config.write_text(_config(self.workdir, zonedir, self.host, self.port, zones))
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            # -d: in the foreground; logfile "" sends the log to stderr, with config errors.
            self._process = subprocess.Popen(
                [_unbound(), "-d", "-c", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        try:
            self._wait_ready(self._process, offset)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes], offset: int) -> None:
        """Return once unbound answers a query; raise with its log if it exits or times out.

        The probe's socket is connected, so that until unbound binds the port the kernel's
        "port unreachable" comes back at once as ConnectionRefusedError.
        """
        query = dns.message.make_query(".", "SOA").to_wire()
        deadline = time.monotonic() + _START_TIMEOUT
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((self.host, self.port))
            probe.settimeout(0.02)
            while time.monotonic() < deadline:
                try:
                    probe.send(query)
                    probe.recv(65535)
                    return
                except (TimeoutError, ConnectionRefusedError):
                    pass
                try:
                    process.wait(timeout=0.005)  # doubles as the pause between probes
                except subprocess.TimeoutExpired:
                    continue
                tail = self._log_tail(offset)
                if "address already in use" in tail.lower() or "can't bind socket" in tail:
                    raise _PortTaken(f"unbound could not bind {self.host}#{self.port}:\n{tail}")
                raise RuntimeError(f"unbound exited with status {process.returncode}:\n{tail}")
        raise RuntimeError(f"unbound did not answer within {_START_TIMEOUT:.0f}s:\n{self._log_tail(offset)}")

    def _log_tail(self, offset: int) -> str:
        """The last lines unbound logged since `offset`."""
        with self.log.open("rb") as log:
            log.seek(offset)
            lines = log.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL:])


class _PortTaken(RuntimeError):
    pass


def _unbound() -> str:
    path = _which_unbound()
    if path is None:
        raise FileNotFoundError("unbound is not installed (Debian: apt-get install unbound)")
    return path


def _which_unbound() -> str | None:
    """unbound's path: it lives in /usr/sbin, which a user's PATH may lack."""
    return shutil.which("unbound", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def _free_port(host: str) -> int:
    """A port free for both UDP and TCP on `host` right now (unbound binds it a moment later)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise OSError("no free port for both UDP and TCP")


# -- zones -----------------------------------------------------------------------------


def _make_zone(origin: dns.name.Name, records: list[str], *, signed: bool, bogus: bool) -> _Zone:
    """A zone's records (checked now) and keys; its file is written at each start."""
    _parse(origin, records)
    if not signed:
        return _Zone(origin, tuple(records), None, None, None)
    key, dnskey = _new_key()
    trusted = _new_key()[1] if bogus else dnskey  # a bogus zone's DNSKEY set matches no trusted DS
    return _Zone(origin, tuple(records), key, dnskey, trusted)


def _zone_file(zone: _Zone, children: list[_Zone]) -> str:
    """The zone file: the records, an SOA and NS unless given, a delegation (with the DS of a
    signed child) to each zone right below, all signed if the zone is."""
    parsed = _parse(zone.origin, zone.records)
    with parsed.writer() as txn:
        if txn.get(zone.origin, dns.rdatatype.SOA) is None:
            txn.add(zone.origin, _TTL, _rdata("SOA", f"localhost. hostmaster.localhost. 1 3600 600 86400 {_TTL}"))
        if txn.get(zone.origin, dns.rdatatype.NS) is None:
            txn.add(zone.origin, _TTL, _rdata("NS", "localhost."))
        for child in children:
            txn.add(child.origin, _TTL, _rdata("NS", "localhost."))
            if child.ds is not None:
                txn.add(child.origin, _TTL, child.ds)
    if zone.key is not None and zone.dnskey is not None:
        now = dt.datetime.now(dt.UTC)
        dns.dnssec.sign_zone(
            parsed,
            keys=[(zone.key, zone.dnskey)],
            inception=now - dt.timedelta(hours=1),
            expiration=now + dt.timedelta(days=30),
        )
    return parsed.to_text(relativize=False)


def _children(zone: _Zone, zones: list[_Zone]) -> list[_Zone]:
    """The zones right below `zone` (no other zone between them)."""
    below = [other for other in zones if other.origin != zone.origin and other.origin.is_subdomain(zone.origin)]
    return [
        child
        for child in below
        if not any(child.origin != other.origin and child.origin.is_subdomain(other.origin) for other in below)
    ]


def _parse(origin: dns.name.Name, records: list[str] | tuple[str, ...]) -> dns.zone.Zone:
    text = "\n".join([f"$TTL {_TTL}", *records, ""])
    return dns.zone.from_text(text, origin=origin, relativize=False, check_origin=False)


def _rdata(rdtype: str, text: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, text)


def _new_key() -> tuple[ec.EllipticCurvePrivateKey, DNSKEY]:
    """A fresh ECDSAP256SHA256 key with the SEP flag (a CSK: it signs the whole zone)."""
    key = ec.generate_private_key(ec.SECP256R1())
    flags = dns.dnssec.Flag.ZONE | dns.dnssec.Flag.SEP
    return key, dns.dnssec.make_dnskey(key.public_key(), dns.dnssec.Algorithm.ECDSAP256SHA256, flags=flags)


def _config(workdir: Path, zonedir: Path, host: str, port: int, zones: list[_Zone]) -> str:
    """unbound.conf: validate, answer from the zones only, query nothing beyond loopback."""
    server = [
        f"interface: {host}",
        f"port: {port}",
        "do-ip6: no",
        "so-reuseport: no",  # a second unbound on the port must fail, not share it
        "num-threads: 1",
        "do-daemonize: no",
        'username: ""',
        'chroot: ""',
        f'directory: "{workdir}"',
        f'pidfile: "{workdir / "unbound.pid"}"',
        "use-syslog: no",
        'logfile: ""',
        "log-time-ascii: yes",
        "verbosity: 3",
        "val-log-level: 2",
        'module-config: "validator iterator"',
        "harden-dnssec-stripped: yes",
        "qname-minimisation: no",
        "aggressive-nsec: no",
        "trust-anchor-signaling: no",
        "root-key-sentinel: no",
        # The kernel does not route from 127.0.0.1 to another host: nothing can leave.
        f"outgoing-interface: {host}",
        "do-not-query-localhost: no",
        'local-zone: "." refuse',
        *(f'local-zone: "{zone.origin}" transparent' for zone in zones),
        *(f'trust-anchor: "{zone.origin} DS {zone.ds}"' for zone in zones if zone.ds is not None),
    ]
    lines = ["server:", *(f"  {line}" for line in server)]
    for zone in zones:
        lines += [
            "auth-zone:",
            f'  name: "{zone.origin}"',
            f'  zonefile: "{zonedir / zone.filename}"',
            "  for-upstream: yes",
            "  for-downstream: no",
            "  fallback-enabled: no",
        ]
    # The root's servers are unbound itself (which refuses): a lookup that leaves the zones
    # fails at once instead of going to the Internet's root servers.
    lines += ["stub-zone:", '  name: "."', f"  stub-addr: {host}@{port}", "  stub-prime: no"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def validating_resolver(tmp_path: Path) -> Iterator[ValidatingResolver]:
    """A `ValidatingResolver` in `tmp_path`, not started (add zones, then `start()`); stopped after."""
    from tests.conftest import require

    require(_which_unbound(), "needs unbound (Debian's package)")
    resolver = ValidatingResolver(tmp_path / "unbound")
    try:
        yield resolver
    finally:
        resolver.stop()
