"""The run journal's events: one pydantic model per kind of event, and per step for the intents
and outcomes of the steps (the side effects of a node's cycle).

    JournalEvent            where an event stands: run id, sequence number, time, node
      .payload: Payload     what happened, one of:
        RunCreated Coordinator NodeStarted Progress Waiting Warning ReadinessWarning
        StopRequested RunPaused RunFinished NodeFinished ProbeDown ProbeUp ProbeSummary
        GateChanged GateWait SilenceRecord ForecastMade
        Intent  (by step)   ScriptIntent ScanIntent StageIntent EnterIntent InstallIntent
                            RestartIntent ExitIntent FailbackIntent
        Outcome (by step)   ScriptOutcome ScanOutcome StageOutcome EnterOutcome InstallOutcome
                            RestartOutcome ExitOutcome FailbackOutcome

Stored, an event is its place (run id, seq, ts, node), its kind, step and key, and the rest of its
payload as a JSON object: the shape journals have always had, so journals written before these
models (event schema 1) read with them as they are. `EVENT_SCHEMA` is stored with every event;
`upgrade()` is where a future change of a payload's meaning reads older events.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, field_validator

from cau.domain.estimate import RunPlan
from cau.domain.profile import FailbackMode, MoveMethod
from cau.domain.results import PAUSE_REASONS, ErrorId, Status
from cau.domain.updates import HeldUpdate, Update, UpdateResult

# 1: the journals of the first releases (untyped dicts, same shapes); 2: these models.
EVENT_SCHEMA = 2


class EventKind(StrEnum):
    RUN_CREATED = "run_created"
    COORDINATOR = "coordinator"  # a coordinator took the run (first start or resume)
    NODE_STARTED = "node_started"
    INTENT = "intent"  # about to act (key names the step instance)
    OUTCOME = "outcome"  # what the action did
    PROGRESS = "progress"  # not a side effect: a line for people watching
    WAITING = "waiting"  # a node waits for quorum / capacity / health
    NODE_FINISHED = "node_finished"
    WARNING = "warning"
    STOP_REQUESTED = "stop_requested"
    RUN_PAUSED = "run_paused"
    RUN_FINISHED = "run_finished"
    # Availability probes (not side effects): transitions and periodic counts, never every check.
    PROBE_DOWN = "probe_down"
    PROBE_UP = "probe_up"
    PROBE_SUMMARY = "probe_summary"
    HANDOVER = "handover"  # self-updating: the coordinator hands the run to another node's
    READINESS = "readiness"  # a readiness rule's warning at the run's start (cau.readiness)
    # Health gates (cau.domain.gates; not side effects): a gate turned green or red, and a node's
    # wait for its gates (how long, which held it, passed or timed out).
    GATE = "gate"
    GATE_WAIT = "gate_wait"
    # An Alertmanager silence for a node in maintenance: intent before, outcome after.
    SILENCE = "silence"
    # The run's predicted duration and schedule, journaled when it starts (cau.domain.estimate):
    # what the live ETA is computed from.
    FORECAST = "forecast"


class Step(StrEnum):
    """The side effects of a node's cycle, in order."""

    PRE_SCRIPT = "pre_script"
    SCAN = "scan"
    STAGE = "stage"
    ENTER_MAINTENANCE = "enter_maintenance"
    INSTALL = "install"
    RESTART = "restart"
    RESCAN = "rescan"
    EXIT_MAINTENANCE = "exit_maintenance"
    FAILBACK = "failback"
    POST_SCRIPT = "post_script"


class _Record(BaseModel):
    """A part of a payload."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class EventPayload(BaseModel):
    """The base of every event's payload (`kind` says which)."""

    # Unknown fields are ignored, not refused: a journal is history, read by later releases.
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    kind: EventKind


# --- the run -----------------------------------------------------------------------------------


class PluginRef(_Record):
    name: str
    args: dict[str, JsonValue] = {}


class NodeAtStart(_Record):
    state: str
    in_maintenance: bool = False
    roles: list[str] = []
    boot_id: str | None = None
    # its failure domain (the profile's domain_label), for a domain_order kept on resume too
    domain: str | None = None


class RoleAtStart(_Record):
    kind: str
    owner: str | None = None
    instances: list[str] | None = None


