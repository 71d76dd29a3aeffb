"""One node's way through an Updating Run.

    pre-script -> scan (compliant: done) -> stage -> enter maintenance -> install (plug-ins in
    order) -> restart if needed -> wait for the node -> rescan for second-order updates, while
    retries remain -> exit maintenance -> fail back -> post-script

Every side effect is a *step*: its intent is journaled before acting and its outcome after (the
models of cau.journal.events). On resume, a step with an outcome is not repeated (its recorded
outcome is used), and a step with an intent but no outcome is re-run in a way that observes first
(a restart checks the boot id, an install rescans), so nothing is done twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeVar

from pydantic import BaseModel

from cau.domain.durations import format_duration
from cau.domain.planning import Admission
from cau.domain.profile import DrainPolicy, MoveMethod, RunProfile
from cau.domain.results import ErrorId, Status, node_status
from cau.domain.updates import HeldUpdate, Update, UpdateOutcome, UpdateResult
from cau.engine.gate import MaintenanceGate, NeverAdmitted, OutsideWindow
from cau.engine.scan import scan_plugins
from cau.errors import AuthError, CauError, HostKeyError, is_retryable
from cau.journal.events import (
    EnterIntent,
    EnterOutcome,
    EventPayload,
    ExitIntent,
    ExitOutcome,
    FailbackIntent,
    FailbackOutcome,
    InstallIntent,
    InstallOutcome,
    JournalEvent,
    NodeFinished,
    NodeStarted,
    PriorRecord,
    Progress,
    RestartIntent,
    RestartOutcome,
    ScanIntent,
    ScanOutcome,
    ScriptIntent,
    ScriptOutcome,
    StageIntent,
    StageOutcome,
    Step,
    StepIntent,
    StepOutcome,
    Waiting,
    WarningEvent,
)
from cau.journal.progress import NodeProgress
from cau.ports import (
    Clock,
    ClusterProvider,
    FollowsPlacement,
    MaintenancePrior,
    NodeSession,
    NodeUpdater,
    PluginContext,
    ReportsMoves,
    UpdaterPlugin,
)
from cau.redact import redact, tail

RETRY_DELAY_SECONDS = 10.0

# A node that refuses cau, whatever step meets it: cau must not use it (a host key not the one
# recorded) or cannot (a refused login) until an operator acts, so it fails at once, and says so.
REFUSALS: dict[type[CauError], ErrorId] = {
    HostKeyError: ErrorId.HOST_KEY_REJECTED,
    AuthError: ErrorId.LOGIN_REFUSED,
}

IntentT = TypeVar("IntentT", bound=StepIntent)
OutcomeT = TypeVar("OutcomeT", bound=StepOutcome)
T = TypeVar("T", bound=BaseModel)
# the step outcomes that carry role moves (cau.ports.ReportsMoves)
_MovesOutcome = TypeVar("_MovesOutcome", EnterOutcome, ExitOutcome, FailbackOutcome)


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
    secrets: Mapping[str, str]  # the cluster's secrets: environment of scripts and plug-ins

    async def journal(self, payload: EventPayload, *, node: str | None = None) -> JournalEvent:
        """A side effect's record: durable when it returns."""
        ...

    def note(self, payload: EventPayload, *, node: str | None = None) -> None:
        """What is not a side effect (progress, warnings): journaled in order, not waited for."""
        ...

    @property
    def stop_reason(self) -> ErrorId | None: ...

    def node_progress(self, node: str) -> NodeProgress: ...

    async def take_turn(self, node: str) -> None:
        """Wait until `node` may do more than read: a node started ahead of its turn (its scan
        and staging while the node before it restarts) waits here for a place among
        `max_parallel_nodes` and the failure budget's check; at once for any other."""
        ...


class NodeEnd(Exception):
    """Ends a node's pipeline early, with the reason."""

    def __init__(self, error_id: ErrorId, message: str) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message


def prior_record(prior: MaintenancePrior) -> PriorRecord:
    return PriorRecord(
        was_in_maintenance=prior.was_in_maintenance, role_owners=prior.role_owners, extra=prior.extra
    )


