"""The `pacemaker` provider: a Pacemaker/Corosync failover cluster, reached over SSH.

    [clusters.ha]
    provider = "pacemaker"
    plugins = ["apt"]
    [clusters.ha.options]                 # the ssh provider's options (nodes, user, identity,
    user = "root"                         # known_hosts, boot_id_command, reboot_command, ...)
    known_hosts = "~/.ssh/known_hosts"
    drain_timeout = "5m"                  # how long a standby may take to move everything off
    failback_timeout = "5m"               # how long resources may take to come back
    [clusters.ha.options.role]            # self-updating mode: how the agent runs cau there
    config = "/etc/cau/cau.toml"          # (cau.providers.pacemaker_role)
    poll = 5
    [[clusters.ha.options.nodes]]
    name = "ha1"                          # the node's name in Pacemaker (crm_node -n)
    host = "10.0.0.11"

Maintenance is Pacemaker's own: a node enters it by `standby` (Pacemaker moves its resources:
live migration where a resource allows it, a stop-and-start elsewhere otherwise) and leaves it
by removing the standby attribute. With `move = "save"` nothing migrates: the node's resources
are stopped in place (target-role=Stopped) and started again on that node after its restart.

Everything cau changes in the CIB can be found again by looking, so a coordinator that crashed
is undone by the next one: the standby attribute (its prior value is journaled before it is
set), location constraints whose id starts with `cau-`, and the `cau-saved-on` meta attribute
on the resources it stopped (their prior target-role is journaled too).

Self-updating mode: the coordinator is the resource `cau-coordinator` of cau's own agent
ocf:cau:coordinator (cau.providers.pacemaker_role); it is no workload here (never drained or
failed back by cau), and its hand-over ban `cau-coordinator-away` goes when its node leaves
maintenance.

The cluster CLIs (crm_mon, cibadmin, crm_attribute, crm_resource) run on a member node, over the
same verified SSH connections as the updates (or `ProviderContext.transports`, as for the ssh
provider): they talk to the local Pacemaker daemons.
"""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from cau.domain.cluster import ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.durations import Duration
from cau.domain.profile import FailbackMode, MoveMethod, RunProfile
from cau.errors import AuthError, CauError, HostKeyError, MaintenanceError, NodeUnreachable, ProviderError
from cau.ports import CommandResult, MaintenancePrior, ProviderContext, TransportFactory
from cau.providers.corosync_quorum import Votequorum, parse_quorumtool
from cau.providers.pacemaker_role import (
    HANDOVER_CONSTRAINT,
    ROLE_RESOURCE,
    CoordinatorRoleOptions,
    PacemakerRoleHost,
)
from cau.providers.pacemaker_state import (
    CAU_CONSTRAINT_PREFIX,
    ClusterConfig,
    ClusterStatus,
    PcmkResource,
    drain_stops,
    health_problems,
    parse_cib,
    parse_crm_mon,
    parse_simulation,
)
from cau.providers.ssh import MaintenanceHooks, SshOptions, SshProvider
from cau.redact import tail

SAVED_META = "cau-saved-on"  # meta attribute: "cau stopped this resource on that node"
_SPLIT = "@@cau-split@@"
_CRM_MON = "crm_mon --output-as=xml --inactive"
_CIB = "cibadmin --query --scope configuration"
# exits non-zero when the partition is not quorate: the output is read either way
_QUORUM = "corosync-quorumtool -s"
# XML ids (what Pacemaker accepts as resource and node names) never need shell quoting, but they
# are checked anyway before going into a command line.
_XML_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]*")
# Outputs of a cluster CLI that mean "this node is not a running member now; ask another".
_NOT_A_MEMBER = (
    "connection refused",
    "could not connect",
    "not connected",
    "transport endpoint is not connected",
    "no such file or directory",
    "error: connection to cluster failed",
    "could not establish",
)


class PacemakerOptions(SshOptions):
    # self-updating mode: how the coordinator role's agent runs cau on the nodes
    role: CoordinatorRoleOptions = CoordinatorRoleOptions()
    drain_timeout: Duration = timedelta(minutes=5)
    failback_timeout: Duration = timedelta(minutes=5)
    # crm_mon, read over SSH while cau waits for a drain, a rejoin, clones or a failback: about
    # 15 ms of a member's CPU each time (measured on the lab), so 0.1 s costs little and ends
    # each wait sooner
    poll_interval: float = Field(0.1, gt=0, le=10)

    @model_validator(mode="after")
    def _no_hooks(self) -> PacemakerOptions:
        if self.maintenance != MaintenanceHooks():
            raise ValueError(
                "the pacemaker provider puts nodes in maintenance through Pacemaker standby; "
                "remove the 'maintenance' hooks (they are for the ssh provider)"
            )
        return self


