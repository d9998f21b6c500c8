"""validate warns when the encryption gateway's IP group overlaps the internal servers.

Mail from the gateway group is taken for the gateway's own (already encrypted, or held when
the gateway's result header is missing), so an internal server inside that group would have
its mail held. The golden case tests/golden/validate/gateway-overlaps-internal-servers shows
the rendered warning; these cases pin when it fires and that no shipped config trips it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.diagnostics import Severity, render_text
from engine.config.load import load_config
from tests.conftest import EXAMPLES, ROOT

HEAD = """version: 1
system:
  fqdn: mail.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
"""
THIRD_PARTY = """encryption:
  method: third_party
  third_party:
    servers: [{host: 127.0.0.2, port: 10025}]
    encrypted_ip_group: GROUP
    headers: {encrypt: "X-Encrypt: yes", success: "X-Encrypt-Result: success", failure: "X-Encrypt-Result: failure"}
"""
HELD = (
    "mail an internal server sends from there would be taken for the encryption gateway's and held as a "
    "failed gateway result unless it carries the gateway's success header"
)


def warnings_of(tmp_path: Path, text: str) -> list[tuple[tuple, str, tuple]]:
    """(path, message, (line, column) of the related place) of each warning; HEAD is 5 lines."""
    path = tmp_path / "relay.yaml"
    path.write_text(HEAD + text, encoding="utf-8")
    result = load_config(path)
    assert result.ok, [d.message for d in result.diagnostics]
    return [
        (d.path, d.message, tuple((m.line, m.column) for m in d.related))  # related: the internal servers' entry
        for d in result.diagnostics
        if d.severity is Severity.WARNING
    ]


def test_a_gateway_address_inside_the_internal_servers_is_warned_about(tmp_path: Path) -> None:
    groups = "ip_groups:\n  internal_servers: [127.0.0.0/8]\n  encryption_gateway: [127.0.0.2/32]\n"
    assert warnings_of(tmp_path, groups + THIRD_PARTY.replace("GROUP", "encryption_gateway")) == [
        (
            ("ip_groups", "encryption_gateway", 0),
            f"127.0.0.2/32 is also in ip_groups.internal_servers (127.0.0.0/8): {HELD}",
            ((7, 22),),
        )
    ]


def test_the_group_named_by_encrypted_ip_group_is_the_one_checked(tmp_path: Path) -> None:
    groups = (
        "ip_groups:\n  internal_servers: [10.0.0.0/8, 127.0.0.0/30]\n"
        "  encryption_gateway: [10.0.0.1/32]\n  crypto: [192.0.2.1/32, 127.0.0.2/32]\n"
    )
    [(path, message, see)] = warnings_of(tmp_path, groups + THIRD_PARTY.replace("GROUP", "crypto"))
    assert (path, see) == (("ip_groups", "crypto", 1), ((7, 34),))
    assert message == f"127.0.0.2/32 is also in ip_groups.internal_servers (127.0.0.0/30): {HELD}"


def test_without_a_third_party_gateway_the_group_still_counts_as_encrypted(tmp_path: Path) -> None:
    groups = "ip_groups:\n  internal_servers: [192.0.2.0/24]\n  encryption_gateway: [192.0.2.0/25]\n"
    assert warnings_of(tmp_path, groups) == [
        (
            ("ip_groups", "encryption_gateway", 0),
            "192.0.2.0/25 is also in ip_groups.internal_servers (192.0.2.0/24): mail an internal server sends "
            "from there would be taken for the encryption gateway's and counted as already encrypted, and DLP "
            "would never have it encrypted",
            ((7, 22),),
        )
    ]


@pytest.mark.parametrize(
    "groups",
    [
        "ip_groups:\n  internal_servers: [127.0.0.1/32, 10.0.0.0/8]\n  encryption_gateway: [127.0.0.2/32]\n",
        "ip_groups:\n  internal_servers: ['::1/128']\n  encryption_gateway: [127.0.0.2/32]\n",
        "ip_groups:\n  encryption_gateway: [127.0.0.2/32]\n",
    ],
    ids=["apart", "other-family", "no-internal-servers"],
)
def test_groups_apart_give_no_warning(tmp_path: Path, groups: str) -> None:
    assert warnings_of(tmp_path, groups + THIRD_PARTY.replace("GROUP", "encryption_gateway")) == []


SHIPPED = sorted(p for p in EXAMPLES.iterdir() if p.suffix == ".yaml" or p.is_dir() and any(p.glob("*.yaml")))
SHIPPED.append(ROOT / "engine" / "defaults" / "relay.yaml")


@pytest.mark.parametrize("config", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_validate_without_warnings(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEAL_GATEWAY_PASSWORD", "set-for-the-test")
    result = load_config(config)
    assert result.ok and render_text(result.diagnostics) == ""
