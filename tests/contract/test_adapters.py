"""Every registered provider and plug-in honours its protocol, found the way a third-party one is.

Each one runs on a bench where it can do its real work here, without root or a lab: the sandbox
on itself, the SSH-based providers and the package plug-ins on scripted nodes (cau.testing) that
answer like real ones, from the golden fixtures (tests/contract/scripted.py), the hotfix plug-in
on this machine through the local transport. A newly registered adapter without a bench fails.
"""

from __future__ import annotations

import inspect
import socket
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from pydantic import BaseModel

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import FailbackMode, MoveMethod
from cau.domain.updates import UpdateOutcome
from cau.errors import NodeUnreachable, NotFound
from cau.ports import NodeSession, PluginContext, ProviderContext, TransportFactory
from cau.providers.libvirt import LibvirtOptions
from cau.providers.pacemaker import PacemakerOptions
from cau.providers.ssh import SshOptions
from cau.registry import Registry
from cau.sandbox.provider import SandboxOptions, SandboxProvider
from cau.sandbox.spec import default_spec
from cau.testing import Reply, Result, Rules, ScriptedTransport, Session
from cau.transport.local import LocalTransport
from tests.contract.scripted import DebianHost, Guest, LibvirtPool, PacemakerCluster, RhelHost, SshHosts
from tests.support_hotfix import hotfix_root, write_manifest

REGISTRY = Registry.discover()
BUILTIN_PROVIDERS = {"sandbox", "ssh", "pacemaker", "libvirt"}
BUILTIN_PLUGINS = {"sandbox", "command", "apt", "hotfix", "dnf"}


def test_builtins_are_registered_through_entry_points() -> None:
    for table, names in ((REGISTRY.providers, BUILTIN_PROVIDERS), (REGISTRY.plugins, BUILTIN_PLUGINS)):
        assert names <= set(table)
        assert all(table[n].ok and table[n].distribution == "cau" for n in names)
    with pytest.raises(NotFound, match="no plug-in named 'nope'"):
        REGISTRY.plugin("nope")


@pytest.mark.parametrize("name", sorted(REGISTRY.plugins))
def test_plugin_shape(name: str) -> None:
    plugin = REGISTRY.plugin(name)
    assert plugin.name == name
    assert issubclass(plugin.Args, BaseModel)
    assert plugin.Args.model_config.get("extra") == "forbid"  # an unknown argument is an error
    assert callable(plugin().create_updater)


@pytest.mark.parametrize("name", sorted(REGISTRY.providers))
def test_provider_shape(name: str) -> None:
    provider = REGISTRY.provider(name)
    assert provider.name == name
    assert issubclass(provider.Options, BaseModel)
    for method in (
        "discover",
        "session",
        "maintenance_prior",
        "enter_maintenance",
        "exit_maintenance",
        "failback",
        "boot_id",
        "restart",
        "wait_ready",
        "close",
    ):
        assert inspect.iscoroutinefunction(getattr(provider, method)), method


# --- providers ----------------------------------------------------------------------------------------


@dataclass
class ProviderBench:
    """A provider brought up where this test can reach it."""

    options: BaseModel
    node: str  # the node taken through maintenance and a restart
    whoami: str  # a command that prints the name of the node it runs on
    transports: TransportFactory | None = None


