"""TLS-RPT (RFC 8460) against real peers on loopback: a day's sessions become a report.

The set-up is test_mta_sts's (tests/dnsserver.py for DNS, an HTTPS server publishing the
MTA-STS policy, aiosmtpd sinks with STARTTLS): partner.example has three MX hosts on three
loopback addresses and one port, `mx0` (127.0.0.3, not in its enforced MTA-STS policy: refused
without a connection, and no server there), `mx2` (127.0.0.2, in the policy, but its sink has a
certificate for another name: certificate-host-mismatch) and `mx1` (127.0.0.1, a good
certificate: the success). Its `_smtp._tls` record names a mailto and an https
`rua`; the mailed report arrives at the sink, the posted one at an HTTPS server of the test CA.
The day is the recorder's clock, moved by the test: no sleeps.
"""

from __future__ import annotations

import gzip
import json
import ssl
import stat
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jsonschema
import pytest

from engine.relay.tls import tlsrpt
from engine.relay.tls.levels import NoStartTLS
from engine.relay.tls.mtasts import MTASTS
from engine.relay.tls.tlsrpt_send import filename, next_run, parse_record
from tests.relay.peers import Sink, eventually
from tests.relay.test_mta_sts import DOMAIN, Clock, PolicyServer, config, resolver, untrusted
from tests.relay.test_relay_flow import message, send

SCHEMA = json.loads((Path(__file__).parent / "tlsrpt_schema.json").read_text())
POLICY = "version: STSv1\r\nmode: enforce\r\nmx: mx1.partner.example\r\nmx: mx2.partner.example\r\nmax_age: 86400\r\n"
DAY = 1_800_000_000.0  # 2027-01-15T08:00:00Z
REPORTING = (
    "  tls_reporting: {enabled: true, organization: Example Relay Org, contact: tls-reports@relay.test.example}\n"
)