def _xml_id(value: str, what: str) -> str:
    if not _XML_ID.fullmatch(value):
        raise ProviderError(f"unexpected {what} {value!r} from Pacemaker")
    return value


def _roles_on(status: ClusterStatus, node: str) -> list[PcmkResource]:
    """The movable roles (primitives and groups, not clones) active on `node`; not cau's own
    coordinator role, which Pacemaker moves by itself (cau.providers.pacemaker_role)."""
    return [
        r
        for r in status.resources
        if r.kind in ("primitive", "group") and node in r.present_on and r.id != ROLE_RESOURCE
    ]


def roles_from(status: ClusterStatus, config: ClusterConfig) -> tuple[Role, ...]:
    """cau's roles: each top-level resource. A primitive that allows migration is live, other
    primitives and groups fail over, clones and bundles run on several nodes."""
    roles = []
    for res in status.resources:
        if res.id == ROLE_RESOURCE:
            continue  # cau's own coordinator: not a workload, moved by its hand-over
        preferred = config.preferred_nodes(res.id)
        if res.kind in ("clone", "bundle"):
            roles.append(
                Role(
                    res.id,
                    RoleKind.CLONE,
                    instances=res.nodes,
                    preferred_owners=preferred,
                    expected_instances=_clone_max(config, res.id, len(status.nodes)),
                )
            )
        else:
            kind = RoleKind.LIVE if config.allows_migration(res.id) else RoleKind.FAILOVER
            owner = res.nodes[0] if res.nodes else None
            roles.append(Role(res.id, kind, owner=owner, preferred_owners=preferred))
    return tuple(roles)


def _clone_max(config: ClusterConfig, rid: str, nodes: int) -> int | None:
    """How many instances a clone should run: its `clone-max`, by default one per node of the
    cluster (Pacemaker's default); None for a bundle or a value that is not a number."""
    if config.kinds.get(rid) != "clone":
        return None
    value = config.meta.get(rid, {}).get("clone-max")
    if value is None:
        return nodes
    try:
        return int(value)
    except ValueError:
        return None


def node_labels(config: ClusterConfig, node: str, configured: Mapping[str, str]) -> dict[str, str]:
    """A node's labels: its Pacemaker node attributes (`crm_attribute --node N --name rack
    --update r1`), with the cluster configuration's labels over them."""
    return {**config.node_attributes.get(node, {}), **configured}


