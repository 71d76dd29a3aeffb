"""The small protocols the engine works through. Adapters implement them; the engine imports
nothing else of theirs.

  Clock            now / monotonic / sleep: injected, so tests can run hours in seconds
  Transport        run a command on a node, put a file
  ClusterProvider  observe the cluster, maintenance in/out, failback, restart, wait for return
  UpdaterPlugin    (registered under `cau.plugins`) makes one NodeUpdater per node
  NodeUpdater      scan / stage / install on one node
  AvailabilitySource  measures workload availability during a run (cau's probes), optional
  Store            runs, their journals and reports, cluster locks, documents (baselines,
                   exemptions, compliance scans...) (SQLite, etcd; registered under
                   `cau.stores`, made by a StoreFactory)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel

from cau.domain.cluster import ClusterSnapshot
from cau.domain.documents import D, Document
from cau.domain.profile import FailbackMode, MoveMethod
from cau.domain.results import RunState, Status
from cau.domain.role import ClusterRole
from cau.domain.runs import LockInfo, LockOwner, ReportQuery, RunRecord
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateResult
from cau.journal.events import EventPayload, JournalEvent, ProbeEvent, RoleMove
from cau.reports.model import RunReport


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Transport(Protocol):
    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult: ...

    async def put(self, local: Path, remote: str, *, mode: int | None = None) -> None: ...

    async def close(self) -> None: ...


class NodeSession(Protocol):
    """What a plug-in gets to work on one node."""

    @property
    def node(self) -> str: ...

    @property
    def transport(self) -> Transport: ...


@dataclass(frozen=True)
class MaintenancePrior:
    """A node's state before cau put it into maintenance, recorded before acting, so that exit
    undoes only what cau did."""

    node: str
    was_in_maintenance: bool
    role_owners: dict[str, str | None] = field(default_factory=dict)  # movable roles it hosted
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific (e.g. LB weight)


# How a provider reaches a node (or another host of its configuration, e.g. a maintenance hook
# host), by its name there: returns the Transport to it. Tests give cau.testing.ScriptedCluster.
TransportFactory = Callable[[str], Transport]


@dataclass(frozen=True)
class ProviderContext:
    cluster: str
    clock: Clock
    data_dir: Path
    config_dir: Path | None = None
    # None: the provider connects its own way (SSH for the ssh and pacemaker providers).
    transports: TransportFactory | None = None
    # The cluster's secrets by name (cau.secrets), for commands that need them as environment
    # variables (maintenance hooks); their values are masked wherever cau writes text.
    secrets: Mapping[str, str] = field(default_factory=dict)


class ClusterProvider(Protocol):
    """One cluster, reached through its cluster software (or simulated)."""

    @property
    def cluster(self) -> str: ...

    # Plug-ins used when neither the profile nor the cluster configuration names any.
    default_plugins: tuple[str, ...]

    async def discover(self) -> ClusterSnapshot: ...

    async def session(self, node: str) -> NodeSession: ...

    async def maintenance_prior(self, node: str) -> MaintenancePrior: ...

    async def enter_maintenance(self, node: str, move: MoveMethod, prior: MaintenancePrior) -> None:
        """Put the node in maintenance and move its roles off (or save them, for `save`).
        `prior` is the node's state before cau touched it (recorded before the first attempt):
        the roles it hosted then must run elsewhere when this returns, also on a retry that finds
        them already gone from the node. Idempotent: a node already in maintenance by cau is
        left as it is."""
        ...

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        """Leave maintenance, unless the node was already in maintenance before cau; roles cau
        saved on the node (move = save) run again when it returns. Callers pair it with
        `failback` (a node's run, `cau node resume`), which may wait for what exit began (e.g.
        clone instances starting), except when a failed drain attempt is undone before the
        next attempt: then the next drain follows, and exit alone must leave nothing half-done."""
        ...

    async def failback(self, node: str, prior: MaintenancePrior, mode: FailbackMode) -> list[str]:
        """Move roles back per `mode`; returns the roles moved."""
        ...

    async def boot_id(self, node: str) -> str | None:
        """The node's boot identity, or None when it is down or unreachable."""
        ...

    async def restart(self, node: str) -> None: ...

    async def wait_ready(self, node: str, *, previous_boot_id: str | None, timeout: float) -> str:
        """Wait until the node is back with a new boot identity and its services up; returns the
        new boot id. Raises NodeUnreachable when `timeout` seconds pass first."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class RoleOutage:
    role: str
    started: datetime
    ended: datetime | None
    node: str | None
    reason: str


@runtime_checkable
class ReportsAvailability(Protocol):
    """Optional provider capability: measured role downtime, for the run report."""

    async def role_outages(self, since: datetime, until: datetime | None) -> list[RoleOutage]: ...


# What an availability source asks the coordinator to journal: a role's probe went down
# (ProbeDown), came back with the outage's numbers (ProbeUp), or its running counts
# (ProbeSummary); events of cau.journal.events, holding no secret.
AvailabilityRecorder = Callable[[ProbeEvent], None]


@runtime_checkable
class AvailabilitySource(Protocol):
    """Optional: measures workload availability while a run goes on (e.g. HTTP/TCP probes).

    The coordinator starts it when it takes the run (new or resumed) and stops it after the last
    node finished, before the report is built. Everything it measured reaches the journal through
    `record`, so a crashed coordinator loses little and the report is built from the journal.
    Neither method raises for a failing probe: measuring must never break a run."""

    async def start(self, record: AvailabilityRecorder) -> None: ...

    async def stop(self) -> None:
        """Stop measuring; record the final state (an outage still going on, the last counts)."""
        ...


@runtime_checkable
class HostsCoordinatorRole(Protocol):
    """Optional provider capability (self-updating mode): the coordinator as a clustered role
    that the cluster itself keeps running on one node at a time (CAU's clustered role). Without
    it a cluster can only be updated from outside (remote-updating mode)."""

    async def coordinator_role_owner(self) -> str | None:
        """The node that owns the role now; None when the role is not added, or runs nowhere."""
        ...

    async def add_coordinator_role(self) -> str | None:
        """Add the role (idempotent); returns the node that owns it (None: none yet)."""
        ...

    async def remove_coordinator_role(self) -> None: ...

    async def move_coordinator_role(self, away_from: str) -> str | None:
        """Move the role off `away_from` (its owner, whose turn to be updated has come) to a
        node that can own it; returns that node (None: the next elected, not known yet). Raises
        MaintenanceError when none can."""
        ...


@runtime_checkable
class ChecksCoordinatorNodes(Protocol):
    """Optional capability of a HostsCoordinatorRole whose role runs cau on the nodes (a resource
    agent): what would keep the role's coordinator from working on a node (its cau config does
    not know the cluster, its store is out of reach...), one line per node; empty when none."""

    async def coordinator_node_problems(self) -> list[str]: ...


@runtime_checkable
class ReportsHealth(Protocol):
    """Optional provider capability: what makes the cluster unfit for another drain right now
    (failed resources, unclean nodes...), checked before each node enters maintenance."""

    async def health_problems(self) -> list[str]: ...


@runtime_checkable
class PredictsDrain(Protocol):
    """Optional provider capability: ask the cluster manager itself what draining a node would
    do, by every placement rule it knows (bans, colocations, utilization, clone limits...),
    before anything changes. The maintenance gate refuses a drain that would stop a role."""

    async def drain_problems(self, node: str, move: MoveMethod) -> list[str]:
        """One line per role that would stop rather than move (naming what holds it); empty when
        the drain is safe. `move = save` stops the node's own roles on purpose: only other
        stops count then."""
        ...


@runtime_checkable
class FollowsPlacement(Protocol):
    """Optional provider capability: drain a node by moving its roles where cau says (role ->
    target node), checking each target's room before each move. cau then plans every drain on
    the placement the cluster will have once every move in flight has landed, reserving the
    room those moves need, so several nodes drain and fail back at once without over-committing
    a node (cau.engine.gate). Without it, drains and failbacks pass the gate one at a time and
    the cluster manager places the roles itself."""

    async def enter_maintenance_planned(
        self, node: str, move: MoveMethod, prior: MaintenancePrior, plan: Mapping[str, str]
    ) -> None:
        """As `enter_maintenance`; each role of `plan` still on `node` goes to its planned
        target. A role the plan does not name (it arrived since) is placed by the provider,
        never onto a node without room. Raises MaintenanceError when a target lacks room."""
        ...


@runtime_checkable
class ReportsMoves(Protocol):
    """Optional provider capability: the role moves it made (live migrations, saved and restored
    states) with the cluster software's own figures. The engine takes them right after each
    enter_maintenance, exit_maintenance and failback and journals them with that step's outcome."""

    def take_moves(self, node: str) -> list[RoleMove]:
        """The moves made for `node` since the last call (and forgets them)."""
        ...


