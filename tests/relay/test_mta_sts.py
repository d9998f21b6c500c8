"""MTA-STS (RFC 8461) against real peers on loopback: what a domain's policy lets through.

A DNS server (tests/dnsserver.py) serves the `_mta-sts` TXT records, the MX records and the
addresses (everything 127.0.0.1); an HTTPS server on loopback publishes the policies with a
certificate from the test CA for `mta-sts.<domain>`; aiosmtpd sinks with STARTTLS present a
certificate for the MX host or for another name. The relay's `MTASTS` is told the HTTPS
server's port and a clock the test moves: no sleeps, no network beyond loopback.
"""

from __future__ import annotations

import json
import logging
import ssl
import stat
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from engine.relay.delivery.resolve import Resolver
from engine.relay.tls.levels import TLSLevel
from engine.relay.tls.mtasts import (
    MTASTS,
    FetchFailure,
    Lookup,
    PolicyError,
    mx_matches,
    parse_policy,
    parse_txt,
    verdict,
)
from tests.relay.peers import Sink, eventually
from tests.relay.test_relay_flow import message, send

DOMAIN = "partner.example"
MX = "mx1.partner.example"
ENFORCE = "version: STSv1\r\nmode: enforce\r\nmx: mx1.partner.example\r\nmax_age: 86400\r\n"


class Clock:
    """Unix time that moves only when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class PolicyServer:
    """HTTPS on 127.0.0.1 answering `/.well-known/mta-sts.txt` per Host header from `answers`
    (host -> (status, content type, body, extra headers)); counts the requests it gets."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.answers: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                host = (self.headers.get("Host") or "").split(":")[0]
                server.requests.append((host, self.path))
                status, ctype, body, extra = server.answers.get(host, (404, "text/plain", b"no policy\n", {}))
                if self.path != "/.well-known/mta-sts.txt":
                    status, body = 404, b"not here\n"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def publish(self, domain: str, text: str, status: int = 200, ctype: str = "text/plain", **headers: str) -> None:
        self.answers[f"mta-sts.{domain}"] = (status, ctype, text.encode(), headers)

    def __enter__(self) -> PolicyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pki(ca, tmp_path: Path) -> dict[str, Path | ssl.SSLContext]:
    """The test CA's file, server contexts for the MX host and another name, and one for the
    policy hosts (mta-sts.<domain> for every domain these tests use)."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def server(*names: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(context)
        return context

    return {
        "ca": ca_file,
        "mx": server(MX),
        "other": server("other.test.example"),
        "https": server(f"mta-sts.{DOMAIN}", "mta-sts.testing.example", "mta-sts.nopolicy.example"),
    }


@pytest.fixture
def policies(pki) -> Iterator[PolicyServer]:
    with PolicyServer(pki["https"]) as server:
        yield server


@pytest.fixture
def zone(dns_server):
    """DNS for partner.example: MX mx1, the policy host, and `_mta-sts` with id 1."""
    for domain in (DOMAIN, "testing.example", "nopolicy.example"):
        dns_server.zone[(domain, "MX")] = [(10, MX)]
        dns_server.zone[(f"mta-sts.{domain}", "A")] = ["127.0.0.1"]
    dns_server.zone[(MX, "A")] = ["127.0.0.1"]
    dns_server.zone[("mx9.partner.example", "A")] = ["127.0.0.1"]
    dns_server.zone[(f"_mta-sts.{DOMAIN}", "TXT")] = ['"v=STSv1; id=20260101T000000"']
    return dns_server.zone


def untrusted(*names: str) -> ssl.SSLContext:
    """A server context with a certificate for `names` from a CA the relay does not trust."""
    import trustme

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    trustme.CA().issue_cert(*names).configure_cert(context)
    return context


def resolver(dns_server) -> Resolver:
    return Resolver([dns_server.host], port=dns_server.port, timeout=2.0)


def config(pki, sink_port: int, dns_port: int, domain: str = DOMAIN, tls: str = "", fallback: str = "secure") -> dict:
    """YAML pieces for a relay whose route takes `domain`'s MX on the sink's port, with an
    enforced-TLS rule `level: mta-sts` for the partners group (partner.example)."""
    extra = f"""
    tls:
      ca_bundle: {pki["ca"]}
      {tls or "outbound_default: opportunistic"}
      mta_sts: {{fallback: {fallback}}}
    domain_groups:
      partners: [{DOMAIN}]
    enforced_tls:
      - {{name: partners-sts, direction: outbound, match: {{domain_group: partners}}, level: mta-sts}}
    routes:
      - {{name: mx, recipients: any, next_hop: {{host: {domain}, port: {sink_port}, mx_lookup: true}}}}
    """
    system = f"  dns: {{nameservers: [127.0.0.1], port: {dns_port}, timeout: 2s}}\n"
    return {"extra": extra, "system": system}


async def deferred(relay, queue_id: str):
    async def check():
        detail = await relay.queue.show(queue_id)
        return detail if detail.recipients[0].state == "deferred" else None

    return await eventually(check, what="the message to be deferred")


async def delivered(caplog) -> dict:
    """The decision log's `delivery` event of a delivered recipient (the queue forgets it)."""

    async def check():
        for record in caplog.records:
            text = record.getMessage()
            if '"event":"delivery"' in text and '"result":"delivered"' in text:
                return json.loads(text)
        return None

    return await eventually(check, what="the delivery to be logged")


