"""The `libvirt` provider: a pool of libvirt/QEMU hypervisor hosts, reached over SSH, whose
virtual machines (libvirt domains) are the roles. VMM's host cluster remediation on Linux.

    [clusters.vmhosts]
    provider = "libvirt"
    plugins = ["apt"]
    [clusters.vmhosts.options]             # the ssh provider's options (nodes, user, identity,
    known_hosts = "~/.ssh/known_hosts"     # known_hosts, boot_id_command, reboot_command, ...)
    uri = "qemu:///system"                 # libvirt on each host, as virsh reaches it there
    migrate_uri = "qemu+ssh://{address}/system"   # the destination, seen from the source host
    migrate_data_uri = "tcp://{address}"   # where the migration stream goes (optional)
    guest_memory_mib = 65536               # memory each host offers guests (default: its RAM
                                           # minus reserved_memory_mib)
    unmovable = "fail"                     # or "save": a guest with nowhere to go is saved
    shared_storage = ["/srv/vms"]          # disks under these paths need no copy
    [clusters.vmhosts.options.preferred_owners]
    db1 = ["hv1", "hv2"]                   # or in the domain's XML (cau.providers.libvirt_state)
    [[clusters.vmhosts.options.nodes]]
    name = "hv1"
    host = "10.0.0.11"

**Maintenance is evacuation.** libvirt has no maintenance state, so cau marks a host in
maintenance with a file on the host's own disk (`/var/lib/cau/libvirt/maintenance`: it outlives
the restart) and places no guest there while it is marked. `move = "live"` live-migrates every
running domain to a host with room (memory and vCPUs, counted from what runs there), the
definition with it (`--persistent --undefinesource`); `move = "save"` saves each domain's state on
its host (`virsh managedsave`, VMM's "save state"), marked first (`saved-<domain>` beside the
maintenance mark), and starts it again from that state when the host leaves maintenance.

Before anything moves, the whole evacuation is planned: a domain that cannot go anywhere (no host
with room, a host device, a local disk without `copy_storage`) fails the drain by name, or is
saved in place with `unmovable = "save"`. A target's room is read again right before each
migration, so nothing lands on a host that filled up meanwhile.

Everything cau changes is found again by looking (`cau cleanup`, a resumed run): the marks, and a
domain left paused by a migration that broke off.
"""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Mapping
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.durations import Duration
from cau.domain.profile import FailbackMode, MoveMethod, RunProfile
from cau.errors import CommandTimeout, MaintenanceError, NodeUnreachable, ProviderError
from cau.journal.events import RoleMove
from cau.ports import Clock, CommandResult, MaintenancePrior, ProviderContext, TransportFactory
from cau.providers.libvirt_state import (
    MAINTENANCE_MARK,
    MARK_DIR,
    PATH_TIMEOUT_SECONDS,
    SAVED_PREFIX,
    DomainInfo,
    HostState,
    StorageView,
    disk_directory,
    domain_name,
    parse_host,
    parse_jobinfo,
    parse_paths,
    parse_storage,
    paths_script,
    read_script,
    storage_script,
)
from cau.providers.ssh import MaintenanceHooks, SshOptions, SshProvider
from cau.redact import redact, tail


