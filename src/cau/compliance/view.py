"""What `cau compliance`, the API and the dashboard show: each node's status per baseline and per
update, from the last compliance scans and the exemptions as they are now (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pydantic import BaseModel, Field, computed_field

from cau.domain.compliance import (
    Baseline,
    ClusterGroup,
    ComplianceStatus,
    Exemption,
    NodeComplianceScan,
    PendingRestart,
    StatusInputs,
    applies,
    exemption_for,
    lapsed_since,
    overall,
    update_status,
)

VIEW_SCHEMA = 1


class UpdateCompliance(BaseModel):
    update: str = Field(description="the update key, <plug-in>:<id> (or a rule's key)")
    rule: str
    title: str
    status: ComplianceStatus
    installed: str | None = None
    required: str | None = None
    available: str | None = None
    detail: str = ""
    exemption: str | None = Field(None, description="the exemption's id, when Exempt")
    exemption_note: str | None = None


class BaselineCompliance(BaseModel):
    baseline: str
    revision: int
    scanned_revision: int | None = None
    status: ComplianceStatus
    updates: list[UpdateCompliance]


class NodeCompliance(BaseModel):
    node: str
    status: ComplianceStatus
    scanned_at: datetime | None = None
    error: str | None = None
    restart_pending: bool = False
    baselines: list[BaselineCompliance]


class ClusterCompliance(BaseModel):
    schema_version: int = VIEW_SCHEMA
    cluster: str
    status: ComplianceStatus
    at: datetime = Field(description="when this view was made")
    oldest_scan: datetime | None = Field(None, description="the oldest of the nodes' last scans")
    nodes: list[NodeCompliance]
    baselines: list[str] = Field(description="the baselines that apply to some node of the cluster")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def remediable(self) -> bool:
        """Something is NonCompliant: Remediate is offered."""
        return any(
            u.status is ComplianceStatus.NON_COMPLIANT
            for n in self.nodes
            for b in n.baselines
            for u in b.updates
        )


def node_view(
    cluster: str,
    node: str,
    baselines: Sequence[Baseline],
    groups: Sequence[ClusterGroup],
    exemptions: Sequence[Exemption],
    scan: NodeComplianceScan | None,
    pending: PendingRestart | None,
    now: datetime,
) -> NodeCompliance:
    mine = [b for b in baselines if applies(b, cluster, node, groups)]
    pending_updates = set(pending.updates) if pending is not None else set()
    out: list[BaselineCompliance] = []
    for b in mine:
        scanned_rev = scan.baselines.get(b.name) if scan is not None else None
        found = [f for f in scan.findings if f.baseline == b.name] if scan is not None else []
        rows: list[UpdateCompliance] = []
        if (
            scanned_rev is None
            or scanned_rev != b.revision
            or (scan is not None and scan.error and not found)
        ):
            # not measured against this revision: each rule Unknown (or Error: the node's scan failed)
            status = (
                ComplianceStatus.ERROR
                if scan is not None and scan.error and scanned_rev == b.revision
                else ComplianceStatus.UNKNOWN
            )
            for rule in b.rules:
                e = exemption_for(
                    exemptions, groups, cluster=cluster, node=node, baseline=b.name, update=rule.key,
                    rule=rule.key, now=now,
                )  # fmt: skip
                rows.append(
                    UpdateCompliance(
                        update=rule.key,
                        rule=rule.key,
                        title=rule.describe(),
                        status=ComplianceStatus.EXEMPT if e is not None else status,
                        detail=(scan.error or "") if status is ComplianceStatus.ERROR and scan else "",
                        exemption=e.id if e is not None else None,
                        exemption_note=_note(e),
                    )
                )
        else:
            for f in found:
                e = exemption_for(
                    exemptions, groups, cluster=cluster, node=node, baseline=b.name, update=f.update,
                    rule=f.rule, now=now,
                )  # fmt: skip
                assert scan is not None
                lapsed = lapsed_since(
                    exemptions, groups, cluster=cluster, node=node, baseline=b.name, update=f.update,
                    rule=f.rule, since=scan.scanned_at, now=now,
                )  # fmt: skip
                status = update_status(
                    StatusInputs(
                        finding=f,
                        scanned_revision=scanned_rev,
                        revision=b.revision,
                        exempt_now=e is not None,
                        pending_restart=_pending(f.update, f.rule, pending_updates),
                        exemption_lapsed=lapsed,
                    )
                )
                rows.append(
                    UpdateCompliance(
                        update=f.update,
                        rule=f.rule,
                        title=f.title,
                        status=status,
                        installed=f.installed,
                        required=f.required,
                        available=f.available,
                        detail=f.detail,
                        exemption=e.id if e is not None else None,
                        exemption_note=_note(e),
                    )
                )
            # what cau installed without a restart no longer shows in a scan: "every update" rules
            # list it, PendingReboot until the node restarted
            shown = {r.update for r in rows}
            for rule in b.rules:
                if rule.key.endswith(":*"):
                    prefix = rule.key[:-1]
                    rows.extend(
                        UpdateCompliance(
                            update=k,
                            rule=rule.key,
                            title=f"{k} (installed, waiting for a restart)",
                            status=ComplianceStatus.PENDING_REBOOT,
                        )
                        for k in sorted(pending_updates)
                        if k.startswith(prefix) and k not in shown
                    )
        out.append(
            BaselineCompliance(
                baseline=b.name,
                revision=b.revision,
                scanned_revision=scanned_rev,
                status=overall(r.status for r in rows),
                updates=rows,
            )
        )
    return NodeCompliance(
        node=node,
        status=overall(b.status for b in out),
        scanned_at=scan.scanned_at if scan is not None else None,
        error=scan.error if scan is not None else None,
        restart_pending=bool(scan and scan.restart_pending),
        baselines=out,
    )


def _pending(update: str, rule: str, pending: set[str]) -> bool:
    """Installed by cau without a restart: the update itself, or for a rule met as a whole
    (`apt:origin=...`, `apt:*`) any update of its plug-in cau installed so."""
    if update in pending:
        return True
    if update == rule and any(c in rule for c in "=*>"):  # origin=, advisory=, security>=, *
        plugin = rule.split(":", 1)[0]
        return any(p.startswith(plugin + ":") for p in pending)
    return False


def _note(e: Exemption | None) -> str | None:
    if e is None:
        return None
    until = f", until {e.until.isoformat(timespec='minutes')}" if e.until else ""
    return f"{e.reason} ({e.by}{until})"


def cluster_view(
    cluster: str,
    nodes: Sequence[str],
    baselines: Sequence[Baseline],
    groups: Sequence[ClusterGroup],
    exemptions: Sequence[Exemption],
    scans: Mapping[str, NodeComplianceScan],
    pending: Mapping[str, PendingRestart],
    now: datetime,
) -> ClusterCompliance:
    views = [
        node_view(cluster, n, baselines, groups, exemptions, scans.get(n), pending.get(n), now) for n in nodes
    ]
    times = [v.scanned_at for v in views if v.scanned_at is not None]
    names = sorted({b.baseline for v in views for b in v.baselines})
    return ClusterCompliance(
        cluster=cluster,
        status=overall(v.status for v in views) if names else ComplianceStatus.COMPLIANT,
        at=now,
        oldest_scan=min(times) if times else None,
        nodes=views,
        baselines=names,
    )
