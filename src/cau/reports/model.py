"""The run report: what a person or a script reads after (or during) an Updating Run.

Versioned, because reports are kept and exported: `schema_version` changes when a field's meaning
changes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from cau.domain.estimate import Eta

REPORT_SCHEMA_VERSION = 1


class UpdateReport(BaseModel):
    id: str
    title: str
    plugin: str
    status: str  # Succeeded | Failed | Canceled
    restart_required: bool = False
    error_code: int | None = None
    message: str = ""
    attempts: int = 1
    started: datetime | None = None
    finished: datetime | None = None
    details: dict[str, str] = {}


class PauseReport(BaseModel):
    """A time the run paused (a maintenance window's end, an error) before a coordinator resumed it."""

    ts: datetime
    error_id: str
    message: str


class ReadinessNote(BaseModel):
    """A readiness rule (`cau check`) that warned when the run started; the run went ahead."""

    rule: str
    title: str = ""
    nodes: list[str] = []
    impact: str = ""
    fix: str = ""
    detail: str = ""


class CoordinatorReport(BaseModel):
    """A coordinator that took the run: the first, then one per resume."""

    ts: datetime
    owner: str
    resumed: bool = False
    by: str | None = None  # who asked for this start or resume (added later: None is unknown)
    node: str | None = None  # self-updating mode: the cluster node it ran on


class HeldUpdateReport(BaseModel):
    """An update the node did not take on purpose (held, kept back): not installed, not failed."""

    id: str
    title: str
    plugin: str
    reason: str  # held | kept back
    details: dict[str, str] = {}


class StepReport(BaseModel):
    step: str
    key: str
    started: datetime
    finished: datetime | None = None
    ok: bool | None = None  # None: still running, or interrupted
    message: str = ""


class GateWaitReport(BaseModel):
    """A node's wait for its health gates (before its drain, or after its return)."""

    ended: datetime
    phase: str  # admission | return
    outcome: str  # passed | timeout | stopped
    seconds: float
    gates: list[str] = []  # the gates that held it
    answer: str = ""  # on a timeout: the gate's last answer


class NodeReport(BaseModel):
    name: str
    status: str | None  # None while the node is pending or in progress
    state: str  # pending | running | waiting (scanned ahead, for its turn) | done
    current_step: str | None = None
    detail: str = ""
    waiting: str | None = None
    error_id: str | None = None
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    maintenance_started: datetime | None = None
    maintenance_seconds: float = 0.0
    restarts: int = 0
    boot_ids: list[str] = []
    succeeded_count: int = 0
    failed_count: int = 0
    updates: list[UpdateReport] = []
    remaining_updates: list[str] = []
    held_updates: list[HeldUpdateReport] = []  # added later: older reports load without it
    roles_failed_back: list[str] = []
    transient_errors: list[str] = []
    left_in_maintenance: bool = False
    pending_restart: bool = False
    steps: list[StepReport] = []
    gate_waits: list[GateWaitReport] = []  # added with health gates: absent from older reports


class StepRef(BaseModel):
    """A node's step that was in progress during an outage, and for how long of it."""

    node: str
    step: str
    seconds: float = 0.0  # the overlap of the outage with the step

    @property
    def label(self) -> str:
        return f"{self.node} / {self.step}"


class OutageReport(BaseModel):
    role: str
    node: str | None  # where the provider saw the role down (provider-reported outages)
    reason: str
    started: datetime
    ended: datetime | None
    seconds: float
    # Added with availability probes (all optional, so older reports still load):
    source: str = "provider"  # provider | probe
    probe: str | None = None  # the probe's name (its role, numbered if a role has several)
    errors: list[str] = []  # what the failed checks saw: "connection refused", "HTTP 503", ...
    failed_checks: int = 0
    during: list[StepRef] = []  # attribution: the nodes' steps in progress at the time

    @property
    def attribution(self) -> str:
        return ", ".join(s.label for s in self.during) or "between steps"


class MoveReport(BaseModel):
    """One move of a role by the provider (a live migration, a saved or restored state): the
    cluster software's own figures beside what cau's probes measured of the role meanwhile."""

    node: str  # whose step made it (the node drained, or failed back to)
    step: str
    role: str
    method: str  # live | save | restore
    from_node: str | None = None
    to_node: str | None = None
    started: datetime
    seconds: float
    ok: bool = True
    message: str = ""
    reported_seconds: float | None = None  # the cluster software's figures (libvirt's domjobinfo)
    downtime_ms: float | None = None
    data_bytes: int | None = None
    # cau's probes of the role during the move (None: the role has no probe)
    probe_failed_checks: int | None = None
    probe_down_seconds: float | None = None


class RoleAvailability(BaseModel):
    role: str
    downtime_seconds: float
    outages: int
    availability_percent: float
    # Added with availability probes:
    measured: str = "provider"  # probe: cau's probes measured it; provider: the cluster reported it
    probes: list[str] = []  # the probes of this role
    targets: list[str] = []  # what they checked (URLs without user info)
    interval_ms: float | None = None
    probes_sent: int = 0
    probes_ok: int = 0
    probes_failed: int = 0  # late answers included
    probes_late: int = 0  # no answer within the timeout
    response_ms_p50: float | None = None
    response_ms_p99: float | None = None
    response_ms_max: float | None = None
    worst_outage_seconds: float = 0.0
    worst_outage_during: str = ""  # e.g. "node2 / enter_maintenance"
    downtime_by_step: list[StepRef] = []  # downtime per node and step
    downtime_between_steps_seconds: float = 0.0  # outages while no node had a step in progress


class RunReport(BaseModel):
    schema_version: int = REPORT_SCHEMA_VERSION
    run_id: str
    cluster: str
    provider: str
    status: str | None  # None until the run finishes
    state: str  # Running | Paused | Finished
    error_id: str | None = None
    message: str | None = None
    started: datetime
    finished: datetime | None = None
    duration_seconds: float = 0.0
    # Who asked for the run (`user@host (cli)`, `token:NAME`, a dashboard user). Added later:
    # None is unknown (a run journaled before it was recorded); a resume keeps the first starter.
    started_by: str | None = None
    coordinators: list[CoordinatorReport] = []
    pauses: list[PauseReport] = []  # added later: absent from older reports, which had none shown
    profile: dict[str, Any] = {}
    plugins: list[str] = []
    max_failed_nodes: int = 0
    nodes: list[NodeReport] = []
    warnings: list[str] = []
    # added later: absent from older reports (their runs had no readiness rules)
    readiness: list[ReadinessNote] = []
    outages: list[OutageReport] = []
    availability: list[RoleAvailability] = []
    # added with the libvirt provider (absent from older reports): each role move it made
    moves: list[MoveReport] = []
    # added later (None: not predicted, e.g. a run journaled before forecasts): the duration
    # predicted when the run started, and while it runs, when it should end (cau.domain.estimate)
    predicted_seconds: float | None = None
    eta: Eta | None = None

    def count(self, status: str) -> int:
        return sum(1 for n in self.nodes if n.status == status)

    @property
    def updates_installed(self) -> int:
        return sum(n.succeeded_count for n in self.nodes)

    @property
    def updates_failed(self) -> int:
        return sum(n.failed_count for n in self.nodes)

    @property
    def maintenance_seconds(self) -> float:
        return sum(n.maintenance_seconds for n in self.nodes)
