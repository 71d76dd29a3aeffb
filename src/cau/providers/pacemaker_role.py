"""cau's clustered coordinator role on a Pacemaker cluster (self-updating mode): a primitive
`cau-coordinator` of the resource agent ocf:cau:coordinator that cau ships (assets/coordinator.ocf)
and installs on every node. Pacemaker runs it on one node at a time; the agent runs `cau daemon
CLUSTER --node NODE --resident` there.

Hand-over: when the run reaches the coordinator's own node, the coordinator bans the role from
that node (location constraint `cau-coordinator-away`, score -INFINITY: Pacemaker stops the agent
there, whose daemon stops acting, and starts it on another node, whose daemon resumes the run).
One constraint, moved from node to node by each hand-over, and removed when its node leaves
maintenance: a ban never outlives the update of its node, so the role can always go somewhere.
The role's own stickiness is INFINITY: it never moves back by itself (a move mid-run would only
cost a hand-over), only when its node goes away or a hand-over bans it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from cau.errors import CauError, MaintenanceError
from cau.providers.pacemaker_state import ClusterConfig, ClusterStatus
from cau.redact import tail

if TYPE_CHECKING:
    from cau.providers.pacemaker import PacemakerProvider

ROLE_RESOURCE = "cau-coordinator"
HANDOVER_CONSTRAINT = "cau-coordinator-away"
AGENT = "ocf:cau:coordinator"
AGENT_PATH = "/usr/lib/ocf/resource.d/cau/coordinator"
_AGENT_DIR = shlex.quote(str(Path(AGENT_PATH).parent))


class CoordinatorRoleOptions(BaseModel):
    """How the role's agent runs cau on the nodes (`[clusters.X.options.role]`)."""

    model_config = ConfigDict(extra="forbid")

    config: str = Field("/etc/cau/cau.toml", description="cau's config file on the nodes")
    data_dir: str = Field("/var/lib/cau", description="cau's data directory on the nodes")
    binary: str = Field("cau", description="the cau command on the nodes")
    poll: float = Field(5.0, gt=0, le=300, description="seconds between the daemon's looks at the role")
    start_timeout: float = Field(120.0, gt=0, description="seconds `role add` waits for it to start")


def agent_text() -> str:
    return (files("cau.providers") / "assets" / "coordinator.ocf").read_text()


def primitive_xml(cluster: str, opts: CoordinatorRoleOptions) -> str:
    params = {
        "cluster": cluster,
        "config": opts.config,
        "data_dir": opts.data_dir,
        "binary": opts.binary,
        "poll": f"{opts.poll:g}",
    }
    pairs = "".join(
        f'<nvpair id="{ROLE_RESOURCE}-instance_attributes-{k}" name="{k}" value="{_attr(v)}"/>'
        for k, v in params.items()
    )
    return (
        f'<primitive id="{ROLE_RESOURCE}" class="ocf" provider="cau" type="coordinator">'
        f'<instance_attributes id="{ROLE_RESOURCE}-instance_attributes">{pairs}</instance_attributes>'
        f'<meta_attributes id="{ROLE_RESOURCE}-meta_attributes">'
        f'<nvpair id="{ROLE_RESOURCE}-meta_attributes-resource-stickiness" name="resource-stickiness"'
        ' value="INFINITY"/></meta_attributes>'
        "<operations>"
        f'<op id="{ROLE_RESOURCE}-monitor-10s" name="monitor" interval="10s" timeout="20s"/>'
        f'<op id="{ROLE_RESOURCE}-start-0" name="start" interval="0s" timeout="30s"/>'
        f'<op id="{ROLE_RESOURCE}-stop-0" name="stop" interval="0s" timeout="120s"/>'
        "</operations></primitive>"
    )


def ban_xml(node: str) -> str:
    return f'<rsc_location id="{HANDOVER_CONSTRAINT}" rsc="{ROLE_RESOURCE}" node="{node}" score="-INFINITY"/>'


def _attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def owner_in(status: ClusterStatus, *, started: bool = False) -> str | None:
    """The node Pacemaker runs the role on (None: nowhere, stopping, or failed). A start in
    progress counts (the agent's daemon asks while its start is not done), unless `started`."""
    res = status.resource(ROLE_RESOURCE)
    if res is None or res.failed or res.role == "Stopping":
        return None
    nodes = res.complete_on if started else res.nodes
    return nodes[0] if len(nodes) == 1 else None


def banned_node(config: ClusterConfig) -> str | None:
    return next((c.node for c in config.locations if c.id == HANDOVER_CONSTRAINT), None)


