"""Self-updating mode: the cluster updates itself through a clustered coordinator role (CAU's
Add/Get/Set/Enable/Disable/Remove-CauClusterRole and "update now").

The role's record (cau.domain.role) lives in the run store. The coordinator is `cau daemon
CLUSTER --node NODE`, run by the cluster on the node that owns the role: one pass resumes the
role's unfinished run or starts the one asked for, and when the coordinator's own node is next
it moves the role away and stops (cau.engine.coordinator hands over); the cluster then starts a
coordinator on the new owner, which resumes the run from the journal. For a simulated cluster,
`cau daemon CLUSTER` stands in for the cluster's resource manager: it starts each pass as a new
process on the role's owner, so every hand-over is a real one between processes.

A role's schedule (cau.domain.schedule) starts runs by itself while the role is enabled; a start
missed while no coordinator was up runs late within its window (or grace period) or is skipped
(cau.domain.due); the `window` run option keeps the run's nodes inside the maintenance window.

A cluster without a resource manager (the `ssh` provider) runs the daemon on every node, and the
store's lock elects the leader of each run (ElectedRole). On a Pacemaker cluster the role is a
resource of cau's own agent, ocf:cau:coordinator (cau.providers.pacemaker_role), which runs
`cau daemon CLUSTER --node NODE --resident` on the node Pacemaker chose.

A run that paused for an error (not for its window) is not resumed by the daemon on its own:
`cau role update-now` (or `cau stop`) is the operator's answer, as `cau run` is in remote mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from cau.domain.due import due
from cau.domain.profile import RunProfile, build_profile
from cau.domain.results import ErrorId, RunState
from cau.domain.role import ClusterRole, UpdateRequest
from cau.domain.schedule import Schedule
from cau.domain.validation import describe_errors
from cau.errors import CauError, ConfigError, LockHeld, NotFound, PreflightError
from cau.journal.progress import replay
from cau.ports import ChecksCoordinatorNodes, ClusterProvider, HostsCoordinatorRole
from cau.redact import tail
from cau.service import NoRunDue
from cau.views import PluginView, ReadinessCheck, RoleView

if TYPE_CHECKING:
    from cau.engine.coordinator import RunOutcome
    from cau.service import Service

OUTSIDE_WINDOW = ErrorId.OUTSIDE_WINDOW.value

# Who a role's runs are started and resumed by, in the journal and the audit trail.
ROLE_ACTOR = "role:{cluster}@{node}"


class PassResult(StrEnum):
    """What one coordinator pass of `cau daemon CLUSTER --node NODE` did (its exit code too)."""

    IDLE = "idle"  # nothing asked for, nothing to resume
    FINISHED = "finished"  # a run ran to its end (or paused: `cau role show` says)
    HANDED_OVER = "handed-over"  # our node is next: the role moved, another coordinator goes on
    NOT_OWNER = "not-owner"  # the role runs on another node now: nothing done here


@dataclass(frozen=True)
class Pass:
    result: PassResult
    run_id: str | None = None
    message: str = ""
    outcome: RunOutcome | None = None


class SelfUpdating:
    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def _now(self) -> datetime:
        return self.svc.clock.now()

    def _schedule(self, text: str | None, tz: str | None, start: str | None) -> str | None:
        """A schedule's canonical form, checked: it must still have a start to come."""
        if text is None:
            if tz is not None or start is not None:
                raise ConfigError("--tz and --start go with --schedule")
            return None
        if not text:
            return None  # "" clears it
        parsed = Schedule.parse(text, tz=tz, start=start)
        if not parsed.next_starts(self._now(), 1):
            raise ConfigError(
                f"the schedule '{parsed.spec()}' has no start after now",
                hint="give a start in the future (a one-off date already passed?)",
            )
        return parsed.spec()

    # --- the role's record ---------------------------------------------------------------------------

    def _host(self, cluster: str, provider: ClusterProvider) -> HostsCoordinatorRole:
        if getattr(provider, "coordinator_election", False):
            return ElectedRole(self.svc, cluster)  # no resource manager: the store elects
        if not isinstance(provider, HostsCoordinatorRole):
            kind = self.svc.config.cluster(cluster).provider
            raise ConfigError(
                f"cluster '{cluster}' ({kind} provider) cannot host a clustered coordinator role",
                hint="update it from outside instead (remote-updating mode: `cau run`); self-updating"
                " works on sandbox, ssh and pacemaker clusters",
            )
        return provider

    async def _role(self, cluster: str) -> ClusterRole:
        self.svc.config.cluster(cluster)
        role = await self.svc.store.get_role(cluster)
        if role is None:
            raise NotFound(
                f"cluster '{cluster}' has no clustered role", hint=f"`cau role add {cluster}` adds one"
            )
        return role

    def stored_profile(self, profile: str | None) -> dict[str, Any] | None:
        """A stored profile's options, read where `cau role` runs (kept in the role's record)."""
        if profile is None:
            return None
        stored = self.svc.access.get_profile(profile)
        if stored is None:
            raise NotFound(f"no stored profile '{profile}'", hint="`cau profile list` shows them")
        return dict(stored.options)

    def profile_of(self, role: ClusterRole) -> RunProfile:
        """The profile of the role's runs, from its record alone (what a coordinator on a node has)."""
        base = dict(role.profile_options) if role.profile_options is not None else None
        return self.check_profile(None, dict(role.options), base=base)

    def check_profile(
        self, profile: str | None, options: dict[str, Any], *, base: dict[str, Any] | None = None
    ) -> RunProfile:
        """The role's runs' profile: the stored profile (or `base`, its options) under the options."""
        if base is None:
            base = self.stored_profile(profile)
        try:
            built = build_profile(None, options, base=base)
        except ValidationError as exc:
            raise ConfigError("the role's run options: " + "; ".join(describe_errors(exc))) from exc
        if built.warn_after and built.stop_after and built.warn_after >= built.stop_after:
            raise ConfigError("the role's run options: warn_after must be shorter than stop_after")
        return built

    async def readiness(self, role: ClusterRole, provider: ClusterProvider) -> list[ReadinessCheck]:
        """What self-updating needs of this cluster and role, each check with what it found."""
        checks: list[ReadinessCheck] = []
        snapshot = await provider.discover()
        owners = [n.name for n in snapshot.nodes if n.is_up and not n.in_maintenance]
        checks.append(
            ReadinessCheck(
                check="the coordinator role can move: two nodes or more can own it",
                ok=len(owners) >= 2,
                detail=f"online and out of maintenance: {', '.join(owners) or 'none'}",
            )
        )
        if getattr(provider, "coordinator_runs_cau_on_nodes", False):
            checks.append(await self._same_cau_everywhere(provider, owners))
        if isinstance(provider, ChecksCoordinatorNodes):
            problems = await provider.coordinator_node_problems()
            checks.append(
                ReadinessCheck(
                    check="every node's cau knows the cluster and reaches the store",
                    ok=not problems,
                    detail="; ".join(problems) or ", ".join(n.name for n in snapshot.nodes),
                )
            )
        try:
            built = self.profile_of(role)
            checks.append(
                ReadinessCheck(check="the role's profile is valid", ok=True, detail=role.profile or "")
            )
        except ConfigError as exc:
            built = None
            checks.append(ReadinessCheck(check="the role's profile is valid", ok=False, detail=exc.message))
        if built is not None and built.window is not None:
            opening = built.maintenance_window.next_open(self._now()) if built.maintenance_window else None
            checks.append(
                ReadinessCheck(
                    check="the maintenance window opens again",
                    ok=opening is not None
                    or bool(built.maintenance_window and built.maintenance_window.contains(self._now())),
                    detail=built.window,
                )
            )
        if role.schedule:
            nexts = Schedule.parse(role.schedule).next_starts(self._now(), 1)
            checks.append(
                ReadinessCheck(
                    check="the schedule has a start to come",
                    ok=bool(nexts),
                    detail=f"next {nexts[0]:%Y-%m-%d %H:%M} UTC" if nexts else "none left",
                )
            )
        return checks

    async def _same_cau_everywhere(self, provider: ClusterProvider, nodes: list[str]) -> ReadinessCheck:
        """Every node that may lead runs the same cau with the same plug-ins as this machine
        (`cau plugins --output json` there): a coordinator elected on a node without them, or
        with others, would run another run than the one configured."""
        check = "cau and its plug-ins are the same on every node that may lead"

        def installed(views: list[PluginView]) -> set[tuple[str, str, str | None, str | None]]:
            return {(v.kind, v.name, v.distribution, v.version) for v in views if v.ok}

        mine = installed(self.svc.plugins())
        differ: list[str] = []
        for name in nodes:
            try:
                session = await provider.session(name)
                ran = await session.transport.run(NODE_PLUGINS_COMMAND, timeout=60)
            except CauError as exc:
                differ.append(f"{name}: {exc}")
                continue
            if not ran.ok:
                differ.append(
                    f"{name}: `{NODE_PLUGINS_COMMAND}` failed (exit {ran.exit_status}):"
                    f" {tail(ran.stderr, 120)}"
                )
                continue
            try:
                theirs = installed(_PLUGIN_VIEWS.validate_json(ran.stdout))
            except ValidationError:
                differ.append(f"{name}: `{NODE_PLUGINS_COMMAND}` answered what this cau cannot read")
                continue
            missing, extra = sorted(mine - theirs), sorted(theirs - mine)
            if missing or extra:
                said = [f"lacks {n} {v or ''}".rstrip() for _, n, _, v in missing]
                said += [f"has {n} {v or ''}".rstrip() for _, n, _, v in extra]
                differ.append(f"{name}: " + ", ".join(said))
        return ReadinessCheck(check=check, ok=not differ, detail="; ".join(differ) or ", ".join(nodes))

    async def view(
        self,
        role: ClusterRole,
        provider: ClusterProvider | None = None,
        *,
        check: bool = False,
        readiness: list[ReadinessCheck] | None = None,
    ) -> RoleView:
        """The role as shown; with `check`, its readiness checks too (they observe the cluster:
        on an ssh cluster they ask every node), unless `readiness` already holds them."""
        opened = provider or self.svc.open_provider(role.cluster)
        try:
            host = self._host(role.cluster, opened)
            owner = await host.coordinator_role_owner()
            if check and readiness is None:
                readiness = await self.readiness(role, opened)
        finally:
            if provider is None:
                await opened.close()
        active = await self.svc.store.active_run(role.cluster)
        schedule = Schedule.parse(role.schedule) if role.schedule else None
        window = role.options.get("window")
        return RoleView(
            cluster=role.cluster,
            enabled=role.enabled,
            owner=owner,
            elected=isinstance(host, ElectedRole),
            profile=role.profile,
            options=dict(role.options),
            update_requested=role.update_requested,
            schedule=role.schedule,
            schedule_text=schedule.describe() if schedule else None,
            next_starts=schedule.next_starts(self._now(), 3) if schedule else [],
            window=window if isinstance(window, str) else None,
            active_run=active.run_id if active is not None else None,
            readiness=readiness or [],
            updated=role.updated,
            updated_by=role.updated_by,
        )

    async def add(
        self,
        cluster: str,
        *,
        profile: str | None,
        options: dict[str, Any],
        enabled: bool,
        by: str,
        schedule: str | None = None,
        tz: str | None = None,
        start: str | None = None,
    ) -> RoleView:
        """Add-CauClusterRole: checked first (the provider can host it, at least two nodes can
        own it, the profile is valid); nothing is changed when a check fails."""
        self.svc.config.cluster(cluster)
        if await self.svc.store.get_role(cluster) is not None:
            raise ConfigError(
                f"cluster '{cluster}' has a clustered role already",
                hint=f"`cau role set {cluster}` changes it, `cau role remove {cluster}` removes it",
            )
        stored = self.stored_profile(profile)
        self.check_profile(profile, options, base=stored)
        spec = self._schedule(schedule, tz, start)
        provider = self.svc.open_provider(cluster)
        try:
            host = self._host(cluster, provider)
            now = self._now()
            role = ClusterRole(
                cluster=cluster, enabled=enabled, profile=profile, options=options, schedule=spec,
                profile_options=stored,
                last_considered=now, created=now, updated=now, updated_by=by,
            )  # fmt: skip
            readiness = await self.readiness(role, provider)
            failed = [c for c in readiness if not c.ok]
            if failed:
                raise PreflightError(
                    f"the clustered role of '{cluster}' is not ready: "
                    + "; ".join(f"{c.check} ({c.detail})" for c in failed),
                    hint="nothing was changed; bring the other nodes online and out of maintenance,"
                    " or fix what the check names",
                )
            # The record first: the coordinator the cluster starts looks for it at once. A role
            # the cluster cannot start is removed again (add_coordinator_role), and so is this.
            await self.svc.store.put_role(role)
            try:
                await host.add_coordinator_role()
            except BaseException:
                await self.svc.store.delete_role(cluster)
                raise
            detail = {"profile": profile, "options": options, "enabled": enabled, "schedule": spec}
            self.svc.audit(by, "role.add", cluster, detail)
            return await self.view(role, provider, readiness=readiness)
        finally:
            await provider.close()

    async def show(self, cluster: str, *, check: bool = True) -> RoleView:
        """Get-CauClusterRole; `check=False` leaves out the readiness checks (a watcher that
        only needs where the role runs, polling)."""
        return await self.view(await self._role(cluster), check=check)

    async def set(
        self,
        cluster: str,
        *,
        by: str,
        profile: str | None = None,
        options: dict[str, Any] | None = None,
        enabled: bool | None = None,
        schedule: str | None = None,
        tz: str | None = None,
        start: str | None = None,
    ) -> RoleView:
        """Set-/Enable-/Disable-CauClusterRole. A run in progress keeps the options it started
        with; disabling starts nothing new (a run in progress goes on unless stopped)."""
        role = await self._role(cluster)
        changes: dict[str, Any] = {"updated": self._now(), "updated_by": by}
        if profile is not None:
            changes["profile"] = profile or None  # "" clears it
            changes["profile_options"] = self.stored_profile(profile or None)  # as it is now
        if options is not None:
            changes["options"] = options
        if enabled is not None:
            changes["enabled"] = enabled
        if schedule is not None:
            changes["schedule"] = self._schedule(schedule, tz, start)
            changes["last_considered"] = changes["updated"]  # the new schedule counts from now
        elif tz is not None or start is not None:
            raise ConfigError("--tz and --start go with --schedule")
        if enabled and not role.enabled:
            changes["last_considered"] = changes["updated"]  # starts missed while disabled: none
        changed = role.model_copy(update=changes)
        self.profile_of(changed)
        if enabled:
            provider = self.svc.open_provider(cluster)
            try:
                failed = [c for c in await self.readiness(changed, provider) if not c.ok]
            finally:
                await provider.close()
            if failed:
                raise PreflightError(
                    f"the clustered role of '{cluster}' is not ready: "
                    + "; ".join(f"{c.check} ({c.detail})" for c in failed),
                    hint=f"`cau role show {cluster}` lists the checks; nothing was changed",
                )
        await self.svc.store.put_role(changed)
        detail = {
            k: v
            for k, v in changes.items()
            if k not in ("updated", "updated_by", "last_considered", "profile_options")
        }
        action = "role.set"
        if enabled is not None and len(detail) == 1:
            action = "role.enable" if enabled else "role.disable"
        self.svc.audit(by, action, cluster, detail)
        return await self.view(changed)

    async def request_update(self, cluster: str, *, by: str) -> RoleView:
        """ "Update now": the role's coordinator starts a run at its next pass."""
        role = await self._role(cluster)
        self.profile_of(role)
        asked = role.model_copy(update={"update_requested": UpdateRequest(at=self._now(), by=by)})
        await self.svc.store.put_role(asked)
        self.svc.audit(by, "role.update_now", cluster, {})
        return await self.view(asked)

    async def remove(self, cluster: str, *, by: str) -> None:
        """Remove-CauClusterRole. Refused while the role's run is unfinished: stop it first."""
        role = await self._role(cluster)
        active = await self.svc.store.active_run(cluster)
        if active is not None:
            raise LockHeld(
                f"run {active.run_id} on '{cluster}' is unfinished: the role that drives it stays",
                owner=active.owner or "the role",
                hint=f"`cau stop {cluster}`, wait for the run to end, then remove the role",
            )
        provider = self.svc.open_provider(cluster)
        try:
            await self._host(cluster, provider).remove_coordinator_role()
        finally:
            await provider.close()
        await self.svc.store.delete_role(role.cluster)
        self.svc.audit(by, "role.remove", cluster, {})

    # --- the coordinator: one pass on the role's owner ----------------------------------------------

    async def _scheduled(self, role: ClusterRole) -> tuple[str | None, str | None]:
        """Whether the schedule starts a run now (the message saying so; None: no run), and what
        was said of a start that passed without a run; recording up to when the schedule was
        considered. A disabled role considers it too: its starts are skipped, not kept for when
        it is enabled again."""
        if role.schedule is None:
            return None, None
        now = self._now()
        since = role.last_considered or role.created
        options = self.profile_of(role)
        answer = due(Schedule.parse(role.schedule), since, now, options.maintenance_window)
        if answer.start is not None or role.last_considered is None:
            await self.svc.store.put_role(role.model_copy(update={"last_considered": now}))
        said = None
        if answer.start is not None:  # a start passed: run or skipped, either way said
            said = answer.message
            if not role.enabled:
                said = f"the role is disabled: no run for the start at {answer.start:%Y-%m-%d %H:%M} UTC"
            self.svc.audit(
                f"role:{role.cluster}", "role.schedule", role.cluster,
                {"message": said, "run": answer.run_now and role.enabled},
            )  # fmt: skip
        if answer.run_now and role.enabled:
            return answer.message, None
        return None, said

    async def coordinator_pass(self, cluster: str, node: str) -> Pass:
        """What `cau daemon CLUSTER --node NODE` does once: resume the role's unfinished run, or
        start the run asked for or scheduled; nothing when this node's coordinator may not act
        (the role runs elsewhere, or this node stepped aside for its own update)."""
        role = await self._role(cluster)
        provider = self.svc.open_provider(cluster)
        try:
            host = self._host(cluster, provider)
            owner = await host.coordinator_role_owner()
        finally:
            await provider.close()
        if isinstance(host, ElectedRole):
            aside = await host.stepped_aside(role, node)
            if aside:
                return Pass(PassResult.NOT_OWNER, message=aside)
        elif owner != node:
            return Pass(PassResult.NOT_OWNER, message=f"the role runs on {owner or 'no node'}, not {node}")
        actor = ROLE_ACTOR.format(cluster=cluster, node=node)
        skipped: list[str] = []  # a scheduled start that passed without a run, said by the pass

        async def decide() -> tuple[RunProfile, str] | None:
            """Under the cluster's lock: the run asked for, or the one the schedule starts."""
            fresh = await self._role(cluster)
            if fresh.update_requested is not None:
                asked_by = fresh.update_requested.by
                # Taken before the run starts: a failed start is not retried forever.
                await self.svc.store.put_role(fresh.model_copy(update={"update_requested": None}))
            else:
                scheduled, said = await self._scheduled(fresh)
                if scheduled is None:
                    skipped.extend([said] if said else [])
                    return None
                asked_by = f"the schedule ({scheduled})"
            return self.profile_of(fresh), f"{asked_by} via {actor}"

        active = await self.svc.store.active_run(cluster)
        if active is not None and active.state is RunState.PAUSED and active.error_id != OUTSIDE_WINDOW:
            # Paused for an error: resumed when the operator says so (update-now), not by retrying
            # what failed at every pass. A window's pause resumes by itself when the window opens.
            if role.update_requested is None:
                return Pass(
                    PassResult.IDLE,
                    active.run_id,
                    f"run {active.run_id} is paused ({active.message or active.error_id});"
                    f" `cau role update-now {cluster}` resumes it, `cau stop {cluster}` ends it",
                )
            await self.svc.store.put_role(role.model_copy(update={"update_requested": None}))
            actor = f"{role.update_requested.by} via {actor}"
        # a resumed run keeps the options it started with (the record's); a new one is decided
        profile = active.profile if active is not None else build_profile(None, {})
        try:
            outcome = await self.svc.run(
                cluster, profile, actor=actor, own_node=node, owner_label=f"{LEADER_LABEL}{node}",
                role_host=host if isinstance(host, ElectedRole) else None, decide=decide,
            )  # fmt: skip
        except NoRunDue:
            return Pass(PassResult.IDLE, message="; ".join(skipped))
        except LockHeld as exc:
            return Pass(PassResult.IDLE, message=f"{exc} (another coordinator drives the cluster)")
        if outcome.handed_over:
            return Pass(PassResult.HANDED_OVER, outcome.run_id, outcome.message or "", outcome)
        return Pass(PassResult.FINISHED, outcome.run_id, outcome.message or "", outcome)