class RunCreated(EventPayload):
    kind: Literal[EventKind.RUN_CREATED] = EventKind.RUN_CREATED
    # The profile as the run started, redacted (the run record keeps the original for resume).
    profile: dict[str, JsonValue] = {}
    provider: str = ""
    plugins: list[PluginRef] = []
    order: list[str] = []
    max_failed: int = 0
    nodes: dict[str, NodeAtStart] = {}
    roles: dict[str, RoleAtStart] = {}  # where every role ran: failback is checked against it
    # Who asked for the run: `user@host (cli)`, `token:NAME` or a dashboard user's name. None:
    # unknown (journals written before it was recorded).
    started_by: str | None = None


class Coordinator(EventPayload):
    kind: Literal[EventKind.COORDINATOR] = EventKind.COORDINATOR
    owner: str  # the coordinating process
    resumed: bool = False
    by: str | None = None  # who asked for this start or resume (None: unknown, or not asked for)
    # Self-updating mode: the cluster node this coordinator runs on (None: outside the cluster).
    node: str | None = None


class HandOver(EventPayload):
    """Self-updating mode: the coordinator's own node is next, so the coordinator moves its
    clustered role to another node and stops acting; the coordinator started there resumes.
    Journaled as `moving` before the role moves and `moved` after (with where it went)."""

    kind: Literal[EventKind.HANDOVER] = EventKind.HANDOVER
    stage: Literal["moving", "moved"]
    from_node: str
    to_node: str | None = None


class NodeStarted(EventPayload):
    kind: Literal[EventKind.NODE_STARTED] = EventKind.NODE_STARTED


class Progress(EventPayload):
    kind: Literal[EventKind.PROGRESS] = EventKind.PROGRESS
    message: str


class Waiting(EventPayload):
    kind: Literal[EventKind.WAITING] = EventKind.WAITING
    reason: str
    block: str | None = None  # cau.domain.planning.Block


class WarningEvent(EventPayload):
    kind: Literal[EventKind.WARNING] = EventKind.WARNING
    message: str


class ReadinessWarning(EventPayload):
    """A readiness rule (cau.readiness) that warned when the run started: the run went ahead,
    and its report shows what the rule found and what to do. (A failing rule refuses the run
    before it exists, so only warnings are journaled.) Added with the readiness rules: a journal
    without these events had none to show."""

    kind: Literal[EventKind.READINESS] = EventKind.READINESS
    rule: str
    title: str = ""
    nodes: list[str] = []
    impact: str = ""
    fix: str = ""
    detail: str = ""


class StopRequested(EventPayload):
    kind: Literal[EventKind.STOP_REQUESTED] = EventKind.STOP_REQUESTED
    error_id: ErrorId
    message: str
    by: str = "coordinator"


class RunPaused(EventPayload):
    kind: Literal[EventKind.RUN_PAUSED] = EventKind.RUN_PAUSED
    error_id: ErrorId  # one of cau.domain.results.PAUSE_REASONS
    message: str
    traceback: str = ""

    @field_validator("error_id")
    @classmethod
    def _a_pause_reason(cls, value: ErrorId) -> ErrorId:
        if value not in PAUSE_REASONS:
            raise ValueError(f"{value} is not a reason to pause a run")
        return value


class RunFinished(EventPayload):
    kind: Literal[EventKind.RUN_FINISHED] = EventKind.RUN_FINISHED
    status: Status
    error_id: ErrorId | None = None
    message: str | None = None
    left_in_maintenance: list[str] = []


class NodeFinished(EventPayload):
    kind: Literal[EventKind.NODE_FINISHED] = EventKind.NODE_FINISHED
    status: Status
    error_id: ErrorId | None = None
    message: str = ""
    succeeded: int = 0
    failed: int = 0
    results: list[UpdateResult] = []  # the last result of each update
    attempts: dict[str, int] = {}
    remaining: list[str] = []  # still applicable after every pass
    transient_errors: list[str] = []
    left_in_maintenance: bool = False
    pending_restart: bool = False
    held: list[HeldUpdate] = []  # not taken on purpose, as the last scan saw them


# --- availability probes -------------------------------------------------------------------------


class _ProbeEvent(EventPayload):
    probe: str
    role: str
    session: str  # one coordinator's measuring (a resumed run has several)


