"""REQUIRETLS (RFC 8689) end to end: offered after STARTTLS, carried onward, or bounced.

A client submits over loopback; the relay delivers to aiosmtpd peers that present certificates
of the test PKI (tests/pki.py) for `mx.test.example`, which a DNS server on loopback resolves.
`Peer` is a `Sink` that can offer REQUIRETLS after STARTTLS and records each message's MAIL
parameters. The sender's own domain (example.com) is routed to a `home` peer that offers
REQUIRETLS, so the DSN of a bounce can be read where the sender would get it.
"""

from __future__ import annotations

import json
import logging
import ssl
from email.message import EmailMessage

import aiosmtplib
import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from engine.relay.delivery import requiretls
from engine.relay.delivery.failures import Failure, requiretls_outcome
from engine.relay.smtp.protocol import _take_requiretls
from engine.relay.tls.mtasts import MTASTS
from tests.pki import build_pki
from tests.relay.peers import Sink, SinkHandler, eventually, free_port
from tests.relay.test_edge import raw_session
from tests.relay.test_mta_sts import PolicyServer

FQDN = "mx.test.example"
SECRET = "the body only the recipient may read"


class PeerHandler(SinkHandler):
    """A sink's handler that offers REQUIRETLS once TLS is up (when `offer`) and keeps the
    MAIL parameters of each message it stores, in `mail_options`."""

    def __init__(self, offer: bool, pipelining: bool = False) -> None:
        super().__init__()
        self.offer = offer
        self.pipelining = pipelining
        self.mail_options: list[list[str]] = []
        self.pipelined: list[bool] = []  # per MAIL: whether its RCPT had already arrived with it
        self.ehlos = 0  # EHLO commands seen, before and after STARTTLS

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        self.ehlos += 1
        if self.offer and server.transport.get_extra_info("ssl_object") is not None:
            responses.insert(-1, "250-REQUIRETLS")
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.mail_options.append(list(envelope.mail_options))
        return await super().handle_DATA(server, session, envelope)


class PeerSMTP(SMTP):
    """aiosmtpd's SMTP taking the REQUIRETLS parameter on MAIL (aiosmtpd knows only SIZE,
    BODY and SMTPUTF8), where the handler offered it."""

    async def smtp_MAIL(self, arg):
        self.event_handler.pipelined.append(b"RCPT" in bytes(self._reader._buffer))  # noqa: SLF001
        words = (arg or "").split()
        if not (words and words[-1].upper() == "REQUIRETLS" and self.event_handler.offer):
            return await super().smtp_MAIL(arg)
        await super().smtp_MAIL(" ".join(words[:-1]))
        if self.envelope.mail_from:
            self.envelope.mail_options.append("REQUIRETLS")


class PeerController(Controller):
    def factory(self):
        return PeerSMTP(self.handler, **self.SMTP_kwargs)


