"""The wheel, as a new user gets it: built from the tree, installed into a fresh venv, run from
an empty directory. It must carry the embedded default config and the JSON Schema."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = tmp_path_factory.mktemp("source") / "sealrelay"  # a clean copy: no build/ left by an earlier build
    junk = shutil.ignore_patterns(".git", "build", "*.egg-info", "var", "__pycache__", ".hypothesis", "mutants")
    shutil.copytree(ROOT, source, ignore=junk, symlinks=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob("sealrelay-*.whl")
    return built


def test_the_wheel_carries_the_default_config_and_the_schema(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"engine/defaults/relay.yaml", "engine/schemas/relay.schema.json"} <= names
        packaged = json.loads(archive.read("engine/schemas/relay.schema.json"))
    assert packaged == json.loads((ROOT / "schemas" / "relay.schema.json").read_text())


def test_the_wheel_carries_every_file_the_portal_and_the_envelope_serve(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    portal = ROOT / "engine" / "portal"
    needed = {
        str(path.relative_to(ROOT))
        for folder in ("templates", "static", "envelope")
        for path in (portal / folder).iterdir()
        if path.is_file()
    }
    assert needed and needed <= names, sorted(needed - names)


def greeting(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(100)
    except OSError:
        return b""


def test_serve_runs_from_an_empty_directory_after_a_plain_install(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # the dependencies come from this machine's site-packages; the package itself only from the wheel
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    empty = tmp_path / "empty"
    empty.mkdir()
    where = subprocess.run(
        [python, "-c", "import engine; print(engine.__file__)"], cwd=empty, capture_output=True, text=True, check=True
    )
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the tree
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    serve = subprocess.Popen(
        [venv / "bin" / "sealrelay", "serve"], cwd=empty, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not greeting(2525).startswith(b"220"):
            assert serve.poll() is None, serve.stderr.read()
            assert time.monotonic() < deadline, "the relay did not greet on 127.0.0.1:2525"
            time.sleep(0.1)
    finally:
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=30)
    assert code == 0
    assert (empty / "var" / "state.json").is_file()  # the embedded config's data lands in ./var
