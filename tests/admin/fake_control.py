"""A test double of the relay side of the admin API: an in-memory config and version counter.

It implements `engine.admin.contract.Control` the way the relay must: validation through the
real config engine (`validate_data`, so diagnostics are real), its own stale-base check, a
toy plan (top-level sections added, changed or removed) and a toy downgrade rule (a listener
going from `starttls: required` to `offered` is a loosening). `gate`, when set, holds an
apply in progress until the test releases it; `fail_with` makes the next apply raise.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import time

from engine.admin.contract import (
    ApplyRequest,
    ApplyResult,
    ChangeCounts,
    ErrorCode,
    PlanResult,
    Reload,
    RunningConfig,
    Status,
)
from engine.config.diagnostics import has_errors, to_json
from engine.config.load import validate_data

BASE_CONFIG = {
    "version": 1,
    "system": {
        "fqdn": "relay.example.com",
        "internal_domains": ["example.com"],
        "listeners": [{"name": "mx", "address": "127.0.0.1", "port": 2525, "starttls": "required"}],
    },
    "ip_groups": {"internal_servers": ["127.0.0.0/8"]},
}


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def config_hash(config: dict) -> str:
    return hashlib.sha256(canonical_json(config)).hexdigest()


def base_config() -> dict:
    return copy.deepcopy(BASE_CONFIG)


class FakeControl:
    def __init__(self, config: dict | None = None) -> None:
        config = config if config is not None else base_config()
        self._running = RunningConfig(1, config, config_hash(config), None, time.time(), "file:relay.yaml")
        self._started = time.monotonic()
        self._last_reload = Reload(time.time(), True, "file:relay.yaml")
        self.applies: list[tuple[ApplyRequest, str]] = []  # every call, in order
        self.gate: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    def running(self) -> RunningConfig:
        return self._running

    portal: list[dict] | None = None  # the portal's audit events; None: no portal

    def portal_events(self, since: float, address: str | None, event: str | None, limit: int) -> list[dict] | None:
        if self.portal is None:
            return None
        found = [e for e in self.portal if e["at"] >= since and address in (None, e["address"])]
        return [e for e in found if event in (None, e["event"])][-limit:]

    def status(self) -> Status:
        return Status(
            version=self._running.version,
            last_reload=self._last_reload,
            uptime_s=time.monotonic() - self._started,
            queue={"active": 0, "deferred": 0},
            listeners=[{"name": "mx", "address": "127.0.0.1", "port": 2525}],
        )

    async def plan(self, desired: dict) -> PlanResult:
        base = self._running.version
        diags = self._invalid(desired)
        if diags:
            return PlanResult(False, base, error=ErrorCode.INVALID, detail="the config has errors", diagnostics=diags)
        plan, summary = self._diff(desired)
        return PlanResult(True, base, plan=plan, summary=summary)

    async def apply(self, request: ApplyRequest, who: str) -> ApplyResult:
        self.applies.append((request, who))
        version = self._running.version
        if request.base_version != version:
            return ApplyResult.refused(ErrorCode.STALE_BASE, f"the relay runs version {version}", version=version)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc
        diags = self._invalid(request.config)
        if diags:
            return ApplyResult.refused(ErrorCode.INVALID, "the config has errors", version=version, diagnostics=diags)
        plan, summary = self._diff(request.config)
        if request.plan_hash is not None and request.plan_hash != plan["hash"]:
            return ApplyResult.refused(ErrorCode.PLAN_MISMATCH, "the plan moved", version=version, summary=summary)
        if summary.loosening and not request.allow_downgrade:
            detail = "loosening: " + ", ".join(plan["loosenings"]) + " (use --allow-downgrade --reason)"
            return ApplyResult.refused(ErrorCode.DOWNGRADE_REFUSED, detail, version=version, summary=summary)
        if summary.empty:
            return ApplyResult(True, version, version, changed=False, summary=summary)
        config = copy.deepcopy(request.config)
        self._running = RunningConfig(version + 1, config, config_hash(config), request.commit, time.time(), "api")
        self._last_reload = Reload(time.time(), True, "api")
        return ApplyResult(True, version + 1, version, changed=True, summary=summary)

    def _invalid(self, desired: dict) -> list[dict]:
        _, diags = validate_data(desired)
        return [to_json(d) for d in diags] if has_errors(diags) else []

    def _diff(self, desired: dict) -> tuple[dict, ChangeCounts]:
        current = self._running.config
        changes = []
        for key in sorted(set(current) | set(desired)):
            if key not in current:
                changes.append({"action": "+", "path": key})
            elif key not in desired:
                changes.append({"action": "-", "path": key})
            elif canonical_json(current[key]) != canonical_json(desired[key]):
                changes.append({"action": "~", "path": key})
        was = {item["name"]: item.get("starttls") for item in current["system"]["listeners"]}
        loosenings = [
            f"system.listeners[{item['name']}].starttls required -> offered"
            for item in desired["system"]["listeners"]
            if was.get(item["name"]) == "required" and item.get("starttls", "offered") == "offered"
        ]
        count = {a: sum(1 for c in changes if c["action"] == a) for a in "+~-"}
        plan = {"base_version": self._running.version, "changes": changes, "loosenings": loosenings}
        plan["hash"] = "sha256:" + hashlib.sha256(canonical_json(plan)).hexdigest()
        return plan, ChangeCounts(count["+"], count["~"], count["-"], len(loosenings))