class Peer(Sink):
    """A `Sink` on a loopback address that may offer REQUIRETLS (after STARTTLS only, as
    RFC 8689 asks)."""

    def __init__(
        self,
        *,
        tls: ssl.SSLContext | None,
        offer: bool,
        port: int | None = None,
        address: str = "127.0.0.1",
        pipelining: bool = False,
    ) -> None:
        super().__init__(tls=tls, port=port)
        self.handler = PeerHandler(offer, pipelining)
        self.controller = PeerController(
            self.handler, hostname=address, port=self.port, tls_context=tls, ready_timeout=10
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return build_pki(tmp_path_factory.mktemp("pki"), FQDN)


def server_tls(pki, case: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki[case])
    return context


def config(pki, dns_server, partner_port: int, home_port: int, route_tls: str = "opportunistic", **options) -> dict:
    """`write_config` arguments: example.com to the home peer, everything else to the partner
    peer, both named mx.test.example; the route levels never ask for more than `route_tls`.
    `options`: `ca_bundle` (a file), `partner` (the partner route's next hop host, MX looked up)."""
    dns_server.zone[(FQDN, "A")] = ["127.0.0.1"]
    bundle = options.get("ca_bundle", pki["ca"][0])
    partner = f"{{host: {options['partner']}, port: {partner_port}, mx_lookup: true}}" if "partner" in options else None
    extra = f"""
    tls:
      ca_bundle: {bundle}
    routes:
      - {{name: home, recipients: {{domains: [example.com]}}, next_hop: {{host: {FQDN}, port: {home_port}}}, tls: secure}}
      - {{name: partner, recipients: any, next_hop: {partner or f"{{host: {FQDN}, port: {partner_port}}}"}, tls: {route_tls}}}
    """
    system = f"  dns: {{nameservers: [127.0.0.1], port: {dns_server.port}, timeout: 2s}}\n"
    delivery = """
    delivery:
      retry_interval: 1s
      max_retry_interval: 2s
      max_queue_lifetime: 1h
      delay_warning_after: null
      ndr: {enabled: true, include: full}
    """
    return {"extra": extra, "system": system, "delivery": delivery}


def message(tls_required_no: bool = False) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "bob@partner.test", "quarterly figures"
    if tls_required_no:
        msg["TLS-Required"] = "No"
    msg.set_content(SECRET + "\n")
    return msg


def no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def submit(relay, msg: EmailMessage, *, tagged: bool = True) -> str:
    """Send `msg` over STARTTLS, with REQUIRETLS on MAIL FROM when `tagged`; the queue id."""
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False, tls_context=no_verify(), timeout=10
    )
    await client.connect()
    await client.starttls()
    await client.ehlo()
    await client.mail("alice@example.com", options=["REQUIRETLS"] if tagged else [])
    await client.rcpt("bob@partner.test")
    response = await client.data(msg.as_bytes().replace(b"\n", b"\r\n"))
    await client.quit()
    return response.message.split()[-1]


async def state(relay, queue_id: str, wanted: str):
    """The entry once its recipient is `wanted` (deferred: a final state leaves the queue)."""

    async def reached():
        detail = await relay.queue.show(queue_id)
        return detail if detail.recipients and detail.recipients[0].state == wanted else None

    return await eventually(reached, what=f"{queue_id} to be {wanted}")


async def outcome(caplog, queue_id: str) -> dict:
    """The delivery record the relay logged for `queue_id` (one recipient)."""

    async def logged():
        records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "sealrelay.decisions"]
        found = [r for r in records if r.get("event") == "delivery" and r.get("id") == queue_id]
        return found[-1] if found and found[-1]["result"] != "defer" else None

    return await eventually(logged, what=f"the delivery of {queue_id} to be logged")


async def test_requiretls_is_offered_only_after_starttls(write_config, start_relay) -> None:
    relay = await start_relay(write_config())
    [_, before] = await raw_session(relay.ports()["mx"], [b"EHLO client.test\r\n"])
    assert before.startswith(b"250-") and b"STARTTLS" in before
    assert b"REQUIRETLS" not in before
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1", port=relay.ports()["mx"], start_tls=False, tls_context=no_verify(), timeout=10
    )
    await client.connect()
    await client.starttls()
    after = await client.ehlo()
    assert "REQUIRETLS" in after.message.splitlines() and "STARTTLS" not in after.message
    await client.quit()


async def test_requiretls_on_mail_without_tls_is_refused(write_config, start_relay) -> None:
    relay = await start_relay(write_config())
    replies = await raw_session(
        relay.ports()["mx"],
        [
            b"EHLO client.test\r\n",
            b"MAIL FROM:<alice@example.com> REQUIRETLS\r\n",
            b"MAIL FROM:<alice@example.com>\r\n",
        ],
    )
    assert replies[2] == b"555 5.5.4 MAIL FROM parameter REQUIRETLS not offered on this session (STARTTLS first)\r\n"
    assert replies[3].startswith(b"250")  # the session goes on, without the demand
    assert await relay.queue.count() == 0


