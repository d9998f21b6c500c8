"""`simulate` and `explain`: run sample messages through the policy pipeline, send nothing.

A sample is an .eml file; its envelope is taken from its headers (From; To, Cc, Bcc) and
the peer is assumed to be one of ours when the sender's domain is internal (or is given
with `--peer`). The pipeline is the relay's own (`decide.judge`), under a config
provisioned without TLS or files, so what `simulate` says is what the relay would do.
Each sample gets its own result: one that cannot be judged at all (it should not happen:
extraction never raises) is reported as action `error` with the reason in `problems`, and
the run goes on.
"""

from __future__ import annotations

import email.policy
from dataclasses import asdict, dataclass, field
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path

from engine.config.diagnostics import Diagnostic, error
from engine.config.load import LoadResult
from engine.config.model import RelayConfig
from engine.config.source import SourceMap
from engine.policy.groups import domain_of
from engine.relay.dlp.decide import judge
from engine.relay.methods.tls import floor_of
from engine.relay.runtime.live import Live, provision

COMPARED = ("direction", "action", "method", "policies", "route", "tls")


@dataclass(frozen=True)
class Simulated:
    message: str
    direction: str
    action: str
    would: str
    method: str
    policies: list[str]
    rules: list[dict] = field(default_factory=list)
    route: str = ""
    tls: str = ""
    sender: str = ""
    recipients: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unscanned: list[str] = field(default_factory=list)  # the problems that left content unread

    def to_json(self) -> dict:
        return asdict(self)

    def key(self) -> tuple:
        return tuple(tuple(v) if isinstance(v, list) else v for v in (getattr(self, f) for f in COMPARED))


def policy_view(config: RelayConfig, base_dir: Path) -> Live:
    """The relay's policy side for a valid config, without certificates or directories.

    No file is read or created: `base_dir` only anchors paths the policy side never opens,
    so a config with no directory of its own (the base of `simulate --against git:REF`) can
    borrow the desired config's.
    """
    return provision(config, base_dir=base_dir, version=0, tls=False)


def envelope_of(content: bytes) -> tuple[str, list[str]]:
    """Sender and recipients from the headers (only the header block is parsed)."""
    msg = BytesHeaderParser(policy=email.policy.compat32).parsebytes(content)
    senders = [a for _, a in getaddresses(msg.get_all("From", [])) if "@" in a]
    rcpts = [
        a for _, a in getaddresses(msg.get_all("To", []) + msg.get_all("Cc", []) + msg.get_all("Bcc", [])) if "@" in a
    ]
    return (senders[0] if senders else ""), rcpts


def simulate_one(
    live: Live, content: bytes, name: str, *, peer: str | None = None, source: SourceMap | None = None
) -> Simulated:
    """The relay's decision for one sample; never raises for what the sample holds."""
    try:
        return _simulate(live, content, name, peer, source)
    except Exception as error:
        return Simulated(
            name, "", "error", "error", "none", [], problems=[f"not judged: {type(error).__name__}: {error}"]
        )


def _simulate(live: Live, content: bytes, name: str, peer: str | None, source: SourceMap | None) -> Simulated:
    content = content.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    sender, rcpts = envelope_of(content)
    decision = judge(live, content, sender, rcpts, peer)
    verdict = decision.verdict
    rules = []
    for hit in verdict.hits if verdict else ():
        mark = source.find(hit.path) if source else None
        rules.append(
            {
                "policy": hit.policy,
                "rule": hit.rule,
                "severity": hit.severity,
                "action_plan": hit.action_plan,
                "action": hit.action,
                "evidence": list(hit.evidence),
                "where": str(mark) if mark else None,
            }
        )
    route_name, tls = "", ""
    if rcpts:
        domain = domain_of(rcpts[0])
        route = live.route_for(domain)
        route_name = route.name
        if decision.encrypt and decision.method != "tls":
            tls = f"n/a (method {decision.method})"
        else:
            floor = floor_of(live.config) if decision.encrypt else None  # what the tls method demands
            tls = str(live.outbound_policy(route, domain, "", floor))
    return Simulated(
        message=name,
        direction=decision.direction,
        action=decision.action,
        would=decision.would,
        method=decision.method,
        policies=list(decision.policies),
        rules=rules,
        route=route_name,
        tls=tls,
        sender=sender,
        recipients=rcpts,
        problems=list(verdict.problems) if verdict else [],
        unscanned=list(verdict.unscanned) if verdict else [],
    )


def sample_files(directory: Path) -> list[Path]:
    return sorted(p for p in Path(directory).rglob("*.eml") if p.is_file())


def simulate_dir(
    live: Live, directory: Path, *, peer: str | None = None, source: SourceMap | None = None
) -> list[Simulated]:
    return [
        simulate_one(live, p.read_bytes(), str(p.relative_to(directory)), peer=peer, source=source)
        for p in sample_files(directory)
    ]


def changed(before: list[Simulated], after: list[Simulated]) -> list[tuple[Simulated, Simulated]]:
    """The samples whose decision differs between two configs (the impact of a change)."""
    by_name = {o.message: o for o in before}
    return [(by_name[o.message], o) for o in after if o.message in by_name and by_name[o.message].key() != o.key()]


def run_policy_tests(result: LoadResult) -> list[Diagnostic]:
    """The config's `tests:` block: each sample's decision must equal its `expect`."""
    if not result.config or not result.config.tests:
        return []
    live = policy_view(result.config, result.base_dir)
    diags = []
    for i, test in enumerate(result.config.tests):
        path = result.base_dir / test.message
        got = simulate_one(live, path.read_bytes(), test.message)
        expect = test.expect
        for field_name in ("direction", "action", "method", "route", "tls"):
            want = getattr(expect, field_name)
            have = getattr(got, field_name)
            if field_name == "tls" and want is not None:
                have = have.split(" ")[0]
            if want is not None and want != have:
                diags.append(
                    error(
                        ("tests", i, "expect", field_name),
                        f"test `{test.name}`: expected {field_name} {want}, got {have}",
                        _why(got),
                    )
                )
        if expect.policies is not None and sorted(expect.policies) != sorted(got.policies):
            diags.append(
                error(
                    ("tests", i, "expect", "policies"),
                    f"test `{test.name}`: expected policies {sorted(expect.policies)}, got {sorted(got.policies)}",
                    _why(got),
                )
            )
    return diags


def _why(got: Simulated) -> str:
    if not got.rules:
        return "no rule matched; run `sealrelay explain` on the message"
    return "matched: " + ", ".join(f"{r['policy']}/{r['rule']}" for r in got.rules)
