"""The `ssh` provider: a cluster that is a list of hosts reached over SSH (remote-updating mode).

    [clusters.web]
    provider = "ssh"
    plugins = ["apt"]
    [clusters.web.options]
    user = "root"                                  # non-root users run commands through sudo -n
    identity = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"             # verified, always
    min_online = 2                                 # nodes that must stay online
    boot_id_command = "cat /proc/sys/kernel/random/boot_id"
    reboot_command = "systemctl reboot"
    ready_command = "systemctl is-system-running --wait"   # optional: services up after a boot
    [[clusters.web.options.nodes]]
    name = "web1"
    host = "10.0.0.11"
    [clusters.web.options.maintenance]             # optional hooks, e.g. a load balancer drain
    run_on = "lb"                                  # "node" (default) or a name in hook_hosts
    enter = "haproxy-drain $CAU_HOST"
    exit = "haproxy-enable $CAU_HOST"
    status = "haproxy-is-drained $CAU_HOST"        # exit 0 = in maintenance
    [clusters.web.options.hook_hosts.lb]
    host = "10.0.0.5"

Without hooks, maintenance is a marker file on the node (/var/lib/cau/maintenance), so a node
put in maintenance by cau is visible to anyone on it, and to the next coordinator.

Nodes (and hook hosts) are reached through `ProviderContext.transports` when it is given (by
their names in the options: tests give scripted transports, see cau.testing), over SSH otherwise.
Everything goes through the Transport protocol: after a restart a transport is closed, and the
next command reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState
from cau.domain.durations import Duration
from cau.domain.profile import FailbackMode, MoveMethod, RunProfile
from cau.errors import CauError, CommandTimeout, MaintenanceError, NodeUnreachable, NotFound, ProviderError
from cau.ports import MaintenancePrior, ProviderContext, Transport, TransportFactory
from cau.redact import tail
from cau.transport.ssh import SshTarget, SshTransport, fetch_host_key, record_host_key

MARKER = "/var/lib/cau/maintenance"


class NodeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    host: str = Field(min_length=1)
    port: int = Field(22, gt=0, lt=65536)
    user: str | None = None
    votes: int = Field(1, ge=0)
    failure_domain: str | None = None
    # Where the node is ({site = "berlin", rack = "r12"}): a profile's domain_label picks the
    # failure domain among them (cau.domain.disruption).
    labels: dict[str, str] = {}


class HookHost(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    port: int = 22
    user: str | None = None


class MaintenanceHooks(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_on: str = "node"
    enter: str = f"mkdir -p {MARKER.rsplit('/', 1)[0]} && date -u > {MARKER}"
    exit: str = f"rm -f {MARKER}"
    # Exit 0 means "in maintenance"; None: cau cannot observe it (prior state unknown).
    status: str | None = f"test -e {MARKER}"
    timeout: Duration = timedelta(minutes=5)


class SshOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: list[NodeEntry] = Field(min_length=1)
    user: str = "root"
    identity: Path | None = None
    known_hosts: Path = Path("~/.ssh/known_hosts")
    connect_timeout: float = Field(10.0, gt=0)
    sudo: bool | None = None
    min_online: int | None = Field(None, ge=0)
    boot_id_command: str = "cat /proc/sys/kernel/random/boot_id"
    reboot_command: str = "systemctl reboot"
    ready_command: str | None = None
    maintenance: MaintenanceHooks = Field(default_factory=MaintenanceHooks)
    hook_hosts: dict[str, HookHost] = {}
    # Remote-updating mode refuses to run on a member of the cluster; self-updating mode (later)
    # and tests on loopback set this on purpose.
    allow_member_coordinator: bool = False

    @field_validator("identity", "known_hosts")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> SshOptions:
        names = [n.name for n in self.nodes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"node listed twice: {', '.join(dupes)}")
        if self.maintenance.run_on != "node" and self.maintenance.run_on not in self.hook_hosts:
            raise ValueError(
                f"maintenance.run_on = {self.maintenance.run_on!r} is not 'node' nor a hook_hosts entry"
            )
        if self.min_online is not None and self.min_online > len(self.nodes):
            raise ValueError(f"min_online = {self.min_online} is more than the {len(self.nodes)} nodes")
        return self


@dataclass
class SshSession:
    node: str
    transport: Transport


def _is_local_address(host: str) -> bool:
    """Whether `host` is this machine: an address of it can be bound here."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        ip = str(addr[0])
        if ip.startswith("127.") or ip == "::1":
            return True
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            try:
                s.bind((ip, 0))
            except OSError:
                continue
            return True
    return False


