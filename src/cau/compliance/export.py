"""A compliance view as CSV, one row per node, baseline and update: `cau compliance --output
csv` and the API's export (GET /api/v1/compliance/{cluster}/export?format=csv) write the same."""

from __future__ import annotations

import csv
import io

from cau.compliance.view import ClusterCompliance


def compliance_csv(view: ClusterCompliance) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        [
            "cluster",
            "node",
            "node_status",
            "scanned_at",
            "baseline",
            "update",
            "title",
            "status",
            "installed",
            "required",
            "available",
            "exemption",
            "detail",
        ]
    )
    for n in view.nodes:
        for b in n.baselines:
            for u in b.updates:
                w.writerow([
                    view.cluster, n.node, n.status.value, n.scanned_at.isoformat() if n.scanned_at else "",
                    b.baseline, u.update, u.title, u.status.value, u.installed or "", u.required or "",
                    u.available or "", u.exemption or "", u.exemption_note or u.detail,
                ])  # fmt: skip
        if not n.baselines:
            w.writerow(
                [view.cluster, n.node, n.status.value, n.scanned_at.isoformat() if n.scanned_at else ""]
                + [""] * 9
            )
    return buf.getvalue()


__all__ = ["compliance_csv"]
