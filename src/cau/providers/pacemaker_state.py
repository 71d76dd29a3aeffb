"""What Pacemaker says about a cluster, parsed: `crm_mon --output-as=xml --inactive` for the live
state (nodes, DC, quorum, where each resource runs, failures), the CIB (`cibadmin --query`)
for the configuration (meta attributes such as allow-migrate and target-role, location and
colocation constraints, stickiness, node attributes), and `crm_simulate --run --output-as=xml`
for what Pacemaker's scheduler would do (the actions of a transition).

Pure functions over text, so they are tested against real outputs captured from the lab
(tests/fixtures/pacemaker/). Nothing here runs a command.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field

from cau.errors import ProviderError

# Constraints cau creates carry this prefix, so they are told apart from the operator's and
# can be found and removed after a crash.
CAU_CONSTRAINT_PREFIX = "cau-"


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("true", "on", "yes", "1", "y")


@dataclass(frozen=True)
class PcmkNode:
    name: str
    id: str
    online: bool
    standby: bool
    maintenance: bool
    unclean: bool
    pending: bool
    shutdown: bool
    is_dc: bool
    resources_running: int


@dataclass(frozen=True)
class PcmkResource:
    """A top-level resource: what cau moves as one role (a primitive, a group, a clone)."""

    id: str
    kind: str  # "primitive" | "group" | "clone" | "bundle"
    nodes: tuple[str, ...]  # where it (or, for a group, its first member) is active
    members: tuple[str, ...] = ()  # primitive ids inside a group / clone
    failed: bool = False
    managed: bool = True
    agent: str | None = None
    role: str | None = None  # Started / Stopped / Promoted ... (primitives)
    blocked: bool = False
    # A resource on its way, or a group only half there, is not "moved": nodes where it runs
    # whole (done starting; for a group every member; else as `nodes`), and nodes where any part
    # of it is active (else as `nodes`).
    whole_on: tuple[str, ...] | None = None
    partly_on: tuple[str, ...] | None = None

    @property
    def complete_on(self) -> tuple[str, ...]:
        return self.nodes if self.whole_on is None else self.whole_on

    @property
    def present_on(self) -> tuple[str, ...]:
        return self.nodes if self.partly_on is None else self.partly_on


@dataclass(frozen=True)
class PcmkFailure:
    resource: str
    node: str
    task: str
    exit_reason: str
    exit_status: str


@dataclass(frozen=True)
class ClusterStatus:
    """crm_mon's view."""

    nodes: tuple[PcmkNode, ...]
    resources: tuple[PcmkResource, ...]
    dc: str | None
    with_quorum: bool
    maintenance_mode: bool
    stonith_enabled: bool
    failures: tuple[PcmkFailure, ...] = ()
    # node -> primitives a live migration has left there: their migrate_to succeeded and the
    # target took over, but the source's stop has not run yet. crm_mon shows them on the target
    # only, though they still run here until that stop.
    leaving: dict[str, frozenset[str]] = field(default_factory=dict)

    def node(self, name: str) -> PcmkNode | None:
        return next((n for n in self.nodes if n.name == name), None)

    def resource(self, rid: str) -> PcmkResource | None:
        return next((r for r in self.resources if r.id == rid), None)

    def left_behind_on(self, rid: str) -> list[str]:
        """Nodes a live migration of `rid` (or of one of its members) has not stopped it on yet."""
        res = self.resource(rid)
        ids = {rid, *(res.members if res is not None else ())}
        return [node for node, left in self.leaving.items() if not left.isdisjoint(ids)]

    def active_on(self, node: str) -> list[str]:
        """Top-level resources with something active on `node`, including a live migration's
        source until its stop has run there."""
        leaving = self.leaving.get(node, frozenset())
        return [
            r.id
            for r in self.resources
            if node in r.present_on or r.id in leaving or not leaving.isdisjoint(r.members)
        ]


@dataclass(frozen=True)
class LocationConstraint:
    id: str
    resource: str
    node: str | None
    score: str  # "INFINITY", "-INFINITY", "100", ... (a rule's score for a rule-based one)
    rule: bool = False  # placed by <rule> elements (node is None)

    def describe(self) -> str:
        where = f"on {self.node}" if self.node else "by a rule"
        return f"{self.id} ({self.resource} {self.score} {where})"


