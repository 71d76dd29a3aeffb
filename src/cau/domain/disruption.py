"""Failure domains and disruption budgets: how much of the cluster may be out of service at once.

**Failure domains.** A node carries labels (site, rack, chassis...): from the cluster's
configuration (`labels`, `failure_domain`), from the provider (Pacemaker's node attributes) or a
sandbox spec. `domain_label` says which label is the failure domain; "failure_domain" (the default)
is the node's `failure_domain`. At most `max_nodes_per_domain` nodes of one domain are *out of
service* at once: held by the run (in maintenance, or entering it), down, or in maintenance
already. So a rack with a node down is already at its limit. Nodes without the label are not
limited. The limit defaults to 1 when any node has a domain, and to no limit otherwise.

**Disruption budgets**, like Kubernetes' PodDisruptionBudget: a budget selects roles by name
(exact, or a glob such as `web-*`) and keeps at least `min_available` of their *instances*
running while nodes are in maintenance; a number, or a percent of the instances (rounded up).
The instances of a budget are each instance of a selected clone and each selected live, failover
or pinned role. An instance is *down*

* when it is a clone's instance, or a pinned role, on a node out of service;
* when it is a live or failover role on a node out of service that does not move it elsewhere:
  with move = save (roles stop in place), on a node that is down, or still on a node that is in
  maintenance already. A live or failover role on a node being drained with move = live moves
  (the capacity check finds it a home first) and counts as running: a failover's restart during
  its move is the brief interruption that kind of role accepts;
* when it is stopped.

A clone's instance count, for a percent, is what the provider says it should be
(`Role.expected_instances`) or, when it does not say, the instances running plus every node out of
service: an over-count, so a percent is never laxer than meant.

A node may enter maintenance unless that takes one more node of its domain out of service past
the limit, or one more instance of a budget's roles down while fewer than `min_available` would
run. A node whose entry changes nothing (already in maintenance, or hosting none of a budget's
instances) is never held by a limit that was already reached before it.
"""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.domain.cluster import ClusterSnapshot, Node, Role, RoleKind

# The label that is the node's own `failure_domain` (configuration or spec).
FAILURE_DOMAIN_LABEL = "failure_domain"
_PERCENT = re.compile(r"^\s*(\d{1,3})\s*%\s*$")
BUDGET_EXAMPLES = "'web-clone=2', 'db-*=50%', or a table {roles = [\"web-*\"], min_available = 2}"