# What a node answers about its cau (readiness: the same everywhere).
NODE_PLUGINS_COMMAND = "cau plugins --output json"
_PLUGIN_VIEWS: TypeAdapter[list[PluginView]] = TypeAdapter(list[PluginView])

# The lock owner's label of a role's coordinator: `cau status` shows it, and an elected role's
# owner is read from it.
LEADER_LABEL = "cau daemon on "


class ElectedRole:
    """The coordinator role of a cluster without a resource manager (the `ssh` provider): `cau
    daemon CLUSTER --node NODE` runs on every node, and the one whose pass takes the cluster's
    lock in the store (with its lease, cau.lease) leads: no election of cau's own. Handing over
    is stepping aside: the leader records that its node is next and releases the lock; the
    daemon of another node takes it and resumes the run; the stepped-aside node's daemon acts
    again once its node is updated."""

    def __init__(self, svc: Service, cluster: str) -> None:
        self.svc = svc
        self.cluster = cluster

    async def coordinator_role_owner(self) -> str | None:
        lock = await self.svc.store.get_lock(self.cluster)
        if lock is None or lock.lease_expires <= self.svc.clock.now():
            return None
        label = lock.owner.label
        return label[len(LEADER_LABEL) :] if label.startswith(LEADER_LABEL) else None

    async def add_coordinator_role(self) -> str | None:
        return await self.coordinator_role_owner()  # elected when a run is due

    async def remove_coordinator_role(self) -> None:
        return None  # nothing in the cluster: the daemons find no role and do nothing

    async def move_coordinator_role(self, away_from: str) -> str | None:
        role = await self.svc.store.get_role(self.cluster)
        if role is not None:
            await self.svc.store.put_role(role.model_copy(update={"stepped_aside": away_from}))
        return None  # the next daemon to take the lock leads

    async def stepped_aside(self, role: ClusterRole, node: str) -> str | None:
        """Why `node`'s coordinator must not act now, or None."""
        if role.stepped_aside != node:
            return None
        active = await self.svc.store.active_run(self.cluster)
        if active is None:
            return None
        progress = replay(await self.svc.store.events(active.run_id))
        if node in progress.nodes and progress.nodes[node].result is None:
            return f"{node} stepped aside for its own update in run {active.run_id}"
        return None
