"""The `sandbox` provider: a simulated cluster, registered through the `cau.providers` entry point."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field

from cau.domain.cluster import ClusterSnapshot
from cau.domain.profile import FailbackMode, MoveMethod
from cau.errors import NotFound
from cau.ports import MaintenancePrior, ProviderContext, RoleOutage, Transport
from cau.sandbox.cluster import SandboxCluster
from cau.sandbox.role import SandboxCoordinatorRole, role_file
from cau.sandbox.spec import default_spec, load_spec
from cau.transport.local import LocalTransport


class SandboxOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A sandbox spec (TOML); relative paths are read from the cluster config's folder.
    spec: Path | None = None
    # Overrides the spec's speed factor (e.g. 1 for real-time, 100 for a quick demo).
    speed: float | None = Field(None, gt=0)


@dataclass
class SandboxSession:
    node: str
    transport: Transport  # runs on this machine: for the profile's scripts only
    cluster: SandboxCluster
    # Plug-ins that change real systems refuse simulated nodes (see cau.plugins.refuse_simulated).
    simulated: bool = True


def state_file(data_dir: Path, cluster: str) -> Path:
    return data_dir / "sandbox" / f"{cluster}.json"


class SandboxProvider:
    name: ClassVar[str] = "sandbox"
    Options: ClassVar[type[BaseModel]] = SandboxOptions
    default_plugins: tuple[str, ...] = ("sandbox",)
    simulated = True

    def __init__(self, cluster: str, sim: SandboxCluster) -> None:
        self._cluster = cluster
        self.sim = sim
        self.role = SandboxCoordinatorRole(sim, role_file(sim.state_file or Path("/nonexistent")))

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> SandboxProvider:
        assert isinstance(options, SandboxOptions)
        if options.spec is not None:
            path = options.spec
            if not path.is_absolute() and ctx.config_dir is not None:
                path = ctx.config_dir / path
            spec = load_spec(path)
        else:
            spec = default_spec()
        if options.speed is not None:
            spec = spec.model_copy(update={"speed": options.speed})
        return cls(
            ctx.cluster, SandboxCluster(ctx.cluster, spec, ctx.clock, state_file(ctx.data_dir, ctx.cluster))
        )

    @property
    def cluster(self) -> str:
        return self._cluster

    def _known(self, node: str) -> None:
        if node not in self.sim.nodes:
            raise NotFound(f"cluster '{self._cluster}' has no node '{node}'")

    async def discover(self) -> ClusterSnapshot:
        return self.sim.snapshot()

    async def session(self, node: str) -> SandboxSession:
        self._known(node)
        env = {"CAU_NODE": node, "CAU_CLUSTER": self._cluster}
        return SandboxSession(node=node, transport=LocalTransport(env=env), cluster=self.sim)

    async def maintenance_prior(self, node: str) -> MaintenancePrior:
        self._known(node)
        return self.sim.prior(node)

    async def enter_maintenance(self, node: str, move: MoveMethod, prior: MaintenancePrior) -> None:
        await self.sim.enter_maintenance(node, move)  # a failed move leaves the role on the node

    async def enter_maintenance_planned(
        self, node: str, move: MoveMethod, prior: MaintenancePrior, plan: Mapping[str, str]
    ) -> None:
        await self.sim.enter_maintenance(node, move, plan)

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        await self.sim.exit_maintenance(node, prior)

    async def failback(self, node: str, prior: MaintenancePrior, mode: FailbackMode) -> list[str]:
        return await self.sim.failback(node, prior, mode)

    async def boot_id(self, node: str) -> str | None:
        return self.sim.boot_id(node)

    async def restart(self, node: str) -> None:
        await self.sim.restart(node)

    async def wait_ready(self, node: str, *, previous_boot_id: str | None, timeout: float) -> str:
        return await self.sim.wait_ready(node, previous_boot_id, timeout)

    async def role_outages(self, since: datetime, until: datetime | None) -> list[RoleOutage]:
        return self.sim.role_outages(since, until)

    # --- self-updating mode: a simulated clustered coordinator role (cau.sandbox.role) ---------------

    async def coordinator_role_owner(self) -> str | None:
        return self.role.owner()

    async def add_coordinator_role(self) -> str | None:
        return self.role.add()

    async def remove_coordinator_role(self) -> None:
        self.role.remove()

    async def move_coordinator_role(self, away_from: str) -> str | None:
        return self.role.move(away_from)

    async def close(self) -> None:
        return None