@dataclass(frozen=True)
class Colocation:
    id: str
    resource: str  # placed relative to with_resource
    with_resource: str
    score: str

    def describe(self) -> str:
        return f"{self.id} ({self.resource} with {self.with_resource}, {self.score})"


@dataclass(frozen=True)
class ClusterConfig:
    """The CIB's configuration section."""

    meta: dict[str, dict[str, str]] = field(default_factory=dict)  # top-level id -> meta attributes
    kinds: dict[str, str] = field(default_factory=dict)  # top-level id -> primitive/group/clone
    locations: tuple[LocationConstraint, ...] = ()
    colocations: tuple[Colocation, ...] = ()
    node_attributes: dict[str, dict[str, str]] = field(default_factory=dict)  # uname -> attrs
    rsc_defaults: dict[str, str] = field(default_factory=dict)

    def allows_migration(self, rid: str) -> bool:
        meta = self.meta.get(rid, {})
        if "allow-migrate" in meta:
            return _bool(meta["allow-migrate"])
        return _bool(self.rsc_defaults.get("allow-migrate"))

    def target_role(self, rid: str) -> str | None:
        return self.meta.get(rid, {}).get("target-role")

    def stickiness(self, rid: str) -> str | None:
        meta = self.meta.get(rid, {})
        return meta.get("resource-stickiness", self.rsc_defaults.get("resource-stickiness"))

    def preferred_nodes(self, rid: str) -> tuple[str, ...]:
        """Nodes the operator's location constraints prefer, the strongest first (cau's own and
        the temporary `crm_resource --move` ones are not preferences)."""
        scored = []
        for c in self.locations:
            if c.resource != rid or c.node is None or c.id.startswith(CAU_CONSTRAINT_PREFIX):
                continue
            if c.id.startswith("cli-"):
                continue
            value = _score(c.score)
            if value > 0:
                scored.append((-value, c.node))
        return tuple(node for _, node in sorted(scored))

    def cau_constraints(self) -> list[LocationConstraint]:
        return [c for c in self.locations if c.id.startswith(CAU_CONSTRAINT_PREFIX)]

    def restrictions_on(self, ids: Iterable[str]) -> list[str]:
        """The constraints that can keep any of `ids` off nodes: location bans (a negative score
        or a rule), colocations either way, and target-role=Stopped."""
        wanted = set(ids)
        out = [
            c.describe() for c in self.locations if c.resource in wanted and (c.rule or _score(c.score) < 0)
        ]
        out += [c.describe() for c in self.colocations if c.resource in wanted or c.with_resource in wanted]
        out += [f"{rid} target-role=Stopped" for rid in sorted(wanted) if self.target_role(rid) == "Stopped"]
        return out


def _score(score: str) -> float:
    s = score.strip().upper().lstrip("+")
    if s in ("INFINITY", "INF"):
        return float("inf")
    if s in ("-INFINITY", "-INF"):
        return float("-inf")
    try:
        return float(s)
    except ValueError:
        return 0.0


def _parse_xml(text: str, what: str) -> ET.Element:
    start = text.find("<")
    if start < 0:
        raise ProviderError(f"{what}: no XML in the output ({text.strip()[:200]!r})")
    try:
        return ET.fromstring(text[start:])
    except ET.ParseError as exc:
        raise ProviderError(f"{what}: unreadable XML ({exc})") from exc


# Roles of a resource still on its way: active on its node for crm_mon, but not running there yet
# (or any more). A move is not over while one of these is shown.
_IN_TRANSITION = frozenset({"Starting", "Stopping", "Migrating", "Promoting", "Demoting"})


def _settled_nodes(el: ET.Element) -> tuple[str, ...]:
    """Nodes a crm_mon <resource> runs on, done starting (not Starting/Stopping/... there) and
    not failed (a failed start shows as active, with failed="true", until its stop has run)."""
    if el.get("role") in _IN_TRANSITION or _bool(el.get("failed")):
        return ()
    return _active_nodes(el)


