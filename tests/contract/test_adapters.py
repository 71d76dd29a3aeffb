"""Every registered provider and plug-in honours its protocol, found the way a third-party one is."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from pydantic import BaseModel

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import FailbackMode, MoveMethod
from cau.errors import NotFound, PluginError
from cau.ports import PluginContext, ProviderContext
from cau.registry import Registry
from cau.sandbox.provider import SandboxOptions

REGISTRY = Registry.discover()
# Providers that can be brought up here with their default options (no external infrastructure).
SELF_CONTAINED = {"sandbox": SandboxOptions()}


def test_builtins_are_registered_through_entry_points() -> None:
    assert REGISTRY.plugins["sandbox"].ok and REGISTRY.plugins["sandbox"].distribution == "cau"
    assert REGISTRY.providers["sandbox"].ok
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


@pytest.mark.parametrize("name", sorted(SELF_CONTAINED))
def test_provider_behaviour(name: str, tmp_path: Path) -> None:
    """The protocol's promises on a live provider: observe, maintenance in and out (idempotent),
    restart with a new boot id, and a timeout that raises rather than hangs."""
    factory = REGISTRY.provider(name)

    async def main() -> None:
        clock = VirtualClock()
        provider = factory.create(SELF_CONTAINED[name], ProviderContext("c", clock, tmp_path))
        snap = await provider.discover()
        node = snap.nodes[0].name
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
        result = await session.transport.run("echo $CAU_NODE", timeout=10)
        assert result.ok and result.stdout.strip() == node
        await provider.close()

    run_virtual(main())


@pytest.mark.parametrize("name", sorted(SELF_CONTAINED))
def test_plugins_on_a_self_contained_provider(name: str, tmp_path: Path) -> None:
    """scan -> stage -> install -> rescan: installed updates are gone from the next scan, and a
    per-update failure is a result, not an exception."""

    async def main() -> None:
        clock = VirtualClock()
        provider = REGISTRY.provider(name).create(SELF_CONTAINED[name], ProviderContext("c", clock, tmp_path))
        node = (await provider.discover()).nodes[0].name
        session = await provider.session(node)
        for plugin_name in REGISTRY.plugins:
            plugin = REGISTRY.plugin(plugin_name)()
            try:
                args = plugin.Args()
            except ValueError:
                continue  # needs arguments (e.g. the command plug-in's commands): covered by its own tests
            try:
                updater = plugin.create_updater(session, args, PluginContext("r", "c", clock, tmp_path))
            except PluginError:
                continue  # this plug-in does not apply to this provider's nodes (and says so)
            found = await updater.scan()
            if not found.updates:
                continue
            staged = await updater.stage(found.updates)
            assert {s.update_id for s in staged} == {u.id for u in found.updates}
            lines: list[str] = []
            results = await updater.install(found.updates, lines.append)
            assert {r.update_id for r in results} == {u.id for u in found.updates}
            assert all(r.started is not None and r.finished is not None for r in results)
            assert lines  # progress was reported
            again = await updater.scan()
            assert not {u.id for u in again.updates} & {
                r.update_id for r in results if r.outcome.value == "Succeeded"
            }

    run_virtual(main())
