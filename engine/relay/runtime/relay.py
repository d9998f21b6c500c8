"""The relay process: listeners, queue, delivery workers, and the live config they share.

`Runtime` holds the current `Live`; replacing it is one reference assignment (Caddy's
swap), done only with a fully provisioned `Live`. Listeners and the queue outlive swaps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from engine.config.diagnostics import render_text
from engine.config.load import load_config
from engine.relay.delivery.deliver import Deliverer
from engine.relay.methods.base import Method
from engine.relay.queue import Queue
from engine.relay.runtime import state as relay_state
from engine.relay.runtime.listen import Overrides, bind_error
from engine.relay.runtime.live import Live, provision
from engine.relay.smtp.edge import session_factory
from engine.relay.smtp.intake import Intake
from engine.relay.smtp.protocol import Connections
from engine.relay.tls import tlsrpt
from engine.relay.tls.tlsrpt_send import Reporter

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "defaults" / "relay.yaml"
# asyncio's default of 100 lets a burst of connections fill the kernel's accept queue, and
# then every client (the ones a limit would refuse at once, and the rest) waits seconds for
# SYN-ACK retransmits; the kernel caps it at net.core.somaxconn
LISTEN_BACKLOG = 1024


def config_location(path: Path | None) -> tuple[Path, Path | None]:
    """Which config a command without an explicit one uses, and the base for its relative
    paths: `./relay.yaml` if present (its own directory), else the embedded default (the
    working directory, so its data lands in ./var)."""
    if path is not None:
        return path, None
    if Path("relay.yaml").exists():
        return Path("relay.yaml"), None
    return DEFAULT_CONFIG, Path.cwd()


def data_dir_of(path: Path | None) -> Path:
    """The data directory of the config a command without `serve` works on (queue, quarantine).

    Raises ConfigError when the config cannot be read; file checks are skipped (an operator
    may inspect the queue on a host without the relay's secrets)."""
    path, base_dir = config_location(path)
    result = load_config(path, check_files=False)
    if result.config is None:
        raise ConfigError(f"{path}: invalid config: run `sealrelay validate {path}`")
    return ((base_dir or result.base_dir) / result.config.system.data_dir).resolve()


class ConfigError(Exception):
    """The config is invalid; the message is the rendered diagnostics."""


class StartupError(Exception):
    """`serve` cannot start (a port is taken, `data_dir` is not a directory, an override does
    not fit the config); the message is one line for the operator, and `serve` exits 1."""


class Runtime:
    """The live config of a running relay, swapped atomically."""

    def __init__(self, live: Live) -> None:
        self._live = live

    def current(self) -> Live:
        return self._live

    def swap(self, live: Live) -> Live:
        old, self._live = self._live, live
        return old


def load_live(path: Path, version: int | None = None, *, base_dir: Path | None = None) -> Live:
    """Validate the config at `path` and provision it; raises ConfigError when invalid.

    Relative paths in the config (data_dir, certificates) are taken from the config's own
    directory, or from `base_dir` (the embedded default config uses the working directory).
    The version is one more than the last this data directory has seen, unless given.
    """
    result = load_config(path)
    if not result.ok:
        raise ConfigError(render_text(result.diagnostics))
    base = (base_dir or result.base_dir).resolve()
    if version is None:
        version = relay_state.load((base / result.config.system.data_dir).resolve()).version + 1
    return provision(result.config, base_dir=base, version=version)


class Relay:
    """One relay node. `start` binds every listener before accepting anything."""

    def __init__(
        self,
        live: Live,
        *,
        methods: dict[str, Method] | None = None,
        resolver_for=None,
        clock=time.time,
        overrides: Overrides | None = None,
        mta_sts=None,
        tls_reports: tlsrpt.Recorder | None = None,
    ) -> None:
        self.overrides = overrides or Overrides()  # `serve --listen`: where listeners bind instead
        self.runtime = Runtime(live)
        self.queue = Queue.open(live.data_dir / "queue", writer="process")
        self.deliverer = Deliverer(
            self.queue,
            self.runtime.current,
            methods=methods,
            resolver_for=resolver_for,
            clock=clock,
            mta_sts=mta_sts,
            tls_reports=tls_reports,
        )
        recorder = self.deliverer.tls_reports
        self.tls_reporter = Reporter(recorder, self._enqueue, recorder.clock)  # TLS-RPT's daily reports
        self.intake = Intake(self.queue, on_queued=self.deliverer.kick)
        self._servers: dict[tuple[str, int], asyncio.AbstractServer] = {}
        self.connections = Connections()  # open SMTP connections, over listeners and config versions
        self._delivery_task: asyncio.Task | None = None
        self._stopped = False
        self._queue_counts: dict = {}

    @property
    def live(self) -> Live:
        return self.runtime.current()

    async def start(self, *, deliver: bool = True) -> None:
        await self._listen(self.live)
        if deliver:
            self._delivery_task = asyncio.create_task(self.deliverer.run())

    async def _listen(self, live: Live) -> list[tuple[str, int]]:
        """Bind the listeners of `live` that are not bound yet; returns the new ones.
        If one cannot be bound, those bound here are closed again and the error raised."""
        loop = asyncio.get_running_loop()
        added = []
        try:
            for listener in live.config.system.listeners:
                where = self.overrides.listener(listener)
                if where in self._servers:
                    continue
                factory = session_factory(self.runtime.current, listener, self.intake, self.connections)
                try:
                    server = await loop.create_server(
                        factory,
                        *where,
                        reuse_address=True,
                        reuse_port=listener.reuse_port,
                        backlog=LISTEN_BACKLOG,
                    )
                except OSError as exc:
                    hint = f"free it, change system.listeners, or serve --listen {listener.name}=ADDR:PORT"
                    raise bind_error(f"the SMTP listener {listener.name}", *where, exc, hint) from exc
                self._servers[where] = server
                added.append(where)
                port = server.sockets[0].getsockname()[1]
                log.info("listening on %s:%s (%s)", where[0], port, listener.name)
        except OSError:
            for where in added:
                self._servers.pop(where).close()
            raise
        return added

    def addresses(self, live: Live) -> set[tuple[str, int]]:
        """Where the listeners of `live` bind in this process (the config's, or an override)."""
        return {self.overrides.listener(listener) for listener in live.config.system.listeners}

    async def switch(self, live: Live) -> None:
        """Make `live` the running config: new listeners bound first (a port that cannot be
        bound aborts the switch), then the one reference swap, then listeners that are gone
        stop accepting; sessions in progress finish under the config they started with."""
        await self._listen(live)
        old = self.runtime.swap(live)
        wanted = self.addresses(live)
        for where in [w for w in self._servers if w not in wanted]:
            self._servers.pop(where).close()
            log.info("stopped listening on %s:%s", *where)
        self.deliverer.kick()
        del old

    async def _enqueue(self, sender: str, recipients: list[str], content: bytes, meta: dict) -> str:
        """Queue a message the relay writes itself (a TLS report) and wake delivery."""
        queue_id = await self.queue.enqueue(sender, recipients, content, meta=meta)
        self.deliverer.kick()
        return queue_id

    def queue_counts(self) -> dict:
        """The queue's last known sizes (refreshed by the delivery loop; cheap to read)."""
        return dict(self._queue_counts)

    def ports(self) -> dict[str, int]:
        """The bound port of each listener by name (useful when the config says port 0)."""
        out = {}
        for listener in self.live.config.system.listeners:
            server = self._servers.get(self.overrides.listener(listener))
            if server is not None:
                out[listener.name] = server.sockets[0].getsockname()[1]
        return out

    async def stop(self) -> None:
        """Stop accepting, let deliveries in progress finish (bounded), close the queue. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        servers = list(self._servers.values())
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        await self.deliverer.stop()
        if self._delivery_task:
            self._delivery_task.cancel()
            await asyncio.gather(self._delivery_task, return_exceptions=True)
        await asyncio.to_thread(self.deliverer.tls_reports.close)
        self.queue.close()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