def _active_nodes(el: ET.Element) -> tuple[str, ...]:
    """Nodes a crm_mon <resource> element is active on."""
    if not _bool(el.get("active")):
        return ()
    return tuple(n.get("name", "") for n in el.findall("node") if n.get("name"))


def _resource(el: ET.Element) -> PcmkResource | None:
    tag = el.tag
    if tag == "resource":
        return PcmkResource(
            id=el.get("id", ""),
            kind="primitive",
            nodes=_active_nodes(el),
            whole_on=_settled_nodes(el),
            failed=_bool(el.get("failed")),
            managed=_bool(el.get("managed", "true")),
            agent=el.get("resource_agent"),
            role=el.get("role"),
            blocked=_bool(el.get("blocked")),
        )
    if tag in ("group", "clone", "bundle"):
        inner = [child for child in el if child.tag in ("resource", "group", "replica")]
        prims: list[ET.Element] = []
        for child in inner:
            if child.tag == "resource":
                prims.append(child)
            else:  # a group inside a clone, or a bundle replica
                prims.extend(child.iter("resource"))
        nodes: list[str] = []
        whole: tuple[str, ...] | None = None
        partly: tuple[str, ...] | None = None
        if tag == "group":
            # A group runs where its first member runs (its members are colocated); it runs whole
            # only where every member is active (a member that failed to start leaves it broken).
            if prims:
                nodes = list(_active_nodes(prims[0]))
                settled = [set(_settled_nodes(p)) for p in prims]
                whole = tuple(n for n in nodes if all(n in m for m in settled))
                partly = tuple(sorted(set().union(*(_active_nodes(p) for p in prims))))
        else:
            for p in prims:
                for n in _active_nodes(p):
                    if n not in nodes:
                        nodes.append(n)
        ids = []
        for p in prims:
            rid = p.get("id", "")
            base = rid.split(":", 1)[0]  # clone instances are "web-http:0", or the same id
            if base not in ids:
                ids.append(base)
        return PcmkResource(
            id=el.get("id", ""),
            kind=tag,
            nodes=tuple(nodes),
            members=tuple(ids),
            whole_on=whole,
            partly_on=partly,
            failed=_bool(el.get("failed")) or any(_bool(p.get("failed")) for p in prims),
            managed=_bool(el.get("managed", "true")),
            blocked=any(_bool(p.get("blocked")) for p in prims),
        )
    return None


def parse_crm_mon(text: str) -> ClusterStatus:
    root = _parse_xml(text, "crm_mon")
    status = root.find("status")
    if status is not None and status.get("code") not in (None, "0"):
        raise ProviderError(f"crm_mon failed: {status.get('message')} (code {status.get('code')})")
    summary = root.find("summary")
    dc_el = summary.find("current_dc") if summary is not None else None
    opts = summary.find("cluster_options") if summary is not None else None
    dc = None
    with_quorum = False
    if dc_el is not None and _bool(dc_el.get("present")):
        dc = dc_el.get("name")
        with_quorum = _bool(dc_el.get("with_quorum"))
    nodes = tuple(
        PcmkNode(
            name=n.get("name", ""),
            id=n.get("id", ""),
            online=_bool(n.get("online")),
            standby=_bool(n.get("standby")),
            maintenance=_bool(n.get("maintenance")),
            unclean=_bool(n.get("unclean")),
            pending=_bool(n.get("pending")),
            shutdown=_bool(n.get("shutdown")),
            is_dc=_bool(n.get("is_dc")),
            resources_running=int(n.get("resources_running") or 0),
        )
        for n in root.findall("nodes/node")
    )
    resources = []
    section = root.find("resources")
    for el in section if section is not None else []:
        res = _resource(el)
        if res is not None and res.id:
            resources.append(res)
    failures = tuple(
        PcmkFailure(
            resource=(f.get("op_key") or "").rsplit("_", 2)[0] if f.get("op_key") else "",
            node=f.get("node", ""),
            task=f.get("task", ""),
            exit_reason=f.get("exitreason", ""),
            exit_status=f.get("exitstatus", ""),
        )
        for f in root.findall("failures/failure")
    )
    return ClusterStatus(
        nodes=nodes,
        resources=tuple(resources),
        dc=dc,
        with_quorum=with_quorum,
        maintenance_mode=_bool(opts.get("maintenance-mode")) if opts is not None else False,
        stonith_enabled=_bool(opts.get("stonith-enabled")) if opts is not None else False,
        failures=failures,
        leaving=dangling_migrations(root),
    )


