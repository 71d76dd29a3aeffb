"""A simulated cluster that behaves like a real one, kept in a state file so it outlives cau.

The state file plays the part of the real cluster: a coordinator killed mid-run leaves it as a
real cluster would be left (a node in maintenance, a node restarting, a role half-moved), and the
next coordinator finds it by observation. Things that take time (restarts, role moves) are stored
as "done at T" and complete when observed after T, whoever observes them.

Constraints are real: roles only move to nodes with room; failover roles are down while they
move; pinned roles stop while their node is in maintenance; losing quorum stops every role. Each
role's availability is recorded as outages, and broken promises (a drain with no room, quorum lost)
as violations, which tests and benchmarks count.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.placement import place_roles
from cau.domain.profile import FailbackMode, MoveMethod
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import MaintenanceError, NodeUnreachable
from cau.ports import Clock, MaintenancePrior, ProgressCallback, RoleOutage
from cau.sandbox.spec import SandboxSpec

STATE_SCHEMA = 1
PLUGIN = "sandbox"
INJECTED_FAILURE_CODE = 100


@dataclass
class NodeSim:
    up: bool
    in_maintenance: bool
    boot_id: str | None
    next_boot_id: str
    back_at: datetime | None = None  # when a restarting node answers again (None: never)
    installed: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)  # installed and in effect (after a restart if needed)
    staged: set[str] = field(default_factory=set)
    pending_restart: bool = False
    restarts: int = 0


@dataclass
class RoleSim:
    owner: str | None
    moving_until: datetime | None = None  # a move in progress ends then
    moving_from: str | None = None
    saved: bool = False  # stopped in place by `move = save`


@dataclass
class Outage:
    role: str
    started: datetime
    node: str | None
    reason: str
    ended: datetime | None = None


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _new_boot_id() -> str:
    return str(uuid.uuid4())


class SandboxCluster:
    def __init__(self, name: str, spec: SandboxSpec, clock: Clock, state_file: Path | None) -> None:
        self.name = name
        self.spec = spec
        self.clock = clock
        self.state_file = state_file
        self.nodes: dict[str, NodeSim] = {}
        self.roles: dict[str, RoleSim] = {}
        self._snapshot_cache: tuple[object, ClusterSnapshot] | None = None
        # _save's pieces: the text last written, each role's piece by its state, the pieces of
        # the leading outages that have ended, and of the violations (see _save)
        self._open_outages: dict[str, Outage] | None = None  # see _refresh_availability
        self._saved_text: str | None = None
        self._role_pieces: dict[str, tuple[object, str]] = {}
        self._ended_pieces: dict[int, str] = {}
        self._violation_pieces: list[str] = []
        self.install_failures_left: dict[str, int] = {}
        self.migration_failures_left: dict[str, int] = {}
        self.outages: list[Outage] = []
        self.violations: list[dict[str, Any]] = []
        if state_file is not None and state_file.exists() and self._load(state_file):
            return
        self._init_from_spec()
        self._save()

    # --- state ---------------------------------------------------------------------------------

    def _init_from_spec(self) -> None:
        now = self.clock.now()
        for n in self.spec.nodes:
            boot = _new_boot_id() if n.online else None
            self.nodes[n.name] = NodeSim(
                up=n.online, in_maintenance=n.in_maintenance, boot_id=boot, next_boot_id=_new_boot_id()
            )
        for r in self.spec.roles:
            self.roles[r.name] = RoleSim(owner=r.owner)
            if r.fail_migrations:
                self.migration_failures_left[r.name] = r.fail_migrations
        for u in self.spec.updates:
            for n in self.spec.nodes:
                if u.applies_to(n.name) and u.failures_for(n.name):
                    self.install_failures_left[f"{u.id}@{n.name}"] = u.failures_for(n.name)
        self._refresh_availability(now)

    def _load(self, path: Path) -> bool:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        if data.get("schema") != STATE_SCHEMA or data.get("fingerprint") != self.spec.fingerprint():
            return False  # the definition changed: start the cluster afresh
        now = self.clock.now()

        def dt(v: str | None) -> datetime | None:
            return None if v is None else datetime.fromisoformat(v)

        for name, n in data["nodes"].items():
            sim = NodeSim(
                up=n["up"],
                in_maintenance=n["in_maintenance"],
                boot_id=n["boot_id"],
                next_boot_id=n["next_boot_id"],
                back_at=dt(n["back_at"]),
                installed=set(n["installed"]),
                active=set(n["active"]),
                staged=set(n["staged"]),
                pending_restart=n["pending_restart"],
                restarts=n["restarts"],
            )
            # Times were written by another process, maybe on another clock (virtual, or a faster
            # sandbox): a restart never takes longer than the node's restart time from now.
            limit = now + timedelta(seconds=self._scaled(self.spec.node(name).restart_seconds))
            if sim.back_at is not None and sim.back_at > limit:
                sim.back_at = limit
            self.nodes[name] = sim
        for name, r in data["roles"].items():
            until = dt(r["moving_until"])
            if until is not None:
                until = min(until, now + timedelta(seconds=self._scaled(self.spec.role(name).move_seconds)))
            self.roles[name] = RoleSim(r["owner"], until, r["moving_from"], r["saved"])
        self.install_failures_left = data["install_failures_left"]
        self.migration_failures_left = data["migration_failures_left"]
        self.outages = [
            Outage(o["role"], datetime.fromisoformat(o["started"]), o["node"], o["reason"], dt(o["ended"]))
            for o in data["outages"]
        ]
        self.violations = data["violations"]
        return True

    def _save(self) -> None:
        """Write the state file, at every change of state (another process may read it at any
        time: `cau sandbox` commands, a coordinator resuming after a SIGKILL). Written whole, as
        one compact JSON document, but made of pieces kept from the last save: an outage that has
        ended, or a violation, never changes again, and a role's piece is reused while its state
        is the same. An unchanged state is not written again."""
        if self.state_file is None:
            return
        nodes = ",".join(f"{_dumps(name)}:{self._node_json(n)}" for name, n in self.nodes.items())
        roles = ",".join(f"{_dumps(name)}:{self._role_json(name, r)}" for name, r in self.roles.items())
        outages = ",".join(self._outage_json(i, o) for i, o in enumerate(self.outages))
        violations = self._violations_json()
        text = (
            f'{{"schema":{STATE_SCHEMA},"fingerprint":{_dumps(self.spec.fingerprint())},'
            f'"nodes":{{{nodes}}},"roles":{{{roles}}},'
            f'"install_failures_left":{_dumps(self.install_failures_left)},'
            f'"migration_failures_left":{_dumps(self.migration_failures_left)},'
            f'"outages":[{outages}],"violations":{violations}}}'
        )
        if text == self._saved_text and self.state_file.exists():
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.state_file)  # readers never see half a state
        self._saved_text = text

    @staticmethod
    def _node_json(n: NodeSim) -> str:
        return _dumps(
            {
                "up": n.up,
                "in_maintenance": n.in_maintenance,
                "boot_id": n.boot_id,
                "next_boot_id": n.next_boot_id,
                "back_at": n.back_at.isoformat() if n.back_at else None,
                "installed": sorted(n.installed),
                "active": sorted(n.active),
                "staged": sorted(n.staged),
                "pending_restart": n.pending_restart,
                "restarts": n.restarts,
            }
        )

    def _role_json(self, name: str, r: RoleSim) -> str:
        key = (r.owner, r.moving_until, r.moving_from, r.saved)
        cached = self._role_pieces.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        piece = _dumps(
            {
                "owner": r.owner,
                "moving_until": r.moving_until.isoformat() if r.moving_until else None,
                "moving_from": r.moving_from,
                "saved": r.saved,
            }
        )
        self._role_pieces[name] = (key, piece)
        return piece

    def _outage_json(self, index: int, o: Outage) -> str:
        cached = self._ended_pieces.get(index)
        if cached is not None:
            return cached
        piece = _dumps(
            {
                "role": o.role,
                "started": o.started.isoformat(),
                "node": o.node,
                "reason": o.reason,
                "ended": o.ended.isoformat() if o.ended else None,
            }
        )
        if o.ended is not None:
            self._ended_pieces[index] = piece  # outages are only appended, and never reopened
        return piece

    def _violations_json(self) -> str:
        done = self._violation_pieces  # violations are only appended
        done += [_dumps(v) for v in self.violations[len(done) :]]
        return "[" + ",".join(done) + "]"

    def _scaled(self, seconds: float) -> float:
        return seconds / self.spec.speed

    # --- observation ----------------------------------------------------------------------------

    def _settle(self) -> None:
        """Complete the timed transitions that are due (restarts, moves), in time order."""
        now = self.clock.now()
        due: list[tuple[datetime, str, str]] = []
        for name, n in self.nodes.items():
            if not n.up and n.back_at is not None and n.back_at <= now:
                due.append((n.back_at, "node", name))
        for name, r in self.roles.items():
            if r.moving_until is not None and r.moving_until <= now:
                due.append((r.moving_until, "role", name))
        for at, what, name in sorted(due):
            if what == "node":
                n = self.nodes[name]
                n.up = True
                n.back_at = None
                n.boot_id = n.next_boot_id
                n.next_boot_id = _new_boot_id()
                n.active |= n.installed
                n.pending_restart = False
            else:
                r = self.roles[name]
                r.moving_until = None
                r.moving_from = None
            self._refresh_availability(at)

    def _has_quorum(self) -> bool:
        expected = sum(n.votes for n in self.spec.nodes)
        online = sum(s.votes for s in self.spec.nodes if self.nodes[s.name].up)
        return online * 2 > expected

    def _clone_instances(self, name: str) -> tuple[str, ...]:
        spec = self.spec.role(name)
        homes = spec.instances if spec.instances is not None else [n.name for n in self.spec.nodes]
        return tuple(h for h in homes if self.nodes[h].up and not self.nodes[h].in_maintenance)

    def role_available(self, name: str) -> bool:
        return self._down_reason(name) is None

    def _down_reason(self, name: str, quorum: bool | None = None) -> tuple[str, str | None] | None:
        """Why a role is unavailable right now (and on which node), or None when it is available.
        `quorum`: whether the cluster has quorum, when the caller knows it already."""
        spec = self.spec.role(name)
        if not (self._has_quorum() if quorum is None else quorum):
            return "the cluster lost quorum", None
        if spec.kind is RoleKind.CLONE:
            return None if self._clone_instances(name) else ("no instance running", None)
        r = self.roles[name]
        if r.owner is None:
            return "stopped", None
        node = self.nodes[r.owner]
        if r.moving_until is not None and spec.kind is RoleKind.FAILOVER:
            return f"failing over from {r.moving_from} to {r.owner}", r.moving_from
        if r.saved:
            return f"saved on {r.owner} while it is in maintenance", r.owner
        if not node.up:
            return f"{r.owner} is down", r.owner
        if spec.kind is RoleKind.PINNED and node.in_maintenance:
            return f"pinned to {r.owner}, which is in maintenance", r.owner
        return None

    def _refresh_availability(self, at: datetime) -> None:
        # The outages still open, by role: found once per state (loaded or initialised), then
        # kept here, the only place outages begin and end.
        if self._open_outages is None:
            self._open_outages = {o.role: o for o in self.outages if o.ended is None}
        open_by_role = self._open_outages
        quorum = self._has_quorum()  # once for every role: it is the same for all of them
        for name in self.roles:
            down = self._down_reason(name, quorum)
            current = open_by_role.get(name)
            if down is not None and current is None:
                outage = Outage(name, at, down[1], down[0])
                self.outages.append(outage)
                open_by_role[name] = outage
            elif down is None and current is not None:
                current.ended = at
                del open_by_role[name]

    def _violation(self, kind: str, detail: str) -> None:
        self.violations.append({"at": self.clock.now().isoformat(), "kind": kind, "detail": detail})

    def snapshot(self) -> ClusterSnapshot:
        self._settle()
        # The same state gives the same snapshot: every admission and check asks for one, and
        # building it is most of a large simulated run's real time. The key is what a snapshot
        # shows, read afresh each time, so no change of state can be missed.
        key = (
            tuple((n.up, n.in_maintenance, n.boot_id) for n in self.nodes.values()),
            tuple(r.owner for r in self.roles.values()),
        )
        if self._snapshot_cache is not None and self._snapshot_cache[0] == key:
            return self._snapshot_cache[1]
        snapshot = self._build_snapshot()
        self._snapshot_cache = (key, snapshot)
        return snapshot

    def _build_snapshot(self) -> ClusterSnapshot:
        nodes = tuple(
            Node(
                name=s.name,
                state=NodeState.UP if self.nodes[s.name].up else NodeState.DOWN,
                in_maintenance=self.nodes[s.name].in_maintenance,
                capacity=Capacity(s.cpu, s.memory_gb),
                votes=s.votes,
                boot_id=self.nodes[s.name].boot_id,
                failure_domain=s.failure_domain,
                labels=dict(s.labels),
            )
            for s in self.spec.nodes
        )
        roles = []
        for spec in self.spec.roles:
            needs = Capacity(spec.cpu, spec.memory_gb)
            if spec.kind is RoleKind.CLONE:
                expected = len(spec.instances) if spec.instances is not None else len(self.spec.nodes)
                roles.append(
                    Role(
                        spec.name,
                        spec.kind,
                        needs,
                        instances=self._clone_instances(spec.name),
                        expected_instances=expected,
                    )
                )
            else:
                roles.append(
                    Role(
                        spec.name,
                        spec.kind,
                        needs,
                        owner=self.roles[spec.name].owner,
                        preferred_owners=tuple(spec.preferred_owners),
                    )
                )
        return ClusterSnapshot(self.name, nodes, tuple(roles))

    def _require_up(self, node: str, action: str) -> NodeSim:
        self._settle()
        if node not in self.nodes:
            raise NodeUnreachable(f"{self.name} has no node '{node}'")
        sim = self.nodes[node]
        if not sim.up:
            raise NodeUnreachable(f"cannot {action}: {node} is down")
        return sim

    # --- maintenance and roles -----------------------------------------------------------------

    def prior(self, node: str) -> MaintenancePrior:
        snap = self.snapshot()
        owners: dict[str, str | None] = {r.name: r.owner for r in snap.roles if r.movable and r.owner == node}
        return MaintenancePrior(
            node=node, was_in_maintenance=self.nodes[node].in_maintenance, role_owners=owners
        )

    async def _move(self, role: str, target: str) -> None:
        spec = self.spec.role(role)
        r = self.roles[role]
        if self.migration_failures_left.get(role, 0) > 0:
            self.migration_failures_left[role] -= 1
            self._save()
            verb = "live migration" if spec.kind is RoleKind.LIVE else "failover"
            raise MaintenanceError(f"{verb} of {role} from {r.owner} to {target} failed (injected fault)")
        duration = self._scaled(spec.move_seconds)
        r.moving_from, r.owner = r.owner, target
        done_at = self.clock.now() + timedelta(seconds=duration)
        r.moving_until = done_at
        self._refresh_availability(self.clock.now())
        self._save()
        await self.clock.sleep(duration)
        self._settle()
        if r.moving_until == done_at:
            # Complete our own move explicitly: a clock a hair short of `done_at` must not leave
            # the role half-moved (it would stay "failing over" until someone else looked).
            r.moving_until = None
            r.moving_from = None
            self._refresh_availability(done_at)
        self._save()

    async def enter_maintenance(
        self, node: str, move: MoveMethod, plan: Mapping[str, str] | None = None
    ) -> None:
        """Pause the node and drain it. Idempotent: a retry finishes a drain that failed halfway.
        `plan` (role -> node): where cau planned each role to go, as a cluster manager's
        transition would; any other role is placed on the cluster as it is then."""
        sim = self._require_up(node, "enter maintenance")
        if move is MoveMethod.SAVE:
            sim.in_maintenance = True
            for name, r in self.roles.items():
                if r.owner == node and self.spec.role(name).kind is not RoleKind.CLONE:
                    r.saved = True
            self._refresh_availability(self.clock.now())
            self._save()
            return
        placement = place_roles(self.snapshot(), [node])
        if plan is None and not placement.feasible:
            self._violation("capacity", f"asked to drain {node}: {placement.explain()}")
            self._save()
            raise MaintenanceError(f"cannot drain {node}: {placement.explain()}")
        sim.in_maintenance = True
        self._refresh_availability(self.clock.now())
        self._save()
        planned = dict(plan or {})
        # One role at a time, each placed on the cluster as it is now: other nodes may have
        # entered maintenance (or filled up) while the previous role was moving.
        while True:
            snap = self.snapshot()
            role_here = next((r for r in snap.roles_on(node) if r.movable and r.name in planned), None)
            if role_here is not None:
                target = planned.pop(role_here.name)
                if not self._can_take(snap, target, role_here.needs):
                    detail = f"{target} has no room for {role_here.name} ({role_here.needs})"
                    self._violation("capacity", f"draining {node} as planned: {detail}")
                    self._save()
                    raise MaintenanceError(f"cannot drain {node} as planned: {detail}")
                await self._move(role_here.name, target)
                continue
            placement = place_roles(snap, [node])
            if not placement.moves and not placement.unplaced:
                return
            if not placement.moves:
                self._violation("capacity", f"draining {node}: {placement.explain()}")
                self._save()
                raise MaintenanceError(f"cannot finish draining {node}: {placement.explain()}")
            role, target = next(iter(placement.moves.items()))
            await self._move(role, target)

    def _can_take(self, snap: ClusterSnapshot, target: str, needs: Capacity) -> bool:
        if target not in self.nodes:
            return False
        node = snap.node(target)
        return node.is_up and not node.in_maintenance and snap.free(target).covers(needs)

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        if prior.was_in_maintenance:
            return  # it was in maintenance before cau: leave it so
        sim = self._require_up(node, "leave maintenance")
        sim.in_maintenance = False
        for r in self.roles.values():
            if r.owner == node and r.saved:
                r.saved = False
        self._refresh_availability(self.clock.now())
        self._save()

    async def failback(
        self, node: str, prior: MaintenancePrior, mode: FailbackMode, progress: ProgressCallback | None = None
    ) -> list[str]:
        if mode is FailbackMode.NONE or prior.was_in_maintenance:
            return []  # a node left in maintenance as the run found it takes no roles back
        snap = self.snapshot()
        if not snap.node(node).is_up or snap.node(node).in_maintenance:
            raise MaintenanceError(f"cannot fail roles back to {node}: it is down or in maintenance")
        if mode is FailbackMode.IMMEDIATE:
            wanted = [role for role, owner in prior.role_owners.items() if owner == node]
        else:
            wanted = []
            for r in snap.roles:
                usable = [
                    n for n in r.preferred_owners if snap.node(n).is_up and not snap.node(n).in_maintenance
                ]
                if r.movable and usable and usable[0] == node:
                    wanted.append(r.name)
        moved = []
        for role in wanted:
            current = self.roles[role]
            if current.owner == node:
                continue
            needs = Capacity(self.spec.role(role).cpu, self.spec.role(role).memory_gb)
            if not self.snapshot().free(node).covers(needs):
                if progress:
                    progress(f"{role} stays on {current.owner}: no room on {node}")
                continue
            await self._move(role, node)
            moved.append(role)
        return moved

    # --- restarts ------------------------------------------------------------------------------

    def boot_id(self, node: str) -> str | None:
        self._settle()
        sim = self.nodes[node]
        return sim.boot_id if sim.up else None

    async def restart(self, node: str) -> None:
        sim = self._require_up(node, "restart")
        spec = self.spec.node(node)
        now = self.clock.now()
        sim.up = False
        sim.boot_id = None
        sim.restarts += 1
        sim.back_at = (
            None if spec.never_returns else now + timedelta(seconds=self._scaled(spec.restart_seconds))
        )
        if not self._has_quorum():
            self._violation("quorum", f"restarting {node} left the cluster without quorum")
        hosted = [
            n for n, r in self.roles.items() if r.owner == node and self.spec.role(n).kind is RoleKind.LIVE
        ]
        if hosted and not sim.in_maintenance:
            self._violation("drain", f"{node} restarted while hosting {', '.join(hosted)}")
        self._refresh_availability(now)
        self._save()

    async def wait_ready(self, node: str, previous_boot_id: str | None, timeout: float) -> str:
        deadline = self.clock.monotonic() + timeout
        while True:
            self._settle()
            sim = self.nodes[node]
            if sim.up and sim.boot_id != previous_boot_id and sim.boot_id is not None:
                self._save()
                return sim.boot_id
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                raise NodeUnreachable(f"{node} did not come back within {timeout:g}s")
            wait = remaining
            if sim.back_at is not None:
                wait = min(remaining, max(0.0, (sim.back_at - self.clock.now()).total_seconds()) + 0.001)
            await self.clock.sleep(min(wait, 5.0))

    # --- updates (used by the sandbox plug-in) ---------------------------------------------------

    def _update(self, spec_id: str) -> Update:
        u = self.spec.update(spec_id)
        return Update(
            id=u.id,
            title=u.title or u.id,
            plugin=PLUGIN,
            needs_restart=u.restart,
            size_bytes=int(u.size_mb * 1024 * 1024),
            description=u.description,
        )

    async def scan(self, node: str) -> ScanResult:
        self._require_up(node, "scan")
        await self.clock.sleep(self._scaled(self.spec.scan_seconds))
        sim = self._require_up(node, "scan")
        found = [
            self._update(u.id)
            for u in self.spec.updates
            if u.applies_to(node) and u.id not in sim.installed and all(a in sim.active for a in u.after)
        ]
        return ScanResult(updates=tuple(found), restart_pending=sim.pending_restart)

    async def stage(self, node: str, updates: Sequence[Update]) -> list[StagingResult]:
        results = []
        for update in updates:
            self._require_up(node, "download updates")
            await self.clock.sleep(self._scaled(self.spec.update(update.id).download_seconds))
            self.nodes[node].staged.add(update.id)
            results.append(StagingResult(update.id, ok=True, message="downloaded"))
        self._save()
        return results

    async def install(
        self, node: str, updates: Sequence[Update], progress: ProgressCallback
    ) -> list[UpdateResult]:
        results = []
        for i, update in enumerate(updates, 1):
            sim = self._require_up(node, "install updates")
            spec = self.spec.update(update.id)
            started = self.clock.now()
            if update.id in sim.installed:
                results.append(
                    UpdateResult(
                        update.id,
                        update.title,
                        PLUGIN,
                        UpdateOutcome.SUCCEEDED,
                        message="already installed",
                        started=started,
                        finished=started,
                    )
                )
                continue
            progress(f"installing {i}/{len(updates)}: {update.title}")
            seconds = spec.install_seconds + (0 if update.id in sim.staged else spec.download_seconds)
            await self.clock.sleep(self._scaled(seconds))
            sim = self._require_up(node, "install updates")
            key = f"{update.id}@{node}"
            if self.install_failures_left.get(key, 0) > 0:
                self.install_failures_left[key] -= 1
                self._save()
                results.append(
                    UpdateResult(
                        update.id,
                        update.title,
                        PLUGIN,
                        UpdateOutcome.FAILED,
                        error_code=INJECTED_FAILURE_CODE,
                        message=f"installer exited with {INJECTED_FAILURE_CODE} (injected fault)",
                        started=started,
                        finished=self.clock.now(),
                    )
                )
                continue
            sim.installed.add(update.id)
            if spec.restart:
                sim.pending_restart = True
            else:
                sim.active.add(update.id)
            self._save()
            results.append(
                UpdateResult(
                    update.id,
                    update.title,
                    PLUGIN,
                    UpdateOutcome.SUCCEEDED,
                    restart_required=spec.restart,
                    started=started,
                    finished=self.clock.now(),
                )
            )
        return results

    # --- records -------------------------------------------------------------------------------

    def role_outages(self, since: datetime, until: datetime | None) -> list[RoleOutage]:
        self._settle()
        out = []
        for o in self.outages:
            if (o.ended is None or o.ended >= since) and (until is None or o.started <= until):
                out.append(RoleOutage(o.role, o.started, o.ended, o.node, o.reason))
        return out
