"""Hypothesis strategies and helpers for property tests over random sandbox clusters.

A *case* is a sandbox spec (a dict that `parse_spec` accepts) plus run-profile overrides. The
spec's initial placement always fits: every node's roles (owned roles, and clone instances wherever
they may run) need no more than the node's capacity. Movable roles (live, failover) start on nodes
that are up and not in maintenance, like a real cluster's would.

`Observer` wraps the sandbox cluster's side effects (drain, restart, role moves) to check, at the
moment they happen, the promises cau makes: the parallel limit, quorum, capacity, failure domains
and disruption budgets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import tomli_w
from hypothesis import strategies as st

from cau.domain.cluster import RoleKind
from cau.domain.disruption import DisruptionLimits, budget_violations, count_budget, domain_violations
from cau.domain.profile import MoveMethod, RunProfile
from cau.journal.events import EventKind, JournalEvent, Step
from cau.sandbox.cluster import SandboxCluster
from cau.sandbox.spec import parse_spec

CLUSTER = "c1"
CLUSTERS_TOML = (
    f'[clusters.{CLUSTER}]\nprovider = "sandbox"\n[clusters.{CLUSTER}.options]\nspec = "c1.toml"\n'
)


# --- TOML ------------------------------------------------------------------------------------------


def spec_toml(spec: dict[str, Any]) -> str:
    """A sandbox spec dict as TOML (None values left out: TOML has no null)."""
    clean = {
        k: [{ik: iv for ik, iv in item.items() if iv is not None} for item in v] if isinstance(v, list) else v
        for k, v in spec.items()
    }
    return tomli_w.dumps(clean)


def write_cluster(data_dir: Path, spec: dict[str, Any]) -> Path:
    """Write the cluster configuration and its sandbox spec; returns the config path."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "c1.toml").write_text(spec_toml(spec), encoding="utf-8")
    config = data_dir / "clusters.toml"
    config.write_text(CLUSTERS_TOML, encoding="utf-8")
    return config


# --- strategies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    profile: dict[str, Any]

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"Case(\nspec=\n{spec_toml(self.spec)}\nprofile={self.profile!r})"


def _chance(percent: int) -> st.SearchStrategy[bool]:
    return st.integers(0, 99).map(lambda x: x < percent)


