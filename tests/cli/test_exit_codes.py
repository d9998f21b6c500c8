"""Every failure class has its exit code (engine/cli/exits.py), the table in docs/cli.md is
that enum, and `--detailed-exitcode` keeps Terraform's 0/1/2.

The commands run as subprocesses; the relay that answers nonsense is a real HTTP server on
loopback. The start failures of `serve` (ports, data_dir, --listen) run as processes in
tests/cli/test_startup.py; here the lines the runtime raises are held to their codes,
including the one a root test process cannot provoke (a data_dir it may not write).
"""

from __future__ import annotations

import errno
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.cli.exits import Exit, detailed, for_start
from engine.relay.runtime import startup
from engine.relay.runtime.listen import bind_error, parse
from engine.relay.runtime.relay import StartupError

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = ROOT / "examples" / "minimal.yaml"
MESSAGES = ROOT / "examples" / "messages"


def sealrelay(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEALRELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_the_documented_table_is_the_enum() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ?([A-Z]*) ?\|", section, re.MULTILINE)
    assert [(int(code), name) for code, name in rows if name] == [(e.value, e.name) for e in Exit]
    assert ("130", "") in rows  # Ctrl-C, not ours to choose


def test_detailed_exitcode_folds_every_failure_into_1() -> None:
    assert [detailed(code, True) for code in Exit] == [0, 1, 2] + [1] * (len(Exit) - 3)
    assert [detailed(code, False) for code in Exit] == list(Exit)


def test_the_start_failures_the_runtime_raises_have_their_codes(tmp_path: Path, monkeypatch) -> None:
    in_the_way = tmp_path / "var"
    in_the_way.write_text("a file")
    with pytest.raises(StartupError) as not_a_dir:
        startup.usable_data_dir(in_the_way)
    assert for_start(not_a_dir.value) is Exit.CANTCREAT
    with pytest.raises(StartupError) as cannot_create:
        startup.usable_data_dir(in_the_way / "below")
    assert "cannot be created: Not a directory" in str(cannot_create.value)
    assert for_start(cannot_create.value) is Exit.CANTCREAT
    monkeypatch.setattr(os, "access", lambda *a, **k: False)  # root may write anywhere: the check's answer
    with pytest.raises(StartupError) as not_writable:
        startup.usable_data_dir(tmp_path / "fresh")
    assert "is not writable by this user" in str(not_writable.value)
    assert for_start(not_writable.value) is Exit.NOPERM
    monkeypatch.undo()

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        with socket.socket() as second, pytest.raises(OSError) as in_use:
            second.bind(("127.0.0.1", port))
    taken = bind_error("the admin API", "127.0.0.1", port, in_use.value, "free it")
    assert for_start(taken) is Exit.OSERR
    privileged = bind_error("the SMTP listener mx", "0.0.0.0", 25, OSError(errno.EACCES, "Permission denied"), "x")
    assert for_start(privileged) is Exit.NOPERM
    with pytest.raises(ValueError) as misfit:
        parse(["nosuch=127.0.0.1:2525"], environ={}).fit(_config())
    assert for_start(StartupError(str(misfit.value))) is Exit.USAGE  # what Service.start raises


def _config():
    from engine.config.load import load_config

    return load_config(MINIMAL).config


def test_missing_inputs_are_66(tmp_path: Path) -> None:
    validated = sealrelay("validate", str(tmp_path / "relay.yaml"))
    assert (validated.returncode, validated.stdout) == (66, f"{tmp_path / 'relay.yaml'}: invalid (1 error)\n")
    against = sealrelay("plan", str(MINIMAL), "--against", str(tmp_path / "base.yaml"))
    assert (against.returncode, against.stderr) == (66, f"{tmp_path / 'base.yaml'}: no such file or directory\n")
    messages = sealrelay("simulate", str(MINIMAL), "--messages", str(tmp_path / "samples"))
    assert messages.returncode == 66
    assert messages.stderr == (
        f"error: {tmp_path / 'samples'}: no such directory (--messages names a directory of .eml files)\n"
    )
    explained = sealrelay("explain", str(MINIMAL), str(tmp_path / "card.eml"))
    assert (explained.returncode, explained.stderr) == (
        66,
        f"error: {tmp_path / 'card.eml'}: No such file or directory\n",
    )


def test_an_invalid_config_is_65_for_every_command_and_1_with_detailed_exitcode(tmp_path: Path) -> None:
    broken = tmp_path / "relay.yaml"
    broken.write_text(MINIMAL.read_text().replace("version: 1", "version: 1\nbogus: true", 1))
    line = f"{broken}:8:1: bogus: unknown key `bogus`"
    for args in (
        ("validate", str(broken)),
        ("plan", str(broken), "--against", str(MINIMAL)),
        ("simulate", str(broken), "--messages", str(MESSAGES)),
        ("apply", str(broken), "--relay", "http://127.0.0.1:9"),
    ):
        done = sealrelay(*args)
        assert done.returncode == 65, (args, done.stderr)
        assert done.stderr.startswith(line), (args, done.stderr)
    for args in (
        ("plan", str(broken), "--against", str(MINIMAL)),
        ("simulate", str(broken), "--messages", str(MESSAGES), "--against", str(MINIMAL)),
    ):
        done = sealrelay(*args, "--detailed-exitcode")
        assert done.returncode == 1 and done.stderr.startswith(line), (args, done.stderr)


def test_usage_mistakes_are_64(tmp_path: Path) -> None:
    no_against = sealrelay("simulate", str(MINIMAL), "--messages", str(MESSAGES), "--detailed-exitcode")
    assert no_against.returncode == 1  # with --detailed-exitcode: 1, as every error
    assert no_against.stderr == "error: --detailed-exitcode compares two configs: give the other one with --against\n"
    no_reason = sealrelay("apply", str(MINIMAL), "--allow-downgrade")
    assert (no_reason.returncode, no_reason.stderr) == (
        64,
        '--allow-downgrade needs --reason "…" (it goes into the audit log)\n',
    )
    unknown = sealrelay("plan", str(MINIMAL), "--relay", "relay-0")
    assert unknown.returncode == 64
    assert (
        unknown.stderr
        == "error: --relay relay-0: not a URL, and no relay of that name in (no token map) (names: none)\n"
    )


def test_a_plan_file_that_cannot_be_written_is_73(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    done = sealrelay("plan", str(MINIMAL), "--against", str(MINIMAL), "--out", str(tmp_path / "file" / "plan.json"))
    assert done.returncode == 73
    assert done.stderr.splitlines()[-1] == f"error: cannot write {tmp_path / 'file' / 'plan.json'}: Not a directory"


@pytest.fixture
def not_a_relay() -> Iterator[str]:
    """An HTTP server on loopback that answers every request with a page, not the admin API."""

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_relay_that_answers_nonsense_is_76_and_an_unreachable_one_69(not_a_relay: str, tmp_path: Path) -> None:
    env_token = {"SEALRELAY_TOKEN": "t"}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "plan", str(MINIMAL), "--relay", not_a_relay],
        cwd=ROOT,
        env={**os.environ, **env_token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 76, done.stderr  # EX_PROTOCOL
    assert done.stderr.splitlines()[-1] == (
        f"error: GET {not_a_relay}/v1/config: the answer is not JSON (to plan without a relay: --against OTHER)"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    status = subprocess.run(
        [sys.executable, "-m", "engine.cli.app", "status", "--relay", f"127.0.0.1:{closed}", "--relay", not_a_relay],
        cwd=ROOT,
        env={**os.environ, **env_token},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 69  # the first failure's code; every relay is still asked
    lines = status.stdout.splitlines()
    assert lines[0].startswith(f"http://127.0.0.1:{closed}: error: cannot connect to http://127.0.0.1:{closed}")
    assert lines[1] == f"{not_a_relay}: error: GET {not_a_relay}/v1/status: the answer is not JSON"


def test_an_internal_error_is_70_with_its_traceback() -> None:
    program = (
        "import sys; from engine.cli import app as cli\n"
        "@cli.app.command('boom')\n"
        "def boom() -> None:\n"
        "    raise RuntimeError('a bug')\n"
        "sys.argv = ['sealrelay', 'boom']; cli.main()\n"
    )
    done = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 70
    lines = done.stderr.splitlines()
    assert lines[0] == "Traceback (most recent call last):" and lines[-2] == "RuntimeError: a bug"
    assert lines[-1] == "sealrelay: internal error (a bug): please report it with the lines above"
