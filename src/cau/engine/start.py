"""Before a run: preflight checks (pure) and the run's opening journal record."""

from __future__ import annotations

from cau.domain.cluster import ClusterSnapshot, RoleKind
from cau.domain.planning import order_nodes, unknown_nodes
from cau.domain.profile import RunProfile
from cau.journal.events import NodeAtStart, PluginRef, RoleAtStart, RunCreated
from cau.redact import redact_data


def preflight(
    snapshot: ClusterSnapshot, profile: RunProfile, *, in_maintenance_by_cau: set[str]
) -> list[str]:
    """Why this run must not start; empty when it may. Nothing has been changed when it refuses."""
    problems: list[str] = []
    n = len(snapshot.nodes)
    if profile.node_order:
        unknown = unknown_nodes(snapshot, profile.node_order)
        if unknown:
            problems.append(
                f"node_order names unknown node(s) {', '.join(unknown)} "
                f"(cluster {snapshot.name} has {', '.join(snapshot.node_names)})"
            )
    if profile.max_failed_nodes is not None and profile.max_failed_nodes > max(n - 1, 0):
        problems.append(
            f"max_failed_nodes = {profile.max_failed_nodes} is out of range 0..{max(n - 1, 0)} for {n} nodes"
        )
    down = [node.name for node in snapshot.nodes if not node.is_up]
    if profile.require_all_nodes_online and down:
        problems.append(f"require_all_nodes_online: node(s) {', '.join(down)} are not online")
    if not snapshot.has_quorum:
        if snapshot.min_online is not None:
            problems.append(
                f"only {snapshot.online_count} node(s) online, fewer than min_online = {snapshot.min_online}"
            )
        else:
            problems.append(
                f"the cluster has no quorum ({snapshot.describe_votes(snapshot.online_votes)} online)"
            )
    already = [
        node.name for node in snapshot.nodes if node.in_maintenance and node.name not in in_maintenance_by_cau
    ]
    if already and not profile.allow_nodes_in_maintenance:
        problems.append(
            f"node(s) {', '.join(already)} already in maintenance (not put there by cau); "
            "allow_nodes_in_maintenance (--allow-nodes-in-maintenance) updates them "
            "and leaves them in maintenance"
        )
    return problems


def run_created(
    snapshot: ClusterSnapshot, profile: RunProfile, provider: str, *, started_by: str | None = None
) -> RunCreated:
    """The run's opening journal record. `profile` has its plug-ins resolved (the profile's, the
    cluster's or the provider's); `started_by` is who asked for the run."""
    return RunCreated(
        started_by=started_by,
        # The journal's copy is redacted (a script's command line may carry a secret); the run
        # record keeps the profile as given, since a resumed run must run the same scripts.
        profile=redact_data(profile.model_dump(mode="json")),
        provider=provider,
        plugins=[
            PluginRef.model_validate(redact_data(p.model_dump(mode="json"))) for p in profile.plugins or []
        ],
        order=order_nodes(snapshot, profile.node_order),
        max_failed=profile.effective_max_failed(len(snapshot.nodes)),
        nodes={
            n.name: NodeAtStart(
                state=n.state.value,
                in_maintenance=n.in_maintenance,
                roles=[r.name for r in snapshot.roles_on(n.name)],
                boot_id=n.boot_id,
            )
            for n in snapshot.nodes
        },
        # Where every role ran when the run started: failback is checked against this.
        roles={
            r.name: RoleAtStart(
                kind=r.kind.value,
                owner=r.owner,
                instances=list(r.instances) if r.kind is RoleKind.CLONE else None,
            )
            for r in snapshot.roles
        },
    )
