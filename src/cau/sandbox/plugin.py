"""The `sandbox` plug-in: scans, stages and installs the simulated updates of a sandbox node."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from cau.domain.updates import ScanResult, StagingResult, Update, UpdateResult
from cau.errors import PluginError
from cau.ports import NodeSession, NodeUpdater, PluginContext, ProgressCallback
from cau.sandbox.cluster import SandboxCluster
from cau.sandbox.provider import SandboxSession


class SandboxArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Only updates whose id starts with one of these prefixes (empty: all of them).
    include: list[str] = []
    exclude: list[str] = []


class SandboxNodeUpdater:
    def __init__(self, node: str, cluster: SandboxCluster, args: SandboxArgs) -> None:
        self._node = node
        self._cluster = cluster
        self._args = args

    def _wanted(self, update: Update) -> bool:
        if self._args.include and not any(update.id.startswith(p) for p in self._args.include):
            return False
        return not any(update.id.startswith(p) for p in self._args.exclude)

    async def scan(self) -> ScanResult:
        found = await self._cluster.scan(self._node)
        return ScanResult(tuple(u for u in found.updates if self._wanted(u)), found.restart_pending)

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]:
        return await self._cluster.stage(self._node, updates)

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        return await self._cluster.install(self._node, updates, progress)


class SandboxPlugin:
    """Simulated OS updates of sandbox nodes (kernel, libraries, firmware, second-order updates)."""

    name: ClassVar[str] = "sandbox"
    Args: ClassVar[type[BaseModel]] = SandboxArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        if not isinstance(session, SandboxSession):
            raise PluginError("the sandbox plug-in only updates nodes of sandbox clusters")
        assert isinstance(args, SandboxArgs)
        return SandboxNodeUpdater(session.node, session.cluster, args)
