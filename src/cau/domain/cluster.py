"""What cau sees of a cluster: nodes, clustered roles, capacity and quorum votes.

Pure data with no I/O. A provider observes the real (or simulated) cluster and returns a
`ClusterSnapshot`; the engine's decisions are made on snapshots only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class NodeState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


class RoleKind(StrEnum):
    """How a clustered role can leave a node."""

    LIVE = "live"  # live migration: no interruption
    FAILOVER = "failover"  # planned stop here, start elsewhere: a transient interruption
    CLONE = "clone"  # runs on several nodes; losing one instance is no interruption
    PINNED = "pinned"  # cannot move: stopped while its node is in maintenance


@dataclass(frozen=True, order=True)
class Capacity:
    cpu: float = 0.0
    memory_gb: float = 0.0

    def __add__(self, other: Capacity) -> Capacity:
        return Capacity(self.cpu + other.cpu, self.memory_gb + other.memory_gb)

    def __sub__(self, other: Capacity) -> Capacity:
        return Capacity(self.cpu - other.cpu, self.memory_gb - other.memory_gb)

    def covers(self, need: Capacity) -> bool:
        # A small tolerance keeps float sums (0.1 + 0.2) from refusing an exact fit.
        return self.cpu + 1e-9 >= need.cpu and self.memory_gb + 1e-9 >= need.memory_gb

    @staticmethod
    def total(items: Iterable[Capacity]) -> Capacity:
        out = Capacity()
        for item in items:
            out = out + item
        return out

    def __str__(self) -> str:
        return f"{self.cpu:g} cpu / {self.memory_gb:g} GB"


@dataclass(frozen=True)
class Node:
    name: str
    state: NodeState = NodeState.UP
    in_maintenance: bool = False
    capacity: Capacity = field(default_factory=Capacity)
    votes: int = 1
    boot_id: str | None = None
    failure_domain: str | None = None
    # The cluster's coordinator node (Pacemaker's DC): updated last, so the cluster changes its
    # leader once, not at every node.
    leader: bool = False
    # Where the node is (site, rack, chassis...): the configuration's labels, or the provider's
    # (Pacemaker node attributes). cau.domain.disruption picks the failure domain among them.
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def is_up(self) -> bool:
        return self.state is NodeState.UP

    def label(self, key: str) -> str | None:
        """A label's value; "failure_domain" is the node's `failure_domain` unless a label says."""
        value = self.labels.get(key)
        if value is None and key == "failure_domain":
            return self.failure_domain
        return value


@dataclass(frozen=True)
class Role:
    name: str
    kind: RoleKind
    needs: Capacity = field(default_factory=Capacity)
    # The node running a live/failover/pinned role; None when it is stopped. Unused for clones.
    owner: str | None = None
    # Nodes running an instance of a clone role.
    instances: tuple[str, ...] = ()
    preferred_owners: tuple[str, ...] = ()
    # How many instances a clone should run (its configured count), when the provider knows:
    # a disruption budget's percent counts from it (cau.domain.disruption).
    expected_instances: int | None = None

    @property
    def running(self) -> bool:
        return bool(self.instances) if self.kind is RoleKind.CLONE else self.owner is not None

    def hosted_on(self, node: str) -> bool:
        if self.kind is RoleKind.CLONE:
            return node in self.instances
        return self.owner == node

    @property
    def movable(self) -> bool:
        """True when draining its node means finding it another home (and capacity there)."""
        return self.kind in (RoleKind.LIVE, RoleKind.FAILOVER)


@dataclass(frozen=True)
class VoteQuorum:
    """The cluster manager's own quorum rule, when it reports one (Corosync's votequorum): the
    votes it needs, and votes held outside the nodes (a quorum device), counted while the
    device votes. Without one, quorum is a strict majority of the nodes' votes."""

    needed: int
    device_votes: int = 0
    # How the cluster manager came to `needed`, for messages ("two_node", "expected 4", ...).
    basis: str = ""