async def start(write_config, start_relay, pieces: dict, policies: PolicyServer, clock: Clock):
    path = write_config(pieces["extra"], system=pieces["system"])
    return await start_relay(path, mta_sts=MTASTS(https_port=policies.port, clock=clock))


# -- enforcement against real peers ---------------------------------------------------------


async def test_enforce_delivers_to_a_listed_mx_with_a_verified_certificate(
    pki, policies, zone, dns_server, write_config, start_relay, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    policies.publish(DOMAIN, ENFORCE)
    with Sink(tls=pki["mx"]) as sink:
        relay = await start(write_config, start_relay, config(pki, sink.port, dns_server.port), policies, Clock())
        await send(relay, message())
        [got] = await sink.received(1)
        assert got.tls in ("TLSv1.2", "TLSv1.3")
        event = await delivered(caplog)
    assert "chain verified, name checked" in event["tls"]
    assert policies.requests == [(f"mta-sts.{DOMAIN}", "/.well-known/mta-sts.txt")]


async def test_enforce_refuses_an_mx_the_policy_does_not_name(
    pki, policies, zone, dns_server, write_config, start_relay
) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("mx1", "mx9"))
    with Sink(tls=pki["mx"]) as sink:
        relay = await start(write_config, start_relay, config(pki, sink.port, dns_server.port), policies, Clock())
        _, reply = await send(relay, message())
        detail = await deferred(relay, reply.split()[-1])
        assert sink.messages == []
    error = detail.recipients[0].last_error
    assert f"MX host {MX} is not in the MTA-STS policy of {DOMAIN} (mx: mx9.partner.example)" in error


async def test_enforce_refuses_a_certificate_for_another_name(
    pki, policies, zone, dns_server, write_config, start_relay
) -> None:
    policies.publish(DOMAIN, ENFORCE)
    with Sink(tls=pki["other"]) as sink:
        relay = await start(write_config, start_relay, config(pki, sink.port, dns_server.port), policies, Clock())
        _, reply = await send(relay, message())
        detail = await deferred(relay, reply.split()[-1])
        assert sink.messages == []
    error = detail.recipients[0].last_error
    assert "hostname mismatch" in error and f"MTA-STS policy of {DOMAIN} (enforce)" in error
    assert "refused" in detail.recipients[0].last_tls


