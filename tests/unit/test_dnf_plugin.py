"""The dnf plug-in against a scripted node (cau.testing) that answers with the dnf/rpm outputs of
tests/fixtures/dnf, matched by the exact command each was recorded from (RhelHost, FixtureHost in
tests/contract/scripted.py). No RPM host runs here: the node keeps a tiny rpm database, so an
upgrade really changes what `rpm -q` says afterwards."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.updates import Update, UpdateOutcome
from cau.errors import PluginError, PluginOutputError, is_retryable
from cau.plugins import dnf_facts
from cau.plugins.dnf import RESTART_PACKAGES, DnfArgs, DnfNodeUpdater, DnfPlugin
from cau.ports import PluginContext
from cau.testing import Reply, ScriptedTransport, Session
from tests.contract.scripted import FIXTURES, FixtureHost, RhelHost
from tests.golden import GoldenFiles

CHECK = "LC_ALL=C dnf -q check-update --refresh"
SECURITY = "LC_ALL=C dnf -q updateinfo list --security"
NEEDS_RESTARTING = "LC_ALL=C needs-restarting -r"
RPM = "rpm -q --qf '%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'"


def updater(host: FixtureHost, **args: Any) -> tuple[DnfNodeUpdater, ScriptedTransport]:
    transport = ScriptedTransport(host, name="rhel1")
    ctx = PluginContext("r", "c", VirtualClock(), Path("/nonexistent"))
    made = DnfPlugin().create_updater(Session("rhel1", transport), DnfArgs(**args), ctx)
    assert isinstance(made, DnfNodeUpdater)
    return made, transport


def offered(name: str = "check-update-rhel9") -> list[dnf_facts.DnfChange]:
    return dnf_facts.parse_check_update((FIXTURES / "dnf" / f"{name}.txt").read_text())


def test_scan_stage_install_and_restart() -> None:
    host = RhelHost()
    up, transport = updater(host)

    async def main() -> None:
        found = await up.scan()
        assert len(found.updates) == len(offered()) and not found.restart_pending
        kernel = next(u for u in found.updates if u.id == "kernel.x86_64")
        assert kernel.needs_restart and kernel.details["to"] == "5.14.0-503.21.1.el9_5"
        nm = next(u for u in found.updates if u.id == "NetworkManager.x86_64")
        assert nm.details["nevra"] == "NetworkManager-1:1.48.10-5.el9_5.x86_64"  # epoch kept
        assert all(s.ok for s in await up.stage(found.updates))
        results = await up.install(found.updates, lambda _m: None)
        assert all(r.outcome is UpdateOutcome.SUCCEEDED for r in results), [
            r.message for r in results if r.message
        ]
        restart = {r.update_id for r in results if r.restart_required}
        assert "kernel.x86_64" in restart and "NetworkManager.x86_64" not in restart  # needs-restarting names
        kernel_result = next(r for r in results if r.update_id == "kernel.x86_64")
        assert kernel_result.details == {
            "before": "0.1-1.el9",
            "after": "5.14.0-503.21.1.el9_5",
            "wanted": "5.14.0-503.21.1.el9_5",
        }
        assert (await up.scan()).updates == ()

    run_virtual(main())
    commands = transport.commands
    assert commands[:2] == [CHECK, NEEDS_RESTARTING]
    assert all(c.startswith(("LC_ALL=C", "rpm -q")) for c in commands)
    upgrade = next(c for c in commands if " upgrade " in c and "downloadonly" not in c)
    assert (
        upgrade.startswith("LC_ALL=C dnf -y -q upgrade ")
        and "kernel-5.14.0-503.21.1.el9_5.x86_64" in upgrade.split()
    )
    names = " ".join(sorted({c.name for c in offered()}))
    assert f"{RPM} {names}" in commands  # before and after, every name once


def test_a_failed_upgrade_is_a_result_with_dnfs_words() -> None:
    host = RhelHost(broken=["openssl"])
    up, _ = updater(host)

    async def main() -> dict[str, Any]:
        found = await up.scan()
        return {r.update_id: r for r in await up.install(found.updates, lambda _m: None)}

    results = run_virtual(main())
    failed = results["openssl.x86_64"]
    assert failed.outcome is UpdateOutcome.FAILED and failed.error_code == 1
    assert failed.message.startswith(
        "Error: Transaction test error: openssl-1:3.2.2-6.el9_5.x86_64 conflicts"
    )
    assert failed.details["after"] == "0.1-1.el9" and not failed.restart_required
    assert results["kernel.x86_64"].outcome is UpdateOutcome.SUCCEEDED


def test_output_dnf_cannot_read_is_a_plugin_output_error_naming_the_command_and_the_node() -> None:
    host = FixtureHost("dnf")
    host.answer(CHECK, Reply("<html><body>502 Bad Gateway</body></html>\n", 100))
    with pytest.raises(PluginOutputError, match=r"^dnf: unexpected output of dnf check-update on rhel1: "):
        run_virtual(updater(host)[0].scan())
    host = FixtureHost("dnf")
    host.answer(f"{RPM} kernel", "<html><body>502 Bad Gateway</body></html>\n")
    nevra = "kernel-5.14.0-503.21.1.el9_5.x86_64"
    kernel = Update("kernel.x86_64", "kernel", "dnf", details={"name": "kernel", "nevra": nevra})
    with pytest.raises(PluginOutputError, match=r"^dnf: unexpected output of rpm -q on rhel1: ") as caught:
        run_virtual(updater(host)[0].install([kernel], lambda _m: None))
    assert not is_retryable(caught.value)  # an unknown dnf or a bug: the engine does not retry it


def test_a_failed_check_update_is_worth_another_try() -> None:
    host = FixtureHost("dnf")
    host.answer(CHECK, Reply("", 1, "Error: Failed to download metadata for repo 'baseos'\n"))
    with pytest.raises(
        PluginError, match=r"^dnf: check-update on rhel1: .*exit 1.*Failed to download"
    ) as caught:
        run_virtual(updater(host)[0].scan())
    assert not isinstance(caught.value, PluginOutputError) and is_retryable(caught.value)


def test_security_only_narrows_to_advisories() -> None:
    host = RhelHost()
    up, transport = updater(host, security_only=True, min_severity="Important")
    found = run_virtual(up.scan())
    names = {u.details["name"] for u in found.updates}
    assert names == {"kernel", "kernel-core"}  # NetworkManager has only a Moderate advisory
    assert transport.commands == [CHECK, SECURITY, NEEDS_RESTARTING]


def test_include_and_exclude() -> None:
    up, _ = updater(RhelHost(), include=["kernel*"], exclude=["kernel-tools"])
    names = {u.details["name"] for u in run_virtual(up.scan()).updates}
    assert names and all(n.startswith("kernel") for n in names) and "kernel-tools" not in names


def test_without_refresh_the_cached_metadata_is_used() -> None:
    host = FixtureHost("dnf")
    host.answer("LC_ALL=C dnf -q check-update", Reply("\n", 0))
    host.serve("needs-restarting-required")
    up, transport = updater(host, refresh=False)
    found = run_virtual(up.scan())
    assert found.updates == () and found.restart_pending
    assert transport.commands == ["LC_ALL=C dnf -q check-update", NEEDS_RESTARTING]


def test_no_needs_restarting_installed_means_no_restart_known() -> None:
    host = FixtureHost("dnf", "check-update-none")
    host.answer(NEEDS_RESTARTING, Reply("", 127, "sh: needs-restarting: command not found\n"))
    assert not run_virtual(updater(host)[0].scan()).restart_pending


def scan_of(fixture: str) -> FixtureHost:
    host = FixtureHost("dnf", fixture, "needs-restarting-not-required")
    found = run_virtual(updater(host)[0].scan())
    assert [u.id for u in found.updates] == [f"{c.name}.{c.arch}" for c in offered(fixture)]
    return host


RPM_FIXTURE_UPDATES = {  # name.arch -> the version to install
    "bind-utils.x86_64": "32:9.16.23-25.el9_5",
    "glibc.i686": "2.34-125.el9_5.1",
    "gpg-pubkey.noarch": "fd431d51-4ae0493b",
    "kernel-core.x86_64": "5.14.0-503.21.1.el9_5",
    "nginx.x86_64": "1:1.20.1-20.el9",
    "openssl-libs.x86_64": "1:3.2.2-6.el9_5",
}


def install_against_rpm_fixture() -> tuple[FixtureHost, dict[str, Any]]:
    """rpm -q answers with the rpm-query fixture before and after (nothing changed): what is
    there already counts as installed; kernels keep their older version beside the new one."""
    host = FixtureHost("dnf", "rpm-query", "needs-restarting-required-with-warning")
    updates = []
    for uid, evr in RPM_FIXTURE_UPDATES.items():
        name, arch = uid.rsplit(".", 1)
        nevra = f"{name}-{evr}.{arch}"
        details = {"name": name, "arch": arch, "to": evr, "repo": "baseos", "nevra": nevra}
        updates.append(
            Update(uid, f"{name} {evr}", "dnf", needs_restart=name in RESTART_PACKAGES, details=details)
        )
    host.answer("LC_ALL=C dnf -y -q upgrade " + " ".join(u.details["nevra"] for u in updates), "")
    results = run_virtual(updater(host)[0].install(updates, lambda _m: None))
    return host, {r.update_id: r for r in results}


def test_install_reads_every_installed_version_of_a_package() -> None:
    _, results = install_against_rpm_fixture()
    assert {uid: r.outcome for uid, r in results.items()} == {
        "bind-utils.x86_64": UpdateOutcome.FAILED,  # still 32:9.16.23-24.el9_5
        "glibc.i686": UpdateOutcome.SUCCEEDED,
        "gpg-pubkey.noarch": UpdateOutcome.SUCCEEDED,  # rpm prints no arch for it
        "kernel-core.x86_64": UpdateOutcome.SUCCEEDED,
        "nginx.x86_64": UpdateOutcome.FAILED,
        "openssl-libs.x86_64": UpdateOutcome.SUCCEEDED,
    }
    assert results["kernel-core.x86_64"].details["before"] == "5.14.0-427.13.1.el9_4, 5.14.0-503.21.1.el9_5"
    assert results["glibc.i686"].details["after"] == "2.34-125.el9_5.1"
    assert results["bind-utils.x86_64"].message == "still 32:9.16.23-24.el9_5"
    assert results["nginx.x86_64"].message == "still absent"
    # needs-restarting names kernel-uek only: packages known to need one (kernel, glibc) still do
    assert {uid for uid, r in results.items() if r.restart_required} == {"glibc.i686", "kernel-core.x86_64"}


# --- the golden fixtures' recorded commands are the plug-in's --------------------------------------

GOLDEN = GoldenFiles(FIXTURES / "dnf")
PLUGIN_RUNS: dict[str, Callable[[], FixtureHost]] = {
    "check-update-rhel9": lambda: scan_of("check-update-rhel9"),
    "check-update-obsoleting-rhel8": lambda: scan_of("check-update-obsoleting-rhel8"),
    "check-update-wrapped-fedora": lambda: scan_of("check-update-wrapped-fedora"),
    "needs-restarting-not-required": lambda: scan_of("check-update-rhel9"),
    "check-update-none": lambda: installed_rhel_host(),
    "needs-restarting-required": lambda: installed_rhel_host(),
    "updateinfo-security-rhel9": lambda: security_scan(),
    "rpm-query": lambda: install_against_rpm_fixture()[0],
    "needs-restarting-required-with-warning": lambda: install_against_rpm_fixture()[0],
}


def installed_rhel_host() -> FixtureHost:
    host = RhelHost()
    up, _ = updater(host)

    async def main() -> None:
        await up.install((await up.scan()).updates, lambda _m: None)
        await up.scan()

    run_virtual(main())
    return host


def security_scan() -> FixtureHost:
    host = RhelHost()
    run_virtual(updater(host, security_only=True)[0].scan())
    return host


@pytest.mark.parametrize("name", sorted(PLUGIN_RUNS))
def test_a_fixtures_recorded_command_is_the_command_the_plugin_runs(name: str) -> None:
    host = PLUGIN_RUNS[name]()
    assert name in host.served, f"the plug-in never ran {name}'s command: {host.spec(name)['command']!r}"


def test_the_other_fixtures_are_of_commands_the_plugin_does_not_run() -> None:
    others = sorted(set(GOLDEN.names()) - set(PLUGIN_RUNS))
    assert others == ["check-update-verbose-noise", "updateinfo-all-fedora", "updateinfo-with-cve"]
    assert [GOLDEN.load(n)[1]["command"] for n in others] == [
        "LC_ALL=C dnf check-update --refresh",  # without -q: the noise -q suppresses
        "dnf -q updateinfo list --all",
        "dnf -q updateinfo list --security --with-cve",
    ]


def test_advisories_puts_each_update_s_security_advisories_and_severity_in_its_details() -> None:
    host = RhelHost()
    up, transport = updater(host, advisories=True)
    found = run_virtual(up.scan())
    by_name = {u.details["name"]: u.details for u in found.updates}
    assert by_name["kernel"]["severity"] == "Important" and by_name["kernel"]["advisories"].startswith(
        "RHSA-"
    )
    assert by_name["NetworkManager"]["severity"] == "Moderate"
    assert len(found.updates) > len([d for d in by_name.values() if "advisories" in d])  # not narrowed
    assert transport.commands == [CHECK, SECURITY, NEEDS_RESTARTING]