@pytest.mark.parametrize("pipelining", [False, True], ids=["one-by-one", "pipelined"])
async def test_a_requiretls_message_goes_to_a_peer_offering_it_with_the_parameter(
    pki, dns_server, write_config, start_relay, caplog, pipelining
) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    tls = server_tls(pki, "good")
    with Peer(tls=tls, offer=True, pipelining=pipelining) as partner, Peer(tls=tls, offer=True) as home:
        relay = await start_relay(write_config(**config(pki, dns_server, partner.port, home.port)))
        tagged = await submit(relay, message())
        plain = await submit(relay, message(), tagged=False)
        got = await partner.received(2)
        assert {m.tls for m in got} <= {"TLSv1.2", "TLSv1.3"}
        assert sorted("REQUIRETLS" in options for options in partner.handler.mail_options) == [False, True]
        assert partner.handler.pipelined == [pipelining, pipelining]  # the parameter rides a pipelined MAIL too
        record = await outcome(caplog, tagged)
        assert record["result"] == "delivered" and "chain verified, name checked, REQUIRETLS" in record["tls"]
        assert "REQUIRETLS" not in (await outcome(caplog, plain))["tls"]
        assert home.messages == []


@pytest.mark.parametrize(
    ("case", "offer", "reason"),
    [
        ("good", False, "peer does not offer REQUIRETLS"),
        ("wrong_san", True, "hostname mismatch"),
        (None, True, "peer offered no STARTTLS"),
    ],
    ids=["no-requiretls", "certificate-for-another-name", "no-starttls"],
)
async def test_a_peer_short_of_requiretls_gets_nothing_and_the_sender_gets_a_5_7_30_bounce(
    case, offer, reason, pki, dns_server, write_config, start_relay, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    partner_tls = server_tls(pki, case) if case else None
    with Peer(tls=partner_tls, offer=offer) as partner, Peer(tls=server_tls(pki, "good"), offer=True) as home:
        relay = await start_relay(write_config(**config(pki, dns_server, partner.port, home.port)))
        # TLS-Required: No is ignored beside the REQUIRETLS parameter (RFC 8689 §4.1)
        queue_id = await submit(relay, message(tls_required_no=True))
        [dsn] = await home.received(1)
        record = await outcome(caplog, queue_id)
        assert partner.messages == []
        assert record["result"] == "bounce" and record["status"] == "5.7.30"
        assert reason in record["reason"] and "REQUIRETLS support required" in record["reason"]
        assert dsn.recipients == ["alice@example.com"] and dsn.sender in ("", "<>")
        assert home.handler.mail_options == [["REQUIRETLS"]]  # the DSN travels under REQUIRETLS too
        text = dsn.content.decode()
        assert "Action: failed" in text and "Status: 5.7.30" in text
        assert "REQUIRETLS support required" in text and reason in text
        assert "Subject: quarterly figures" in text  # the original's header section ...
        assert SECRET not in text  # ... but never its body, whatever `ndr.include` says


def validated_by(resolver) -> str:
    """The `system` lines for a relay asking a DNSSEC-validating `resolver` (tests/dnssec.py)."""
    return f"  dns: {{nameservers: [127.0.0.1], port: {resolver.port}, timeout: 2s, dnssec: true}}\n"


async def test_an_mx_without_requiretls_is_skipped_for_the_next_one(
    pki, dns_server, validating_resolver, write_config, start_relay, tmp_path
) -> None:
    """RFC 8689 §4.2.1: the failure is that MX host's; the next MX host takes the message.
    The MX hosts come from a DNSSEC-signed zone: REQUIRETLS mail goes only to authenticated ones."""
    backup = build_pki(tmp_path, "mx2.test.example")  # the second MX host's name, another CA
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki["ca"][0].read_bytes() + backup["ca"][0].read_bytes())
    validating_resolver.zone("partner.test", [f"@ MX 10 {FQDN}.", "@ MX 20 mx2.test.example."])
    validating_resolver.zone("test.example", ["mx A 127.0.0.2", "mx2 A 127.0.0.3"])
    validating_resolver.start()
    port = free_port()
    with (
        Peer(tls=server_tls(pki, "good"), offer=False, port=port, address="127.0.0.2") as first,
        Peer(tls=server_tls(backup, "good"), offer=True, port=port, address="127.0.0.3") as second,
        Peer(tls=server_tls(pki, "good"), offer=True) as home,
    ):
        options = {"ca_bundle": bundle, "partner": "partner.test"}
        pieces = config(pki, dns_server, port, home.port, **options)
        relay = await start_relay(write_config(**pieces | {"system": validated_by(validating_resolver)}))
        await submit(relay, message())
        await second.received(1)
        assert second.handler.mail_options == [["REQUIRETLS"]]
        assert first.handler.ehlos == 2 and first.messages == []  # tried: EHLO, STARTTLS, EHLO; no MAIL


