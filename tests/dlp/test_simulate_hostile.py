"""`simulate` and `explain` on hostile samples: each message gets its own result, the run
goes on, and what DLP could not read is shown with the action it led to. Before: one
message nested 1,000 deep aborted the whole `simulate` run with a RecursionError."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from engine.config.load import load_config
from engine.relay.dlp import decide
from engine.relay.dlp.simulate import policy_view, simulate_dir

ROOT = Path(__file__).resolve().parents[2]
HEAD = "From: alice@example.com\r\nTo: bob@partner.example\r\nMIME-Version: 1.0\r\n"


def deep(depth: int = 1000) -> bytes:
    opened = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n' for i in range(depth))
    return f"{HEAD}Subject: deep\r\n{opened}Content-Type: text/plain\r\n\r\nnothing\r\n".encode()


def samples(directory: Path) -> Path:
    directory.mkdir()
    (directory / "a-deep.eml").write_bytes(deep())
    (directory / "b-deep-messages.eml").write_bytes(
        (
            HEAD + "Subject: top\r\n" + "Content-Type: message/rfc822\r\n\r\nSubject: x\r\n" * 1000 + "\r\nhi\r\n"
        ).encode()
    )
    (directory / "c-card.eml").write_bytes(f"{HEAD}Subject: hi\r\n\r\ncard 4111 1111 1111 1111\r\n".encode())
    return directory


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_each_message_gets_its_own_result_and_the_run_goes_on(tmp_path):
    directory = samples(tmp_path / "messages")
    proc = run("simulate", "examples/full.yaml", "--messages", str(directory), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    got = {o["message"]: o for o in json.loads(proc.stdout)}
    assert [(name, got[name]["action"]) for name in sorted(got)] == [
        ("a-deep.eml", "encrypt"),  # dlp.unscannable, the default
        ("b-deep-messages.eml", "encrypt"),
        ("c-card.eml", "encrypt"),  # the card rule
    ]
    assert got["a-deep.eml"]["unscanned"] == [
        "body: MIME parts nested deeper than 20 (multipart/mixed): read as text, not decoded"
    ]
    assert got["a-deep.eml"]["policies"] == [] and got["a-deep.eml"]["rules"][0]["action_plan"] == "dlp.unscannable"
    assert got["c-card.eml"]["unscanned"] == [] and got["c-card.eml"]["policies"] == ["payment-cards"]
    table = run("simulate", "examples/full.yaml", "--messages", str(directory))
    assert table.returncode == 0 and "nested deeper than 20" in table.stdout and "c-card.eml" in table.stdout


def test_explain_says_what_was_not_scanned_and_where_the_setting_is(tmp_path):
    config = tmp_path / "full.yaml"
    shutil.copytree(ROOT / "examples", tmp_path, dirs_exist_ok=True)
    config.write_text(config.read_text().replace("\ndlp:\n", "\ndlp:\n  unscannable: quarantine\n", 1))
    (tmp_path / "deep.eml").write_bytes(deep())
    proc = run("explain", str(config), str(tmp_path / "deep.eml"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    setting = next(n for n, line in enumerate(config.read_text().splitlines(), 1) if "unscannable:" in line)
    assert f"3. DLP: content not fully scanned (1 problem(s)) -> dlp.unscannable: quarantine  [{config}:{setting}:" in (
        proc.stdout
    )
    assert "4. action: quarantine" in lines
    assert (
        "   not scanned: body: MIME parts nested deeper than 20 (multipart/mixed): read as text, not decoded" in lines
    )


def test_a_sample_that_cannot_be_judged_is_an_error_result_not_an_aborted_run(tmp_path, monkeypatch):
    directory = samples(tmp_path / "messages")
    result = load_config(ROOT / "examples" / "full.yaml")
    live = policy_view(result.config, result.base_dir)
    real = decide.judge

    def broken(live, content, *args):
        if b"card" in content:
            raise MemoryError("simulated")
        return real(live, content, *args)

    monkeypatch.setattr("engine.relay.dlp.simulate.judge", broken)
    got = {o.message: o for o in simulate_dir(live, directory)}
    assert len(got) == 3
    assert (got["c-card.eml"].action, got["c-card.eml"].problems) == ("error", ["not judged: MemoryError: simulated"])
    assert got["a-deep.eml"].action == "encrypt"
