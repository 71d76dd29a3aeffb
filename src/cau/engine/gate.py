"""The maintenance gate: a node enters maintenance only when quorum and capacity allow it, the
cluster is healthy, and (for a provider that can tell, `PredictsDrain`) the cluster manager's own
placement rules would move every role rather than stop one.

Drains and failbacks go through the gate one at a time. A node is admitted on a fresh observation
in which every earlier holder has finished draining, and it keeps the gate until its own drain is
done. So the
capacity check and the placement the cluster then makes are computed on the same state, and two
drains never interleave their role moves (which fragments capacity, and is hard on migration
networks too). A failback moves roles as well, so leaving maintenance also holds the gate: a drain
is never planned on room that a failback is about to take. Installs and restarts still run in
parallel.

A node that can never be admitted, because nothing else holds maintenance that could free room,
is refused at once with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from typing import Protocol

from cau.domain.disruption import DisruptionLimits
from cau.domain.planning import Admission, Block, admit_to_maintenance
from cau.domain.profile import MoveMethod
from cau.errors import CauError
from cau.ports import ClusterProvider, PredictsDrain, ReportsHealth


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

    async def admitted(self, node: str) -> None:
        """`node` was admitted and is about to drain (inside the gate's lock)."""
        ...

    async def returned(self, node: str) -> None:
        """`node` came back: restarted, out of maintenance, roles failed back. May wait."""
        ...


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

    def window_closed(self) -> str | None:
        """Why no node may be taken out of service now (the run's window is closed), or None."""
        return self._window_closed()

    def hold(self, node: str) -> None:
        """Count a node as holding maintenance without asking (a resumed node already in it)."""
        self.holders.add(node)

    @contextlib.asynccontextmanager
    async def draining(self, node: str) -> AsyncIterator[None]:
        """Admit `node` (unless it already holds maintenance) and keep the gate while it drains."""
        if self._hooks is not None and node not in self.holders:
            await self._hooks.before_admission(node)
        await self._cond.acquire()
        try:
            if node not in self.holders:
                await self._admit(node)
                if self._hooks is not None:
                    await self._hooks.admitted(node)
            yield
        finally:
            self._cond.notify_all()
            self._cond.release()

    async def _admit(self, node: str) -> None:
        while True:
            closed = self.window_closed()
            if closed is not None:
                raise OutsideWindow(closed)
            snapshot = await self._provider.discover()
            others = self.holders - {node}
            admission = admit_to_maintenance(
                snapshot, node, others, self._move, self._store_members, self._limits
            )
            if admission.admitted and self._check_health and isinstance(self._provider, ReportsHealth):
                # a health gate: no drain on top of a failure the previous node may have left
                problems = await self._provider.health_problems()
                if problems:
                    admission = Admission(
                        False, Block.HEALTH, "the cluster is not healthy: " + "; ".join(problems)
                    )
            if admission.admitted and isinstance(self._provider, PredictsDrain):
                # the cluster manager's own answer: would anything stop rather than move?
                try:
                    stops = await self._provider.drain_problems(node, self._move)
                except CauError as exc:
                    stops = [f"cau could not ask the cluster what the drain would do ({exc})"]
                if stops:
                    admission = Admission(
                        False, Block.PLACEMENT, f"draining {node} would stop roles: " + "; ".join(stops)
                    )
            if admission.admitted:
                self.holders.add(node)
                return
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

    @contextlib.asynccontextmanager
    async def leaving(self, node: str) -> AsyncIterator[None]:
        """Hold the gate while `node` leaves maintenance and its roles fail back; then it no
        longer counts as a holder."""
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