@dataclass(frozen=True)
class ClusterSnapshot:
    name: str
    nodes: tuple[Node, ...]
    roles: tuple[Role, ...] = ()
    # Pools without cluster quorum (plain server pools) say how many nodes must stay online
    # instead; None means quorum is a majority of votes.
    min_online: int | None = None
    vote_quorum: VoteQuorum | None = None

    # Indexes made once per snapshot (a snapshot never changes): every admission asks these for
    # every node, so scanning all roles (or all nodes) each time made a run's decisions grow with
    # N x roles. `dataclasses.replace` makes a new snapshot, with indexes of its own.
    @cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _hosted(self) -> dict[str, tuple[Role, ...]]:
        return self._load[0]

    @cached_property
    def _used(self) -> dict[str, Capacity]:
        return self._load[1]

    @cached_property
    def _load(self) -> tuple[dict[str, tuple[Role, ...]], dict[str, Capacity]]:
        """The roles on each node and what they use, in one pass over the roles."""
        on: dict[str, list[Role]] = {}
        sums: dict[str, list[float]] = {}  # node -> [cpu, memory], summed as Capacity.total does
        clone = RoleKind.CLONE
        for r in self.roles:
            if r.kind is clone:
                homes: tuple[str, ...] = r.instances
            elif r.owner:
                homes = (r.owner,)
            else:
                continue
            cpu, memory = r.needs.cpu, r.needs.memory_gb
            for home in homes:
                hosted = on.get(home)
                if hosted is None:
                    on[home] = [r]
                    sums[home] = [cpu, memory]
                else:
                    hosted.append(r)
                    total = sums[home]
                    total[0] += cpu
                    total[1] += memory
        used = {name: Capacity(cpu, memory) for name, (cpu, memory) in sums.items()}
        return {name: tuple(roles) for name, roles in on.items()}, used

    @cached_property
    def _free(self) -> dict[str, Capacity]:
        used = self._used
        free: dict[str, Capacity] = {}
        for n in self.nodes:
            u = used.get(n.name)
            free[n.name] = n.capacity if u is None else n.capacity - u
        return free

    @cached_property
    def serving(self) -> tuple[str, ...]:
        """The nodes that can take roles (up, not in maintenance), in the snapshot's order."""
        return tuple(n.name for n in self.nodes if n.is_up and not n.in_maintenance)

    @cached_property
    def serving_set(self) -> frozenset[str]:
        return frozenset(self.serving)

    @cached_property
    def by_most_free(self) -> tuple[str, ...]:
        """The serving nodes, the most free cpu first (then memory, then name): the order in
        which a spreading placement tries targets (cau.domain.placement)."""
        free = self._free
        return tuple(sorted(self.serving, key=lambda n: (-free[n].cpu, -free[n].memory_gb, n)))

    @cached_property
    def not_serving(self) -> frozenset[str]:
        """The nodes out of service as observed: down, or in maintenance."""
        return frozenset(n.name for n in self.nodes if not n.is_up or n.in_maintenance)

    @cached_property
    def _by_label(self) -> dict[str, dict[str | None, tuple[Node, ...]]]:
        return {}

    def nodes_by_label(self, key: str) -> Mapping[str | None, tuple[Node, ...]]:
        """The nodes grouped by a label's value (`Node.label`), each group in the snapshot's order."""
        groups = self._by_label.get(key)
        if groups is None:
            found: dict[str | None, list[Node]] = {}
            for n in self.nodes:
                found.setdefault(n.label(key), []).append(n)
            groups = self._by_label[key] = {value: tuple(nodes) for value, nodes in found.items()}
        return groups

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def has_node(self, name: str) -> bool:
        return name in self._by_name

    @cached_property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    @cached_property
    def role_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.roles)

    def roles_on(self, node: str) -> tuple[Role, ...]:
        return self._hosted.get(node, ())

    def used(self, node: str) -> Capacity:
        return self._used.get(node) or Capacity.total(())

    def free(self, node: str) -> Capacity:
        return self._free[node]

    @cached_property
    def expected_votes(self) -> int:
        return sum(n.votes for n in self.nodes)

    @cached_property
    def online_votes(self) -> int:
        return sum(n.votes for n in self.nodes if n.is_up)

    @cached_property
    def online_count(self) -> int:
        return sum(1 for n in self.nodes if n.is_up)

    @property
    def votes_needed(self) -> int:
        """Votes (nodes' and a quorum device's) the cluster must keep to stay quorate."""
        if self.vote_quorum is not None:
            return self.vote_quorum.needed
        return self.expected_votes // 2 + 1

    @property
    def device_votes(self) -> int:
        return self.vote_quorum.device_votes if self.vote_quorum is not None else 0

    def quorate_with(self, node_votes: int) -> bool:
        """Would the cluster be quorate with `node_votes` of its nodes' votes online?"""
        return node_votes + self.device_votes >= self.votes_needed

    def describe_votes(self, node_votes: int) -> str:
        """`node_votes` in words, against what quorum needs: "1 of 3 votes (2 needed)"."""
        device = f" + {self.device_votes} of a quorum device" if self.device_votes else ""
        basis = f", {self.vote_quorum.basis}" if self.vote_quorum and self.vote_quorum.basis else ""
        return f"{node_votes} of {self.expected_votes} votes{device} ({self.votes_needed} needed{basis})"

    @property
    def has_quorum(self) -> bool:
        if self.min_online is not None:
            return self.online_count >= self.min_online
        return self.quorate_with(self.online_votes)
