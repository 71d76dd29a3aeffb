"""Run and node result statuses, error ids, and the rules that derive one from the other."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    """CAU's SummaryStatus, used for runs, nodes and updates."""

    SUCCEEDED = "Succeeded"  # at least one update succeeded (or nothing was needed) and nothing failed
    PARTIALLY_FAILED = "PartiallyFailed"  # some succeeded, some failed
    FAILED = "Failed"  # nothing succeeded, or the node itself failed
    CANCELED = "Canceled"  # stopped before operations began on the node


class RunState(StrEnum):
    """Where a run is in its life, as opposed to how it ended."""

    RUNNING = "Running"
    PAUSED = "Paused"  # an unexpected error stopped the coordinator; `cau run` resumes
    FINISHED = "Finished"


class ErrorId(StrEnum):
    """A closed list of named failure reasons, shown to operators and stable for automation."""

    MAX_FAILED_NODES_EXCEEDED = "MaxFailedNodesExceeded"
    NODE_OFFLINE = "NodeOffline"
    NODE_DID_NOT_RETURN = "NodeDidNotReturn"
    PRE_UPDATE_SCRIPT_FAILED = "PreUpdateScriptFailed"
    POST_UPDATE_SCRIPT_FAILED = "PostUpdateScriptFailed"
    SCAN_FAILED = "ScanFailed"
    STAGE_FAILED = "StageFailed"
    INSTALL_FAILED = "InstallFailed"
    PLUGIN_FAILED = "PluginFailed"
    MAINTENANCE_ENTER_FAILED = "MaintenanceEnterFailed"
    MAINTENANCE_EXIT_FAILED = "MaintenanceExitFailed"
    FAILBACK_FAILED = "FailbackFailed"
    RESTART_FAILED = "RestartFailed"
    # the node's SSH host key is not the one recorded, or none is (a reinstalled node, or an
    # impostor): cau does not use the node until an operator records its key (`cau hosts trust`)
    HOST_KEY_REJECTED = "HostKeyRejected"
    LOGIN_REFUSED = "LoginRefused"  # the node refused cau's login (user, key, authorized_keys)
    INSUFFICIENT_CAPACITY = "InsufficientCapacity"
    QUORUM_AT_RISK = "QuorumAtRisk"
    CLUSTER_UNHEALTHY = "ClusterUnhealthy"
    # the cluster's own placement rules (bans, colocations...) would stop a role, not move it
    DRAIN_WOULD_STOP_ROLES = "DrainWouldStopRoles"
    # its failure domain has max_nodes_per_domain nodes out of service, and nothing cau holds
    # could free one (cau.domain.disruption)
    FAILURE_DOMAIN_LIMIT = "FailureDomainLimit"
    # a disruption budget's roles would have fewer than min_available instances running
    DISRUPTION_BUDGET = "DisruptionBudgetExceeded"
    STOPPED_BY_OPERATOR = "StoppedByOperator"
    STOP_AFTER_EXCEEDED = "StopAfterExceeded"
    UPDATES_REMAINING = "UpdatesRemaining"
    INTERNAL_ERROR = "InternalError"
    STORE_UNAVAILABLE = "StoreUnavailable"  # the journal could not be written: the run pauses
    # the run's maintenance window closed (or is not open): it pauses, and resumes in the next one
    OUTSIDE_WINDOW = "OutsideMaintenanceWindow"
    # a health gate (cau.domain.gates) stayed red, or not stably green, past its timeout: the run
    # pauses with the gate's name and last answer, and `cau run` resumes it (the wait starts again)
    HEALTH_GATE_TIMEOUT = "HealthGateTimeout"


# Why a run pauses (a closed list): `cau run` resumes it once the cause is fixed. A refused host
# key or login pauses a run when it stops cau observing the cluster (discovery reaches every node),
# not when one node's own step meets it: that node fails.
PAUSE_REASONS = frozenset(
    {
        ErrorId.INTERNAL_ERROR,
        ErrorId.STORE_UNAVAILABLE,
        ErrorId.HOST_KEY_REJECTED,
        ErrorId.LOGIN_REFUSED,
        ErrorId.OUTSIDE_WINDOW,
        ErrorId.HEALTH_GATE_TIMEOUT,
    }
)

# Errors that mean the node itself failed: whatever was installed before, the node is Failed.
NODE_FATAL_ERRORS = frozenset(
    {
        ErrorId.NODE_OFFLINE,
        ErrorId.NODE_DID_NOT_RETURN,
        ErrorId.PRE_UPDATE_SCRIPT_FAILED,
        ErrorId.MAINTENANCE_ENTER_FAILED,
        ErrorId.RESTART_FAILED,
        ErrorId.INSUFFICIENT_CAPACITY,
        ErrorId.QUORUM_AT_RISK,
        ErrorId.CLUSTER_UNHEALTHY,
        ErrorId.DRAIN_WOULD_STOP_ROLES,
        ErrorId.FAILURE_DOMAIN_LIMIT,
        ErrorId.DISRUPTION_BUDGET,
        ErrorId.SCAN_FAILED,
        ErrorId.HOST_KEY_REJECTED,
        ErrorId.LOGIN_REFUSED,
    }
)

# Reasons a run stops early: a node they stop is canceled, not failed. (The run itself is Failed
# when the failure budget was exceeded; see run_status.)
CANCEL_ERRORS = frozenset(
    {ErrorId.STOPPED_BY_OPERATOR, ErrorId.STOP_AFTER_EXCEEDED, ErrorId.MAX_FAILED_NODES_EXCEEDED}
)


def node_status(
    succeeded: int, failed: int, error: ErrorId | None, *, work_started: bool, remaining: int = 0
) -> Status:
    """Derive a node's status the way CAU's SummaryStatus defines it.

    `work_started` is False when the node was never touched (canceled before maintenance or
    install began): such a node is Canceled, not Failed.
    """
    if error in CANCEL_ERRORS and not work_started:
        return Status.CANCELED
    if error in NODE_FATAL_ERRORS:
        return Status.FAILED
    if failed == 0 and error is None:
        return Status.SUCCEEDED
    if error in CANCEL_ERRORS and failed == 0:
        # Stopped after some work: the node was brought back cleanly, what ran succeeded; with
        # updates still to install it is not done, it was canceled.
        return Status.SUCCEEDED if succeeded and not remaining else Status.CANCELED
    return Status.PARTIALLY_FAILED if succeeded > 0 else Status.FAILED


def run_status(node_statuses: Iterable[Status], error: ErrorId | None) -> Status:
    statuses = list(node_statuses)
    if error is ErrorId.MAX_FAILED_NODES_EXCEEDED:
        return Status.FAILED
    if error in CANCEL_ERRORS:
        return Status.CANCELED
    if all(s is Status.SUCCEEDED for s in statuses):
        return Status.SUCCEEDED
    if all(s is Status.FAILED for s in statuses):
        return Status.FAILED
    if all(s in (Status.SUCCEEDED, Status.CANCELED) for s in statuses):
        return Status.CANCELED
    return Status.PARTIALLY_FAILED
