"""One node's way through an Updating Run.

    pre-script -> scan (compliant: done) -> stage -> enter maintenance -> install (plug-ins in
    order) -> restart if needed -> wait for the node -> rescan for second-order updates, while
    retries remain -> exit maintenance -> fail back -> post-script

Every side effect is a *step*: its intent is journaled before acting and its outcome after. On
resume, a step with an outcome is not repeated (its recorded outcome is used), and a step with an
intent but no outcome is re-run in a way that observes first (a restart checks the boot id, an
install rescans), so nothing is done twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from cau.domain.durations import format_duration
from cau.domain.planning import Admission
from cau.domain.profile import DrainPolicy, RunProfile
from cau.domain.results import ErrorId, Status, node_status
from cau.domain.updates import HeldUpdate, Update, UpdateOutcome, UpdateResult
from cau.engine.codec import dump_held, dump_results, dump_updates, load_held, load_results, load_updates
from cau.engine.gate import MaintenanceGate, NeverAdmitted
from cau.engine.replay import NodeProgress
from cau.errors import CauError, NodeUnreachable, PluginError
from cau.ports import (
    Clock,
    ClusterProvider,
    MaintenancePrior,
    NodeSession,
    NodeUpdater,
    PluginContext,
    UpdaterPlugin,
)
from cau.redact import redact, tail
from cau.store.base import EventKind, JournalEvent

RETRY_DELAY_SECONDS = 10.0

Outcome = dict[str, Any]
Act = Callable[[dict[str, Any], bool], Awaitable[Outcome]]


@dataclass(frozen=True)
class PluginBinding:
    """A plug-in of the run with its validated arguments."""

    name: str
    plugin: UpdaterPlugin
    args: BaseModel


class RunContext(Protocol):
    """What a node's pipeline needs from the coordinator."""

    run_id: str
    cluster: str
    provider: ClusterProvider
    profile: RunProfile
    clock: Clock
    gate: MaintenanceGate
    plugins: list[PluginBinding]
    data_dir: Path

    def journal(
        self,
        kind: EventKind,
        *,
        node: str | None = None,
        step: str | None = None,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> JournalEvent: ...

    @property
    def stop_reason(self) -> ErrorId | None: ...

    def node_progress(self, node: str) -> NodeProgress: ...


class NodeFinished(Exception):
    """Ends a node's pipeline early, with the reason."""

    def __init__(self, error_id: ErrorId, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


@dataclass
class ScanOutcome:
    ok: bool
    by_plugin: dict[str, list[Update]]
    restart_pending: bool
    errors: dict[str, str]
    held: list[HeldUpdate]

    @property
    def updates(self) -> list[Update]:
        return [u for ups in self.by_plugin.values() for u in ups]

    @staticmethod
    def from_outcome(out: Outcome) -> ScanOutcome:
        return ScanOutcome(
            ok=bool(out.get("ok")),
            by_plugin={k: load_updates(v) for k, v in out.get("updates", {}).items()},
            restart_pending=bool(out.get("restart_pending")),
            errors=dict(out.get("errors", {})),
            held=[h for v in out.get("held", {}).values() for h in load_held(v)],
        )


class NodeRun:
    def __init__(self, ctx: RunContext, name: str) -> None:
        self.ctx = ctx
        self.name = name
        self.profile = ctx.profile
        self.record = ctx.node_progress(name)
        self.results: dict[str, UpdateResult] = {}  # the last result of each update
        self.attempts: dict[str, int] = {}
        self.transient: list[str] = []
        self.remaining: list[str] = []
        self.left_in_maintenance = False
        self.pending_restart = False
        self.held: list[HeldUpdate] = []  # as the node's last scan saw them
        self.exit_error: tuple[ErrorId, str] | None = None
        self._prior: MaintenancePrior | None = None
        self._session: NodeSession | None = None
        self._updaters: dict[str, NodeUpdater] = {}
        self._last_wait: str | None = None
        recorded = self.record.prior
        if recorded is not None:
            self._prior = MaintenancePrior(
                node=name,
                was_in_maintenance=bool(recorded.get("was_in_maintenance")),
                role_owners=dict(recorded.get("role_owners", {})),
                extra=dict(recorded.get("extra", {})),
            )

    # --- journal helpers ---------------------------------------------------------------------

    def _journal(self, kind: EventKind, **kw: Any) -> JournalEvent:
        return self.ctx.journal(kind, node=self.name, **kw)

    def progress(self, message: str) -> None:
        self._journal(EventKind.PROGRESS, data={"message": redact(message)})

    def warn(self, message: str) -> None:
        self.ctx.journal(EventKind.WARNING, node=self.name, data={"message": f"{self.name}: {message}"})

    def recorded(self, key: str) -> bool:
        return key in self.record.steps

    @property
    def holds_maintenance(self) -> bool:
        return self.record.maintenance_intended

    @property
    def work_started(self) -> bool:
        return any(s.step in ("install", "enter_maintenance") for s in self.record.steps.values())

    async def step(
        self,
        key: str,
        step: str,
        act: Act,
        prepare: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    ) -> Outcome:
        """Run one journaled side effect (or return its recorded outcome)."""
        rec = self.record.steps.get(key)
        if rec is not None and rec.outcome is not None:
            return rec.outcome
        resumed = rec is not None
        if rec is not None:
            intent = rec.intent
        else:
            intent = await prepare() if prepare else {}
            self._journal(EventKind.INTENT, step=step, key=key, data=intent)
        outcome = await act(intent, resumed)
        self._journal(EventKind.OUTCOME, step=step, key=key, data=outcome)
        return outcome

    def _intent_time(self, key: str) -> datetime:
        return self.record.steps[key].started

    # --- sessions and plug-ins -------------------------------------------------------------------

    async def session(self) -> NodeSession:
        if self._session is None:
            self._session = await self.ctx.provider.session(self.name)
        return self._session

    async def updater(self, binding: PluginBinding) -> NodeUpdater:
        if binding.name not in self._updaters:
            ctx = PluginContext(self.ctx.run_id, self.ctx.cluster, self.ctx.clock, self.ctx.data_dir)
            self._updaters[binding.name] = binding.plugin.create_updater(
                await self.session(), binding.args, ctx
            )
        return self._updaters[binding.name]

    # --- the pipeline --------------------------------------------------------------------------

    async def run(self) -> Status:
        if self.record.started is None:
            self._journal(EventKind.NODE_STARTED)
        error: ErrorId | None = None
        message = ""
        try:
            await self._pipeline()
        except NodeFinished as finished:
            error, message = finished.error_id, finished.message
        finally:
            # Whatever happened, this node no longer blocks others: if it is left in maintenance
            # it is down, and a down node is already counted out of quorum and capacity.
            await self.ctx.gate.release(self.name)
        succeeded = sum(1 for r in self.results.values() if r.outcome is UpdateOutcome.SUCCEEDED)
        failed = sum(1 for r in self.results.values() if r.outcome is UpdateOutcome.FAILED)
        if error is None and failed:
            error, message = ErrorId.INSTALL_FAILED, self._failure_summary()
        if error is None and self.remaining:
            error = ErrorId.UPDATES_REMAINING
            message = f"{len(self.remaining)} update(s) still applicable after all retries"
        if error is None and self.exit_error is not None:
            error, message = self.exit_error
        status = node_status(succeeded, failed, error, work_started=self.work_started)
        if status is Status.SUCCEEDED and error is not None and not message:
            message = "stopped"
        self._journal(
            EventKind.NODE_FINISHED,
            data={
                "status": status.value,
                "error_id": error.value if error else None,
                "message": message,
                "succeeded": succeeded,
                "failed": failed,
                "results": dump_results(list(self.results.values())),
                "attempts": self.attempts,
                "remaining": self.remaining,
                "transient_errors": self.transient,
                "left_in_maintenance": self.left_in_maintenance,
                "pending_restart": self.pending_restart,
                "held": dump_held(self.held),
            },
        )
        return status

    def _failure_summary(self) -> str:
        failed = [r for r in self.results.values() if r.outcome is UpdateOutcome.FAILED]
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first.title} failed: {first.message or f'code {first.error_code}'}{more}"

    def _stop_check(self) -> None:
        reason = self.ctx.stop_reason
        if reason is not None:
            raise NodeFinished(reason, "the run is stopping")

    async def _pipeline(self) -> None:
        if not self.record.steps:
            self._stop_check()
            snapshot = await self.ctx.provider.discover()
            if self.name not in snapshot.node_names or not snapshot.node(self.name).is_up:
                raise NodeFinished(ErrorId.NODE_OFFLINE, f"{self.name} is down or unreachable")
        await self._pre_script()
        finished: NodeFinished | None = None
        try:
            scan = await self._scan("scan", "scan")
            if not scan.ok:
                raise NodeFinished(ErrorId.SCAN_FAILED, "scan failed: " + "; ".join(scan.errors.values()))
            if scan.updates or scan.restart_pending:
                await self._stage(scan)
                if self.profile.drain is DrainPolicy.ALWAYS:
                    await self._enter_maintenance()
                if not any(s.step == "install" for s in self.record.steps.values()):
                    self._stop_check()
                await self._passes(scan)
            else:
                self.progress("compliant: no applicable updates")
        except NodeFinished as exc:
            finished = exc
        await self._leave_maintenance()
        # The post-script pairs with the pre-script: it runs when the node was prepared and is back.
        prepared = self.profile.pre_update_script is None or self._pre_script_succeeded()
        if self.profile.post_update_script and prepared and not self.left_in_maintenance:
            await self._post_script()
        if finished is not None:
            raise finished

    # --- scripts ---------------------------------------------------------------------------------

    def _pre_script_succeeded(self) -> bool:
        return any(s.step == "pre_script" and s.ok for s in self.record.steps.values())

    async def _script(self, key: str, step: str, script: str) -> Outcome:
        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            session = await self.session()
            env = {"CAU_RUN_ID": self.ctx.run_id, "CAU_PHASE": step, "CAU_NODE": self.name}
            try:
                result = await session.transport.run(
                    script, timeout=self.profile.script_timeout.total_seconds(), env=env
                )
            except CauError as exc:
                return {"ok": False, "message": redact(str(exc))}
            return {
                "ok": result.ok,
                "exit_status": result.exit_status,
                "stdout": tail(result.stdout),
                "stderr": tail(result.stderr),
            }

        self.progress(f"running the {step.replace('_', '-')} script")
        return await self.step(key, step, act, prepare=lambda: _const({"script": redact(script)}))

    async def _with_retries(
        self, step: str, attempt: Callable[[int], Awaitable[Outcome]], *, give_up_when_stopping: bool
    ) -> Outcome:
        """Up to max_retries_per_node + 1 attempts of one step, journaled as `step/1`, `step/2`...
        A failure that is retried is recorded as a transient error."""
        attempts = self.profile.max_retries_per_node + 1
        out: Outcome = {}
        for n in range(1, attempts + 1):
            out = await attempt(n)
            if out.get("ok") or n == attempts:
                return out
            self.transient.append(f"{step.replace('_', ' ')} attempt {n}: {_failure_text(out)}")
            if not self.recorded(f"{step}/{n + 1}"):
                if give_up_when_stopping and self.ctx.stop_reason is not None:
                    return out
                await self.ctx.clock.sleep(RETRY_DELAY_SECONDS)
        return out

    async def _retrying_script(self, step: str, script: str) -> Outcome:
        return await self._with_retries(
            step,
            lambda n: self._script(f"{step}/{n}", step, script),
            give_up_when_stopping=step == "pre_script",
        )

    async def _pre_script(self) -> None:
        script = self.profile.pre_update_script
        if not script:
            return
        out = await self._retrying_script("pre_script", script)
        if not out.get("ok"):
            raise NodeFinished(
                ErrorId.PRE_UPDATE_SCRIPT_FAILED,
                f"pre-update script failed {self.profile.max_retries_per_node + 1} time(s), "
                f"the node was not updated: {_failure_text(out)}",
            )

    async def _post_script(self) -> None:
        script = self.profile.post_update_script
        if not script:
            return
        out = await self._retrying_script("post_script", script)
        if not out.get("ok") and self.exit_error is None:
            self.exit_error = (
                ErrorId.POST_UPDATE_SCRIPT_FAILED,
                f"post-update script failed: {_failure_text(out)}",
            )

    # --- scan and stage --------------------------------------------------------------------------

    async def _scan(self, key: str, step: str) -> ScanOutcome:
        async def scan_one(binding: PluginBinding) -> tuple[str, Any]:
            try:
                result = await (await self.updater(binding)).scan()
            except CauError as exc:
                return binding.name, exc
            return binding.name, result

        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            self.progress("scanning for applicable updates")
            if self.profile.run_plugins_serially:
                pairs = []
                for binding in self.ctx.plugins:
                    pair = await scan_one(binding)
                    pairs.append(pair)
                    if isinstance(pair[1], Exception) and self.profile.stop_on_plugin_failure:
                        break
            else:
                pairs = list(await asyncio.gather(*(scan_one(b) for b in self.ctx.plugins)))
            updates: dict[str, Any] = {}
            held: dict[str, Any] = {}
            errors: dict[str, str] = {}
            restart_pending = False
            for name, result in pairs:
                if isinstance(result, Exception):
                    errors[name] = redact(str(result))
                else:
                    updates[name] = dump_updates(result.updates)
                    if result.held:
                        held[name] = dump_held(result.held)
                    restart_pending = restart_pending or result.restart_pending
            out: Outcome = {
                "ok": bool(updates),
                "updates": updates,
                "restart_pending": restart_pending,
                "errors": errors,
                "held": held,
                "count": sum(len(v) for v in updates.values()),
            }
            if not updates:
                out["error_id"] = ErrorId.SCAN_FAILED.value
            return out

        outcome = ScanOutcome.from_outcome(await self.step(key, step, act))
        if outcome.ok:
            self.held = outcome.held
        for plugin, error in outcome.errors.items():
            if outcome.ok:
                self.warn(f"the {plugin} plug-in could not scan: {error}")
        return outcome

    async def _stage(self, scan: ScanOutcome) -> None:
        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            total = len(scan.updates)
            self.progress(f"downloading {total} update(s) before draining")
            failures: list[str] = []
            for binding in self.ctx.plugins:
                ups = scan.by_plugin.get(binding.name) or []
                if not ups:
                    continue
                try:
                    staged = await (await self.updater(binding)).stage(ups)
                except CauError as exc:
                    failures.append(f"{binding.name}: {redact(str(exc))}")
                    continue
                failures += [f"{s.update_id}: {s.message}" for s in staged if not s.ok]
            return {"ok": not failures, "failures": failures}

        out = await self.step("stage", "stage", act)
        if not out.get("ok"):
            # Not fatal: install downloads what staging could not, only the drained window grows.
            self.warn("staging incomplete: " + "; ".join(out.get("failures", [])))

    # --- maintenance -----------------------------------------------------------------------------

    def on_gate_wait(self, admission: Admission) -> None:
        if admission.reason != self._last_wait:
            self._last_wait = admission.reason
            self._journal(
                EventKind.WAITING,
                data={
                    "reason": admission.reason,
                    "block": admission.block.value if admission.block else None,
                },
            )

    def _drained(self) -> bool:
        """In maintenance by cau right now: the last drain succeeded and nothing undid it."""
        last = [s for s in self.record.steps.values() if s.step == "enter_maintenance"]
        return self.holds_maintenance and bool(last) and last[-1].ok

    async def _enter_maintenance(self) -> None:
        if self._drained():
            return
        if self.holds_maintenance:
            self.ctx.gate.hold(self.name)  # resumed mid-drain: it holds maintenance already
        provider = self.ctx.provider
        move = self.profile.move

        async def observe_prior() -> dict[str, Any]:
            prior = await provider.maintenance_prior(self.name)
            self._prior = prior
            return {
                "move": move.value,
                "prior": {
                    "was_in_maintenance": prior.was_in_maintenance,
                    "role_owners": prior.role_owners,
                    "extra": prior.extra,
                },
            }

        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            self.progress(
                f"entering maintenance ({'moving roles off' if move.value == 'live' else 'saving roles'})"
            )
            assert self._prior is not None  # observed (or replayed) with the first attempt's intent
            try:
                await provider.enter_maintenance(self.name, move, self._prior)
            except CauError as exc:
                return _failed(ErrorId.MAINTENANCE_ENTER_FAILED, exc)
            return {"ok": True}

        # Each attempt is admitted afresh by the gate (quorum, capacity, health, and what the
        # cluster manager says the drain would do); a failed attempt is undone before the next.
        attempts = self.profile.max_retries_per_node + 1
        out: Outcome = {}
        for n in range(1, attempts + 1):
            key = f"enter_maintenance/{n}"
            rec = self.record.steps.get(key)
            if rec is not None and rec.outcome is not None:
                out = rec.outcome  # replayed: no admission for what already happened
            else:
                prepare = observe_prior if self._prior is None else _prior_ref
                try:
                    async with self.ctx.gate.draining(self.name):
                        out = await self.step(key, "enter_maintenance", act, prepare=prepare)
                except NeverAdmitted as exc:
                    await self._leave_maintenance()  # what an earlier attempt moved comes back
                    raise NodeFinished(exc.block.error_id, f"cannot enter maintenance: {exc}") from None
            if out.get("ok"):
                return
            self.transient.append(f"enter maintenance attempt {n}: {_failure_text(out)}")
            next_key = f"enter_maintenance/{n + 1}"
            stopping = self.ctx.stop_reason is not None and not self.recorded(next_key)
            if n == attempts or stopping or not await self._undo_drain(n):
                break
            if not self.recorded(next_key):
                await self.ctx.clock.sleep(RETRY_DELAY_SECONDS)
        # Could not drain: undo what a partial drain did (exit maintenance, bring moved roles back).
        await self._leave_maintenance()
        raise NodeFinished(
            ErrorId.MAINTENANCE_ENTER_FAILED, f"could not enter maintenance: {out.get('message')}"
        )

    async def _undo_drain(self, attempt: int) -> bool:
        """After a failed drain, leave maintenance before the next attempt: nothing the drain
        stopped stays stopped while cau waits, and the next attempt is admitted on the cluster
        as it is then. False when the node could not leave (it then still holds maintenance)."""
        provider = self.ctx.provider
        prior = self._prior or MaintenancePrior(self.name, was_in_maintenance=False)

        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            self.progress("leaving maintenance before the next attempt")
            try:
                await provider.exit_maintenance(self.name, prior)
            except CauError as exc:
                return _failed(ErrorId.MAINTENANCE_EXIT_FAILED, exc)
            return {"ok": True, "undo": attempt}

        async with self.ctx.gate.leaving(self.name):
            out = await self.step(f"exit_maintenance/undo-{attempt}", "exit_maintenance", act)
        if not out.get("ok"):
            self.ctx.gate.hold(self.name)  # still in maintenance: it still counts as down
            return False
        return True

    def _failback_done(self) -> bool:
        rec = self.record.steps.get("failback")
        return rec is not None and rec.done

    async def _leave_maintenance(self) -> None:
        """Undo cau's maintenance: leave it (unless already left), then fail roles back (unless
        done). A failback a killed coordinator began is finished by the next one."""
        if self.left_in_maintenance or not any(
            s.step == "enter_maintenance" for s in self.record.steps.values()
        ):
            return
        provider = self.ctx.provider
        prior = self._prior or MaintenancePrior(self.name, was_in_maintenance=False)
        if self.holds_maintenance:
            if await provider.boot_id(self.name) is None:
                self.left_in_maintenance = True
                self.warn(
                    "is down and stays in maintenance (cau put it there and recorded its prior "
                    f"state); once it is back, `cau node resume {self.ctx.cluster} {self.name}` "
                    "takes it out"
                )
                return
            # Leaving and failing back move roles: hold the gate so no drain is planned meanwhile.
            async with self.ctx.gate.leaving(self.name):
                if await self._exit(prior):
                    await self._failback(prior)
        elif not self._failback_done():
            async with self.ctx.gate.leaving(self.name):
                await self._failback(prior)

    async def _exit(self, prior: MaintenancePrior) -> bool:
        provider = self.ctx.provider

        async def exit_act(intent: dict[str, Any], resumed: bool) -> Outcome:
            self.progress("leaving maintenance")
            try:
                await provider.exit_maintenance(self.name, prior)
            except CauError as exc:
                return _failed(ErrorId.MAINTENANCE_EXIT_FAILED, exc)
            return {"ok": True, "left_as_before": prior.was_in_maintenance}

        out = await self._with_retries(
            "exit_maintenance",
            lambda n: self.step(f"exit_maintenance/{n}", "exit_maintenance", exit_act),
            give_up_when_stopping=False,  # never abandon a node in maintenance because of a stop
        )
        if out.get("ok"):
            return True
        self.left_in_maintenance = True
        self.exit_error = (
            ErrorId.MAINTENANCE_EXIT_FAILED,
            f"could not leave maintenance: {out.get('message')}",
        )
        self.warn(
            f"stays in maintenance: {out.get('message')}; "
            f"`cau node resume {self.ctx.cluster} {self.name}` retries"
        )
        return False

    async def _failback(self, prior: MaintenancePrior) -> None:
        provider = self.ctx.provider

        async def failback_act(intent: dict[str, Any], resumed: bool) -> Outcome:
            mode = self.profile.failback_mode
            if mode.value != "none":
                self.progress(f"failing roles back ({mode.value})")
            try:
                moved = await provider.failback(self.name, prior, mode)
            except CauError as exc:
                return _failed(ErrorId.FAILBACK_FAILED, exc)
            return {"ok": True, "moved": moved}

        fb = await self.step(
            "failback",
            "failback",
            failback_act,
            prepare=lambda: _const({"mode": self.profile.failback_mode.value}),
        )
        if not fb.get("ok"):
            self.transient.append(f"failback: {fb.get('message')}")
            self.warn(f"roles were not failed back: {fb.get('message')}")

    # --- install, restart, rescan ----------------------------------------------------------------

    async def _passes(self, scan: ScanOutcome) -> None:
        pending = scan.by_plugin
        restart_pending = scan.restart_pending and not self.profile.no_restart
        if scan.restart_pending and self.profile.no_restart:
            self.pending_restart = True
        max_passes = self.profile.max_retries_per_node + 1
        pass_no = 1
        while True:
            needs_restart = await self._install_pass(pass_no, pending) or restart_pending
            if needs_restart:
                if self.profile.no_restart:
                    self.pending_restart = True
                else:
                    await self._enter_maintenance()
                    await self._restart(f"restart/{pass_no}")
            rescan = await self._scan(f"rescan/{pass_no}", "rescan")
            if not rescan.ok:
                self.warn("rescan failed; second-order updates, if any, were not looked for")
                return
            pending = rescan.by_plugin
            restart_pending = rescan.restart_pending and not self.profile.no_restart
            if not rescan.updates and not restart_pending:
                return
            next_key = f"install/{pass_no + 1}/"
            resuming_next = any(k.startswith(next_key) for k in self.record.steps)
            if pass_no >= max_passes or (self.ctx.stop_reason is not None and not resuming_next):
                self.remaining = [u.id for u in rescan.updates]
                if self.ctx.stop_reason is None:
                    self.warn(f"{len(self.remaining)} update(s) still applicable after {pass_no} pass(es)")
                return
            pass_no += 1
            self.progress(f"pass {pass_no}: {len(rescan.updates)} more update(s) (second-order or retried)")

    async def _install_pass(self, pass_no: int, pending: dict[str, list[Update]]) -> bool:
        """Install with each plug-in in order; returns whether a restart is (still) needed."""
        needs_restart = False
        for binding in self.ctx.plugins:
            ups = pending.get(binding.name) or []
            if not ups:
                continue
            key = f"install/{pass_no}/{binding.name}"
            intent = {"plugin": binding.name, "pass": pass_no, "updates": dump_updates(ups)}
            out = await self.step(key, "install", self._install_act(binding), prepare=partial(_const, intent))
            results = load_results(out.get("results"))
            for r in results:
                self.results[r.update_id] = r
                self.attempts[r.update_id] = self.attempts.get(r.update_id, 0) + 1
                if r.outcome is UpdateOutcome.FAILED and pass_no <= self.profile.max_retries_per_node:
                    self.transient.append(
                        f"{r.title}: {r.message or f'code {r.error_code}'} (pass {pass_no})"
                    )
            plugin_failed = out.get("error_id") == ErrorId.PLUGIN_FAILED.value
            if plugin_failed:
                self.transient.append(f"{binding.name} plug-in: {out.get('message')}")
                self.warn(f"the {binding.name} plug-in failed: {out.get('message')}")
            restart_here = any(r.restart_required for r in results)
            if restart_here and self.profile.separate_reboots and not self.profile.no_restart:
                await self._enter_maintenance()
                await self._restart(f"restart/{pass_no}/{binding.name}")
            else:
                needs_restart = needs_restart or restart_here
            if self.profile.stop_on_plugin_failure and (plugin_failed or not out.get("ok")):
                self.warn(
                    f"stop_on_plugin_failure: the plug-ins after {binding.name} are skipped on this node"
                )
                break
        return needs_restart

    def _install_act(self, binding: PluginBinding) -> Act:
        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            updates = load_updates(intent.get("updates"))
            observed: list[UpdateResult] = []
            try:
                updater = await self.updater(binding)
                if resumed:
                    # The coordinator stopped mid-install: install only what is still applicable.
                    still = {u.id for u in (await updater.scan()).updates}
                    now = self.ctx.clock.now()
                    observed = [
                        UpdateResult(
                            u.id,
                            u.title,
                            u.plugin,
                            UpdateOutcome.SUCCEEDED,
                            restart_required=u.needs_restart,
                            message="installed (observed after the coordinator restarted)",
                            started=now,
                            finished=now,
                        )
                        for u in updates
                        if u.id not in still
                    ]
                    updates = [u for u in updates if u.id in still]
                results = await updater.install(updates, self.progress) if updates else []
            except (PluginError, NodeUnreachable, CauError) as exc:
                return _failed(ErrorId.PLUGIN_FAILED, exc, results=dump_results(observed))
            every = observed + list(results)
            return {
                "ok": all(r.outcome is UpdateOutcome.SUCCEEDED for r in every),
                "results": dump_results(every),
            }

        return act

    async def _restart(self, key: str) -> None:
        provider = self.ctx.provider
        timeout = self.profile.reboot_timeout.total_seconds()

        async def prepare() -> dict[str, Any]:
            return {"boot_id": await provider.boot_id(self.name)}

        async def act(intent: dict[str, Any], resumed: bool) -> Outcome:
            old = intent.get("boot_id")
            try:
                if resumed:
                    current = await provider.boot_id(self.name)
                    if current is not None and current != old:
                        return {"ok": True, "boot_id": current, "previous_boot_id": old, "observed": True}
                    if current is not None:
                        await provider.restart(self.name)  # the first restart never happened
                else:
                    self.progress("restarting")
                    await provider.restart(self.name)
            except CauError as exc:
                return _failed(ErrorId.RESTART_FAILED, exc)
            elapsed = (self.ctx.clock.now() - self._intent_time(key)).total_seconds()
            left = max(timeout - elapsed, 1.0)
            self.progress(f"waiting for {self.name} to come back (reboot timeout {timeout / 60:g} min)")
            try:
                new = await provider.wait_ready(self.name, previous_boot_id=old, timeout=left)
            except NodeUnreachable:
                return {
                    "ok": False,
                    "error_id": ErrorId.NODE_DID_NOT_RETURN.value,
                    "message": f"{self.name} did not come back within the reboot timeout "
                    f"({format_duration(timeout)}) after its restart",
                }
            return {"ok": True, "boot_id": new, "previous_boot_id": old}

        out = await self.step(key, "restart", act, prepare=prepare)
        if not out.get("ok"):
            raise NodeFinished(ErrorId(out["error_id"]), str(out.get("message")))


async def _const(value: dict[str, Any]) -> dict[str, Any]:
    return value


async def _prior_ref() -> dict[str, Any]:
    return {"prior_from": "enter_maintenance/1"}


def _failed(error_id: ErrorId, exc: Exception, **extra: Any) -> Outcome:
    """The outcome of a step whose action raised: a result for the journal, not a crash."""
    return {"ok": False, "error_id": error_id.value, "message": redact(str(exc)), **extra}


def _failure_text(out: Outcome) -> str:
    if "exit_status" in out:
        detail = (out.get("stderr") or out.get("stdout") or "").strip().splitlines()
        return f"exit status {out['exit_status']}" + (f": {detail[-1]}" if detail else "")
    return str(out.get("message", "failed"))
