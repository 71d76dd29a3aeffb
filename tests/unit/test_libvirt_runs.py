"""Whole Updating Runs of the libvirt provider on scripted Debian hypervisor hosts, in virtual
time: every guest leaves its host before the install and restart and comes back after, never
restarted; each migration is journaled with libvirt's figures and shows in the report (its
table and the timeline's guest lanes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel
from rich.console import Console

from cau.cli.render_text import run_summary
from cau.engine.coordinator import RunOutcome
from cau.errors import PreflightError
from cau.journal.events import EnterOutcome, EventKind, FailbackOutcome, JournalEvent
from cau.ports import ProviderContext
from cau.providers.libvirt import LibvirtOptions, LibvirtProvider
from cau.registry import Entry, Registry
from cau.reports.render_html import render_html
from cau.testing import Result
from tests.contract.scripted import DebianHost, Guest, LibvirtPool
from tests.support import run_journaled

PROBE = (  # the apt plug-in's reboot-required probe, after an install
    "if test -e /var/run/reboot-required; then echo yes; cat /var/run/reboot-required.pkgs 2>/dev/null; "
    "else echo no; fi"
)


class DebianHypervisors(LibvirtPool):
    """Hypervisor hosts that are each the apt fixtures' Debian host (installs ask for a restart)."""

    def __init__(self, names: list[str], guests: list[Guest]) -> None:
        super().__init__(names, guests)
        self.debian = {name: DebianHost() for name in names}
        for host in self.debian.values():
            host.answer(PROBE, "yes\n")

    def other(self, node: str, command: str) -> Result:
        libvirt = command.startswith(("virsh ", "mkdir -p /var/lib/cau", "rm -f /var/lib/cau"))
        if libvirt or "@@cau-libvirt@@" in command or "@@cau-path@@" in command:
            return super().other(node, command)
        return self.debian[node](command)


class ScriptedLibvirt(LibvirtProvider):
    POOL: ClassVar[DebianHypervisors]

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> LibvirtProvider:
        assert isinstance(options, LibvirtOptions)
        return cls(ctx.cluster, options, clock=ctx.clock, transports=cls.POOL.transports)


def run(tmp: Path, pool: DebianHypervisors, **profile: Any) -> tuple[RunOutcome, list[JournalEvent]]:
    ScriptedLibvirt.POOL = pool
    reg = Registry.discover()
    reg.providers["libvirt"] = Entry(
        group="cau.providers", name="libvirt", target="tests:ScriptedLibvirt", obj=ScriptedLibvirt
    )
    config = tmp / "clusters.toml"
    nodes = "".join(
        f'[[clusters.vm.options.nodes]]\nname = "{n}"\nhost = "{a}"\n' for n, a in pool.addresses.items()
    )
    config.write_text(
        '[clusters.vm]\nprovider = "libvirt"\n[clusters.vm.options]\n'
        'known_hosts = "/etc/cau/known_hosts"\nallow_member_coordinator = true\nguest_memory_mib = 320\n'
        + nodes
    )
    profile = {"plugins": [{"name": "apt", "args": {"exclude": ["labbroken"]}}], **profile}
    return run_journaled(tmp, config, "vm", registry=reg, **profile)


def test_a_run_migrates_every_guest_away_and_back_and_reports_each_migration(tmp_path: Path) -> None:
    pool = DebianHypervisors(["hv1", "hv2", "hv3"], [Guest("g1", "hv1"), Guest("g2", "hv2")])
    outcome, events = run(tmp_path, pool)
    report = outcome.report
    assert report is not None and report.status == "Succeeded", report and report.message
    assert all(n.restarts == 1 for n in report.nodes)
    # every guest back where it was, its state kept (migrated, never restarted)
    assert {g.name: (g.host, g.boots, g.state) for g in pool.guests.values()} == {
        "g1": ("hv1", 1, "running"),
        "g2": ("hv2", 1, "running"),
    }
    journaled = [
        (e.node, e.payload.step.value, m.role, m.from_node, m.to_node)
        for e in events
        if e.kind is EventKind.OUTCOME and isinstance(e.payload, EnterOutcome | FailbackOutcome)
        for m in e.payload.moves
    ]
    assert [j for j in journaled if j[0] == "hv1"] == [
        ("hv1", "enter_maintenance", "g1", "hv1", "hv3"),  # hv2 has g2 and 320 MiB: hv3 has more room
        ("hv1", "failback", "g1", "hv3", "hv1"),
    ]
    # the report: one row per migration with libvirt's figures, in the order they happened
    assert [(m.role, m.from_node, m.to_node, m.downtime_ms) for m in report.moves][:2] == [
        ("g1", "hv1", "hv3", 41),
        ("g1", "hv3", "hv1", 41),
    ]
    assert len(report.moves) == 4 and all(m.ok and m.probe_failed_checks is None for m in report.moves)
    page = render_html([report])
    assert page.count('class="move-row"') == 4
    assert 'data-role="g1"' in page and "downtime 41 ms" in page  # the guest's lane, with the figures
    console = Console(width=200, record=True)
    console.print(run_summary(report, detailed=True))  # `cau report --detailed`
    text = console.export_text()
    assert "Role moves" in text and text.count("41 ms") == 4 and text.count("63.9 MiB") == 4


def test_a_pool_whose_hosts_cannot_reach_each_other_is_refused_before_anything_moves(tmp_path: Path) -> None:
    pool = DebianHypervisors(["hv1", "hv2", "hv3"], [Guest("g1", "hv1"), Guest("g2", "hv2")])
    pool.no_path[("hv2", "hv1")] = "Cannot recv data: Host key verification failed.: Connection reset by peer"
    with pytest.raises(PreflightError) as refused:
        run(tmp_path, pool)
    assert "hv2 -> hv1 (1 of 6 migration paths): the source host cannot reach the target's libvirt" in (
        refused.value.message
    )
    assert "Host key verification failed" in refused.value.message
    assert refused.value.hint is not None and "nothing was changed" in refused.value.hint
    # nothing moved, nothing marked, nothing installed
    assert pool.migrations == [] and all(not marks for marks in pool.marks.values())
    assert {g.name: (g.host, g.state) for g in pool.guests.values()} == {
        "g1": ("hv1", "running"),
        "g2": ("hv2", "running"),
    }
