"""The order of a parallel run: the nodes of the tightest limits first, compatible nodes together.

A failure domain that lets one node out at a time, or a disruption budget that lets one instance
down at a time, makes its nodes a *chain*: they go one after another, whatever the run does. A
chain the run reaches last is waited for at its end: with four racks of four and a budget over
four license servers (one per rack) that lets one down at a time, CAU's order (fewest roles first)
takes the license servers' nodes last, and the run ends with them going one by one while the rest
of the cluster is done (the 16-node benchmark: 35:07, against 29:48 with them spread from the
start). So a parallel run takes its nodes in *waves*: each wave is nodes that the limits let out
together, as many waves as the longest chain is long, picked from the longest chains first (how
many of its nodes a limit still has to take out, per node it lets out at once), ties in CAU's
order. A chain then starts with the run and keeps one node at work throughout.

This is an order, not a schedule: the maintenance gate still decides, on the cluster as it is,
who enters maintenance when (capacity, quorum, the limits themselves). A serial run keeps CAU's
order, which a parallel run without failure domains or budgets has too.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from cau.domain.cluster import ClusterSnapshot
from cau.domain.disruption import DisruptionLimits, count_budget, domain_limit, domain_of


@dataclass(frozen=True)
class Limit:
    """A failure domain or a disruption budget: `room` of its `nodes` may be out at once."""

    name: str
    room: int
    nodes: frozenset[str]


def limits_of(snapshot: ClusterSnapshot, limits: DisruptionLimits, *, roles_move: bool) -> list[Limit]:
    """The failure domains (max_nodes_per_domain of each) and the disruption budgets (the nodes
    whose going out takes one of the budget's instances down, and how many instances it may
    lose: those running beyond min_available, at least one)."""
    found: list[Limit] = []
    per_domain = domain_limit(snapshot, limits)
    if per_domain is not None:
        domains: dict[str, set[str]] = {}
        for node in snapshot.nodes:
            domain = domain_of(node, limits.domain_label)
            if domain is not None:
                domains.setdefault(domain, set()).add(node.name)
        found += [Limit(f"domain {d}", per_domain, frozenset(n)) for d, n in sorted(domains.items())]
    for budget in limits.budgets:
        now = count_budget(snapshot, budget, (), roles_move)
        hosts = frozenset(
            n
            for n in snapshot.node_names
            if count_budget(snapshot, budget, {n}, roles_move).running < now.running
        )
        if hosts:
            found.append(Limit(str(budget), max(1, now.running - now.required), hosts))
    return found


def in_waves(order: Sequence[str], limits: Sequence[Limit]) -> list[str]:
    """`order` re-ordered in waves (see the module's text). As many waves as the longest chain
    has nodes, so each wave takes an even share of the nodes: the nodes no limit names fill each
    wave after the limited ones, in `order` (unbounded, the first wave would take them all and
    leave the chains to the end again)."""
    left = Counter({limit.name: len(limit.nodes & set(order)) for limit in limits})
    longest = max((math.ceil(left[limit.name] / limit.room) for limit in limits), default=1)
    width = max(1, math.ceil(len(order) / max(1, longest)))
    of = {n: [limit for limit in limits if n in limit.nodes] for n in order}
    place = {n: i for i, n in enumerate(order)}

    def urgency(node: str) -> tuple[float, float, int]:
        pressure = [left[limit.name] / limit.room for limit in of[node]]
        return (-max(pressure, default=0.0), -sum(pressure), place[node])

    remaining = list(order)
    out: list[str] = []
    while remaining:
        wave: list[str] = []
        used: Counter[str] = Counter()
        for node in sorted(remaining, key=urgency):
            if len(wave) < width and all(used[limit.name] < limit.room for limit in of[node]):
                wave.append(node)
                used.update(limit.name for limit in of[node])
        for node in wave:
            remaining.remove(node)
            left.subtract(limit.name for limit in of[node])
        out += wave
    return out