# What ends a migration's source side (or starts the resource there again): after one of these,
# newer than the migrate_to, the resource is no longer left behind on that node.
_AFTER_MIGRATE_TO = frozenset({"stop", "start", "migrate_from", "promote", "demote"})


def dangling_migrations(root: ET.Element) -> dict[str, frozenset[str]]:
    """From crm_mon's <node_history>: per node, the primitives whose newest migrate_to there
    succeeded with no stop (or start) since. Pacemaker counts such a resource as running on the
    migration's target only, while its stop on the source is still to come: a short window, but
    a node "drained" in it still runs the resource."""
    out: dict[str, frozenset[str]] = {}
    # An offline node runs nothing, whatever history it may still show.
    online = {n.get("name") for n in root.findall("nodes/node") if _bool(n.get("online"))}
    for node in root.findall("node_history/node"):
        if node.get("name") not in online:
            continue
        left: set[str] = set()
        for hist in node.findall("resource_history"):
            last_migrate = -1
            last_other = -1
            for op in hist.findall("operation_history"):
                try:
                    call = int(op.get("call") or -1)
                except ValueError:
                    continue
                task = op.get("task", "")
                if task == "migrate_to" and op.get("rc") == "0":
                    last_migrate = max(last_migrate, call)
                elif task in _AFTER_MIGRATE_TO:
                    last_other = max(last_other, call)
            if last_migrate >= 0 and last_migrate > last_other:
                left.add(hist.get("id", "").split(":", 1)[0])
        if left:
            out[node.get("name", "")] = frozenset(left)
    return out


