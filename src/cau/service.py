"""The service layer: what the CLI (and later the API) do, wired from config, registries and store.

Everything user-facing goes through here, so the CLI and the API can never disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ValidationError

from cau.administration import Administration
from cau.alerts import Alertmanager, expire_leftovers

if TYPE_CHECKING:
    from cau.compliance.service import Compliance
    from cau.debugtrace import TraceBundle
    from cau.selfupdating import SelfUpdating
from cau.clock import SystemClock
from cau.config import LoadedConfig, load_config
from cau.domain.cluster import ClusterSnapshot
from cau.domain.gates import ProbeGate
from cau.domain.planning import run_order
from cau.domain.profile import OverrunPolicy, PluginSpec, RunProfile, build_profile
from cau.domain.results import RunState
from cau.domain.runs import LockInfo, LockOwner, ReportQuery, RunRecord
from cau.domain.validation import describe_errors
from cau.engine.aftercare import take_out_of_maintenance
from cau.engine.coordinator import Coordinator, EventListener, RunOutcome
from cau.engine.gate import drains_overlap
from cau.engine.node import PluginBinding
from cau.engine.safety import SafetyConfig
from cau.engine.scan import scan_plugins
from cau.engine.start import run_created
from cau.errors import CauError, ConfigError, LockHeld, LockLost, NotFound, PreflightError, ProfileError
from cau.forecasting import forecast, history
from cau.journal.events import ForecastMade, JournalEvent, ReadinessWarning, WarningEvent
from cau.journal.progress import NodeProgress, replay
from cau.lease import Holder, driving, holder_state, this_process
from cau.ports import (
    AvailabilitySource,
    CleansUp,
    Clock,
    ClusterProvider,
    HostsCoordinatorRole,
    NodeUpdater,
    PluginContext,
    ProviderContext,
    ReportsHealth,
    Store,
    StoreContext,
)
from cau.probes import ProbeMonitor
from cau.readiness import Outcome, ReadinessReport, RuleResult, evaluate, observe
from cau.registry import Entry, Registry
from cau.reports.build import build_report
from cau.reports.model import RunReport
from cau.secrets import load_secrets, seal, unseal
from cau.store.access import AccessStore
from cau.store.sqlite import SqliteFile
from cau.views import (
    Cleanup,
    ClusterScan,
    HostKeyTrusted,
    NodeResumed,
    NodeScan,
    PluginView,
    RunForecast,
    SandboxNode,
    SandboxOutage,
    SandboxRole,
    SandboxView,
    SandboxViolation,
)


class NoRunDue(Exception):
    """Service.run's `decide` started nothing: the cluster was left as it was."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def _refusal(result: RuleResult) -> str:
    """A failing readiness rule as a run's refusal names it: what was found, and the fix."""
    return f"{result.detail or result.title}" + (f" (fix: {result.fix})" if result.fix else "")


def _validation_problems(exc: ValidationError) -> str:
    return "; ".join(describe_errors(exc))


@dataclass
class ClusterStatus:
    cluster: str
    run: RunRecord | None  # the active run, or else the last one
    report: RunReport | None
    lock: LockInfo | None
    holder: Holder  # whether the lock's holder is alive (cau.lease)
    active: bool

    @property
    def driven(self) -> bool:
        """A live coordinator drives the active run (else it is interrupted: `cau run` resumes it)."""
        return (
            self.active
            and self.run is not None
            and self.holder is Holder.ALIVE
            and self.lock is not None
            and self.lock.run_id == self.run.run_id
        )