@st.composite
def sandbox_specs(
    draw: st.DrawFn,
    *,
    min_nodes: int = 2,
    max_nodes: int = 9,
    max_roles: int = 12,
    max_updates: int = 6,
    faults: bool = True,
    fault_percent: int = 100,
) -> dict[str, Any]:
    """A valid sandbox spec; `fault_percent` scales how often faults are injected."""

    def fault(percent: int) -> bool:
        return faults and draw(_chance(percent * fault_percent // 100))

    count = draw(st.integers(min_nodes, max_nodes))
    names = [f"n{i}" for i in range(1, count + 1)]
    # Failure domains (racks) on about half the clusters, and a coarser "site" label on some.
    racks = draw(st.sampled_from([0, 0, 2, 3, 4]))
    sites = draw(st.sampled_from([0, 2])) if racks else 0
    nodes: list[dict[str, Any]] = []
    for name in names:
        node: dict[str, Any] = {
            "name": name,
            "cpu": draw(st.sampled_from([4, 8, 12, 16, 24])),
            "memory_gb": draw(st.sampled_from([16, 32, 48, 64])),
            "votes": draw(st.sampled_from([0, 1, 1, 1, 1, 1, 1, 1, 2])),
            "restart_seconds": draw(st.integers(5, 240)),
        }
        if racks and draw(_chance(90)):  # a node without a domain now and then
            node["failure_domain"] = f"rack{draw(st.integers(1, racks))}"
        if sites:
            node["labels"] = {"site": f"site{draw(st.integers(1, sites))}"}
        if fault(6):
            node["never_returns"] = True
        if fault(5):
            node["online"] = False
        elif fault(8):
            node["in_maintenance"] = True
        nodes.append(node)

    free = {n["name"]: [float(n["cpu"]), float(n["memory_gb"])] for n in nodes}
    hosts_movable = [n["name"] for n in nodes if n.get("online", True) and not n.get("in_maintenance")]

    def fits(node: str, cpu: float, mem: float) -> bool:
        return free[node][0] + 1e-9 >= cpu and free[node][1] + 1e-9 >= mem

    def take(node: str, cpu: float, mem: float) -> None:
        free[node][0] -= cpu
        free[node][1] -= mem

    roles: list[dict[str, Any]] = []
    for i in range(draw(st.integers(0, max_roles))):
        kind = draw(st.sampled_from(list(RoleKind)))
        cpu = draw(st.sampled_from([0.5, 1, 2, 4, 6]))
        mem = draw(st.sampled_from([1, 2, 4, 8, 16]))
        role: dict[str, Any] = {
            "name": f"r{i}-{kind.value}",
            "kind": kind.value,
            "cpu": cpu,
            "memory_gb": mem,
            "move_seconds": draw(st.integers(0, 30)),
        }
        if kind is RoleKind.CLONE:
            homes = draw(st.one_of(st.none(), st.lists(st.sampled_from(names), min_size=1, unique=True)))
            where = names if homes is None else homes
            if not all(fits(n, cpu, mem) for n in where):
                continue
            for n in where:
                take(n, cpu, mem)
            if homes is not None:
                role["instances"] = homes
        else:
            candidates = names if kind is RoleKind.PINNED else hosts_movable
            candidates = [n for n in candidates if fits(n, cpu, mem)]
            if not candidates:
                continue
            owner = draw(st.sampled_from(candidates))
            take(owner, cpu, mem)
            role["owner"] = owner
            role["preferred_owners"] = draw(st.lists(st.sampled_from(names), max_size=3, unique=True))
            if kind is not RoleKind.PINNED and fault(12):
                role["fail_migrations"] = draw(st.integers(1, 3))
        roles.append(role)

    updates: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, max_updates))):
        uid = f"u{i}"
        update: dict[str, Any] = {
            "id": uid,
            "restart": draw(st.booleans()),
            "install_seconds": draw(st.integers(1, 60)),
            "download_seconds": draw(st.integers(0, 5)),
        }
        if draw(_chance(30)):
            update["nodes"] = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
        earlier: list[str] = [u["id"] for u in updates]
        chained = draw(_chance(35))
        if earlier and chained:
            update["after"] = draw(st.lists(st.sampled_from(earlier), min_size=1, max_size=2, unique=True))
        if fault(15):
            target = draw(st.sampled_from(["*", *names]))
            update["fail_installs"] = {target: draw(st.integers(1, 3))}
        updates.append(update)

    spec = {"speed": 1, "scan_seconds": draw(st.integers(0, 5)), "nodes": nodes, "roles": roles}
    spec["updates"] = updates
    parse_spec(spec, "generated")  # a generated spec is always valid
    return spec