async def test_testing_mode_delivers_and_logs_what_enforce_would_refuse(
    pki, policies, zone, dns_server, write_config, start_relay, caplog
) -> None:
    zone[("_mta-sts.testing.example", "TXT")] = ['"v=STSv1; id=t1"']
    policies.publish("testing.example", ENFORCE.replace("enforce", "testing").replace("mx1", "mx9"))
    caplog.set_level(logging.INFO)
    with Sink(tls=pki["mx"]) as sink:
        pieces = config(pki, sink.port, dns_server.port, domain="testing.example", tls="outbound_default: mta-sts")
        relay = await start(write_config, start_relay, pieces, policies, Clock())
        await send(relay, message(to="bob@testing.example"))
        [got] = await sink.received(1)
        assert got.tls in ("TLSv1.2", "TLSv1.3")
    would = f"MX host {MX} is not in the MTA-STS policy of testing.example"
    assert any(would in r.getMessage() and "testing mode" in r.getMessage() for r in caplog.records)
    assert any('"event":"mta-sts"' in r.getMessage() and would in r.getMessage() for r in caplog.records)


async def test_no_policy_means_the_fallback_level(
    pki, policies, zone, dns_server, write_config, start_relay, caplog
) -> None:
    """`tls.outbound_default: mta-sts` with fallback `opportunistic`: a domain without a policy
    gets its mail in plain text from a peer without STARTTLS, as opportunistic allows."""
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    tls = "outbound_default: mta-sts"
    with Sink() as sink:
        pieces = config(pki, sink.port, dns_server.port, domain="nopolicy.example", tls=tls, fallback="opportunistic")
        relay = await start(write_config, start_relay, pieces, policies, Clock())
        await send(relay, message(to="bob@nopolicy.example"))
        [got] = await sink.received(1)
        assert got.tls is None
        event = await delivered(caplog)
    assert event["tls"] == "none (peer offered no STARTTLS)"
    assert policies.requests == []  # no TXT record: nothing fetched


async def test_policy_survives_a_restart_in_data_dir(
    pki, policies, zone, dns_server, write_config, start_relay, tmp_path
) -> None:
    """The first run fetches and caches the policy (0600 file); the second, with the HTTPS
    server answering nothing useful and the MX moved to a host the policy does not name,
    still enforces the cached policy without fetching."""
    policies.publish(DOMAIN, ENFORCE)
    clock = Clock()
    with Sink(tls=pki["mx"]) as sink:
        pieces = config(pki, sink.port, dns_server.port)
        relay = await start(write_config, start_relay, pieces, policies, clock)
        await send(relay, message())
        await sink.received(1)
        await relay.stop()
        cache = tmp_path / "var" / "mta-sts" / f"{DOMAIN}.json"
        assert stat.S_IMODE(cache.stat().st_mode) == 0o600
        assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700

        policies.publish(DOMAIN, "gone", status=500)
        zone[(DOMAIN, "MX")] = [(10, "mx9.partner.example")]
        clock.now += 3600  # within max_age/2: no refresh due
        again = MTASTS(https_port=policies.port, clock=clock)
        relay = await start_relay(write_config(pieces["extra"], system=pieces["system"]), mta_sts=again)
        _, reply = await send(relay, message())
        detail = await deferred(relay, reply.split()[-1])
        assert len(sink.messages) == 1
    assert "mx9.partner.example is not in the MTA-STS policy" in detail.recipients[0].last_error
    assert again.fetches == 0


# -- the lookup and its cache ---------------------------------------------------------------


async def lookup(sts: MTASTS, dns_server, pki, tmp_path: Path, domain: str = DOMAIN) -> Lookup:
    return await sts.lookup(
        domain, resolver=resolver(dns_server), ca_bundle=str(pki["ca"]), cache_dir=tmp_path / "cache"
    )


