"""A fleet token map: two real `serve` processes on loopback, each with the admin token it
made itself, planned, applied and asked for status in one command each; a wrong token for
one is a one-line error naming that relay, with its exit code (77); no token is ever shown.

The two relays run the same committed config from two directories (each its own data_dir,
so each its own token); `--listen` keeps their ports apart, as in tests/cli/test_startup.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_startup import write
from tests.relay.peers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def healthy(port: int) -> bool:
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """relay-0 and relay-1 serving; the token map names them (file and env references)."""
    root = tmp_path_factory.mktemp("fleet")
    shared, _ = write(root)  # the committed config: data_dir ./var, ports that --listen moves
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
    processes, admin = [], {}
    for name in ("relay-0", "relay-1"):
        (root / name).mkdir()
        shutil.copy(shared, root / name / "relay.yaml")
        admin[name] = free_port()
        listen = [f"mx=127.0.0.1:{free_port()}", f"admin=127.0.0.1:{admin[name]}"]
        listen += [f"metrics=127.0.0.1:{free_port()}", f"portal=127.0.0.1:{free_port()}"]
        args = [sys.executable, "-m", "engine.cli.app", "serve", str(root / name / "relay.yaml")]
        for spec in listen:
            args += ["--listen", spec]
        processes.append(subprocess.Popen(args, cwd=ROOT, env=env, stderr=subprocess.DEVNULL))
    try:
        for name, process in zip(admin, processes, strict=True):
            wait_for(lambda p=process, n=name: healthy(admin[n]) or p.poll() is not None, 60, f"{name} to serve")
            assert process.poll() is None, f"{name} did not start"
        tokens = {name: (root / name / "var" / "admin.token").read_text().strip() for name in admin}
        assert tokens["relay-0"] != tokens["relay-1"]  # each relay made its own
        (root / "tokens.yaml").write_text(
            "relays:\n"
            f"  - {{name: relay-0, url: 'http://127.0.0.1:{admin['relay-0']}', token: {{file: relay-0/var/admin.token}}}}\n"
            f"  - {{name: relay-1, url: '127.0.0.1:{admin['relay-1']}/', token: {{env: RELAY_1_TOKEN}}}}\n"
        )
        yield {"root": root, "config": shared, "admin": admin, "tokens": tokens, "env": env}
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)


def cli(fleet: dict, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {**fleet["env"], "RELAY_1_TOKEN": fleet["tokens"]["relay-1"], **(env or {})}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args],
        cwd=fleet["root"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,  # no terminal to confirm on
    )
    for token in fleet["tokens"].values():
        assert token not in done.stdout + done.stderr  # never a token, whatever happened
    return done


def url(fleet: dict, name: str) -> str:
    return f"http://127.0.0.1:{fleet['admin'][name]}"


def versions(fleet: dict) -> list[int]:
    """The version each relay runs (the tests share the fleet: an apply moves it on)."""
    done = cli(
        fleet, "status", "--tokens", "tokens.yaml", "--relay", "relay-0", "--relay", "relay-1", "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    return [relay["status"]["version"] for relay in json.loads(done.stdout)]


def test_plan_across_two_relays_with_their_own_tokens(fleet: dict) -> None:
    changed = fleet["root"] / "changed.yaml"
    changed.write_text(fleet["config"].read_text() + "delivery:\n  retry_interval: 5m\n")
    v0, v1 = versions(fleet)
    done = cli(fleet, "plan", str(changed), "--tokens", "tokens.yaml", "--relay", "relay-0", "--relay", "relay-1")
    assert done.returncode == 0, done.stderr
    heads = [line for line in done.stdout.splitlines() if line.startswith("sealrelay plan:")]
    assert heads == [
        f"sealrelay plan: {changed} compared with the relay relay-0 ({url(fleet, 'relay-0')}) (base version {v0})",
        f"sealrelay plan: {changed} compared with the relay relay-1 ({url(fleet, 'relay-1')}) (base version {v1})",
    ]
    assert done.stdout.count('~ delivery.retry_interval: "15m" -> "5m"') == 2
    # by URL too, and from $SEALRELAY_TOKENS: the map finds the entry of each URL
    by_url = cli(
        fleet,
        *("plan", str(fleet["config"]), "--relay", url(fleet, "relay-0"), "--relay", url(fleet, "relay-1")),
        "--detailed-exitcode",
        env={"SEALRELAY_TOKENS": "tokens.yaml"},
    )
    assert by_url.returncode == 0, by_url.stderr
    assert by_url.stdout.count("No changes:") == 2


def test_a_wrong_token_for_one_relay_is_one_line_naming_it(fleet: dict) -> None:
    done = cli(
        fleet,
        *("plan", str(fleet["config"]), "--tokens", "tokens.yaml", "--relay", "relay-0", "--relay", "relay-1"),
        env={"RELAY_1_TOKEN": "not-relay-1s-token"},
    )
    assert done.returncode == 77, done.stderr  # EX_NOPERM
    assert done.stdout.count("No changes:") == 1  # relay-0 was planned
    assert done.stderr.splitlines() == [
        f"error: relay-1 ({url(fleet, 'relay-1')}): the admin token was refused "
        f"(GET {url(fleet, 'relay-1')}/v1/config: 403 forbidden: the bearer token is not this relay's admin token; "
        "its token: env RELAY_1_TOKEN, token map tokens.yaml:3:53)"
    ]
    detailed = cli(
        fleet,
        *("plan", str(fleet["config"]), "--tokens", "tokens.yaml", "--relay", "relay-1", "--detailed-exitcode"),
        env={"RELAY_1_TOKEN": "not-relay-1s-token"},
    )
    assert detailed.returncode == 1  # Terraform's contract: any error is 1


def test_a_token_reference_that_does_not_resolve_names_the_relay(fleet: dict) -> None:
    env = {k: v for k, v in fleet["env"].items()}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", str(fleet["config"]), "--tokens", "tokens.yaml"]
        + ["--relay", "relay-1"],
        cwd=fleet["root"],
        env=env,  # RELAY_1_TOKEN not set
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr  # EX_CONFIG
    assert done.stderr.splitlines()[-1] == (
        f"error: relay-1 ({url(fleet, 'relay-1')}): no admin token: environment variable RELAY_1_TOKEN is not set "
        "(its token: env RELAY_1_TOKEN, token map tokens.yaml:3:53) (to plan without a relay: --against OTHER)"
    )


def test_apply_and_status_across_the_fleet(fleet: dict) -> None:
    status = cli(fleet, "status", "--tokens", "tokens.yaml", "--relay", "relay-0", "--relay", "relay-1")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert [line.split(": version ")[0] for line in lines] == [
        f"relay-0 ({url(fleet, 'relay-0')})",
        f"relay-1 ({url(fleet, 'relay-1')})",
    ]
    before = [int(line.split(": version ")[1].split(",")[0]) for line in lines]
    assert before == versions(fleet)

    tighter = fleet["root"] / "tighter.yaml"
    tighter.write_text(fleet["config"].read_text() + "delivery:\n  retry_interval: 10m\n")
    unasked = cli(fleet, "apply", str(tighter), "--tokens", "tokens.yaml", "--relay", "relay-0")
    assert (
        unasked.returncode == 64
        and unasked.stderr.splitlines()[-1] == "no terminal to confirm on: run with --auto-approve"
    )
    assert unasked.stdout.splitlines()[-1] == f"  relay-0 ({url(fleet, 'relay-0')}): not approved (version {before[0]})"
    assert versions(fleet) == before  # nothing applied
    applied = cli(
        fleet,
        "apply",
        str(tighter),
        "--tokens",
        "tokens.yaml",
        "--relay",
        "relay-0",
        "--relay",
        "relay-1",
        "--auto-approve",
    )
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert applied.stdout.splitlines()[-2:] == [
        f"  relay-0 ({url(fleet, 'relay-0')}): applied (version {before[0]} -> {before[0] + 1})",
        f"  relay-1 ({url(fleet, 'relay-1')}): applied (version {before[1]} -> {before[1] + 1})",
    ]
    as_json = json.loads(
        cli(
            fleet, "status", "--tokens", "tokens.yaml", "--relay", "relay-0", "--relay", "relay-1", "--format", "json"
        ).stdout
    )
    assert [(r["name"], r["status"]["version"], r["error"]) for r in as_json] == [
        ("relay-0", before[0] + 1, None),
        ("relay-1", before[1] + 1, None),
    ]
    wrong = cli(
        fleet,
        "status",
        "--tokens",
        "tokens.yaml",
        "--relay",
        "relay-0",
        "--relay",
        "relay-1",
        env={"RELAY_1_TOKEN": "wrong"},
    )
    assert wrong.returncode == 77
    assert wrong.stdout.splitlines()[1].startswith(
        f"relay-1 ({url(fleet, 'relay-1')}): error: the admin token was refused"
    )
    assert wrong.stdout.splitlines()[0].startswith(f"relay-0 ({url(fleet, 'relay-0')}): version {before[0] + 1}, up ")
    refused = cli(
        fleet,
        "apply",
        str(fleet["config"]),
        "--tokens",
        "tokens.yaml",
        "--relay",
        "relay-1",
        "--auto-approve",
        env={"RELAY_1_TOKEN": "wrong"},
    )
    assert refused.returncode == 77
    assert (
        refused.stdout.splitlines()[-1]
        == f"  relay-1 ({url(fleet, 'relay-1')}): failed: the admin token was refused (version None)"
    )
    back = cli(
        fleet,
        "apply",
        str(fleet["config"]),
        "--tokens",
        "tokens.yaml",
        "--relay",
        "relay-0",
        "--relay",
        "relay-1",
        "--auto-approve",
    )
    assert back.returncode == 0, back.stdout + back.stderr  # the fleet runs the committed config again


def test_a_token_map_with_a_literal_token_is_refused_at_its_line(fleet: dict, tmp_path: Path) -> None:
    literal = tmp_path / "tokens.yaml"
    literal.write_text(
        f"relays:\n  - name: relay-0\n    url: {url(fleet, 'relay-0')}\n    token: {fleet['tokens']['relay-0']}\n"
    )
    done = cli(fleet, "plan", str(fleet["config"]), "--tokens", str(literal), "--relay", "relay-0")
    assert done.returncode == 78  # EX_CONFIG
    assert done.stderr.splitlines() == [
        f"{literal}:4:12: relays[0].token: a token is written here only as a reference: "
        "{env: NAME} or {file: path}, never the token itself",
        "    hint: put the token in a file (mode 0600) or an environment variable",
        f"{literal}: the token map cannot be used",
    ]
    unknown = cli(fleet, "plan", str(fleet["config"]), "--tokens", "tokens.yaml", "--relay", "relay-9")
    assert unknown.returncode == 64  # EX_USAGE
    assert unknown.stderr.splitlines() == [
        "error: --relay relay-9: not a URL, and no relay of that name in tokens.yaml (names: relay-0, relay-1)"
    ]
