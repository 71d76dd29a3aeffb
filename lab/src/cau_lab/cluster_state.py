"""The lab's Pacemaker cluster as crm_mon sees it, in the terms the lab and its tests use (where a
workload runs, whether everything is started, which nodes are online), over cau's own crm_mon
parser (cau.providers.pacemaker_state) rather than a second one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field

from cau.providers.pacemaker_state import ClusterStatus, PcmkFailure, PcmkNode, PcmkResource, parse_crm_mon


@dataclass(frozen=True)
class ClusterState:
    """What `crm_mon --output-as=xml` says (from one node's point of view)."""

    status: ClusterStatus
    # clone id -> crm_mon's role of each of its instances (Started, Starting, Stopped...):
    # PcmkResource has none for a clone, and counts an instance still starting as active.
    clone_roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def nodes(self) -> dict[str, PcmkNode]:
        return {n.name: n for n in self.status.nodes}

    @property
    def dc(self) -> str | None:
        return self.status.dc

    @property
    def quorum(self) -> bool:
        return self.status.with_quorum

    @property
    def failures(self) -> list[PcmkFailure]:
        return list(self.status.failures)

    @property
    def online(self) -> list[str]:
        return sorted(n.name for n in self.status.nodes if n.online)

    def locations(self, rid: str) -> list[str]:
        """The nodes where a primitive, group (any member) or clone (any instance) is active,
        sorted. A live migration's source counts until its stop there has run (crm_mon already
        shows the target only): what a test waiting for a node to be drained must not miss."""
        res = self.status.resource(rid)
        if res is None:
            return []
        return sorted({*res.present_on, *self.status.left_behind_on(rid)})

    def all_started(self) -> bool:
        return all(self._started(r) for r in self.status.resources)

    def _started(self, res: PcmkResource) -> bool:
        """Running and healthy, nothing failed: a primitive Started, a group with every member
        done starting on its node, a clone with at least one instance Started."""
        if res.failed:
            return False
        if res.kind == "primitive":
            return res.role == "Started"
        if res.kind == "clone":
            return "Started" in self.clone_roles.get(res.id, ())
        return bool(res.complete_on)


def cluster_state(xml_text: str) -> ClusterState:
    """Parse crm_mon's XML (a CauError if it is not crm_mon's)."""
    status = parse_crm_mon(xml_text)
    root = ET.fromstring(xml_text[xml_text.find("<") :])  # read once already: cannot fail
    roles = {
        clone.get("id", ""): tuple(r.get("role", "") for r in clone.iter("resource"))
        for clone in root.iterfind("resources/clone")
    }
    return ClusterState(status, roles)
