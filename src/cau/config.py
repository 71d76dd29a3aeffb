"""Where cau keeps things, and the clusters it knows (a TOML file).

    [clusters.prod-db]
    provider = "ssh"                       # an entry point of `cau.providers`
    plugins = ["apt"]                      # default plug-ins when the profile names none
    profile = "profiles/db.toml"           # default run profile (relative to this file)
    [clusters.prod-db.options]             # the provider's own options, validated by it
    ...
    [[clusters.prod-db.probes]]            # availability probes, measured during every run
    role = "db"
    targets = ["tcp://10.0.0.100:5432"]    # http://, https:// or tcp://host:port; up when ANY answers
    interval = "50ms"
    [[clusters.prod-db.health_gates]]      # checked before each drain and after each return
    name = "replicas"
    kind = "prometheus"                    # command | http | prometheus | cluster-health
    url = "http://prometheus:9090"
    query = 'pg_replication_lag_seconds{instance="{node}:9187"} > 5'
    stable_for = "2m"
    [clusters.prod-db.alertmanager]        # a silence per node while it is in maintenance
    url = "http://alertmanager:9093"
    matchers = { instance = "{node}:9100" }

The cluster `sandbox` exists without any configuration (the built-in simulated cluster).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cau.domain.gates import AlertmanagerSpec, GateSpec, check_unique
from cau.domain.profile import PluginSpec, plugin_shorthand
from cau.domain.validation import describe_errors
from cau.errors import ConfigError, NotFound
from cau.probes.spec import ProbeSpec
from cau.secrets import SecretsSpec

BUILTIN_SANDBOX = "sandbox"


def default_data_dir() -> Path:
    env = os.environ.get("CAU_HOME")
    return Path(env) if env else Path(platformdirs.user_data_dir("cau"))


def default_config_path() -> Path:
    env = os.environ.get("CAU_CONFIG")
    return Path(env) if env else Path(platformdirs.user_config_dir("cau")) / "clusters.toml"


class ClusterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    options: dict[str, Any] = {}
    plugins: list[PluginSpec] | None = None
    profile: Path | None = None
    probes: list[ProbeSpec] = []  # availability probes measured during runs (any provider)
    secrets: SecretsSpec | None = None  # values for scripts and plug-ins, masked everywhere (cau.secrets)
    # The nodes that host a member of the run store ([store], e.g. etcd in self-updating mode):
    # the maintenance gate keeps a majority of them up, or the store would stop under the run.
    store_members: list[str] = []
    # Health gates of every run on this cluster (cau.domain.gates), before the profile's own.
    health_gates: list[GateSpec] = []
    # A silence per node while cau holds it in maintenance (cau.domain.gates.AlertmanagerSpec).
    alertmanager: AlertmanagerSpec | None = None

    @field_validator("health_gates")
    @classmethod
    def _unique_gates(cls, value: list[GateSpec]) -> list[GateSpec]:
        return check_unique(value)

    @field_validator("plugins", mode="before")
    @classmethod
    def _plugin_shorthand(cls, value: Any) -> Any:
        return plugin_shorthand(value)


class StoreConfig(BaseModel):
    """Where runs, journals, locks and reports are kept: a `cau.stores` entry point and its
    options. Default: SQLite in the data directory. Self-updating mode keeps them on the
    cluster's own nodes, so that they survive the loss of any one of them:

        [store]
        kind = "etcd"
        options = { endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"] }
        lease = 20
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = "sqlite"
    options: dict[str, Any] = {}
    # Seconds a coordinator's lock outlasts its last renewal (it renews every tenth of it, and
    # stops acting after half of it without a renewal). A coordinator on another host that died
    # silently is taken over from after this long: self-updating mode wants it short (e.g. 20),
    # so that the role's next coordinator resumes soon after its node was lost.
    lease: float = Field(300.0, ge=5, le=3600)


class CauConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    store: StoreConfig = StoreConfig()
    clusters: dict[str, ClusterConfig] = {}


@dataclass(frozen=True)
class LoadedConfig:
    config: CauConfig
    path: Path | None  # None when no file exists (only the built-in sandbox)

    @property
    def base_dir(self) -> Path | None:
        return self.path.parent if self.path else None

    def cluster(self, name: str) -> ClusterConfig:
        found = self.config.clusters.get(name)
        if found is not None:
            return found
        if name == BUILTIN_SANDBOX:
            return ClusterConfig(provider="sandbox")
        known = sorted({*self.config.clusters, BUILTIN_SANDBOX})
        where = f" in {self.path}" if self.path else f" (no config file at {default_config_path()})"
        raise NotFound(
            f"unknown cluster '{name}'{where}; known clusters: {', '.join(known)}",
            hint="declare it under [clusters.NAME] in the config file (--config)",
        )

    def names(self) -> list[str]:
        return sorted({*self.config.clusters, BUILTIN_SANDBOX})


def load_config(path: Path | None) -> LoadedConfig:
    """Load the config file. An explicit path must exist; the default one may be absent."""
    explicit = path is not None
    target = path or default_config_path()
    if not target.exists():
        if explicit:
            raise ConfigError(f"{target}: no such config file")
        return LoadedConfig(CauConfig(), None)
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{target}: cannot read: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{target}: not valid TOML: {exc}") from exc
    try:
        return LoadedConfig(CauConfig.model_validate(data), target)
    except ValidationError as exc:
        raise ConfigError(f"{target}: " + "; ".join(describe_errors(exc))) from exc
