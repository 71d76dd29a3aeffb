"""The dnf plug-in against a scripted node that answers with real-format dnf/rpm output.

No RPM host runs here: the node is a handler function (httpx's MockTransport idea) that answers
each command from the golden outputs in tests/fixtures/dnf and keeps a tiny rpm database, so an
upgrade really changes what `rpm -q` says afterwards.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cau.clock import SystemClock
from cau.domain.updates import UpdateOutcome
from cau.plugins import dnf_facts
from cau.plugins.dnf import DnfArgs, DnfPlugin
from cau.ports import CommandResult, PluginContext

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dnf"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class ScriptedNode:
    """A RHEL 9 node: check-update offers the rhel9 fixture; `dnf upgrade` installs what it names."""

    installed: dict[str, str] = field(default_factory=dict)  # name.arch -> evr
    commands: list[str] = field(default_factory=list)
    upgraded: bool = False

    def __post_init__(self) -> None:
        for c in dnf_facts.parse_check_update(fixture("check-update-rhel9.txt")):
            self.installed[f"{c.name}.{c.arch}"] = "0.1-1.el9"  # older than anything offered

    async def run(
        self, command: str, *, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> CommandResult:
        self.commands.append(command)
        if "check-update" in command:
            return CommandResult(
                command,
                0 if self.upgraded else 100,
                "" if self.upgraded else fixture("check-update-rhel9.txt"),
            )
        if "updateinfo list --security" in command:
            return CommandResult(command, 0, fixture("updateinfo-security-rhel9.txt"))
        if "needs-restarting -r" in command:
            if self.upgraded:
                return CommandResult(command, 1, fixture("needs-restarting-required.txt"))
            return CommandResult(command, 0, fixture("needs-restarting-not-required.txt"))
        if " upgrade --downloadonly " in command:
            return CommandResult(command, 0)
        if " upgrade " in command:
            for target in re.findall(r"(\S+)-(\d+:)?([^-\s]+-[^-\s]+)\.(x86_64|noarch|i686)", command):
                name, epoch, vr, arch = target
                self.installed[f"{name}.{arch}"] = f"{epoch}{vr}"
            self.upgraded = True
            return CommandResult(command, 0)
        if command.startswith("rpm -q"):
            names = command.split()[4:]
            lines = []
            for key, evr in self.installed.items():
                name, arch = key.rsplit(".", 1)
                if name in names:
                    full = evr if ":" in evr else f"(none):{evr}"
                    lines.append(f"{name}\t{full}\t{arch}")
            return CommandResult(command, 0, "\n".join(lines) + "\n")
        return CommandResult(command, 127, "", f"unexpected command: {command}")

    async def put(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        raise AssertionError("the dnf plug-in copies nothing")

    async def close(self) -> None:
        return None


@dataclass
class Session:
    node: str
    transport: ScriptedNode


def make(args: DnfArgs) -> tuple[ScriptedNode, object]:
    node = ScriptedNode()
    ctx = PluginContext("r", "c", SystemClock(), Path("/nonexistent"))
    return node, DnfPlugin().create_updater(Session("rhel1", node), args, ctx)


def test_scan_stage_install_and_restart(tmp_path: Path) -> None:
    node, updater = make(DnfArgs())

    async def main() -> None:
        found = await updater.scan()  # type: ignore[attr-defined]
        offered = dnf_facts.parse_check_update(fixture("check-update-rhel9.txt"))
        assert len(found.updates) == len(offered) and not found.restart_pending
        kernel = next(u for u in found.updates if u.id == "kernel.x86_64")
        assert kernel.needs_restart and kernel.details["to"] == "5.14.0-503.21.1.el9_5"
        nm = next(u for u in found.updates if u.id == "NetworkManager.x86_64")
        assert nm.details["nevra"] == "NetworkManager-1:1.48.10-5.el9_5.x86_64"  # epoch kept
        assert all(s.ok for s in await updater.stage(found.updates))  # type: ignore[attr-defined]
        results = await updater.install(found.updates, lambda _m: None)  # type: ignore[attr-defined]
        assert all(r.outcome is UpdateOutcome.SUCCEEDED for r in results), [
            r.message for r in results if r.message
        ]
        restart = {r.update_id for r in results if r.restart_required}
        assert "kernel.x86_64" in restart and "NetworkManager.x86_64" not in restart  # needs-restarting names
        assert (
            next(r for r in results if r.update_id == "kernel.x86_64").details["after"]
            == "5.14.0-503.21.1.el9_5"
        )
        assert (await updater.scan()).updates == ()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert all(c.startswith(("LC_ALL=C", "rpm -q")) for c in node.commands)
    upgrade = next(c for c in node.commands if " upgrade " in c and "downloadonly" not in c)
    assert "dnf -y -q upgrade" in upgrade and "kernel-5.14.0-503.21.1.el9_5.x86_64" in upgrade.split()


def test_security_only_narrows_to_advisories() -> None:
    node, updater = make(DnfArgs(security_only=True, min_severity="Important"))

    async def main() -> None:
        found = await updater.scan()  # type: ignore[attr-defined]
        names = {u.details["name"] for u in found.updates}
        assert "kernel" in names and "kernel-core" in names
        assert "NetworkManager" not in names  # only a Moderate advisory

    asyncio.run(main())
    assert any("updateinfo list --security" in c for c in node.commands)


def test_include_and_exclude() -> None:
    _, updater = make(DnfArgs(include=["kernel*"], exclude=["kernel-tools"]))
    found = asyncio.run(updater.scan())  # type: ignore[attr-defined]
    names = {u.details["name"] for u in found.updates}
    assert names and all(n.startswith("kernel") for n in names) and "kernel-tools" not in names
