"""Before a run: the run's opening journal record. (Its preflight checks are the readiness rules,
cau.readiness, run by Service._create_run.)"""

from __future__ import annotations

from cau.domain.cluster import ClusterSnapshot, RoleKind
from cau.domain.disruption import domain_of
from cau.domain.planning import run_order
from cau.domain.profile import RunProfile
from cau.journal.events import NodeAtStart, PluginRef, RoleAtStart, RunCreated
from cau.redact import redact_data


def run_created(
    snapshot: ClusterSnapshot,
    profile: RunProfile,
    provider: str,
    *,
    started_by: str | None = None,
    order: list[str] | None = None,
) -> RunCreated:
    """The run's opening journal record. `profile` has its plug-ins resolved (the profile's, the
    cluster's or the provider's); `started_by` is who asked for the run; `order` the order the run
    takes (`run_order`), when the caller has it already."""
    return RunCreated(
        started_by=started_by,
        # The journal's copy is redacted (a script's command line may carry a secret); the run
        # record keeps the profile as given, since a resumed run must run the same scripts.
        profile=redact_data(profile.model_dump(mode="json")),
        provider=provider,
        plugins=[
            PluginRef.model_validate(redact_data(p.model_dump(mode="json"))) for p in profile.plugins or []
        ],
        order=order if order is not None else run_order(snapshot, profile),
        max_failed=profile.effective_max_failed(len(snapshot.nodes)),
        nodes={
            n.name: NodeAtStart(
                state=n.state.value,
                in_maintenance=n.in_maintenance,
                roles=[r.name for r in snapshot.roles_on(n.name)],
                boot_id=n.boot_id,
                domain=domain_of(n, profile.domain_label),
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
