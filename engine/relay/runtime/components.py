"""The parts of a `serve` process besides the relay itself, each a `Component`, listed in one place.

A component starts after the relay is listening and stops before it, in reverse order. It
runs on one of two planes: `relay` (the SMTP loop: cheap periodic work) or `control` (the
control thread's loop: HTTP servers and the file watcher, so an apply is answered promptly
while the SMTP loop is saturated). After every config switch each component's `on_swap` is
called with the new `Live` (from the thread that switched: keep it to assignments).

The admin API and the metrics endpoint are served by the same HTTP stack (Starlette on
uvicorn): the metrics endpoint answers `GET /metrics` and nothing else, without a token;
expose it only to your Prometheus. Each binds where its `system.<name>` says, or where
`serve --listen <name>=ADDR:PORT` moves it; an address that cannot be bound stops the start
with a one-line `BindError` (a relay that silently lacks its admin API or its metrics is
found out only when an apply or an alert needs them). The secure portal (`Portal`) runs on the same stack, over
HTTPS with the relay's certificate, when the config at start uses it (`secure_portal`, or the
`advanced` method's key release).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine.admin.api import make_app, serve_admin, stop_admin
from engine.admin.token import ensure_token
from engine.relay.delivery.resolve import resolver_for
from engine.relay.runtime import logbuffer, metrics
from engine.relay.runtime.listen import BindError, bind_error
from engine.relay.tls import mtasts
from engine.relay.tls.tlsrpt_send import next_run

if TYPE_CHECKING:
    from engine.relay.runtime.live import Live
    from engine.relay.runtime.service import Service

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str
    plane: str  # "relay" or "control"

    async def start(self, service: Service) -> None: ...

    async def stop(self) -> None: ...

    def on_swap(self, live: Live) -> None: ...


def components_for(*, admin: bool, watch: bool) -> list[Component]:
    """Every component of a `serve` process, in start order."""
    out: list[Component] = [QueueStats(), LogFlusher(), Portal(), TLSReports(), MTASTSRefresh()]
    if admin:
        out += [AdminApi(), MetricsEndpoint()]
    if watch:
        out.append(Watcher())
    return out


class _Task:
    """A component that is one long-running task in its plane's loop."""

    name = "task"
    plane = "relay"

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None

    async def start(self, service: Service) -> None:
        self._task = asyncio.create_task(self.run(service), name=self.name)

    async def run(self, service: Service) -> None:  # pragma: no cover - each subclass has its own
        raise NotImplementedError

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def on_swap(self, live: Live) -> None:
        pass


class QueueStats(_Task):
    """Refreshes the queue counts `/v1/status` shows and the queue and certificate gauges."""

    name = "queue-stats"
    INTERVAL = 2.0

    def __init__(self) -> None:
        super().__init__()
        self._cert_seen: Path | None = None
        self._not_after = 0.0

    async def start(self, service: Service) -> None:
        # the expiry is known before /metrics answers: a 0 there would read as "expired in 1970"
        cert_dir = service.relay.live.certificate_dir
        if cert_dir is not None:
            try:
                self._not_after, self._cert_seen = await asyncio.to_thread(_not_after, cert_dir), cert_dir
                metrics.CERT_EXPIRY.set(self._not_after)
            except Exception:  # best effort, as every refresh
                log.debug("certificate expiry unreadable", exc_info=True)
        await super().start(service)

    async def run(self, service: Service) -> None:
        relay = service.relay
        while True:
            try:
                stats = await relay.queue.stats()
                relay._queue_counts = {
                    "entries": stats.entries,
                    "bytes": stats.bytes,
                    "held": stats.held,
                    **stats.recipients,
                    "at": time.time(),
                }
                metrics.QUEUE_ENTRIES.set(stats.entries)
                metrics.QUEUE_HELD.set(stats.held)
                for state, count in stats.recipients.items():
                    metrics.QUEUE_RECIPIENTS.labels(state).set(count)
                cert_dir = relay.live.certificate_dir
                if cert_dir is not None:  # read once per certificate, not every pass
                    if cert_dir != self._cert_seen:
                        self._not_after, self._cert_seen = await asyncio.to_thread(_not_after, cert_dir), cert_dir
                    metrics.CERT_EXPIRY.set(self._not_after)
            except Exception:  # stats are best effort
                log.debug("queue stats refresh failed", exc_info=True)
            await asyncio.sleep(self.INTERVAL)