def prior_from_record(node: str, record: PriorRecord | None) -> MaintenancePrior:
    if record is None:
        return MaintenancePrior(node, was_in_maintenance=False)
    return MaintenancePrior(
        node=node,
        was_in_maintenance=record.was_in_maintenance,
        role_owners=dict(record.role_owners),
        extra=dict(record.extra),
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
        self._session: NodeSession | None = None
        self._updaters: dict[str, NodeUpdater] = {}
        self._last_wait: str | None = None
        recorded = self.record.prior
        self._prior: MaintenancePrior | None = (
            prior_from_record(name, recorded) if recorded is not None else None
        )

    # --- journal helpers ---------------------------------------------------------------------

    async def _journal(self, payload: EventPayload) -> JournalEvent:
        return await self.ctx.journal(payload, node=self.name)

    def progress(self, message: str) -> None:
        self.ctx.note(Progress(message=redact(message)), node=self.name)

    def warn(self, message: str) -> None:
        self.ctx.note(WarningEvent(message=f"{self.name}: {message}"), node=self.name)

    def recorded(self, key: str) -> bool:
        return key in self.record.steps

    @property
    def holds_maintenance(self) -> bool:
        return self.record.maintenance_intended

    @property
    def work_started(self) -> bool:
        return self.record.has_step(Step.INSTALL, Step.ENTER_MAINTENANCE)

    async def step(
        self,
        key: str,
        intent_type: type[IntentT],
        outcome_type: type[OutcomeT],
        prepare: Callable[[], Awaitable[IntentT]],
        act: Callable[[IntentT, bool], Awaitable[OutcomeT]],
    ) -> OutcomeT:
        """Run one journaled side effect (or return its recorded outcome). `act` gets the intent
        and whether it is resumed (an intent journaled by a coordinator that died before the
        outcome: observe before acting again)."""
        rec = self.record.steps.get(key)
        if rec is not None and rec.outcome is not None:
            return _expect(rec.outcome, outcome_type, key)
        if rec is not None:
            intent = _expect(rec.intent, intent_type, key)
        else:
            intent = await prepare()
            await self._journal(intent)
        outcome = await act(intent, rec is not None)
        await self._journal(outcome)
        return outcome

    def _intent_time(self, key: str) -> datetime:
        return self.record.steps[key].started

    @contextlib.contextmanager
    def _refusal_ends_node(self, what: str) -> Iterator[None]:
        """Around what a step observes of this node before acting: the node refusing cau ends the
        node (not the run); any other error goes on up as before."""
        try:
            yield
        except CauError as exc:
            error_id = refusal(exc)
            if error_id is None:
                raise
            raise NodeEnd(error_id, f"{what}: {_with_hint(exc)}") from exc

    # --- sessions and plug-ins -------------------------------------------------------------------

    async def session(self) -> NodeSession:
        if self._session is None:
            self._session = await self.ctx.provider.session(self.name)
        return self._session

    async def updater(self, binding: PluginBinding) -> NodeUpdater:
        if binding.name not in self._updaters:
            ctx = PluginContext(
                self.ctx.run_id, self.ctx.cluster, self.ctx.clock, self.ctx.data_dir, self.ctx.secrets
            )
            self._updaters[binding.name] = binding.plugin.create_updater(
                await self.session(), binding.args, ctx
            )
        return self._updaters[binding.name]

    # --- the pipeline --------------------------------------------------------------------------

    async def run(self) -> Status | None:
        """The node's pipeline to its end: its status. None: the run's maintenance window closed
        before the node entered maintenance; it is not finished and resumes where it stopped."""
        if self.record.started is None:
            await self._journal(NodeStarted())
        error: ErrorId | None = None
        message = ""
        try:
            await self._pipeline()
        except NodeEnd as finished:
            error, message = finished.error_id, finished.message
        except OutsideWindow as closed:
            # Raised only before the gate admits the node: nothing of it is in maintenance.
            self.progress(f"waiting for the next maintenance window: {closed}")
            return None
        finally:
            # Whatever happened, this node no longer blocks others: if it is left in maintenance
            # it is down, and a down node is already counted out of quorum and capacity.
            await self.ctx.gate.release(self.name)
        succeeded = sum(1 for r in self.results.values() if r.outcome is UpdateOutcome.SUCCEEDED)
        failed = sum(1 for r in self.results.values() if r.outcome is UpdateOutcome.FAILED)
        if error is None and failed:
            error, message = ErrorId.INSTALL_FAILED, self._failure_summary()
        if error is None and self.remaining and self.ctx.stop_reason is not None:
            # the run was stopped between passes: say so, not "after all retries"
            error = self.ctx.stop_reason
            message = (
                f"the run was stopped with {len(self.remaining)} update(s) still to install here: "
                + ", ".join(self.remaining)
            )
        if error is None and self.remaining:
            error = ErrorId.UPDATES_REMAINING
            message = f"{len(self.remaining)} update(s) still applicable after all retries"
        if error is None and self.exit_error is not None:
            error, message = self.exit_error
        status = node_status(
            succeeded, failed, error, work_started=self.work_started, remaining=len(self.remaining)
        )
        if status is Status.SUCCEEDED and error is not None and not message:
            message = "stopped"
        await self._journal(
            NodeFinished(
                status=status,
                error_id=error,
                message=message,
                succeeded=succeeded,
                failed=failed,
                results=list(self.results.values()),
                attempts=self.attempts,
                remaining=self.remaining,
                transient_errors=self.transient,
                left_in_maintenance=self.left_in_maintenance,
                pending_restart=self.pending_restart,
                held=self.held,
            )
        )
        return status

    def _failure_summary(self) -> str:
        failed = [r for r in self.results.values() if r.outcome is UpdateOutcome.FAILED]
        first = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        return f"{first.title} failed: {first.message or f'code {first.error_code}'}{more}"

    async def _take_turn(self) -> None:
        if not self.work_started:
            await self.ctx.take_turn(self.name)
            self._stop_check()  # a stop asked while it waited: it ends before changing anything

    def _stop_check(self) -> None:
        reason = self.ctx.stop_reason
        if reason is not None:
            raise NodeEnd(reason, "the run is stopping")

    async def _pipeline(self) -> None:
        selection = self.profile.update_selection
        if selection is not None and self.name not in selection:
            # a remediation: a node with nothing non-compliant is left alone (no script, no drain);
            # one named with no update only waits for its restart
            self.progress("bypassed: nothing selected for this node (compliant with its baselines)")
            return
        if not self.record.steps:
            self._stop_check()
            snapshot = await self.ctx.provider.discover()
            if not snapshot.has_node(self.name) or not snapshot.node(self.name).is_up:
                raise NodeEnd(ErrorId.NODE_OFFLINE, f"{self.name} is down or unreachable")
        if self.profile.pre_update_script:
            await self._take_turn()  # a script may change the node: never ahead of its turn
        await self._pre_script()
        finished: NodeEnd | None = None
        try:
            scan = await self._scan("scan", Step.SCAN)
            if not scan.ok:
                raise NodeEnd(ErrorId.SCAN_FAILED, "scan failed: " + "; ".join(scan.errors.values()))
            if scan.all_updates or scan.restart_pending:
                await self._stage(scan)
                await self._take_turn()  # read-only so far: from here on, its turn
                if self.profile.drain is DrainPolicy.ALWAYS:
                    await self._enter_maintenance()
                if not self.record.has_step(Step.INSTALL):
                    self._stop_check()
                    if not self._drained():
                        # drain when-restart-needed installs in service: not after the window
                        # either (a node in maintenance finishes, whatever the time)
                        closed = self.ctx.gate.window_closed()
                        if closed is not None:
                            raise OutsideWindow(closed)
                await self._passes(scan)
            else:
                held = f" ({len(scan.all_held)} held or kept back)" if scan.all_held else ""
                self.progress(f"compliant: no applicable updates{held}")
        except NodeEnd as exc:
            finished = exc
        await self._leave_maintenance()
        if not self.left_in_maintenance and self.record.has_step(Step.ENTER_MAINTENANCE, Step.RESTART):
            await self.ctx.gate.returned(self.name)  # back: health gates, then its silence ends
        # The post-script pairs with the pre-script: it runs when the node was prepared and is back.
        prepared = self.profile.pre_update_script is None or self._pre_script_succeeded()
        if self.profile.post_update_script and prepared and not self.left_in_maintenance:
            await self._post_script()
        if finished is not None:
            raise finished

    # --- scripts ---------------------------------------------------------------------------------

    def _pre_script_succeeded(self) -> bool:
        return any(s.ok for s in self.record.steps_of(Step.PRE_SCRIPT))

    async def _script(self, key: str, step: Step, script: str) -> ScriptOutcome:
        async def prepare() -> ScriptIntent:
            return ScriptIntent(step=step, key=key, script=redact(script))

        async def act(intent: ScriptIntent, resumed: bool) -> ScriptOutcome:
            session = await self.session()
            env = {
                **self.ctx.secrets,
                "CAU_RUN_ID": self.ctx.run_id,
                "CAU_PHASE": step.value,
                "CAU_NODE": self.name,
            }
            try:
                result = await session.transport.run(
                    script, timeout=self.profile.script_timeout.total_seconds(), env=env
                )
            except CauError as exc:
                return _failed(ScriptOutcome, step, key, None, exc)
            return ScriptOutcome(
                step=step,
                key=key,
                ok=result.ok,
                exit_status=result.exit_status,
                stdout=tail(result.stdout),
                stderr=tail(result.stderr),
            )

        self.progress(f"running the {step.value.replace('_', '-')} script")
        return await self.step(key, ScriptIntent, ScriptOutcome, prepare, act)

    async def _with_retries(
        self, step: Step, attempt: Callable[[int], Awaitable[OutcomeT]], *, give_up_when_stopping: bool
    ) -> tuple[OutcomeT, int]:
        """Up to max_retries_per_node + 1 attempts of one step, journaled as `step/1`, `step/2`...
        A failure that is retried is recorded as a transient error; one that retrying cannot
        help (a refused login, a changed host key) ends the attempts at once. The last outcome
        and how many attempts were made."""
        attempts = self.profile.max_retries_per_node + 1
        n = 1
        while True:
            out = await attempt(n)
            if out.ok or n == attempts or out.retryable is False:
                return out, n
            self.transient.append(f"{step.value.replace('_', ' ')} attempt {n}: {out.failure_text()}")
            if not self.recorded(f"{step.value}/{n + 1}"):
                if give_up_when_stopping and self.ctx.stop_reason is not None:
                    return out, n
                await self.ctx.clock.sleep(RETRY_DELAY_SECONDS)
            n += 1

    async def _retrying_script(self, step: Step, script: str) -> tuple[ScriptOutcome, int]:
        return await self._with_retries(
            step,
            lambda n: self._script(f"{step.value}/{n}", step, script),
            give_up_when_stopping=step is Step.PRE_SCRIPT,
        )

    async def _pre_script(self) -> None:
        script = self.profile.pre_update_script
        if not script:
            return
        out, tries = await self._retrying_script(Step.PRE_SCRIPT, script)
        if not out.ok:
            raise NodeEnd(
                _node_error(out, ErrorId.PRE_UPDATE_SCRIPT_FAILED),
                f"pre-update script failed {tries} time(s), the node was not updated: {out.failure_text()}",
            )

    async def _post_script(self) -> None:
        script = self.profile.post_update_script
        if not script:
            return
        out, _ = await self._retrying_script(Step.POST_SCRIPT, script)
        if not out.ok and self.exit_error is None:
            self.exit_error = (
                ErrorId.POST_UPDATE_SCRIPT_FAILED,
                f"post-update script failed: {out.failure_text()}",
            )

    # --- scan and stage --------------------------------------------------------------------------

    async def _scan(self, key: str, step: Step) -> ScanOutcome:
        bindings = {b.name: b for b in self.ctx.plugins}

        async def updater(name: str) -> NodeUpdater:
            return await self.updater(bindings[name])

        async def prepare() -> ScanIntent:
            return ScanIntent(step=step, key=key)

        async def act(intent: ScanIntent, resumed: bool) -> ScanOutcome:
            self.progress("scanning for applicable updates")
            found = await scan_plugins(
                list(bindings),
                updater,
                serially=self.profile.run_plugins_serially,
                stop_on_failure=self.profile.stop_on_plugin_failure,
            )
            updates = selected(found.updates, self.profile.update_selection, self.name)
            return ScanOutcome(
                step=step,
                key=key,
                ok=found.ok,
                error_id=None if found.ok else ErrorId.SCAN_FAILED,
                updates=updates,
                held=found.held,
                restart_pending=found.restart_pending,
                errors=found.errors,
                count=sum(len(v) for v in updates.values()),
            )

        outcome = await self.step(key, ScanIntent, ScanOutcome, prepare, act)
        if outcome.ok:
            self.held = outcome.all_held
            for plugin, error in outcome.errors.items():
                self.warn(f"the {plugin} plug-in could not scan: {error}")
        return outcome

    async def _stage(self, scan: ScanOutcome) -> None:
        async def prepare() -> StageIntent:
            return StageIntent(key="stage")

        async def act(intent: StageIntent, resumed: bool) -> StageOutcome:
            self.progress(f"downloading {len(scan.all_updates)} update(s) before draining")
            failures: list[str] = []
            for binding in self.ctx.plugins:
                ups = scan.updates.get(binding.name) or []
                if not ups:
                    continue
                try:
                    staged = await (await self.updater(binding)).stage(ups)
                except CauError as exc:
                    failures.append(f"{binding.name}: {redact(str(exc))}")
                    continue
                failures += [f"{s.update_id}: {s.message}" for s in staged if not s.ok]
            return StageOutcome(key="stage", ok=not failures, failures=failures)

        out = await self.step("stage", StageIntent, StageOutcome, prepare, act)
        if not out.ok:
            # Not fatal: install downloads what staging could not, only the drained window grows.
            self.warn("staging incomplete: " + "; ".join(out.failures))

    # --- maintenance -----------------------------------------------------------------------------

    def on_gate_wait(self, admission: Admission) -> None:
        if admission.reason != self._last_wait:
            self._last_wait = admission.reason
            self.ctx.note(
                Waiting(reason=admission.reason, block=admission.block.value if admission.block else None),
                node=self.name,
            )

    def _drained(self) -> bool:
        """In maintenance by cau right now: the last drain succeeded and nothing undid it."""
        last = self.record.steps_of(Step.ENTER_MAINTENANCE)
        return self.holds_maintenance and bool(last) and last[-1].ok

    async def _enter_maintenance(self) -> None:
        if self.profile.drain is DrainPolicy.NEVER:
            return  # a standalone host: installed and restarted in service, its roles left where they are
        if self._drained():
            return
        if self.holds_maintenance:
            self.ctx.gate.hold(self.name)  # resumed mid-drain: it holds maintenance already
        provider = self.ctx.provider
        move = self.profile.move

        def prepare_for(key: str) -> Callable[[], Awaitable[EnterIntent]]:
            async def prepare() -> EnterIntent:
                plan = self.ctx.gate.plan_for(self.name)
                plan_record = dict(plan) if plan is not None else None
                if self._prior is not None:  # observed with the first attempt
                    return EnterIntent(key=key, prior_from="enter_maintenance/1", plan=plan_record)
                with self._refusal_ends_node("cannot enter maintenance"):
                    self._prior = await provider.maintenance_prior(self.name)
                return EnterIntent(key=key, move=move, prior=prior_record(self._prior), plan=plan_record)

            return prepare

        def act_for(key: str) -> Callable[[EnterIntent, bool], Awaitable[EnterOutcome]]:
            async def act(intent: EnterIntent, resumed: bool) -> EnterOutcome:
                self.progress(
                    "entering maintenance "
                    + ("(moving roles off)" if move is MoveMethod.LIVE else "(saving roles)")
                )
                assert self._prior is not None  # observed (or replayed) with the first attempt's intent
                plan = self.ctx.gate.plan_for(self.name)
                try:
                    if plan is not None and isinstance(provider, FollowsPlacement):
                        await provider.enter_maintenance_planned(self.name, move, self._prior, plan)
                    else:
                        await provider.enter_maintenance(self.name, move, self._prior)
                except CauError as exc:
                    return self._with_moves(
                        _failed(
                            EnterOutcome, Step.ENTER_MAINTENANCE, key, ErrorId.MAINTENANCE_ENTER_FAILED, exc
                        )
                    )
                return self._with_moves(EnterOutcome(key=key, ok=True))

            return act

        # Each attempt is admitted afresh by the gate (quorum, capacity, health, and what the
        # cluster manager says the drain would do); a failed attempt is undone before the next.
        attempts = self.profile.max_retries_per_node + 1
        out: EnterOutcome | None = None
        for n in range(1, attempts + 1):
            key = f"enter_maintenance/{n}"
            rec = self.record.steps.get(key)
            if rec is not None and rec.outcome is not None:
                out = _expect(rec.outcome, EnterOutcome, key)  # replayed: no admission for the past
            else:
                try:
                    async with self.ctx.gate.draining(self.name):
                        out = await self.step(key, EnterIntent, EnterOutcome, prepare_for(key), act_for(key))
                except NeverAdmitted as exc:
                    await self._leave_maintenance()  # what an earlier attempt moved comes back
                    raise NodeEnd(exc.block.error_id, f"cannot enter maintenance: {exc}") from None
            if out.ok:
                return
            self.transient.append(f"enter maintenance attempt {n}: {out.failure_text()}")
            next_key = f"enter_maintenance/{n + 1}"
            stopping = self.ctx.stop_reason is not None and not self.recorded(next_key)
            if n == attempts or stopping or out.retryable is False or not await self._undo_drain(n):
                break
            if not self.recorded(next_key):
                await self.ctx.clock.sleep(RETRY_DELAY_SECONDS)
        # Could not drain: undo what a partial drain did (exit maintenance, bring moved roles back).
        await self._leave_maintenance()
        raise NodeEnd(
            _node_error(out, ErrorId.MAINTENANCE_ENTER_FAILED),
            f"could not enter maintenance: {out.failure_text() if out else 'not attempted'}",
        )

    def _with_moves(self, outcome: _MovesOutcome) -> _MovesOutcome:
        """The outcome with the role moves the provider made during the step (migrations, saved
        and restored states, with the cluster software's figures), when it reports them: journaled
        with the step, so the report has them after a crash too."""
        provider = self.ctx.provider
        if not isinstance(provider, ReportsMoves):
            return outcome
        moves = provider.take_moves(self.name)
        return outcome.model_copy(update={"moves": moves}) if moves else outcome

    async def _undo_drain(self, attempt: int) -> bool:
        """After a failed drain, leave maintenance before the next attempt: nothing the drain
        stopped stays stopped while cau waits, and the next attempt is admitted on the cluster
        as it is then. False when the node could not leave (it then still holds maintenance)."""
        provider = self.ctx.provider
        prior = self._prior or MaintenancePrior(self.name, was_in_maintenance=False)
        key = f"exit_maintenance/undo-{attempt}"

        async def prepare() -> ExitIntent:
            return ExitIntent(key=key)

        async def act(intent: ExitIntent, resumed: bool) -> ExitOutcome:
            self.progress("leaving maintenance before the next attempt")
            try:
                await provider.exit_maintenance(self.name, prior)
            except CauError as exc:
                return self._with_moves(
                    _failed(ExitOutcome, Step.EXIT_MAINTENANCE, key, ErrorId.MAINTENANCE_EXIT_FAILED, exc)
                )
            return self._with_moves(ExitOutcome(key=key, ok=True, undo=attempt))

        async with self.ctx.gate.leaving(self.name):
            out = await self.step(key, ExitIntent, ExitOutcome, prepare, act)
        if not out.ok:
            self.ctx.gate.hold(self.name)  # still in maintenance: it still counts as down
            return False
        return True

    def _failback_done(self) -> bool:
        rec = self.record.steps.get("failback")
        return rec is not None and rec.done

    async def _leave_maintenance(self) -> None:
        """Undo cau's maintenance: leave it (unless already left), then fail roles back (unless
        done). A failback a killed coordinator began is finished by the next one."""
        if self.left_in_maintenance or not self.record.has_step(Step.ENTER_MAINTENANCE):
            return
        provider = self.ctx.provider
        prior = self._prior or MaintenancePrior(self.name, was_in_maintenance=False)
        if self.holds_maintenance:
            try:
                boot = await provider.boot_id(self.name)
            except CauError as exc:
                if refusal(exc) is None:
                    raise
                # A node cau cannot trust (or log in to) is not taken out of maintenance: it stays
                # out of service until an operator has looked at it.
                self.left_in_maintenance = True
                self.warn(
                    f"stays in maintenance: {_with_hint(exc)}; then `cau node resume "
                    f"{self.ctx.cluster} {self.name}` takes it out"
                )
                return
            if boot is None:
                self.left_in_maintenance = True
                self.warn(
                    "is down and stays in maintenance (cau put it there and recorded its prior "
                    f"state); once it is back, `cau node resume {self.ctx.cluster} {self.name}` "
                    "takes it out"
                )
                return
            # Leaving and failing back move roles: hold the gate so no drain is planned meanwhile.
            async with self.ctx.gate.leaving(self.name):
                if await self.exit(prior):
                    await self.failback(prior)
        elif not self._failback_done():
            async with self.ctx.gate.leaving(self.name):
                await self.failback(prior)

    async def exit(self, prior: MaintenancePrior, *, by: str | None = None) -> bool:
        """Leave maintenance (with retries; never abandoned because of a stop). `by` names an
        operator doing it after the run (`cau node resume`)."""
        provider = self.ctx.provider

        def act_for(key: str) -> Callable[[ExitIntent, bool], Awaitable[ExitOutcome]]:
            async def act(intent: ExitIntent, resumed: bool) -> ExitOutcome:
                if prior.was_in_maintenance:  # the provider leaves it as the run found it
                    self.progress("staying in maintenance, as before the run")
                else:
                    self.progress("leaving maintenance")
                try:
                    await provider.exit_maintenance(self.name, prior)
                except CauError as exc:
                    return self._with_moves(
                        _failed(ExitOutcome, Step.EXIT_MAINTENANCE, key, ErrorId.MAINTENANCE_EXIT_FAILED, exc)
                    )
                return self._with_moves(
                    ExitOutcome(key=key, ok=True, left_as_before=prior.was_in_maintenance)
                )

            return act

        def attempt(n: int) -> Awaitable[ExitOutcome]:
            key = (
                f"exit_maintenance/{n}"
                if by is None
                else f"exit_maintenance/manual-{self.ctx.clock.now():%Y%m%dT%H%M%S}-{n}"
            )

            async def prepare() -> ExitIntent:
                return ExitIntent(key=key, by=by)

            return self.step(key, ExitIntent, ExitOutcome, prepare, act_for(key))

        out, _ = await self._with_retries(Step.EXIT_MAINTENANCE, attempt, give_up_when_stopping=False)
        if out.ok:
            return True
        self.left_in_maintenance = True
        self.exit_error = (
            ErrorId.MAINTENANCE_EXIT_FAILED,
            f"could not leave maintenance: {out.failure_text()}",
        )
        self.warn(
            f"stays in maintenance: {out.failure_text()}; "
            f"`cau node resume {self.ctx.cluster} {self.name}` retries"
        )
        return False

    async def failback(self, prior: MaintenancePrior) -> list[str]:
        provider = self.ctx.provider
        mode = self.profile.failback_mode

        async def prepare() -> FailbackIntent:
            return FailbackIntent(key="failback", mode=mode)

        async def act(intent: FailbackIntent, resumed: bool) -> FailbackOutcome:
            # A node left in maintenance as the run found it takes no roles back (the provider
            # still clears what an earlier, interrupted failback may have left).
            if intent.mode.value != "none" and not prior.was_in_maintenance:
                self.progress(f"failing roles back ({intent.mode.value})")
            try:
                moved = await provider.failback(self.name, prior, intent.mode)
            except CauError as exc:
                return self._with_moves(
                    _failed(FailbackOutcome, Step.FAILBACK, "failback", ErrorId.FAILBACK_FAILED, exc)
                )
            return self._with_moves(FailbackOutcome(key="failback", ok=True, moved=moved))

        fb = await self.step("failback", FailbackIntent, FailbackOutcome, prepare, act)
        if not fb.ok:
            self.transient.append(f"failback: {fb.failure_text()}")
            self.warn(f"roles were not failed back: {fb.failure_text()}")
        return fb.moved

    # --- install, restart, rescan ----------------------------------------------------------------

    async def _passes(self, scan: ScanOutcome) -> None:
        pending = scan.updates
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
            rescan = await self._scan(f"rescan/{pass_no}", Step.RESCAN)
            if not rescan.ok:
                # Without a rescan, only a result says what an update did: one that a failed
                # plug-in left without any result is still to do, never counted as installed.
                self.remaining = [u.id for ups in pending.values() for u in ups if u.id not in self.results]
                self.warn("rescan failed; second-order updates, if any, were not looked for")
                return
            pending = rescan.updates
            restart_pending = rescan.restart_pending and not self.profile.no_restart
            if not rescan.all_updates and not restart_pending:
                return
            next_key = f"install/{pass_no + 1}/"
            resuming_next = any(k.startswith(next_key) for k in self.record.steps)
            if pass_no >= max_passes or (self.ctx.stop_reason is not None and not resuming_next):
                self.remaining = [u.id for u in rescan.all_updates]
                if self.ctx.stop_reason is None:
                    self.warn(f"{len(self.remaining)} update(s) still applicable after {pass_no} pass(es)")
                return
            pass_no += 1
            self.progress(
                f"pass {pass_no}: {len(rescan.all_updates)} more update(s) (second-order or retried)"
            )

    async def _install_pass(self, pass_no: int, pending: dict[str, list[Update]]) -> bool:
        """Install with each plug-in in order; returns whether a restart is (still) needed."""
        needs_restart = False
        for binding in self.ctx.plugins:
            ups = pending.get(binding.name) or []
            if not ups:
                continue
            key = f"install/{pass_no}/{binding.name}"

            async def prepare(
                key: str = key, plugin: str = binding.name, ups: list[Update] = ups
            ) -> InstallIntent:
                return InstallIntent(key=key, plugin=plugin, pass_no=pass_no, updates=ups)

            out = await self.step(
                key, InstallIntent, InstallOutcome, prepare, self._install_act(binding, key)
            )
            for r in out.results:
                self.results[r.update_id] = r
                self.attempts[r.update_id] = self.attempts.get(r.update_id, 0) + 1
                if r.outcome is UpdateOutcome.FAILED and pass_no <= self.profile.max_retries_per_node:
                    self.transient.append(
                        f"{r.title}: {r.message or f'code {r.error_code}'} (pass {pass_no})"
                    )
            if out.retryable is False:
                # Another pass would meet it again (a refused node, output the plug-in cannot
                # read): the node fails now, and what earlier plug-ins left needing a restart says so.
                self.pending_restart = self.pending_restart or needs_restart
                raise NodeEnd(
                    out.error_id or ErrorId.PLUGIN_FAILED, f"the {binding.name} plug-in failed: {out.message}"
                )
            plugin_failed = out.error_id is ErrorId.PLUGIN_FAILED
            if plugin_failed:
                self.transient.append(f"{binding.name} plug-in: {out.message}")
                self.warn(f"the {binding.name} plug-in failed: {out.message}")
            restart_here = any(r.restart_required for r in out.results)
            if restart_here and self.profile.separate_reboots and not self.profile.no_restart:
                await self._enter_maintenance()
                await self._restart(f"restart/{pass_no}/{binding.name}")
            else:
                needs_restart = needs_restart or restart_here
            if self.profile.stop_on_plugin_failure and (plugin_failed or not out.ok):
                self.warn(
                    f"stop_on_plugin_failure: the plug-ins after {binding.name} are skipped on this node"
                )
                break
        return needs_restart

    def _install_act(
        self, binding: PluginBinding, key: str
    ) -> Callable[[InstallIntent, bool], Awaitable[InstallOutcome]]:
        async def act(intent: InstallIntent, resumed: bool) -> InstallOutcome:
            updates = list(intent.updates)
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
            except CauError as exc:
                return _failed(
                    InstallOutcome, Step.INSTALL, key, ErrorId.PLUGIN_FAILED, exc, results=observed
                )
            every = observed + list(results)
            return InstallOutcome(
                key=key, ok=all(r.outcome is UpdateOutcome.SUCCEEDED for r in every), results=every
            )

        return act

    async def _restart(self, key: str) -> None:
        provider = self.ctx.provider
        timeout = self.profile.reboot_timeout.total_seconds()

        async def prepare() -> RestartIntent:
            with self._refusal_ends_node("cannot restart"):
                return RestartIntent(key=key, boot_id=await provider.boot_id(self.name))

        async def act(intent: RestartIntent, resumed: bool) -> RestartOutcome:
            old = intent.boot_id
            # The reboot timeout counts from the restart cau asked for: the intent's time, or now
            # when a resumed run finds the node still on its old boot and asks again.
            since = self._intent_time(key)
            try:
                if resumed:
                    current = await provider.boot_id(self.name)
                    if current is not None and current != old:
                        return RestartOutcome(
                            key=key, ok=True, boot_id=current, previous_boot_id=old, observed=True
                        )
                    if current is not None:
                        self.progress("restarting (the first restart never happened)")
                        since = self.ctx.clock.now()
                        await provider.restart(self.name)
                else:
                    self.progress("restarting")
                    await provider.restart(self.name)
            except CauError as exc:
                return _failed(RestartOutcome, Step.RESTART, key, ErrorId.RESTART_FAILED, exc)
            elapsed = (self.ctx.clock.now() - since).total_seconds()
            left = max(timeout - elapsed, 1.0)
            self.progress(f"waiting for {self.name} to come back (reboot timeout {timeout / 60:g} min)")
            try:
                new = await provider.wait_ready(self.name, previous_boot_id=old, timeout=left)
            except CauError as exc:
                if exc.retryable:  # no answer within the time: it did not come back
                    return RestartOutcome(
                        key=key,
                        ok=False,
                        error_id=ErrorId.NODE_DID_NOT_RETURN,
                        message=f"{self.name} did not come back within the reboot timeout "
                        f"({format_duration(timeout)}) after its restart",
                    )
                # it answered, but cau must not trust or use it (a changed host key...): at once
                return _failed(RestartOutcome, Step.RESTART, key, ErrorId.NODE_DID_NOT_RETURN, exc)
            return RestartOutcome(key=key, ok=True, boot_id=new, previous_boot_id=old)

        out = await self.step(key, RestartIntent, RestartOutcome, prepare, act)
        if not out.ok:
            raise NodeEnd(out.error_id or ErrorId.RESTART_FAILED, out.failure_text())


def _expect(value: StepIntent | StepOutcome, kind: type[T], key: str) -> T:
    if not isinstance(value, kind):
        raise TypeError(f"journal step {key}: expected {kind.__name__}, found {type(value).__name__}")
    return value


def selected(
    updates: dict[str, list[Update]], selection: dict[str, list[str]] | None, node: str
) -> dict[str, list[Update]]:
    """A remediation's updates only (`update_selection`: per node, update keys `<plug-in>:<id>`,
    or `<plug-in>:<package>` for a package whatever its id, e.g. dnf's `name.arch`)."""
    if selection is None:
        return updates
    wanted = set(selection.get(node, ()))
    return {
        plugin: [
            u
            for u in ups
            if f"{plugin}:{u.id}" in wanted or f"{plugin}:{u.details.get('name', u.id)}" in wanted
        ]
        for plugin, ups in updates.items()
    }


def refusal(exc: BaseException) -> ErrorId | None:
    """The error id of a node refusing cau (REFUSALS), or None for any other error."""
    return next((error_id for kind, error_id in REFUSALS.items() if isinstance(exc, kind)), None)


def _with_hint(exc: BaseException) -> str:
    """An error as the journal shows it: redacted, with what the operator can do about it."""
    message = redact(str(exc))
    hint = getattr(exc, "hint", None)
    return f"{message} ({hint})" if hint else message


def _node_error(out: StepOutcome | None, default: ErrorId) -> ErrorId:
    """Why a node ends after a failed step: a refusal says so; anything else is the step's failure."""
    refused = out.error_id if out is not None else None
    return refused if refused is not None and refused in REFUSALS.values() else default


def _failed(
    kind: type[OutcomeT],
    step: Step,
    key: str,
    error_id: ErrorId | None,
    exc: Exception,
    **extra: object,
) -> OutcomeT:
    """The outcome of a step whose action raised: a result for the journal, not a crash. A node
    refusing cau is named as such (REFUSALS), whatever the step."""
    return kind.model_validate(
        {
            "step": step,
            "key": key,
            "ok": False,
            "error_id": refusal(exc) or error_id,
            "message": _with_hint(exc),
            "retryable": is_retryable(exc),
            **extra,
        }
    )
