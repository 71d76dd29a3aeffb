"""Where the roles of drained nodes can go: one placement rule shared by the planner and the sandbox.

The planner asks "could these nodes be drained now?"; the sandbox asks "where do this node's roles
go?". Both use `place_roles`, so what the engine believes and what the simulated cluster does agree.
"""

from __future__ import annotations

import bisect
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
    rooms = _Rooms(snapshot, draining_set | set(unavailable))
    to_move = sorted(
        (r for name in draining_set for r in snapshot.roles_on(name) if r.movable and r.owner == name),
        key=lambda r: (_size(r), r.name),
        reverse=True,
    )
    moves: dict[str, str] = {}
    unplaced: list[Role] = []
    for role in to_move:
        choice = next(
            (n for n in role.preferred_owners if rooms.is_target(n) and rooms.free(n).covers(role.needs)),
            None,
        )
        if choice is None:
            choice = rooms.most_free_fitting(role.needs)
        if choice is None:
            unplaced.append(role)
            continue
        moves[role.name] = choice
        rooms.take(choice, role.needs)
    return Placement(moves=moves, unplaced=tuple(unplaced))


class _Rooms:
    """Each target's room as a placement fills it, and the search for the most-free target that
    fits. Only the nodes the placement put roles on differ from the snapshot's: the best target
    is the first fitting node of the snapshot's own order (`by_most_free`, kept once per
    snapshot) that is not changed, or the first fitting node changed (kept in the same order as
    they change). A cursor passes, once, the nodes of the snapshot's order that the placement
    can never pick again (not a target, or changed), so a role costs a few lookups, not one per
    node nor per node changed: an admission's cost does not grow with N, nor with the roles it
    re-places."""

    def __init__(self, snapshot: ClusterSnapshot, excluded: Collection[str]) -> None:
        self._snapshot = snapshot
        self._serving = snapshot.serving_set
        self._excluded = excluded
        self._order = snapshot.by_most_free
        self._cursor = 0
        self._changed: dict[str, Capacity] = {}
        self._changed_order: list[tuple[float, float, str]] = []  # (-cpu, -memory, name), best first

    def is_target(self, name: str) -> bool:
        return name in self._serving and name not in self._excluded

    def free(self, name: str) -> Capacity:
        room = self._changed.get(name)
        return room if room is not None else self._snapshot.free(name)

    def take(self, name: str, needs: Capacity) -> None:
        room = self._changed.get(name)
        if room is not None:
            self._changed_order.remove((-room.cpu, -room.memory_gb, name))
        room = self._changed[name] = self.free(name) - needs
        bisect.insort(self._changed_order, (-room.cpu, -room.memory_gb, name))

    def most_free_fitting(self, needs: Capacity) -> str | None:
        """The target with the most free cpu (then memory, then name) that has room for `needs`."""
        order, changed, free = self._order, self._changed, self._snapshot.free
        while self._cursor < len(order) and (
            order[self._cursor] in changed or not self.is_target(order[self._cursor])
        ):
            self._cursor += 1
        best: tuple[float, float, str] | None = None
        for i in range(self._cursor, len(order)):
            name = order[i]
            room = free(name)
            if room.cpu + 1e-9 < needs.cpu:
                break  # the nodes after it have less cpu still (the tolerance is `covers`')
            if name not in changed and self.is_target(name) and room.covers(needs):
                best = (-room.cpu, -room.memory_gb, name)
                break
        for key in self._changed_order:
            if best is not None and key >= best:
                break  # neither this node nor any after it beats the one found
            room = changed[key[2]]
            if room.cpu + 1e-9 < needs.cpu:
                break
            if room.covers(needs):
                best = key
                break
        return None if best is None else best[2]