async def test_a_failed_fetch_keeps_the_cached_policy(pki, policies, zone, dns_server, tmp_path, caplog) -> None:
    policies.publish(DOMAIN, ENFORCE)
    clock = Clock()
    sts = MTASTS(https_port=policies.port, clock=clock)
    first = await lookup(sts, dns_server, pki, tmp_path)
    assert first.policy is not None and first.policy.mode == "enforce" and first.note == "policy fetched"

    zone[(f"_mta-sts.{DOMAIN}", "TXT")] = ['"v=STSv1; id=20260202"']  # a new id: fetch again
    policies.publish(DOMAIN, "moved", status=302, Location="https://elsewhere.example/")
    caplog.set_level(logging.WARNING)
    second = await lookup(sts, dns_server, pki, tmp_path)
    assert second.policy == first.policy
    assert "redirect refused" in second.note and second.note.startswith("cached policy (fetch failed")
    assert any("redirect refused" in r.getMessage() for r in caplog.records)
    assert second.failure is not None and second.failure.result == "sts-policy-fetch-error"
    assert "redirect refused" in second.failure.reason and first.failure is None
    # within RETRY_FAILED_FETCH nothing is fetched, and the failure still stands
    again = await lookup(sts, dns_server, pki, tmp_path)
    assert again.failure == second.failure and sts.fetches == 2

    del zone[(f"_mta-sts.{DOMAIN}", "TXT")]  # RFC 8461 §5.1: a vanished record ends nothing
    third = await lookup(sts, dns_server, pki, tmp_path)
    assert third.policy == first.policy and "NXDOMAIN for TXT" in third.note
    assert third.failure is None  # no policy announced: nothing failed to be fetched


async def test_max_age_is_honoured(pki, policies, zone, dns_server, tmp_path) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("86400", "100"))
    clock = Clock(1000.0)
    sts = MTASTS(https_port=policies.port, clock=clock)
    assert (await lookup(sts, dns_server, pki, tmp_path)).note == "policy fetched"
    clock.now = 1040.0  # before half of max_age: the cache answers
    assert (await lookup(sts, dns_server, pki, tmp_path)).note == "cached policy"
    assert sts.fetches == 1
    clock.now = 1060.0  # past half: refreshed
    refreshed = await lookup(sts, dns_server, pki, tmp_path)
    assert refreshed.note == "policy fetched" and refreshed.policy.fetched_at == 1060.0 and sts.fetches == 2

    policies.publish(DOMAIN, "down", status=503)
    clock.now = 1120.0  # stale, unexpired, the server fails: the cache holds
    held = await lookup(sts, dns_server, pki, tmp_path)
    assert held.policy == refreshed.policy and "HTTP 503" in held.note
    clock.now = 1160.0  # expired (1060 + 100), the server still fails: no policy
    gone = await lookup(sts, dns_server, pki, tmp_path)
    assert gone.policy is None and "HTTP 503" in gone.note
    assert sts.fetches == 3  # the failure at 1120 is not retried for 5 minutes
    policies.publish(DOMAIN, ENFORCE)
    clock.now = 1120.0 + 300
    assert (await lookup(sts, dns_server, pki, tmp_path)).note == "policy fetched" and sts.fetches == 4


INVALID, FETCH_ERROR = "sts-policy-invalid", "sts-policy-fetch-error"


@pytest.mark.parametrize(
    ("text", "answer", "reason", "result"),
    [
        ("version: STSv1\nmode: enforce\nmax_age: 100\n", {}, "names no mx", INVALID),
        (ENFORCE.replace("STSv1", "STSv2"), {}, "not 'STSv1'", INVALID),
        (ENFORCE.replace("enforce", "strict"), {}, "not enforce, testing or none", INVALID),
        (ENFORCE.replace("86400", "31557601"), {}, "max_age '31557601'", INVALID),
        (ENFORCE + "this line has no colon\r\n", {}, "not `key: value`", INVALID),
        (ENFORCE, {"ctype": "text/html"}, "content type text/html", FETCH_ERROR),
        (ENFORCE + "#" * 70_000, {}, "larger than 65536 bytes", FETCH_ERROR),
        (ENFORCE, {"status": 404}, "HTTP 404", FETCH_ERROR),
        (ENFORCE, {"status": 301, "Location": "https://elsewhere.example/"}, "redirect refused", FETCH_ERROR),
    ],
    ids=["no-mx", "version", "mode", "max-age", "syntax", "content-type", "too-big", "not-found", "redirect"],
)
async def test_a_bad_policy_is_no_policy(
    text, answer, reason, result, pki, policies, zone, dns_server, tmp_path, caplog
) -> None:
    """A policy the TXT record announced but that could not be had: no policy, and the
    lookup says why in RFC 8460's words (§4.3.2.2) for TLS-RPT."""
    policies.publish(DOMAIN, text, **answer)
    caplog.set_level(logging.WARNING)
    found = await lookup(MTASTS(https_port=policies.port, clock=Clock()), dns_server, pki, tmp_path)
    assert found.policy is None and reason in found.note
    assert found.failure is not None and found.failure.result == result and reason in found.failure.reason
    assert any(reason in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "cache").exists()  # nothing cached


