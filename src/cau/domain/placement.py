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
    targets = snapshot.serving_set - excluded
    # Each target's room as the placement fills it: only the nodes it placed roles on differ
    # from the snapshot's. The most-free target that fits is then the first fitting node of the
    # snapshot's own order (`by_most_free`, kept once per snapshot) or one of those changed: a
    # role costs a few lookups, not one per node, so an admission's cost does not grow with N.
    changed: dict[str, Capacity] = {}

    def free(name: str) -> Capacity:
        return changed[name] if name in changed else snapshot.free(name)

    to_move = sorted(
        (r for name in draining_set for r in snapshot.roles_on(name) if r.movable and r.owner == name),
        key=lambda r: (_size(r), r.name),
        reverse=True,
    )
    moves: dict[str, str] = {}
    unplaced: list[Role] = []
    for role in to_move:
        choice = next(
            (n for n in role.preferred_owners if n in targets and free(n).covers(role.needs)),
            None,
        )
        if choice is None:
            choice = _most_free_fitting(snapshot, role.needs, targets, changed)
        if choice is None:
            unplaced.append(role)
            continue
        moves[role.name] = choice
        changed[choice] = free(choice) - role.needs
    return Placement(moves=moves, unplaced=tuple(unplaced))


def _most_free_fitting(
    snapshot: ClusterSnapshot, needs: Capacity, targets: Collection[str], changed: dict[str, Capacity]
) -> str | None:
    """The target with the most free cpu (then memory, then name) that has room for `needs`."""
    best: tuple[float, float, str] | None = None
    for name in snapshot.by_most_free:
        room = snapshot.free(name)
        if room.cpu + 1e-9 < needs.cpu:
            break  # the nodes after it have less cpu still (the tolerance is `covers`')
        if name in targets and name not in changed and room.covers(needs):
            best = (-room.cpu, -room.memory_gb, name)
            break
    for name, room in changed.items():
        key = (-room.cpu, -room.memory_gb, name)
        if room.covers(needs) and (best is None or key < best):
            best = key
    return None if best is None else best[2]
