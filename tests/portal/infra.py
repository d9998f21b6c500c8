"""Machinery behind the portal's test fixtures (tests/portal/conftest.py).

- `PgCluster`: a private, throw-away PostgreSQL cluster (Debian's binaries in
  /usr/lib/postgresql/*/bin) on a free loopback port, never the system one.
- `axe_violations`: run axe-core in a Playwright page and return its serious/critical findings.

scripts/test installs what these need: the `postgresql` and `chromium` Debian packages, the
`playwright` and `psycopg` pip packages, and axe-core into .cache/axe-core/axe.min.js.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, require

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
CHROMIUM = Path("/usr/bin/chromium")
AXE_JS = ROOT / ".cache" / "axe-core" / "axe.min.js"
SCREENSHOTS = Path(__file__).resolve().parent / ".screenshots"

# ---------------------------------------------------------------------------------------------
# PostgreSQL


def find_pg_bin() -> Path | None:
    """The bin directory of the highest PostgreSQL version installed, or None."""
    found = []
    for bin_dir in Path("/").glob(PG_BIN_GLOB.lstrip("/")):
        if not (bin_dir / "initdb").is_file():
            continue
        version = tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))
        found.append((version, bin_dir))
    return max(found)[1] if found else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgError(RuntimeError):
    pass


class PgCluster:
    """A private PostgreSQL cluster: trust auth for `postgres`, TCP on 127.0.0.1 only, its unix
    socket in its own directory, fsync off (nothing here needs to survive a crash).

    As root the server runs as the `postgres` user (PostgreSQL refuses to run as root);
    otherwise as the current user.
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = 0
        self.base: Path | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # -- running the binaries

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin_dir / tool), *args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_"))}
        env["LANG"] = "C.UTF-8"
        # stdin/stdout/stderr never the test's: a started postmaster must not inherit our pipes.
        proc = subprocess.run(
            cmd,
            cwd=self.base,  # the postgres user can enter it (root's cwd may be closed to it)
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise PgError(f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}{self._log_tail()}")
        return proc

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()[-20:]
        except OSError:
            return ""
        return "\nserver log:\n" + "\n".join(lines)

    def _make_base(self) -> Path:
        base = Path(tempfile.mkdtemp(prefix="sealrelay-pg-"))
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            # The postgres user must reach it through every parent ($TMPDIR may be root's own).
            probe = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(base)], capture_output=True)
            if probe.returncode != 0:
                shutil.rmtree(base, ignore_errors=True)
                base = Path(tempfile.mkdtemp(prefix="sealrelay-pg-", dir="/tmp"))
                os.chown(base, pw.pw_uid, pw.pw_gid)
        return base

    # -- life cycle

    def start(self, attempts: int = 3) -> None:
        self.base = self._make_base()
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-locale")
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.base),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
        }
        for attempt in range(attempts):
            # Another process may take the port between free_port() and the bind: try another.
            self.port = free_port()
            opts = " ".join([f"-p {self.port}"] + [f"-c {k}={shlex.quote(v)}" for k, v in options.items()])
            proc = self._run(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-o", opts, "-w", "-t", "60", "start",
                check=attempt == attempts - 1,
            )  # fmt: skip
            if proc.returncode == 0:
                return

    def stop(self) -> None:
        if self.base is None:
            return
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None


def create_database(admin_url: str, name: str) -> None:
    """CREATE DATABASE `name` (empty: from template0) through the admin database at `admin_url`."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')


def drop_database(admin_url: str, name: str) -> None:
    """DROP DATABASE `name`, even while clients (a pool the test left open) are still connected."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_cluster() -> PgCluster:
    """Start a private cluster, or skip (fail under CI) when PostgreSQL is not installed."""
    bin_dir = find_pg_bin()
    require(bin_dir, f"PostgreSQL is not installed (no {PG_BIN_GLOB}/initdb; scripts/test installs it)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            require(False, "running as root but there is no `postgres` user to run PostgreSQL as")
    cluster = PgCluster(bin_dir)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster


# ---------------------------------------------------------------------------------------------
# axe-core


def axe_source() -> str:
    require(AXE_JS.is_file(), f"{AXE_JS} is missing (scripts/test fetches axe-core from npm)")
    return AXE_JS.read_text(encoding="utf-8")


# How axe gets into a page whose CSP has no 'unsafe-inline' (the portal's): not by
# `page.add_script_tag(content=...)`, which adds an inline <script> that this CSP blocks; nor by
# a context made with `bypass_csp=True`, which would switch off the very policy the tests must
# see in force. `evaluate` runs through the DevTools protocol, which the page's CSP does not
# govern: the `(0, eval)` below, a global eval of the UMD bundle that defines window.axe, works
# even where the page's own scripts may not eval (no 'unsafe-eval') and under Trusted Types
# (`require-trusted-types-for 'script'`); axe.run itself needs neither. Tried on Chromium 156.
_INJECT = "source => { if (!window.axe) { (0, eval)(source); } return typeof window.axe; }"

_RUN = """async ({context, options}) => {
    const results = await window.axe.run(context ?? document, options);
    return results.violations;
}"""


def inject_axe(page: Any) -> None:
    """Load axe-core into the page and each of its frames (again after every navigation)."""
    source = axe_source()
    for frame in page.frames:
        if frame.is_detached():
            continue
        kind = frame.evaluate(_INJECT, source)
        if kind != "object":
            raise RuntimeError(f"axe-core did not load in frame {frame.url!r} (window.axe is {kind})")


def axe_violations(
    page: Any,
    impacts: Iterable[str] = ("serious", "critical"),
    *,
    context: str | dict | None = None,
    rules: Sequence[str] | None = None,
    disable: Sequence[str] = (),
) -> list[dict]:
    """axe-core's violations in the page's current state whose impact is one of `impacts`.

    Each is axe's own dict: `id` (the rule, e.g. "label"), `impact`, `help`, `helpUrl` and
    `nodes` (each with `target` selectors and `html`). `context` narrows the run to part of
    the page (a selector or axe's include/exclude dict); `rules` runs only those rule ids;
    `disable` switches rules off.
    """
    inject_axe(page)
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": list(rules)}
    if disable:
        options["rules"] = {rule: {"enabled": False} for rule in disable}
    violations = page.evaluate(_RUN, {"context": context, "options": options})
    wanted = set(impacts)
    return [v for v in violations if v.get("impact") in wanted]


def describe_violations(violations: list[dict]) -> str:
    """A readable summary for assertion messages: rule, impact, help and the offending nodes."""
    lines = []
    for v in violations:
        lines.append(f"{v['id']} ({v.get('impact')}): {v.get('help')} <{v.get('helpUrl')}>")
        for node in v.get("nodes", []):
            lines.append(f"    {node.get('target')}: {node.get('html', '')[:200]}")
    return "\n".join(lines)


def screenshots_root() -> Path:
    """Where browser tests put screenshots: $SEALRELAY_SCREENSHOTS or tests/portal/.screenshots/."""
    env = os.environ.get("SEALRELAY_SCREENSHOTS")
    path = Path(env) if env else SCREENSHOTS
    path.mkdir(parents=True, exist_ok=True)
    return path
