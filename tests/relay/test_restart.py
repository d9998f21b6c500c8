"""A restart resumes the config that ran last; changed files are planned, guarded and audited.

The relay runs from a git work tree; between runs the files are edited (left uncommitted, as
an admin in a hurry would) and the relay started again on the same data directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.admin.audit import Audit
from engine.relay.runtime.service import Service
from tests.plan.gitrepo import Repo
from tests.relay.peers import free_port

ROOT = Path(__file__).resolve().parents[2]
SMTP, ADMIN, METRICS = free_port(), free_port(), free_port()  # the same in every version of the file


def config_text(level: str, retry: str = "15m", ports: tuple[int, int, int] = (SMTP, ADMIN, METRICS)) -> str:
    smtp, admin, metrics = ports
    return textwrap.dedent(f"""\
        version: 1
        system:
          fqdn: relay.test.example
          internal_domains: [example.com]
          listeners: [{{name: mx, address: 127.0.0.1, port: {smtp}}}]
          admin: {{address: 127.0.0.1, port: {admin}}}
          metrics: {{address: 127.0.0.1, port: {metrics}}}
          data_dir: ../var
        ip_groups:
          internal_servers: [127.0.0.0/8]
        domain_groups:
          partners: [partner.test]
        enforced_tls:
          - {{name: partner-tls, direction: outbound, match: {{domain_group: partners}}, level: {level}}}
        routes:
          - {{name: out, recipients: any, next_hop: {{host: 127.0.0.1, port: 9}}, tls: opportunistic}}
        delivery:
          retry_interval: {retry}
        """)


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    repo = Repo(tmp_path / "config")
    repo.write("relay.yaml", config_text("mandatory"))
    repo.commit("partner TLS mandatory")
    return repo


async def run_once(path: Path, **kw) -> dict:
    """Start a relay on `path`, read what it serves and reports, stop it."""
    service = Service(path, admin=False, **kw)
    await service.start()
    try:
        control = service.control
        return {
            "level": service.relay.live.config.enforced_tls[0].level,
            "retry": int(service.relay.live.config.delivery.retry_interval),
            "version": service.relay.live.version,
            "running": control.running(),
            "status": control.status(),
            "audit": Audit.in_dir(service.relay.live.data_dir).read(10),
        }
    finally:
        await service.stop()


async def test_a_restart_with_a_loosened_file_keeps_serving_the_last_config(repo: Repo) -> None:
    path = repo.root / "relay.yaml"
    head = repo.git("rev-parse", "HEAD")
    first = await run_once(path)
    assert first["level"] == "mandatory" and first["version"] == 1
    assert (first["audit"][-1].who, first["audit"][-1].result, first["audit"][-1].commit) == ("start", "applied", head)
    assert first["running"].dirty is False and first["running"].commit == head

    path.write_text(config_text("opportunistic"))  # loosened in the work tree, not committed
    held = await run_once(path)
    assert held["level"] == "mandatory"  # the loosened file is not served
    assert held["version"] == 2
    assert held["status"].held["source"] == "start"
    assert held["status"].held["reason"] == (
        f"{path} loosens protection against the config that ran last (version 1): "
        'enforced_tls["partner-tls"].level: TLS level lowered: mandatory -> opportunistic'
    )
    assert "--allow-downgrade" in held["status"].held["hint"]
    record = held["audit"][-1]
    assert (record.who, record.source, record.result, record.error) == (
        "start",
        "start",
        "refused",
        "downgrade_refused",
    )
    assert (record.commit, record.dirty, record.summary.loosening) == (head, True, 1)
    assert record.hash == first["running"].hash  # what runs after the refused start: the old config

    allowed = await run_once(path, allow_downgrade=True, reason="partner's TLS broken, ticket 7")
    assert allowed["level"] == "opportunistic" and allowed["status"].held is None
    record = allowed["audit"][-1]
    assert (record.result, record.allow_downgrade, record.reason) == ("applied", True, "partner's TLS broken, ticket 7")
    assert (record.commit, record.dirty) == (head, True)
    running = allowed["running"]
    assert (running.source, running.who, running.commit, running.dirty) == ("start", "start", head, True)
    # not reviewed: the running config differs from the last reviewed one (the first start's)
    assert running.last_applied is not None
    assert running.last_applied["enforced_tls"][0]["level"] == "mandatory"

    again = await run_once(path)  # the same files as the config that ran: nothing to judge
    assert again["level"] == "opportunistic" and again["audit"][-1].result == "unchanged"
    assert again["status"].held is None


async def test_a_restart_with_a_tightening_or_neutral_change_applies_it(repo: Repo) -> None:
    path = repo.root / "relay.yaml"
    await run_once(path)
    path.write_text(config_text("mandatory", retry="20m"))
    changed = await run_once(path)
    assert changed["retry"] == 1200 and changed["status"].held is None
    record = changed["audit"][-1]
    assert (record.result, record.summary.change, record.summary.loosening, record.dirty) == ("applied", 1, 0, True)
    assert changed["running"].last_applied is not None  # a start on other files is drift until applied


async def test_a_first_start_without_state_uses_the_files(repo: Repo) -> None:
    path = repo.root / "relay.yaml"
    path.write_text(config_text("opportunistic"))
    first = await run_once(path)
    assert first["level"] == "opportunistic" and first["status"].held is None
    assert first["running"].last_applied is None  # the first start is the baseline: no drift
    assert json.loads((repo.root.parent / "var" / "state.json").read_text())["applied"]["source"] == "start"


def test_serve_refuses_allow_downgrade_without_a_reason(repo: Repo) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "serve", str(repo.root / "relay.yaml"), "--allow-downgrade"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 64  # EX_USAGE
    assert done.stderr.strip().splitlines()[-1] == '--allow-downgrade needs --reason "…" (it goes into the audit log)'
