"""The maintenance gate: a node enters maintenance only when quorum and capacity allow it.

Admission is decided on a fresh observation of the cluster, one node at a time (so two nodes are
never admitted on the strength of the same snapshot). A node that can never be admitted, because
nothing else holds maintenance that could free room, is refused at once with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from cau.domain.planning import Admission, Block, admit_to_maintenance
from cau.domain.profile import MoveMethod
from cau.ports import ClusterProvider


class NeverAdmitted(Exception):
    def __init__(self, admission: Admission) -> None:
        super().__init__(admission.reason)
        self.admission = admission

    @property
    def block(self) -> Block:
        assert self.admission.block is not None
        return self.admission.block


class MaintenanceGate:
    def __init__(
        self,
        provider: ClusterProvider,
        move: MoveMethod,
        on_wait: Callable[[str, Admission], None],
        recheck_seconds: float = 30.0,
    ) -> None:
        self._provider = provider
        self._move = move
        self._on_wait = on_wait
        self._recheck = recheck_seconds
        self._cond = asyncio.Condition()
        self.holders: set[str] = set()

    def hold(self, node: str) -> None:
        """Count a node as holding maintenance without asking (a resumed node already in it)."""
        self.holders.add(node)

    async def acquire(self, node: str) -> None:
        if node in self.holders:
            return
        async with self._cond:
            while True:
                snapshot = await self._provider.discover()
                others = self.holders - {node}
                admission = admit_to_maintenance(snapshot, node, others, self._move)
                if admission.admitted:
                    self.holders.add(node)
                    return
                if not others:
                    raise NeverAdmitted(admission)
                self._on_wait(node, admission)
                # Woken when a holder leaves; the timeout also catches changes made outside cau.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._cond.wait(), self._recheck)

    async def release(self, node: str) -> None:
        if node not in self.holders:
            return
        async with self._cond:
            self.holders.discard(node)
            self._cond.notify_all()