class ReportServer:
    """HTTPS on 127.0.0.1 that takes POSTs and keeps (path, content type, body)."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.posts.append((self.path, self.headers.get("Content-Type", ""), body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ReportServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def pki(ca, tmp_path: Path) -> dict:
    """The CA file; the sink's context (mx1's certificate, another name's for SNI mx2); the
    policy host's and the report server's contexts."""
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def server(*names: str) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*names).configure_cert(context)
        return context

    return {
        "ca": ca_file,
        "mx1": server("mx1.partner.example"),
        "other": server("other.test.example"),
        "policy": server(f"mta-sts.{DOMAIN}"),
        "reports": server("reports.partner.example"),
    }


@pytest.fixture
def sinks(pki) -> Iterator[tuple[Sink, Sink]]:
    """mx1's sink (127.0.0.1, its own certificate) and mx2's (127.0.0.2, another name's), one port."""
    good = Sink(tls=pki["mx1"])
    bad = Sink(tls=pki["other"], port=good.port)
    bad.controller.hostname = "127.0.0.2"
    with good, bad:
        yield good, bad


@pytest.fixture
def servers(pki) -> Iterator[tuple[PolicyServer, ReportServer]]:
    with PolicyServer(pki["policy"]) as policies, ReportServer(pki["reports"]) as reports:
        policies.publish(DOMAIN, POLICY)
        yield policies, reports


@pytest.fixture
def zone(dns_server, servers):
    _, reports = servers
    zone = dns_server.zone
    zone[(DOMAIN, "MX")] = [(5, "mx0.partner.example"), (10, "mx2.partner.example"), (20, "mx1.partner.example")]
    zone[("nopolicy.example", "MX")] = [(10, "mx1.partner.example")]
    for host, address in (("mx0", "127.0.0.3"), ("mx1", "127.0.0.1"), ("mx2", "127.0.0.2")):
        zone[(f"{host}.partner.example", "A")] = [address]
    for host in ("mta-sts", "reports"):
        zone[(f"{host}.partner.example", "A")] = ["127.0.0.1"]
    zone[(f"_mta-sts.{DOMAIN}", "TXT")] = ['"v=STSv1; id=1"']
    rua = f"mailto:tlsrpt@reports.example,https://reports.partner.example:{reports.port}/v1/tlsrpt"
    zone[(f"_smtp._tls.{DOMAIN}", "TXT")] = [f'"v=TLSRPTv1; rua={rua}"']
    return zone


async def start(
    write_config, start_relay, pki, port, dns_server, servers, clock, *, domain=DOMAIN, reporting=True, sts_port=None
):
    pieces = config(pki, port, dns_server.port, domain=domain)
    path = write_config(pieces["extra"], system=pieces["system"] + (REPORTING if reporting else ""))
    policies, _ = servers
    sts = MTASTS(https_port=sts_port or policies.port, clock=clock)
    return await start_relay(path, mta_sts=sts, tls_reports=tlsrpt.Recorder(clock))


async def test_a_day_of_mixed_outcomes_is_reported_by_mail_and_https(
    pki, sinks, servers, zone, dns_server, write_config, start_relay, tmp_path
) -> None:
    clock = Clock(DAY)
    _, reports = servers
    good, bad = sinks
    relay = await start(write_config, start_relay, pki, good.port, dns_server, servers, clock)
    await send(relay, message())
    [got] = await good.received(1)
    assert got.tls in ("TLSv1.2", "TLSv1.3") and bad.messages == []  # mx0 refused, mx2 mismatched, mx1 took it

    store = tmp_path / "var" / "tls-rpt"
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 0  # the day is not over
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "sessions.sqlite").stat().st_mode) == 0o600
    clock.now += 86400
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 1
    # the report goes out like any mail to reports.example through the route: mx0 has no
    # server, mx2 takes it (opportunistic TLS, no policy for reports.example)
    [mailed] = await bad.received(1)

    assert mailed.recipients == ["tlsrpt@reports.example"]
    mail = message_from_bytes(mailed.content, policy=policy.default)
    assert mail.get_content_type() == "multipart/report" and mail.get_param("report-type") == "tlsrpt"
    assert mail["TLS-Report-Domain"] == DOMAIN
    assert mail["TLS-Report-Submitter"] == "relay.test.example"
    assert mail["From"] == "tls-reports@relay.test.example"
    [attachment] = [part for part in mail.iter_attachments() if part.get_content_type() == "application/tlsrpt+gzip"]
    assert attachment.get_filename() == f"relay.test.example!{DOMAIN}!1799971200!1800057599.json.gz"
    report = json.loads(gzip.decompress(attachment.get_content()))
    assert (
        mail["Subject"] == f"Report Domain: {DOMAIN} Submitter: relay.test.example Report-ID: <{report['report-id']}>"
    )

    jsonschema.validate(report, SCHEMA)
    assert report["organization-name"] == "Example Relay Org"
    assert report["contact-info"] == "tls-reports@relay.test.example"
    assert report["date-range"] == {"start-datetime": "2027-01-15T00:00:00Z", "end-datetime": "2027-01-15T23:59:59Z"}
    [entry] = report["policies"]
    assert entry["policy"] == {
        "policy-type": "sts",
        "policy-string": [
            "version: STSv1",
            "mode: enforce",
            "mx: mx1.partner.example",
            "mx: mx2.partner.example",
            "max_age: 86400",
        ],
        "policy-domain": DOMAIN,
        "mx-host": ["mx1.partner.example", "mx2.partner.example"],
    }
    assert entry["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 2}
    details = {d["result-type"]: d for d in entry["failure-details"]}
    assert set(details) == {"certificate-host-mismatch", "validation-failure"}
    mismatch = details["certificate-host-mismatch"]
    assert mismatch["receiving-mx-hostname"] == "mx2.partner.example" and mismatch["failed-session-count"] == 1
    assert mismatch["sending-mta-ip"] == "127.0.0.1" and mismatch["receiving-ip"] == "127.0.0.2"
    assert mismatch["failure-reason-code"].startswith("hostname mismatch")
    refused = details["validation-failure"]
    assert refused["receiving-mx-hostname"] == "mx0.partner.example" and refused["failed-session-count"] == 1
    assert "mx0.partner.example is not in the MTA-STS policy" in refused["failure-reason-code"]
    assert refused["receiving-ip"] == "127.0.0.3" and "sending-mta-ip" not in refused  # no connection made
    assert "partners-sts" not in json.dumps(report)  # our rule names stay ours

    [(path, ctype, body)] = reports.posts
    assert path == "/v1/tlsrpt" and ctype == "application/tlsrpt+gzip"
    assert json.loads(gzip.decompress(body)) == report

    # the day is reported once: its counters are gone
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 0
    assert len(reports.posts) == 1


async def test_a_domain_without_a_tlsrpt_record_gets_no_report(
    pki, sinks, servers, zone, dns_server, write_config, start_relay
) -> None:
    clock = Clock(DAY)
    _, reports = servers
    good, bad = sinks
    relay = await start(
        write_config, start_relay, pki, good.port, dns_server, servers, clock, domain="nopolicy.example"
    )
    await send(relay, message(to="bob@nopolicy.example"))
    await good.received(1)
    recorder = relay.deliverer.tls_reports
    counted = await recorder.call(relay.live.data_dir, lambda store: store.sessions("2027-01-15", "nopolicy.example"))
    assert [(s.result, s.policy["policy-type"], n) for s, n in counted] == [("success", "no-policy-found", 1)]

    clock.now += 86400
    dns_server.servfail.add("_smtp._tls.nopolicy.example")  # DNS cannot say for now: the day waits
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 0
    waiting = await recorder.call(relay.live.data_dir, lambda store: store.days_before("2027-01-17"))
    assert waiting == [("2027-01-15", "nopolicy.example")]

    dns_server.servfail.clear()  # NXDOMAIN: no record, no report, and the day is done with
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 0
    assert dns_server.queried("_smtp._tls.nopolicy.example", "TXT")
    assert len(good.messages) == 1 and bad.messages == [] and reports.posts == []
    left = await recorder.call(relay.live.data_dir, lambda store: store.days_before("2027-01-17"))
    assert left == []


async def test_reporting_off_records_and_sends_nothing(
    pki, sinks, servers, zone, dns_server, write_config, start_relay, tmp_path
) -> None:
    clock = Clock(DAY)
    _, reports = servers
    good, bad = sinks
    relay = await start(write_config, start_relay, pki, good.port, dns_server, servers, clock, reporting=False)
    await send(relay, message())
    await good.received(1)
    clock.now += 86400
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 0
    assert len(good.messages) == 1 and bad.messages == [] and reports.posts == []
    assert not (tmp_path / "var" / "tls-rpt").exists()
    assert not dns_server.queried(f"_smtp._tls.{DOMAIN}")


async def counters(relay, rows: int) -> list[tuple[tlsrpt.Session, int]]:
    """Today's counters of partner.example once there are `rows` of them (the recorder's
    thread writes them after the sessions)."""

    async def check():
        counted = await relay.deliverer.tls_reports.call(
            relay.live.data_dir, lambda store: store.sessions(tlsrpt.day_of(DAY), DOMAIN)
        )
        return counted if len(counted) >= rows else None

    return await eventually(check, what=f"{rows} counters")


async def the_report(relay, clock, dns_server, reports: ReportServer) -> dict:
    """The day's report as POSTed to the https rua, checked against the RFC's schema."""
    clock.now = DAY + 86400
    assert await relay.tls_reporter.send_due(relay.live, resolver(dns_server)) == 1
    [(_, _, body)] = reports.posts
    report = json.loads(gzip.decompress(body))
    jsonschema.validate(report, SCHEMA)
    return report


@pytest.mark.parametrize(
    ("broken", "result", "reason"),
    [
        ("untrusted-certificate", "sts-webpki-invalid", "unknown CA"),
        ("malformed", "sts-policy-invalid", "policy mode is 'strict'"),
        ("not-found", "sts-policy-fetch-error", "HTTP 404"),
    ],
)
async def test_a_policy_that_cannot_be_fetched_is_counted_with_its_failure_type(
    broken, result, reason, pki, sinks, servers, zone, dns_server, write_config, start_relay
) -> None:
    """RFC 8460 §4.3.2.2: the domain announced a policy (its TXT record) that could not be
    had, and none is cached: the session that went well (mx1) counts as the policy failure,
    with its reason and no MX details, under `no-policy-found` (§4.4: no policy was applied).
    The mail still goes at the fallback level (`secure`: mx2's wrong name is its own failure)."""
    clock = Clock(DAY)
    policies, reports = servers
    good, bad = sinks
    if broken == "malformed":
        policies.publish(DOMAIN, POLICY.replace("enforce", "strict"))
    elif broken == "not-found":
        policies.publish(DOMAIN, POLICY, status=404)
    with PolicyServer(untrusted(f"mta-sts.{DOMAIN}")) as impostor:
        impostor.publish(DOMAIN, POLICY)
        sts_port = impostor.port if broken == "untrusted-certificate" else None
        relay = await start(write_config, start_relay, pki, good.port, dns_server, servers, clock, sts_port=sts_port)
        await send(relay, message())
        await good.received(1)
        counted = await counters(relay, 2)
    assert bad.messages == [] and impostor.requests == []
    assert sorted((s.result, s.policy["policy-type"], s.mx, n) for s, n in counted) == sorted(
        [("certificate-host-mismatch", "no-policy-found", "mx2.partner.example", 1), (result, "no-policy-found", "", 1)]
    )

    report = await the_report(relay, clock, dns_server, reports)
    [entry] = report["policies"]
    assert entry["policy"] == {"policy-type": "no-policy-found", "policy-string": [], "policy-domain": DOMAIN}
    assert entry["summary"] == {"total-successful-session-count": 0, "total-failure-session-count": 2}
    [detail] = [d for d in entry["failure-details"] if d["result-type"] == result]
    assert detail["failed-session-count"] == 1 and reason in detail["failure-reason-code"]
    assert not {"receiving-mx-hostname", "receiving-ip", "sending-mta-ip"} & set(detail)


async def test_a_failed_refetch_is_counted_under_the_cached_policy_in_force(
    pki, sinks, servers, zone, dns_server, write_config, start_relay
) -> None:
    """The policy was fetched and cached; then the TXT id changes and the policy host answers
    404. The cached policy stays in force (RFC 8461 §5.1) and is the one applied, so the next
    session that went well counts as `sts-policy-fetch-error` under `sts` with that policy
    (§4.4), while the sessions that failed on their own keep their types."""
    clock = Clock(DAY)
    policies, reports = servers
    good, bad = sinks
    relay = await start(write_config, start_relay, pki, good.port, dns_server, servers, clock)
    await send(relay, message())
    await good.received(1)
    await counters(relay, 3)
    zone[(f"_mta-sts.{DOMAIN}", "TXT")] = ['"v=STSv1; id=2"']
    policies.publish(DOMAIN, "gone", status=404)
    relay.deliverer.pool.close()  # a new session to mx1 (a reused one is counted once, when opened)
    await send(relay, message())
    await good.received(2)
    counted = await counters(relay, 4)
    assert {s.policy["policy-type"] for s, _ in counted} == {"sts"}
    assert sorted((s.result, s.mx, n) for s, n in counted) == [
        ("certificate-host-mismatch", "mx2.partner.example", 2),
        ("sts-policy-fetch-error", "", 1),
        ("success", "", 1),
        ("validation-failure", "mx0.partner.example", 2),  # not in the cached enforce policy
    ]

    report = await the_report(relay, clock, dns_server, reports)
    [entry] = report["policies"]
    assert entry["policy"]["policy-type"] == "sts" and "mode: enforce" in entry["policy"]["policy-string"]
    assert entry["summary"] == {"total-successful-session-count": 1, "total-failure-session-count": 5}
    [fetch] = [d for d in entry["failure-details"] if d["result-type"] == "sts-policy-fetch-error"]
    assert fetch["failure-reason-code"] == f"https://mta-sts.{DOMAIN}/.well-known/mta-sts.txt: HTTP 404"
    assert bad.messages == []


def test_only_a_session_that_went_well_counts_as_the_policy_failure() -> None:
    from engine.relay.tls.mtasts import FetchFailure, Lookup

    failed = Lookup(DOMAIN, None, "no usable MTA-STS policy: x", FetchFailure("sts-policy-invalid", "x" * 500))
    assert tlsrpt.sts_failure(failed, tlsrpt.SUCCESS) == ("sts-policy-invalid", "x" * tlsrpt.MAX_REASON)
    assert tlsrpt.sts_failure(failed, "certificate-expired") is None
    assert tlsrpt.sts_failure(Lookup(DOMAIN, None, "none"), tlsrpt.SUCCESS) is None
    assert tlsrpt.sts_failure(None, tlsrpt.SUCCESS) is None


# -- the pieces -----------------------------------------------------------------------------


def test_the_record_names_its_rua_or_nothing() -> None:
    """RFC 8460 §3: exactly one `v=TLSRPTv1` record; mailto and https URIs only."""
    record = "v=TLSRPTv1; rua=mailto:a@x.example, https://r.example/t,ftp://no.example/"
    assert parse_record([record, "v=spf1 -all"]) == ["mailto:a@x.example", "https://r.example/t"]
    assert parse_record([record, record]) == []
    assert parse_record(["v=TLSRPTv2; rua=mailto:a@x.example"]) == []
    assert parse_record([]) == []


def test_failures_get_the_rfc_result_types() -> None:
    def verify_error(code: int) -> Exception:
        error = ssl.SSLCertVerificationError("certificate verify failed")
        error.verify_code, error.verify_message = code, "x"
        outer = Exception("handshake")
        outer.__cause__ = error
        return outer

    assert tlsrpt.failure_type(verify_error(62))[0] == "certificate-host-mismatch"
    assert tlsrpt.failure_type(verify_error(10))[0] == "certificate-expired"
    assert tlsrpt.failure_type(verify_error(20))[0] == "certificate-not-trusted"
    assert tlsrpt.failure_type(verify_error(7))[0] == "validation-failure"
    no_starttls = Exception("peer offered no STARTTLS; secure required by rule x")
    no_starttls.__cause__ = NoStartTLS()
    assert tlsrpt.failure_type(no_starttls) == ("starttls-not-supported", "peer offered no STARTTLS")


def test_reports_go_out_at_send_at_utc_and_are_named_per_rfc() -> None:
    assert next_run(DAY, "01:00") == 1_800_000_000.0 - 7 * 3600 + 86400  # 2027-01-16T01:00Z
    assert next_run(DAY, "09:30") == 1_800_000_000.0 + 5400  # later the same day
    assert filename("relay.example", "d.example", "1970-01-02") == "relay.example!d.example!86400!172799.json.gz"


async def test_serve_sends_due_reports_at_start_then_waits_for_send_at() -> None:
    """The `tls-reports` component of `serve`: the days a stopped relay did not report go out
    when it starts; then it sleeps until `send_at` (the test stops it while it sleeps)."""
    from types import SimpleNamespace

    from engine.relay.runtime.components import TLSReports
    from tests.relay.peers import eventually

    calls: list[object] = []

    class Reporter:
        clock = Clock(DAY)

        async def send_due(self, live, resolver) -> int:
            calls.append(live)
            return 1

    settings = SimpleNamespace(enabled=True, send_at="01:00")
    live = SimpleNamespace(config=SimpleNamespace(system=SimpleNamespace(tls_reporting=settings, dns=None)))
    component = TLSReports()
    await component.start(SimpleNamespace(relay=SimpleNamespace(tls_reporter=Reporter(), live=live)))

    async def once():
        return calls == [live]

    await eventually(once, what="the reports due at start")
    await component.stop()
    assert calls == [live]


async def test_a_mailto_rua_must_be_one_plain_address() -> None:
    """The TXT record is the domain's, not ours: what it names never writes our headers."""
    from engine.relay.tls.tlsrpt_send import Reporter

    queued: list[tuple] = []

    async def enqueue(*args) -> str:
        queued.append(args)
        return "q1"

    reporter = Reporter(tlsrpt.Recorder(Clock()), enqueue, Clock())
    args = (b"report", "d.example", "s.example", "r@s.example", "id", "name.json.gz")
    await reporter._mail("mailto:a@b.example%0D%0ABcc:%20c@evil.example", *args)
    await reporter._mail("mailto:a@b.example,c@evil.example", *args)
    assert queued == []
    await reporter._mail("mailto:a@b.example?subject=x", *args)
    assert [q[1] for q in queued] == [["a@b.example"]]
    reporter.recorder.close()
