"""The drain check: a provider that can ask its cluster manager what a drain would do
(`PredictsDrain`, e.g. Pacemaker's scheduler through crm_simulate) is asked before each drain, and
a drain that would stop a role rather than move it is refused: the node is not touched. Shown with
the sandbox provider given that capability."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from cau.domain.profile import MoveMethod
from cau.journal.events import EventKind
from cau.registry import Entry, Registry
from cau.sandbox.provider import SandboxProvider
from tests.support import run_cluster, spec, write_cluster

WOULD_STOP = {"n2": ["db would stop on n2, not move (constraints: ban-db (db -INFINITY on n1))"]}
ASKED: list[tuple[str, MoveMethod]] = []


class SandboxThatPredicts(SandboxProvider):
    name: ClassVar[str] = "sandbox"

    async def drain_problems(self, node: str, move: MoveMethod) -> list[str]:
        ASKED.append((node, move))
        return list(WOULD_STOP.get(node, []))


def registry() -> Registry:
    reg = Registry.discover()
    reg.providers["sandbox"] = Entry(
        group="cau.providers", name="sandbox", target="tests:SandboxThatPredicts", obj=SandboxThatPredicts
    )
    return reg


def test_a_drain_that_would_stop_a_role_is_refused_and_the_node_left_untouched(tmp_path: Path) -> None:
    ASKED.clear()
    config = write_cluster(tmp_path, spec(3))
    done = run_cluster(tmp_path, config, registry=registry(), node_order=["n1", "n2", "n3"])
    n2 = done.node("n2")
    assert n2.status == "Failed" and n2.error_id == "DrainWouldStopRoles"
    assert "db would stop on n2" in n2.message and "ban-db" in n2.message
    assert done.steps("n2", "enter_maintenance") == []  # never put in maintenance
    assert not any(e.kind is EventKind.INTENT and e.node == "n2" and e.step == "install" for e in done.events)
    assert done.state["nodes"]["n2"]["installed"] == []
    # the others were asked too, and updated
    assert [n for n, _ in ASKED] == ["n1", "n2", "n3"]
    assert [done.node(n).status for n in ("n1", "n3")] == ["Succeeded", "Succeeded"]
    assert done.report.status == "PartiallyFailed"
