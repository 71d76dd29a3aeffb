"""The API's request and response bodies (and so its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from cau.domain.profile import MAX_RETRIES_LIMIT, DrainPolicy, FailbackMode, MoveMethod
from cau.store.access import Role


class Health(BaseModel):
    ok: bool
    version: str


class Me(BaseModel):
    name: str
    role: Role
    via: str


class NodeView(BaseModel):
    name: str
    state: str
    in_maintenance: bool
    roles: list[str]
    pending_updates: list[str] | None  # None: no preview yet
    last_result: str | None
    current_step: str | None = None


class RoleView(BaseModel):
    name: str
    kind: str
    owner: str | None
    instances: list[str] = []
    preferred_owners: list[str] = []


class RunSummary(BaseModel):
    run_id: str
    cluster: str
    state: str
    status: str | None
    started: datetime
    finished: datetime | None
    duration_seconds: float
    nodes_total: int
    nodes_succeeded: int
    nodes_failed: int
    error_id: str | None = None
    message: str | None = None
    stop_requested: bool = False
    # An unfinished run that no coordinator is driving (its coordinator died or `cau serve` was
    # stopped): starting a run on the cluster resumes it.
    interrupted: bool = False


class ClusterSummary(BaseModel):
    name: str
    provider: str
    active_run: RunSummary | None
    last_run: RunSummary | None


class ClusterDetail(ClusterSummary):
    nodes: list[NodeView]
    roles: list[RoleView]
    discover_error: str | None = None
    preview_at: datetime | None = None
    coordinator: str | None = None  # who holds the cluster lock, e.g. "cau serve (pid 42 on host)"


class UpdateView(BaseModel):
    id: str
    title: str
    plugin: str
    needs_restart: bool
    size_bytes: int
    details: dict[str, str]


class NodePreview(BaseModel):
    node: str
    reachable: bool
    restart_pending: bool
    errors: dict[str, str]
    updates: list[UpdateView]


class Preview(BaseModel):
    cluster: str
    scanned: datetime
    nodes: list[NodePreview]


class RunOptions(BaseModel):
    """Overrides of the profile's options, as in `cau run`'s flags (all optional). Strict types:
    `0` is not `false`, `"2"` is not `2`."""

    model_config = ConfigDict(extra="forbid")

    max_retries_per_node: StrictInt | None = Field(None, ge=0, le=MAX_RETRIES_LIMIT)
    max_failed_nodes: StrictInt | None = Field(None, ge=0)
    max_parallel_nodes: StrictInt | Literal["auto"] | None = None
    require_all_nodes_online: StrictBool | None = None
    reboot_timeout: str | None = None
    stop_after: str | None = None
    warn_after: str | None = None
    node_order: list[str] | None = None
    failback_mode: FailbackMode | None = None
    drain: DrainPolicy | None = None
    move: MoveMethod | None = None
    no_restart: StrictBool | None = None
    allow_nodes_in_maintenance: StrictBool | None = None
    run_plugins_serially: StrictBool | None = None
    stop_on_plugin_failure: StrictBool | None = None
    separate_reboots: StrictBool | None = None


PROFILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable, for programs: not_found, invalid_input, cluster_locked, ...")
    message: str = Field(description="For people")
    hint: str | None = None
    fields: list[dict[str, str]] = Field(default_factory=list, description="field and message, per bad input")


class ErrorBody(BaseModel):
    error: ErrorDetail


class ScanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(
        None, pattern=PROFILE_NAME, description="A stored profile's name (its plug-ins are used)"
    )


class StartRun(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: str | None = Field(
        None, pattern=PROFILE_NAME, description="A stored profile's name; else the cluster's default"
    )
    options: RunOptions = RunOptions()


class RunStarted(BaseModel):
    run_id: str
    cluster: str
    resumed: bool
    notices: list[str] = []


class StopRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


class StopResult(BaseModel):
    run_id: str
    stop_requested: bool
    state: str


class ProfileBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = Field("", max_length=500)
    options: dict[str, Any] = Field(default_factory=dict, description="Run options, as in a profile file")


class ProfileCreate(ProfileBody):
    name: str = Field(pattern=PROFILE_NAME)


class ProfileView(BaseModel):
    name: str
    description: str
    options: dict[str, Any]
    effective: dict[str, Any]
    created: datetime
    updated: datetime
    updated_by: str


class ProfileValidation(BaseModel):
    valid: bool
    effective: dict[str, Any] | None
    problems: list[dict[str, str]] = []


class PluginView(BaseModel):
    kind: str
    name: str
    target: str
    distribution: str | None
    version: str | None
    ok: bool
    error: str | None
    summary: str


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role


class TokenView(BaseModel):
    token_id: str
    name: str
    role: Role
    created: datetime
    created_by: str
    last_used: datetime | None
    revoked: datetime | None


class TokenCreated(TokenView):
    token: str = Field(description="The secret: shown this once, never again")


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role
    password: str = Field(min_length=12, max_length=256)


class UserView(BaseModel):
    name: str
    role: Role
    updated: datetime


class AuditView(BaseModel):
    id: int
    ts: datetime
    actor: str
    action: str
    target: str
    detail: dict[str, Any]


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: str | None = None
    name: str | None = None
    password: str | None = None
