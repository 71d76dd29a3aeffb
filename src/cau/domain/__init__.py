"""The domain: pure data and rules (cluster, node, role, update, profile, results, plan). No I/O."""

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.profile import (
    DrainPolicy,
    FailbackMode,
    MoveMethod,
    PluginSpec,
    RunProfile,
    build_profile,
    default_max_failed_nodes,
)
from cau.domain.results import ErrorId, RunState, Status
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import ProfileError

__all__ = [
    "Capacity",
    "ClusterSnapshot",
    "DrainPolicy",
    "ErrorId",
    "FailbackMode",
    "MoveMethod",
    "Node",
    "NodeState",
    "PluginSpec",
    "ProfileError",
    "Role",
    "RoleKind",
    "RunProfile",
    "RunState",
    "ScanResult",
    "StagingResult",
    "Status",
    "Update",
    "UpdateOutcome",
    "UpdateResult",
    "build_profile",
    "default_max_failed_nodes",
]