async def test_an_mx_host_dns_did_not_authenticate_gets_nothing(
    pki, dns_server, write_config, start_relay, caplog
) -> None:
    """RFC 8689 §4.2.1: the MX answer came from a resolver not declared validating and the
    domain has no MTA-STS policy: the MX host, though it offers REQUIRETLS with a good
    certificate, could be an attacker's. Nothing is sent; the sender gets a 5.7.30 bounce."""
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    dns_server.zone[("partner.test", "MX")] = [(10, FQDN)]
    with (
        Peer(tls=server_tls(pki, "good"), offer=True) as partner,
        Peer(tls=server_tls(pki, "good"), offer=True) as home,
    ):
        pieces = config(pki, dns_server, partner.port, home.port, partner="partner.test")
        relay = await start_relay(write_config(**pieces))
        queue_id = await submit(relay, message())
        [dsn] = await home.received(1)
        record = await outcome(caplog, queue_id)
        assert partner.messages == [] and partner.handler.ehlos == 0  # not even connected to
    assert record["result"] == "bounce" and record["status"] == "5.7.30"
    assert record["reason"].startswith(
        f"REQUIRETLS support required: {FQDN}[127.0.0.1]:{partner.port}: REQUIRETLS not met: MX host {FQDN} of "
        "partner.test is not authenticated: its DNS answers were not DNSSEC-validated and no MTA-STS policy in "
        "enforce mode names it ("  # then the MTA-STS lookup's note
    )
    assert "Status: 5.7.30" in dsn.content.decode()


async def test_an_mx_host_an_enforce_mta_sts_policy_names_is_authenticated(
    pki, dns_server, write_config, start_relay, tmp_path
) -> None:
    """RFC 8689 §4.2.1's other way: the MX answer is not DNSSEC-validated, but the domain's
    MTA-STS policy in enforce mode names the MX host. The message goes, with REQUIRETLS."""
    policy_ca = trustme.CA()  # the policy host's certificate comes from a CA of its own
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(pki["ca"][0].read_bytes() + policy_ca.cert_pem.bytes())
    https = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    policy_ca.issue_cert("mta-sts.partner.test").configure_cert(https)
    dns_server.zone[("partner.test", "MX")] = [(10, FQDN)]
    dns_server.zone[("_mta-sts.partner.test", "TXT")] = ['"v=STSv1; id=1"']
    dns_server.zone[("mta-sts.partner.test", "A")] = ["127.0.0.1"]
    with (
        PolicyServer(https) as policies,
        Peer(tls=server_tls(pki, "good"), offer=True) as partner,
        Peer(tls=server_tls(pki, "good"), offer=True) as home,
    ):
        policies.publish("partner.test", f"version: STSv1\r\nmode: enforce\r\nmx: {FQDN}\r\nmax_age: 86400\r\n")
        pieces = config(pki, dns_server, partner.port, home.port, partner="partner.test", ca_bundle=bundle)
        relay = await start_relay(write_config(**pieces), mta_sts=MTASTS(https_port=policies.port))
        await submit(relay, message())
        await partner.received(1)
        assert partner.handler.mail_options == [["REQUIRETLS"]]
        assert policies.requests == [("mta-sts.partner.test", "/.well-known/mta-sts.txt")]