class OutageFigures(_Record):
    started: datetime
    ended: datetime | None = None
    seconds: float = 0.0
    failed_checks: int = 0
    late_checks: int = 0
    errors: list[str] = []


class ProbeDown(_ProbeEvent):
    kind: Literal[EventKind.PROBE_DOWN] = EventKind.PROBE_DOWN
    started: datetime
    error: str = ""


class ProbeUp(_ProbeEvent):
    """A probe answers again: the outage's figures (as OutageFigures)."""

    kind: Literal[EventKind.PROBE_UP] = EventKind.PROBE_UP
    started: datetime
    ended: datetime | None = None
    seconds: float = 0.0
    failed_checks: int = 0
    late_checks: int = 0
    errors: list[str] = []


class ProbeSummary(_ProbeEvent):
    """A probe's running counts in one session (cumulative: the last one counts)."""

    kind: Literal[EventKind.PROBE_SUMMARY] = EventKind.PROBE_SUMMARY
    sent: int = 0
    ok: int = 0
    failed: int = 0
    late: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    targets: list[str] = []
    interval_ms: float | None = None
    timeout_ms: float | None = None
    skipped: int = 0
    final: bool = False  # the last summary of a session that ended measuring
    down: OutageFigures | None = None  # an outage going on at the time


ProbeEvent = ProbeDown | ProbeUp | ProbeSummary


# --- health gates and alert silences -------------------------------------------------------------


class GateChanged(EventPayload):
    """A health gate's state changed (or was first seen). Journaled with `node` = the node a
    per-node gate was evaluated for; None for a cluster-wide gate."""

    kind: Literal[EventKind.GATE] = EventKind.GATE
    gate: str
    state: Literal["green", "red"]
    answer: str = ""  # what the check said, redacted and bounded


class GateWait(EventPayload):
    """A node waited for its health gates: before its drain (admission) or after its return.
    Journaled only when it did wait (a gate was red, or not yet green for its stable_for)."""

    kind: Literal[EventKind.GATE_WAIT] = EventKind.GATE_WAIT
    phase: Literal["admission", "return"]
    outcome: Literal["passed", "timeout", "stopped"]
    seconds: float
    gates: list[str] = []  # the gates that held it
    answer: str = ""  # on a timeout: the last answer of the gate that timed out


class SilenceRecord(EventPayload):
    """An Alertmanager silence of a node in maintenance: `create` (intent), `created` (with its
    id), `expire` (intent), `expired`, or `failed` (a warning: the run goes on)."""

    kind: Literal[EventKind.SILENCE] = EventKind.SILENCE
    action: Literal["create", "created", "expire", "expired", "failed"]
    marker: str  # in the silence's comment: how cau finds its silences again
    silence_id: str | None = None
    matchers: dict[str, str] = {}
    ends_at: datetime | None = None
    message: str = ""


# --- the run's forecast --------------------------------------------------------------------------


class ForecastMade(EventPayload):
    """The run's prediction when it started (cau.domain.estimate): every node's cycle by phase,
    and the schedule's limits. Added with the ETA: a journal without one shows no ETA."""

    kind: Literal[EventKind.FORECAST] = EventKind.FORECAST
    plan: RunPlan
    batches: list[list[str]] = []  # the batches cau expected to form (cau.domain.batches)


# --- steps: intents ------------------------------------------------------------------------------


class StepIntent(EventPayload):
    """What a step is about to do, journaled before it acts (one subclass per step)."""

    kind: Literal[EventKind.INTENT] = EventKind.INTENT
    step: Step
    key: str  # the step instance: "install/2/apt", "enter_maintenance/1", "failback"...


class PriorRecord(_Record):
    """A node's state before cau put it in maintenance (cau.ports.MaintenancePrior)."""

    was_in_maintenance: bool = False
    role_owners: dict[str, str | None] = {}
    extra: dict[str, JsonValue] = {}


class ScriptIntent(StepIntent):
    step: Literal[Step.PRE_SCRIPT, Step.POST_SCRIPT]
    script: str  # redacted


class ScanIntent(StepIntent):
    step: Literal[Step.SCAN, Step.RESCAN]


