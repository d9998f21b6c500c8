"""`sealrelay serve` as a process: a start that cannot happen says why in one line and exits
with its cause's code (engine/cli/exits.py: 71 a port, 73 data_dir, 64 a bad --listen);
`--listen` moves a listener or endpoint for a start on a busy machine, and says so.

Every case runs the real command in a subprocess; a port "someone else holds" is a socket
bound and listening in the test.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.relay.peers import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """version: 1
system:
  fqdn: relay.test.example
  internal_domains: [example.com]
  listeners:
    - {{name: mx, address: 127.0.0.1, port: {smtp}}}
  admin: {{address: 127.0.0.1, port: {admin}}}
  metrics: {{address: 127.0.0.1, port: {metrics}}}
  portal: {{address: 127.0.0.1, port: {portal}}}
  data_dir: {data_dir}
ip_groups:
  internal_servers: [127.0.0.0/8]
routes:
  - {{name: nowhere, recipients: any, next_hop: {{host: 127.0.0.1, port: 9}}, tls: none}}
"""

PORTAL = """encryption:
  method: secure_portal
  secure_portal: {url: "https://secure.example.com"}
"""


def write(tmp_path: Path, *, data_dir: str = "./var", extra: str = "", **ports: int) -> tuple[Path, dict[str, int]]:
    chosen = {name: ports.get(name) or free_port() for name in ("smtp", "admin", "metrics", "portal")}
    path = tmp_path / "relay.yaml"
    path.write_text(CONFIG.format(data_dir=data_dir, **chosen) + extra, encoding="utf-8")
    return path, chosen


def sealrelay(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.app", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@contextmanager
def held_port() -> Iterator[int]:
    """A port another process holds: bound and listening, never accepted."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def refused(done: subprocess.CompletedProcess, code: int) -> str:
    """The one line a failed start ends with; no traceback anywhere."""
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("name", "what", "key"),
    [
        ("smtp", "the SMTP listener mx", "mx"),
        ("admin", "the admin API", "admin"),
        ("metrics", "the metrics endpoint", "metrics"),
        ("portal", "the secure portal", "portal"),
    ],
)
def test_a_port_in_use_is_one_line_and_exit_71(tmp_path: Path, name: str, what: str, key: str) -> None:
    with held_port() as port:
        config, _ = write(tmp_path, extra=PORTAL if name == "portal" else "", **{name: port})
        line = refused(sealrelay("serve", str(config)), 71)  # EX_OSERR
    assert line.startswith(f"error: {what} cannot listen on 127.0.0.1:{port}: address already in use"), line
    assert f"--listen {key}=ADDR:PORT" in line and line.endswith("not started")


def test_data_dir_that_is_a_file_is_an_error_at_its_line_for_validate_and_serve(tmp_path: Path) -> None:
    config, _ = write(tmp_path, data_dir="./queue-file")
    (tmp_path / "queue-file").write_text("not a directory")
    checked = sealrelay("validate", str(config))
    assert checked.returncode == 65  # validate: an invalid config
    assert f"{config}:10:13: system.data_dir: data_dir ./queue-file exists and is not a directory" in checked.stderr
    served = sealrelay("serve", str(config))
    assert served.returncode == 73 and "Traceback" not in served.stderr  # serve: EX_CANTCREAT, its cause
    assert "system.data_dir: data_dir ./queue-file exists and is not a directory" in served.stderr
    assert served.stderr.strip().endswith("invalid config, not started")


def test_the_embedded_config_with_var_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("in the way")  # the embedded default keeps its data in ./var
    line = refused(sealrelay("serve", cwd=tmp_path), 73)
    assert (
        line
        == f"error: data_dir {tmp_path / 'var'} exists and is not a directory (system.data_dir): move it away; not started"
    )


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where a directory should be")
    config, _ = write(tmp_path, data_dir="./file/var")
    line = refused(sealrelay("serve", str(config)), 73)
    assert line.startswith(f"error: data_dir {tmp_path / 'file' / 'var'} cannot be created: Not a directory"), line


def test_queue_list_refuses_an_unknown_state(tmp_path: Path) -> None:
    config, _ = write(tmp_path)
    done = sealrelay("queue", "list", "--config", str(config), "--state", "bogus")
    assert done.returncode == 64 and "Traceback" not in done.stderr  # EX_USAGE
    last = done.stderr.strip().splitlines()[-1]
    assert "Invalid value for '--state'" in last and "'deferred'" in last


def test_queue_list_on_a_data_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    config, _ = write(tmp_path, data_dir="./queue-file")
    (tmp_path / "queue-file").write_text("not a directory")
    line = refused(sealrelay("queue", "list", "--config", str(config)), 73)  # EX_CANTCREAT, as serve
    assert line.startswith("error: cannot open the queue: ") and line.endswith("Not a directory"), line


def test_queue_list_outside_a_config_directory_says_which_config_it_opened(tmp_path: Path) -> None:
    done = sealrelay("queue", "list", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"the embedded default config's queue in {tmp_path / 'var'}" in done.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("smtp=localhost:25", "'localhost' is not an IP address"),
        ("mx=127.0.0.1:http", "'http' is not a port number"),
        ("admin=127.0.0.1:70000", "a port is 0 (any free one) to 65535"),
        ("nosuch=127.0.0.1:2525", "no SMTP listener of that name in the config (listeners: mx;"),
    ],
)
def test_a_listen_override_that_does_not_fit_is_one_line(tmp_path: Path, spec: str, message: str) -> None:
    config, _ = write(tmp_path)
    line = refused(sealrelay("serve", str(config), "--listen", spec), 64)  # EX_USAGE
    assert message in line, line


def greets(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(100).startswith(b"220")
    except OSError:
        return False


def test_listen_moves_listeners_and_endpoints_and_status_says_so(tmp_path: Path) -> None:
    smtp, admin = free_port(), free_port()
    with held_port() as busy_smtp, held_port() as busy_admin:
        config, ports = write(tmp_path, smtp=busy_smtp, admin=busy_admin)
        serve = subprocess.Popen(
            [sys.executable, "-m", "engine.cli.app", "serve", str(config), "--listen", f"127.0.0.1:{smtp}"],
            cwd=ROOT,
            env={**_env(), "SEALRELAY_LISTEN": f"admin=127.0.0.1:{admin}"},
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: greets(smtp) or serve.poll() is not None, 60, "the relay to greet on the override")
            assert serve.poll() is None, serve.stderr.read()
            status = wait_for(lambda: _status(admin, tmp_path / "var" / "admin.token"), 30, "the admin API")
            assert status["overrides"] == {"mx": f"127.0.0.1:{smtp}", "admin": f"127.0.0.1:{admin}"}
            assert status["listeners"][0]["port"] == busy_smtp  # the config as committed
        finally:
            serve.send_signal(signal.SIGTERM)
            code = serve.wait(timeout=30)
            err = serve.stderr.read()
    assert code == 0, err
    assert f"listening where --listen says, not the config: admin=127.0.0.1:{admin} 127.0.0.1:{smtp}" in err


def _status(port: int, token_file: Path) -> dict | None:
    """GET /v1/status, or None while the admin API (and its token) is not there yet."""
    try:
        token = token_file.read_text().strip()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/status", headers={"Authorization": f"Bearer {token}"}
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "SEALRELAY_LISTEN"}
