"""What the service layer answers with: one pydantic view per answer, serialised as they are by
`cau ... --output json` and by the REST API, so the two cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from cau.domain.access import Role
from cau.domain.batches import Batch
from cau.domain.estimate import Basis, Overrun, RunPlan
from cau.domain.profile import OverrunPolicy
from cau.domain.role import UpdateRequest
from cau.domain.updates import HeldUpdate, Update


class NodeScan(BaseModel):
    """What one node would install (Invoke-CauScan), and what it holds back on purpose."""

    node: str
    reachable: bool = True
    restart_pending: bool = False
    errors: dict[str, str] = Field(default_factory=dict, description="by plug-in (or 'node')")
    updates: list[Update] = Field(default_factory=list)
    held: list[HeldUpdate] = Field(default_factory=list, description="held or kept back: not installed")


class ClusterScan(BaseModel):
    cluster: str
    scanned: datetime
    nodes: list[NodeScan]
    forecast: RunForecast | None = Field(None, description="what a run would take (None: not predicted)")

    @property
    def failed_nodes(self) -> list[str]:
        """The nodes whose scan did not complete: unreachable, or a plug-in failed there."""
        return [n.node for n in self.nodes if not n.reachable or n.errors]


class PluginView(BaseModel):
    """An installed plug-in or provider (Get-CauPlugin), or one that failed to load."""

    kind: Literal["plug-in", "provider"]
    name: str
    target: str
    distribution: str | None
    version: str | None
    ok: bool
    error: str | None
    summary: str


class NodeResumed(BaseModel):
    """`cau node resume`: a node taken out of the maintenance cau left it in."""

    node: str
    run_id: str | None = Field(None, description="the run that left it in maintenance, if one did")
    roles_failed_back: list[str] = Field(default_factory=list)
    cleaned: list[str] = Field(default_factory=list, description="cau's leftovers removed, found by looking")
    waiting: list[str] = Field(default_factory=list, description="what could not be undone yet, and why")


class Cleanup(BaseModel):
    """`cau cleanup`: everything cau left in a cluster, undone."""

    cluster: str
    done: list[str] = Field(default_factory=list)
    waiting: list[str] = Field(default_factory=list)


class HostKeyTrusted(BaseModel):
    node: str
    fingerprint: str
    result: str = Field(description="recorded, unchanged or replaced")


class SandboxNode(BaseModel):
    name: str
    state: str
    in_maintenance: bool
    boot_id: str | None
    roles: list[str]
    installed: list[str]
    pending_restart: bool
    restarts: int


class SandboxRole(BaseModel):
    name: str
    kind: str
    owner: str | None
    instances: list[str]
    available: bool


class SandboxOutage(BaseModel):
    role: str
    node: str | None
    reason: str
    started: datetime
    ended: datetime | None


class SandboxViolation(BaseModel):
    at: datetime | None = None
    kind: str
    detail: str


class SandboxView(BaseModel):
    """A sandbox cluster as it is: nodes, where roles run, installed updates, outages."""

    cluster: str
    nodes: list[SandboxNode]
    roles: list[SandboxRole]
    violations: list[SandboxViolation]
    outages: list[SandboxOutage]


class SessionView(BaseModel):
    """A signed-in browser session as an admin sees it (`cau session list`, GET /api/v1/sessions).
    Never its cookie, the cookie's hash or its CSRF token: `handle` is a random public id that only
    serves to end it."""

    handle: str
    name: str = Field(description="who: a user's name, or token:NAME")
    role: Role = Field(description="the role it holds now (its credential's, never more)")
    via: Literal["password", "token"] = Field(description="how it signed in")
    token_id: str | None = Field(None, description="the API token it signed in with, if it did")
    signed_in: datetime
    expires: datetime
    client: str | None = Field(None, description="the address it signed in from; None: not recorded")


class ReadinessCheck(BaseModel):
    """One of self-updating mode's readiness checks (Test-CauSetup's, for the role)."""

    check: str
    ok: bool
    detail: str = ""


class RoleView(BaseModel):
    """`cau role show` / the API: the record, where the role runs now, and what it is doing."""

    cluster: str
    enabled: bool
    owner: str | None  # the node whose coordinator acts for the role now
    # True: no resource manager keeps the role; the nodes' daemons elect a leader per run
    # through the store's lock (the `ssh` provider). False: the cluster keeps it on `owner`.
    elected: bool = False
    profile: str | None
    options: dict[str, Any]
    update_requested: UpdateRequest | None
    schedule: str | None = None  # its compact form (`cau role set --schedule`)
    schedule_text: str | None = None  # for people: "the last Tuesday of every month at 03:00 UTC"
    next_starts: list[datetime] = []  # the next scheduled starts (UTC); runs start only when enabled
    window: str | None = None  # the maintenance window of its runs (the `window` run option)
    active_run: str | None  # the role's unfinished run, if any
    readiness: list[ReadinessCheck] = []  # checked at add and enable; a failed one refuses them
    updated: datetime
    updated_by: str


class RunForecast(BaseModel):
    """What a run would take, before it starts (`cau run --dry-run`, `cau scan`, the API's
    preview): the batches cau would form, the predicted duration from past runs (cau.domain
    .estimate) and whether it fits before the run's stop_after and the end of its window."""

    cluster: str
    predicted_seconds: float
    plus_minus_seconds: float
    basis: Basis = Field(description="node | class | cluster (learnt from past runs) or default (rough)")
    history_runs: int = Field(description="past runs of the cluster the prediction learnt from")
    batches: list[Batch] = Field(default_factory=list)
    in_progress_limit: int = 1
    plan: RunPlan
    overruns: list[Overrun] = Field(default_factory=list, description="the limits it would exceed")
    on_overrun: OverrunPolicy = OverrunPolicy.WARN

    @property
    def rough(self) -> bool:
        return self.basis is Basis.DEFAULT

    def headline(self) -> str:
        from cau.domain.durations import format_duration

        if self.rough:
            source = "rough: no history of this cluster, default step durations"
        else:
            source = f"from {self.history_runs} past run(s), per {self.basis.value} at the roughest"
        return (
            f"predicted duration {format_duration(self.predicted_seconds)} "
            f"(±{format_duration(self.plus_minus_seconds)}; {source})"
        )


ClusterScan.model_rebuild()