class StageIntent(StepIntent):
    step: Literal[Step.STAGE] = Step.STAGE


class EnterIntent(StepIntent):
    step: Literal[Step.ENTER_MAINTENANCE] = Step.ENTER_MAINTENANCE
    move: MoveMethod | None = None
    prior: PriorRecord | None = None  # observed before the first attempt ...
    prior_from: str | None = None  # ... which later attempts point to
    # Planned drains (cau.engine.gate): where each role was to go, role -> node.
    plan: dict[str, str] | None = None


class InstallIntent(StepIntent):
    step: Literal[Step.INSTALL] = Step.INSTALL
    plugin: str
    pass_no: int = Field(1, alias="pass")
    updates: list[Update] = []


class RestartIntent(StepIntent):
    step: Literal[Step.RESTART] = Step.RESTART
    boot_id: str | None = None  # before the restart: the node is back when it differs


class ExitIntent(StepIntent):
    step: Literal[Step.EXIT_MAINTENANCE] = Step.EXIT_MAINTENANCE
    by: str | None = None  # an operator (`cau node resume`), not the run


class FailbackIntent(StepIntent):
    step: Literal[Step.FAILBACK] = Step.FAILBACK
    mode: FailbackMode = FailbackMode.IMMEDIATE


Intent = Annotated[
    ScriptIntent
    | ScanIntent
    | StageIntent
    | EnterIntent
    | InstallIntent
    | RestartIntent
    | ExitIntent
    | FailbackIntent,
    Field(discriminator="step"),
]


# --- steps: outcomes -----------------------------------------------------------------------------


class StepOutcome(EventPayload):
    """What a step did, journaled after it acted (one subclass per step)."""

    kind: Literal[EventKind.OUTCOME] = EventKind.OUTCOME
    step: Step
    key: str
    ok: bool
    error_id: ErrorId | None = None
    message: str = ""
    # False when retrying cannot help (a changed host key, a refused login): see CauError.retryable
    retryable: bool | None = None

    def failure_text(self) -> str:
        return self.message or (self.error_id.value if self.error_id else "failed")


class ScriptOutcome(StepOutcome):
    step: Literal[Step.PRE_SCRIPT, Step.POST_SCRIPT]
    exit_status: int | None = None
    stdout: str = ""  # tails, redacted
    stderr: str = ""

    def failure_text(self) -> str:
        if self.exit_status is None:
            return super().failure_text()
        detail = (self.stderr or self.stdout).strip().splitlines()
        return f"exit status {self.exit_status}" + (f": {detail[-1]}" if detail else "")


class ScanOutcome(StepOutcome):
    step: Literal[Step.SCAN, Step.RESCAN]
    updates: dict[str, list[Update]] = {}  # by plug-in
    held: dict[str, list[HeldUpdate]] = {}  # by plug-in
    restart_pending: bool = False
    errors: dict[str, str] = {}  # plug-ins that could not scan
    count: int = 0

    @property
    def all_updates(self) -> list[Update]:
        return [u for ups in self.updates.values() for u in ups]

    @property
    def all_held(self) -> list[HeldUpdate]:
        return [h for hs in self.held.values() for h in hs]


class StageOutcome(StepOutcome):
    step: Literal[Step.STAGE] = Step.STAGE
    failures: list[str] = []


class RoleMove(_Record):
    """One move of a role by the provider (a live migration, a saved or restored state), with the
    cluster software's own figures where it gives them (libvirt's domjobinfo): the report shows
    them beside the probes' measured interruption."""

    role: str
    method: Literal["live", "save", "restore"]
    from_node: str | None = None
    to_node: str | None = None
    started: datetime
    seconds: float  # as cau timed it, command to answer
    ok: bool = True
    # the cluster software's figures (None: not reported)
    reported_seconds: float | None = None
    downtime_ms: float | None = None
    data_bytes: int | None = None
    message: str = ""


class EnterOutcome(StepOutcome):
    step: Literal[Step.ENTER_MAINTENANCE] = Step.ENTER_MAINTENANCE
    moves: list[RoleMove] = []  # from providers that report them (cau.ports.ReportsMoves)


class InstallOutcome(StepOutcome):
    step: Literal[Step.INSTALL] = Step.INSTALL
    results: list[UpdateResult] = []


