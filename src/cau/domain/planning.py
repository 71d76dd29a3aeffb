"""Pure decisions of the Updating Run: node order and who may go into maintenance now.

Limits decide whether one more node may be worked on:
  * the failure budget and `max_parallel_nodes` decide whether a node may *start*;
  * quorum, capacity, failure domains and disruption budgets (cau.domain.disruption) decide
    whether a started node may *enter maintenance*.
Nodes holding a maintenance slot are counted as possibly down (they may be restarting), which is
what keeps quorum safe whatever order the restarts happen in.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from cau.domain.cluster import ClusterSnapshot, RoleKind
from cau.domain.disruption import (
    FAILURE_DOMAIN_LABEL,
    DisruptionLimits,
    budget_block,
    domain_block,
    domain_of,
)
from cau.domain.packing import in_waves, limits_of
from cau.domain.placement import place_roles
from cau.domain.profile import MoveMethod, RunProfile
from cau.domain.results import ErrorId


class Block(StrEnum):
    PARALLEL_LIMIT = "parallel-limit"
    FAILURE_BUDGET = "failure-budget"
    QUORUM = "quorum"
    CAPACITY = "capacity"
    HEALTH = "cluster-health"
    PLACEMENT = "placement"  # the cluster manager says a role would stop, not move
    DOMAIN_LIMIT = "domain-limit"  # max_nodes_per_domain of its failure domain are out of service
    DISRUPTION_BUDGET = "disruption-budget"  # a budget's roles would have too few instances running

    @property
    def error_id(self) -> ErrorId:
        if self is Block.QUORUM:
            return ErrorId.QUORUM_AT_RISK
        if self is Block.HEALTH:
            return ErrorId.CLUSTER_UNHEALTHY
        if self is Block.PLACEMENT:
            return ErrorId.DRAIN_WOULD_STOP_ROLES
        if self is Block.DOMAIN_LIMIT:
            return ErrorId.FAILURE_DOMAIN_LIMIT
        if self is Block.DISRUPTION_BUDGET:
            return ErrorId.DISRUPTION_BUDGET
        return ErrorId.INSUFFICIENT_CAPACITY


@dataclass(frozen=True)
class Admission:
    admitted: bool
    block: Block | None = None
    reason: str = ""
    # For an admitted live drain: where each of the candidate's movable roles goes (role ->
    # node), planned with every other drain's roles; empty otherwise.
    moves: Mapping[str, str] = field(default_factory=dict)

    @staticmethod
    def ok() -> Admission:
        return Admission(True)


def unknown_nodes(snapshot: ClusterSnapshot, names: Sequence[str]) -> list[str]:
    known = set(snapshot.node_names)
    return [n for n in names if n not in known]


def run_order(snapshot: ClusterSnapshot, profile: RunProfile) -> list[str]:
    """The order a run of `profile` takes the nodes in (its explicit order, its domains). A
    parallel run takes the nodes its explicit order does not name in waves, the tightest failure
    domains and disruption budgets first (cau.domain.packing), within each domain of a
    domain_order, the leader still last."""
    order = order_nodes(
        snapshot, profile.node_order, domain_label=profile.domain_label, domain_order=profile.domain_order
    )
    if profile.max_parallel_nodes == 1:
        return order
    limits = limits_of(snapshot, profile.disruption_limits, roles_move=profile.move is MoveMethod.LIVE)
    if not limits:
        return order
    head = explicit_head(profile.node_order, set(order))
    ranks = domain_ranks(snapshot, profile) or {}
    out = list(head)
    rest = order[len(head) :]
    while rest:  # each domain of a domain_order on its own (one segment without one)
        rank = ranks.get(rest[0], 0)
        segment = [n for n in rest if ranks.get(n, 0) == rank]
        rest = [n for n in rest if ranks.get(n, 0) != rank]
        leader = [n for n in segment if snapshot.node(n).leader]
        out += in_waves([n for n in segment if n not in leader], limits) + leader
    return out


def explicit_head(explicit: Sequence[str] | None, known: Collection[str]) -> list[str]:
    """The nodes of an explicit order that the cluster has, each once, in that order: a run
    takes them first (order_nodes), and a parallel run keeps them first (run_order)."""
    return [n for n in dict.fromkeys(explicit or ()) if n in known]


def domain_rank(domain: str | None, domain_order: Sequence[str]) -> int:
    """Where a failure domain comes in a domain_order (CAU's site-aware updating): every node of
    a domain finishes before a node of a later one starts. The domains it does not name, and
    nodes without one, come after all it names, together."""
    return domain_order.index(domain) if domain in domain_order else len(domain_order)


def domain_ranks(snapshot: ClusterSnapshot, profile: RunProfile) -> dict[str, int] | None:
    """Each node's domain_rank under the profile's domain_order; None without one."""
    if not profile.domain_order:
        return None
    label, order = profile.domain_label, profile.domain_order
    return {n.name: domain_rank(domain_of(n, label), order) for n in snapshot.nodes}


def order_nodes(
    snapshot: ClusterSnapshot,
    explicit: Sequence[str] | None = None,
    *,
    domain_label: str = FAILURE_DOMAIN_LABEL,
    domain_order: Sequence[str] | None = None,
) -> list[str]:
    """CAU's order: the node hosting the fewest roles first, the cluster's leader (e.g. the
    Pacemaker DC) last. An explicit order comes first; nodes it does not name follow in the
    default order.

    With failure domains (`domain_label`), the nodes not named take turns between domains (one
    node of each domain, then the next of each...), so that nodes next to each other in the order
    can be in maintenance together (at most `max_nodes_per_domain` of a domain can). With a
    `domain_order`, CAU's site-aware order: every node of one domain before the next domain's,
    the domains named first, in that order, then the others (the leader's last); the leader is
    last of its domain."""
    default = sorted(
        snapshot.node_names,
        key=lambda n: (snapshot.node(n).leader, len(snapshot.roles_on(n)), n),
    )
    head = explicit_head(explicit, set(default))
    rest = [n for n in default if n not in head]
    if any(domain_of(snapshot.node(n), domain_label) is not None for n in rest):
        rest = _by_domain(snapshot, rest, domain_label, domain_order)
    return head + rest


def _by_domain(
    snapshot: ClusterSnapshot, names: list[str], label: str, domain_order: Sequence[str] | None
) -> list[str]:
    """`names` (in the default order) grouped by failure domain: see order_nodes."""
    groups: dict[str | None, list[str]] = {}
    for name in names:
        groups.setdefault(domain_of(snapshot.node(name), label), []).append(name)
    if domain_order:
        # Domains in order; then the others by their first node (the leader's domain last, since
        # the leader is last in the default order); nodes without a domain at the end.
        named = [d for d in domain_order if d in groups]
        others = [d for d in groups if d is not None and d not in named]
        tail = [None] if None in groups else []
        return [n for d in [*named, *others, *tail] for n in groups[d]]
    # Nodes without a domain are each a domain of their own.
    queues = [g for d, g in groups.items() if d is not None] + [[n] for n in groups.get(None, [])]
    queues.sort(key=lambda q: names.index(q[0]))
    leader = [n for n in names if snapshot.node(n).leader]
    out: list[str] = []
    for turn in range(max(len(q) for q in queues)):
        out += [q[turn] for q in queues if turn < len(q) and q[turn] not in leader]
    return out + leader


def may_start(*, in_flight: int, failed: int, max_parallel: int | None, max_failed: int) -> Admission:
    """May one more node start? `max_parallel` None means no fixed cap ("auto").

    The budget rule: even if every node in flight failed, the run must stop at max_failed + 1
    failures, never beyond. So a node starts only while failed + in_flight <= max_failed.
    """
    if max_parallel is not None and in_flight >= max_parallel:
        return Admission(False, Block.PARALLEL_LIMIT, f"{in_flight} node(s) already in progress")
    if failed + in_flight > max_failed:
        return Admission(
            False,
            Block.FAILURE_BUDGET,
            f"{failed} failed + {in_flight} in progress would risk more than {max_failed + 1} failures",
        )
    return Admission.ok()


def admit_to_maintenance(
    snapshot: ClusterSnapshot,
    candidate: str,
    holders: Collection[str],
    move: MoveMethod,
    store_members: Collection[str] = (),
    limits: DisruptionLimits | None = None,
    unavailable: Collection[str] = (),
) -> Admission:
    """May `candidate` enter maintenance while `holders` hold (or are entering) maintenance?
    `store_members`: the nodes hosting a member of the run store (etcd, in self-updating mode):
    a majority of them stays up, or the store, and with it the run's journal, stops.
    `limits`: failure domains and disruption budgets (cau.domain.disruption); None: the defaults
    (one node per failure domain when nodes have domains, no budget).
    `unavailable`: nodes that take no role now, though up (a node whose roles are failing back
    to it: its room is theirs)."""
    busy = set(holders) | {candidate}
    if candidate in store_members:
        members = [n for n in snapshot.nodes if n.name in store_members]
        up = sum(1 for n in members if n.is_up and n.name not in busy)
        if 2 * up <= len(store_members):
            return Admission(
                False,
                Block.QUORUM,
                f"taking {candidate} down would leave {up} of the run store's {len(store_members)}"
                f" members up, not a majority (store_members: {', '.join(sorted(store_members))})",
            )
    # The nodes up and not busy: those up, less the busy ones up (|busy| lookups, not N).
    busy_up = [snapshot.node(n) for n in busy if snapshot.has_node(n) and snapshot.node(n).is_up]
    if snapshot.min_online is not None:
        up = snapshot.online_count - len(busy_up)
        if up < snapshot.min_online:
            return Admission(
                False,
                Block.QUORUM,
                f"taking {candidate} down would leave {up} node(s) online, fewer than "
                f"min_online = {snapshot.min_online}",
            )
    else:
        remaining = snapshot.online_votes - sum(n.votes for n in busy_up)
        if not snapshot.quorate_with(remaining):
            return Admission(
                False,
                Block.QUORUM,
                f"taking {candidate} down would leave {snapshot.describe_votes(remaining)}",
            )
    limits = limits if limits is not None else DisruptionLimits()
    domain = domain_block(snapshot, candidate, holders, limits)
    if domain is not None:
        return Admission(False, Block.DOMAIN_LIMIT, domain)
    moves: dict[str, str] = {}
    if move is MoveMethod.LIVE:
        placement = place_roles(snapshot, busy, unavailable=unavailable)
        if not placement.feasible:
            return Admission(False, Block.CAPACITY, placement.explain())
        own = {r.name for r in snapshot.roles_on(candidate) if r.movable}
        moves = {role: to for role, to in placement.moves.items() if role in own}
    budget = budget_block(snapshot, candidate, holders, limits, roles_move=move is MoveMethod.LIVE)
    if budget is not None:
        return Admission(False, Block.DISRUPTION_BUDGET, budget)
    return Admission(True, moves=moves)


def project_in_flight(snapshot: ClusterSnapshot, plans: Mapping[str, Mapping[str, str]]) -> ClusterSnapshot:
    """The cluster as it will be once every planned move in flight has landed: each role still
    on a draining node (a key of `plans`) is counted on its planned target, so the room it will
    take there is reserved, and the draining node counts as in maintenance. Roles already moved
    (or moved elsewhere since) are left as observed."""
    if not plans:
        return snapshot
    # role -> {its draining node: its target}: one lookup by name per role
    landing: dict[str, dict[str, str]] = {}
    for source, moves in plans.items():
        for role, target in moves.items():
            landing.setdefault(role, {})[source] = target
    clone = RoleKind.CLONE
    roles = []
    for r in snapshot.roles:
        planned = landing.get(r.name)
        if planned is not None and r.owner is not None and r.kind is not clone:
            to = planned.get(r.owner)
            if to is not None:
                r = replace(r, owner=to)
        roles.append(r)
    nodes = tuple(replace(n, in_maintenance=True) if n.name in plans else n for n in snapshot.nodes)
    return replace(snapshot, nodes=nodes, roles=tuple(roles))