class LogFlusher(_Task):
    """Writes the buffered decision log lines at least every `logbuffer.FLUSH_INTERVAL`."""

    name = "log-flusher"

    async def run(self, service: Service) -> None:
        try:
            while True:
                await asyncio.sleep(logbuffer.FLUSH_INTERVAL)
                logbuffer.flush()
        finally:
            logbuffer.flush()


class TLSReports(_Task):
    """Sends the TLS-RPT reports of finished days at `system.tls_reporting.send_at` (UTC), and
    once at start (a relay that was down at that hour sends them late, not never). Does
    nothing while reporting is off; a day's counters stay until its report is made."""

    name = "tls-reports"

    async def run(self, service: Service) -> None:
        relay = service.relay
        clock = relay.tls_reporter.clock
        await self._send(relay)
        while True:
            await asyncio.sleep(max(1.0, next_run(clock(), relay.live.config.system.tls_reporting.send_at) - clock()))
            await self._send(relay)

    async def _send(self, relay) -> None:
        live = relay.live
        if not live.config.system.tls_reporting.enabled:
            return
        try:
            sent = await relay.tls_reporter.send_due(live, resolver_for(live.config.system.dns))
            if sent:
                log.info("TLS-RPT: reports sent for %d domain-days", sent)
        except Exception:  # the next day tries again; the counters stay
            log.exception("sending TLS-RPT reports failed")


class MTASTSRefresh(_Task):
    """Fetches again the cached MTA-STS policies that are stale but unexpired, at start and
    every `INTERVAL`, at most `mtasts.REFRESH_LIMIT` a pass (RFC 8461 §5.1: "Senders SHOULD
    proactively refresh cached policies before they expire"), so a domain that rarely gets
    mail keeps its policy. Through the resolver, CA bundle and cache delivery looks policies up
    with (`Deliverer.refresh_mta_sts`); a failed refresh leaves the cached policy in force
    until it expires."""

    name = "mta-sts-refresh"
    INTERVAL = mtasts.REFRESH_INTERVAL

    async def run(self, service: Service) -> None:
        while True:
            await self.refresh(service.relay)
            await asyncio.sleep(self.INTERVAL)

    async def refresh(self, relay) -> None:
        try:
            done = await relay.deliverer.refresh_mta_sts(relay.live)
        except Exception:  # the next pass tries again; the cached policies stay
            log.exception("refreshing MTA-STS policies failed")
            return
        if done:
            failed = sum(1 for lookup in done if lookup.failure is not None)
            log.info("MTA-STS: %d stale policies looked up again, %d could not be fetched", len(done), failed)


class _Http:
    """A component that is one HTTP server (Starlette on uvicorn) in the control loop."""

    name = "http"
    plane = "control"

    def __init__(self) -> None:
        self._server = None
        self.port: int | None = None

    async def serve(
        self, service: Service, app, key: str, endpoint, what: str, tls: tuple[Path, Path] | None = None
    ) -> int:
        """Serve `app` where `system.<key>` says, or `serve --listen <key>=…`; BindError if it cannot."""
        address, port = service.overrides.endpoint(key, endpoint)
        try:
            self._server = await serve_admin(app, address, port, name=what, tls=tls)
        except OSError as exc:
            hint = f"free it, change system.{key}, or serve --listen {key}=ADDR:PORT"
            raise bind_error(f"the {what}", address, port, exc, hint) from exc
        self.port = self._server[0].config.port
        return self.port

    async def stop(self) -> None:
        if self._server:
            await stop_admin(*self._server)

    def on_swap(self, live: Live) -> None:
        pass  # HTTP addresses change at restart only (docs/admin-api.md)


