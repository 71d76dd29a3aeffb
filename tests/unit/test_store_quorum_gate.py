"""The run store's own quorum joins the maintenance gate (self-updating mode keeps the journal
in etcd on the cluster's nodes): a batch never takes down a majority of the nodes that host a
store member, whatever parallelism the profile asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.domain.cluster import ClusterSnapshot, Node, NodeState
from cau.domain.planning import Block, admit_to_maintenance
from cau.domain.profile import MoveMethod
from cau.domain.results import Status
from cau.errors import PreflightError
from cau.journal.events import JournalEvent
from tests.support import run_cluster, spec, write_cluster

MEMBERS = ["n1", "n2", "n3"]


def _peak(events: list[JournalEvent], among: set[str]) -> int:
    inside: set[str] = set()
    peak = 0
    for e in events:
        if e.node not in among:
            continue
        if e.kind.value == "intent" and e.step == "enter_maintenance":
            inside.add(e.node)
            peak = max(peak, len(inside))
        if (e.kind.value == "outcome" and e.step == "exit_maintenance" and e.data.get("ok")) or (
            e.kind.value == "node_finished"
        ):
            inside.discard(e.node)
    return peak


@pytest.mark.parametrize("members", [[], MEMBERS], ids=["no-store-members", "etcd-on-n1-n3"])
def test_no_batch_takes_down_a_majority_of_the_store_s_members(tmp_path: Path, members: list[str]) -> None:
    config = write_cluster(tmp_path, spec(6))
    listed = ", ".join(f'"{m}"' for m in members)
    config.write_text(
        config.read_text().replace(
            'provider = "sandbox"\n', f'provider = "sandbox"\nstore_members = [{listed}]\n'
        )
    )
    done = run_cluster(tmp_path, config, max_parallel_nodes=3)
    assert done.outcome.status is Status.SUCCEEDED
    peak = _peak(done.events, set(MEMBERS))
    if members:
        assert peak == 1  # 3 members: 2 must stay up
    else:
        assert peak >= 2  # the same run without the rule: the test can see a violation


def test_the_gate_names_the_store_s_majority_when_it_refuses() -> None:
    nodes = [Node(name=f"n{i}", state=NodeState.UP) for i in range(1, 6)]
    snapshot = ClusterSnapshot(name="c", nodes=nodes, roles=[], min_online=1)
    admitted = admit_to_maintenance(
        snapshot, "n2", ["n1"], MoveMethod.SAVE, store_members=["n1", "n2", "n3", "n4", "n5"]
    )
    assert admitted.admitted  # 3 of 5 stay up
    refused = admit_to_maintenance(
        snapshot, "n3", ["n1", "n2"], MoveMethod.SAVE, store_members=["n1", "n2", "n3", "n4", "n5"]
    )
    assert not refused.admitted and refused.block is Block.QUORUM
    assert "2 of the run store's 5 members up, not a majority" in refused.reason
    other = admit_to_maintenance(snapshot, "n3", ["n1", "n2"], MoveMethod.SAVE, store_members=["n4", "n5"])
    assert other.admitted  # n3 hosts no member


def test_store_members_naming_an_unknown_node_refuse_the_run(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    head = 'provider = "sandbox"\n'
    config.write_text(config.read_text().replace(head, f'{head}store_members = ["n1", "etcd9"]\n'))
    with pytest.raises(PreflightError, match=r"store_members names unknown node\(s\) etcd9"):
        run_cluster(tmp_path, config)