@runtime_checkable
class CleansUp(Protocol):
    """Optional provider capability: find what cau changed in the cluster by looking at it, not
    at the journal (e.g. Pacemaker constraints named `cau-*`, resources cau stopped in place),
    and undo it: the way out after a coordinator was lost with its journal, or a journal that
    says less than the cluster shows."""

    async def leftovers(self, node: str | None = None) -> list[str]:
        """What cau left (on `node`, or anywhere), one line each; empty when nothing."""
        ...

    async def clean_up(self, node: str | None = None) -> tuple[list[str], list[str]]:
        """Undo what `leftovers` finds: (what was done, what must wait, with why)."""
        ...


ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class PluginContext:
    run_id: str | None
    cluster: str
    clock: Clock
    data_dir: Path
    # The cluster's secrets by name (cau.secrets): plug-ins that run admin-written commands pass
    # them as environment variables. Their values are masked wherever cau writes text.
    secrets: Mapping[str, str] = field(default_factory=dict)


class NodeUpdater(Protocol):
    async def scan(self) -> ScanResult: ...

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]: ...

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        """Install; a failed update is a result, an exception means the plug-in itself failed.
        The plug-in never restarts the node: it reports `restart_required` and cau restarts."""
        ...


@dataclass(frozen=True)
class PackageLevel:
    """A package on a node against a minimum version, compared by the node's own package manager."""

    name: str
    installed: str | None  # None: not installed
    meets: bool  # installed, at the minimum or above, and in a sound state (not half-configured)