class LibvirtOptions(SshOptions):
    uri: str = "qemu:///system"
    # the destination's libvirt as the source host reaches it; {address} is the node's `host`,
    # {node} its name
    migrate_uri: str = "qemu+ssh://{address}/system"
    migrate_data_uri: str | None = None
    # memory each host offers guests, in MiB (one figure, or per node); default: the host's RAM
    # as libvirt reports it, less reserved_memory_mib
    guest_memory_mib: int | dict[str, int] | None = None
    reserved_memory_mib: int = Field(1024, ge=0)
    # vCPUs a host may run per CPU it has
    vcpu_ratio: float = Field(8.0, gt=0)
    # a guest that cannot live-migrate anywhere: fail the drain (naming it) or save its state
    unmovable: Literal["fail", "save"] = "fail"
    shared_storage: list[str] = Field(default_factory=list)
    copy_storage: bool = False  # migrate local disks too (--copy-storage-all)
    # The longest the guest may be paused at the end of a live migration (QEMU's downtime-limit,
    # 300 ms by default), set before each migration: a connection attempt that reaches the guest
    # while it is paused is lost and waits for TCP's 1 s SYN retransmit, so every such instant
    # costs clients a second.
    max_downtime_ms: int | None = Field(None, ge=1)
    # more `virsh migrate` options (e.g. "--auto-converge", "--compressed", "--postcopy",
    # "--postcopy-after-precopy"), passed as they are
    migrate_options: list[str] = Field(default_factory=list)
    preferred_owners: dict[str, list[str]] = Field(default_factory=dict)
    migrate_timeout: Duration = timedelta(minutes=10)
    save_timeout: Duration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _libvirt_checks(self) -> LibvirtOptions:
        if self.maintenance != MaintenanceHooks():
            raise ValueError(
                "the libvirt provider puts hosts in maintenance itself (it evacuates their guests); "
                "remove the 'maintenance' hooks (they are for the ssh provider)"
            )
        for template in (self.migrate_uri, self.migrate_data_uri or ""):
            try:
                template.format(address="a", node="n")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"migrate URI template {template!r}: only {{address}} and {{node}} may be used ({exc})"
                ) from exc
        bad = [o for o in self.migrate_options if not o.startswith("--")]
        if bad:
            raise ValueError(f"migrate_options are `virsh migrate` options (--name[=value]), not {bad}")
        names = {n.name for n in self.nodes}
        if isinstance(self.guest_memory_mib, dict) and (extra := set(self.guest_memory_mib) - names):
            raise ValueError(f"guest_memory_mib names unknown node(s): {', '.join(sorted(extra))}")
        return self


def _mark(name: str) -> str:
    return shlex.quote(f"{MARK_DIR}/{name}")


def migrate_uri(options: LibvirtOptions, *, target: str, address: str) -> str:
    """The libvirt URI a source host connects to for a migration to `target` (at `address`)."""
    return options.migrate_uri.format(address=address, node=target)


def virsh_command(uri: str, args: str) -> str:
    """`virsh` against the host's own libvirt at `uri`, quiet (no table headers)."""
    return f"virsh -q -c {shlex.quote(uri)} {args}"


def migrate_command(options: LibvirtOptions, name: str, *, target: str, address: str) -> str:
    """The shell command, run on the source host, that live-migrates domain `name` to `target`
    (at `address`) as `options` say: the one place that says how cau migrates (the lab's own
    migrations use it too)."""

    def virsh(args: str) -> str:
        return virsh_command(options.uri, args)

    args = ["migrate", "--live", "--persistent", "--undefinesource"]
    if options.copy_storage:
        args.append("--copy-storage-all")
    args += [*options.migrate_options, name, migrate_uri(options, target=target, address=address)]
    if options.migrate_data_uri:
        args += ["--migrateuri", options.migrate_data_uri.format(address=address, node=target)]
    command = virsh(shlex.join(args))
    if options.max_downtime_ms is not None:
        # a parameter of the running QEMU, not kept by the destination: set before each move
        command = f"{virsh(f'migrate-setmaxdowntime {name} {options.max_downtime_ms}')} && {command}"
    return command