def sandbox_spec(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """The built-in sandbox spec, edited (e.g. to inject a fault), as a file."""
    data = default_spec().model_dump(mode="json", exclude_none=True)
    edit(data)
    path = tmp_path / "sandbox.toml"
    path.write_text(tomli_w.dumps(data))
    assert tomllib.loads(path.read_text())  # what the provider will read
    return path


def sandbox_bench(tmp_path: Path, *, never_back: bool) -> ProviderBench:
    node = default_spec().nodes[0].name

    def never_returns(data: dict[str, Any]) -> None:
        data["nodes"][0]["never_returns"] = True

    options = SandboxOptions(spec=sandbox_spec(tmp_path, never_returns)) if never_back else SandboxOptions()
    return ProviderBench(options, node, "echo $CAU_NODE")


def ssh_bench(tmp_path: Path, *, never_back: bool) -> ProviderBench:
    hosts = SshHosts(["n1", "n2", "n3"], restart_probes=10**9 if never_back else 2)
    options = SshOptions.model_validate(
        {
            "nodes": [{"name": n, "host": f"10.0.0.1{i}"} for i, n in enumerate(hosts.names, 1)],
            "known_hosts": tmp_path / "known_hosts",
        }
    )
    return ProviderBench(options, "n1", "hostname", hosts.transports)


def pacemaker_bench(tmp_path: Path, *, never_back: bool) -> ProviderBench:
    """The lab's Pacemaker cluster; node2 runs the web group: standby moves it to node3, and a
    location constraint preferring node2 brings it back."""
    pcmk = PacemakerCluster("all-online", restart_probes=10**9 if never_back else 2)
    pcmk.then("crm_attribute --node node2 --name standby --update on", "standby-node2")
    pcmk.then("crm_attribute --node node2 --name standby --delete", "move-web-cli-prefer")
    prefer = "cibadmin --modify --allow-create --scope constraints --xml-text "
    pcmk.then(prefer + '\'<rsc_location id="cau-prefer-web-on-node2"', "all-online")
    options = PacemakerOptions.model_validate(
        {
            "nodes": [{"name": n, "host": f"10.77.0.1{i}"} for i, n in enumerate(pcmk.names, 1)],
            "known_hosts": tmp_path / "known_hosts",
        }
    )
    return ProviderBench(options, "node2", "hostname", pcmk.transports)


def libvirt_bench(tmp_path: Path, *, never_back: bool) -> ProviderBench:
    """Three hypervisor hosts; node1 runs two guests, which live-migrate away and come back."""
    guests = [Guest("g1", "node1"), Guest("g2", "node1", memory_mib=256), Guest("g3", "node2")]
    pool = LibvirtPool(["node1", "node2", "node3"], guests, restart_probes=10**9 if never_back else 2)
    options = LibvirtOptions.model_validate(
        {
            "nodes": [{"name": n, "host": a} for n, a in pool.addresses.items()],
            "known_hosts": tmp_path / "known_hosts",
            "guest_memory_mib": 512,
        }
    )
    return ProviderBench(options, "node1", "hostname", pool.transports)


PROVIDER_BENCHES: dict[str, Callable[..., ProviderBench]] = {
    "sandbox": sandbox_bench,
    "ssh": ssh_bench,
    "pacemaker": pacemaker_bench,
    "libvirt": libvirt_bench,
}


def provider_bench(name: str, tmp_path: Path, *, never_back: bool = False) -> ProviderBench:
    if name not in PROVIDER_BENCHES:
        pytest.fail(f"provider {name!r} is registered but has no bench in {__name__}: add one")
    return PROVIDER_BENCHES[name](tmp_path, never_back=never_back)


def create(name: str, bench: ProviderBench, tmp_path: Path) -> Any:
    ctx = ProviderContext("c", VirtualClock(), tmp_path, transports=bench.transports)
    return REGISTRY.provider(name).create(bench.options, ctx)


@pytest.mark.parametrize("name", sorted(REGISTRY.providers))
def test_provider_behaviour(name: str, tmp_path: Path) -> None:
    """The protocol's promises on a live provider: observe, maintenance in and out (idempotent),
    restart with a new boot id, roles back, and a session whose commands run on the node."""
    bench = provider_bench(name, tmp_path)
    node = bench.node

    async def main() -> None:
        provider = create(name, bench, tmp_path)
        snap = await provider.discover()
        assert snap.node(node).is_up and snap.has_quorum
        prior = await provider.maintenance_prior(node)
        assert prior.node == node and not prior.was_in_maintenance
        await provider.enter_maintenance(node, MoveMethod.LIVE, prior)
        await provider.enter_maintenance(node, MoveMethod.LIVE, prior)  # idempotent
        snap = await provider.discover()
        assert snap.node(node).in_maintenance
        assert not any(r.owner == node for r in snap.roles if r.movable)
        old = await provider.boot_id(node)
        await provider.restart(node)
        assert await provider.boot_id(node) is None  # down while restarting
        new = await provider.wait_ready(node, previous_boot_id=old, timeout=3600)
        assert new and new != old
        await provider.exit_maintenance(node, prior)
        moved = await provider.failback(node, prior, FailbackMode.IMMEDIATE)
        assert sorted(moved) == sorted(prior.role_owners)
        snap = await provider.discover()
        assert not snap.node(node).in_maintenance
        assert {r.name for r in snap.roles if r.movable and r.owner == node} == set(prior.role_owners)
        session = await provider.session(node)
        assert session.node == node
        result = await session.transport.run(bench.whoami, timeout=10)
        assert result.ok and result.stdout.strip() == node
        await provider.close()

    run_virtual(main())


def test_the_benches_move_roles_where_the_provider_has_them(tmp_path: Path) -> None:
    """So that the failback promise above is not kept vacuously: a bench with roles moves some."""

    async def owned(name: str) -> dict[str, str | None]:
        bench = provider_bench(name, tmp_path / name)
        return dict((await create(name, bench, tmp_path / name).maintenance_prior(bench.node)).role_owners)

    assert run_virtual(owned("sandbox")) and run_virtual(owned("pacemaker")) == {"web": "node2"}
    assert run_virtual(owned("libvirt")) == {"g1": "node1", "g2": "node1"}


@pytest.mark.parametrize("name", sorted(REGISTRY.providers))
def test_a_node_that_does_not_come_back_times_out(name: str, tmp_path: Path) -> None:
    """wait_ready raises NodeUnreachable when the timeout passes: it never hangs."""
    bench = provider_bench(name, tmp_path, never_back=True)

    async def main() -> None:
        provider = create(name, bench, tmp_path)
        old = await provider.boot_id(bench.node)
        await provider.restart(bench.node)
        with pytest.raises(NodeUnreachable):
            await provider.wait_ready(bench.node, previous_boot_id=old, timeout=60)
        await provider.close()

    run_virtual(main())


# --- plug-ins -----------------------------------------------------------------------------------------


@dataclass
class PluginBench:
    """A node on which the plug-in has updates to install, one of which fails (`failing`)."""

    session: NodeSession
    args: BaseModel
    failing: set[str] = field(default_factory=set)


async def sandbox_plugin_bench(tmp_path: Path) -> PluginBench:
    def nginx_fails_once(data: dict[str, Any]) -> None:
        for update in data["updates"]:
            if update["id"].startswith("nginx-"):
                update["fail_installs"] = {"*": 1}

    spec = sandbox_spec(tmp_path, nginx_fails_once)
    provider = SandboxProvider.create(
        SandboxOptions(spec=spec), ProviderContext("c", VirtualClock(), tmp_path)
    )
    node = (await provider.discover()).nodes[0].name
    nginx = next(u.id for u in default_spec().updates if u.id.startswith("nginx-"))
    return PluginBench(await provider.session(node), REGISTRY.plugin("sandbox").Args(), {nginx})


async def command_plugin_bench(tmp_path: Path) -> PluginBench:
    """A node with an admin's firmware tools: the scan lists what is not applied yet."""
    firmware = {"bmc-2.14": "BMC firmware 2.14", "bios-1.9": "BIOS 1.9", "nic-22.5": "NIC firmware 22.5"}
    applied: set[str] = set()

    def node(command: str) -> Result:
        if command == "fw-check":
            return "".join(f"{fw} {title}\n" for fw, title in firmware.items() if fw not in applied)
        if command.startswith("fw-apply "):
            fw = command.split()[1]
            if fw == "bios-1.9":
                return Reply("", 1, "flash verify failed\n")
            applied.add(fw)
            return ""
        return Rules()(command)  # anything else: UnexpectedCommand

    args = REGISTRY.plugin("command").Args.model_validate(
        {"scan": "fw-check", "install": "fw-apply $update$"}
    )
    return PluginBench(Session("fw1", ScriptedTransport(node, name="fw1")), args, {"bios-1.9"})


async def hotfix_plugin_bench(tmp_path: Path) -> PluginBench:
    """This machine through the local transport: the hotfixes are scripts of the test's own."""
    host = socket.gethostname()
    root = hotfix_root(tmp_path / "share", str(tmp_path / "trace"), node=host)
    (root / "_all" / "fix.sh").write_text("#!/bin/sh\necho 'disk full' >&2\nexit 5\n")
    write_manifest(root)
    args = REGISTRY.plugin("hotfix").Args.model_validate(
        {"root": str(root), "staging_dir": str(tmp_path / "staging"), "registry": str(tmp_path / "installed")}
    )
    return PluginBench(Session(host, LocalTransport()), args, {"_all/fix.sh"})


async def apt_plugin_bench(tmp_path: Path) -> PluginBench:
    args = REGISTRY.plugin("apt").Args()
    return PluginBench(Session("node1", ScriptedTransport(DebianHost(), name="node1")), args, {"labbroken"})


async def dnf_plugin_bench(tmp_path: Path) -> PluginBench:
    host = RhelHost(broken=["openssl"])
    args = REGISTRY.plugin("dnf").Args()
    return PluginBench(Session("rhel1", ScriptedTransport(host, name="rhel1")), args, {"openssl.x86_64"})


PLUGIN_BENCHES: dict[str, Callable[[Path], Awaitable[PluginBench]]] = {
    "sandbox": sandbox_plugin_bench,
    "command": command_plugin_bench,
    "hotfix": hotfix_plugin_bench,
    "apt": apt_plugin_bench,
    "dnf": dnf_plugin_bench,
}


@pytest.mark.parametrize("name", sorted(REGISTRY.plugins))
def test_plugin_behaviour(name: str, tmp_path: Path) -> None:
    """scan -> stage -> install -> rescan: every update staged and given a result, progress
    reported, a failed update is a result (not an exception), and what was installed is gone
    from the next scan."""
    if name not in PLUGIN_BENCHES:
        pytest.fail(f"plug-in {name!r} is registered but has no bench in {__name__}: add one")

    async def main() -> None:
        bench = await PLUGIN_BENCHES[name](tmp_path)
        updater = REGISTRY.plugin(name)().create_updater(
            bench.session, bench.args, PluginContext("r", "c", VirtualClock(), tmp_path)
        )
        found = await updater.scan()
        ids = {u.id for u in found.updates}
        assert ids and bench.failing <= ids, f"the bench offers nothing to install: {found}"
        staged = await updater.stage(found.updates)
        assert {s.update_id for s in staged} == ids
        lines: list[str] = []
        results = await updater.install(found.updates, lines.append)
        assert {r.update_id for r in results} == ids
        assert all(r.started is not None and r.finished is not None for r in results)
        assert lines  # progress was reported
        failed = {r.update_id for r in results if r.outcome is UpdateOutcome.FAILED}
        assert failed == bench.failing, [(r.update_id, r.message) for r in results if r.update_id in failed]
        assert all(r.message for r in results if r.update_id in failed)  # says why
        succeeded = {r.update_id for r in results if r.outcome is UpdateOutcome.SUCCEEDED}
        assert succeeded == ids - failed
        again = await updater.scan()
        assert not {u.id for u in again.updates} & succeeded

    run_virtual(main())