class DisruptionBudget(BaseModel):
    """At least `min_available` instances of the selected roles keep running."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: list[str] = Field(
        min_length=1, description="Role names, exact or globs (fnmatch, e.g. web-*): counted together."
    )
    min_available: int | str = Field(
        description="Instances that keep running: a number (2) or a percent of the instances ('50%')."
    )

    @model_validator(mode="before")
    @classmethod
    def _compact(cls, value: Any) -> Any:
        """'SELECTOR=MIN' (a flag's or the API's compact form) is {roles=[SELECTOR], min_available=MIN}."""
        if not isinstance(value, str):
            return value
        selector, sep, minimum = value.rpartition("=")
        if not sep or not selector.strip() or not minimum.strip():
            raise ValueError(f"'{value}': a disruption budget is ROLES=MIN, e.g. {BUDGET_EXAMPLES}")
        return {"roles": [selector.strip()], "min_available": minimum.strip()}

    @field_validator("roles")
    @classmethod
    def _selectors(cls, value: list[str]) -> list[str]:
        blank = [s for s in value if not s.strip()]
        if blank:
            raise ValueError("a role selector is empty: name a role, or a glob such as web-*")
        return [s.strip() for s in value]

    @field_validator("min_available", mode="before")
    @classmethod
    def _minimum(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("min_available is a number or a percent such as '50%', not a boolean")
        if isinstance(value, str) and value.strip().isdigit():
            return int(value.strip())
        if isinstance(value, str):
            match = _PERCENT.match(value)
            if match is None or int(match.group(1)) > 100:
                raise ValueError(
                    f"min_available '{value}': a number (2) or a percent from 0% to 100% ('50%')"
                )
            return f"{int(match.group(1))}%"
        if isinstance(value, int) and value < 0:
            raise ValueError(f"min_available {value}: at least 0")
        return value

    def selects(self, role: str) -> bool:
        return any(fnmatch.fnmatchcase(role, pattern) for pattern in self.roles)

    def required(self, instances: int) -> int:
        """How many of `instances` must keep running (a percent rounds up: 50 % of 3 is 2)."""
        if isinstance(self.min_available, int):
            return self.min_available
        return math.ceil(instances * int(self.min_available[:-1]) / 100)

    def __str__(self) -> str:
        return f"disruption budget {','.join(self.roles)} (min_available {self.min_available})"


@dataclass(frozen=True)
class DisruptionLimits:
    """The run's limits on what is out of service at once (the profile's options, see module)."""

    domain_label: str = FAILURE_DOMAIN_LABEL
    max_per_domain: int | None = None  # None: 1 when any node has a domain, else no limit
    budgets: tuple[DisruptionBudget, ...] = ()


# --- failure domains --------------------------------------------------------------------------------


def domain_of(node: Node, label: str) -> str | None:
    return node.label(label)


def domain_limit(snapshot: ClusterSnapshot, limits: DisruptionLimits) -> int | None:
    if limits.max_per_domain is not None:
        return limits.max_per_domain
    has_domains = any(d is not None for d in snapshot.nodes_by_label(limits.domain_label))
    return 1 if has_domains else None


def out_of_service(snapshot: ClusterSnapshot, busy: Collection[str]) -> set[str]:
    """Nodes not serving: held by the run (`busy`), down, or in maintenance."""
    return set(snapshot.not_serving).union(n for n in busy if snapshot.has_node(n))


def domain_out_of_service(
    snapshot: ClusterSnapshot, domain: str, label: str, busy: Collection[str]
) -> list[str]:
    """The nodes of `domain` out of service (see out_of_service): its own nodes only are looked at."""
    members = snapshot.nodes_by_label(label).get(domain, ())
    return sorted(n.name for n in members if n.name in busy or n.name in snapshot.not_serving)


def domain_block(
    snapshot: ClusterSnapshot, candidate: str, holders: Collection[str], limits: DisruptionLimits
) -> str | None:
    """Why `candidate` may not enter maintenance now because of its failure domain, or None."""
    label = limits.domain_label
    domain = domain_of(snapshot.node(candidate), label)
    limit = domain_limit(snapshot, limits)
    if domain is None or limit is None:
        return None
    before = domain_out_of_service(snapshot, domain, label, holders)
    after = domain_out_of_service(snapshot, domain, label, {*holders, candidate})
    if len(after) <= limit or len(after) == len(before):
        return None
    others = [n for n in after if n != candidate]
    return (
        f"{label} {domain} has {len(others)} node(s) out of service already ({', '.join(others)}): "
        f"{candidate} would make {len(after)}, more than max_nodes_per_domain = {limit}"
    )


def domain_violations(snapshot: ClusterSnapshot, limits: DisruptionLimits, allowed: int = 0) -> list[str]:
    """Domains with more nodes out of service than the limit (or than `allowed`, what was out of
    service before cau did anything), as observed: for tests and benchmarks."""
    limit = domain_limit(snapshot, limits)
    if limit is None:
        return []
    domains = sorted({d for n in snapshot.nodes if (d := domain_of(n, limits.domain_label)) is not None})
    problems = []
    for domain in domains:
        out = domain_out_of_service(snapshot, domain, limits.domain_label, ())
        if len(out) > max(limit, allowed):
            problems.append(
                f"{limits.domain_label} {domain}: {len(out)} nodes out of service ({', '.join(out)}), "
                f"max_nodes_per_domain = {limit}"
            )
    return problems


# --- disruption budgets -----------------------------------------------------------------------------


def budget_roles(snapshot: ClusterSnapshot, budget: DisruptionBudget) -> list[Role]:
    chosen = _selected(tuple(budget.roles), snapshot.role_names)
    return [r for r in snapshot.roles if r.name in chosen]


def _hosts_budget(snapshot: ClusterSnapshot, node: str, budget: DisruptionBudget) -> bool:
    """Does `node` host an instance of a budget's roles (a clone's instance, or as owner)?"""
    chosen = _selected(tuple(budget.roles), snapshot.role_names)
    return any(r.name in chosen for r in snapshot.roles_on(node))


@functools.lru_cache(maxsize=256)
def _selected(patterns: tuple[str, ...], names: tuple[str, ...]) -> frozenset[str]:
    """The role names a budget's patterns select: the same at every admission of a run (roles
    move, their names stay), so the globs are matched once, not at every admission."""
    return frozenset(n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def _clone_total(role: Role, out: set[str]) -> int:
    if role.expected_instances is not None:
        return max(role.expected_instances, len(role.instances))
    return len(set(role.instances) | out)


def _running(snapshot: ClusterSnapshot, role: Role, out: set[str], roles_move: bool, observed: bool) -> int:
    """How many instances of `role` keep running while `out` is out of service (see module).
    `observed`: count what runs now rather than what will still run once `out` is drained (a live
    role on a node in maintenance whose drain did not move it runs there until the restart)."""
    if role.kind is RoleKind.CLONE:
        return sum(1 for n in role.instances if n not in out)
    if role.owner is None:
        return 0
    if role.owner not in out:
        return 1
    if role.kind is RoleKind.PINNED or not roles_move:
        return 0
    owner = snapshot.node(role.owner) if snapshot.has_node(role.owner) else None
    if owner is None or not owner.is_up:
        return 0
    # Drained with move = live, it moves; still on a node in maintenance, its drain did not move it.
    return 1 if observed or not owner.in_maintenance else 0


@dataclass(frozen=True)
class BudgetCount:
    running: int
    instances: int
    required: int


def count_budget(
    snapshot: ClusterSnapshot,
    budget: DisruptionBudget,
    busy: Collection[str],
    roles_move: bool,
    *,
    observed: bool = False,
) -> BudgetCount:
    out = out_of_service(snapshot, busy)
    roles = budget_roles(snapshot, budget)
    total = sum(_clone_total(r, out) if r.kind is RoleKind.CLONE else 1 for r in roles)
    running = sum(_running(snapshot, r, out, roles_move, observed) for r in roles)
    return BudgetCount(running, total, budget.required(total))


def budget_block(
    snapshot: ClusterSnapshot,
    candidate: str,
    holders: Collection[str],
    limits: DisruptionLimits,
    roles_move: bool,
) -> str | None:
    """Why `candidate` may not enter maintenance now because of a disruption budget, or None."""
    for budget in limits.budgets:
        if not _hosts_budget(snapshot, candidate, budget):
            # Taking it out of service stops none of the budget's instances: `after.running` below
            # cannot fall under `before.running`, so it cannot block (and nothing need be counted).
            continue
        before = count_budget(snapshot, budget, holders, roles_move)
        after = count_budget(snapshot, budget, {*holders, candidate}, roles_move)
        if after.running < before.running and after.running < after.required:
            return (
                f"{budget}: taking {candidate} down would leave {after.running} of {after.instances} "
                f"instance(s) running, {after.required} needed"
            )
    return None


def budget_violations(
    snapshot: ClusterSnapshot,
    limits: DisruptionLimits,
    roles_move: bool,
    at_start: dict[str, int] | None = None,
) -> list[str]:
    """Budgets with fewer instances running than required, as observed: for tests and benchmarks.
    `at_start`: instances running per budget before cau did anything (a budget already short then
    is broken only when it falls lower)."""
    problems = []
    for budget in limits.budgets:
        count = count_budget(snapshot, budget, (), roles_move, observed=True)
        floor = min(count.required, (at_start or {}).get(str(budget), count.required))
        if count.running < floor:
            problems.append(
                f"{budget}: {count.running} of {count.instances} instance(s) running, {count.required} needed"
            )
    return problems


def unknown_selectors(snapshot: ClusterSnapshot, budgets: Iterable[DisruptionBudget]) -> list[str]:
    """Budget role selectors that match no role of the cluster."""
    names = [r.name for r in snapshot.roles]
    return [
        selector
        for budget in budgets
        for selector in budget.roles
        if not any(fnmatch.fnmatchcase(n, selector) for n in names)
    ]


def unknown_domains(snapshot: ClusterSnapshot, label: str, domains: Sequence[str]) -> list[str]:
    known = {domain_of(n, label) for n in snapshot.nodes}
    return [d for d in domains if d not in known]
