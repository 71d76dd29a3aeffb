"""The apt plug-in driven through a scripted node (cau.testing) that answers from the golden
outputs of tests/fixtures/apt, matched by the exact command each was recorded from (FixtureHost):
scan, install, restart facts, and the exact commands the plug-in sends. A fixture recorded with
a command the plug-in no longer runs is not answered, so it cannot drift unnoticed."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.updates import HeldUpdate, ScanResult, Update, UpdateOutcome, UpdateResult
from cau.errors import PluginError, PluginOutputError, is_retryable
from cau.plugins.apt import AptArgs, AptNodeUpdater, AptPlugin
from cau.ports import PluginContext
from cau.testing import Reply, ScriptedTransport, Session
from tests.contract.scripted import FIXTURES, FixtureHost
from tests.golden import GoldenFiles

ENV = "LC_ALL=C DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=l"
APT = f"{ENV} apt-get -q -o DPkg::Lock::Timeout=300"
UPDATE = f"{APT} update"
SIMULATE = f"{ENV} apt-get -s -o Debug::NoLocking=1 -o APT::Get::Show-Versions=1 upgrade"
DPKG = "dpkg-query -W -f='${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n'"
STATE = f"test -e /var/run/reboot-required; echo $?; {DPKG}; echo @@cau-split@@; apt-mark showhold"
PROBE = (
    "if test -e /var/run/reboot-required; then echo yes; cat /var/run/reboot-required.pkgs 2>/dev/null; "
    "else echo no; fi"
)
NEEDRESTART = "command -v needrestart >/dev/null && needrestart -b 2>/dev/null; true"
OPTIONS = "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"
# `apt-get -s upgrade` on a node with nothing to do
NOTHING = (
    "Reading package lists...\nBuilding dependency tree...\nReading state information...\n"
    "Calculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n"
)
LAB = ("labpkg", "labrelease", "labtool")


def packages(*names: str) -> str:
    return f"{DPKG} {' '.join(names)} 2>/dev/null"


def install(*pins: str) -> str:
    return f"{APT} -y {OPTIONS} install --only-upgrade {' '.join(pins)}"


def dpkg_lines(versions: dict[str, str], abbrev: str = "ii ") -> str:
    return "".join(f"{name}\t{version}\t{abbrev}\n" for name, version in versions.items())


def updater(host: FixtureHost, **args: Any) -> tuple[AptNodeUpdater, ScriptedTransport]:
    transport = ScriptedTransport(host, name="node1")
    ctx = PluginContext("run-1", "lab", VirtualClock(), Path("/nonexistent"))
    made = AptPlugin().create_updater(Session("node1", transport), AptArgs(**args), ctx)
    assert isinstance(made, AptNodeUpdater)
    return made, transport


def lab_host() -> FixtureHost:
    """A lab host (real captures): labpkg, labrelease, labtool 1.0 with 1.1 published; labbroken
    1.1 left half-configured by its failing postinst."""
    host = FixtureHost(
        "apt", "sim-lab-half-configured", "dpkg-query-lab-half-configured", "apt-mark-showhold-none"
    )
    host.answer(UPDATE, "Reading package lists...\n")
    return host


def update(name: str, old: str, new: str, action: str = "upgrade") -> Update:
    return Update(
        id=name,
        title=f"{name} {old} -> {new}",
        plugin="apt",
        details={"from": old, "to": new, "action": action},
    )


def install_all(
    host: FixtureHost, updates: list[Update], **args: Any
) -> tuple[list[UpdateResult], list[str]]:
    up, transport = updater(host, **args)
    progress: list[str] = []
    results = run_virtual(up.install(updates, progress.append))
    assert progress == [f"apt-get installing {len(updates)} package(s)"]
    return results, transport.commands


# --- scan ---------------------------------------------------------------------------------------------


def scan_lab() -> tuple[FixtureHost, ScanResult, list[str]]:
    host = lab_host()
    up, transport = updater(host)
    return host, run_virtual(up.scan()), transport.commands


def test_scan_offers_the_simulated_upgrades_and_a_repair_for_a_half_configured_package() -> None:
    _, found, commands = scan_lab()
    assert commands == [UPDATE, SIMULATE, STATE]
    assert [(u.id, u.details["from"], u.details["to"], u.details["action"]) for u in found.updates] == [
        ("labpkg", "1.0", "1.1", "upgrade"),
        ("labrelease", "1.0", "1.1", "upgrade"),
        ("labtool", "1.0", "1.1", "upgrade"),
        ("labbroken", "1.1", "1.1", "repair"),
    ]
    assert found.updates[0].details["origin"] == "cau-lab:localhost"
    assert found.updates[-1].details["state"] == "half-configured"
    assert found.updates[-1].title == "labbroken 1.1 is half-configured: finish installing it"
    assert found.held == () and not found.restart_pending


def test_scan_sees_a_pending_restart_and_lists_nothing_when_apt_has_nothing() -> None:
    host = lab_host()
    host.files.add("/var/run/reboot-required")
    host.answer(SIMULATE, NOTHING)
    host.answer(DPKG, dpkg_lines({"labpkg": "1.1"}))
    up, transport = updater(host, update_lists=False)
    found = run_virtual(up.scan())
    assert found == ScanResult(updates=(), restart_pending=True)
    assert transport.commands == [SIMULATE, STATE]


@pytest.mark.parametrize(("hold", "reason"), [("labpkg\n", "held"), ("", "kept back")])
def test_scan_reports_held_and_kept_back_upgrades_as_such(hold: str, reason: str) -> None:
    host = FixtureHost("apt", "sim-lab-held-show-versions")
    host.answer(UPDATE, "")
    host.answer(
        DPKG, dpkg_lines({"labpkg": "1.0"}, "hi " if hold else "ii ") + dpkg_lines({"labtool": "1.0"})
    )
    host.answer("apt-mark showhold", hold)
    found = run_virtual(updater(host)[0].scan())
    assert [u.id for u in found.updates] == ["labrelease", "labtool"]
    why = "held (apt-mark hold)" if hold else "kept back (needs new packages or removals)"
    assert found.held == (
        HeldUpdate(
            id="labpkg",
            title=f"labpkg 1.0 -> 1.1: {why}",
            plugin="apt",
            reason=reason,
            details={"from": "1.0", "to": "1.1"},
        ),
    )
    # the profile's patterns apply to held updates too
    assert run_virtual(updater(host, exclude=["labpkg"])[0].scan()).held == ()


def scan_states(**args: Any) -> tuple[FixtureHost, ScanResult]:
    host = FixtureHost("apt", "dpkg-query-states", "apt-mark-showhold")
    host.answer(UPDATE, "")
    host.answer(SIMULATE, NOTHING)
    return host, run_virtual(updater(host, **args)[0].scan())


def test_every_unfinished_dpkg_state_is_a_repair_to_finish() -> None:
    _, found = scan_states()
    assert [(u.id, u.details["state"], u.details["to"]) for u in found.updates] == [
        ("postgresql-15", "half-configured", "15.10-0+deb12u1"),
        ("nginx-common", "unpacked", "1.22.1-9+deb12u1"),
        ("man-db", "triggers-pending", "2.11.2-2"),
        ("brokenpkg", "reinstall-required", "1.0-1"),
    ]
    assert {u.details["action"] for u in found.updates} == {"repair"}
    _, found = scan_states(exclude=["postgresql-*"], include=["*-*"])
    assert [u.id for u in found.updates] == ["nginx-common", "man-db"]


def test_a_simulation_that_fails_is_a_plugin_error_with_apts_words() -> None:
    host = lab_host()
    host.answer(
        SIMULATE, Reply("", 100, "E: The package lists or status file could not be parsed or opened.\n")
    )
    with pytest.raises(
        PluginError, match=r"^apt: apt-get -s upgrade on node1 failed \(exit 100\): E: The package"
    ):
        run_virtual(updater(host)[0].scan())


def test_a_held_lock_is_named_as_such() -> None:
    host = lab_host()
    host.answer(UPDATE, Reply("", 100, (FIXTURES / "apt" / "lock-frontend-held.txt").read_text()))
    with pytest.raises(PluginError) as caught:
        run_virtual(updater(host)[0].scan())
    assert str(caught.value).startswith(
        "apt: apt-get update on node1: the dpkg lock is held by another process for more than 0:05:00 "
        "(lock_timeout): E: Could not get lock /tmp/aptwork/admin/lock-frontend. "
        "It is held by process 3782 (python3)"
    )


# --- stage and install ---------------------------------------------------------------------------------


def test_stage_downloads_exactly_the_scanned_versions() -> None:
    host = lab_host()
    download = f"{APT} -y -d install --only-upgrade labpkg=1.1 labtool=1.1"
    host.answer(
        download,
        "",
        Reply("", 100, "E: Failed to fetch http://10.77.0.1/labtool_1.1_all.deb  404  Not Found\n"),
    )
    up, transport = updater(host)
    wanted = [update("labpkg", "1.0", "1.1"), update("labtool", "1.0", "1.1")]
    assert [(s.update_id, s.ok, s.message) for s in run_virtual(up.stage(wanted))] == [
        ("labpkg", True, "downloaded"),
        ("labtool", True, "downloaded"),
    ]
    failed = run_virtual(up.stage(wanted))
    assert not any(s.ok for s in failed) and "404  Not Found" in failed[0].message
    assert transport.commands == [download, download]
    assert run_virtual(up.stage([])) == []


def test_dist_upgrade_without_filters_installs_the_whole_dist_upgrade() -> None:
    host = FixtureHost("apt")
    host.answer(f"{APT} -y {OPTIONS} dist-upgrade", "")
    host.answer(packages("labpkg"), dpkg_lines({"labpkg": "1.0"}), dpkg_lines({"labpkg": "1.1"}))
    host.answer(PROBE, "no\n")
    host.answer(NEEDRESTART, "")
    results, commands = install_all(host, [update("labpkg", "1.0", "1.1")], mode="dist-upgrade")
    assert [r.outcome for r in results] == [UpdateOutcome.SUCCEEDED]
    assert f"{APT} -y {OPTIONS} dist-upgrade" in commands


def lab_install(
    probe: str | None, needrestart: str | None = None, **args: Any
) -> tuple[FixtureHost, list[UpdateResult], list[str]]:
    """labpkg, labrelease and labtool go from 1.0 to 1.1; `probe` and `needrestart` are the
    fixtures that answer the restart facts (None: a crafted answer)."""
    host = FixtureHost("apt")
    before = dict.fromkeys(LAB, "1.0")
    host.answer(packages(*LAB), dpkg_lines(before), dpkg_lines(dict.fromkeys(LAB, "1.1")))
    host.answer(install(*(f"{n}=1.1" for n in LAB)), "Setting up labpkg (1.1) ...\n")
    if probe is None:
        host.answer(PROBE, "yes\nlabpkg\n")  # the lab's labpkg asks for a restart, as its postinst does
    else:
        host.serve(probe)
    if needrestart is not None:
        host.serve(needrestart)
    results, commands = install_all(host, [update(n, "1.0", "1.1") for n in LAB], **args)
    return host, results, commands


def test_install_reports_versions_before_and_after_and_the_package_that_asked_for_a_restart() -> None:
    _, results, commands = lab_install(None)
    assert commands == [
        packages(*LAB) + "; true",
        install("labpkg=1.1", "labrelease=1.1", "labtool=1.1"),
        packages(*LAB) + "; true",
        PROBE,
    ]
    assert [(r.update_id, r.outcome, r.restart_required, r.details) for r in results] == [
        (name, UpdateOutcome.SUCCEEDED, name == "labpkg", {"before": "1.0", "after": "1.1", "wanted": "1.1"})
        for name in LAB
    ]
    assert all(r.message == "" and r.error_code is None and r.started and r.finished for r in results)


def test_a_restart_asked_for_by_other_packages_is_not_these_updates() -> None:
    _, results, commands = lab_install("reboot-required-pkgs")  # the kernel, libc6 and dbus asked
    assert [r.restart_required for r in results] == [False, False, False]
    assert commands[-1] == PROBE  # the flag is there: needrestart is not asked


@pytest.mark.parametrize(
    ("fixture", "restart"),
    [
        ("needrestart-kernel-version-microcode", True),
        ("needrestart-kernel-abi-services", True),
        ("needrestart-all-current", False),
        ("needrestart-readme-example", False),  # services and sessions to restart: not the node
    ],
)
def test_without_the_flag_file_needrestart_says_whether_the_kernel_is_outdated(
    fixture: str, restart: bool
) -> None:
    _, results, commands = lab_install("reboot-required-absent", fixture)
    assert commands[-2:] == [PROBE, NEEDRESTART]
    assert [r.restart_required for r in results] == [restart] * 3


def test_use_needrestart_false_trusts_the_flag_file_only() -> None:
    _, results, commands = lab_install("reboot-required-absent", use_needrestart=False)
    assert commands[-1] == PROBE and not any(r.restart_required for r in results)


@pytest.mark.parametrize(
    ("command", "answer", "named"),
    [
        (NEEDRESTART, "NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: outdated\n", "needrestart -b"),
        (packages(*LAB), "<html><body>502 Bad Gateway</body></html>\n", "dpkg-query"),
    ],
)
def test_output_apt_cannot_read_is_a_plugin_output_error_naming_the_command_and_the_node(
    command: str, answer: str, named: str
) -> None:
    host = FixtureHost("apt")
    host.answer(packages(*LAB), dpkg_lines(dict.fromkeys(LAB, "1.0")), dpkg_lines(dict.fromkeys(LAB, "1.1")))
    host.answer(install(*(f"{n}=1.1" for n in LAB)), "")
    host.serve("reboot-required-absent")
    host.answer(command, answer)  # replaces what the plug-in would have read
    with pytest.raises(PluginOutputError, match=rf"^apt: unexpected output of {named} on node1: ") as caught:
        install_all(host, [update(n, "1.0", "1.1") for n in LAB])
    assert not is_retryable(caught.value)  # an unknown apt or a bug: the engine does not retry it


def install_broken() -> tuple[FixtureHost, list[UpdateResult]]:
    host = FixtureHost("apt")
    host.serve("install-lab-postinst-fails", stderr_lines=("E: ",))
    host.answer(packages("labbroken"), dpkg_lines({"labbroken": "1.1"}, "iF "))
    host.serve("reboot-required-absent")
    host.serve("needrestart-all-current")
    results, _ = install_all(host, [update("labbroken", "1.1", "1.1", "repair")])
    return host, results


def test_a_failing_maintainer_script_is_named_in_dpkgs_words() -> None:
    _, (result,) = install_broken()
    assert result.outcome is UpdateOutcome.FAILED and result.error_code == 100
    assert result.message == (
        "installed labbroken package post-installation script subprocess returned error exit status 1 "
        "(dpkg --configure labbroken); left half-configured"
    )
    assert result.details == {
        "before": "1.1 (half-configured)",
        "after": "1.1 (half-configured)",
        "wanted": "1.1",
    }
    assert not result.restart_required


HELD_INSTALL = ["curl", "openssl", "libcurl4", "bash", "libc6", "nodejs", "nginx"]
REFUSED = "E: Held packages were changed and -y was used without --allow-change-held-packages.\n"


def install_held() -> tuple[FixtureHost, dict[str, UpdateResult]]:
    """The build host's packages with curl, libcurl4, openssl held (real dpkg-query output): apt
    refuses to change held packages."""
    host = FixtureHost("apt", "dpkg-query-held", "reboot-required-absent", "needrestart-all-current")
    wanted = {
        "curl": "7.88.1-10+deb12u15",
        "openssl": "3.0.19-1~deb12u3",
        "libcurl4": "7.88.1-10+deb12u15",
        "bash": "5.2.15-2+b9",
        "libc6": "2.36-9+deb12u15",
        "nodejs": "20.20.3-1nodesource1",
        "nginx": "1.22.1-9+deb12u2",
    }
    host.answer(install(*(shlex.quote(f"{n}={v}") for n, v in wanted.items())), Reply("", 100, REFUSED))
    results, _ = install_all(host, [update(n, "?", v) for n, v in wanted.items()])
    return host, {r.update_id: r for r in results}


def test_held_packages_are_reported_held_and_multi_arch_names_are_found() -> None:
    _, results = install_held()
    assert {n: r.outcome for n, r in results.items()} == dict.fromkeys(HELD_INSTALL, UpdateOutcome.FAILED)
    assert results["curl"].message == "held: not upgraded (7.88.1-10+deb12u14)"
    assert results["openssl"].message == "held: not upgraded (3.0.19-1~deb12u2)"
    assert results["libcurl4"].message == "held: not upgraded (7.88.1-10+deb12u14)"  # dpkg: libcurl4:amd64
    assert results["libc6"].details["before"] == "2.36-9+deb12u14"  # dpkg: libc6:amd64
    refused = f"apt: apt-get install on node1 failed (exit 100): {REFUSED.strip()}"
    assert results["bash"].message == refused and results["nginx"].message == refused
    assert results["nginx"].details["before"] == ""  # not installed


# --- the golden fixtures' recorded commands are the plug-in's --------------------------------------

GOLDEN = GoldenFiles(FIXTURES / "apt")
# Parsers of the output of one command the plug-in runs: each of their fixtures must be recorded
# with that command as the plug-in runs it (the others read apt outputs of many commands).
ONE_COMMAND_PARSERS = {"dpkg_query", "dpkg_audit", "apt_mark_hold", "reboot_required", "needrestart_batch"}
# Every fixture of a command the plug-in runs, and a scenario in which it runs it.
PLUGIN_RUNS: dict[str, Callable[[], FixtureHost]] = {
    "sim-lab-half-configured": lambda: scan_lab()[0],
    "dpkg-query-lab-half-configured": lambda: scan_lab()[0],
    "apt-mark-showhold-none": lambda: scan_lab()[0],
    "sim-lab-held-show-versions": lambda: held_scan(),
    "dpkg-query-states": lambda: scan_states()[0],
    "apt-mark-showhold": lambda: scan_states()[0],
    "dpkg-query-held": lambda: install_held()[0],
    "install-lab-postinst-fails": lambda: install_broken()[0],
    "reboot-required-absent": lambda: install_broken()[0],
    "reboot-required-pkgs": lambda: lab_install("reboot-required-pkgs")[0],
    **{
        name: (lambda name=name: lab_install("reboot-required-absent", name)[0])
        for name in GOLDEN.names("needrestart_batch")
    },
}


def held_scan() -> FixtureHost:
    host = FixtureHost("apt", "sim-lab-held-show-versions", "apt-mark-showhold-none")
    host.answer(UPDATE, "")
    host.answer(DPKG, dpkg_lines({"labpkg": "1.0"}))
    run_virtual(updater(host)[0].scan())
    return host


@pytest.mark.parametrize("name", sorted(PLUGIN_RUNS))
def test_a_fixtures_recorded_command_is_the_command_the_plugin_runs(name: str) -> None:
    host = PLUGIN_RUNS[name]()
    assert name in host.served, f"the plug-in never ran {name}'s command: {host.spec(name)['command']!r}"


def test_every_fixture_of_a_plugin_command_is_checked() -> None:
    one_command = {n for n in GOLDEN.names() if GOLDEN.load(n)[1]["parser"] in ONE_COMMAND_PARSERS}
    assert one_command <= set(PLUGIN_RUNS), sorted(one_command - set(PLUGIN_RUNS))
    # and the rest are outputs of commands the plug-in does not run as recorded
    for name in set(GOLDEN.names()) - set(PLUGIN_RUNS):
        command = GOLDEN.load(name)[1]["command"]
        assert not command.startswith(ENV), f"{name}: recorded with the plug-in's environment but not checked"