class LibvirtProvider(SshProvider):
    name: ClassVar[str] = "libvirt"
    Options: ClassVar[type[BaseModel]] = LibvirtOptions
    default_plugins: tuple[str, ...] = ("apt",)

    def __init__(
        self,
        cluster: str,
        options: LibvirtOptions,
        *,
        clock: Clock,
        transports: TransportFactory | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(cluster, options, transports=transports, secrets=secrets)
        self.lv = options
        self._clock = clock
        self._moves: dict[str, list[RoleMove]] = {}

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> LibvirtProvider:
        assert isinstance(options, LibvirtOptions)
        return cls(ctx.cluster, options, clock=ctx.clock, transports=ctx.transports, secrets=ctx.secrets)

    # --- reading the hosts -------------------------------------------------------------------------

    def _virsh(self, args: str) -> str:
        return virsh_command(self.lv.uri, args)

    async def _run(self, node: str, command: str, *, timeout: float = 60) -> CommandResult:
        return await self.transport(node).run(command, timeout=timeout)

    async def read_host(self, node: str) -> HostState:
        """Everything cau needs from one host, in one round trip. Raises NodeUnreachable when the
        host does not answer, ProviderError when libvirt there does not."""
        result = await self._run(node, read_script(self.lv.uri))
        if not result.ok:
            raise ProviderError(
                f"libvirt on {node} does not answer (exit {result.exit_status}): "
                f"{tail(result.stderr or result.stdout, 300)}",
                hint=f"check that libvirtd runs on {node} and `virsh -c {self.lv.uri} list` works there",
            )
        return parse_host(result.stdout, shared_storage=tuple(self.lv.shared_storage))

    async def _read_or_none(self, node: str) -> HostState | None:
        try:
            return await self.read_host(node)
        except NodeUnreachable:
            return None

    async def read_all(self) -> dict[str, HostState | None]:
        names = [n.name for n in self.options.nodes]
        states = await asyncio.gather(*(self._read_or_none(n) for n in names))
        return dict(zip(names, states, strict=True))

    def _guest_memory(self, node: str, host: HostState) -> int:
        given = self.lv.guest_memory_mib
        if isinstance(given, dict):
            if node in given:
                return given[node]
        elif given is not None:
            return given
        return max(0, host.memory_mib - self.lv.reserved_memory_mib)

    def _capacity(self, node: str, host: HostState) -> Capacity:
        return Capacity(host.cpus * self.lv.vcpu_ratio, self._guest_memory(node, host) / 1024)

    def _preferred(self, dom: DomainInfo) -> tuple[str, ...]:
        configured = self.lv.preferred_owners.get(dom.name)
        return tuple(configured) if configured is not None else dom.preferred

    def _why_pinned(self, dom: DomainInfo) -> str:
        if dom.pinned_by:
            return dom.pinned_by
        if dom.local_disks and not self.lv.copy_storage:
            return f"a local disk ({', '.join(dom.local_disks)}) without copy_storage"
        return ""

    # --- observation -------------------------------------------------------------------------------

    async def discover(self) -> ClusterSnapshot:
        boots, states = await asyncio.gather(
            asyncio.gather(*(self.boot_id(n.name) for n in self.options.nodes)), self.read_all()
        )
        nodes: list[Node] = []
        owners: dict[str, tuple[str, DomainInfo]] = {}
        stopped: dict[str, DomainInfo] = {}
        for entry, boot in zip(self.options.nodes, boots, strict=True):
            host = states[entry.name]
            up = boot is not None and host is not None
            nodes.append(
                Node(
                    name=entry.name,
                    state=NodeState.UP if up else NodeState.DOWN,
                    in_maintenance=bool(host and host.in_maintenance),
                    capacity=self._capacity(entry.name, host) if host is not None else Capacity(),
                    votes=entry.votes,
                    boot_id=boot,
                    failure_domain=entry.failure_domain,
                    labels=dict(entry.labels),
                )
            )
            if host is None:
                continue
            for dom in host.domains:
                if dom.active:
                    seen = owners.get(dom.name)
                    # mid-migration a domain shows on both hosts: it runs where it is not paused
                    if seen is None or (seen[1].state == "paused" and dom.state != "paused"):
                        owners[dom.name] = (entry.name, dom)
            for name in host.saved_by_cau:
                saved = host.domain(name)
                if saved is not None and not saved.active:
                    stopped[name] = saved
        roles = [
            Role(
                name,
                RoleKind.PINNED if self._why_pinned(dom) else RoleKind.LIVE,
                needs=Capacity(dom.vcpus, dom.memory_mib / 1024),
                owner=node,
                preferred_owners=self._preferred(dom),
            )
            for name, (node, dom) in sorted(owners.items())
        ]
        roles += [
            Role(name, RoleKind.LIVE, needs=Capacity(dom.vcpus, dom.memory_mib / 1024), owner=None)
            for name, dom in sorted(stopped.items())
            if name not in owners
        ]
        min_online = self.options.min_online
        if min_online is None:
            min_online = (len(nodes) + 1) // 2 if len(nodes) > 1 else 0
        return ClusterSnapshot(self.cluster, tuple(nodes), tuple(roles), min_online=min_online)

    async def preflight(
        self, profile: RunProfile | None = None, *, coordinator_node: str | None = None
    ) -> list[str]:
        problems = await super().preflight(profile, coordinator_node=coordinator_node)
        names = [n.name for n in self.options.nodes]
        read = await asyncio.gather(*(self.read_host(n) for n in names), return_exceptions=True)
        answered: list[str] = []
        for node, host in zip(names, read, strict=True):
            if isinstance(host, NodeUnreachable):
                problems.append(f"{node}: {host}")
            elif isinstance(host, ProviderError):
                problems.append(str(host) + (f" ({host.hint})" if host.hint else ""))
            elif isinstance(host, BaseException):
                raise host
            else:
                answered.append(node)
                for name in host.saved_by_cau:
                    problems.append(
                        f"{name} was saved on {node} by an earlier run (move = save) and not started "
                        f"again: `cau cleanup {self.cluster}` starts it"
                    )
        if profile is None or profile.move is not MoveMethod.SAVE:
            problems += await self.migration_path_problems(answered)
            hosts = {n: h for n, h in zip(names, read, strict=True) if isinstance(h, HostState)}
            # hosts restart in the run unless it never restarts (`cau check` asks as for a run)
            restarts = profile is None or not profile.no_restart
            problems += await self.copy_storage_problems(hosts, restarts=restarts)
        return problems

    async def copy_storage_problems(
        self, hosts: Mapping[str, HostState], *, restarts: bool = True
    ) -> list[str]:
        """With copy_storage, each running guest's local disks must have somewhere to land on
        every other host (an active storage pool at the disk's directory, or the file already
        there): else libvirt refuses the migration, found out in the middle of a run. `restarts`:
        the hosts restart in the run, so that pool must also be autostarted (it is inactive after
        its host's restart otherwise, and a guest that goes there later fails to migrate)."""
        if not self.lv.copy_storage or len(hosts) < 2:
            return []
        disks = [
            (node, dom.name, path)
            for node, host in hosts.items()
            for dom in host.active
            for path in dom.local_disks
        ]
        if not disks:
            return []
        paths = sorted({path for _, _, path in disks})

        async def view(node: str) -> StorageView | None:
            try:
                result = await self._run(node, storage_script(self.lv.uri, paths))
            except (NodeUnreachable, CommandTimeout):
                return None  # named by the checks before (it did not answer)
            return parse_storage(result.stdout)

        names = list(hosts)
        views = dict(zip(names, await asyncio.gather(*(view(n) for n in names)), strict=True))
        problems = []
        for source, guest, path in disks:
            # the other hosts that answered the check, with what each offers the copy
            others = {t: v for t in names if t != source and (v := views[t]) is not None}
            missing = [t for t, v in others.items() if not v.takes(path)]
            if missing:
                directory = disk_directory(path)
                problems.append(
                    f"{guest}'s local disk {path} (on {source}) has nowhere to be copied on "
                    f"{', '.join(missing)}: libvirt creates a copied disk only in an active storage "
                    f"pool whose target is its directory, or over a file already at its path (define "
                    f"one on each host: virsh pool-define-as NAME dir --target {directory}, then "
                    "pool-start and pool-autostart; or put the disk under shared_storage)"
                )
                continue
            if not restarts:
                continue
            manual = [
                (t, pool)
                for t, v in others.items()
                if not v.takes(path, after_restart=True) and (pool := v.pool_for(path)) is not None
            ]
            if manual:
                where = ", ".join(f"{pool.name} on {t}" for t, pool in manual)
                problems.append(
                    f"{guest}'s local disk {path} (on {source}) would be copied into storage pools "
                    f"that are not autostarted ({where}): each host restarts in the run and such a "
                    "pool is inactive after its host's restart, so a later copy there fails "
                    "(virsh pool-autostart NAME on each)"
                )
        return problems

    def _migrate_uri(self, target: str) -> str:
        return migrate_uri(self.lv, target=target, address=self._address(target))

    async def migration_path_problems(self, nodes: list[str]) -> list[str]:
        """Each host connects to every other's libvirt as its live migrations would (migrate_uri:
        the same transport, keys and port), so a pool whose hosts cannot reach each other (the
        default qemu+ssh without keys from host to host, a closed port) is refused before a run
        drains anything, not found out by a failed migration in the middle of one."""
        if len(nodes) < 2:
            return []

        async def from_host(source: str) -> list[tuple[str, str, str]]:
            """(source, target, why) of each path from `source` that does not connect."""
            targets = [t for t in nodes if t != source]
            script = paths_script([(t, self._migrate_uri(t)) for t in targets])
            try:
                result = await self._run(source, script, timeout=PATH_TIMEOUT_SECONDS + 15)
            except (NodeUnreachable, CommandTimeout) as exc:
                return [(source, t, f"could not check from {source}: {exc}") for t in targets]
            found = parse_paths(result.stdout)
            return [
                (source, t, why)
                for t in targets
                if (why := found.get(t, "the check printed nothing for it")) is not None
            ]

        broken = [path for paths in await asyncio.gather(*(from_host(n) for n in nodes)) for path in paths]
        # one finding per cause: a pool set up without keys from host to host fails every path alike
        causes: dict[str, list[str]] = {}
        for source, target, why in broken:
            causes.setdefault(why, []).append(f"{source} -> {target}")
        total = len(nodes) * (len(nodes) - 1)
        return [
            f"{', '.join(paths)} ({len(paths)} of {total} migration paths): the source host cannot reach "
            f"the target's libvirt at migrate_uri = {redact(self.lv.migrate_uri)} as a live migration "
            f"would: {tail(redact(why), 300)} (give each host access to the others there, e.g. SSH keys "
            "from host to host for qemu+ssh, or change migrate_uri)"
            for why, paths in causes.items()
        ]

    # --- maintenance -------------------------------------------------------------------------------

    async def maintenance_prior(self, node: str) -> MaintenancePrior:
        host = await self.read_host(node)
        return MaintenancePrior(
            node=node,
            was_in_maintenance=host.in_maintenance,
            role_owners={d.name: node for d in host.active},
        )

    async def enter_maintenance(self, node: str, move: MoveMethod, prior: MaintenancePrior) -> None:
        await self._evacuate(node, move, {})

    async def enter_maintenance_planned(
        self, node: str, move: MoveMethod, prior: MaintenancePrior, plan: Mapping[str, str]
    ) -> None:
        await self._evacuate(node, move, plan)

    def _targets(self, node: str, states: Mapping[str, HostState | None]) -> dict[str, tuple[float, float]]:
        """Free (memory MiB, vCPUs) on each host that can take guests now, but `node`."""
        free: dict[str, tuple[float, float]] = {}
        for name, host in states.items():
            if name == node or host is None or host.in_maintenance:
                continue
            free[name] = self._free(name, host)
        return free

    def _free(self, node: str, host: HostState) -> tuple[float, float]:
        """Memory (MiB) and vCPUs a host can still give guests, by what runs there now."""
        cap = self._capacity(node, host)
        return cap.memory_gb * 1024 - host.used_mib(), cap.cpu - host.used_vcpus()

    def plan_evacuation(
        self,
        node: str,
        states: Mapping[str, HostState | None],
        plan: Mapping[str, str],
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Where each running guest of `node` goes (domain -> host), and the guests that can go
        nowhere (domain -> why), both in placing order: bigger guests first; a guest goes to its planned
        target when that has room, else to its preferred hosts, else to the host with the most
        free memory. Nothing is placed beyond a host's room."""
        host = states.get(node)
        if host is None:
            return {}, {}
        free = self._targets(node, states)
        moves: dict[str, str] = {}
        stuck: dict[str, str] = {}
        for dom in sorted(host.active, key=lambda d: (-d.memory_mib, d.name)):
            pinned = self._why_pinned(dom)
            if pinned:
                stuck[dom.name] = f"cannot live-migrate: {pinned}"
                continue
            fits = [h for h, (mem, cpu) in free.items() if mem >= dom.memory_mib and cpu >= dom.vcpus]
            preferred = [h for h in self._preferred(dom) if h in fits]
            planned = plan.get(dom.name)
            if planned in fits:
                target = planned
            elif preferred:
                target = preferred[0]
            elif fits:
                target = max(fits, key=lambda h: free[h][0])  # the first in order on a tie
            else:
                rooms = ", ".join(f"{h} {mem:g} MiB" for h, (mem, _) in sorted(free.items())) or "none"
                stuck[dom.name] = (
                    f"needs {dom.memory_mib} MiB and {dom.vcpus} vCPU, and no other host has room "
                    f"(free memory for guests: {rooms})"
                )
                continue
            mem, cpu = free[target]
            free[target] = (mem - dom.memory_mib, cpu - dom.vcpus)
            moves[dom.name] = target
        return moves, stuck

    async def drain_problems(self, node: str, move: MoveMethod) -> list[str]:
        """The guests that would not move off `node` (and would fail the drain), by name; none for
        move = save, which moves nothing."""
        if move is MoveMethod.SAVE or self.lv.unmovable == "save":
            return []
        states = await self.read_all()
        _, stuck = self.plan_evacuation(node, states, {})
        return [f"{name} on {node} {why}" for name, why in sorted(stuck.items())]

    async def _set_mark(self, node: str, mark: str) -> None:
        result = await self._run(node, f"mkdir -p {shlex.quote(MARK_DIR)} && touch {_mark(mark)}")
        if not result.ok:
            raise MaintenanceError(f"could not write cau's mark {mark} on {node}: {tail(result.stderr, 200)}")

    async def _clear_mark(self, node: str, mark: str) -> None:
        result = await self._run(node, f"rm -f {_mark(mark)}")
        if not result.ok:
            raise MaintenanceError(
                f"could not remove cau's mark {mark} on {node}: {tail(result.stderr, 200)}"
            )

    async def _evacuate(self, node: str, move: MoveMethod, plan: Mapping[str, str]) -> None:
        states = await self.read_all()
        host = states.get(node)
        if host is None:
            raise MaintenanceError(f"{node} does not answer: its guests cannot be moved")
        if move is MoveMethod.SAVE:
            to_save = [d.name for d in host.active]
            moves: dict[str, str] = {}
        else:
            moves, stuck = self.plan_evacuation(node, states, plan)
            if stuck and self.lv.unmovable == "fail":
                # before anything moves: the drain fails whole, naming every guest that holds it
                raise MaintenanceError(
                    "; ".join(f"{name} on {node} {why}" for name, why in sorted(stuck.items()))
                    + ' (free room on another host, or set unmovable = "save" to save such guests)'
                )
            to_save = sorted(stuck)
        await self._set_mark(node, MAINTENANCE_MARK)
        for name, target in moves.items():  # the biggest first, as planned
            await self._migrate_with_room(node, name, target)
        for name in to_save:
            await self._save(node, name)
        left = [d.name for d in (await self.read_host(node)).active]
        if left:
            raise MaintenanceError(f"{', '.join(left)} still run on {node} after its evacuation")

    async def _migrate_with_room(self, source: str, name: str, target: str) -> None:
        """Migrate, after reading the target's room again (it may have filled since the plan);
        another host with room is taken if it has not."""
        states = await self.read_all()
        dom = states[source].domain(name) if states.get(source) is not None else None  # type: ignore[union-attr]
        if dom is None or not dom.active:
            return  # gone already (a retried step)
        free = self._targets(source, states)
        mem, cpu = free.get(target, (-1.0, -1.0))
        if mem < dom.memory_mib or cpu < dom.vcpus:
            moves, stuck = self.plan_evacuation(source, states, {})
            if name not in moves:
                raise MaintenanceError(f"{name} on {source} {stuck.get(name, 'has no host with room')}")
            target = moves[name]
        await self.migrate(name, source, target, for_node=source)

    def _address(self, node: str) -> str:
        return self._entry(node).host

    async def migrate(self, name: str, source: str, target: str, *, for_node: str) -> RoleMove:
        """Live-migrate `name` from `source` to `target`; libvirt's own figures are read on the
        target afterwards. A migration that fails leaves the guest running on `source` (resumed
        there if libvirt left it paused), and raises MaintenanceError. The move is reported with
        the step of `for_node` (the node drained, or failed back to)."""
        name = domain_name(name)
        command = migrate_command(self.lv, name, target=target, address=self._address(target))
        started, t0 = self._clock.now(), self._clock.monotonic()
        timeout = self.lv.migrate_timeout.total_seconds()
        error = ""
        try:
            result = await self._run(source, command, timeout=timeout)
            if not result.ok:
                error = tail(result.stderr or result.stdout, 300)
        except CommandTimeout:
            error = f"did not finish within {timeout:g}s"
            await self._run(source, self._virsh(f"domjobabort {name}"), timeout=60)
        move = RoleMove(
            role=name,
            method="live",
            from_node=source,
            to_node=target,
            started=started,
            seconds=self._clock.monotonic() - t0,
        )
        if error:
            await self._resume_if_paused(source, name)
            self._record(for_node, move.model_copy(update={"ok": False, "message": error}))
            raise MaintenanceError(f"{name} could not migrate from {source} to {target}: {error}")
        figures = parse_jobinfo("")
        try:
            info = await self._run(target, self._virsh(f"domjobinfo --completed {name}"), timeout=30)
            if info.ok:
                figures = parse_jobinfo(info.stdout)
        except NodeUnreachable:
            pass  # the figures are a nicety: the migration itself is done
        move = move.model_copy(
            update={
                "reported_seconds": figures.seconds,
                "downtime_ms": figures.downtime_ms,
                "data_bytes": figures.data_bytes,
            }
        )
        self._record(for_node, move)
        return move

    def _record(self, node: str, move: RoleMove) -> None:
        self._moves.setdefault(node, []).append(move)

    def take_moves(self, node: str) -> list[RoleMove]:
        return self._moves.pop(node, [])

    async def _resume_if_paused(self, node: str, name: str) -> None:
        try:
            host = await self.read_host(node)
        except ProviderError:
            return
        dom = host.domain(name)
        if dom is not None and dom.state == "paused":
            await self._run(node, self._virsh(f"resume {domain_name(name)}"))

    async def _save(self, node: str, name: str) -> None:
        name = domain_name(name)
        await self._set_mark(node, SAVED_PREFIX + name)  # marked first: a crash leaves a trace
        started, t0 = self._clock.now(), self._clock.monotonic()
        result = await self._run(
            node, self._virsh(f"managedsave {name}"), timeout=self.lv.save_timeout.total_seconds()
        )
        seconds = self._clock.monotonic() - t0
        self._record(
            node,
            RoleMove(
                role=name,
                method="save",
                from_node=node,
                started=started,
                seconds=seconds,
                ok=result.ok,
                message="" if result.ok else tail(result.stderr, 300),
            ),
        )
        if not result.ok:
            host = await self.read_host(node)
            dom = host.domain(name)
            if dom is None or dom.active:  # not saved: no trace of a save to undo
                await self._clear_mark(node, SAVED_PREFIX + name)
            raise MaintenanceError(f"could not save {name} on {node}: {tail(result.stderr, 300)}")

    async def exit_maintenance(self, node: str, prior: MaintenancePrior) -> None:
        host = await self.read_host(node)
        # the guests saved here start again from their saved state, before the host takes others
        await self._restore_saved(node, host)
        if not prior.was_in_maintenance and host.in_maintenance:
            await self._clear_mark(node, MAINTENANCE_MARK)

    async def _restore_saved(self, node: str, host: HostState) -> list[str]:
        restored = []
        for name in host.saved_by_cau:
            dom = host.domain(name)
            if dom is not None and not dom.active:
                started, t0 = self._clock.now(), self._clock.monotonic()
                result = await self._run(
                    node,
                    self._virsh(f"start {domain_name(name)}"),
                    timeout=self.lv.save_timeout.total_seconds(),
                )
                self._record(
                    node,
                    RoleMove(
                        role=name,
                        method="restore",
                        to_node=node,
                        started=started,
                        seconds=self._clock.monotonic() - t0,
                        ok=result.ok,
                        message="" if result.ok else tail(result.stderr, 300),
                    ),
                )
                if not result.ok:
                    raise MaintenanceError(
                        f"could not start {name} again on {node} from its saved state: "
                        + tail(result.stderr, 300)
                    )
                restored.append(name)
            await self._clear_mark(node, SAVED_PREFIX + name)
        return restored

    async def failback(self, node: str, prior: MaintenancePrior, mode: FailbackMode) -> list[str]:
        if mode is FailbackMode.NONE or prior.was_in_maintenance:
            return []
        states = await self.read_all()
        home = states.get(node)
        if home is None or home.in_maintenance:
            raise MaintenanceError(f"{node} cannot take its guests back: it is down or still in maintenance")
        where: dict[str, tuple[str, DomainInfo]] = {}
        for name, host in states.items():
            if host is None:
                continue
            for dom in host.active:
                if dom.state != "paused" or dom.name not in where:
                    where[dom.name] = (name, dom)
        if mode is FailbackMode.IMMEDIATE:
            wanted = [r for r in prior.role_owners if r in where and where[r][0] != node]
        else:  # policy: the guests whose first preferred host that can take them is this one
            serving = [n for n, h in states.items() if h is not None and not h.in_maintenance]
            wanted = []
            for name, (on, dom) in sorted(where.items()):
                first = next((h for h in self._preferred(dom) if h in serving), None)
                if first == node and on != node:
                    wanted.append(name)
        moved: list[str] = []
        failed: list[str] = []
        for name in sorted(wanted):
            on, dom = where[name]
            free_mem, free_cpu = self._free(node, home)
            if free_mem < dom.memory_mib or free_cpu < dom.vcpus:
                failed.append(f"{name} stays on {on}: {node} has no room for it ({free_mem:g} MiB free)")
                continue
            try:
                await self.migrate(name, on, node, for_node=node)
            except MaintenanceError as exc:
                failed.append(str(exc))
                continue
            home = await self.read_host(node)
            moved.append(name)
        if failed:
            raise MaintenanceError("; ".join(failed))
        return moved

    # --- restarts ----------------------------------------------------------------------------------

    async def wait_ready(self, node: str, *, previous_boot_id: str | None, timeout: float) -> str:
        """Back means: a new boot id over SSH, then libvirt answering there."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        boot = await super().wait_ready(node, previous_boot_id=previous_boot_id, timeout=timeout)
        last = ""
        while True:
            try:
                await self.read_host(node)
                return boot
            except ProviderError as exc:
                last = str(exc)
            if loop.time() >= deadline:
                raise NodeUnreachable(
                    f"{node} restarted (new boot id) but libvirt did not answer within {timeout:g}s ({last})"
                )
            await asyncio.sleep(0.1)

    # --- leftovers, found by looking ---------------------------------------------------------------

    async def leftovers(self, node: str | None = None) -> list[str]:
        found: list[str] = []
        for name, host in (await self.read_all()).items():
            if host is None or (node is not None and name != node):
                continue
            if host.in_maintenance:
                found.append(f"{name} is marked in maintenance by cau ({MARK_DIR}/{MAINTENANCE_MARK})")
            found += [
                f"{dom} saved on {name} by cau (move = save), not started again" for dom in host.saved_by_cau
            ]
            found += [
                f"{d.name} paused on {name} ({d.reason or 'no reason given'})"
                for d in host.domains
                if d.state == "paused" and d.reason in ("migrating", "post-copy failed", "")
            ]
        return found

    async def clean_up(self, node: str | None = None) -> tuple[list[str], list[str]]:
        """Starts the guests cau saved, resumes guests a broken migration left paused, and removes
        the maintenance mark of hosts that are up (their guests then come back by failback of a
        run, or stay where they are)."""
        done: list[str] = []
        waiting: list[str] = []
        for name, host in (await self.read_all()).items():
            if node is not None and name != node:
                continue
            if host is None:
                waiting.append(f"{name} does not answer; run this again once it is back")
                continue
            for dom in host.domains:
                if dom.state == "paused" and dom.reason in ("migrating", "post-copy failed", ""):
                    await self._run(name, self._virsh(f"resume {domain_name(dom.name)}"))
                    done.append(f"resumed {dom.name} on {name}")
            restored = await self._restore_saved(name, host)
            done += [f"started {dom} again on {name} from its saved state" for dom in restored]
            self._moves.pop(name, None)
            if host.in_maintenance:
                await self._clear_mark(name, MAINTENANCE_MARK)
                done.append(f"took {name} out of maintenance")
        return done, waiting
