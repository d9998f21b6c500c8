"""examples/deploy/systemd/: the unit passes `systemd-analyze verify` and scores as a
sandboxed service in `systemd-analyze security`, and it runs the config beside it.

Neither needs a running systemd: both read the unit file. The only change to the unit
under test is its ExecStart binary, pointed at this machine's `sealrelay` (verify checks the
binary exists). That systemd really starts it is not tested: no systemd runs here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.relay.delivery.deliver import STOP_GRACE
from tests.conftest import EXAMPLES, require
from tests.deploy.helpers import load_example, parse_command

SYSTEMD = EXAMPLES / "deploy" / "systemd"
UNIT = SYSTEMD / "sealrelay.service"
INSTALLED = "/usr/local/bin/sealrelay"  # where `pip install` puts the command (ExecStart)
EXPOSURE_AT_MOST = 2.0  # systemd-analyze security: 0 is a sealed box, 10 is root with everything; < 2 is "OK"


def directives(text: str) -> dict[str, list[str]]:
    """The unit's `Key=value` lines, every value of a key in order (SystemCallFilter repeats)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def systemd_analyze(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    require(shutil.which("systemd-analyze"), "systemd-analyze (Debian package systemd) is not installed")
    return subprocess.run(["systemd-analyze", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def unit(tmp_path: Path) -> Path:
    """A copy of the unit whose ExecStart runs this machine's `sealrelay`."""
    binary = shutil.which("sealrelay")
    require(binary, "the sealrelay command is not installed (pip install -e .)")
    text = UNIT.read_text()
    assert text.count(f"ExecStart={INSTALLED} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={INSTALLED} ", f"ExecStart={binary} "))
    return copy


def test_the_unit_passes_systemd_analyze_verify(unit: Path) -> None:
    result = systemd_analyze("verify", unit, cwd=unit.parent)
    # an unknown or misspelt key is only a warning: no output at all is the bar
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    misspelt = unit.with_name("misspelt.service")
    misspelt.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    warned = systemd_analyze("verify", misspelt, cwd=unit.parent)
    assert "Unknown key 'ProtectSytem'" in warned.stderr  # what the check above would catch


def test_the_unit_is_sandboxed(unit: Path) -> None:
    result = systemd_analyze(
        "security", "--offline=yes", f"--threshold={round(EXPOSURE_AT_MOST * 10)}", unit, cwd=unit.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr  # the threshold is in tenths of the score
    [score] = re.findall(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert float(score) <= EXPOSURE_AT_MOST

    unit_ = directives(UNIT.read_text())
    for key, value in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
    }.items():
        assert unit_[key] == [value], key
    assert "@system-service" in unit_["SystemCallFilter"]
    assert set(unit_["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert "ProcSubset" not in unit_  # pid only would hide /proc/stat: no process_* metrics


def test_the_unit_runs_the_config_beside_it() -> None:
    unit = directives(UNIT.read_text())
    [exec_start] = unit["ExecStart"]
    binary, *argv = exec_start.split()
    assert binary == INSTALLED
    params = parse_command(argv)  # arguments `sealrelay serve` takes
    assert params["watch"] is True

    # the config: /etc/<ConfigurationDirectory>/relay.yaml is relay.yaml here
    assert params["path"] == Path("/etc") / unit["ConfigurationDirectory"][0] / "relay.yaml"
    config = load_example(SYSTEMD / "relay.yaml")
    state = Path("/var/lib") / unit["StateDirectory"][0]
    # data_dir inside the state directory, not the directory itself: a restore renames it, beside it
    assert Path(config.system.data_dir).parent == state and unit["WorkingDirectory"] == [str(state)]
    assert unit["StateDirectoryMode"] == ["0700"] and unit["User"] == ["sealrelay"]

    # port 25 is below 1024: the capability to bind it, and no other
    assert min(listener.port for listener in config.system.listeners) < 1024
    assert unit["AmbientCapabilities"] == unit["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]

    # a stop: SIGTERM, and time for the deliveries in flight (30 s) before systemd kills it
    assert unit["KillSignal"] == ["SIGTERM"] and int(unit["TimeoutStopSec"][0]) > STOP_GRACE
    # no ExecReload: the relay does not reload on SIGHUP, whose default action would stop it
    assert "ExecReload" not in unit