class AdminApi(_Http):
    """The admin API on `system.admin` (token in `<data_dir>/admin.token`)."""

    name = "admin-api"

    async def start(self, service: Service) -> None:
        live = service.relay.live
        app = make_app(service.control, ensure_token(live.data_dir), service.audit)
        service.admin_port = await self.serve(service, app, "admin", live.config.system.admin, "admin API")


class MetricsEndpoint(_Http):
    """`GET /metrics` on `system.metrics`, Prometheus' text format, from the process registry."""

    name = "metrics"

    async def start(self, service: Service) -> None:
        endpoint = service.relay.live.config.system.metrics
        await self.serve(service, metrics_app(), "metrics", endpoint, "metrics endpoint")

    def on_swap(self, live: Live) -> None:
        metrics.CONFIG_VERSION.set(live.version)


def metrics_app() -> Starlette:
    async def exposition(request: Request) -> Response:
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", exposition, methods=["GET"])])


class Portal(_Http):
    """The secure portal on `system.portal` (HTTPS, the relay's certificate) and its retention
    sweep, when the config at start uses it (`service.portal_settings`). Its `PortalService` is
    registered for the `secure_portal` method of this relay; without it that method's
    recipients wait in the queue."""

    name = "portal"
    SWEEP_INTERVAL = 600.0

    def __init__(self) -> None:
        super().__init__()
        self.service = None
        self._sweeper: asyncio.Task | None = None

    async def start(self, service: Service) -> None:
        relay = service.relay
        live = relay.live
        from engine.portal.service import PortalService, Wiring, open_store, portal_settings

        settings = portal_settings(live.config)
        if settings is None:
            return
        from engine.portal.web import make_app

        async def enqueue(sender: str, recipients: list[str], content: bytes, meta: dict) -> str:
            ref = await relay.queue.enqueue(sender, recipients, content, meta=meta)
            relay.deliverer.kick()
            return ref

        try:
            store = await asyncio.to_thread(open_store, settings, live.base_dir, live.data_dir)
        except Exception as exc:  # the relay runs on; portal mail waits in the queue with the reason
            log.error("the secure portal could not open its store: %s", exc)
            return
        wiring = Wiring(service.control.relay_loop, enqueue, relay.intake.receive, relay.runtime.current)
        self.service = PortalService(store, wiring, live.data_dir)
        cert = live.certificate_dir
        endpoint = live.config.system.portal
        try:
            self.port = await self.serve(
                service,
                make_app(self.service),
                "portal",
                endpoint,
                "secure portal",
                (cert / "cert.pem", cert / "key.pem") if cert else None,
            )
        except BindError:  # a start that cannot serve what its config asks for stops, and says why
            store.close()
            self.service = None
            raise
        except RuntimeError as exc:
            log.error("the secure portal on %s:%s could not start: %s", endpoint.address, endpoint.port, exc)
            store.close()
            self.service = None
            return
        self.service.register()
        service.portal_port = self.port
        self._sweeper = asyncio.create_task(self._sweep(), name="portal-retention")
        log.info("secure portal on https://%s:%s", service.overrides.endpoint("portal", endpoint)[0], self.port)

    async def _sweep(self) -> None:
        while True:
            try:
                swept = await asyncio.to_thread(self.service.sweep)
                if swept["messages"]:
                    log.info("portal retention: %d messages deleted", swept["messages"])
            except Exception:
                log.exception("portal retention sweep failed")
            await asyncio.sleep(self.SWEEP_INTERVAL)

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await super().stop()
        if self.service is not None:
            self.service.unregister()
            await asyncio.to_thread(self.service.store.close)


class Watcher(_Task):
    """Reloads the config when its files change (`serve --watch`)."""

    name = "watcher"
    plane = "control"

    async def run(self, service: Service) -> None:
        await service.watch_files()


def _not_after(cert_dir: Path) -> float:
    from engine.certificates.store import load_dir

    return load_dir(cert_dir).describe().not_after.timestamp()
