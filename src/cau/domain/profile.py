"""The Updating Run Profile: every run option, with CAU's defaults and meaning.

A profile holds no credentials and no schedule, so one file can serve a whole class of clusters.
Profiles are TOML files; command-line flags override them. Unknown keys and bad values are errors
that name the key and the file, and nothing starts.
"""

from __future__ import annotations

import re
import tomllib
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cau.domain.disruption import FAILURE_DOMAIN_LABEL, DisruptionBudget, DisruptionLimits
from cau.domain.durations import Duration
from cau.domain.gates import GateSpec, check_unique
from cau.domain.schedule import WINDOW_EXAMPLES, ScheduleError
from cau.domain.validation import describe_errors
from cau.domain.window import MaintenanceWindow
from cau.errors import ProfileError

MAX_RETRIES_LIMIT = 64  # CAU's documented maximum for MaxRetriesPerNode

# Profiles are shared between clusters and often kept on a share: they must never carry secrets.
_SECRET_KEY = re.compile(r"pass(word|wd|phrase)?$|secret|token|credential|private[_-]?key|api[_-]?key", re.I)


class FailbackMode(StrEnum):
    IMMEDIATE = "immediate"  # move the roles that left the node back as soon as it returns
    POLICY = "policy"  # let each role's preferred owners decide
    NONE = "none"  # leave roles where they are


class DrainPolicy(StrEnum):
    ALWAYS = "always"  # enter maintenance before installing (CAU's -ForcePauseAndDrain)
    WHEN_RESTART_NEEDED = "when-restart-needed"  # install first; drain only to restart
    # A standalone host (VMM's remediation of chosen hosts): never in maintenance, its roles are
    # not moved, and a restart takes them down with it.
    NEVER = "never"


class MoveMethod(StrEnum):
    LIVE = "live"  # live-migrate what can migrate, fail over the rest
    SAVE = "save"  # do not migrate: stop roles on the node and start them there afterwards


class OverrunPolicy(StrEnum):
    """What to do when the run's predicted duration does not fit before its stop_after or the
    end of its maintenance window (cau.domain.estimate)."""

    WARN = "warn"  # start anyway; the warning is journaled and shown
    REFUSE = "refuse"  # do not start; nothing is changed


