"""examples/observability/: the alert rules, their unit tests, the scrape config and the
Grafana dashboard, checked by Prometheus' own promtool and against a running relay.

- `promtool check rules` / `check config` accept the rules and the scrape config;
  `promtool test rules` fires the alerts from synthetic series (sealrelay-alerts.test.yml),
  and a copy with one wrong expectation fails (the unit tests are not vacuous).
- Every dashboard query is valid PromQL: each is checked by promtool as a recording rule
  (Grafana's variables replaced by values).
- No drift: a real `serve` is scraped after mail that exercises every family (a deferral at a
  dead next hop, a DLP quarantine); every selector the rules and the dashboard use must match
  a sample on /metrics, name and label values alike, and every `sealrelay_*` family the relay
  exports is on the dashboard.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tests.conftest import EXAMPLES, require
from tests.deploy.helpers import read_yaml
from tests.relay.conftest import write_config  # noqa: F401  (a fixture)
from tests.relay.peers import eventually, free_port, submit
from tests.relay.test_edge import route_to
from tests.relay.test_metrics import Samples, scrape
from tests.relay.test_reload import admin_line, service_for  # noqa: F401  (a fixture)

OBSERVABILITY = EXAMPLES / "observability"
RULES = OBSERVABILITY / "sealrelay-alerts.yml"
RULE_TESTS = OBSERVABILITY / "sealrelay-alerts.test.yml"
DAILY_TESTS = OBSERVABILITY / "sealrelay-alerts-daily.test.yml"  # a day of series, evaluated every 5 minutes
DASHBOARD = OBSERVABILITY / "sealrelay-dashboard.json"

# A metric the relay exports, with an optional label selector: `name{a="x", b=~"y|z"}`.
SELECTOR = re.compile(r"\b((?:sealrelay|process|python)_[a-zA-Z0-9_]+)\b\s*(?:\{([^}]*)\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
SET_BY_PROMETHEUS = {"job", "instance"}  # target labels, not the relay's
GRAFANA = {"$__rate_interval": "5m", "$instance": ".*", "${datasource}": "prometheus"}


def promtool(*args: str | Path, cwd: Path = OBSERVABILITY) -> subprocess.CompletedProcess:
    require(shutil.which("promtool"), "promtool (Debian package prometheus) is not installed")
    return subprocess.run(["promtool", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def rules() -> list[dict]:
    return [rule for group in read_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    """Every PromQL query of the dashboard: panels, the instance variable, annotations."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", [])]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    exprs += [a["expr"] for a in board["annotations"]["list"] if "expr" in a]
    return exprs


def grafana_free(expr: str) -> str:
    for variable, value in GRAFANA.items():
        expr = expr.replace(variable, value)
    label_values = re.fullmatch(r"label_values\((.*), (\w+)\)", expr)  # a Grafana function: its series selector
    return label_values.group(1) if label_values else expr


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(metric, [(label, op, value)]) for each metric selector in `expr`, the PromQL string
    escapes undone and the target labels left out."""
    out = []
    for name, body in SELECTOR.findall(expr):
        matchers = [
            (label, op, re.sub(r"\\(.)", r"\1", value))
            for label, op, value in MATCHER.findall(body or "")
            if label not in SET_BY_PROMETHEUS
        ]
        out.append((name, matchers))
    return out


def matches(labels: dict[str, str], matchers: list[tuple[str, str, str]]) -> bool:
    for label, op, value in matchers:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def test_the_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout
    assert len(rules()) >= 10 and all(rule["labels"]["severity"] in ("warning", "critical") for rule in rules())


def test_the_scrape_config_and_its_rules_pass_promtool_check() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_alerts_fire_from_synthetic_series(tmp_path: Path) -> None:
    fired = {
        case["alertname"]
        for path in (RULE_TESTS, DAILY_TESTS)
        for test in read_yaml(path)["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]  # an expectation that the alert fires, not that it stays quiet
    }
    assert len(fired) >= 2 and fired <= {rule["alert"] for rule in rules()}, fired
    result = promtool("test", "rules", RULE_TESTS.name, DAILY_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == 2

    # the same tests with one expectation wrong must fail: promtool compares what fires
    wrong = RULE_TESTS.read_text().replace("75% of delivery attempts fail", "74% of delivery attempts fail")
    assert wrong != RULE_TESTS.read_text()
    (tmp_path / RULES.name).write_text(RULES.read_text())
    (tmp_path / RULE_TESTS.name).write_text(wrong)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode == 1 and "SealrelayDeliveriesFailing" in result.stdout + result.stderr


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    recorded = [{"record": f"dashboard:query_{i}", "expr": grafana_free(e)} for i, e in enumerate(exprs)]
    # JSON is YAML: promtool reads it as a rule file
    (tmp_path / "dashboard-queries.yml").write_text(json.dumps({"groups": [{"name": "q", "rules": recorded}]}))
    result = promtool("check", "rules", "dashboard-queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_the_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)  # ids are unique
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, panel["title"]  # Grafana's grid is 24 wide
        mine = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] != "row":
            assert panel["targets"] and panel["description"], panel["title"]
            sources = {panel["datasource"]["uid"]} | {t["datasource"]["uid"] for t in panel["targets"]}
            assert sources == {"${datasource}"}, panel["title"]  # the data source the viewer picks
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus" and variables["instance"]["includeAll"] is True


DLP = """
dlp:
  action_plans:
    - {name: hold, email: quarantine}
  policies:
    - name: review
      rules:
        - {name: review, conditions: {phrases: [for review]}, action_plan: hold, destination: {direction: outbound}}
"""


async def test_every_metric_the_rules_and_the_dashboard_read_is_exported(write_config, service_for) -> None:  # noqa: F811
    down = free_port()  # nothing listens: the attempt is deferred, and the destination is tracked
    service = await service_for(write_config(route_to(down) + DLP, system=admin_line()))
    port = service.relay.ports()["mx"]
    for subject, body in (("plain", "hello"), ("held", "the draft, for review")):
        text = f"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n\r\n{body}\r\n"
        await submit(port, text, "alice@example.com", ["bob@partner.example"])

    async def exercised() -> Samples | None:
        samples = await scrape(service)
        names = {name for name, _ in samples}
        wanted = {"sealrelay_destination_deferred_total", "sealrelay_dlp_matches_total", "sealrelay_destination_dead"}
        return samples if wanted <= names else None

    samples = await eventually(exercised, what="a deferral and a DLP match on /metrics")
    exported = [(name, dict(labels)) for name, labels in samples]

    used = [(RULES.name, rule["expr"]) for rule in rules()] + [(DASHBOARD.name, e) for e in dashboard_exprs()]
    missing = []
    checked = set()
    for where, expr in used:
        for name, matchers in selectors(expr):
            checked.add(name)
            if not any(have == name and matches(labels, matchers) for have, labels in exported):
                missing.append(f"{where}: {name}{matchers}")
    assert not missing, "selectors that match nothing the relay exports:\n" + "\n".join(missing)
    assert len(checked) >= 15, checked

    # the other way round: every sealrelay family the relay exports is on the dashboard
    on_dashboard = {name for e in dashboard_exprs() for name, _ in selectors(e)}
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name, _ in exported if name.startswith("sealrelay_")}
    shown = {re.sub(r"_(bucket|count|sum)$", "", name) for name in on_dashboard}
    assert families - shown == set(), f"exported but not on the dashboard: {sorted(families - shown)}"