@st.composite
def profiles(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    count = len(spec["nodes"])
    any_in_maintenance = any(n.get("in_maintenance") for n in spec["nodes"])
    out: dict[str, Any] = {
        "max_parallel_nodes": draw(st.one_of(st.integers(1, 4), st.just("auto"))),
        "max_failed_nodes": draw(st.one_of(st.none(), st.integers(0, count - 1))),
        "max_retries_per_node": draw(st.integers(0, 3)),
        "drain": draw(st.sampled_from(["always", "when-restart-needed"])),
        "move": draw(st.sampled_from(["live", "live", "save"])),
        "failback_mode": draw(st.sampled_from(["immediate", "policy", "none"])),
        "no_restart": draw(_chance(15)),
        "separate_reboots": draw(_chance(15)),
        "allow_nodes_in_maintenance": draw(_chance(85)) if any_in_maintenance else draw(st.booleans()),
    }
    if draw(_chance(10)):
        out["stop_after"] = draw(st.sampled_from(["5m", "20m", "1h"]))
    if draw(_chance(10)):  # shorter than some restarts: a node may come back after cau gave up on it
        out["reboot_timeout"] = draw(st.sampled_from(["30s", "2m", "5m"]))
    if draw(_chance(15)):
        names = [n["name"] for n in spec["nodes"]]
        out["node_order"] = draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    out.update(draw(disruption_options(spec)))
    return out


@st.composite
def disruption_options(draw: st.DrawFn, spec: dict[str, Any]) -> dict[str, Any]:
    """Failure-domain options and disruption budgets over the spec's labels and roles."""
    out: dict[str, Any] = {}
    label = "failure_domain"
    if any("labels" in n for n in spec["nodes"]) and draw(_chance(30)):
        label = out["domain_label"] = "site"
    domains = sorted(
        {
            n.get("labels", {}).get("site") if label == "site" else n.get("failure_domain")
            for n in spec["nodes"]
        }
        - {None}
    )
    if domains and draw(_chance(40)):
        out["max_nodes_per_domain"] = draw(st.integers(1, 3))
    if domains and draw(_chance(25)):
        out["domain_order"] = draw(st.permutations(domains))
    roles = spec["roles"]
    if roles and draw(_chance(50)):
        budgets = []
        for _ in range(draw(st.integers(1, 3))):
            role = draw(st.sampled_from(roles))
            kind = role["kind"]
            # an exact name, or a glob over every role of its kind (a group counted together)
            selector = draw(st.sampled_from([role["name"], f"*-{kind}"]))
            minimum = draw(st.one_of(st.integers(0, 4), st.sampled_from(["25%", "50%", "75%", "100%"])))
            budgets.append(f"{selector}={minimum}")
        out["disruption_budgets"] = budgets
    return out


@st.composite
def cases(draw: st.DrawFn, /, **spec_kw: Any) -> Case:
    spec = draw(sandbox_specs(**spec_kw))
    return Case(spec, draw(profiles(spec)))


# --- capacity ---------------------------------------------------------------------------------------


def over_capacity(sim: SandboxCluster) -> list[str]:
    """Nodes whose running roles need more than they have, read from the state (no settling)."""
    used = {name: [0.0, 0.0] for name in sim.nodes}
    for spec in sim.spec.roles:
        if spec.kind is RoleKind.CLONE:
            homes = spec.instances if spec.instances is not None else list(sim.nodes)
            hosts = [h for h in homes if sim.nodes[h].up and not sim.nodes[h].in_maintenance]
        else:
            owner = sim.roles[spec.name].owner
            hosts = [owner] if owner is not None else []
        for h in hosts:
            used[h][0] += spec.cpu
            used[h][1] += spec.memory_gb
    problems = []
    for node in sim.spec.nodes:
        cpu, mem = used[node.name]
        if cpu > node.cpu + 1e-6 or mem > node.memory_gb + 1e-6:
            problems.append(
                f"{node.name} over capacity: {cpu:g}/{node.cpu:g} cpu, {mem:g}/{node.memory_gb:g} GB"
            )
    return problems


def quorum_after_losing(sim: SandboxCluster, node: str) -> tuple[int, int]:
    """(votes still up if `node` goes down, expected votes)."""
    expected = sum(n.votes for n in sim.spec.nodes)
    up = sum(n.votes for n in sim.spec.nodes if sim.nodes[n.name].up and n.name != node)
    return up, expected


# --- live observation -------------------------------------------------------------------------------


@dataclass
class Observer:
    """Records what the sandbox is asked to do, and what breaks cau's promises when it is asked."""

    max_parallel: int | None
    initially_in_maintenance: set[str]
    # The run's failure domains and disruption budgets, checked at every side effect; what was
    # out of service, and what each budget kept running, before cau did anything.
    limits: DisruptionLimits = field(default_factory=DisruptionLimits)
    roles_move: bool = True
    baseline: tuple[int, dict[str, int]] | None = None
    started: set[str] = field(default_factory=set)
    # nodes that did more than read (a step other than scan and staging): a node started ahead
    # of its turn only reads until it has it
    working: set[str] = field(default_factory=set)
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    installs: dict[tuple[str, str], int] = field(default_factory=dict)  # real installs
    peak_in_maintenance: int = 0
    restarts: int = 0
    moves: int = 0
    events_seen: int = 0
    run_ids: set[str] = field(default_factory=set)
    _kill_at: int | None = None
    _kill: Callable[[], object] | None = None

    def kill_after(self, events: int | None, kill: Callable[[], object] | None) -> None:
        """Call `kill` right after `events` more journal events (None: no more kill planned)."""
        self._kill_at = None if events is None else self.events_seen + events
        self._kill = kill

    # the journal, live
    def on_event(self, event: JournalEvent) -> None:
        self.events_seen += 1
        self.run_ids.add(event.run_id)
        if self._kill is not None and self._kill_at is not None and self.events_seen >= self._kill_at:
            kill, self._kill = self._kill, None
            kill()
        if event.node is None:
            return
        if event.kind is EventKind.NODE_STARTED:
            self.started.add(event.node)
        elif event.kind is EventKind.INTENT and event.step not in (Step.SCAN, Step.STAGE):
            self.working.add(event.node)
        elif event.kind is EventKind.NODE_FINISHED:
            self.finished[event.node] = dict(event.data)

    def in_flight(self) -> set[str]:
        return self.started - set(self.finished)

    def _maintenance_check(self, sim: SandboxCluster, entering: str | None, what: str) -> None:
        flying = self.in_flight()
        at_work = flying & self.working
        if self.max_parallel is not None and len(at_work) > self.max_parallel:
            self.problems.append(
                f"{what}: {sorted(at_work)} updated at once, max_parallel_nodes = {self.max_parallel}"
            )
        # a node scanned ahead of its turn may be in maintenance already (an operator's): cau
        # has not taken it in hand yet
        held = {n for n in at_work if sim.nodes[n].in_maintenance}
        if entering is not None:
            held.add(entering)
        self.peak_in_maintenance = max(self.peak_in_maintenance, len(held))
        if self.max_parallel is not None and len(held) > self.max_parallel:
            self.problems.append(
                f"{what}: {sorted(held)} in maintenance at once, max_parallel_nodes = {self.max_parallel}"
            )
        for name, n in sim.nodes.items():
            if not n.in_maintenance or name in flying or name == entering:
                continue
            if name in self.initially_in_maintenance:
                continue
            if self.finished.get(name, {}).get("left_in_maintenance"):
                continue
            self.problems.append(
                f"{what}: {name} is in maintenance but cau is not working on it and did not report "
                "leaving it there"
            )

    @staticmethod
    def for_profile(profile: RunProfile, initially: set[str]) -> Observer:
        parallel = profile.max_parallel_nodes
        return Observer(
            None if parallel == "auto" else int(parallel),
            initially,
            limits=profile.disruption_limits,
            roles_move=profile.move is MoveMethod.LIVE,
        )

    def _note_baseline(self, sim: SandboxCluster) -> None:
        if self.baseline is not None or not self._limited(sim):
            return
        snapshot = sim.snapshot()
        label = self.limits.domain_label
        per_domain: dict[str, int] = {}
        for n in snapshot.nodes:
            domain = n.label(label)
            if domain is not None and (not n.is_up or n.in_maintenance):
                per_domain[domain] = per_domain.get(domain, 0) + 1
        running = {
            str(b): count_budget(snapshot, b, (), self.roles_move, observed=True).running
            for b in self.limits.budgets
        }
        self.baseline = (max(per_domain.values(), default=0), running)

    def _limited(self, sim: SandboxCluster) -> bool:
        """Whether any domain or budget applies (most clusters without: no look needed)."""
        label = self.limits.domain_label
        return bool(self.limits.budgets) or any(
            (n.labels.get(label) or (n.failure_domain if label == "failure_domain" else None))
            for n in sim.spec.nodes
        )

    def _disruption_check(self, sim: SandboxCluster, what: str) -> None:
        """No failure domain past its limit, no disruption budget broken (beyond the start)."""
        if not self._limited(sim):
            return
        self._note_baseline(sim)
        assert self.baseline is not None
        snapshot = sim.snapshot()
        problems = domain_violations(snapshot, self.limits, allowed=self.baseline[0])
        problems += budget_violations(snapshot, self.limits, self.roles_move, self.baseline[1])
        self.problems += [f"{what}: {p}" for p in problems]

    # wrappers of SandboxCluster methods
    @contextlib.contextmanager
    def watching(self) -> Iterator[Observer]:
        observer = self
        enter = SandboxCluster.enter_maintenance
        restart = SandboxCluster.restart
        move = SandboxCluster._move
        install = SandboxCluster.install

        async def enter_maintenance(
            sim: SandboxCluster, node: str, how: MoveMethod, plan: Mapping[str, str] | None = None
        ) -> None:
            if node not in observer.in_flight():
                observer.problems.append(f"enter_maintenance({node}) for a node cau is not working on")
            observer._maintenance_check(sim, node, f"enter_maintenance({node})")
            observer._note_baseline(sim)
            try:
                await enter(sim, node, how, plan)
            finally:
                observer._disruption_check(sim, f"enter_maintenance({node})")

        async def restart_(sim: SandboxCluster, node: str) -> None:
            observer.restarts += 1
            sim._settle()
            up, expected = quorum_after_losing(sim, node)
            if up * 2 <= expected:
                observer.problems.append(
                    f"restart({node}) leaves {up} of {expected} votes: quorum lost "
                    f"(up: {sorted(n for n, s in sim.nodes.items() if s.up)})"
                )
            if not sim.nodes[node].in_maintenance:
                observer.problems.append(f"restart({node}) of a node not in maintenance")
            observer._maintenance_check(sim, None, f"restart({node})")
            observer._note_baseline(sim)
            await restart(sim, node)
            observer._disruption_check(sim, f"restart({node})")

        async def move_(sim: SandboxCluster, role: str, target: str) -> None:
            observer.moves += 1
            target_sim = sim.nodes[target]
            if not target_sim.up or target_sim.in_maintenance:
                observer.problems.append(f"{role} moved to {target}, which is down or in maintenance")
            observer._note_baseline(sim)
            try:
                await move(sim, role, target)
            finally:
                observer.problems += [f"after moving {role} to {target}: {p}" for p in over_capacity(sim)]
                observer._disruption_check(sim, f"after moving {role} to {target}")

        async def install_(sim: SandboxCluster, node: str, updates: Any, progress: Any) -> Any:
            before = set(sim.nodes[node].installed)
            results = await install(sim, node, updates, progress)
            for uid in sim.nodes[node].installed - before:
                key = (node, uid)
                observer.installs[key] = observer.installs.get(key, 0) + 1
            return results

        with (
            mock.patch.object(SandboxCluster, "enter_maintenance", enter_maintenance),
            mock.patch.object(SandboxCluster, "restart", restart_),
            mock.patch.object(SandboxCluster, "_move", move_),
            mock.patch.object(SandboxCluster, "install", install_),
        ):
            yield self


# --- checks after a run -----------------------------------------------------------------------------


def read_state(data_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((data_dir / "sandbox" / f"{CLUSTER}.json").read_text())
    return state


def check_unchanged(spec: dict[str, Any], state: dict[str, Any]) -> list[str]:
    """A run that refused to start changed nothing."""
    problems = []
    for node in spec["nodes"]:
        s = state["nodes"][node["name"]]
        if s["in_maintenance"] != node.get("in_maintenance", False) or s["up"] != node.get("online", True):
            problems.append(f"{node['name']} changed: {s}")
        if s["installed"] or s["restarts"]:
            problems.append(f"{node['name']} was updated: {s}")
    for role in spec["roles"]:
        if role.get("owner") != state["roles"][role["name"]]["owner"]:
            problems.append(f"{role['name']} moved")
    if state["violations"]:
        problems.append(f"violations: {state['violations']}")
    return problems


def check_journal(events: list[JournalEvent]) -> list[str]:
    """The promises the journal of one run must show (see test_run_invariants)."""
    problems: list[str] = []
    created = next(e for e in events if e.kind is EventKind.RUN_CREATED)
    max_failed = int(created.data["max_failed"])

    # no update installed successfully twice on one node
    done: dict[tuple[str, str], int] = {}
    for e in events:
        if e.kind is EventKind.OUTCOME and e.step == "install":
            for r in e.data.get("results") or []:
                if r["outcome"] == "Succeeded":
                    key = (e.node or "?", r["update_id"])
                    done[key] = done.get(key, 0) + 1
    problems += [f"{u} installed {k} times on {n}" for (n, u), k in done.items() if k > 1]

    # the failure budget: at most max_failed + 1 failures, and no node started after the one too many
    finished: dict[str, dict[str, Any]] = {}
    failed = 0
    exceeded_at: int | None = None
    first_stop: JournalEvent | None = None
    for i, e in enumerate(events):
        if e.kind is EventKind.STOP_REQUESTED and first_stop is None:
            first_stop = e
        if e.kind is EventKind.NODE_FINISHED and e.node is not None:
            if e.node in finished:
                problems.append(f"{e.node} finished twice")
            finished[e.node] = dict(e.data)
            if e.data["status"] == "Failed":
                failed += 1
                if failed == max_failed + 1:
                    exceeded_at = i
        if e.kind is EventKind.NODE_STARTED and exceeded_at is not None:
            problems.append(f"{e.node} started after the failure budget ({max_failed}) was exceeded")
    if failed > max_failed + 1:
        problems.append(f"{failed} nodes failed, max_failed = {max_failed}: more than max_failed + 1")
    end = next((e for e in reversed(events) if e.kind is EventKind.RUN_FINISHED), None)
    if end is None:
        problems.append("no run_finished event")
        return problems
    budget_first = first_stop is None or first_stop.data.get("error_id") == "MaxFailedNodesExceeded"
    ended = (end.data["status"], end.data["error_id"])
    if failed > max_failed and budget_first and ended != ("Failed", "MaxFailedNodesExceeded"):
        problems.append(f"{failed} failed > max_failed = {max_failed} but the run ended {ended}")

    # every node cau put into maintenance came out, or is reported Failed and left in maintenance
    for node in created.data["order"]:
        steps = [e for e in events if e.node == node and e.kind is EventKind.OUTCOME]
        entered = any(e.step == "enter_maintenance" for e in events if e.node == node)
        exited = any(e.step == "exit_maintenance" and e.data.get("ok") for e in steps)
        result = finished.get(node)
        if result is None:
            problems.append(f"{node} never finished")
            continue
        reported_left = bool(result.get("left_in_maintenance")) and result["status"] == "Failed"
        if entered and not exited and not reported_left:
            problems.append(
                f"{node} entered maintenance, did not leave it, and is reported "
                f"{result['status']} with left_in_maintenance={result.get('left_in_maintenance')}"
            )
    return problems


def check_final_state(spec: dict[str, Any], state: dict[str, Any], events: list[JournalEvent]) -> list[str]:
    """The cluster after the run: no violation, nothing left in maintenance without saying so."""
    problems = [f"sandbox violation: {v}" for v in state["violations"]]
    finished = {e.node: e.data for e in events if e.kind is EventKind.NODE_FINISHED}
    for node in spec["nodes"]:
        name = node["name"]
        if node.get("in_maintenance"):
            continue
        if state["nodes"][name]["in_maintenance"]:
            data = finished.get(name, {})
            if not (data.get("left_in_maintenance") and data.get("status") == "Failed"):
                problems.append(
                    f"{name} is still in maintenance after the run but reported "
                    f"{data.get('status')} / left_in_maintenance={data.get('left_in_maintenance')}"
                )
    return problems


def check_compliance(
    spec: dict[str, Any], state: dict[str, Any], events: list[JournalEvent], no_restart: bool
) -> list[str]:
    """A node reported Succeeded (without an error) is compliant: a scan would find nothing more."""
    parsed = parse_spec(spec, "generated")
    problems = []
    for e in events:
        if e.kind is not EventKind.NODE_FINISHED or e.node is None:
            continue
        if e.data["status"] != "Succeeded" or e.data.get("error_id") is not None:
            continue
        s = state["nodes"][e.node]
        installed, active = set(s["installed"]), set(s["active"])
        left = [
            u.id
            for u in parsed.updates
            if u.applies_to(e.node) and u.id not in installed and all(a in active for a in u.after)
        ]
        if left:
            problems.append(f"{e.node} reported Succeeded but {left} are still applicable")
        if s["pending_restart"] and not no_restart:
            problems.append(f"{e.node} reported Succeeded but still waits for a restart")
    return problems


@st.composite
def tight_cases(draw: st.DrawFn) -> Case:
    """Identical nodes whose roles (live and failover, each movable somewhere) fill most of the
    cluster, so that capacity, not quorum or the failure budget, decides how many nodes may drain
    at once. No faults: any drain without room is cau's doing."""
    count = draw(st.integers(3, 7))
    cpu = 8.0
    names = [f"n{i}" for i in range(1, count + 1)]
    racks = draw(st.sampled_from([0, 2, 3]))  # failure domains on some: one node per rack at once
    nodes = [
        {"name": n, "cpu": cpu, "memory_gb": cpu * 4, "restart_seconds": draw(st.integers(30, 120))}
        | ({"failure_domain": f"rack{i % racks + 1}"} if racks else {})
        for i, n in enumerate(names)
    ]
    free = dict.fromkeys(names, cpu)
    fill = draw(st.sampled_from([0.5, 0.6, 0.7, 0.75]))
    largest = cpu * (1 - fill)
    roles: list[dict[str, Any]] = []
    sizes = st.sampled_from([s for s in (1.0, 2.0, 3.0) if s <= largest] or [1.0])
    while sum(free.values()) > (1 - fill) * cpu * count + 0.5:
        size = draw(sizes)
        owner = max(names, key=lambda n: (free[n], n))
        if free[owner] < size:
            break
        free[owner] -= size
        kind = draw(st.sampled_from(["live", "live", "failover"]))
        roles.append(
            {
                "name": f"r{len(roles)}",
                "kind": kind,
                "owner": owner,
                "cpu": size,
                "memory_gb": size * 4,
                "move_seconds": draw(st.integers(1, 20)),
            }
        )
    spec = {
        "speed": 1,
        "scan_seconds": 1,
        "nodes": nodes,
        "roles": roles,
        "updates": [{"id": "kernel", "restart": True, "install_seconds": draw(st.integers(5, 60))}],
    }
    parse_spec(spec, "generated")
    profile = {
        "max_parallel_nodes": draw(st.one_of(st.just("auto"), st.integers(2, 4))),
        "max_failed_nodes": count - 1,
        "failback_mode": draw(st.sampled_from(["immediate", "policy", "none"])),
        "max_retries_per_node": 0,
    }
    return Case(spec, profile)