class Service:
    def __init__(
        self,
        data_dir: Path,
        config_path: Path | None = None,
        *,
        registry: Registry | None = None,
        clock: Clock | None = None,
        lease_seconds: float | None = None,  # default: the config's [store] lease
    ) -> None:
        self.data_dir = data_dir
        self._config_path = config_path
        self._config: LoadedConfig | None = None
        self.registry = registry or Registry.discover()
        self.clock: Clock = clock or SystemClock()
        self._lease_seconds = lease_seconds
        self._store: Store | None = None
        self._access: AccessStore | None = None
        self._secrets: dict[str, dict[str, str]] = {}
        # How health gates and Alertmanager silences reach HTTP servers (None: the network;
        # tests give an httpx.MockTransport).
        self.http_transport: httpx.AsyncBaseTransport | None = None

    # --- wiring --------------------------------------------------------------------------------

    @property
    def config(self) -> LoadedConfig:
        if self._config is None:
            self._config = load_config(self._config_path)
        return self._config

    @property
    def lease_seconds(self) -> float:
        """How long a coordinator's hold on a cluster outlasts its last renewal: how soon a
        coordinator that died silently on another host is taken over from."""
        if self._lease_seconds is None:
            return self.config.config.store.lease
        return self._lease_seconds

    @lease_seconds.setter
    def lease_seconds(self, value: float) -> None:
        self._lease_seconds = value

    @property
    def store(self) -> Store:
        """Runs, journals, locks and reports: the configured `cau.stores` backend ([store] of the
        config file; SQLite in the data directory by default)."""
        if self._store is None:
            chosen = self.config.config.store
            factory = self.registry.store(chosen.kind)
            try:
                options = factory.Options.model_validate(chosen.options)
            except ValidationError as exc:
                raise ConfigError(
                    f"[store] options of the {chosen.kind} store: {_validation_problems(exc)}"
                ) from exc
            self._store = factory.open(options, StoreContext(self.data_dir))
        return self._store

    @property
    def access(self) -> AccessStore:
        """Tokens, users, sessions, the audit trail, stored profiles: in the store's file, through
        a connection of their own."""
        if self._access is None:
            self._access = AccessStore(SqliteFile(self.data_dir / "cau.db"))
        return self._access

    def audit(self, actor: str, action: str, target: str, detail: dict[str, Any] | None = None) -> None:
        """The audit trail: who did what to which cluster, token, user or profile, from where."""
        self.access.audit(actor, action, target, detail)

    @property
    def roles(self) -> SelfUpdating:
        """Self-updating mode: each cluster's clustered role and its coordinator (cau.selfupdating)."""
        from cau.selfupdating import SelfUpdating  # it builds on this class

        return SelfUpdating(self)

    @property
    def compliance(self) -> Compliance:
        """Baselines, exemptions, compliance scans and remediation plans (cau.compliance)."""
        from cau.compliance.service import Compliance  # it builds on this class

        return Compliance(self)

    @property
    def admin(self) -> Administration:
        """Tokens, users, browser sessions and stored profiles, each change audited (cau.administration)."""
        return Administration(self.access)

    def close(self) -> None:
        if self._store is not None:
            # A local file's store closes at once; a networked one's connections go with the
            # process (closing them needs its event loop, which has ended by now).
            close_now = getattr(self._store, "close_now", None)
            if close_now is not None:
                close_now()
            self._store = None
        if self._access is not None:
            self._access.close()
            self._access = None

    def secrets(self, cluster: str) -> dict[str, str]:
        """The cluster's secrets (cau.secrets), loaded once and masked from then on."""
        if cluster not in self._secrets:
            cfg = self.config.cluster(cluster)
            self._secrets[cluster] = load_secrets(cfg.secrets, self.config.base_dir, cluster)
        return self._secrets[cluster]

    def load_all_secrets(self) -> dict[str, str]:
        """Every configured cluster's secrets, so that a long-lived process (`cau serve`) masks
        them all from the start. A cluster whose secrets cannot be loaded is named with why
        (its runs will fail with the same error); the others are loaded."""
        problems: dict[str, str] = {}
        for name in self.config.names():
            try:
                self.secrets(name)
            except ConfigError as exc:
                problems[name] = str(exc) + (f" ({exc.hint})" if exc.hint else "")
        return problems

    def open_provider(self, cluster: str, *, overrides: dict[str, Any] | None = None) -> ClusterProvider:
        cfg = self.config.cluster(cluster)
        factory = self.registry.provider(cfg.provider)
        options = {**cfg.options, **{k: v for k, v in (overrides or {}).items() if v is not None}}
        try:
            parsed = factory.Options.model_validate(options)
        except ValidationError as exc:
            raise ConfigError(
                f"cluster '{cluster}': options of the {cfg.provider} provider: {_validation_problems(exc)}"
            ) from exc
        ctx = ProviderContext(
            cluster=cluster,
            clock=self.clock,
            data_dir=self.data_dir,
            config_dir=self.config.base_dir,
            secrets=self.secrets(cluster),
        )
        provider: ClusterProvider = factory.create(parsed, ctx)
        return provider

    def profile(
        self,
        cluster: str,
        file: Path | None,
        overrides: dict[str, Any] | None = None,
        *,
        stored: dict[str, Any] | None = None,
    ) -> RunProfile:
        """The run profile: the cluster's default profile file, or `file`, or a profile kept in the
        store (`stored`, its options; the API's profiles), then the overrides."""
        cfg = self.config.cluster(cluster)
        if stored is not None:
            return build_profile(None, overrides, base=stored)
        if file is None and cfg.profile is not None:
            base = self.config.base_dir
            file = cfg.profile if cfg.profile.is_absolute() or base is None else base / cfg.profile
        return build_profile(file, overrides)

    def safety(self, cluster: str, profile: RunProfile, provider: ClusterProvider) -> SafetyConfig:
        """A run's health gates (the cluster's, then the profile's) and Alertmanager, checked
        against the cluster: unique names, declared secrets, a provider that reports health."""
        cfg = self.config.cluster(cluster)
        gates = [*cfg.health_gates, *profile.health_gates]
        secrets = self.secrets(cluster)
        problems: list[str] = []
        names = [g.name for g in gates]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            problems.append(
                f"health gate(s) {', '.join(twice)} named both in the cluster's configuration and the profile"
            )
        for gate in gates:
            token = getattr(gate, "bearer_token_secret", None)
            if token is not None and token not in secrets:
                problems.append(
                    f"health gate {gate.name}: bearer_token_secret {token} is not a secret of the cluster"
                )
            if isinstance(gate, ProbeGate) and gate.probe not in {p.role for p in cfg.probes}:
                problems.append(
                    f"health gate {gate.name}: the cluster has no probe of role {gate.probe}"
                    f" (its [[clusters.{cluster}.probes]] name: "
                    f"{', '.join(sorted(p.role for p in cfg.probes)) or 'none'})"
                )
            if gate.kind == "cluster-health" and not isinstance(provider, ReportsHealth):
                problems.append(
                    f"health gate {gate.name}: the {cfg.provider} provider does not report "
                    "the cluster's health"
                )
        am = cfg.alertmanager
        if am is not None and am.bearer_token_secret is not None and am.bearer_token_secret not in secrets:
            problems.append(
                f"alertmanager: bearer_token_secret {am.bearer_token_secret} is not a secret of the cluster"
            )
        if problems:
            raise ConfigError(
                f"cluster '{cluster}': " + "; ".join(problems),
                hint=f"declare the secrets under [clusters.{cluster}.secrets]; rename or remove the gates",
            )
        return SafetyConfig(
            gates=gates, alertmanager=am, http_transport=self.http_transport, probes=tuple(cfg.probes)
        )

    def plugin_specs(self, cluster: str, profile: RunProfile, provider: ClusterProvider) -> list[PluginSpec]:
        if profile.plugins:
            return list(profile.plugins)
        cfg = self.config.cluster(cluster)
        if cfg.plugins:
            return list(cfg.plugins)
        return [PluginSpec(name=name) for name in provider.default_plugins]

    def bind_plugins(self, specs: list[PluginSpec]) -> list[PluginBinding]:
        bindings = []
        for spec in specs:
            plugin = self.registry.plugin(spec.name)
            try:
                args: BaseModel = plugin.Args.model_validate(spec.args)
            except ValidationError as exc:
                raise ConfigError(
                    f"arguments of the {spec.name} plug-in: {_validation_problems(exc)}"
                ) from exc
            bindings.append(PluginBinding(spec.name, plugin(), args))
        return bindings

    # --- scan (Invoke-CauScan) -----------------------------------------------------------------

    async def scan(self, cluster: str, profile: RunProfile) -> ClusterScan:
        """What each node would install (Invoke-CauScan), with the plug-ins scanning as a run's
        scans do (cau.engine.scan); nothing changes."""
        provider = self.open_provider(cluster)
        secrets = self.secrets(cluster)
        profile = unseal(profile, secrets, cluster)
        try:
            bindings = {b.name: b for b in self.bind_plugins(self.plugin_specs(cluster, profile, provider))}
            snapshot = await provider.discover()
            ctx = PluginContext(None, cluster, self.clock, self.data_dir, secrets)

            async def scan_node(name: str) -> NodeScan:
                if not snapshot.node(name).is_up:
                    return NodeScan(node=name, reachable=False, errors={"node": f"{name} is down"})
                session = await provider.session(name)

                async def updater(plugin: str) -> NodeUpdater:
                    binding = bindings[plugin]
                    return binding.plugin.create_updater(session, binding.args, ctx)

                found = await scan_plugins(
                    list(bindings),
                    updater,
                    serially=profile.run_plugins_serially,
                    stop_on_failure=profile.stop_on_plugin_failure,
                )
                return NodeScan(
                    node=name,
                    updates=[u for ups in found.updates.values() for u in ups],
                    held=[h for hs in found.held.values() for h in hs],
                    restart_pending=found.restart_pending,
                    errors=found.errors,
                )

            nodes = await asyncio.gather(*(scan_node(n) for n in snapshot.node_names))
            now = self.clock.now()
            predicted = await self._forecast(cluster, provider, snapshot, profile, list(bindings), now)
            return ClusterScan(cluster=cluster, scanned=now, nodes=list(nodes), forecast=predicted)
        finally:
            await provider.close()

    # --- forecast (the predicted duration, before a run) ------------------------------------------

    async def _forecast(
        self,
        cluster: str,
        provider: ClusterProvider,
        snapshot: ClusterSnapshot,
        profile: RunProfile,
        plugins: list[str],
        now: datetime,
        order: list[str] | None = None,
    ) -> RunForecast:
        samples = await history(self.store, cluster)
        members = self.config.cluster(cluster).store_members
        one_gate = not drains_overlap(provider, profile.move)
        return forecast(
            cluster,
            snapshot,
            profile,
            samples,
            plugins,
            now,
            store_members=members,
            one_gate=one_gate,
            order=order,
        )

    async def preview_run(self, cluster: str, profile: RunProfile) -> RunForecast:
        """What a run would take (`cau run --dry-run`): the batches cau would form on the cluster
        as it is now, the duration predicted from past runs, and the limits it would exceed.
        Nothing changes (the cluster is observed, not scanned)."""
        provider = self.open_provider(cluster)
        try:
            profile = unseal(profile, self.secrets(cluster), cluster)
            specs = self.plugin_specs(cluster, profile, provider)
            snapshot = await provider.discover()
            return await self._forecast(
                cluster, provider, snapshot, profile, [s.name for s in specs], self.clock.now()
            )
        finally:
            await provider.close()

    # --- readiness (Test-CauSetup) -------------------------------------------------------------

    async def check(
        self,
        cluster: str,
        *,
        profile_file: Path | None = None,
        stored: dict[str, Any] | None = None,
    ) -> ReadinessReport:
        """Every readiness rule on the cluster, with the profile a run would use (`profile_file`,
        a stored profile's options, or the cluster's default); nothing changes. An invalid
        profile is a failing rule of its own: the others are checked with the default options."""
        cfg = self.config.cluster(cluster)
        profile_problems: list[str] = []
        try:
            profile = self.profile(cluster, profile_file, stored=stored)
        except ProfileError as exc:
            profile, profile_problems = RunProfile(), [f"{exc.source}: {p}" for p in exc.problems]
        secrets = self.secrets(cluster)
        profile = unseal(profile, secrets, cluster)
        provider = self.open_provider(cluster)
        try:
            specs = self.plugin_specs(cluster, profile, provider)
            plugin_problems = []
            for spec in specs:
                try:
                    self.bind_plugins([spec])
                except CauError as exc:
                    plugin_problems.append(f"{spec.name}: {exc}")
            role = await self.store.get_role(cluster)

            async def role_checks() -> list[Any]:
                assert role is not None
                return await self.roles.readiness(role, provider)

            obs = await observe(
                provider,
                cluster=cluster,
                provider_name=cfg.provider,
                profile=profile,
                profile_problems=profile_problems,
                plugins=[s.name for s in specs],
                plugin_problems=plugin_problems,
                store_members=list(cfg.store_members),
                predict_drains=True,
                role_checks=role_checks if role is not None else None,
            )
            return ReadinessReport(cluster=cluster, checked_at=self.clock.now(), results=evaluate(obs))
        finally:
            await provider.close()

    # --- run (Invoke-CauRun) -------------------------------------------------------------------

    async def run(
        self,
        cluster: str,
        profile: RunProfile,
        *,
        force_recovery: bool = False,
        provider_overrides: dict[str, Any] | None = None,
        on_event: EventListener | None = None,
        on_coordinator: Callable[[Coordinator], Awaitable[None]] | None = None,
        on_notice: Callable[[str], None] | None = None,
        profile_given: bool = False,
        owner_label: str = "cau run",  # how `cau status` names this coordinator (e.g. "cau serve")
        # Who asked: journaled as who started (or resumed) the run, and audited unless `audit` is
        # False (the API audits its own requests, with the profile and options they carried).
        actor: str | None = None,
        audit: bool = True,
        # Self-updating mode: the node this coordinator runs on (it hands the run over when that
        # node's turn comes; cau.selfupdating).
        own_node: str | None = None,
        role_host: HostsCoordinatorRole | None = None,
        # Self-updating mode: whether (and how, by whom) to start a run when the cluster has no
        # unfinished one, decided under the cluster's lock so that of several coordinators
        # deciding at once (one per node) only one starts it. None: no run (NoRunDue).
        decide: Callable[[], Awaitable[tuple[RunProfile, str] | None]] | None = None,
    ) -> RunOutcome:
        notice = on_notice or (lambda _msg: None)
        store = self.store
        secrets = self.secrets(cluster)
        provider = self.open_provider(cluster, overrides=provider_overrides)
        owner = this_process(owner_label)
        try:
            lock = await store.acquire_lock(
                cluster,
                owner,
                run_id=None,
                now=_utcnow(),
                lease_seconds=self.lease_seconds,
                force=force_recovery,
            )
            try:
                if lock.recovered_from:
                    notice(f"took over the cluster lock from {lock.recovered_from}")
                active = await store.active_run(cluster)
                if active is not None:
                    await self._refuse_other_mode(active, own_node, force_recovery)
                    run_id = active.run_id
                    # The run record holds the profile with its plug-ins resolved, as it started,
                    # sealed: its secrets come from the configuration again.
                    profile = unseal(active.profile, secrets, cluster)
                    bindings = self.bind_plugins(list(profile.plugins or []))
                    notice(f"resuming run {run_id} (started {active.created:%Y-%m-%d %H:%M:%S} UTC)")
                    if profile_given:
                        notice(
                            "the run keeps the options it started with; "
                            "the profile and flags given now are ignored"
                        )
                else:
                    if decide is not None:
                        decided = await decide()
                        if decided is None:
                            raise NoRunDue(f"no run is due on '{cluster}'")
                        profile, actor = decided
                    profile = unseal(profile, secrets, cluster)
                    bindings = self.bind_plugins(self.plugin_specs(cluster, profile, provider))
                    self.safety(cluster, profile, provider)  # refused before anything starts
                    run_id = await self._create_run(
                        cluster, provider, profile, bindings, actor, own_node, notice=notice
                    )
                await store.set_lock_run(cluster, owner, run_id)
                if actor is not None and audit:
                    detail = {"run_id": run_id, "force_recovery": force_recovery}
                    self.audit(actor, "run.resume" if active is not None else "run.start", cluster, detail)
                if lock.recovered_from:
                    await store.append(
                        run_id,
                        WarningEvent(message=f"cluster lock taken over from {lock.recovered_from}"),
                        self.clock.now(),
                    )
                probes = self.config.cluster(cluster).probes
                # The probes measure the run as long as a coordinator drives it (and resumes).
                availability: AvailabilitySource | None = (
                    ProbeMonitor(list(probes), now=self.clock.now) if probes else None
                )
                coordinator = await Coordinator.load(
                    store=store,
                    run_id=run_id,
                    provider=provider,
                    plugins=bindings,
                    profile=profile,
                    clock=self.clock,
                    owner=str(owner),
                    data_dir=self.data_dir,
                    secrets=secrets,
                    on_event=on_event,
                    availability=availability,
                    requested_by=actor,
                    own_node=own_node,
                    role_host=role_host,
                    store_members=self.config.cluster(cluster).store_members,
                    safety=self.safety(cluster, profile, provider),
                )
                if on_coordinator is not None:
                    await on_coordinator(coordinator)
                outcome = await self._execute_with_lease(cluster, owner, coordinator)
                if outcome.report is not None and outcome.state is RunState.FINISHED:
                    await self._compliance_after_run(cluster, outcome.report, notice)
                return outcome
            finally:
                try:
                    await store.release_lock(cluster, owner)
                except (CauError, OSError) as exc:
                    # The lock expires with its lease anyway; the run's outcome, or the error
                    # under way (a lost lease: maybe the store is what is lost), matters more.
                    notice(f"the cluster lock was not released ({exc}); it expires with its lease")
        finally:
            await provider.close()

    async def _compliance_after_run(
        self, cluster: str, report: RunReport, notice: Callable[[str], None]
    ) -> None:
        """A finished run's end state updates compliance: what it installed without a restart is
        PendingReboot until the node restarts, and a cluster with baselines is scanned again.
        Compliance never fails a run: a problem here is a notice."""
        try:
            compliance = self.compliance
            await compliance.note_installed_without_restart(
                cluster,
                {
                    n.name: [f"{u.plugin}:{u.id}" for u in n.updates if u.status == "Succeeded"]
                    for n in report.nodes
                    if n.pending_restart
                },
                run_id=report.run_id,
            )
            if await compliance.has_baselines(cluster):
                # with the cluster's own plug-in settings: a remediation's run narrows them
                await compliance.scan(cluster, self.profile(cluster, None))
                notice(f"compliance of '{cluster}' scanned again after the run: cau compliance {cluster}")
        except CauError as exc:
            notice(f"compliance was not updated after the run: {exc}")

    async def _refuse_other_mode(self, active: RunRecord, own_node: str | None, force: bool) -> None:
        """A run of the clustered role is resumed by the role's coordinator only, and a run from
        outside by `cau run` only: between two coordinators of one (a hand-over, a restart) the
        other must not take it. --force-recovery takes it anyway (the role is gone...)."""
        if force:
            return
        progress = replay(await self.store.events(active.run_id))
        role_node = progress.role_node
        if own_node is None and role_node is not None:
            raise LockHeld(
                f"run {active.run_id} on '{active.cluster}' belongs to the cluster's clustered role"
                f" (its last coordinator ran on {role_node})",
                owner=f"the clustered role ({role_node})",
                hint=f"`cau role show {active.cluster}`; if the role's coordinator is gone for good,"
                " `cau run --force-recovery` finishes the run from here",
            )
        if own_node is not None and role_node is None and progress.coordinators:
            raise LockHeld(
                f"run {active.run_id} on '{active.cluster}' was started from outside the cluster",
                owner=active.owner or "cau run",
                hint=f"`cau run {active.cluster}` resumes it",
            )

    async def _create_run(
        self,
        cluster: str,
        provider: ClusterProvider,
        profile: RunProfile,
        bindings: list[PluginBinding],
        started_by: str | None,
        own_node: str | None = None,
        notice: Callable[[str], None] = lambda _msg: None,
    ) -> str:
        # The readiness rules (`cau check`'s) are the preflight: a failing rule refuses the run,
        # naming what to do, before anything is changed; a warning is journaled in the run.
        cfg = self.config.cluster(cluster)
        obs = await observe(
            provider,
            cluster=cluster,
            provider_name=cfg.provider,
            profile=profile,
            plugins=[b.name for b in bindings],
            store_members=list(cfg.store_members),
            coordinator_node=own_node,
        )
        results = evaluate(obs)
        failures = [r for r in results if r.outcome is Outcome.FAIL]
        if obs.snapshot_exception is not None and not obs.provider_problems:
            # A cluster cau cannot observe refuses the run with the provider's own error (its
            # class: a changed host key, a cluster manager that answers errors...).
            raise obs.snapshot_exception
        if failures:
            raise PreflightError(
                f"the run on '{cluster}' did not start: " + "; ".join(_refusal(r) for r in failures),
                hint="nothing was changed; `cau check " + cluster + "` lists every readiness rule",
            )
        snapshot = obs.snapshot
        assert snapshot is not None  # cluster-observable fails otherwise
        warnings = [r for r in results if r.outcome is Outcome.WARNING]
        now = self.clock.now()
        # The predicted duration against stop_after and the window: refused here (on_overrun =
        # refuse) before anything exists, or warned about in the run's journal.
        # The order the run takes, decided once: journaled with its opening record, and forecast.
        order = run_order(snapshot, profile)
        predicted = await self._forecast(
            cluster, provider, snapshot, profile, [b.name for b in bindings], now, order
        )
        if predicted.overruns and profile.on_overrun is OverrunPolicy.REFUSE:
            raise PreflightError(
                f"the run on '{cluster}' did not start: "
                + "; ".join(o.message for o in predicted.overruns)
                + " (on_overrun = refuse)",
                hint="nothing was changed; allow more time (stop_after, a longer window), more nodes at "
                "once (max_parallel_nodes = auto), or set on_overrun = warn to start anyway",
            )
        run_id = new_run_id(now)
        resolved = profile.model_copy(
            update={
                "plugins": [PluginSpec(name=b.name, args=b.args.model_dump(mode="json")) for b in bindings]
            }
        )
        # What is stored and journaled holds references to the secrets, never their values.
        resolved = seal(resolved, self.secrets(cluster))
        provider_name = self.config.cluster(cluster).provider
        await self.store.create_run(
            RunRecord(
                run_id=run_id,
                cluster=cluster,
                provider=provider_name,
                state=RunState.RUNNING,
                created=now,
                profile=resolved,
            )
        )
        opening = run_created(snapshot, resolved, provider_name, started_by=started_by, order=order)
        await self.store.append(run_id, opening, now)
        for w in warnings:
            note = ReadinessWarning(
                rule=w.rule, title=w.title, nodes=w.nodes, impact=w.impact, fix=w.fix, detail=w.detail
            )
            await self.store.append(run_id, note, now)
            notice(f"readiness warning [{w.rule}]: {w.detail}" + (f" (fix: {w.fix})" if w.fix else ""))
        batches = [b.nodes for b in predicted.batches]
        await self.store.append(run_id, ForecastMade(plan=predicted.plan, batches=batches), now)
        notice(predicted.headline())
        for overrun in predicted.overruns:
            await self.store.append(run_id, WarningEvent(message=overrun.message), now)
            notice(f"warning: {overrun.message} (on_overrun = warn)")
        return run_id

    async def _execute_with_lease(
        self, cluster: str, owner: LockOwner, coordinator: Coordinator
    ) -> RunOutcome:
        work = asyncio.ensure_future(coordinator.execute())
        lost: str | None = None
        loop = asyncio.get_running_loop()

        async def keep_lease() -> None:
            """Renew every tenth of the lease. Taken over: stop at once. Not renewed (the store
            unreachable from here, or too slow) for half the lease: stop too, while the lease
            written last still holds, so that this coordinator has stopped acting before another
            may take the lock over (its lease counts from the last renewal that succeeded)."""
            nonlocal lost
            interval = self.lease_seconds / 10
            renewed_at = loop.time()
            while True:
                await asyncio.sleep(interval)
                attempt = loop.time()
                try:
                    renewed = await asyncio.wait_for(
                        self.store.renew_lock(
                            cluster, owner, now=_utcnow(), lease_seconds=self.lease_seconds
                        ),
                        timeout=interval,
                    )
                except (CauError, OSError, TimeoutError) as exc:
                    if loop.time() - renewed_at < self.lease_seconds / 2:
                        continue  # a blip: the lease still has more than half to run
                    lost = (
                        f"could not renew the lock on '{cluster}' for {loop.time() - renewed_at:.0f}s"
                        f" ({exc or type(exc).__name__}); this coordinator stopped acting before its"
                        " lease ran out"
                    )
                    work.cancel()
                    return
                if not renewed:
                    lost = f"lost the lock on '{cluster}' to another coordinator; this one stopped acting"
                    work.cancel()  # another coordinator owns the cluster now: do nothing more
                    return
                renewed_at = attempt

        lease = asyncio.ensure_future(keep_lease())
        try:
            return await work
        except asyncio.CancelledError:
            if lost is not None:
                raise LockLost(
                    lost, hint=f"`cau status {cluster}` shows who holds it; the run resumes from its journal"
                ) from None
            raise
        finally:
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await work

    # --- stop, status, reports -------------------------------------------------------------------

    async def trust_hosts(self, cluster: str, nodes: list[str], *, replace: bool) -> list[HostKeyTrusted]:
        """Record the SSH host keys a cluster's nodes present now (a decision the operator makes)."""
        provider = self.open_provider(cluster)
        try:
            trust = getattr(provider, "trust_hosts", None)
            if trust is None:
                raise ConfigError(f"the provider of '{cluster}' does not use SSH host keys")
            rows: list[tuple[str, str, str]] = await trust(nodes, replace=replace)
            return [HostKeyTrusted(node=n, fingerprint=fp, result=r) for n, fp, r in rows]
        finally:
            await provider.close()

    def plugins(self) -> list[PluginView]:
        """The installed plug-ins and providers, and any that failed to load (Get-CauPlugin)."""
        reg = self.registry

        def view(kind: Literal["plug-in", "provider"], e: Entry) -> PluginView:
            return PluginView(
                kind=kind,
                name=e.name,
                target=e.target,
                distribution=e.distribution,
                version=e.version,
                ok=e.ok,
                error=e.error,
                summary=e.summary,
            )

        return [view("plug-in", e) for e in reg.plugins.values()] + [
            view("provider", e) for e in reg.providers.values()
        ]

    async def debug_trace(
        self, cluster: str, run_id: str | None = None, *, by: str, timeout: float = 30.0
    ) -> TraceBundle:
        """Save-CauDebugTrace: what support needs about the cluster and its run (`run_id`, else
        its newest) in one bundle, every file masked (cau.debugtrace); audited, as it shows the
        nodes' logs."""
        from cau.debugtrace import collect

        bundle = await collect(self, cluster, run_id, by=by, timeout=timeout)
        missing = [m.part for m in bundle.manifest.missing]
        self.audit(by, "cluster.debug_trace", cluster, {"run_id": bundle.manifest.run_id, "missing": missing})
        return bundle

    # --- the sandbox ---------------------------------------------------------------------------

    def _sandbox(self, cluster: str) -> Any:
        cfg = self.config.cluster(cluster)
        if cfg.provider != "sandbox":
            raise ConfigError(f"'{cluster}' is not a sandbox cluster (provider {cfg.provider})")
        return self.open_provider(cluster)

    async def sandbox_view(self, cluster: str) -> SandboxView:
        provider = self._sandbox(cluster)
        snap = await provider.discover()
        sim = provider.sim
        return SandboxView(
            cluster=cluster,
            nodes=[
                SandboxNode(
                    name=n.name,
                    state=n.state.value,
                    in_maintenance=n.in_maintenance,
                    boot_id=n.boot_id,
                    roles=[r.name for r in snap.roles_on(n.name)],
                    installed=sorted(sim.nodes[n.name].installed),
                    pending_restart=sim.nodes[n.name].pending_restart,
                    restarts=sim.nodes[n.name].restarts,
                )
                for n in snap.nodes
            ],
            roles=[
                SandboxRole(
                    name=r.name,
                    kind=r.kind.value,
                    owner=r.owner,
                    instances=list(r.instances),
                    available=sim.role_available(r.name),
                )
                for r in snap.roles
            ],
            violations=[
                SandboxViolation(at=v.get("at"), kind=v["kind"], detail=v["detail"]) for v in sim.violations
            ],
            outages=[
                SandboxOutage(role=o.role, node=o.node, reason=o.reason, started=o.started, ended=o.ended)
                for o in sim.outages
            ],
        )

    async def reset_sandbox(self, cluster: str) -> None:
        """Put a sandbox cluster back to its initial state; refused while a run is unfinished."""
        from cau.sandbox.provider import state_file

        self._sandbox(cluster)
        active = await self.store.active_run(cluster)
        if active is not None:
            raise PreflightError(
                f"run {active.run_id} is not finished on '{cluster}'",
                hint=f"finish it with `cau run {cluster}` (or `cau stop {cluster}` then `cau run`)",
            )
        state_file(self.data_dir, cluster).unlink(missing_ok=True)

    async def stop(self, cluster: str, *, by: str, reason: str = "", actor: str | None = None) -> RunRecord:
        """Ask the run in progress to stop; `by` is recorded in its journal, `actor` (default `by`)
        in the audit trail."""
        self.config.cluster(cluster)
        active = await self.store.active_run(cluster)
        if active is None:
            raise NotFound(f"no Updating Run is in progress on cluster '{cluster}'")
        # A paused or interrupted run records the request too: its resume stops gracefully.
        await self.store.request_stop(active.run_id, by=by, reason=reason)
        self.audit(actor or by, "run.stop", cluster, {"run_id": active.run_id, "reason": reason})
        record = await self.store.get_run(active.run_id)
        assert record is not None
        return record

    async def run_report(self, run: RunRecord) -> RunReport:
        """The saved report of a finished run, or one built now from the journal."""
        saved = await self.store.get_report(run.run_id)
        if saved is not None and run.state is RunState.FINISHED:
            return saved
        return build_report(run, replay(await self.store.events(run.run_id)), now=self.clock.now())

    async def status(self, cluster: str) -> ClusterStatus:
        self.config.cluster(cluster)
        active = await self.store.active_run(cluster)
        run = active
        if run is None:
            last = await self.store.list_runs(ReportQuery(cluster=cluster, last=1))
            run = last[0] if last else None
        report = await self.run_report(run) if run is not None else None
        lock = await self.store.get_lock(cluster)
        return ClusterStatus(cluster, run, report, lock, holder_state(lock, _utcnow()), active is not None)

    async def driven(self, run: RunRecord) -> bool:
        """Whether a live coordinator drives this run now."""
        return driving(await self.store.get_lock(run.cluster), run.run_id, _utcnow())

    async def runs(self, query: ReportQuery) -> list[RunRecord]:
        return await self.store.list_runs(query)

    async def active_run(self, cluster: str) -> RunRecord | None:
        self.config.cluster(cluster)
        return await self.store.active_run(cluster)

    async def get_run(self, run_id: str) -> RunRecord | None:
        return await self.store.get_run(run_id)

    async def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]:
        return await self.store.events(run_id, after_seq)

    async def find_run(self, run_id: str, cluster: str | None = None) -> RunRecord:
        """A run by id or unique prefix (of `cluster`'s runs, when given)."""
        matches = await self.store.find_runs(run_id)
        if cluster is not None:
            elsewhere = [m for m in matches if m.cluster != cluster]
            matches = [m for m in matches if m.cluster == cluster]
            if not matches:
                found = f" (it is a run of '{elsewhere[0].cluster}')" if len(elsewhere) == 1 else ""
                raise NotFound(
                    f"no run '{run_id}' on cluster '{cluster}'{found}",
                    hint=f"`cau report {cluster}` lists its runs",
                )
        if not matches:
            raise NotFound(f"no run '{run_id}'", hint="`cau report CLUSTER` lists a cluster's runs")
        if len(matches) > 1 and not any(m.run_id == run_id for m in matches):
            raise NotFound(f"'{run_id}' matches several runs: {', '.join(m.run_id for m in matches)}")
        return next((m for m in matches if m.run_id == run_id), matches[0])

    async def _left_in_maintenance(self, cluster: str) -> dict[str, tuple[RunRecord, NodeProgress]]:
        """Nodes the journal says cau left in maintenance (the newest record per node)."""
        store = self.store
        runs = await store.list_runs(ReportQuery(cluster=cluster, states=(RunState.FINISHED,), last=50))
        found: dict[str, tuple[RunRecord, NodeProgress]] = {}
        seen: set[str] = set()
        for record in reversed(runs):  # newest first: a node's newest record decides
            progress = replay(await store.events(record.run_id))
            for name, entry in progress.nodes.items():
                if name in seen or entry.status is None:
                    continue
                seen.add(name)
                if entry.left_in_maintenance:
                    found[name] = (record, entry)
        return found

    async def _refuse_unfinished(self, cluster: str) -> None:
        active = await self.store.active_run(cluster)
        if active is not None:
            raise PreflightError(
                f"run {active.run_id} on '{cluster}' is not finished: it undoes what it left itself",
                hint=f"`cau run {cluster}` resumes it (`cau stop {cluster}` first to end it early)",
            )

    async def resume_node(self, cluster: str, node: str, *, by: str) -> NodeResumed:
        """Take a node out of the maintenance cau left it in (a node that did not come back in
        time), using the prior state recorded before cau put it there, and remove what cau left
        in the cluster for that node (found by looking: e.g. constraints of a lost coordinator).
        Refuses when there is neither: it only undoes what cau did."""
        self.config.cluster(cluster)
        found = (await self._left_in_maintenance(cluster)).get(node)
        provider = self.open_provider(cluster)
        owner = this_process("cau node resume")
        try:
            await self.store.acquire_lock(
                cluster,
                owner,
                run_id=found[0].run_id if found else None,
                now=_utcnow(),
                lease_seconds=self.lease_seconds,
            )
            try:
                await self._refuse_unfinished(cluster)
                left = await provider.leftovers(node) if isinstance(provider, CleansUp) else []
                if found is None and not left:
                    raise NotFound(
                        f"cau has no record of leaving '{node}' of '{cluster}' in maintenance, and "
                        "finds nothing of its own there; nothing to undo",
                        hint="a node put in maintenance by someone else is theirs to take out",
                    )
                result = NodeResumed(node=node)
                if found is not None:
                    record, entry = found
                    result.run_id = record.run_id
                    result.roles_failed_back = await self._resume_recorded(provider, record, entry, by=by)
                if isinstance(provider, CleansUp):
                    result.cleaned, result.waiting = await provider.clean_up(node)
                done, problems = await self._expire_silences(cluster, keep=(), only=node)
                result.cleaned += done
                result.waiting += problems
                if isinstance(provider, CleansUp) or done:
                    await self._note_cleanup(cluster, result.cleaned, by=by)
                self.audit(by, "node.resume", f"{cluster}/{node}", result.model_dump(mode="json"))
                return result
            finally:
                await self.store.release_lock(cluster, owner)
        finally:
            await provider.close()

    async def cleanup(self, cluster: str, *, by: str) -> Cleanup:
        """Undo everything cau left in the cluster: nodes the journal says it left in maintenance
        (once they are back), then whatever the provider finds of cau's by looking."""
        self.config.cluster(cluster)
        provider = self.open_provider(cluster)
        owner = this_process("cau cleanup")
        try:
            await self.store.acquire_lock(
                cluster, owner, run_id=None, now=_utcnow(), lease_seconds=self.lease_seconds
            )
            try:
                await self._refuse_unfinished(cluster)
                result = Cleanup(cluster=cluster)
                down: list[str] = []
                for node, (record, entry) in sorted((await self._left_in_maintenance(cluster)).items()):
                    if await provider.boot_id(node) is None:
                        result.waiting.append(f"{node} is still down and stays in maintenance")
                        down.append(node)
                        continue
                    moved = await self._resume_recorded(provider, record, entry, by=by)
                    result.done.append(
                        f"took {node} out of maintenance (run {record.run_id}); "
                        f"roles failed back: {', '.join(moved) or 'none'}"
                    )
                if isinstance(provider, CleansUp):
                    done, waiting = await provider.clean_up(None)
                    await self._note_cleanup(cluster, done, by=by)
                    result.done += done
                    result.waiting += waiting
                # Alertmanager silences cau left (a coordinator lost for good): all but those of
                # the nodes still down in maintenance
                done, waiting = await self._expire_silences(cluster, keep=down)
                await self._note_cleanup(cluster, done, by=by)
                result.done += done
                result.waiting += waiting
                self.audit(by, "cluster.cleanup", cluster, result.model_dump(mode="json"))
                return result
            finally:
                await self.store.release_lock(cluster, owner)
        finally:
            await provider.close()

    async def _expire_silences(
        self, cluster: str, *, keep: Collection[str], only: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Expire cau's Alertmanager silences of the cluster (cau.alerts), found by looking."""
        spec = self.config.cluster(cluster).alertmanager
        if spec is None:
            return [], []
        client = Alertmanager(spec, self.secrets(cluster), self.http_transport)
        return await expire_leftovers(client, cluster, keep, only=only)

    async def _note_cleanup(self, cluster: str, done: list[str], *, by: str) -> None:
        """What a clean-up removed, in the journal of the cluster's last run (its history)."""
        if not done:
            return
        last = await self.store.list_runs(ReportQuery(cluster=cluster, last=1))
        if last:
            note = WarningEvent(message=f"cleaned up by {by}: " + "; ".join(done))
            await self.store.append(last[0].run_id, note, self.clock.now())

    async def _resume_recorded(
        self, provider: ClusterProvider, record: RunRecord, entry: NodeProgress, *, by: str
    ) -> list[str]:
        """Take `entry`'s node out of the maintenance run `record` left it in; the roles moved back."""
        store = self.store
        node = entry.name
        if await provider.boot_id(node) is None:
            raise PreflightError(f"'{node}' is still down; once it is back, run this again")
        moved = await take_out_of_maintenance(
            store=store,
            run_id=record.run_id,
            cluster=record.cluster,
            provider=provider,
            profile=record.profile,
            clock=self.clock,
            data_dir=self.data_dir,
            node=node,
            by=by,
        )
        if moved is None:
            raise PreflightError(
                f"'{node}' could not leave maintenance "
                f"(see `cau report {record.cluster} --run {record.run_id}`)",
                hint="fix the cause, then run this again",
            )
        fresh = await store.get_run(record.run_id)
        assert fresh is not None
        report = build_report(fresh, replay(await store.events(record.run_id)), now=self.clock.now())
        saved = await store.get_report(record.run_id)
        if saved is not None:  # keep the measured outages of the original report
            report = report.model_copy(update={"outages": saved.outages, "availability": saved.availability})
        await store.save_report(record.run_id, report)
        return moved
