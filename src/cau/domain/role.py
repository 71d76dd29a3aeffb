"""Self-updating mode's configuration of a cluster: CAU's clustered role (Add-CauClusterRole).

The record lives in the run store (in self-updating mode, the cluster's own replicated store),
so that the coordinator on whichever node owns the role reads the same one."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

ROLE_SCHEMA = 1


class UpdateRequest(BaseModel):
    """`cau role update-now`: a run asked for now, picked up by the role's coordinator."""

    model_config = ConfigDict(extra="forbid")

    at: datetime
    by: str


class ClusterRole(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1  # ROLE_SCHEMA
    cluster: str
    enabled: bool = True
    # A stored profile's name (`cau profile`/dashboard), and run options over it (validated as a
    # RunProfile when set): what every run of the role uses.
    profile: str | None = None
    options: dict[str, JsonValue] = Field(default_factory=dict)
    # The stored profile's options as they were when the role was added or its profile set: the
    # role's coordinators run on the cluster's nodes, which do not have the stored profiles (they
    # are in the local store of the machine `cau role` ran on). None: no stored profile.
    profile_options: dict[str, JsonValue] | None = None
    update_requested: UpdateRequest | None = None
    # When runs start by themselves: a schedule's compact form (cau.domain.schedule, with its time
    # zone and start date), and up to when the role's coordinator has considered it (a start
    # missed while no coordinator was up is run late or skipped: cau.domain.due).
    schedule: str | None = None
    last_considered: datetime | None = None
    # A cluster without a resource manager: the node whose coordinator stepped aside for its own
    # update (its daemon does not lead until that node is updated).
    stepped_aside: str | None = None
    created: datetime
    updated: datetime
    updated_by: str
