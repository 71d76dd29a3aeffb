"""The placement's indexed search (cau.domain.placement) decides as its rule reads: each role, the
largest first, to its first preferred owner with room, otherwise to the usable node with the most
free cpu (then memory, then name) that has room. The reference below is that rule written plainly,
one scan of every node per role."""

from __future__ import annotations

from collections.abc import Collection

from hypothesis import given, settings
from hypothesis import strategies as st

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.placement import place_roles


def reference(
    snapshot: ClusterSnapshot, draining: Collection[str], unavailable: Collection[str]
) -> tuple[dict[str, str], list[str]]:
    excluded = set(draining) | set(unavailable)
    targets = [n.name for n in snapshot.nodes if n.is_up and not n.in_maintenance and n.name not in excluded]
    free = {name: snapshot.free(name) for name in targets}
    to_move = sorted(
        (r for name in set(draining) for r in snapshot.roles_on(name) if r.movable and r.owner == name),
        key=lambda r: (r.needs.cpu, r.needs.memory_gb, r.name),
        reverse=True,
    )
    moves: dict[str, str] = {}
    unplaced: list[str] = []
    for role in to_move:
        choice = next((n for n in role.preferred_owners if n in free and free[n].covers(role.needs)), None)
        if choice is None:
            fitting = [n for n in targets if free[n].covers(role.needs)]
            choice = min(fitting, key=lambda n: (-free[n].cpu, -free[n].memory_gb, n)) if fitting else None
        if choice is None:
            unplaced.append(role.name)
            continue
        moves[role.name] = choice
        free[choice] = free[choice] - role.needs
    return moves, unplaced


@st.composite
def clusters(draw: st.DrawFn) -> tuple[ClusterSnapshot, list[str], list[str]]:
    count = draw(st.integers(2, 9))
    names = [f"n{i}" for i in range(count)]
    nodes = tuple(
        Node(
            name,
            state=draw(st.sampled_from([NodeState.UP, NodeState.UP, NodeState.UP, NodeState.DOWN])),
            in_maintenance=draw(st.booleans()) and draw(st.booleans()),
            # Small whole and half sizes: ties between nodes are common, as in real pools.
            capacity=Capacity(draw(st.integers(2, 16)) / 2, draw(st.integers(2, 16))),
        )
        for name in names
    )
    roles = []
    for i in range(draw(st.integers(0, 24))):
        kind = draw(st.sampled_from([RoleKind.LIVE, RoleKind.FAILOVER, RoleKind.PINNED, RoleKind.CLONE]))
        needs = Capacity(draw(st.integers(1, 8)) / 2, draw(st.integers(1, 8)))
        preferred = tuple(draw(st.lists(st.sampled_from(names), max_size=2, unique=True)))
        if kind is RoleKind.CLONE:
            instances = tuple(draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)))
            roles.append(Role(f"r{i}", kind, needs, instances=instances))
        else:
            roles.append(
                Role(f"r{i}", kind, needs, owner=draw(st.sampled_from(names)), preferred_owners=preferred)
            )
    draining = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
    unavailable = draw(st.lists(st.sampled_from(names), max_size=2, unique=True))
    return ClusterSnapshot("c", nodes, tuple(roles)), draining, unavailable


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_the_placement_chooses_what_its_rule_says(case: tuple[ClusterSnapshot, list[str], list[str]]) -> None:
    snapshot, draining, unavailable = case
    placement = place_roles(snapshot, draining, unavailable=unavailable)
    moves, unplaced = reference(snapshot, draining, unavailable)
    assert placement.moves == moves
    assert [r.name for r in placement.unplaced] == unplaced
