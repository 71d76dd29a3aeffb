"""Corosync's votequorum, as `corosync-quorumtool -s` reports it: the votes the cluster needs to
stay quorate, each member's votes, and a quorum device's. Pacemaker decides nothing about
quorum itself: it asks Corosync, so this is what cau must count with. A strict majority of one
vote per node is wrong for the commonest cluster of all (two nodes with `two_node: 1`, quorate
on one vote), for weighted votes and for a quorum device.

A pure parser over text (golden outputs in tests/fixtures/pacemaker/); nothing here runs a
command. Proxmox VE's `pvecm status` prints the same sections.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cau.domain.cluster import VoteQuorum
from cau.errors import ProviderError

_FIELD = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]*?):\s*(?P<value>.*?)\s*$")
# A membership line: nodeid (decimal, or hex with -H), votes, [qdevice flags], name [(local)]
_MEMBER = re.compile(r"^\s*(?P<id>0x[0-9a-fA-F]+|\d+)\s+(?P<votes>\d+)\s+(?P<rest>.*?)\s*$")


@dataclass(frozen=True)
class Votequorum:
    expected: int
    total: int
    needed: int  # "Quorum:": the votes the cluster must keep
    quorate: bool
    flags: frozenset[str] = frozenset()
    member_votes: dict[int, int] = field(default_factory=dict)  # corosync nodeid -> votes
    device_votes: int = 0  # what a quorum device adds to the total now

    @property
    def two_node(self) -> bool:
        return "2Node" in self.flags

    def rule(self) -> VoteQuorum:
        """The domain's view: votes needed and a device's votes, with why in words."""
        basis = []
        if self.two_node:
            basis.append("two_node")
        if self.device_votes:
            basis.append("quorum device")
        basis.append(f"expected {self.expected}")
        return VoteQuorum(needed=self.needed, device_votes=self.device_votes, basis=", ".join(basis))


def parse_quorumtool(text: str) -> Votequorum:
    """`corosync-quorumtool -s` (or `pvecm status`) output."""
    fields: dict[str, str] = {}
    members: dict[int, int] = {}
    device_listed = 0
    section = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.endswith("information") and ":" not in stripped:
            section = stripped
            continue
        if section == "Membership information":
            m = _MEMBER.match(line)
            if m is None:
                continue
            nodeid = int(m["id"], 16) if m["id"].startswith("0x") else int(m["id"])
            words = [w for w in m["rest"].split() if w != "(local)"]
            name = words[-1] if words else ""
            if nodeid == 0 or name == "Qdevice":
                device_listed += int(m["votes"])
            else:
                members[nodeid] = int(m["votes"])
            continue
        m = _FIELD.match(stripped)
        if m is not None:
            fields.setdefault(m["key"], m["value"])
    if "Quorum" not in fields or "Total votes" not in fields:
        if "Quorum provider" in fields and "votequorum" not in fields["Quorum provider"]:
            raise ProviderError(
                f"corosync's quorum provider is {fields['Quorum provider']!r}, not corosync_votequorum"
            )
        raise ProviderError(f"corosync-quorumtool: no votequorum figures in {text.strip()[:200]!r}")
    try:
        expected = int(fields.get("Expected votes", "0"))
        total = int(fields["Total votes"])
        # "Quorum: 2  Activity blocked" while not quorate: the figure comes first
        needed = int(fields["Quorum"].split()[0])
    except (ValueError, IndexError) as exc:
        raise ProviderError(f"corosync-quorumtool: unreadable figures ({exc})") from exc
    flags = frozenset(fields.get("Flags", "").split())
    # The device's contribution is what the total holds beyond the members' own votes: a device
    # that is registered but not voting right now adds nothing (and is not counted on).
    device = max(0, min(device_listed, total - sum(members.values()))) if device_listed else 0
    return Votequorum(
        expected=expected,
        total=total,
        needed=needed,
        quorate="Quorate" in flags or fields.get("Quorate", "").lower() == "yes",
        flags=flags,
        member_votes=members,
        device_votes=device,
    )
