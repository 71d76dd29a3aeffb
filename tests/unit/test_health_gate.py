"""The health gate: before each drain, a provider that can tell cluster health (Pacemaker's
failed actions, unclean nodes...) is asked, and no node is drained on top of a failure. Shown here
with the sandbox provider given that capability and a failure that appears mid-run."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cau.journal.events import EventKind, JournalEvent
from cau.registry import Entry, Registry
from cau.sandbox.provider import SandboxProvider
from tests.support import node, run_cluster, spec, write_cluster

PROBLEMS: list[str] = []


class SandboxWithHealth(SandboxProvider):
    """The sandbox, reporting whatever the test says is wrong with the cluster."""

    name: ClassVar[str] = "sandbox"

    async def health_problems(self) -> list[str]:
        return list(PROBLEMS)


def registry() -> Registry:
    reg = Registry.discover()
    reg.providers["sandbox"] = Entry(
        group="cau.providers", name="sandbox", target="tests:SandboxWithHealth", obj=SandboxWithHealth
    )
    return reg


def fail_after_first_node(event: JournalEvent) -> None:
    if event.kind is EventKind.NODE_FINISHED and not PROBLEMS:
        PROBLEMS.append("resource db failed on n2 (monitor: not running)")


def entered(events: list[JournalEvent]) -> list[str]:
    return [e.node or "" for e in events if e.kind is EventKind.INTENT and e.step == "enter_maintenance"]


def test_a_failure_that_appears_mid_run_stops_further_drains(tmp_path: Path) -> None:
    PROBLEMS.clear()
    config = write_cluster(tmp_path, spec([node("n1"), node("n2"), node("n3")]))
    done = run_cluster(
        tmp_path, config, registry=registry(), on_event=fail_after_first_node, node_order=["n1", "n2", "n3"],
        max_failed_nodes=1,
    )  # fmt: skip
    assert entered(done.events) == ["n1"]  # n2 was never drained on top of the failure
    first, second = done.node("n1"), done.node("n2")
    assert first.status == "Succeeded"
    assert second.status == "Failed" and second.error_id == "ClusterUnhealthy"
    assert "resource db failed on n2" in second.message
    third = done.node("n3")  # refused the same way: the failure budget (1) is then exceeded
    assert third.error_id == "ClusterUnhealthy" and third.succeeded_count == 0
    assert done.report.status == "Failed"


def test_allow_unhealthy_cluster_drains_anyway(tmp_path: Path) -> None:
    PROBLEMS[:] = ["resource db failed on n2"]
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(tmp_path, config, registry=registry(), allow_unhealthy_cluster=True)
    assert done.report.status == "Succeeded"
    assert sorted(entered(done.events)) == ["n1", "n2", "n3"]


def test_a_healthy_cluster_is_not_held_up(tmp_path: Path) -> None:
    PROBLEMS.clear()
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(tmp_path, config, registry=registry())
    assert done.report.status == "Succeeded"
