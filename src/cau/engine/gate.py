"""The maintenance gate: a node enters maintenance only when quorum and capacity allow it, the
cluster is healthy, and (for a provider that can tell, `PredictsDrain`) the cluster manager's own
placement rules would move every role rather than stop one.

Two ways through it, by what the provider can do:

* **Planned drains, overlapping** (a provider that `FollowsPlacement`, with `move = live`): the
  gate is held only while a node is admitted. The admission is decided on the cluster as it will
  be once every move in flight has landed (`project_in_flight`): each admitted drain's plan
  (role -> target) reserves the room its roles need until the drain is over, and the provider
  moves the roles there. A node whose roles are failing back takes no role meanwhile, and a node
  that planned moves are still heading to is not admitted until they land. So several nodes
  drain and fail back at once and no node is ever over-committed.
* **One at a time** (any other provider, where the cluster manager places roles itself): a node
  is admitted on a fresh observation in which every earlier holder has finished draining, and it
  keeps the gate until its own drain is done, so the capacity check and the placement the
  cluster then makes are computed on the same state, and two drains never interleave their role
  moves. Leaving maintenance (and failing back) holds the gate too: a drain is never planned on
  room that a failback is about to take.

Installs and restarts run in parallel either way. A node that can never be admitted, because
nothing else holds maintenance that could free room, is refused at once with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Protocol

from cau.domain.cluster import ClusterSnapshot
from cau.domain.disruption import DisruptionLimits
from cau.domain.placement import place_roles
from cau.domain.planning import Admission, Block, admit_to_maintenance, project_in_flight
from cau.domain.profile import MoveMethod
from cau.errors import CauError
from cau.ports import ClusterProvider, FollowsPlacement, PredictsDrain, ReportsHealth


class NeverAdmitted(Exception):
    def __init__(self, admission: Admission) -> None:
        super().__init__(admission.reason)
        self.admission = admission

    @property
    def block(self) -> Block:
        assert self.admission.block is not None
        return self.admission.block


class OutsideWindow(Exception):
    """The run's maintenance window is closed: the node does not enter maintenance now. It has
    not been taken out of service; it waits, where it stopped, for the next window."""


class GateHooks(Protocol):
    """What runs around the gate (cau.engine.safety: health gates, alert silences)."""

    async def before_admission(self, node: str) -> None:
        """Before the gate considers `node` (outside the gate's lock): may wait, or raise."""
        ...

    def red_gates(self, node: str) -> list[str]:
        """The health gates concerning `node` last seen red (by the run's watch), at admission."""
        ...

    async def admitted(self, node: str) -> None:
        """`node` was admitted and is about to drain (inside the gate's lock)."""
        ...

    async def returned(self, node: str) -> None:
        """`node` came back: restarted, out of maintenance, roles failed back. May wait."""
        ...


def drains_overlap(provider: ClusterProvider, move: MoveMethod) -> bool:
    """Do drains and failbacks overlap (planned drains), or pass the gate one at a time?"""
    return isinstance(provider, FollowsPlacement) and move is MoveMethod.LIVE


class MaintenanceGate:
    def __init__(
        self,
        provider: ClusterProvider,
        move: MoveMethod,
        on_wait: Callable[[str, Admission], None],
        recheck_seconds: float = 30.0,
        check_health: bool = True,
        window_closed: Callable[[], str | None] = lambda: None,
        store_members: Collection[str] = (),
        hooks: GateHooks | None = None,
        limits: DisruptionLimits | None = None,
    ) -> None:
        self._hooks = hooks
        self._limits = limits  # failure domains and disruption budgets (cau.domain.disruption)
        # store_members: nodes hosting the run store's members (cau.domain.planning)
        self._store_members = tuple(store_members)
        # window_closed: why no node may enter maintenance now (the run's maintenance window is
        # closed), or None. Checked at every admission, so a node waiting at the gate when the
        # window closes does not go in after it.
        self._window_closed = window_closed
        self._provider = provider
        self._move = move
        self._on_wait = on_wait
        self._recheck = recheck_seconds
        self._check_health = check_health
        self._cond = asyncio.Condition()
        self.holders: set[str] = set()
        # Planned drains (see the module's docstring): each draining node's plan, and the nodes
        # whose roles are failing back to them.
        self.overlapping = drains_overlap(provider, move)
        self._plans: dict[str, dict[str, str]] = {}
        self._returning: set[str] = set()
        # The last projection (observed snapshot, plans' version, projected snapshot): every
        # waiter woken by one change asks for the same one. A pure function of the observation
        # and the plans, so it is reused only for that very observation (the same object, from
        # a provider that returns its cached snapshot while the cluster is unchanged) and plans
        # unchanged since (`_plans_version` counts every change of `_plans`).
        self._plans_version = 0
        self._projection: tuple[ClusterSnapshot, int, ClusterSnapshot] | None = None

    def plan_for(self, node: str) -> Mapping[str, str] | None:
        """Where `node`'s roles go (planned drains), or None: the provider places them."""
        return self._plans.get(node) if self.overlapping else None

    def window_closed(self) -> str | None:
        """Why no node may be taken out of service now (the run's window is closed), or None."""
        return self._window_closed()

    def hold(self, node: str) -> None:
        """Count a node as holding maintenance without asking (a resumed node already in it)."""
        self.holders.add(node)

    @contextlib.asynccontextmanager
    async def draining(self, node: str) -> AsyncIterator[None]:
        """Admit `node` (unless it already holds maintenance) and keep the gate while it drains;
        with planned drains, only while it is admitted: its plan then holds the room it needs."""
        while True:
            if self._hooks is not None and node not in self.holders:
                await self._hooks.before_admission(node)
            await self._cond.acquire()
            try:
                if node in self.holders:
                    if self.overlapping:
                        await self._replan(node)
                    break
                if await self._admit(node):
                    if self._hooks is not None:
                        await self._hooks.admitted(node)
                    break
            except BaseException:
                self._cond.release()
                raise
            # A health gate turned red while it waited for the gate: wait for it again, outside.
            self._cond.release()
        if self.overlapping:
            self._cond.release()
            try:
                yield
            finally:
                self._set_plan(node, None)  # its roles have landed (or the drain failed)
                await self._notify()
            return
        try:
            yield
        finally:
            self._cond.notify_all()
            self._cond.release()

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    def _set_plan(self, node: str, plan: dict[str, str] | None) -> None:
        if plan is None:
            if self._plans.pop(node, None) is None:
                return
        else:
            self._plans[node] = plan
        self._plans_version += 1

    def _projected(self, observed: ClusterSnapshot) -> ClusterSnapshot:
        """The cluster once every planned move in flight has landed (see the module)."""
        cached = self._projection
        if cached is not None and cached[0] is observed and cached[1] == self._plans_version:
            return cached[2]
        projected = project_in_flight(observed, self._plans)
        self._projection = (observed, self._plans_version, projected)
        return projected

    async def _replan(self, node: str) -> None:
        """A node already in maintenance (a resumed run, another attempt): plan what is left on
        it, on the room nobody else has planned for. Without room the provider refuses."""
        snapshot = self._projected(await self._provider.discover())
        placement = place_roles(snapshot, self.holders, unavailable=self._returning)
        own = {r.name for r in snapshot.roles_on(node) if r.movable}
        self._set_plan(node, {role: to for role, to in placement.moves.items() if role in own})

    async def _admit(self, node: str) -> bool:
        """Wait (releasing the gate) until `node` may enter maintenance; False when one of its
        health gates turned red while it waited (its wait for them must start again)."""
        while True:
            closed = self.window_closed()
            if closed is not None:
                raise OutsideWindow(closed)
            observed = await self._provider.discover()
            snapshot = self._projected(observed) if self.overlapping else observed
            others = self.holders - {node}
            admission = admit_to_maintenance(
                snapshot,
                node,
                others,
                self._move,
                self._store_members,
                self._limits,
                unavailable=self._returning,
            )
            if admission.admitted and self.overlapping:
                admission = _not_a_target_in_flight(node, self._plans) or admission
            if admission.admitted:
                # The cluster manager's answers, asked at once (both only read): is it healthy
                # (no drain on top of a failure the previous node may have left), and would
                # anything stop rather than move? Health is the first reason given.
                problems, stops = await asyncio.gather(self._health_problems(), self._drain_stops(node))
                if problems:
                    admission = Admission(
                        False, Block.HEALTH, "the cluster is not healthy: " + "; ".join(problems)
                    )
                elif stops:
                    admission = Admission(
                        False, Block.PLACEMENT, f"draining {node} would stop roles: " + "; ".join(stops)
                    )
            if admission.admitted:
                # The health gates were green and stable before it asked; it may have waited here
                # since: a gate the watch saw turn red meanwhile sends it back to wait for them.
                red = self._hooks.red_gates(node) if self._hooks is not None else []
                if red:
                    self._on_wait(
                        node, Admission(False, Block.HEALTH, "health gate(s) turned red: " + ", ".join(red))
                    )
                    return False
                self.holders.add(node)
                if self.overlapping:
                    self._set_plan(node, dict(admission.moves))
                return True
            if not others:
                raise NeverAdmitted(admission)
            self._on_wait(node, admission)
            # Releases the gate while waiting; woken when a holder leaves. The timeout also
            # catches changes made outside cau. asyncio.timeout, not wait_for: wait_for runs the
            # wait in another task, which can re-take the lock after this one was cancelled and
            # hold it forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._recheck):
                    await self._cond.wait()

    async def _health_problems(self) -> list[str]:
        if self._check_health and isinstance(self._provider, ReportsHealth):
            return await self._provider.health_problems()
        return []

    async def _drain_stops(self, node: str) -> list[str]:
        if not isinstance(self._provider, PredictsDrain):
            return []
        try:
            return await self._provider.drain_problems(node, self._move)
        except CauError as exc:
            return [f"cau could not ask the cluster what the drain would do ({exc})"]

    @contextlib.asynccontextmanager
    async def leaving(self, node: str) -> AsyncIterator[None]:
        """While `node` leaves maintenance and its roles fail back: hold the gate (one at a time)
        or keep every drain's plan off it (planned drains). Then it no longer counts as a
        holder."""
        if self.overlapping:
            self._returning.add(node)
            try:
                yield
            finally:
                self._returning.discard(node)
                self.holders.discard(node)
                await self._notify()
            return
        async with self._cond:
            try:
                yield
            finally:
                self.holders.discard(node)
                self._cond.notify_all()

    async def returned(self, node: str) -> None:
        """`node` is back in service: what must hold before the run moves on (health gates)."""
        if self._hooks is not None:
            await self._hooks.returned(node)

    async def release(self, node: str) -> None:
        if node not in self.holders:
            return
        async with self._cond:
            self.holders.discard(node)
            self._cond.notify_all()


def _not_a_target_in_flight(node: str, plans: Mapping[str, Mapping[str, str]]) -> Admission | None:
    """A node that an unfinished drain planned roles onto is not drained yet: its room was
    promised to them, a role must not land on a node in maintenance, and a role cannot be moved
    again while it is still migrating (a cluster shows it on its target before it has landed)."""
    incoming = sorted(role for moves in plans.values() for role, target in moves.items() if target == node)
    if not incoming:
        return None
    return Admission(False, Block.CAPACITY, f"{', '.join(incoming)} still moving to {node}")
