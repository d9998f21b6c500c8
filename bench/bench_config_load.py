"""Benchmark: validate a large generated config (5,000 IP-group entries, 500 DLP rules).

Target (issue 2): the whole `load_config` under 1 s on the 2-core reference machine.
Prints the time of each stage side by side, so the ratio between them is visible even on
a noisy machine, and the file size. Run: `python bench/bench_config_load.py [--repeat 5]`;
`--smoke` loads a tenth of the config once (a second or two; the target is still judged).
The config it loaded is counted back from the result: a generator that stopped producing
what the benchmark claims to load fails the run.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
import time
from pathlib import Path


def generate(ip_entries: int = 5000, rules: int = 500) -> str:
    """A valid config with `ip_entries` CIDRs over 50 groups and `rules` DLP rules."""
    lines = [
        "version: 1",
        "system:",
        "  fqdn: mail.example.com",
        "  internal_domains: [example.com]",
        "  listeners:",
        "    - {name: mx, address: 127.0.0.1, port: 2525}",
        "ip_groups:",
    ]
    per_group = ip_entries // 50
    n = 0
    for g in range(50):
        lines.append(f"  group_{g}:")
        for _ in range(per_group):
            net = ipaddress.ip_network((int(ipaddress.ip_address("10.0.0.0")) + n * 256, 24))
            lines.append(f"    - {net}")
            n += 1
    lines += ["domain_groups:", "  partners: [partner.example, '*.bank.example']", "dlp:", "  action_plans:"]
    lines += ["    - {name: encrypt, email: encrypt, notify: [policy_owners]}", "    - {name: block, email: block}"]
    lines.append("  policies:")
    for p in range(rules // 10):
        lines += [f"    - name: policy-{p}", "      owners: [security@example.com]", "      rules:"]
        for r in range(10):
            lines += [
                f"        - name: rule-{r}",
                "          conditions:",
                "            any:",
                f"              - pattern: '\\bREF-{p:03d}{r}\\d{{6}}\\b'",
                f"              - phrases: ['project {p}-{r}', 'codename {p} {r}']",
                "              - {classifier: credit_card, min_matches: 2}",
                f"          action_plan: {'encrypt' if r % 2 else 'block'}",
                "          source: {senders: ['*@example.com'], ip_groups: [group_1]}",
                "          destination: {direction: outbound, domain_groups: [partners]}",
            ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="a tenth of the config (500 IP entries, 50 rules), once")
    args = parser.parse_args()
    ip_entries, rules = (500, 50) if args.smoke else (5000, 500)
    if args.smoke:
        args.repeat = 1

    from engine.config import schema
    from engine.config.load import load_config, validate_data
    from engine.config.semantic import run_checks
    from engine.config.source import load_path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "relay.yaml"
        path.write_text(generate(ip_entries, rules), encoding="utf-8")
        size = path.stat().st_size
        warm = load_config(path)  # warm caches (schema validator build) once, as a running relay would
        assert warm.ok, warm.diagnostics[:3]
        loaded_entries = sum(len(entries) for entries in warm.config.ip_groups.values())
        loaded_rules = sum(len(policy.rules) for policy in warm.config.dlp.policies)
        if (loaded_entries, loaded_rules) != (ip_entries, rules):
            print(
                f"error: the config holds {loaded_entries} IP entries and {loaded_rules} rules, not {ip_entries} and {rules}"
            )
            return 1
        stages: dict[str, list[float]] = {k: [] for k in ("parse", "schema", "models", "semantic", "total")}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            loaded = load_path(path)
            t1 = time.perf_counter()
            diags = schema.check(loaded.data)
            t2 = time.perf_counter()
            config, _ = validate_data(loaded.data)
            t3 = time.perf_counter()
            run_checks(config, base_dir=Path(tmp))
            t4 = time.perf_counter()
            result = load_config(path)
            t5 = time.perf_counter()
            assert not diags and result.ok, result.diagnostics[:3]
            stages["parse"].append(t1 - t0)
            stages["schema"].append(t2 - t1)
            stages["models"].append(t3 - t2 - (t2 - t1))  # validate_data runs the schema again
            stages["semantic"].append(t4 - t3)
            stages["total"].append(t5 - t4)
        from ruamel.yaml import YAML

        t0 = time.perf_counter()
        YAML(typ="rt").load(path.read_text(encoding="utf-8"))
        stages["ruamel round-trip parse (not used; for comparison)"] = [time.perf_counter() - t0]
    total = statistics.median(stages["total"])
    print(
        f"config: {size / 1e6:.2f} MB, {loaded_entries:,} IP entries, {loaded_rules:,} DLP rules; median of {args.repeat} runs"
    )
    for name, values in stages.items():
        med = statistics.median(values)
        print(f"  {name:9s} {med * 1000:8.1f} ms  ({med / total:6.1%} of total)")
    print(f"target: total < 1000 ms -> {'met' if total < 1.0 else 'NOT met'}")
    return 0 if total < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