class PacemakerProvider(SshProvider):
    name: ClassVar[str] = "pacemaker"
    Options: ClassVar[type[BaseModel]] = PacemakerOptions
    default_plugins: tuple[str, ...] = ("apt",)
    # Pacemaker is the resource manager that keeps the coordinator role (the resource agent
    # ocf:cau:coordinator, cau.providers.pacemaker_role): the store does not elect one here.
    coordinator_election: ClassVar[bool] = False

    def __init__(
        self, cluster: str, options: PacemakerOptions, *, transports: TransportFactory | None = None
    ) -> None:
        super().__init__(cluster, options, transports=transports)
        self.pcmk = options
        self._control: str | None = None  # the member that last answered a cluster command
        self._role = PacemakerRoleHost(self, options.role)

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> PacemakerProvider:
        assert isinstance(options, PacemakerOptions)
        return cls(ctx.cluster, options, transports=ctx.transports)

    # --- cluster commands ------------------------------------------------------------------------

    def _candidates(self, avoid: str | None) -> list[str]:
        names = [n.name for n in self.options.nodes]
        order = ([self._control] if self._control in names else []) + names
        seen: list[str] = []
        for name in order:
            if name not in seen and name != avoid:
                seen.append(name)
        if avoid in names:
            seen.append(avoid)  # the node itself only when no other member answers
        return seen

    async def _member_run(
        self, command: str, *, avoid: str | None = None, timeout: float = 60
    ) -> CommandResult:
        """Run a cluster CLI command on a member that answers. A node that is down, or whose
        Pacemaker is not running, is skipped; a command that fails on a running member is
        returned as it is (the caller decides)."""
        tried: list[str] = []
        refusals: list[CauError] = []
        for name in self._candidates(avoid):
            try:
                result = await self.transport(name).run(command, timeout=timeout)
            except NodeUnreachable as exc:
                tried.append(f"{name}: {exc}")
                continue
            except (HostKeyError, AuthError) as exc:
                # Another member can answer for the cluster; this one is not connected to at
                # all (its key changed: maybe impersonated). Its own turn will fail it, named.
                tried.append(f"{name}: {exc}")
                refusals.append(exc)
                continue
            err = (result.stderr + result.stdout[:200]).lower() if not result.ok else ""
            if not result.ok and any(marker in err for marker in _NOT_A_MEMBER):
                tried.append(f"{name}: {tail(result.stderr or result.stdout, 200)}")
                continue
            self._control = name
            return result
        if refusals and len(refusals) == len(tried):
            raise refusals[0]  # every member refuses cau: the refusal, with its remedy
        raise ProviderError(
            f"no node of '{self.cluster}' answers as a running Pacemaker member ({'; '.join(tried)})",
            hint="check that corosync and pacemaker run on the nodes (crm_mon -1)",
        )

    async def _checked(self, command: str, what: str, *, avoid: str | None = None) -> str:
        result = await self._member_run(command, avoid=avoid)
        if not result.ok:
            raise MaintenanceError(
                f"{what} failed (exit {result.exit_status}): {tail(result.stderr or result.stdout, 300)}"
            )
        return result.stdout

    async def read_status(self, *, avoid: str | None = None) -> ClusterStatus:
        result = await self._member_run(_CRM_MON, avoid=avoid)
        if not result.ok and "<pacemaker-result" not in result.stdout:
            raise ProviderError(f"crm_mon failed (exit {result.exit_status}): {tail(result.stderr, 300)}")
        return parse_crm_mon(result.stdout)

    async def read_config(self, *, avoid: str | None = None) -> ClusterConfig:
        return parse_cib(await self._checked(_CIB, "reading the CIB", avoid=avoid))

    async def read(self, *, avoid: str | None = None) -> tuple[ClusterStatus, ClusterConfig]:
        """Status and configuration in one round trip."""
        out = await self._checked(f"{_CRM_MON}; echo {_SPLIT}; {_CIB}", "reading the cluster", avoid=avoid)
        mon, _, cib = out.partition(_SPLIT)
        return parse_crm_mon(mon), parse_cib(cib)

    async def read_quorum(self, *, avoid: str | None = None) -> Votequorum:
        """Corosync's votequorum: what quorum needs, each member's votes, a quorum device's."""
        result = await self._member_run(_QUORUM, avoid=avoid)
        try:
            return parse_quorumtool(result.stdout)
        except ProviderError as exc:
            raise ProviderError(f"{exc} (exit {result.exit_status}: {tail(result.stderr, 200)})") from exc

    async def _quorum_or_none(self) -> Votequorum | None:
        # Discovery goes on without it (quorum is then a majority of the configured votes);
        # preflight refuses a run that cannot read it.
        try:
            return await self.read_quorum()
        except ProviderError:
            return None

    # --- observation -----------------------------------------------------------------------------

    async def discover(self) -> ClusterSnapshot:
        boots, (status, config), quorum = await asyncio.gather(
            asyncio.gather(*(self.boot_id(n.name) for n in self.options.nodes)),
            self.read(),
            self._quorum_or_none(),
        )
        nodes = []
        for entry, boot in zip(self.options.nodes, boots, strict=True):
            member = status.node(entry.name)
            up = boot is not None and member is not None and member.online and not member.pending
            votes = entry.votes
            if quorum is not None and member is not None and member.id.isdigit():
                # a member's votes as Corosync counts them now (quorum_votes, or changed with -v)
                votes = quorum.member_votes.get(int(member.id), votes)
            nodes.append(
                Node(
                    name=entry.name,
                    state=NodeState.UP if up else NodeState.DOWN,
                    in_maintenance=bool(member and (member.standby or member.maintenance)),
                    votes=votes,
                    boot_id=boot,
                    failure_domain=entry.failure_domain,
                    leader=bool(member and member.is_dc),
                    labels=node_labels(config, entry.name, entry.labels),
                )
            )
        return ClusterSnapshot(
            self.cluster,
            tuple(nodes),
            roles_from(status, config),
            min_online=self.options.min_online,
            vote_quorum=quorum.rule() if quorum is not None and self.options.min_online is None else None,
        )

    async def health_problems(self) -> list[str]:
        return health_problems(await self.read_status())

    async def preflight(
        self, profile: RunProfile | None = None, *, coordinator_node: str | None = None
    ) -> list[str]:
        problems = await super().preflight(profile, coordinator_node=coordinator_node)
        try:
            status, config = await self.read()
        except ProviderError as exc:
            return [*problems, str(exc)]
        if self.options.min_online is None:
            try:
                await self.read_quorum()
            except ProviderError as exc:
                problems.append(
                    f"cannot read Corosync's quorum ({exc}): cau will not take nodes down without "
                    "knowing how many votes the cluster needs (or set min_online for this cluster)"
                )
        configured = {n.name for n in self.options.nodes}
        members = {n.name for n in status.nodes}
        if members - configured:
            problems.append(
                f"Pacemaker node(s) {', '.join(sorted(members - configured))} are not in the cluster "
                "configuration: list every member (with its address) so quorum is counted right"
            )
        if configured - members:
            problems.append(
                f"node(s) {', '.join(sorted(configured - members))} of the configuration are not "
                f"Pacemaker members of '{self.cluster}'"
            )
        if profile is None or not profile.allow_unhealthy_cluster:
            unhealthy = health_problems(status)
            if unhealthy:
                problems.append(
                    "the cluster is not healthy: "
                    + "; ".join(unhealthy)
                    + " (fix it, e.g. `crm_resource --cleanup`, or allow it with --allow-unhealthy-cluster)"
                )
        for rid, node in sorted(self._saved_on(config).items()):
            problems.append(
                f"{rid} was stopped on {node} by an earlier run (move = save) and not started again: "
                f"`cau cleanup {self.cluster}` starts it"
            )
        # the coordinator role's hand-over ban belongs to the role's run in progress
        constraints = [c.id for c in config.cau_constraints() if c.id != HANDOVER_CONSTRAINT]
        if constraints:
            problems.append(
                "location constraints left by an earlier cau run: "
                + ", ".join(constraints)
                + f" (`cau cleanup {self.cluster}` removes them)"
            )
        return problems

    # --- maintenance -----------------------------------------------------------------------------

    async def maintenance_prior(self, node: str) -> MaintenancePrior:
        status, config = await self.read()
        member = status.node(node)
        if member is None:
            raise MaintenanceError(f"{node} is not a member of the Pacemaker cluster '{self.cluster}'")
        owned = _roles_on(status, node)
        attrs = config.node_attributes.get(node, {})
        return MaintenancePrior(
            node=node,
            was_in_maintenance=member.standby or member.maintenance,
            role_owners={r.id: node for r in owned},
            extra={
                "standby": attrs.get("standby"),  # None: the attribute was not set
                "pacemaker_maintenance": member.maintenance,
                "target_roles": {r.id: config.target_role(r.id) for r in owned},
                # clone instances it ran: back on it before the next node's drain takes another
                "clones": [
                    r.id for r in status.resources if r.kind in ("clone", "bundle") and node in r.nodes
                ],
            },
        )

    async def drain_problems(self, node: str, move: MoveMethod) -> list[str]:
        """Pacemaker's scheduler asked on a copy of the CIB with `node` in standby (and, for
        move = save, its resources stopped): every resource that would stop rather than move,
        with the constraints that hold it. Nothing in the cluster changes."""
        node = _xml_id(node, "node name")
        status, config = await self.read()
        saved = (
            [_xml_id(r.id, "resource id") for r in _roles_on(status, node)] if move is MoveMethod.SAVE else []
        )
        stop_saved = "".join(
            f'CIB_file="$f" crm_resource --resource {rid} --meta --set-parameter target-role '
            "--parameter-value Stopped >/dev/null && "
            for rid in saved
        )
        script = (
            'f=$(mktemp /tmp/cau-simulate.XXXXXX) && cibadmin --query > "$f" && '
            f'CIB_file="$f" crm_attribute --node {node} --name standby --update on >/dev/null && '
            f'{stop_saved}crm_simulate --xml-file "$f" --run --output-as=xml; rc=$?; rm -f "$f"; exit $rc'
        )
        result = await self._member_run(script)
        if not result.ok:
            raise ProviderError(
                f"crm_simulate failed (exit {result.exit_status}): "
                f"{tail(result.stderr or result.stdout, 300)}"
            )
        return drain_stops(parse_simulation(result.stdout), status, config, node, saved=saved)

    async def enter_maintenance(self, node: str, move: MoveMethod, prior: MaintenancePrior) -> None:
        node = _xml_id(node, "node name")
        status = await self.read_status()
        if move is MoveMethod.SAVE:
            config = await self.read_config()
            for res in _roles_on(status, node):
                rid = _xml_id(res.id, "resource id")
                if config.meta.get(rid, {}).get(SAVED_META) != node:
                    # Marked first: a crash between the two commands still leaves a trace.
                    await self._set_meta(rid, SAVED_META, node)
                await self._set_meta(rid, "target-role", "Stopped")
        # What ran on the node before cau touched it must run elsewhere now: also on a retry, when
        # an earlier attempt's standby has already stopped it (gone from the node, but not moved).
        moving = sorted({*prior.role_owners, *(r.id for r in _roles_on(status, node))})
        await self._checked(
            f"crm_attribute --node {node} --name standby --update on", f"putting {node} in standby"
        )
        await self._wait_drained(node, moving, save=move is MoveMethod.SAVE)

    async def _poll(
        self, timeout: float, pending: Callable[[ClusterStatus], list[str]]
    ) -> tuple[list[str], ClusterStatus]:
        """Read crm_mon every poll_interval until `pending` (what is not there yet) is empty or
        `timeout` seconds pass; the last answer. Watching the state directly, not
        `crm_resource --wait`, which sleeps 2 s before it first looks."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            status = await self.read_status()
            left = pending(status)
            if not left or loop.time() >= deadline:
                return left, status
            await asyncio.sleep(self.pcmk.poll_interval)

    async def _wait_drained(self, node: str, moving: list[str], *, save: bool) -> None:
        timeout = self.pcmk.drain_timeout.total_seconds()

        def down(status: ClusterStatus) -> list[str]:
            return [] if save else [rid for rid in moving if self._is_down(status, rid)]

        left, status = await self._poll(timeout, lambda s: s.active_on(node) + down(s))
        if left:
            raise MaintenanceError(
                self._stuck_message(status, node, status.active_on(node), down(status), timeout)
            )

    @staticmethod
    def _is_down(status: ClusterStatus, rid: str) -> bool:
        res = status.resource(rid)
        return res is not None and not res.complete_on  # a group half started elsewhere is down

    @staticmethod
    def _stuck_message(
        status: ClusterStatus, node: str, still: list[str], down: list[str], timeout: float
    ) -> str:
        parts = []
        if still:
            parts.append(f"{', '.join(still)} would not move off {node}")
        if down:
            parts.append(f"{', '.join(down)} did not start on another node")
        detail = PacemakerProvider._failures_for(status, [*still, *down])
        return f"{'; '.join(parts)} within {timeout:g}s{detail}"

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        node = _xml_id(node, "node name")
        if not prior.was_in_maintenance:
            before = prior.extra.get("standby")
            if before is None:
                command = f"crm_attribute --node {node} --name standby --delete"
            else:
                command = f"crm_attribute --node {node} --name standby --update {shlex.quote(str(before))}"
            await self._checked(command, f"taking {node} out of standby")
            # Its clone instances start again now; `failback` (which always follows) waits for
            # them while its roles move back, instead of one after the other.
        config = await self.read_config()
        await self._restore_saved(node, prior, config)
        await self._role.release(node, config)  # its coordinator hand-over ban, if it had one

    # --- the clustered coordinator role (self-updating mode) -----------------------------------

    async def coordinator_role_owner(self) -> str | None:
        return await self._role.owner()

    async def add_coordinator_role(self) -> str | None:
        return await self._role.add()

    async def remove_coordinator_role(self) -> None:
        await self._role.remove()

    async def move_coordinator_role(self, away_from: str) -> str | None:
        return await self._role.move(_xml_id(away_from, "node name"))

    async def coordinator_node_problems(self) -> list[str]:
        return await self._role.node_problems()

    async def _restore_saved(self, node: str, prior: MaintenancePrior, config: ClusterConfig) -> None:
        """Start again, on `node`, the resources cau stopped there (move = save), as `config`
        (read after `node` left standby) marks them."""
        saved = [rid for rid, meta in config.meta.items() if meta.get(SAVED_META) == node]
        if not saved:
            return
        before: dict[str, Any] = dict(prior.extra.get("target_roles", {}))
        for rid in saved:
            await self._prefer(rid, node)
        try:
            for rid in saved:
                role = before.get(rid)
                if role is None or role == "Stopped":
                    await self._delete_meta(rid, "target-role")
                else:
                    await self._set_meta(rid, "target-role", str(role))
            await self._wait_on(node, saved, what="start again")
            for rid in saved:
                await self._delete_meta(rid, SAVED_META)
        finally:
            await self._unprefer(saved, node)

    async def failback(self, node: str, prior: MaintenancePrior, mode: FailbackMode) -> list[str]:
        node = _xml_id(node, "node name")
        # A crash in an earlier failback may have left its constraints: never leave them.
        status, config = await self.read()  # one round trip for both
        await self._unprefer(None, node, config)
        # The clone instances it ran before cau are back on it before the node counts as back
        # (whatever the mode): the next node's drain must not take another instance meanwhile.
        clones = [] if prior.was_in_maintenance else [str(c) for c in prior.extra.get("clones", [])]
        back: list[str] = []
        if mode is FailbackMode.IMMEDIATE and not prior.was_in_maintenance:
            back = [
                rid
                for rid in prior.role_owners
                if (res := status.resource(rid)) is not None
                and res.present_on
                and node not in res.complete_on
            ]
        try:
            for rid in back:
                await self._prefer(rid, node)
            waits = [self._wait_on(node, back, what="fail back")] if back else []
            if clones:
                waits.append(self._wait_on(node, clones, what="start again"))
            # the moves and the clones at once; each one that did not make it is named
            ended = await asyncio.gather(*waits, return_exceptions=True)
            errors = [e for e in ended if isinstance(e, BaseException)]
            if errors:
                if all(isinstance(e, MaintenanceError) for e in errors):
                    raise MaintenanceError("; ".join(str(e) for e in errors))
                raise next(e for e in errors if not isinstance(e, MaintenanceError))
        finally:
            if back:
                await self._unprefer(back, node)
        return back

    async def _wait_on(self, node: str, rids: list[str], *, what: str) -> None:
        timeout = self.pcmk.failback_timeout.total_seconds()
        # Back on `node`, and (after a live migration) stopped where it came from: the move is
        # over, not only half-way.
        missing, status = await self._poll(
            timeout,
            lambda s: [
                rid
                for rid in rids
                if (r := s.resource(rid)) is None
                or node not in r.complete_on
                or any(other != node for other in s.left_behind_on(rid))
            ],
        )
        if missing:
            raise MaintenanceError(
                f"{', '.join(missing)} did not {what} on {node} within {timeout:g}s"
                + self._failures_for(status, missing)
            )

    @staticmethod
    def _failures_for(status: ClusterStatus, rids: Iterable[str]) -> str:
        wanted = set(rids)
        for rid in list(wanted):  # failed actions name primitives: a group's or clone's members
            res = status.resource(rid)
            wanted.update(res.members if res is not None else ())
        lines = [
            f"{f.resource} on {f.node}: {f.task} {f.exit_reason or f.exit_status}"
            for f in status.failures
            if f.resource in wanted
        ]
        return f" (failed actions: {'; '.join(lines)})" if lines else ""

    # --- leftovers, found by looking ------------------------------------------------------------

    @staticmethod
    def _saved_on(config: ClusterConfig) -> dict[str, str]:
        return {rid: meta[SAVED_META] for rid, meta in config.meta.items() if SAVED_META in meta}

    async def leftovers(self, node: str | None = None) -> list[str]:
        config = await self.read_config()
        found = [
            f"location constraint {c.describe()}"
            for c in config.cau_constraints()
            if node is None or c.node == node
        ]
        found += [
            f"{rid} stopped on {on} by cau (move = save; meta attribute {SAVED_META})"
            for rid, on in sorted(self._saved_on(config).items())
            if node is None or on == node
        ]
        return found

    async def clean_up(self, node: str | None = None) -> tuple[list[str], list[str]]:
        """Removes cau's location constraints, and starts again on their node the resources cau
        stopped there (move = save) once that node is online and out of standby."""
        status, config = await self.read()
        done: list[str] = []
        waiting: list[str] = []
        for c in config.cau_constraints():
            if node is not None and c.node != node:
                continue
            await self._delete_constraint(c.id)
            done.append(f"removed location constraint {c.describe()}")
        by_node: dict[str, list[str]] = {}
        for rid, on in sorted(self._saved_on(config).items()):
            if node is None or on == node:
                by_node.setdefault(on, []).append(rid)
        for on, rids in by_node.items():
            member = status.node(on)
            if member is None or not member.online or member.standby or member.maintenance:
                state = (
                    "not a member" if member is None else ("offline" if not member.online else "in standby")
                )
                waiting.append(
                    f"{', '.join(rids)} stay stopped: {on} is {state}; run this again once it is back"
                )
                continue
            # the prior target-role is in the journal only: without it, the resource's default
            await self._restore_saved(
                _xml_id(on, "node name"), MaintenancePrior(on, was_in_maintenance=False), config
            )
            done.append(f"started {', '.join(rids)} again on {on}")
        return done, waiting

    # --- CIB edits ---------------------------------------------------------------------------------

    async def _set_meta(self, rid: str, name: str, value: str) -> None:
        rid = _xml_id(rid, "resource id")
        await self._checked(
            f"crm_resource --resource {rid} --meta --set-parameter {shlex.quote(name)} "
            f"--parameter-value {shlex.quote(value)}",
            f"setting {name} of {rid}",
        )

    async def _delete_meta(self, rid: str, name: str) -> None:
        rid = _xml_id(rid, "resource id")
        result = await self._member_run(
            f"crm_resource --resource {rid} --meta --delete-parameter {shlex.quote(name)}"
        )
        # "not found" is what we want anyway
        if not result.ok and "not found" not in (result.stderr + result.stdout).lower():
            raise MaintenanceError(
                f"removing {name} of {rid} failed (exit {result.exit_status}): {tail(result.stderr, 300)}"
            )

    @staticmethod
    def _constraint_id(rid: str, node: str) -> str:
        return f"{CAU_CONSTRAINT_PREFIX}prefer-{rid}-on-{node}"

    async def _prefer(self, rid: str, node: str) -> None:
        cid = self._constraint_id(_xml_id(rid, "resource id"), node)
        xml = f'<rsc_location id="{cid}" rsc="{rid}" node="{node}" score="INFINITY"/>'
        # --modify --allow-create: idempotent (a retried step finds it there already)
        await self._checked(
            f"cibadmin --modify --allow-create --scope constraints --xml-text {shlex.quote(xml)}",
            f"adding {cid}",
        )

    async def _unprefer(self, rids: list[str] | None, node: str, config: ClusterConfig | None = None) -> None:
        """Remove cau's constraints for `node` (all of them, as `config` or a fresh read shows
        them, when `rids` is None)."""
        if rids is None:
            config = config or await self.read_config()
            ids = [
                c.id
                for c in config.cau_constraints()
                if c.node == node and c.id == self._constraint_id(c.resource, node)
            ]
        else:
            ids = [self._constraint_id(rid, node) for rid in rids]
        for cid in ids:
            await self._delete_constraint(cid)

    async def _delete_constraint(self, cid: str) -> None:
        xml = f'<rsc_location id="{_xml_id(cid, "constraint id")}"/>'
        result = await self._member_run(
            f"cibadmin --delete --scope constraints --xml-text {shlex.quote(xml)}"
        )
        if not result.ok and "no such" not in (result.stderr + result.stdout).lower():
            raise MaintenanceError(
                f"removing constraint {cid} failed (exit {result.exit_status}): {tail(result.stderr, 300)}"
            )

    # --- restarts --------------------------------------------------------------------------------

    async def wait_ready(self, node: str, *, previous_boot_id: str | None, timeout: float) -> str:
        """Back means: a new boot id over SSH, then online again in Pacemaker."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        boot = await super().wait_ready(node, previous_boot_id=previous_boot_id, timeout=timeout)
        last = "not yet a member"
        while True:
            try:
                status = await self.read_status()
                member = status.node(node)
                if member is not None and member.online and not member.pending:
                    return boot
                last = "offline in Pacemaker" if member is not None else "not listed by crm_mon"
            except ProviderError as exc:
                last = str(exc)
            if loop.time() >= deadline:
                raise NodeUnreachable(
                    f"{node} restarted (new boot id) but did not rejoin the Pacemaker cluster "
                    f"within {timeout:g}s ({last})"
                )
            await asyncio.sleep(self.pcmk.poll_interval)