async def test_a_policy_that_is_not_utf8_is_invalid(pki, policies, zone, dns_server, tmp_path) -> None:
    policies.answers[f"mta-sts.{DOMAIN}"] = (200, "text/plain", ENFORCE.encode() + b"mx: \xff.example\r\n", {})
    found = await lookup(MTASTS(https_port=policies.port, clock=Clock()), dns_server, pki, tmp_path)
    assert found.failure == FetchFailure(
        INVALID, f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt: policy is not UTF-8 text"
    )


@pytest.mark.parametrize(
    ("context", "reason"),
    [(lambda pki: pki["other"], "hostname mismatch"), (lambda pki: untrusted(f"mta-sts.{DOMAIN}"), "unknown CA")],
    ids=["wrong-name", "untrusted-ca"],
)
async def test_a_policy_host_with_a_wrong_certificate_is_no_policy(
    context, reason, pki, zone, dns_server, tmp_path
) -> None:
    with PolicyServer(context(pki)) as server:
        server.publish(DOMAIN, ENFORCE)
        found = await lookup(MTASTS(https_port=server.port, clock=Clock()), dns_server, pki, tmp_path)
    assert found.policy is None and reason in found.note
    assert found.failure is not None and found.failure.result == "sts-webpki-invalid"
    assert reason in found.failure.reason
    assert server.requests == []  # the handshake failed before any request


async def test_a_policy_host_without_an_address_is_a_fetch_error(pki, zone, dns_server, tmp_path) -> None:
    del zone[(f"mta-sts.{DOMAIN}", "A")]
    found = await lookup(MTASTS(clock=Clock()), dns_server, pki, tmp_path)
    assert found.policy is None and found.failure is not None
    assert found.failure.result == FETCH_ERROR and f"mta-sts.{DOMAIN} has no address" in found.failure.reason


async def test_no_txt_record_and_a_fresh_cache_are_no_failure(pki, policies, zone, dns_server, tmp_path) -> None:
    policies.publish(DOMAIN, ENFORCE)
    sts = MTASTS(https_port=policies.port, clock=Clock())
    assert (await lookup(sts, dns_server, pki, tmp_path)).failure is None  # fetched
    policies.publish(DOMAIN, "down", status=503)
    cached = await lookup(sts, dns_server, pki, tmp_path)
    assert cached.note == "cached policy" and cached.failure is None  # nothing fetched, nothing failed
    nothing = await lookup(sts, dns_server, pki, tmp_path, domain="nopolicy.example")
    assert nothing.policy is None and nothing.failure is None


# -- the background refresh (RFC 8461 §5.1) -------------------------------------------------


async def refresh(sts: MTASTS, dns_server, pki, tmp_path: Path, **kwargs) -> list[Lookup]:
    return await sts.refresh(
        resolver=resolver(dns_server), ca_bundle=str(pki["ca"]), cache_dir=tmp_path / "cache", **kwargs
    )


def cached(tmp_path: Path, domain: str = DOMAIN) -> dict:
    return json.loads((tmp_path / "cache" / f"{domain}.json").read_text())


