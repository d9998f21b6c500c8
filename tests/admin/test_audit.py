"""The audit log: append-only JSON lines, durable, readable after restarts and torn writes."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from engine.admin.api import stop_admin
from engine.admin.audit import Audit, AuditRecord
from engine.admin.contract import ApplyRequest, ChangeCounts
from engine.admin.token import token_id
from tests.admin.conftest import start
from tests.admin.fake_control import FakeControl, base_config


def record(n: int, **kw) -> AuditRecord:
    return AuditRecord(who="token:0000abcd", from_version=n, to_version=n + 1, result="applied", **kw)


def test_records_are_json_lines_appended(tmp_path: Path) -> None:
    audit = Audit.in_dir(tmp_path)
    audit.append(record(1, summary=ChangeCounts(1, 2, 3, 1), reason="why"))
    audit.append(record(2))
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[0] == "at"
    assert first["summary"] == {"add": 1, "change": 2, "remove": 3, "loosening": 1}
    assert first["reason"] == "why"
    assert stat.S_IMODE((tmp_path / "audit.log").stat().st_mode) == 0o600
    assert [r.from_version for r in audit.read()] == [1, 2]


def test_read_limit_and_since(tmp_path: Path) -> None:
    audit = Audit.in_dir(tmp_path)
    for n in range(5):
        audit.append(record(n, at=f"2025-01-0{n + 1}T00:00:00.000Z"))
    assert [r.from_version for r in audit.read(limit=2)] == [3, 4]
    assert [r.from_version for r in audit.read(limit=10, since="2025-01-03T00:00:00Z")] == [2, 3, 4]
    assert audit.read(limit=0) == []
    assert Audit.in_dir(tmp_path / "none").read() == []


def test_a_torn_line_is_skipped(tmp_path: Path) -> None:
    audit = Audit.in_dir(tmp_path)
    audit.append(record(1))
    with open(audit.path, "a") as handle:
        handle.write('{"at": "2025-01-01T00:00:00Z", "who": "tok')  # a crash mid-write
    audit.append(record(2))
    assert [r.from_version for r in audit.read()] == [1, 2]


def test_an_existing_log_is_appended_to_not_replaced(tmp_path: Path) -> None:
    Audit.in_dir(tmp_path).append(record(1))
    before = (tmp_path / "audit.log").read_bytes()
    Audit.in_dir(tmp_path).append(record(2))  # a new process: a new Audit on the same file
    after = (tmp_path / "audit.log").read_bytes()
    assert after.startswith(before) and len(after) > len(before)


async def test_the_log_survives_a_restart_of_the_api(data_dir: Path) -> None:
    fake = FakeControl()
    desired = base_config()
    desired["domain_groups"] = {"partners": ["partner.example"]}
    for attempt in range(2):
        relay = await start(fake, data_dir)
        try:
            with relay.client() as client:
                request = ApplyRequest(desired if attempt == 0 else base_config(), fake.running().version)
                await asyncio.to_thread(client.apply, request)
                records = await asyncio.to_thread(client.audit, 100)
        finally:
            await stop_admin(relay.server, relay.task)
    assert [(r.from_version, r.to_version) for r in records] == [(1, 2), (2, 3)]
    assert {r.who for r in records} == {token_id(relay.token)}
    assert relay.token not in (data_dir / "audit.log").read_text()


async def test_audit_query_parameters_are_checked(relay) -> None:
    headers = {"Authorization": f"Bearer {relay.token}"}
    async with relay.raw() as http:
        for query in ("limit=0", "limit=x", "limit=100001", "since=yesterday"):
            response = await http.get("/v1/audit?" + query, headers=headers)
            assert response.status_code == 400, query
        ok = await http.get("/v1/audit?limit=5&since=2020-01-01T00:00:00Z", headers=headers)
    assert ok.status_code == 200 and ok.json() == {"records": []}
