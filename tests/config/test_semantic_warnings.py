"""Warnings: a valid config that a careful admin would still want to hear about."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config.diagnostics import Severity, render_text
from engine.config.load import load_config

HEAD = "version: 1\nsystem:\n  fqdn: mail.example.com\n  internal_domains: [example.com]\n  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]\n"
TP = """ip_groups: {encryption_gateway: [127.0.0.2/32]}
encryption:
  method: third_party
  third_party:
    servers: [{host: encrypt.example.com, port: 25, mx_lookup: true}]
    headers: {encrypt: "X-Encrypt: yes", success: "X-Encrypt-Result: success", failure: "X-Encrypt-Result: failure"}
"""

CASES = {
    "catch-all route shadows later routes": (
        "routes:\n  - {name: default, recipients: any}\n  - {name: partner, recipients: {domains: [p.example]}}\n",
        ("routes", 1, "name"),
        "is never used",
    ),
    "third-party host name cannot be checked against the gateway group": (
        TP,
        ("encryption", "third_party", "servers", 0, "host"),
        "cannot be checked",
    ),
    "recipients any without internal domains": (
        "encryption:\n  method: secure_portal\n  secure_portal:\n    url: https://s.example.com\n    permissions: {compose: {allowed: true, recipients: any}}\n",
        ("encryption", "secure_portal", "permissions", "compose", "recipients"),
        "needs at least one internal address",
    ),
    "deprecated protocol": (
        "ip_groups: {b: [192.0.2.0/24]}\nenforced_tls:\n  - {name: b, direction: outbound, match: {ip_group: b}, level: mandatory, min_protocol: TLSv1}\n",
        ("enforced_tls", 0, "min_protocol"),
        "deprecated",
    ),
    "inbound rule matched by domain": (
        "domain_groups: {p: [p.example]}\nenforced_tls:\n  - {name: p, direction: inbound, match: {domain_group: p}, level: mandatory}\n",
        ("enforced_tls", 0, "match"),
        "chooses itself",
    ),
    "delay warning never sent": (
        "delivery: {max_queue_lifetime: 2h, delay_warning_after: 4h}\n",
        ("delivery", "delay_warning_after"),
        "no delay warning",
    ),
    "unused action plan": (
        "dlp:\n  action_plans: [{name: e, email: encrypt}, {name: q, email: quarantine}]\n"
        "  policies: [{name: p, rules: [{name: r, conditions: {classifier: iban}, action_plan: e}]}]\n",
        ("dlp", "action_plans", 1, "name"),
        "not used by any rule",
    ),
    "encrypt on inbound mail": (
        "dlp:\n  action_plans: [{name: e, email: encrypt}]\n"
        "  policies: [{name: p, rules: [{name: r, conditions: {classifier: iban}, action_plan: e, destination: {direction: any}}]}]\n",
        ("dlp", "policies", 0, "rules", 0, "destination", "direction"),
        "outbound mail only",
    ),
    "plain-http portal": (
        "encryption:\n  method: advanced\n  advanced: {portal_url: 'http://s.example.com'}\n",
        ("encryption", "advanced", "portal_url"),
        "plain HTTP",
    ),
    "dane without a validating resolver": (
        "tls: {outbound_default: dane}\n",
        ("tls", "outbound_default"),
        "`dane` needs a DNSSEC-validating resolver and `system.dns.dnssec` is off: TLSA records are not read, "
        "and every MX host gets `tls.dane.fallback` (secure)",
    ),
    "unset secret": (
        "routes:\n  - {name: hub, recipients: any, next_hop: {host: hub.example.com}, auth: {username: u, password: {env: SEAL_TEST_UNSET}}}\n",
        ("routes", 0, "auth", "password"),
        "SEAL_TEST_UNSET is not set",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_warning(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEAL_TEST_UNSET", raising=False)
    text, path, fragment = CASES[name]
    head = HEAD.replace("  internal_domains: [example.com]\n", "") if "recipients: any}}" in text else HEAD
    f = tmp_path / "relay.yaml"
    f.write_text(head + text, encoding="utf-8")
    result = load_config(f)
    assert result.ok, [d.message for d in result.diagnostics]
    found = [d for d in result.diagnostics if d.path == path]
    assert found and found[0].severity is Severity.WARNING and fragment in found[0].message, result.diagnostics


PORTAL = "encryption:\n  method: secure_portal\n  secure_portal:\n    url: https://s.example.com\n    notification:\n"


@pytest.mark.parametrize(
    ("notification", "field", "message"),
    [
        (
            '      subject: "From {{ sendr }}"\n',
            "subject",
            "unknown template variable sendr (known: attachment_count, expires, link, portal_url, recipient, "
            "retention, sender, subject)",
        ),
        (
            '      body: "line one\\nOpen {% if link %}{{ link }}"\n',
            "body",
            "template line 2: Unexpected end of template. Jinja was looking for the following tags: 'elif' or "
            "'else' or 'endif'. The innermost block that needs to be closed is 'if'.",
        ),
    ],
)
def test_a_notification_template_that_would_not_render_is_a_located_error(
    tmp_path: Path, notification: str, field: str, message: str
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(HEAD + PORTAL + notification)
    result = load_config(path)
    [found] = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert found.path == ("encryption", "secure_portal", "notification", field)
    assert found.message == message
    where = f"{path}:11:{16 if field == 'subject' else 13}: encryption.secure_portal.notification.{field}: {message}"
    assert where in render_text(result.diagnostics)


def test_configs_written_before_delivery_timeouts_keep_their_meaning_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(HEAD + "delivery:\n  connect_timeout: 10s\n  command_timeout: 1m\n  timeouts: {mail: 2m}\n")
    result = load_config(path)
    assert result.ok, render_text(result.diagnostics)
    timeouts = result.config.delivery.timeouts
    assert (timeouts.connect, timeouts.greeting, timeouts.data_done, timeouts.mail) == (10, 60, 60, 120)
    text = render_text(result.diagnostics)
    assert (
        f"{path}:7:20: delivery.connect_timeout: warning: deprecated: `connect_timeout` is `timeouts.connect` now (it still works)"
        in text
    )
    assert (
        f"{path}:8:20: delivery.command_timeout: warning: deprecated: `command_timeout` sets every command stage"
        in text
    )


def test_dane_with_a_declared_validating_resolver_is_not_warned_about(tmp_path: Path) -> None:
    text = HEAD.replace("system:\n", "system:\n  dns: {nameservers: [127.0.0.1], dnssec: true}\n", 1)
    f = tmp_path / "relay.yaml"
    f.write_text(text + "tls: {outbound_default: dane}\n", encoding="utf-8")
    result = load_config(f)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.config.system.dns.dnssec is True
    assert not [d for d in result.diagnostics if d.path == ("tls", "outbound_default")], result.diagnostics


def test_dlp_findings_are_found_once_per_section_and_located_in_each_config(tmp_path: Path) -> None:
    # configs read from the same dlp data share one section object and its findings (an
    # apply that leaves DLP alone does not walk the rules again); each locates them in itself
    dlp = (
        "dlp:\n  action_plans:\n    - {name: spare, email: block}\n    - {name: stop, email: block}\n"
        "  policies:\n    - name: p\n      rules:\n        - {name: r, conditions: {pattern: 'ACCT-\\d+'}, action_plan: stop}\n"
    )
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(HEAD + dlp)
    second.write_text(HEAD + "delivery: {retry_interval: 2m}\n" + dlp)
    a, b = load_config(first), load_config(second)
    assert a.ok and b.ok and a.config.dlp is b.config.dlp
    message = "warning: action plan `spare` is not used by any rule"
    assert f"{first}:8:14: dlp.action_plans[0].name: {message}" in render_text(a.diagnostics)
    assert f"{second}:9:14: dlp.action_plans[0].name: {message}" in render_text(b.diagnostics)


def test_dane_is_found_in_every_section_that_can_name_a_level(tmp_path: Path) -> None:
    # the walk skips the sections whose models cannot hold a level (dlp: most of a large config)
    from engine.config.semantic.transport import _levelless_sections

    assert {"dlp", "system", "delivery"} <= _levelless_sections()
    assert not {"tls", "routes", "enforced_tls", "encryption", "tests"} & _levelless_sections()
    f = tmp_path / "relay.yaml"
    f.write_text(
        HEAD
        + "domain_groups: {p: [p.example]}\ntls: {outbound_default: dane}\n"
        + "routes:\n  - {name: p, recipients: {domain_group: p}, tls: dane}\n"
    )
    result = load_config(f)
    assert result.ok, render_text(result.diagnostics)
    found = {d.path for d in result.diagnostics if "needs a DNSSEC-validating resolver" in d.message}
    assert found == {("tls", "outbound_default"), ("routes", 0, "tls")}