class RestartOutcome(StepOutcome):
    step: Literal[Step.RESTART] = Step.RESTART
    boot_id: str | None = None
    previous_boot_id: str | None = None
    observed: bool = False  # the restart had happened before a killed coordinator saw it


class ExitOutcome(StepOutcome):
    step: Literal[Step.EXIT_MAINTENANCE] = Step.EXIT_MAINTENANCE
    moves: list[RoleMove] = []  # states restored as the node left maintenance
    left_as_before: bool = False  # it was in maintenance before cau: left so
    undo: int | None = None  # undoing the failed drain attempt of that number


class FailbackOutcome(StepOutcome):
    step: Literal[Step.FAILBACK] = Step.FAILBACK
    moved: list[str] = []
    moves: list[RoleMove] = []


Outcome = Annotated[
    ScriptOutcome
    | ScanOutcome
    | StageOutcome
    | EnterOutcome
    | InstallOutcome
    | RestartOutcome
    | ExitOutcome
    | FailbackOutcome,
    Field(discriminator="step"),
]
Payload = Annotated[
    RunCreated
    | Coordinator
    | HandOver
    | NodeStarted
    | Progress
    | Waiting
    | WarningEvent
    | ReadinessWarning
    | StopRequested
    | RunPaused
    | RunFinished
    | NodeFinished
    | ProbeDown
    | ProbeUp
    | ProbeSummary
    | GateChanged
    | GateWait
    | SilenceRecord
    | ForecastMade
    | Intent
    | Outcome,
    Field(discriminator="kind"),
]
_PAYLOAD: TypeAdapter[Payload] = TypeAdapter(Payload)

# Stored in their own columns, not in the event's JSON object.
_COLUMNS = frozenset({"kind", "step", "key"})


class JournalEvent(BaseModel):
    """One journaled event in its place: the run, its sequence number (the order of the journal),
    when, the node it is about (None for run-level events), and what happened."""

    model_config = ConfigDict(frozen=True)

    run_id: str
    seq: int
    ts: datetime
    node: str | None = None
    payload: Payload

    @classmethod
    def of(cls, run_id: str, seq: int, ts: datetime, node: str | None, payload: EventPayload) -> JournalEvent:
        """An event from a payload of any kind (each is a member of `Payload`)."""
        return cls.model_validate({"run_id": run_id, "seq": seq, "ts": ts, "node": node, "payload": payload})

    @property
    def kind(self) -> EventKind:
        return self.payload.kind

    @property
    def step(self) -> Step | None:
        step = getattr(self.payload, "step", None)
        return Step(step) if step is not None else None

    @property
    def key(self) -> str | None:
        key: str | None = getattr(self.payload, "key", None)
        return key

    @property
    def data(self) -> dict[str, JsonValue]:
        """The payload without kind, step and key, as stored and as the API shows it."""
        return payload_data(self.payload)

    def flat(self) -> dict[str, JsonValue]:
        """The event as the API and SSE stream show it: place, kind, step, key and data."""
        return {
            "run_id": self.run_id,
            "seq": self.seq,
            "ts": self.ts.isoformat(),
            "kind": self.kind.value,
            "node": self.node,
            "step": self.step.value if self.step else None,
            "key": self.key,
            "data": self.data,
        }


def payload_data(payload: EventPayload) -> dict[str, JsonValue]:
    data: dict[str, JsonValue] = payload.model_dump(mode="json", by_alias=True, exclude=set(_COLUMNS))
    return data


def upgrade(schema: int, kind: str, data: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """An event's stored data as the current models read it. Schema 1 (before the models) has
    the same shapes: nothing to change."""
    if schema > EVENT_SCHEMA:
        raise ValueError(f"a journal event of schema {schema}, newer than this cau reads ({EVENT_SCHEMA})")
    return data


def load_payload(
    kind: str, step: str | None, key: str | None, data: dict[str, JsonValue], *, schema: int = EVENT_SCHEMA
) -> Payload:
    """The payload of a stored event (its columns and JSON data)."""
    fields: dict[str, JsonValue] = {**upgrade(schema, kind, data), "kind": kind}
    if step is not None:
        fields["step"] = step
    if key is not None:
        fields["key"] = key
    return _PAYLOAD.validate_python(fields)
