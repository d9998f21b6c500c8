"""Each change of a plan says where the desired config writes it (engine/plan/locate.py)."""

from __future__ import annotations

from pathlib import Path

from engine.config.load import load_config
from engine.plan.build import make_plan
from engine.plan.locate import locate

BASE = """version: 1
system:
  fqdn: a.example.com
  internal_domains: [example.com]
  listeners: [{name: mx, address: 127.0.0.1, port: 2525}]
ip_groups:
  internal_servers: [10.0.0.0/8]
routes:
  - name: partners
    recipients: {domains: [partner.example]}
    tls: verify
  - name: old
    recipients: {domains: [old.example]}
"""


def planned(tmp_path: Path, desired_text: str, base_text: str = BASE) -> dict[str, str | None]:
    (tmp_path / "base.yaml").write_text(base_text)
    (tmp_path / "desired.yaml").write_text(desired_text)
    base, desired = load_config(tmp_path / "base.yaml"), load_config(tmp_path / "desired.yaml")
    assert base.ok and desired.ok, desired.diagnostics
    plan = locate(make_plan(desired.config, base.config), desired.data, desired.source)
    return {f"{c.action.marker} {c.address}": c.at for c in plan.changes}


def test_values_members_and_removals_point_into_the_desired_file(tmp_path: Path) -> None:
    desired = (
        BASE.replace("tls: verify", "tls: secure")
        .replace("[10.0.0.0/8]", "[10.0.0.0/8, 192.0.2.0/24]")
        .replace("  - name: old\n    recipients: {domains: [old.example]}\n", "")
    )
    file = tmp_path / "desired.yaml"
    assert planned(tmp_path, desired) == {
        '~ routes["partners"].tls': f"{file}:11:5",  # the key of the value
        "+ ip_groups.internal_servers": f"{file}:7:34",  # the member itself
        '- routes["old"]': f"{file}:8:1",  # the list it left
    }


def test_a_value_back_to_its_default_points_at_the_section_that_holds_it(tmp_path: Path) -> None:
    base = BASE + "delivery:\n  retry_interval: 7m\n  max_retry_interval: 4h\n"
    desired = BASE + "delivery:\n  max_retry_interval: 4h\n"  # retry_interval no longer written
    [(change, at)] = planned(tmp_path, desired, base).items()
    assert (change, at) == ("~ delivery.retry_interval", f"{tmp_path / 'desired.yaml'}:14:1")
