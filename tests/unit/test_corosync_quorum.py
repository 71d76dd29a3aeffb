"""Golden-file tests of the votequorum parser: real `corosync-quorumtool -s` outputs captured from
the lab's Corosync 3.1.7 (tests/fixtures/corosync/README.md says how), one real Proxmox VE
`pvecm status`, and one crafted quorum-device sample (no qdevice runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.domain.cluster import VoteQuorum
from cau.errors import ProviderError
from cau.providers.corosync_quorum import Votequorum, parse_quorumtool

FIXTURES = Path(__file__).parent.parent / "fixtures" / "corosync"


def quorum(name: str) -> Votequorum:
    return parse_quorumtool((FIXTURES / name).read_text())


def test_three_nodes_one_vote_each() -> None:
    q = quorum("three-nodes.quorumtool.txt")
    assert (q.expected, q.total, q.needed, q.quorate) == (3, 3, 2, True)
    assert q.member_votes == {1: 1, 2: 1, 3: 1} and q.device_votes == 0 and not q.two_node
    assert q.rule() == VoteQuorum(needed=2, device_votes=0, basis="expected 3")


def test_a_node_down_is_missing_from_the_members_and_the_total() -> None:
    q = quorum("three-nodes-node3-down.quorumtool.txt")
    assert (q.expected, q.total, q.needed, q.quorate) == (3, 2, 2, True)
    assert q.member_votes == {1: 1, 2: 1}


def test_no_quorum_is_read_too() -> None:
    q = quorum("three-nodes-alone.quorumtool.txt")  # node2 and node3 killed: node1 alone
    assert (q.total, q.needed, q.quorate) == (1, 2, False)
    assert q.member_votes == {1: 1}


def test_weighted_votes_raise_expected_votes_and_the_quorum() -> None:
    q = quorum("three-nodes-node1-two-votes.quorumtool.txt")  # corosync-quorumtool -v 2 -n 1
    assert (q.expected, q.total, q.needed) == (4, 4, 3)
    assert q.member_votes == {1: 2, 2: 1, 3: 1}


def test_two_node_is_quorate_on_one_vote() -> None:
    q = quorum("two-node.quorumtool.txt")
    assert q.two_node and q.needed == 1 and q.expected == 2
    assert q.member_votes == {1: 1, 2: 1}
    assert q.rule().basis == "two_node, expected 2"


def test_proxmox_pvecm_status_hex_node_ids() -> None:
    q = quorum("proxmox-pvecm-status.txt")
    assert (q.expected, q.total, q.needed, q.quorate) == (2, 2, 2, True)
    assert q.member_votes == {1: 1, 2: 1}


def test_a_quorum_device_adds_its_vote() -> None:
    q = quorum("qdevice-crafted.quorumtool.txt")
    assert q.member_votes == {1: 1, 2: 1} and q.device_votes == 1 and q.needed == 2
    assert q.rule() == VoteQuorum(needed=2, device_votes=1, basis="quorum device, expected 3")


def test_a_quorum_device_that_does_not_vote_now_is_not_counted() -> None:
    text = (
        (FIXTURES / "qdevice-crafted.quorumtool.txt")
        .read_text()
        .replace("Total votes:      3", "Total votes:      2")
    )
    assert parse_quorumtool(text).device_votes == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Cannot initialize QUORUM service\n",
        "Quorum provider:  corosync_votequorum\nQuorum:   x\nTotal votes: 2\n",
    ],
)
def test_unreadable_output_is_a_provider_error(text: str) -> None:
    with pytest.raises(ProviderError):
        parse_quorumtool(text)
