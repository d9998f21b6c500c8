"""`sealrelay serve`: the relay, its admin API, and (with --watch) the config file watcher.

One asyncio process: SMTP listeners and delivery (`Relay`), the admin API on its own
loopback port (token in `<data_dir>/admin.token`, applies in `<data_dir>/audit.log`), and
a watcher that reloads the config when its files change. A reload goes through the same
swap as an apply: validated in full, provisioned, then switched; an invalid file is logged
with its file:line:col and the last good config keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from engine.admin.audit import Audit, AuditRecord
from engine.admin.contract import ChangeCounts
from engine.config.diagnostics import render_one_line, render_text
from engine.config.load import load_config
from engine.plan.diff import config_hash
from engine.plan.planfile import git_provenance
from engine.relay.runtime import metrics, startup, watch
from engine.relay.runtime.components import Component, components_for
from engine.relay.runtime.control import RelayControl
from engine.relay.runtime.listen import Overrides
from engine.relay.runtime.relay import Relay, StartupError

log = logging.getLogger(__name__)

WATCH_DEBOUNCE_MS = 50
WATCH_POLL_MS = 1000
CONTROL_SWITCH_INTERVAL = 0.0005


class Service:
    def __init__(
        self,
        path: Path,
        *,
        base_dir: Path | None = None,
        watch: bool = False,
        admin: bool = True,
        allow_downgrade: bool = False,
        reason: str | None = None,
        overrides: Overrides | None = None,
    ) -> None:
        self.path = path
        self.overrides = overrides or Overrides()
        self.allow_downgrade = allow_downgrade
        self.reason = reason
        self.base_dir = base_dir
        self.watch = watch
        self.admin = admin
        self.relay: Relay | None = None
        self.control: RelayControl | None = None
        self.audit: Audit | None = None
        self.admin_port: int | None = None
        self.portal_port: int | None = None
        self.components = components_for(admin=admin, watch=watch)
        self._watched: watch.Watched | None = None

    async def start(self) -> None:
        # what the files hold before they are read: a change from here on is seen by the watcher
        self._watched = await asyncio.to_thread(watch.follow, self.path) if self.watch else None
        start = await asyncio.to_thread(
            startup.choose,
            self.path,
            self.base_dir,
            allow_downgrade=self.allow_downgrade,
            reason=self.reason,
            provenance=git_provenance,
        )
        live = start.live
        try:
            self.overrides = self.overrides.fit(live.config)
        except ValueError as exc:
            raise StartupError(str(exc)) from None
        self.relay = Relay(live, overrides=self.overrides)
        self.control = RelayControl(
            self.relay,
            source="start",
            commit=start.commit,
            dirty=start.dirty,
            reason=start.reason,
            held=start.held,
            relay_loop=asyncio.get_running_loop(),
            overrides=self.overrides.to_json(),
        )
        self.audit = Audit.in_dir(live.data_dir)
        self._audit_start(start)
        self.control.on_swap = self._on_swap
        await self.relay.start()
        metrics.CONFIG_VERSION.set(live.version)
        for component in self._on("relay"):
            await component.start(self)
        if self._on("control"):
            # The SMTP loop keeps the GIL busy under load; with Python's default 5 ms switch
            # interval each GIL hand-over to the control thread (every socket read, every
            # thread hop of an apply) waits up to 5 ms. 0.5 ms keeps an apply at a few ms.
            sys.setswitchinterval(float(os.environ.get("SEALRELAY_SWITCH_INTERVAL", CONTROL_SWITCH_INTERVAL)))
            ready = asyncio.get_running_loop().create_future()
            self._control_thread = threading.Thread(
                target=self._control_main,
                args=(ready, asyncio.get_running_loop()),
                name="sealrelay-control",
                daemon=True,
            )
            self._control_thread.start()
            await ready
        # What start-up made (modules, the config, compiled policies: hundreds of thousands of
        # objects) is moved out of the collector's reach, and full collections are made rarer:
        # each apply's parsed body (tens of thousands of objects) otherwise triggered a full
        # collection over all of them every other apply, 100-200 ms of an apply's p99.
        gc.collect()
        gc.freeze()
        gc.set_threshold(700, 10, 100)
        log.info(  # once everything listens: a start that fails before this never said "serving"
            "config version %d serving (start: %s%s%s)",
            live.version,
            {
                "applied": "the config files",
                "unchanged": "the config that ran last",
                "refused": "the config that ran last",
            }[start.result],
            f", files at {start.commit[:12]}" if start.commit else "",
            ", dirty tree" if start.dirty else "",
        )

    def _on(self, plane: str) -> list[Component]:
        return [c for c in self.components if c.plane == plane]

    def _on_swap(self, live) -> None:
        for component in self.components:
            try:
                component.on_swap(live)
            except Exception:  # a component must not undo a switch that happened
                log.exception("%s: on_swap failed", component.name)

    def _control_main(self, ready: asyncio.Future, relay_loop: asyncio.AbstractEventLoop) -> None:
        """The control plane's own thread and loop: its components (admin API, metrics, watcher).

        Config changes are validated, planned and provisioned here, so an apply is answered
        promptly even while the SMTP loop is saturated; the switch itself is one reference
        assignment (or, when listeners move, a call into the SMTP loop).
        """

        async def main() -> None:
            self._control_loop = asyncio.get_running_loop()
            self._control_stop = asyncio.Event()
            started: list[Component] = []
            try:
                for component in self._on("control"):
                    await component.start(self)
                    started.append(component)
            except BaseException as exc:
                for component in reversed(started):
                    await component.stop()
                relay_loop.call_soon_threadsafe(_settle, ready, exc)
                return
            relay_loop.call_soon_threadsafe(_settle, ready, None)
            await self._control_stop.wait()
            for component in reversed(started):
                await component.stop()

        asyncio.run(main())

    async def stop(self) -> None:
        thread = getattr(self, "_control_thread", None)
        if thread is not None and thread.is_alive():
            loop = getattr(self, "_control_loop", None)
            if loop is not None:
                # a control start that failed ends its loop on its own: it may close meanwhile
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._control_stop.set)
            await asyncio.to_thread(thread.join, 15)
        for component in reversed(self._on("relay")):
            await component.stop()
        if self.relay:
            await self.relay.stop()

    async def run_forever(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully (listeners closed first, the
        deliveries in progress given time to finish, the queue closed, logs flushed).

        The handlers are installed before anything starts: the SMTP listener accepts while
        the other components still start, and a SIGTERM then must stop the relay gracefully
        once it is up, not kill it."""
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, stopping.set)
            except (NotImplementedError, RuntimeError):  # not the main thread (tests)
                pass
        try:
            await self.start()  # a start that fails half-way is stopped like a running one
            await stopping.wait()
        finally:
            await self.stop()

    # -- file reloads ---------------------------------------------------------------------

    async def reload(self) -> str | None:
        """Load the config files again and swap to them; the error, or None."""
        source = "file-watch"
        result = await asyncio.to_thread(load_config, self.path)
        if not result.ok:
            error = render_text(result.diagnostics)
            log.error("config reload refused, the running config stays: %s", render_one_line(result.diagnostics))
            self.control.note_failure(source, error)
            self._audit(source, "refused", error=error)
            return error
        before = self.relay.live.version
        if self.control.running_hash == config_hash(result.config):
            return None  # saved without a change (editors do that): nothing to swap
        commit, dirty = await asyncio.to_thread(git_provenance, self.path)
        error = await self.control.swap(result.config, source=source, commit=commit, dirty=dirty, who="file-watch")
        self._audit(source, "failed" if error else "applied", error=error, before=before, commit=commit, dirty=dirty)
        return error

    async def watch_files(self) -> None:
        """Reload when what the config's files hold changes (`watch.py`: links followed, a node
        file's base too). Editors that save by renaming a temporary file are seen (directories
        are watched, not files); saves are debounced, and one that changes nothing is ignored."""
        from watchfiles import awatch

        watched = self._watched or await asyncio.to_thread(watch.follow, self.path)
        while True:
            stop = asyncio.Event()
            directories = sorted(watched.directories)
            async for _ in awatch(
                *directories,
                debounce=WATCH_DEBOUNCE_MS,
                step=10,
                recursive=False,
                stop_event=stop,
                rust_timeout=WATCH_POLL_MS,
                yield_on_timeout=True,  # a quiet second: look anyway (a change the events missed)
            ):
                now = await asyncio.to_thread(watch.follow, self.path)
                if now.snapshot != watched.snapshot:
                    try:
                        await self.reload()
                    except Exception:  # a reload must never take the relay down
                        log.exception("config reload failed")
                moved, watched = now.directories != watched.directories, now
                if moved:
                    stop.set()  # start over on the new directories
                    break

    def _audit(
        self,
        source: str,
        result: str,
        *,
        error: str | None = None,
        before: int | None = None,
        commit: str | None = None,
        dirty: bool = False,
    ) -> None:
        version = self.relay.live.version
        self._append(
            AuditRecord(
                who="file-watch",
                from_version=before if before is not None else version,
                to_version=version,
                result=result,
                commit=commit,
                hash=self.control.running_hash,
                summary=ChangeCounts(),
                error="invalid" if result == "refused" else ("apply_failed" if error else None),
                detail=(error or "")[:2000] or None,
                reason=str(self.path),
                source=source,
                dirty=dirty,
            )
        )

    def _audit_start(self, start: startup.Start) -> None:
        """Every start is recorded: which config it serves and, when the files changed it, how."""
        held = start.held or {}
        self._append(
            AuditRecord(
                who="start",
                from_version=start.from_version,
                to_version=start.live.version,
                result=start.result,
                commit=start.commit,
                hash=self.control.running_hash,
                reason=start.reason or str(self.path),
                allow_downgrade=start.allow_downgrade,
                summary=start.summary,
                error="downgrade_refused" if start.result == "refused" else None,
                detail=held.get("reason"),
                source="start",
                dirty=start.dirty,
            )
        )

    def _append(self, record: AuditRecord) -> None:
        try:
            self.audit.append(record)
        except (OSError, ValueError) as exc:
            log.error("audit log write failed: %s", exc)


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
