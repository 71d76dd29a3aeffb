"""Where the roles of drained nodes can go: one placement rule shared by the planner and the sandbox.

The planner asks "could these nodes be drained now?"; the sandbox asks "where do this node's roles
go?". Both use `place_roles`, so what the engine believes and what the simulated cluster does agree.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from cau.domain.cluster import Capacity, ClusterSnapshot, Role


@dataclass(frozen=True)
class Placement:
    moves: dict[str, str] = field(default_factory=dict)  # role -> target node
    unplaced: tuple[Role, ...] = ()

    @property
    def feasible(self) -> bool:
        return not self.unplaced

    def explain(self) -> str:
        need = Capacity.total(r.needs for r in self.unplaced)
        names = ", ".join(r.name for r in self.unplaced)
        return f"no node has room for {names} ({need})"


def _size(role: Role) -> tuple[float, float]:
    return (role.needs.cpu, role.needs.memory_gb)


def place_roles(
    snapshot: ClusterSnapshot,
    draining: Collection[str],
    *,
    unavailable: Collection[str] = (),
) -> Placement:
    """Place every movable role hosted on `draining` nodes onto the other usable nodes.

    Usable targets are up, not in maintenance, not draining and not `unavailable` (nodes the caller
    has reserved). Largest roles first; each goes to its first preferred owner with room, otherwise
    to the node with the most free cpu (spreading load, like a cluster's placement would).
    """
    draining_set = set(draining)
    excluded = draining_set | set(unavailable)
    # From the snapshot's indexes: the cost is the nodes' count once, not the roles' at each call.
    targets = [name for name in snapshot.serving if name not in excluded]
    free = {name: snapshot.free(name) for name in targets}
    to_move = sorted(
        (r for name in draining_set for r in snapshot.roles_on(name) if r.movable and r.owner == name),
        key=lambda r: (_size(r), r.name),
        reverse=True,
    )
    moves: dict[str, str] = {}
    unplaced: list[Role] = []
    for role in to_move:
        choice = next(
            (n for n in role.preferred_owners if n in free and free[n].covers(role.needs)),
            None,
        )
        if choice is None:
            fitting = [n for n in targets if free[n].covers(role.needs)]
            if fitting:
                choice = min(fitting, key=lambda n: (-free[n].cpu, -free[n].memory_gb, n))
        if choice is None:
            unplaced.append(role)
            continue
        moves[role.name] = choice
        free[choice] = free[choice] - role.needs
    return Placement(moves=moves, unplaced=tuple(unplaced))