@runtime_checkable
class ChecksPackageLevels(Protocol):
    """Optional NodeUpdater capability (package plug-ins: apt, dnf), for compliance baselines:
    each package's installed version and whether it is at least a minimum."""

    async def package_levels(self, minimums: Mapping[str, str]) -> dict[str, PackageLevel]: ...


class UpdaterPlugin(Protocol):
    """The class registered under the `cau.plugins` entry point."""

    name: ClassVar[str]
    Args: ClassVar[type[BaseModel]]

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater: ...


class ProviderFactory(Protocol):
    """The class registered under the `cau.providers` entry point."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> ClusterProvider: ...


class Store(Protocol):
    """Where runs, their journals, their reports and the cluster locks are kept.

    Every method is a coroutine: a backend reached over the network (PostgreSQL for fleets, the
    cluster's own etcd in self-updating mode) never blocks the event loop, and one on a local
    file runs its blocking calls off it. The journal is append-only and ordered per run (`seq`
    from 1, no gaps, whatever appends concurrently); `acquire_lock` decides with
    `cau.lease.take_over` inside one transaction. The contract: tests/contract/test_store.py."""

    # runs
    async def create_run(self, run: RunRecord) -> None: ...

    async def get_run(self, run_id: str) -> RunRecord | None: ...

    async def find_runs(self, prefix: str) -> list[RunRecord]:
        """Runs whose id starts with `prefix`, oldest first."""
        ...

    async def active_run(self, cluster: str) -> RunRecord | None:
        """The cluster's newest run that has not finished (running or paused)."""
        ...

    async def list_runs(self, query: ReportQuery) -> list[RunRecord]:
        """Matching runs, oldest first (`last`: only the newest N)."""
        ...

    async def set_run_state(
        self,
        run_id: str,
        state: RunState,
        *,
        owner: str | None = None,
        status: Status | None = None,
        finished: datetime | None = None,
        error_id: str | None = None,
        message: str | None = None,
    ) -> None: ...

    async def request_stop(self, run_id: str, *, by: str, reason: str) -> None: ...

    async def save_report(self, run_id: str, report: RunReport) -> None: ...

    async def get_report(self, run_id: str) -> RunReport | None: ...

    # journal
    async def append(
        self, run_id: str, payload: EventPayload, ts: datetime, *, node: str | None = None
    ) -> JournalEvent:
        """Durable when it returns: an intent is on disk before the act it announces."""
        ...

    async def events(self, run_id: str, after_seq: int = 0) -> list[JournalEvent]: ...

    # cluster locks
    async def acquire_lock(
        self,
        cluster: str,
        owner: LockOwner,
        *,
        run_id: str | None,
        now: datetime,
        lease_seconds: float,
        force: bool = False,
    ) -> LockInfo:
        """Take (or keep) the cluster's lock; raises LockHeld while a live coordinator holds it."""
        ...

    async def set_lock_run(self, cluster: str, owner: LockOwner, run_id: str) -> None: ...

    async def renew_lock(
        self, cluster: str, owner: LockOwner, *, now: datetime, lease_seconds: float
    ) -> bool:
        """Extend the lease; False when `owner` no longer holds the lock (it must stop acting)."""
        ...

    async def release_lock(self, cluster: str, owner: LockOwner) -> None: ...

    async def get_lock(self, cluster: str) -> LockInfo | None: ...

    # Self-updating mode: each cluster's clustered role (cau.domain.role), where every node's
    # coordinator reads it.
    async def get_role(self, cluster: str) -> ClusterRole | None: ...

    async def list_roles(self) -> list[ClusterRole]: ...

    async def put_role(self, role: ClusterRole) -> None: ...

    async def delete_role(self, cluster: str) -> bool: ...

    # Documents (cau.domain.documents: baselines, cluster groups, exemptions, compliance scans):
    # each kind's records by key, kept as their model's JSON (masked) and read back into it.
    async def get_document(self, model: type[D], key: str) -> D | None: ...

    async def list_documents(self, model: type[D]) -> list[D]:
        """Every record of the model's kind, by key."""
        ...

    async def put_document(self, document: Document) -> None:
        """Store it under its kind and key, replacing what was there."""
        ...

    async def delete_document(self, model: type[Document], key: str) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class StoreContext:
    """What every store factory is given: this installation's data directory (where a store kept
    in a local file lives)."""

    data_dir: Path


class StoreFactory(Protocol):
    """The class registered under the `cau.stores` entry point (`sqlite`, `etcd`...)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    @classmethod
    def open(cls, options: BaseModel, ctx: StoreContext) -> Store: ...