async def test_refresh_fetches_a_stale_policy_again_without_a_delivery(
    pki, policies, zone, dns_server, tmp_path
) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("86400", "1000"))
    clock = Clock(10_000.0)
    sts = MTASTS(https_port=policies.port, clock=clock)
    await lookup(sts, dns_server, pki, tmp_path)
    clock.now += 400  # not stale yet: nothing to do
    assert await refresh(sts, dns_server, pki, tmp_path) == [] and sts.fetches == 1

    clock.now += 200  # past half of max_age: fetched again, without anyone sending mail
    policies.publish(DOMAIN, ENFORCE.replace("86400", "2000"))
    [done] = await refresh(sts, dns_server, pki, tmp_path)
    assert done.note == "policy fetched" and done.policy.max_age == 2000 and sts.fetches == 2
    assert cached(tmp_path)["fetched_at"] == 10_600.0 and cached(tmp_path)["max_age"] == 2000
    assert await refresh(sts, dns_server, pki, tmp_path) == []  # fresh again


async def test_refresh_leaves_a_policy_whose_txt_record_is_gone_in_force(
    pki, policies, zone, dns_server, tmp_path
) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("86400", "1000"))
    clock = Clock(10_000.0)
    sts = MTASTS(https_port=policies.port, clock=clock)
    first = await lookup(sts, dns_server, pki, tmp_path)
    del zone[(f"_mta-sts.{DOMAIN}", "TXT")]
    clock.now += 600
    [kept] = await refresh(sts, dns_server, pki, tmp_path)
    assert kept.policy == first.policy and "NXDOMAIN for TXT" in kept.note and kept.failure is None
    assert sts.fetches == 1 and cached(tmp_path)["fetched_at"] == 10_000.0
    clock.now += 500  # expired: a refresh no longer looks at it, a lookup finds no policy
    assert await refresh(sts, dns_server, pki, tmp_path) == []
    assert (await lookup(sts, dns_server, pki, tmp_path)).policy is None


async def test_a_failed_refresh_keeps_the_cached_policy(pki, policies, zone, dns_server, tmp_path, caplog) -> None:
    policies.publish(DOMAIN, ENFORCE.replace("86400", "1000"))
    clock = Clock(10_000.0)
    sts = MTASTS(https_port=policies.port, clock=clock)
    first = await lookup(sts, dns_server, pki, tmp_path)
    policies.publish(DOMAIN, "down", status=503)
    clock.now += 600
    caplog.set_level(logging.WARNING)
    [held] = await refresh(sts, dns_server, pki, tmp_path)
    assert held.policy == first.policy and held.failure == FetchFailure(
        FETCH_ERROR, f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt: HTTP 503"
    )
    assert cached(tmp_path)["fetched_at"] == 10_000.0  # the file is untouched
    assert any("HTTP 503" in r.getMessage() for r in caplog.records)
    # the next pass within RETRY_FAILED_FETCH does not hammer the server; a later one succeeds
    await refresh(sts, dns_server, pki, tmp_path)
    assert sts.fetches == 2
    policies.publish(DOMAIN, ENFORCE.replace("86400", "1000"))
    clock.now += 300
    [healed] = await refresh(sts, dns_server, pki, tmp_path)
    assert healed.note == "policy fetched" and healed.failure is None and sts.fetches == 3


async def test_refresh_takes_at_most_limit_domains_those_closest_to_expiry_first(
    pki, policies, zone, dns_server, tmp_path
) -> None:
    """Three stale policies, a limit of two: the two that expire first; a damaged cache file
    and a stray file in the directory are passed over."""
    domains = (DOMAIN, "testing.example", "nopolicy.example")
    for domain in domains:
        zone[(f"_mta-sts.{domain}", "TXT")] = ['"v=STSv1; id=r1"']
        policies.publish(domain, ENFORCE.replace("86400", "1000"))
    clock = Clock(10_000.0)
    sts = MTASTS(https_port=policies.port, clock=clock)
    for step, domain in enumerate(("nopolicy.example", DOMAIN, "testing.example")):
        clock.now = 10_000.0 + step
        await lookup(sts, dns_server, pki, tmp_path, domain=domain)
    (tmp_path / "cache" / "damaged.example.json").write_text("{not json")
    (tmp_path / "cache" / ".partner.example.json.tmp").write_text("{}")
    clock.now = 10_600.0
    done = await refresh(sts, dns_server, pki, tmp_path, limit=2)
    assert sorted(lookup.domain for lookup in done) == sorted(["nopolicy.example", DOMAIN])
    assert sts.fetches == 5
    assert cached(tmp_path, "testing.example")["fetched_at"] == 10_002.0  # its turn is the next pass


