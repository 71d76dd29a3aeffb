"""Plug-ins that change real systems never touch the machine cau runs on through a sandbox node or
a local transport (a sandbox node's commands run here: `apt-get upgrade` would upgrade this machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.clock import SystemClock
from cau.errors import PluginError
from cau.ports import PluginContext
from cau.registry import Registry
from cau.sandbox.provider import SandboxSession
from cau.testing import Rules, ScriptedTransport, Session
from cau.transport.local import LocalTransport

ARGS = {
    "apt": {},
    "dnf": {},
    "hotfix": {"root": "/nonexistent"},
    "command": {"scan": "true", "install": "true $update$"},
}


@pytest.mark.parametrize("name", sorted(ARGS))
def test_os_plugins_refuse_sandbox_nodes(name: str, tmp_path: Path) -> None:
    plugin = Registry.discover().plugin(name)
    session = SandboxSession("node1", LocalTransport(), cluster=None)  # type: ignore[arg-type]
    ctx = PluginContext("r", "sandbox", SystemClock(), tmp_path)
    with pytest.raises(PluginError, match="simulated"):
        plugin().create_updater(session, plugin.Args.model_validate(ARGS[name]), ctx)


@pytest.mark.parametrize("name", ["apt", "dnf"])
def test_package_managers_refuse_the_local_machine(name: str, tmp_path: Path) -> None:
    plugin = Registry.discover().plugin(name)
    ctx = PluginContext("r", "c", SystemClock(), tmp_path)
    with pytest.raises(PluginError, match="coordinator's own machine"):
        plugin().create_updater(Session("me", LocalTransport()), plugin.Args.model_validate(ARGS[name]), ctx)


@pytest.mark.parametrize("name", sorted(ARGS))
def test_a_node_reached_over_a_transport_is_accepted(name: str, tmp_path: Path) -> None:
    plugin = Registry.discover().plugin(name)
    ctx = PluginContext("r", "c", SystemClock(), tmp_path)
    node = Session("web1", ScriptedTransport(Rules()))  # answers nothing: nothing may run yet
    assert plugin().create_updater(node, plugin.Args.model_validate(ARGS[name]), ctx) is not None
    assert node.transport.commands == []  # type: ignore[attr-defined]
