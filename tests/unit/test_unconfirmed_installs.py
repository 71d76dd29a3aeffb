"""A node is never reported Succeeded for updates nothing says were installed: when a plug-in
fails outright (no result for its updates) and the rescan that would have told fails too, the
updates stay remaining and the node does not succeed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from cau.domain.updates import ScanResult, Update, UpdateResult
from cau.errors import PluginError
from cau.ports import NodeSession, NodeUpdater, PluginContext, ProgressCallback
from cau.registry import Entry, Registry
from cau.sandbox.plugin import SandboxArgs, SandboxNodeUpdater, SandboxPlugin
from cau.sandbox.provider import SandboxSession
from tests.support import run_cluster, spec, write_cluster


class FlakyUpdater(SandboxNodeUpdater):
    """The sandbox's updates, from a repository that goes away after the first scan."""

    scans: ClassVar[dict[str, int]] = {}

    async def scan(self) -> ScanResult:
        n = self.scans[self._node] = self.scans.get(self._node, 0) + 1
        if n > 1:
            raise PluginError(f"{self._node}: the repository does not answer (scan)")
        return await super().scan()

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        raise PluginError(f"{self._node}: the repository does not answer (install)")


class FlakyPlugin(SandboxPlugin):
    name: ClassVar[str] = "flaky"

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        assert isinstance(session, SandboxSession) and isinstance(args, SandboxArgs)
        return FlakyUpdater(session.node, session.cluster, args)


def test_a_failed_plugin_and_a_failed_rescan_do_not_make_a_node_succeed(tmp_path: Path) -> None:
    FlakyUpdater.scans = {}
    reg = Registry.discover()
    reg.plugins["flaky"] = Entry(
        group="cau.plugins", name="flaky", target="tests:FlakyPlugin", obj=FlakyPlugin
    )
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(
        tmp_path, config, registry=reg, plugins=["flaky"], max_retries_per_node=0, max_failed_nodes=2
    )
    nodes = {n.name: n for n in done.outcome.report.nodes}
    assert all(n.status != "Succeeded" for n in nodes.values()), {k: n.status for k, n in nodes.items()}
    assert all(n.error_id == "UpdatesRemaining" for n in nodes.values())
    # nothing was installed on any node, and none is left in maintenance
    assert all(not node["installed"] for node in done.state["nodes"].values())
    assert not any(node["in_maintenance"] for node in done.state["nodes"].values())
