"""examples/deploy/Containerfile: what can be checked without a container runtime (none runs
here: the image is never built in the tests).

Statically: the final stage is python:3.11-slim with the wheel pip-installed while root, then
runs as a user that is not root (no RUN after USER), with a fixed uid the Kubernetes pod
runs as; EXPOSE lists exactly the ports of the config the image carries, VOLUME holds its
data_dir; ENTRYPOINT is the command the wheel installs and CMD arguments `sealrelay serve`
takes. Live, on this machine: that CMD (the image's config, only data_dir moved under
tmp_path and the ports to free ones with `--listen`) serves, logs one JSON object per line,
and the HEALTHCHECK's own command reports it healthy; once it has stopped, unhealthy.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path, PurePosixPath

from engine.admin.api import OPEN_PATHS
from tests.conftest import EXAMPLES, ROOT, require
from tests.deploy.helpers import load_example, parse_command, ports, read_yaml
from tests.relay.peers import free_port, wait_for

CONTAINERFILE = EXAMPLES / "deploy" / "Containerfile"
STATEFULSET = EXAMPLES / "deploy" / "kubernetes" / "statefulset.yaml"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(CONTAINERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def one(stage: list[tuple[str, str]], keyword: str) -> str:
    [args] = [args for k, args in stage if k == keyword]
    return args


def healthcheck_command(stage) -> list[str]:
    """The HEALTHCHECK's CMD, exec form: [options] CMD ["..."]."""
    options, _, command = one(stage, "HEALTHCHECK").partition(" CMD ")
    assert all(option.startswith("--") for option in options.split()), options
    return json.loads(command)


def image_config(stage) -> Path:
    """The config the image carries: the COPY that lands on CMD's config path."""
    argv = json.loads(one(stage, "CMD"))
    target = str(parse_command(argv)["path"])
    [source] = [args.split()[0] for k, args in stage if k == "COPY" and args.split()[-1] == target]
    return ROOT / source


def test_the_image_runs_as_a_user_that_is_not_root() -> None:
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim")
    user = one(stage, "USER")
    assert user not in ("root", "0") and not user.startswith(("root:", "0:"))
    keywords = [k for k, _ in stage]
    after_user = keywords[keywords.index("USER") :]
    assert "RUN" not in after_user  # everything after USER runs as that user: nothing is installed then
    installs = [args for k, args in stage if k == "RUN" and "pip install" in args]
    assert installs and ".whl" in installs[0]  # the wheel, installed while still root

    # the uid is fixed, and the one the Kubernetes pod runs as (its volume is group-owned by it)
    useradd = one([s for s in stage if s[0] == "RUN" and "useradd" in s[1]], "RUN")
    uid = int(re.search(r"--uid (\d+)", useradd).group(1))
    assert uid != 0 and re.search(rf"--uid {uid} .*\b{user}\b", useradd)
    pod = read_yaml(STATEFULSET)["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsUser"] == pod["fsGroup"] == uid


def test_ports_volume_and_entrypoint_are_those_of_the_config_and_the_wheel() -> None:
    stage = final_stage()
    config = load_example(image_config(stage))
    assert {int(port) for port in one(stage, "EXPOSE").split()} == set(ports(config).values())
    # data_dir in the volume, not its root: `state restore` renames it, beside it on the same file system
    volume = str(PurePosixPath(config.system.data_dir).parent)
    assert json.loads(one(stage, "VOLUME")) == [volume] and one(stage, "WORKDIR") == volume
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert json.loads(one(stage, "ENTRYPOINT")) == ["sealrelay"] and "sealrelay" in scripts
    assert json.loads(one(stage, "CMD"))[0] == "serve"
    assert one(stage, "STOPSIGNAL") == "SIGTERM"  # the relay's graceful stop

    # the health check asks the admin API for an endpoint it answers without a token
    command = healthcheck_command(stage)
    [(port, path)] = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", " ".join(command))
    assert int(port) == config.system.admin.port and path in OPEN_PATHS


def test_the_cmd_serves_and_the_healthcheck_tells_when_it_stops(tmp_path: Path) -> None:
    sealrelay = Path(sys.executable).with_name("sealrelay")
    require(sealrelay.exists(), "the sealrelay command is not installed (pip install -e .)")
    stage = final_stage()
    source = image_config(stage)
    config = load_example(source)
    text = source.read_text()
    assert text.count(f"data_dir: {config.system.data_dir}") == 1
    local = tmp_path / "relay.yaml"
    local.write_text(text.replace(f"data_dir: {config.system.data_dir}", f"data_dir: {tmp_path / 'data'}"))

    admin = free_port()
    cmd = json.loads(one(stage, "CMD"))
    image_path = str(parse_command(cmd)["path"])
    argv = [str(local) if arg == image_path else arg for arg in cmd]
    argv += ["--listen", "mx=127.0.0.1:0", "--listen", f"admin=127.0.0.1:{admin}", "--listen", "metrics=127.0.0.1:0"]
    check = [
        arg.replace(f"127.0.0.1:{config.system.admin.port}/", f"127.0.0.1:{admin}/")
        for arg in healthcheck_command(stage)
    ]
    assert check[0] == "python" and check != healthcheck_command(stage)
    check[0] = sys.executable  # the image's python: the one the wheel is installed in

    def healthy() -> bool:
        return subprocess.run(check, capture_output=True, timeout=10).returncode == 0

    def answering() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", admin), timeout=1):
                return True
        except OSError:
            return relay.poll() is not None  # it exited: stop waiting, the assertion below says why

    relay = subprocess.Popen(
        [sealrelay, *argv], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(answering, 30, "the admin API to listen")
        assert relay.poll() is None, relay.communicate()[1]
        assert healthy()
        started = time.monotonic()
        relay.send_signal(signal.SIGTERM)  # what `docker stop` sends (STOPSIGNAL)
        _, log = relay.communicate(timeout=30)
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.communicate()
    assert relay.returncode == 0 and time.monotonic() - started < 10
    assert not healthy()
    lines = log.splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)  # --log-format json: every line
    assert any("listening" in json.loads(line).get("message", "") for line in lines), shlex.join(argv)
