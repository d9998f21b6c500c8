"""The method seam: the chain a config builds, and what each answer means for each recipient."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from engine.config.load import load_config
from engine.relay.delivery.failures import Failure
from engine.relay.methods import build_chain, method_named
from engine.relay.methods.advanced import Advanced
from engine.relay.methods.base import Chain, HandedOff, Protection, Sealed, TLSFloor, Unavailable, run
from engine.relay.methods.portal import SecurePortal
from engine.relay.methods.smime import SMIME
from engine.relay.methods.third_party import ThirdPartyGateway
from engine.relay.methods.tls import TLSOnly
from engine.relay.queue import Entry
from tests.relay.test_smime import make_recipient

ENTRY = Entry("q1", "alice@example.com", (), b"Subject: s\r\n\r\nsecret\r\n", {}, 0.0, False, 0.0)


def chain_of(tmp_path: Path, encryption: str) -> Chain:
    path = tmp_path / "relay.yaml"
    path.write_text(
        textwrap.dedent("""\
        version: 1
        system:
          fqdn: relay.example.com
          internal_domains: [example.com]
          listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
          data_dir: ./var
        """)
        + encryption
    )
    result = load_config(path, check_files=False)
    assert result.config is not None, result.diagnostics
    return build_chain(result.config, tmp_path)


def test_tls_alone(tmp_path: Path) -> None:
    chain = chain_of(tmp_path, "encryption: {method: tls, tls: {level: verify, min_cipher_bits: 256}}\n")
    assert chain == Chain((TLSOnly(TLSFloor("verify", "TLSv1.2", 256, "encryption.tls")),), None)


def test_smime_first_then_the_method_then_the_backup(tmp_path: Path) -> None:
    chain = chain_of(
        tmp_path,
        "ip_groups: {encryption_gateway: [127.0.0.2]}\nencryption:\n  method: tls\n  backup: third_party\n  smime: {certificates: certs}\n"
        "  third_party:\n    servers: [{host: 127.0.0.2, port: 10025}]\n"
        "    encrypted_ip_group: encryption_gateway\n    headers: {encrypt: 'X-Encrypt: yes', success: 'X-Encrypt-Result: success', failure: 'X-Encrypt-Result: failure'}\n",
    )
    floor = TLSFloor("mandatory", "TLSv1.2", 128, "encryption.tls")
    assert [m.name for m in chain.steps] == ["smime", "tls"]
    assert chain.steps[0] == SMIME(tmp_path / "certs", floor)
    assert isinstance(chain.backup, ThirdPartyGateway)


@pytest.mark.parametrize(
    ("method", "block", "kind"),
    [
        ("advanced", "  advanced: {portal_url: 'https://secure.example.com'}\n", Advanced),
        ("secure_portal", "  secure_portal: {url: 'https://secure.example.com'}\n", SecurePortal),
    ],
)
def test_each_configured_method_is_in_the_chain(tmp_path: Path, method: str, block: str, kind: type) -> None:
    chain = chain_of(tmp_path, f"encryption:\n  method: {method}\n{block}")
    assert [type(m) for m in chain.steps] == [kind] and chain.backup is None


def test_a_method_this_relay_lacks_is_unavailable_not_skipped(tmp_path: Path) -> None:
    assert method_named("quantum", None) == Unavailable("quantum")


class Fixed:
    def __init__(self, name: str, answer=None, error: Exception | None = None) -> None:
        self.name, self.answer, self.error, self.calls = name, answer, error, []

    async def protect(self, live, entry, recipients):
        self.calls.append(list(recipients))
        if self.error:
            raise self.error
        return self.answer(recipients)


async def test_each_step_gets_only_what_the_steps_before_passed_on() -> None:
    first = Fixed("first", lambda rs: Protection(handed=(HandedOff((rs[0],), "took one"),), passed=tuple(rs[1:])))
    second = Fixed("second", lambda rs: Protection(sealed=(Sealed(tuple(rs), None),)))
    answer = await Chain((first, second)).protect(None, ENTRY, ["a@x.test", "b@x.test", "c@x.test"])
    assert first.calls == [["a@x.test", "b@x.test", "c@x.test"]] and second.calls == [["b@x.test", "c@x.test"]]
    assert answer.handed == (HandedOff(("a@x.test",), "took one"),)
    assert answer.sealed == (Sealed(("b@x.test", "c@x.test"), None),)
    assert answer.refused == {} and answer.passed == ()


async def test_what_no_step_takes_waits() -> None:
    passes = Fixed("smime", lambda rs: Protection(passed=tuple(rs)))
    answer = await Chain((passes,)).protect(None, ENTRY, ["a@x.test"])
    assert answer.refused == {
        "a@x.test": Failure("defer", "no encryption method took these recipients", "4.7.5", "method")
    }


async def test_a_method_that_raises_defers_its_recipients_never_sends_plain() -> None:
    broken = Fixed("third_party", error=RuntimeError("gateway unreachable"))
    answer = await run(broken, None, ENTRY, ["a@x.test", "b@x.test"])
    failure = Failure("defer", "encryption method `third_party` failed: gateway unreachable", "4.7.5", "method")
    assert answer == Protection(refused={"a@x.test": failure, "b@x.test": failure})


async def test_a_method_that_forgets_a_recipient_defers_it() -> None:
    forgetful = Fixed("x", lambda rs: Protection(handed=(HandedOff((rs[0],), "one"),)))
    answer = await run(forgetful, None, ENTRY, ["a@x.test", "b@x.test"])
    assert answer.refused["b@x.test"].cause == "method" and list(answer.refused) == ["b@x.test"]


async def test_overrides_replace_methods_by_name() -> None:
    double = Fixed("advanced", lambda rs: Protection())
    chain = Chain((TLSOnly(TLSFloor("mandatory", "TLSv1.2", 128, "encryption.tls")),), Unavailable("advanced"))
    assert chain.with_overrides({"advanced": double}).backup is double
    assert chain.with_overrides({}).backup == Unavailable("advanced")


async def test_smime_seals_for_certificate_holders_and_passes_the_others(tmp_path: Path) -> None:
    make_recipient(tmp_path / "certs", "bob@partner.test")
    floor = TLSFloor("mandatory", "TLSv1.2", 128, "encryption.tls")
    answer = await SMIME(tmp_path / "certs", floor).protect(None, ENTRY, ["bob@partner.test", "carol@partner.test"])
    [sealed] = answer.sealed
    assert (sealed.recipients, sealed.floor, sealed.note) == (("bob@partner.test",), floor, "S/MIME")
    assert b"secret" not in sealed.content and b"application/pkcs7-mime" in sealed.content
    assert answer.passed == ("carol@partner.test",) and answer.refused == {}


async def test_unavailable_says_so() -> None:
    answer = await Unavailable("advanced").protect(None, ENTRY, ["a@x.test"])
    assert answer.refused["a@x.test"] == Failure(
        "defer", "encryption method `advanced` is not available in this relay", "4.7.5", "method"
    )
