"""The description of a sandbox cluster (TOML): nodes, roles, capacity, updates, and injected faults.

speed = 30                       # the cluster runs 30x faster than its nominal durations
[[nodes]]
name = "node1"
cpu = 12
memory_gb = 48
restart_seconds = 45
failure_domain = "rack1"         # the node's failure domain (a profile's default domain_label)
labels = { site = "berlin" }     # more labels: a profile's domain_label may name one
never_returns = false            # fault: does not come back after a restart
in_maintenance = false           # fault: already in maintenance before the run
online = true                    # fault: down from the start
[[roles]]
name = "web"
kind = "live"                    # live | failover | clone | pinned
owner = "node1"
preferred_owners = ["node1", "node2"]
cpu = 4
memory_gb = 16
move_seconds = 6
fail_migrations = 0              # fault: the first N moves of this role fail
[[updates]]
id = "linux-image-6.1.0-41"
title = "Linux kernel 6.1.158-1"
nodes = ["*"]                    # fnmatch patterns
restart = true
install_seconds = 40
after = []                       # second-order: applicable once these are in effect
fail_installs = { node2 = 2 }    # fault: fails N times on a node ("*" = every node)
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import tomllib
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cau.domain.cluster import RoleKind
from cau.domain.validation import describe_errors
from cau.errors import ConfigError


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    cpu: float = Field(16, gt=0)
    memory_gb: float = Field(64, gt=0)
    votes: int = Field(1, ge=0)
    failure_domain: str | None = None
    labels: dict[str, str] = {}
    restart_seconds: float = Field(60, ge=0)
    online: bool = True
    in_maintenance: bool = False
    never_returns: bool = False


class RoleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: RoleKind
    owner: str | None = None
    instances: list[str] | None = None  # clones: where instances run (default: every node)
    preferred_owners: list[str] = []
    cpu: float = Field(1, ge=0)
    memory_gb: float = Field(1, ge=0)
    move_seconds: float = Field(5, ge=0)
    fail_migrations: int = Field(0, ge=0)


class UpdateSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    title: str = ""
    nodes: list[str] = ["*"]
    restart: bool = False
    install_seconds: float = Field(10, ge=0)
    download_seconds: float = Field(2, ge=0)
    size_mb: float = Field(5, ge=0)
    after: list[str] = []
    fail_installs: dict[str, int] = {}
    description: str = ""

    def applies_to(self, node: str) -> bool:
        return any(fnmatch.fnmatchcase(node, pattern) for pattern in self.nodes)

    def failures_for(self, node: str) -> int:
        return self.fail_installs.get(node, self.fail_installs.get("*", 0))


class SandboxSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    speed: float = Field(1.0, gt=0)
    scan_seconds: float = Field(2, ge=0)
    nodes: list[NodeSpec] = Field(min_length=1)
    roles: list[RoleSpec] = []
    updates: list[UpdateSpec] = []

    @model_validator(mode="after")
    def _consistent(self) -> SandboxSpec:
        names = [n.name for n in self.nodes]
        problems: list[str] = []
        for label, items in (("node", names), ("role", [r.name for r in self.roles])):
            dupes = sorted({x for x in items if items.count(x) > 1})
            if dupes:
                problems.append(f"{label} defined twice: {', '.join(dupes)}")
        known = set(names)
        for role in self.roles:
            if role.kind is RoleKind.CLONE:
                if role.owner is not None:
                    problems.append(f"role {role.name}: a clone has instances, not an owner")
                unknown = [n for n in role.instances or [] if n not in known]
            else:
                if role.owner is None:
                    problems.append(f"role {role.name}: 'owner' is required for a {role.kind} role")
                unknown = [n for n in [role.owner, *role.preferred_owners] if n and n not in known]
            if unknown:
                problems.append(f"role {role.name}: unknown node {', '.join(unknown)}")
        ids = [u.id for u in self.updates]
        dupes = sorted({x for x in ids if ids.count(x) > 1})
        if dupes:
            problems.append(f"update defined twice: {', '.join(dupes)}")
        for update in self.updates:
            missing = [a for a in update.after if a not in ids]
            if missing:
                problems.append(f"update {update.id}: 'after' names unknown update {', '.join(missing)}")
            if not any(update.applies_to(n) for n in names):
                problems.append(f"update {update.id}: 'nodes' matches no node")
            bad = [n for n in update.fail_installs if n != "*" and n not in known]
            if bad:
                problems.append(f"update {update.id}: fail_installs names unknown node {', '.join(bad)}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def node(self, name: str) -> NodeSpec:
        return next(n for n in self.nodes if n.name == name)

    @cached_property
    def _roles_by_name(self) -> dict[str, RoleSpec]:
        return {r.name: r for r in self.roles}

    @cached_property
    def _updates_by_id(self) -> dict[str, UpdateSpec]:
        return {u.id: u for u in self.updates}

    def role(self, name: str) -> RoleSpec:
        # by name, not by scanning: the simulation asks for every role at every change
        return self._roles_by_name[name]

    def update(self, update_id: str) -> UpdateSpec:
        return self._updates_by_id[update_id]

    def fingerprint(self) -> str:
        """Identifies the cluster's definition (speed excluded: it does not change the cluster)."""
        return self._fingerprint

    @cached_property
    def _fingerprint(self) -> str:
        # once per spec: the simulation writes it with its state at every change (specs are
        # never changed in place; a new speed is a copy, and speed is not in it)
        data = self.model_dump(mode="json", exclude={"speed"})
        for node in data["nodes"]:
            if not node["labels"]:
                del node["labels"]  # a spec without labels keeps the fingerprint it had before them
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_spec(path: Path) -> SandboxSpec:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the sandbox spec: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_spec(data, str(path))


def parse_spec(data: dict[str, Any], source: str) -> SandboxSpec:
    try:
        return SandboxSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: invalid sandbox spec: " + "; ".join(describe_errors(exc))) from exc


def default_spec() -> SandboxSpec:
    text = resources.files("cau.sandbox").joinpath("default.toml").read_text(encoding="utf-8")
    return parse_spec(tomllib.loads(text), "built-in sandbox")