class PacemakerRoleHost:
    """HostsCoordinatorRole for PacemakerProvider (which delegates to it)."""

    def __init__(self, provider: PacemakerProvider, options: CoordinatorRoleOptions) -> None:
        self.p = provider
        self.opts = options

    async def owner(self) -> str | None:
        return owner_in(await self.p.read_status())

    async def add(self) -> str | None:
        """Install the agent on every node, add the primitive, wait until it runs; a role that
        does not start is removed again (nothing is left half-added) and its failure named."""
        await self._install_agent()
        if not await self._exists():
            xml = primitive_xml(self.p.cluster, self.opts)
            await self.p._checked(
                f"cibadmin --create --scope resources --xml-text {shlex.quote(xml)}",
                f"adding the {ROLE_RESOURCE} resource",
            )
        try:
            return await self._wait_started()
        except CauError:
            await self.remove()
            raise

    async def _exists(self) -> bool:
        result = await self.p._member_run(f"crm_resource --resource {ROLE_RESOURCE} --query-xml")
        return result.ok

    async def _install_agent(self) -> None:
        """The agent, the same file on every node (each node may have to run it)."""
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / "coordinator"
            local.write_text(agent_text())
            for entry in self.p.options.nodes:
                transport = self.p.transport(entry.name)
                await transport.put(local, AGENT_PATH, mode=0o755)

    async def _wait_started(self) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.opts.start_timeout
        while True:
            status = await self.p.read_status()
            owner = owner_in(status, started=True)
            if owner is not None:
                return owner
            failures = [f for f in status.failures if f.resource == ROLE_RESOURCE]
            if failures or loop.time() >= deadline:
                said = "; ".join(
                    f"{f.task} on {f.node}: {f.exit_status} {f.exit_reason}".strip() for f in failures
                )
                raise MaintenanceError(
                    f"the coordinator role ({AGENT}) did not start on any node of '{self.p.cluster}'"
                    + (f": {said}" if said else f" within {self.opts.start_timeout:g}s"),
                    hint=f"see {self.opts.config} and /var/log/cau/coordinator.log on the nodes; "
                    "`cau role add` checks that cau runs on every node first",
                )
            await asyncio.sleep(self.p.pcmk.poll_interval)

    async def remove(self) -> None:
        """Stop the role, delete it and its ban, remove the agent from the nodes."""
        if await self._exists():
            await self.p._checked(
                f"crm_resource --resource {ROLE_RESOURCE} --meta --set-parameter target-role"
                " --parameter-value Stopped",
                f"stopping {ROLE_RESOURCE}",
            )

            def running(status: ClusterStatus) -> list[str]:
                res = status.resource(ROLE_RESOURCE)
                return list(res.present_on) if res is not None else []

            left, _ = await self.p._poll(self.opts.start_timeout, running)
            if left:
                raise MaintenanceError(
                    f"{ROLE_RESOURCE} did not stop on {', '.join(left)}",
                    hint="`crm_mon -1` shows why; `cau role remove` again once it stopped",
                )
            xml = f'<primitive id="{ROLE_RESOURCE}"/>'
            await self.p._checked(
                f"cibadmin --delete --scope resources --xml-text {shlex.quote(xml)}",
                f"deleting {ROLE_RESOURCE}",
            )
            await self.p._member_run(f"crm_resource --cleanup --resource {ROLE_RESOURCE}")
        await self.p._delete_constraint(HANDOVER_CONSTRAINT)
        for entry in self.p.options.nodes:
            # a node that is down keeps an unused agent file: harmless
            with contextlib.suppress(CauError):
                await self.p.transport(entry.name).run(
                    f"rm -f {AGENT_PATH}; rmdir {_AGENT_DIR} 2>/dev/null; true", timeout=30
                )

    def node_command(self, *args: str) -> str:
        """A cau command as the agent runs it on a node (its binary, config and data dir)."""
        o = self.opts
        base = [o.binary, "--config", o.config, "--data-dir", o.data_dir, *args]
        return " ".join(shlex.quote(a) for a in base)

    async def node_problems(self) -> list[str]:
        """Every node's cau, as the agent would run it, knows the cluster and reaches its store:
        `cau status CLUSTER` there (the daemon fails at its first look otherwise)."""
        command = self.node_command("status", self.p.cluster, "--output", "json")
        problems: list[str] = []
        for entry in self.p.options.nodes:
            try:
                ran = await self.p.transport(entry.name).run(command, timeout=60)
            except CauError as exc:
                problems.append(f"{entry.name}: {exc}")
                continue
            if not ran.ok:
                problems.append(
                    f"{entry.name}: `{command}` failed (exit {ran.exit_status}):"
                    f" {tail(ran.stderr or ran.stdout, 200)}"
                )
        return problems

    async def move(self, away_from: str) -> str | None:
        """Ban the role from `away_from` (one ban, moved here from any earlier node). Pacemaker
        then stops the agent here, which ends this coordinator: so nothing is waited for."""
        xml = ban_xml(away_from)
        await self.p._checked(
            f"cibadmin --modify --allow-create --scope constraints --xml-text {shlex.quote(xml)}",
            f"moving the coordinator role off {away_from}",
        )
        return None

    async def release(self, node: str, config: ClusterConfig | None = None) -> None:
        """`node` left maintenance: its hand-over ban, if it has one, is not needed any more."""
        config = config or await self.p.read_config()
        if banned_node(config) == node:
            await self.p._delete_constraint(HANDOVER_CONSTRAINT)