def _nvpairs(el: ET.Element | None, section: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if el is None:
        return out
    for attrs in el.findall(section):
        for nv in attrs.findall("nvpair"):
            name = nv.get("name")
            if name:
                out[name] = nv.get("value", "")
    return out


def parse_cib(text: str) -> ClusterConfig:
    root = _parse_xml(text, "cibadmin")
    config = root if root.tag == "configuration" else root.find("configuration")
    if config is None:
        raise ProviderError("cibadmin: the CIB has no configuration section")
    meta: dict[str, dict[str, str]] = {}
    kinds: dict[str, str] = {}
    resources = config.find("resources")
    for el in resources if resources is not None else []:
        rid = el.get("id")
        if not rid:
            continue
        kinds[rid] = el.tag
        merged = _nvpairs(el, "meta_attributes")
        if el.tag in ("group", "clone"):
            # allow-migrate set on the members counts for the whole (a group of migratable
            # members migrates member by member).
            members = list(el.iter("primitive"))
            member_meta = [_nvpairs(m, "meta_attributes") for m in members]
            if members and all(_bool(m.get("allow-migrate")) for m in member_meta):
                merged.setdefault("allow-migrate", "true")
        meta[rid] = merged
    locations = []
    constraints = config.find("constraints")
    for c in constraints.findall("rsc_location") if constraints is not None else []:
        rules = c.findall("rule")
        score = c.get("score") or next((r.get("score") or r.get("score-attribute") for r in rules), None)
        locations.append(
            LocationConstraint(
                id=c.get("id", ""),
                resource=c.get("rsc", "") or c.get("rsc-pattern", ""),
                node=c.get("node"),
                score=score or "0",
                rule=bool(rules),
            )
        )
    colocations = tuple(
        Colocation(
            id=c.get("id", ""),
            resource=c.get("rsc", ""),
            with_resource=c.get("with-rsc", ""),
            score=c.get("score", "0"),
        )
        for c in (constraints.findall("rsc_colocation") if constraints is not None else [])
    )
    node_attributes: dict[str, dict[str, str]] = {}
    nodes = config.find("nodes")
    for n in nodes.findall("node") if nodes is not None else []:
        node_attributes[n.get("uname", "")] = _nvpairs(n, "instance_attributes")
    rsc_defaults = _nvpairs(config.find("rsc_defaults"), "meta_attributes")
    return ClusterConfig(
        meta=meta,
        kinds=kinds,
        locations=tuple(locations),
        colocations=colocations,
        node_attributes=node_attributes,
        rsc_defaults=rsc_defaults,
    )


def health_problems(status: ClusterStatus) -> list[str]:
    """Why the cluster is not healthy enough to start a rolling update (empty when it is)."""
    problems = []
    if status.dc is None:
        problems.append("the cluster has no DC (designated controller)")
    elif not status.with_quorum:
        problems.append("the cluster has no quorum")
    if status.maintenance_mode:
        problems.append("the cluster is in maintenance-mode (resources unmanaged)")
    unclean = [n.name for n in status.nodes if n.unclean]
    if unclean:
        problems.append(f"node(s) {', '.join(unclean)} unclean (need fencing)")
    failed = [r.id for r in status.resources if r.failed]
    if failed:
        problems.append(f"resource(s) {', '.join(failed)} failed")
    if status.failures:
        shown = sorted(
            {
                f"{f.resource} on {f.node} ({f.task}: {f.exit_reason or f.exit_status})"
                for f in status.failures
            }
        )
        problems.append("failed actions: " + "; ".join(shown[:5]) + (" …" if len(shown) > 5 else ""))
    blocked = [r.id for r in status.resources if r.blocked]
    if blocked:
        problems.append(f"resource(s) {', '.join(blocked)} blocked")
    return problems


# --- crm_simulate: what the scheduler would do ------------------------------------------------


@dataclass(frozen=True)
class SimulatedAction:
    """One <rsc_action> of `crm_simulate --run --output-as=xml` (its "Transition Summary")."""

    action: str  # stop | start | move | migrate | recover | restart | promote | demote | ...
    resource: str  # a primitive as the scheduler names it; clone instances are "web-local:1"
    node: str | None = None  # where a stop, start... happens
    source: str | None = None  # a move's or migration's from ...
    dest: str | None = None  # ... and to
    reason: str = ""

    @property
    def primitive(self) -> str:
        return self.resource.split(":", 1)[0]


def parse_simulation(text: str) -> list[SimulatedAction]:
    root = _parse_xml(text, "crm_simulate")
    status = root.find("status")
    if status is not None and status.get("code") not in (None, "0"):
        raise ProviderError(f"crm_simulate failed: {status.get('message')} (code {status.get('code')})")
    return [
        SimulatedAction(
            action=a.get("action", ""),
            resource=a.get("resource", ""),
            node=a.get("node"),
            source=a.get("source"),
            dest=a.get("dest"),
            reason=a.get("reason", ""),
        )
        for a in root.findall("actions/rsc_action")
    ]


def drain_stops(
    actions: Iterable[SimulatedAction],
    status: ClusterStatus,
    config: ClusterConfig,
    node: str,
    *,
    saved: Iterable[str] = (),
) -> list[str]:
    """What draining `node` would stop rather than move, from the scheduler's own transition
    (`actions`, simulated with `node` in standby): one line per top-level resource, naming the
    constraints that can hold it. Expected stops are not counted: a clone's instance on `node`
    (the other instances keep running), and with move = save the `saved` resources on `node`.
    Empty when everything that runs on `node` can run elsewhere."""
    top: dict[str, PcmkResource] = {}
    for resource in status.resources:
        for member in resource.members or (resource.id,):
            top[member] = resource
    expected = set(saved)
    stops: dict[str, list[str]] = {}
    for act in actions:
        if act.action != "stop":
            continue
        res = top.get(act.primitive)
        rid = res.id if res is not None else act.primitive
        if act.node == node and ((res is not None and res.kind in ("clone", "bundle")) or rid in expected):
            continue
        where = stops.setdefault(rid, [])
        if act.node and act.node not in where:
            where.append(act.node)
    lines = []
    for rid, where in stops.items():
        found = status.resource(rid)
        ids = [rid, *(found.members if found is not None else ())]
        held_by = config.restrictions_on(ids)
        because = (
            f"constraints: {', '.join(held_by)}"
            if held_by
            else "no other node may run it (see `crm_simulate`)"
        )
        lines.append(f"{rid} would stop on {', '.join(where) or 'its node'}, not move ({because})")
    return lines
