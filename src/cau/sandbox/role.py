"""The sandbox's clustered coordinator role (self-updating mode): which simulated node owns it,
kept in a file beside the sandbox's state, so that every process (the daemon standing in for the
cluster's resource manager, each coordinator it starts) sees the same owner."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from cau.errors import MaintenanceError
from cau.sandbox.cluster import SandboxCluster

ROLE_SCHEMA = 1


class RoleState(BaseModel):
    schema_version: int = ROLE_SCHEMA
    owner: str | None = None


class SandboxCoordinatorRole:
    def __init__(self, sim: SandboxCluster, path: Path) -> None:
        self.sim = sim
        self.path = path

    def _read(self) -> RoleState | None:
        try:
            return RoleState.model_validate_json(self.path.read_text())
        except FileNotFoundError:
            return None

    def _write(self, state: RoleState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(state.model_dump_json())
        os.replace(tmp, self.path)  # readers never see half a state

    def _can_own(self) -> list[str]:
        # As a resource manager would place it: an online node not in maintenance (standby).
        snap = self.sim.snapshot()
        return [n.name for n in snap.nodes if n.is_up and not n.in_maintenance]

    def owner(self) -> str | None:
        state = self._read()
        return state.owner if state else None

    def add(self) -> str:
        current = self.owner()
        if current is not None:
            return current
        candidates = self._can_own()
        if not candidates:
            raise MaintenanceError(f"no node of '{self.sim.name}' can own the coordinator role (none online)")
        self._write(RoleState(owner=candidates[0]))
        return candidates[0]

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def move(self, away_from: str) -> str:
        others = [n for n in self._can_own() if n != away_from]
        if not others:
            raise MaintenanceError(
                f"the coordinator role cannot leave {away_from}: no other node of '{self.sim.name}' is"
                " online and out of maintenance",
                hint="bring another node back, then `cau run` resumes the run",
            )
        self._write(RoleState(owner=others[0]))
        return others[0]


def role_file(state_file: Path) -> Path:
    return state_file.with_name(state_file.stem + ".role.json")
