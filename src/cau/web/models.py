"""The API's request and response bodies (and so its OpenAPI document)."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, Union, get_args, get_origin

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, JsonValue, StrictBool, StrictInt, create_model

from cau.domain.access import Role
from cau.domain.estimate import Eta
from cau.domain.profile import PER_RUN_OPTIONS, SCRIPT_OPTIONS, RunProfile
from cau.store.access import TokenInfo


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
    # The duration predicted when the run started, and while it runs, when it should end
    # (cau.domain.estimate). None: not predicted (a run from before forecasts).
    predicted_seconds: float | None = None
    eta: Eta | None = None


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


def _wire_type(annotation: Any) -> Any:
    """An option's type as the API takes it: strict numbers and booleans (`0` is not `false`,
    `"2"` is not `2`), durations as text ("15m", checked with the whole profile)."""
    if get_origin(annotation) in (Union, UnionType):
        members = [_wire_type(a) for a in get_args(annotation) if a is not type(None)]
        return Union[tuple(members)] if len(members) > 1 else members[0]  # noqa: UP007
    if get_origin(annotation) is Annotated:
        return _wire_type(get_args(annotation)[0])
    return {bool: StrictBool, int: StrictInt, timedelta: str}.get(annotation, annotation)


def _run_option(name: str) -> tuple[Any, Any]:
    info = RunProfile.model_fields[name]
    ge = next((rule.ge for rule in info.metadata if isinstance(rule, Ge)), None)
    le = next((rule.le for rule in info.metadata if isinstance(rule, Le)), None)
    return (_wire_type(info.annotation) | None, Field(None, description=info.description, ge=ge, le=le))


# Overrides of the profile's options for one run, as in `cau run`'s flags, made from RunProfile's
# own fields (all optional); the scripts only from stored profiles (see SCRIPT_OPTIONS).
if TYPE_CHECKING:

    class RunOptions(BaseModel):  # what a type checker sees; the class itself is made below
        pass

else:
    RunOptions = create_model(
        "RunOptions",
        __config__=ConfigDict(extra="forbid"),
        __doc__="Overrides of the profile's options for this run (all optional).",
        **{name: _run_option(name) for name in PER_RUN_OPTIONS if name not in SCRIPT_OPTIONS},
    )


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


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    role: Role


class TokenCreated(TokenInfo):
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


class RoleBody(BaseModel):
    """Add-CauClusterRole: a stored profile's name and run options over it."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    options: dict[str, JsonValue] = {}
    enabled: bool = True
    schedule: str | None = None  # e.g. monthly:last-tue@03:00 (cau.domain.schedule)
    tz: str | None = None
    start: str | None = None


class RoleChange(BaseModel):
    """Set-/Enable-/Disable-CauClusterRole: what is given changes ("" clears the profile)."""

    model_config = ConfigDict(extra="forbid")

    profile: str | None = None
    options: dict[str, JsonValue] | None = None
    enabled: bool | None = None
    schedule: str | None = None  # "" clears it
    tz: str | None = None
    start: str | None = None