class PluginSpec(BaseModel):
    """One plug-in of the run, with its arguments (validated later by the plug-in's own model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("args")
    @classmethod
    def _no_secrets(cls, args: dict[str, Any]) -> dict[str, Any]:
        for key in args:
            if _SECRET_KEY.search(key):
                raise ValueError(
                    f"'{key}' looks like a credential; a profile holds no credentials "
                    "(put them in the cluster configuration or an agent)"
                )
        return args


def plugin_shorthand(value: Any) -> Any:
    """`plugins = ["apt", "hotfix"]` is shorthand for [[plugins]] tables without args."""
    if isinstance(value, list):
        return [{"name": item} if isinstance(item, str) else item for item in value]
    return value


def _listed_once(value: list[str] | None, what: str) -> list[str] | None:
    """An order names each thing once: a duplicate is refused, naming it."""
    if value is not None:
        dupes = sorted({n for n in value if value.count(n) > 1})
        if dupes:
            raise ValueError(f"{what} listed twice: {', '.join(dupes)}")
    return value


class RunProfile(BaseModel):
    """Every run option. Each field's description is its help everywhere: `cau run --help`, the
    API's run options (OpenAPI) and the docs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_retries_per_node: int = Field(
        3, ge=0, le=MAX_RETRIES_LIMIT, description="Retries per node (CAU default 3, max 64)."
    )
    # None: about a third of the nodes, computed when the run starts (range 0 .. nodes-1).
    max_failed_nodes: int | None = Field(
        None, ge=0, description="Failed nodes tolerated (default about a third)."
    )
    require_all_nodes_online: bool = Field(False, description="Refuse to start while a node is down.")
    reboot_timeout: Duration = Field(
        timedelta(minutes=15), description="How long a restarting node may take, e.g. 15m."
    )
    stop_after: Duration | None = Field(None, description="Cancel the run after this long, e.g. 4h.")
    warn_after: Duration | None = Field(None, description="Warn when the run takes longer, e.g. 2h.")
    on_overrun: OverrunPolicy = Field(
        OverrunPolicy.WARN,
        description=(
            "When the run's predicted duration (from past runs) exceeds stop_after or the time "
            "left in its maintenance window: warn (start anyway) | refuse (start nothing)."
        ),
    )
    pre_update_script: str | None = Field(None, description="Run on each node before it is updated.")
    post_update_script: str | None = Field(None, description="Run on each node after it is updated.")
    script_timeout: Duration = Field(
        timedelta(minutes=30), description="How long a pre/post-update script may run, e.g. 30m."
    )
    # None: the plug-ins the cluster's configuration (or provider) names.
    plugins: list[PluginSpec] | None = Field(
        None, description="The plug-ins, in order, with their arguments."
    )
    run_plugins_serially: bool = Field(
        False, description="One plug-in at a time, each rescanning after the last."
    )
    stop_on_plugin_failure: bool = Field(False, description="A failed plug-in skips the ones after it.")
    separate_reboots: bool = Field(False, description="Restart after each plug-in that needs it.")
    node_order: list[str] | None = Field(
        None, description="Nodes updated first, in this order (on the command line: n1,n2)."
    )
    failback_mode: FailbackMode = Field(FailbackMode.IMMEDIATE, description="immediate | policy | none")
    # 1 is CAU's serial behaviour; "auto" lets quorum, capacity and the failure budget decide.
    max_parallel_nodes: int | Literal["auto"] = Field(
        1, description="Nodes updated at once: a number or 'auto'."
    )
    # cau.domain.disruption: failure domains and disruption budgets, checked at every admission.
    domain_label: str = Field(
        FAILURE_DOMAIN_LABEL,
        min_length=1,
        description=(
            "The node label that is the failure domain (site, rack...): 'failure_domain' (the "
            "configuration's), a configuration label, or a Pacemaker node attribute."
        ),
    )
    max_nodes_per_domain: int | None = Field(
        None,
        ge=1,
        description="Nodes of one failure domain out of service at once (default 1 when nodes have domains).",
    )
    domain_order: list[str] | None = Field(
        None,
        description=(
            "Failure domains updated one after another, in this order (site-aware): every node of "
            "one before the next's (on the command line: site1,site2)."
        ),
    )
    disruption_budgets: list[DisruptionBudget] = Field(
        [],
        description=(
            "Roles that keep at least N (or N %) instances running, like a PodDisruptionBudget: "
            "ROLES=MIN each, e.g. 'web-clone=2,db-*=50%' ([[disruption_budgets]] roles, min_available)."
        ),
    )
    drain: DrainPolicy = Field(DrainPolicy.ALWAYS, description="always | when-restart-needed | never")
    move: MoveMethod = Field(MoveMethod.LIVE, description="live (migrate) | save (stop in place)")
    no_restart: bool = Field(False, description="Never restart; nodes end pending restart.")
    allow_nodes_in_maintenance: bool = Field(
        False, description="Start even though some nodes are in maintenance already."
    )
    allow_unhealthy_cluster: bool = Field(
        False, description="Start despite failed resources or unclean nodes."
    )
    # Kept as its compact text (checked and put in canonical form here) so that a flag, the API
    # and a TOML profile all give it the same way; `maintenance_window` is the parsed model.
    update_selection: dict[str, list[str]] | None = Field(
        None,
        description=(
            "Only these updates, per node, by update key <plug-in>:<id> (or <plug-in>:<package>); "
            "nodes not named are bypassed. Set by `cau remediate`."
        ),
    )
    window: str | None = Field(
        None,
        description=(
            "Maintenance window: no node starts outside it, and the run pauses at its end and "
            "resumes in the next one, e.g. 'daily@01:00 for 4h in Europe/Berlin'."
        ),
    )
    # cau.domain.gates: checked before each drain, after each node's return, and watched while
    # the run goes on (with the cluster configuration's own gates).
    health_gates: list[GateSpec] = Field(
        [],
        description=(
            "Health gates ([[health_gates]]: command, http, prometheus or cluster-health): a red "
            "gate holds the next node; past its timeout the run pauses (HealthGateTimeout)."
        ),
    )

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_shorthand(cls, value: Any) -> Any:
        return plugin_shorthand(value)

    @field_validator("plugins")
    @classmethod
    def _unique_plugins(cls, value: list[PluginSpec] | None) -> list[PluginSpec] | None:
        if value is not None:
            if not value:
                raise ValueError("at least one plug-in is needed (or leave 'plugins' out)")
            names = [p.name for p in value]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"plug-in listed twice: {', '.join(dupes)}")
        return value

    @field_validator("health_gates")
    @classmethod
    def _unique_gates(cls, value: list[GateSpec]) -> list[GateSpec]:
        return check_unique(value)

    @field_validator("max_parallel_nodes")
    @classmethod
    def _parallel_positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('must be at least 1, or "auto"')
        return value

    @field_validator("node_order")
    @classmethod
    def _order_unique(cls, value: list[str] | None) -> list[str] | None:
        return _listed_once(value, "node")

    @field_validator("domain_order")
    @classmethod
    def _domains_unique(cls, value: list[str] | None) -> list[str] | None:
        return _listed_once(value, "failure domain")

    @property
    def disruption_limits(self) -> DisruptionLimits:
        return DisruptionLimits(
            domain_label=self.domain_label,
            max_per_domain=self.max_nodes_per_domain,
            budgets=tuple(self.disruption_budgets),
        )

    @field_validator("window")
    @classmethod
    def _window_spec(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return MaintenanceWindow.parse(value).spec()
        except ScheduleError as exc:
            raise ValueError(f"{exc} (valid windows: {WINDOW_EXAMPLES})") from None

    @property
    def maintenance_window(self) -> MaintenanceWindow | None:
        return MaintenanceWindow.parse(self.window) if self.window is not None else None

    @model_validator(mode="after")
    def _warn_before_stop(self) -> RunProfile:
        if self.warn_after is not None and self.stop_after is not None and self.warn_after >= self.stop_after:
            raise ValueError(
                "warn_after must be shorter than stop_after (otherwise no warning is ever given)"
            )
        return self

    def effective_max_failed(self, node_count: int) -> int:
        if self.max_failed_nodes is not None:
            return self.max_failed_nodes
        return default_max_failed_nodes(node_count)

    def to_toml_dict(self) -> dict[str, Any]:
        """Only the options that differ from the defaults, ready to write as TOML."""
        return self.model_dump(mode="json", exclude_defaults=True)


# The options a caller sets for one run on top of a profile: the flags of `cau run` and the API's
# run options are made from these fields. (The plug-ins have flags of their own: --plugin and
# --plugin-arg.)
# `update_selection` is a remediation's (cau remediate, and the API's remediate), never a flag.
# `health_gates` are tables (a name, a kind and its settings each): a profile's [[health_gates]]
# or the cluster configuration's, never a flag.
PER_RUN_OPTIONS: tuple[str, ...] = tuple(
    name for name in RunProfile.model_fields if name not in ("plugins", "update_selection", "health_gates")
)
# Scripts run as root on every node. Over the API they come only from stored profiles, which only
# admins write: an operator who may start runs may not run commands on the nodes. A health gate
# may run a command (on a node or on the coordinator), and any gate makes the coordinator send
# requests where it says: the same rule.
SCRIPT_OPTIONS = frozenset({"pre_update_script", "post_update_script", "script_timeout", "health_gates"})


def default_max_failed_nodes(node_count: int) -> int:
    """CAU: 'for most clusters, approximately one-third of the number of cluster nodes'."""
    return max(0, min(node_count // 3, node_count - 1))


def read_profile_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(str(path), [f"cannot read the file: {exc.strerror or exc}"]) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(str(path), [f"not valid TOML: {exc}"]) from exc


def build_profile(
    file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
) -> RunProfile:
    """Profile = base (e.g. a stored profile) < file < command-line overrides, validated as a whole."""
    data: dict[str, Any] = dict(base or {})
    origin: dict[str, str] = {}
    if file is not None:
        from_file = read_profile_file(file)
        data.update(from_file)
        origin.update({k: str(file) for k in from_file})
    for key, value in (overrides or {}).items():
        if value is not None:
            data[key] = value
            origin[key] = "--" + key.replace("_", "-")
    try:
        return RunProfile.model_validate(data)
    except ValidationError as exc:
        source = str(file) if file is not None else "profile"
        problems = describe_errors(exc, unknown="unknown option", origin=origin, whole="(profile)")
        raise ProfileError(source, problems) from exc