async def test_the_requirement_survives_a_restart(pki, dns_server, write_config, start_relay, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sealrelay.decisions")
    partner_port = free_port()  # nobody listens there yet: the first attempt defers
    with Peer(tls=server_tls(pki, "good"), offer=True) as home:
        path = write_config(**config(pki, dns_server, partner_port, home.port))
        first = await start_relay(path)
        queue_id = await submit(first, message())
        deferred = await state(first, queue_id, "deferred")
        assert "connection refused" in deferred.recipients[0].last_error
        assert deferred.meta["mail_params"] == ["REQUIRETLS"]  # on disk, in the entry's meta
        await first.stop()
        with Peer(tls=server_tls(pki, "good"), offer=True, port=partner_port) as partner:
            await start_relay(path)  # a new process on the same queue
            await partner.received(1)
            assert partner.handler.mail_options == [["REQUIRETLS"]]
            assert "REQUIRETLS" in (await outcome(caplog, queue_id))["tls"]
        assert home.messages == []


async def test_tls_required_no_never_weakens_the_relays_own_level(pki, dns_server, write_config, start_relay) -> None:
    with Peer(tls=server_tls(pki, "wrong_san"), offer=False) as partner, Peer(tls=None, offer=False) as home:
        relay = await start_relay(write_config(**config(pki, dns_server, partner.port, home.port, "secure")))
        queue_id = await submit(relay, message(tls_required_no=True), tagged=False)
        detail = await state(relay, queue_id, "deferred")
        assert detail.meta["tls_required"] == "no" and requiretls.tls_optional(detail.meta)
        assert "hostname mismatch" in detail.recipients[0].last_error
        assert partner.messages == [] and home.messages == []


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("FROM:<a@example.com> REQUIRETLS", ("FROM:<a@example.com>", "REQUIRETLS")),
        ("FROM:<a@example.com> size=10 requiretls", ("FROM:<a@example.com> size=10", "REQUIRETLS")),
        ("FROM:<a@example.com> REQUIRETLS=yes", ("FROM:<a@example.com>", "REQUIRETLS=YES")),
        ("FROM:<requiretls@example.com>", ("FROM:<requiretls@example.com>", None)),
        ("FROM:<a@example.com> BODY=8BITMIME", ("FROM:<a@example.com> BODY=8BITMIME", None)),
    ],
)
def test_the_parameter_is_taken_from_after_the_address_only(arg, expected) -> None:
    assert _take_requiretls(arg) == expected


def test_tls_required_no_is_read_from_the_header_section_only() -> None:
    assert requiretls.says_no(b"Subject: x\r\nTLS-Required:  no\r\n\r\nbody\r\n")
    assert requiretls.says_no(b"TLS-Required:\r\n No\r\n\r\n")  # folded
    assert not requiretls.says_no(b"Subject: x\r\n\r\nTLS-Required: No\r\n")  # in the body
    assert not requiretls.says_no(b"TLS-Required: Yes\r\n\r\n")
    assert requiretls.receipt_meta(["REQUIRETLS"], b"TLS-Required: No\r\n\r\n") == {"mail_params": ["REQUIRETLS"]}
    assert requiretls.receipt_meta([], b"TLS-Required: No\r\n\r\n") == {"tls_required": "no"}


def test_every_hop_short_of_requiretls_bounces_but_a_hop_that_is_down_defers() -> None:
    short = Failure("defer_site", "mx1: REQUIRETLS not met: hostname mismatch", "5.7.30", "requiretls")
    down = Failure("defer_site", "mx2: connection refused", "4.4.1", "connect", True)
    bounce = requiretls_outcome([short, short])
    assert (bounce.kind, bounce.status, bounce.cause) == ("bounce", "5.7.30", "requiretls")
    assert bounce.reason.startswith("REQUIRETLS support required: mx1: REQUIRETLS not met: hostname mismatch")
    assert requiretls_outcome([short, down]) == down == requiretls_outcome([down, short])
