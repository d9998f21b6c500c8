"""The relay's side of the admin API (`engine.admin.contract.Control`): plan, apply, status.

Apply is level-based and idempotent (controller-runtime): the desired config is validated
in full, planned against the running one, judged by the downgrade guard, then provisioned
(certificate, TLS contexts, DLP matcher — everything derived) *before* one reference swap.
A failure anywhere leaves the running config untouched and is reported as a value. The
same swap serves file reloads (`serve --watch`), which skip the guard: editing the file is
the admin's own act, and the audit log records it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, replace

from engine.admin.contract import (
    ApplyRequest,
    ApplyResult,
    ChangeCounts,
    ErrorCode,
    PlanResult,
    Reload,
    RunningConfig,
    Status,
)
from engine.config.diagnostics import has_errors, to_json
from engine.config.load import validate_data
from engine.config.model import RelayConfig
from engine.config.semantic import run_checks
from engine.plan.build import make_plan
from engine.plan.change import Plan
from engine.plan.diff import document
from engine.relay.runtime import metrics
from engine.relay.runtime import state as relay_state
from engine.relay.runtime.live import Live, provision

log = logging.getLogger(__name__)


class RelayControl:
    """Plans and applies configs for one `Relay`; `swap` is the relay's (listeners move too).

    Constructing it records the start: the config the relay starts with becomes the running
    record (the drift base too, on a first start with no state); `held` is a change refused
    at start (a loosening without --allow-downgrade), which `status` reports.
    """

    def __init__(
        self,
        relay,
        *,
        source: str = "start",
        commit: str | None = None,
        dirty: bool = False,
        who: str = "start",
        reason: str | None = None,
        held: dict | None = None,
        relay_loop: asyncio.AbstractEventLoop | None = None,
        overrides: dict[str, str] | None = None,
    ) -> None:
        self.relay = relay
        self.overrides = overrides or {}  # `serve --listen`: where this process binds instead of the config
        self.relay_loop = relay_loop  # the loop the SMTP side runs in, when this control runs in another
        self.started = time.time()
        self.last_reload: Reload | None = None
        self.held = held
        self.on_swap = None  # called with the new Live after every switch (the service's components)
        self._lock = asyncio.Lock()
        live = relay.live
        known = relay_state.load(live.data_dir)
        start = document(live.config)
        digest = start.hash
        if known.running is not None and known.running.hash == digest:
            # the same config as before the restart: no change, only the version moves on
            self.state = replace(known, version=live.version, base_dir=str(live.base_dir))
            relay_state.save(live.data_dir, self.state)
        else:
            change = relay_state.Change(live.version, digest, source, commit, dirty, who, time.time(), reason)
            first = known.applied is None  # a first start: the config it starts with is the baseline
            self.state = relay_state.record(
                live.data_dir, known, change, start.text, reviewed=first, base_dir=live.base_dir
            )
        self._applied_config = relay_state.load_applied(live.data_dir)
        self._applied_model: RelayConfig | None = None  # `_applied_config` validated, when drift needs it

    # -- snapshots ---------------------------------------------------------------------

    def running(self) -> RunningConfig:
        live = self.relay.live
        run = self.state.running
        return RunningConfig(
            live.version,
            document(live.config).data,  # computed once per config; the API only serialises it
            run.hash,
            run.commit,
            run.at,
            run.source,
            last_applied=self._applied_config if self.drift() else None,
            dirty=run.dirty,
            who=run.who,
            applied=asdict(self.state.applied) if self.state.applied else None,
        )

    def portal_events(self, since: float, address: str | None, event: str | None, limit: int) -> list[dict] | None:
        from engine.portal.service import running

        service = running(self.relay.live.data_dir)
        if service is None:
            return None
        return service.store.audit_events(since=since, address=address, event=event, limit=limit)

    def status(self) -> Status:
        live = self.relay.live
        listeners = tuple(
            {"name": lst.name, "address": lst.address, "port": lst.port, "starttls": lst.starttls}
            for lst in live.config.system.listeners
        )
        return Status(
            live.version,
            self.last_reload,
            time.time() - self.started,
            self.relay.queue_counts(),
            listeners,
            self.held,
            dict(self.overrides),
            destinations=tuple(self.relay.deliverer.snapshot()),
        )

    @property
    def running_hash(self) -> str:
        """The running config's hash, without building the whole `running()` snapshot."""
        return self.state.running.hash

    def drift(self) -> bool:
        """The running config is not the one the last reviewed change set."""
        return self.state.drift and self._applied_config is not None

    # -- plan and apply ----------------------------------------------------------------

    def _validate(self, desired: dict) -> tuple[RelayConfig | None, list[dict]]:
        config, diags = validate_data(desired)
        if config is not None:
            diags = diags + run_checks(config, base_dir=self.relay.live.base_dir, check_files=True)
        if config is None or has_errors(diags):
            return None, [to_json(d) for d in diags]
        return config, []

    def _plan(self, config: RelayConfig) -> Plan:
        live = self.relay.live
        applied = self._last_applied() if self.drift() else None
        return make_plan(
            config,
            live.config,
            base_version=live.version,
            last_applied=applied,
            base_label=f"relay version {live.version}",
        )

    def _last_applied(self) -> RelayConfig | dict | None:
        """The last reviewed config, read back through the models once (not at every plan)."""
        if self._applied_model is None and self._applied_config is not None:
            model, _ = validate_data(self._applied_config)
            self._applied_model = model
        return self._applied_model if self._applied_model is not None else self._applied_config

    async def plan(self, desired: dict) -> PlanResult:
        version = self.relay.live.version
        config, diagnostics = await asyncio.to_thread(self._validate, desired)
        if config is None:
            return PlanResult(
                False, version, error=ErrorCode.INVALID, detail="the desired config is invalid", diagnostics=diagnostics
            )
        plan = self._plan(config)
        warnings = await self._dead_route_warnings(config)
        if warnings:
            plan = replace(plan, warnings=tuple(warnings))
        return PlanResult(True, version, plan.to_dict(), _summary(plan))

    async def _dead_route_warnings(self, config: RelayConfig) -> list[str]:
        """Queued mail the change would route to a destination that is dead now (the
        scheduler's state); reading the queue's recipients happens only if one is dead."""
        from engine.relay.delivery.destinations import moved_to_dead

        table = self.relay.deliverer.destinations
        if not any(d.dead_until is not None for d in table):
            return []
        queued = await self.relay.queue.open_by_domain()
        return moved_to_dead(config, self.relay.live.config, queued, table)

    async def apply(self, request: ApplyRequest, who: str) -> ApplyResult:
        async with self._lock:
            version = self.relay.live.version
            if request.base_version != version:
                return ApplyResult.refused(
                    ErrorCode.STALE_BASE,
                    f"planned against version {request.base_version}, running {version}",
                    version=version,
                )
            # Validation, plan, guard and provisioning in one trip off the event loop: under
            # SMTP load every hop back to the loop waits for a whole loop iteration.
            outcome = await asyncio.to_thread(self._prepare, request, version)
            if isinstance(outcome, ApplyResult):
                return outcome
            config, summary, live = outcome
            if live is None:
                return ApplyResult(True, version, version, changed=False, summary=summary)
            error = await self._switch(
                live, config, source="api", commit=request.commit, dirty=request.dirty, who=who, reason=request.reason
            )
            if error:
                return ApplyResult.refused(ErrorCode.APPLY_FAILED, error, version=version, summary=summary)
            return ApplyResult(True, self.relay.live.version, version, changed=True, summary=summary)

    def _prepare(self, request: ApplyRequest, version: int):
        """Validate, plan, judge and provision (in a worker thread): a refusal, or
        (config, summary, provisioned Live or None when nothing changes)."""
        config, diagnostics = self._validate(request.config)
        if config is None:
            return ApplyResult.refused(
                ErrorCode.INVALID, "the desired config is invalid", version=version, diagnostics=diagnostics
            )
        plan = self._plan(config)
        summary = _summary(plan)
        if request.plan_hash and request.plan_hash != plan.desired_hash:
            return ApplyResult.refused(
                ErrorCode.PLAN_MISMATCH, "the config differs from the saved plan's", version=version, summary=summary
            )
        if plan.loosenings and not request.allow_downgrade:
            why = "; ".join(f"{c.address}: {c.reason}" for c in plan.loosenings[:5])
            return ApplyResult.refused(
                ErrorCode.DOWNGRADE_REFUSED, f"the plan loosens protection: {why}", version=version, summary=summary
            )
        if not plan.has_changes:
            return config, summary, None
        moved = self._restart_needed(config)
        if moved:
            return ApplyResult.refused(ErrorCode.APPLY_FAILED, moved, version=version, summary=summary)
        old = self.relay.live
        try:
            live = provision(config, base_dir=old.base_dir, version=old.version + 1, previous=old)
        except Exception as exc:  # the old config keeps serving
            self.last_reload = Reload(time.time(), False, "api", f"{type(exc).__name__}: {exc}")
            return ApplyResult.refused(ErrorCode.APPLY_FAILED, str(exc), version=version, summary=summary)
        return config, summary, live

    async def swap(
        self, config: RelayConfig, *, source: str, commit: str | None = None, dirty: bool = False, who: str = ""
    ) -> str | None:
        """Provision `config` as the next version and switch to it; the error, or None.

        Serialised with `apply` (one lock, one version counter): two changes can never both
        become the same version, and the last one reported applied is the one running."""
        async with self._lock:
            error = self._restart_needed(config)
            if error:
                log.error("config %s not applied: %s", source, error)
                self.last_reload = Reload(time.time(), False, source, error)
                return error
            old = self.relay.live
            try:
                live: Live = await asyncio.to_thread(
                    provision, config, base_dir=old.base_dir, version=old.version + 1, previous=old
                )
            except Exception as exc:  # the old config keeps serving
                log.error("config %s not applied: %s", source, exc)
                self.last_reload = Reload(time.time(), False, source, f"{type(exc).__name__}: {exc}")
                return str(exc)
            return await self._switch(live, config, source=source, commit=commit, dirty=dirty, who=who)

    def _restart_needed(self, config: RelayConfig) -> str | None:
        """Why `config` cannot be switched to while running, or None. The queue, its lock and
        every queued message live in the data directory: moving it needs a restart."""
        live = self.relay.live
        if (live.base_dir / config.system.data_dir).resolve() != live.data_dir:
            return f"system.data_dir cannot change while the relay runs ({live.data_dir} holds the queue): restart the relay"
        return None

    async def _switch(
        self,
        live: Live,
        config: RelayConfig,
        *,
        source: str,
        commit: str | None,
        who: str,
        dirty: bool = False,
        reason: str | None = None,
    ) -> str | None:
        started = time.perf_counter()
        try:
            await self._relay_switch(live)
        except Exception as exc:  # a listener could not be bound: the old config keeps serving
            log.error("config %s not applied: %s", source, exc)
            self.last_reload = Reload(time.time(), False, source, f"{type(exc).__name__}: {exc}")
            return str(exc)
        now = time.time()
        made = document(config)  # planned already: its canonical JSON, bytes and hash are known
        change = relay_state.Change(live.version, made.hash, source, commit, dirty, who, now, reason)
        reviewed = source == "api"  # what an apply sets; a file reload that differs from it is drift
        self.state = relay_state.record(live.data_dir, self.state, change, made.text, reviewed=reviewed)
        if reviewed:
            self._applied_config, self._applied_model = made.data, config
        self.held = None  # a change refused at start is superseded by any change that went through
        self.last_reload = Reload(now, True, source)
        metrics.SWAPS.labels(source, "applied").inc()
        if self.on_swap is not None:
            self.on_swap(live)
        log.info(
            "config version %d serving (%s%s) after %.1f ms",
            live.version,
            source,
            f", by {who}" if who else "",
            (time.perf_counter() - started) * 1000,
        )
        return None

    async def _relay_switch(self, live: Live) -> None:
        """Switch the relay to `live` from whichever loop this control runs in.

        The common case — the same listeners — is one reference assignment, atomic in Python,
        done right here; binding or closing listeners must happen in the relay's own loop.
        """
        loop = self.relay_loop
        if loop is None or loop is asyncio.get_running_loop():
            await self.relay.switch(live)
            return
        same = self.relay.addresses(live) == self.relay.addresses(self.relay.live)
        if same:
            self.relay.runtime.swap(live)
            loop.call_soon_threadsafe(self.relay.deliverer.kick)
            return
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.relay.switch(live), loop))

    def note_failure(self, source: str, error: str) -> None:
        self.last_reload = Reload(time.time(), False, source, error)
        metrics.SWAPS.labels(source, "refused").inc()


def _summary(plan: Plan) -> ChangeCounts:
    s = plan.summary
    return ChangeCounts(s.add, s.change, s.destroy, s.loosening)