class SshProvider:
    name: ClassVar[str] = "ssh"
    Options: ClassVar[type[BaseModel]] = SshOptions
    default_plugins: tuple[str, ...] = ("apt",)
    # Self-updating mode: no resource manager keeps a coordinator role here; the daemons on the
    # nodes elect one through the store's lock (cau.selfupdating.ElectedRole).
    coordinator_election: ClassVar[bool] = True
    # the coordinator runs on the nodes (a daemon on each, or a resource agent): they must all
    # have the cau and plug-ins this machine has (self-updating readiness)
    coordinator_runs_cau_on_nodes: ClassVar[bool] = True

    def __init__(
        self,
        cluster: str,
        options: SshOptions,
        *,
        transports: TransportFactory | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self._cluster = cluster
        self._secrets = dict(secrets or {})
        self.options = options
        self._nodes = {n.name: n for n in options.nodes}
        self._factory = transports
        self._transports: dict[str, Transport] = {}

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> SshProvider:
        assert isinstance(options, SshOptions)
        return cls(ctx.cluster, options, transports=ctx.transports, secrets=ctx.secrets)

    @property
    def cluster(self) -> str:
        return self._cluster

    # --- transports ----------------------------------------------------------------------------

    def _target(self, name: str, host: str, port: int, user: str | None) -> SshTarget:
        o = self.options
        return SshTarget(
            name=name,
            host=host,
            port=port,
            user=user or o.user,
            identity=o.identity,
            known_hosts=o.known_hosts,
            connect_timeout=o.connect_timeout,
            sudo=o.sudo,
            cluster=self._cluster,
        )

    def target(self, node: str) -> SshTarget:
        entry = self._entry(node)
        return self._target(node, entry.host, entry.port, entry.user)

    def _entry(self, node: str) -> NodeEntry:
        if node not in self._nodes:
            raise NotFound(
                f"cluster '{self._cluster}' has no node '{node}' (it has {', '.join(self._nodes)})"
            )
        return self._nodes[node]

    def transport(self, node: str) -> Transport:
        if node not in self._transports:
            target = self.target(node)
            self._transports[node] = SshTransport(target) if self._factory is None else self._factory(node)
        return self._transports[node]

    def _hook_transport(self, node: str) -> Transport:
        where = self.options.maintenance.run_on
        if where == "node":
            return self.transport(node)
        key = f"hook:{where}"
        if key not in self._transports:
            hh = self.options.hook_hosts[where]
            self._transports[key] = (
                SshTransport(self._target(where, hh.host, hh.port, hh.user))
                if self._factory is None
                else self._factory(where)
            )
        return self._transports[key]

    def _hook_env(self, node: str) -> dict[str, str]:
        # The hooks are the admin's commands (a load balancer's API...): they get the secrets too.
        return {
            **self._secrets,
            "CAU_NODE": node,
            "CAU_HOST": self._entry(node).host,
            "CAU_CLUSTER": self._cluster,
        }

    # --- observation ---------------------------------------------------------------------------

    async def preflight(
        self, profile: RunProfile | None = None, *, coordinator_node: str | None = None
    ) -> list[str]:
        """Remote-updating mode refuses a coordinator on a member; self-updating mode's
        coordinator (on `coordinator_node`) hands the run over before its own node's turn."""
        if coordinator_node is not None:
            known = [n.name for n in self.options.nodes]
            if coordinator_node in known:
                return []
            return [f"the coordinator's node {coordinator_node} is not a node of '{self._cluster}'"]
        if self.options.allow_member_coordinator:
            return []
        local = [n.name for n in self.options.nodes if _is_local_address(n.host)]
        if local:
            return [
                f"remote-updating mode: this machine is itself node {', '.join(local)} of '{self._cluster}' "
                "and would restart under its own coordinator; run cau from a machine outside the cluster"
            ]
        return []

    async def _observe(self, node: str) -> tuple[str | None, bool | None]:
        """(boot id or None when down, in maintenance or None when unknown). A host key or login
        problem is not "down": it propagates, and nothing is done to a node of doubtful identity."""
        boot = await self.boot_id(node)
        if boot is None:
            return None, None
        try:
            return boot, await self._in_maintenance(node)
        except NodeUnreachable:
            return boot, None

    async def _in_maintenance(self, node: str) -> bool | None:
        status = self.options.maintenance.status
        if status is None:
            return None
        result = await self._hook_transport(node).run(
            status, timeout=self.options.maintenance.timeout.total_seconds(), env=self._hook_env(node)
        )
        return result.exit_status == 0

    async def discover(self) -> ClusterSnapshot:
        observed = await asyncio.gather(*(self._observe(n.name) for n in self.options.nodes))
        nodes = tuple(
            Node(
                name=entry.name,
                state=NodeState.UP if boot is not None else NodeState.DOWN,
                in_maintenance=bool(maint),
                capacity=Capacity(),
                votes=entry.votes,
                boot_id=boot,
                failure_domain=entry.failure_domain,
                labels=dict(entry.labels),
            )
            for entry, (boot, maint) in zip(self.options.nodes, observed, strict=True)
        )
        min_online = self.options.min_online
        if min_online is None:
            # Half the pool (rounded up) stays online by default; a single host may go down.
            min_online = (len(nodes) + 1) // 2 if len(nodes) > 1 else 0
        return ClusterSnapshot(self._cluster, nodes, (), min_online=min_online)

    async def session(self, node: str) -> SshSession:
        return SshSession(node, self.transport(node))

    async def boot_id(self, node: str) -> str | None:
        try:
            result = await self.transport(node).run(self.options.boot_id_command, timeout=30)
        except NodeUnreachable:
            return None
        if not result.ok or not result.stdout.strip():
            raise ProviderError(
                f"boot_id_command failed on {node} (exit {result.exit_status}): {tail(result.stderr, 300)}",
                hint="set boot_id_command (cluster options) to a command printing an id new at every boot",
            )
        return result.stdout.strip()

    # --- maintenance ---------------------------------------------------------------------------

    async def maintenance_prior(self, node: str) -> MaintenancePrior:
        state = await self._in_maintenance(node)
        return MaintenancePrior(
            node=node, was_in_maintenance=bool(state), extra={"observed": state is not None}
        )

    async def _hook(self, node: str, which: str, command: str) -> None:
        hooks = self.options.maintenance
        where = node if hooks.run_on == "node" else hooks.run_on
        try:
            result = await self._hook_transport(node).run(
                command, timeout=hooks.timeout.total_seconds(), env=self._hook_env(node)
            )
        except CauError as exc:
            if not exc.retryable:
                raise  # a host refusing cau (its host key, the login): the engine decides by its class
            raise MaintenanceError(f"the {which} hook for {node} could not run on {where}: {exc}") from exc
        if not result.ok:
            raise MaintenanceError(
                f"the {which} hook for {node} failed on {where} (exit {result.exit_status}): "
                f"{tail(result.stderr or result.stdout, 300)}"
            )

    async def enter_maintenance(self, node: str, move: MoveMethod, prior: MaintenancePrior) -> None:
        # A list of hosts has no roles to move: the hook is where traffic is drained.
        await self._hook(node, "maintenance enter", self.options.maintenance.enter)

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        if prior.was_in_maintenance:
            return
        await self._hook(node, "maintenance exit", self.options.maintenance.exit)

    async def failback(self, node: str, prior: MaintenancePrior, mode: FailbackMode) -> list[str]:
        return []

    # --- restarts ------------------------------------------------------------------------------

    async def restart(self, node: str) -> None:
        transport = self.transport(node)
        try:
            result = await transport.run(self.options.reboot_command, timeout=60)
        except (NodeUnreachable, CommandTimeout):
            result = None  # the connection went down with the node (or hung): that is the restart
        if result is not None and result.exit_status not in (0, -1):
            raise ProviderError(
                f"reboot_command failed on {node} (exit {result.exit_status}): {tail(result.stderr, 300)}"
            )
        await transport.close()  # the next command reconnects

    async def wait_ready(self, node: str, *, previous_boot_id: str | None, timeout: float) -> str:
        """Poll until the node answers with a new boot id (and ready_command succeeds).

        A refused connection costs a few milliseconds, so it is retried every 50 ms: the node is
        seen back within about one SSH handshake of sshd accepting again. A probe that hangs
        (CommandTimeout) is a node not back yet, like one that does not answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        transport = self.transport(node)
        await transport.close()
        last = "no answer yet"
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise NodeUnreachable(f"{node} did not come back within {timeout:g}s ({last})")
            try:
                async with asyncio.timeout(max(0.5, min(left, self.options.connect_timeout))):
                    result = await self._probe(transport)
            except (NodeUnreachable, CommandTimeout, TimeoutError) as exc:
                last = str(exc) or "connection timed out"
                await transport.close()
                await asyncio.sleep(0.05)
                continue
            if result is not None and result != previous_boot_id:
                if await self._ready(transport, deadline):
                    return result
                last = "services not ready"
            else:
                last = "still the old boot"  # the reboot has not happened yet
                await asyncio.sleep(0.1)

    async def _probe(self, transport: Transport) -> str | None:
        result = await transport.run(self.options.boot_id_command, timeout=10)
        return result.stdout.strip() if result.ok and result.stdout.strip() else None

    async def _ready(self, transport: Transport, deadline: float) -> bool:
        command = self.options.ready_command
        if command is None:
            return True
        loop = asyncio.get_running_loop()
        while loop.time() < deadline:
            # a ready_command still waiting at the deadline (`--wait`) is "not ready", not an error
            with contextlib.suppress(NodeUnreachable, CommandTimeout):
                result = await transport.run(command, timeout=max(1.0, deadline - loop.time()))
                if result.ok:
                    return True
            await asyncio.sleep(0.5)
        return False

    # --- host keys -----------------------------------------------------------------------------

    async def trust_hosts(self, nodes: list[str], *, replace: bool) -> list[tuple[str, str, str]]:
        """Record the host keys the nodes present now. Returns (node, fingerprint, result)."""
        out = []
        for name in nodes or list(self._nodes):
            entry = self._entry(name)
            key = await fetch_host_key(entry.host, entry.port, timeout=self.options.connect_timeout)
            result = record_host_key(self.options.known_hosts, entry.host, entry.port, key, replace=replace)
            out.append((name, key.get_fingerprint("sha256"), result))
        return out

    async def close(self) -> None:
        for transport in self._transports.values():
            await transport.close()