async def test_the_refresh_component_of_serve_refreshes_through_the_relay_config(
    pki, policies, zone, dns_server, write_config, start_relay
) -> None:
    """`mta-sts-refresh` refreshes at start, with the current config's resolver, CA bundle
    and data_dir: a policy a delivery cached, now stale, is fetched again with no mail sent."""
    from types import SimpleNamespace

    from engine.relay.runtime.components import MTASTSRefresh

    policies.publish(DOMAIN, ENFORCE)
    clock = Clock()
    with Sink(tls=pki["mx"]) as sink:
        relay = await start(write_config, start_relay, config(pki, sink.port, dns_server.port), policies, clock)
        await send(relay, message())
        await sink.received(1)
    sts = relay.deliverer.mta_sts
    assert sts.fetches == 1
    clock.now += 86400 / 2
    policies.publish(DOMAIN, ENFORCE.replace("86400", "172800"))
    component = MTASTSRefresh()
    await component.start(SimpleNamespace(relay=relay))
    file = relay.live.data_dir / "mta-sts" / f"{DOMAIN}.json"

    async def refreshed():
        return json.loads(file.read_text())["max_age"] == 172800

    try:
        await eventually(refreshed, what="the stale policy fetched again and cached")
    finally:
        await component.stop()
    assert sts.fetches == 2 and json.loads(file.read_text())["fetched_at"] == clock.now


# -- the pieces ------------------------------------------------------------------------------


def test_parse_policy_reads_every_field() -> None:
    text = "version: STSv1\nmode: testing\nmx: mail.example.com\nmx: *.example.net\nmax_age: 604800\nextra: ignored\n"
    policy = parse_policy(text, id="abc", fetched_at=5.0)
    assert (policy.mode, policy.mx, policy.max_age, policy.id) == (
        "testing",
        ("mail.example.com", "*.example.net"),
        604800,
        "abc",
    )
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0").mx == ()
    with pytest.raises(PolicyError, match="not an MX host pattern"):
        parse_policy("version: STSv1\nmode: enforce\nmx: mail.*.example\nmax_age: 1\n")


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.com", "MAIL.example.com.", True),
        ("*.example.com", "mx1.example.com", True),
        ("*.example.com", "a.b.example.com", False),  # one label only
        ("*.example.com", "example.com", False),
        ("mail.example.com", "mail.example.net", False),
    ],
)
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


@pytest.mark.parametrize(
    ("records", "expected"),
    [
        (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
        (["v=STSv1; id=abc", "v=spf1 -all"], "abc"),
        (["v=STSv1; id=abc", "v=STSv1; id=def"], None),  # two records: no policy
        (["v=STSv1; id=not-alnum"], None),
        (["v=STSv1;"], None),
        ([], None),
    ],
)
def test_txt_records(records: list[str], expected: str | None) -> None:
    assert parse_txt(records) == expected


def test_verdict_per_mode() -> None:
    enforce = Lookup(DOMAIN, parse_policy(ENFORCE), "cached policy")
    assert verdict(enforce, MX, TLSLevel.OPPORTUNISTIC).level is TLSLevel.SECURE
    refused = verdict(enforce, "mx9.partner.example", TLSLevel.OPPORTUNISTIC)
    assert refused.level is None and "not in the MTA-STS policy" in refused.reason
    testing = Lookup(DOMAIN, parse_policy(ENFORCE.replace("enforce", "testing")), "policy fetched")
    would = verdict(testing, "mx9.partner.example", TLSLevel.OPPORTUNISTIC)
    assert would.level is TLSLevel.OPPORTUNISTIC and would.reason
    assert verdict(Lookup(DOMAIN, None, "none"), MX, TLSLevel.VERIFY).level is TLSLevel.VERIFY
