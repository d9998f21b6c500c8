"""`sealrelay validate` reports every stage's findings in one run: four independent mistakes
in four stages (YAML, merging the files, the schema, the references) are four lines of one
run, each at its file:line:col, and the exit code stays the invalid config's (65). A later
stage is skipped only where it cannot mean anything: nothing that could be an echo of an
earlier finding (a reference to a value that was cut, a name the unparsable file defines)
is reported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASE = ROOT / "tests" / "golden" / "validate" / "every-stage-in-one-run"

SYSTEM = """version: 1
system:
  fqdn: mail.example.com
  internal_domains: [example.com]
  listeners:
    - {name: mx, address: 127.0.0.1, port: 2525}
ip_groups:
  internal_servers: [10.0.0.0/8]
"""


def validate(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "validate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )


def test_four_mistakes_in_four_stages_are_four_findings_of_one_run(tmp_path: Path) -> None:
    shutil.copytree(CASE / "relay.d", tmp_path / "relay.d")
    done = validate("relay.d", cwd=tmp_path)
    assert done.returncode == 65, done.stderr
    assert done.stdout == "relay.d: invalid (4 errors)\n"
    assert done.stderr.splitlines() == [
        "relay.d/10-dlp.yaml:5:1: YAML syntax error: while parsing a flow mapping "
        "(started at relay.d/10-dlp.yaml:4:7): did not find expected ',' or '}'",
        "relay.d/20-routes.yaml:3:117: routes[0].tls: 'mandatori' is not allowed: "
        "expected `none`, `opportunistic`, `mandatory`, `verify`, `secure`, `dane`, `mta-sts`",
        "    hint: did you mean `mandatory`?",
        "relay.d/20-routes.yaml:4:48: routes[1].recipients.domain_group: unknown domain group `vendor`",
        "    hint: did you mean `vendors`?",
        "relay.d/30-node.yaml:3:3: system.fqdn: duplicate key `fqdn` (first set at relay.d/00-system.yaml:4:3)",
        "    relay.d/00-system.yaml:4:3: (other place)",
        "    hint: remove one of the two, or merge them into one",
    ]
    as_json = json.loads(validate("relay.d", "--format", "json", cwd=tmp_path).stdout)
    assert (as_json["valid"], as_json["errors"], as_json["warnings"]) == (False, 4, 0)
    assert [(d["file"], d["line"], d["column"], d["path"]) for d in as_json["diagnostics"]] == [
        ("relay.d/10-dlp.yaml", 5, 1, "(root)"),
        ("relay.d/20-routes.yaml", 3, 117, "routes[0].tls"),
        ("relay.d/20-routes.yaml", 4, 48, "routes[1].recipients.domain_group"),
        ("relay.d/30-node.yaml", 3, 3, "system.fqdn"),
    ]


def test_each_fix_leaves_the_others_reported(tmp_path: Path) -> None:
    """Fixing one mistake removes exactly its line: the findings were independent."""
    config = tmp_path / "relay.d"
    shutil.copytree(CASE / "relay.d", config)
    (config / "10-dlp.yaml").write_text("dlp:\n  action_plans:\n    - {name: encrypt-sensitive, email: encrypt}\n")
    (config / "30-node.yaml").unlink()
    done = validate("relay.d", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.d: invalid (2 errors)\n"
    assert [line.split(": ")[1] for line in done.stderr.splitlines() if not line.startswith(" ")] == [
        "routes[0].tls",
        "routes[1].recipients.domain_group",
    ]


def test_schema_and_reference_mistakes_in_one_file_are_both_reported(tmp_path: Path) -> None:
    (tmp_path / "relay.yaml").write_text(
        SYSTEM
        + "  partners: [10.300.0.0/8]\n"  # 9: a network that is none
        + "domain_groups:\n  vendors: [vendor.example]\n"
        + "routes:\n"
        + "  - {name: v, recipients: {domain_group: vendor}, next_hop: {host: mx.vendor.example, port: 25}}\n"
        + "delivery:\n  retry_interval: 5 minutes\n"
    )
    done = validate("relay.yaml", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.yaml: invalid (3 errors)\n"
    assert done.stderr.splitlines() == [
        "relay.yaml:9:14: ip_groups.partners[0]: '10.300.0.0/8' is not an IP address or CIDR network",
        "relay.yaml:13:42: routes[0].recipients.domain_group: unknown domain group `vendor`",
        "    hint: did you mean `vendors`?",
        "relay.yaml:15:19: delivery.retry_interval: '5 minutes' is not a duration",
        "    hint: write a number and a unit: 30s, 15m, 4h, 5d or 1w",
    ]


def test_a_reference_to_what_was_cut_is_no_second_finding(tmp_path: Path) -> None:
    """The IP group is refused by the schema (and cut); the rule that names it is not reported
    as naming an unknown group (it is not unknown: it is broken, and that is one finding)."""
    (tmp_path / "relay.yaml").write_text(
        SYSTEM
        + "  partners: 10.1.0.0/16\n"
        + "enforced_tls:\n  - {name: partners-in, direction: inbound, match: {ip_group: partners}, level: mandatory}\n"
    )
    done = validate("relay.yaml", cwd=tmp_path)
    assert done.returncode == 65, done.stderr
    assert done.stdout == "relay.yaml: invalid (1 error)\n", done.stderr
    assert done.stderr.splitlines() == [
        "relay.yaml:9:13: ip_groups.partners: expected a list, got the string '10.1.0.0/16'"
    ]


def test_a_name_the_unparsable_file_may_define_is_no_finding(tmp_path: Path) -> None:
    """`vendors` is defined in the file that cannot be parsed: the route naming it is not
    reported as unknown; a name no file mentions still is."""
    config = tmp_path / "relay.d"
    config.mkdir()
    (config / "00-system.yaml").write_text(SYSTEM)
    (config / "10-groups.yaml").write_text("domain_groups:\n  vendors: [vendor.example\n")
    (config / "20-routes.yaml").write_text(
        "routes:\n"
        "  - {name: v, recipients: {domain_group: vendors}, next_hop: {host: mx.vendor.example, port: 25}}\n"
        "  - {name: w, recipients: {domain_group: nowhere}, next_hop: {host: mx.w.example, port: 25}}\n"
    )
    done = validate("relay.d", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.d: invalid (2 errors)\n", done.stderr
    lines = done.stderr.splitlines()
    assert lines[0].startswith("relay.d/10-groups.yaml:3:1: YAML syntax error: ")
    assert lines[1:] == [
        "relay.d/20-routes.yaml:3:42: routes[1].recipients.domain_group: unknown domain group `nowhere`",
        "    hint: define it under `domain_groups`",
    ]


def test_a_file_that_cannot_be_parsed_alone_is_one_finding(tmp_path: Path) -> None:
    (tmp_path / "relay.yaml").write_text(SYSTEM + "routes: [\n")
    done = validate("relay.yaml", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.yaml: invalid (1 error)\n"
    assert len(done.stderr.splitlines()) == 1 and "YAML syntax error" in done.stderr


def test_a_finding_after_a_cut_list_entry_is_located_at_its_own_line(tmp_path: Path) -> None:
    """routes[0] is cut (no name), so the later checks see routes[2] as routes[1]: its finding
    is still reported as routes[2], at line 14."""
    (tmp_path / "relay.yaml").write_text(
        SYSTEM
        + "domain_groups:\n  vendors: [vendor.example]\n"
        + "routes:\n"
        + "  - {recipients: any, next_hop: {host: mx.a.example, port: 25}}\n"
        + "  - {name: b, recipients: {domains: [b.example]}, next_hop: {host: mx.b.example, port: 25}}\n"
        + "  - {name: c, recipients: {domain_group: vendor}, next_hop: {host: mx.c.example, port: 25}}\n"
    )
    done = validate("relay.yaml", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.yaml: invalid (2 errors)\n"
    assert done.stderr.splitlines() == [
        "relay.yaml:12:5: routes[0]: missing required key `name`",
        "relay.yaml:14:42: routes[2].recipients.domain_group: unknown domain group `vendor`",
        "    hint: did you mean `vendors`?",
    ]


def test_a_version_written_as_a_list_is_a_finding_not_an_internal_error(tmp_path: Path) -> None:
    (tmp_path / "relay.yaml").write_text("version: [1]\nsystem: {fqdn: a.example}\nx: 0x" + "f" * 40 + "\n")
    done = validate("relay.yaml", cwd=tmp_path)
    assert done.returncode == 65 and done.stdout == "relay.yaml: invalid (2 errors)\n", done.stderr
    assert done.stderr.splitlines() == [
        "relay.yaml:1:10: version: unsupported config version [1]: this sealrelay reads version 1",
        "    hint: write `version: 1`",
        "relay.yaml:3:4: x: cannot read '0xffffffffffffffffffffffffffffffffffffff...' as a number",
    ]
