"""The apt plug-in's facts, tested with golden files.

tests/fixtures/apt/NAME.txt is raw output; NAME.json says which parser reads it, where the output
came from, and what the parser must return:

    {"parser": "apt_plan", "command": "...", "provenance": "real: ..." | "crafted: ...",
     "exit_status": N, "args": {...}, "expected": ...}

`command` is exactly the command the plug-in runs, for the outputs of commands it runs
(tests/unit/test_apt_plugin.py checks that it does); `exit_status` when it matters.

Adding a pair adds a test. `CAU_UPDATE_GOLDEN=1 pytest tests/unit/test_apt_facts.py` rewrites every
"expected" from the current parsers (then read the diff before committing it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cau.plugins.apt_facts import (
    AptAction,
    AptChange,
    AptOrigin,
    AptParseError,
    KernelStatus,
    compare_versions,
    filter_changes,
    is_lock_error,
    origin_matches,
    parse_apt_mark_hold,
    parse_apt_plan,
    parse_dpkg_audit,
    parse_dpkg_errors,
    parse_dpkg_query,
    parse_needrestart_batch,
    parse_reboot_required,
)
from tests.golden import GoldenFiles, Parser, jsonable

GOLDEN = GoldenFiles(Path(__file__).resolve().parent.parent / "fixtures" / "apt")


def _needrestart(text: str, _: dict[str, Any]) -> Any:
    result = parse_needrestart_batch(text)
    return {
        "result": jsonable(result),
        "kernel_restart_needed": result.kernel_restart_needed,
        "restart_needed": result.restart_needed,
    }


def _reboot(text: str, _: dict[str, Any]) -> Any:
    required, packages = parse_reboot_required(text)
    return {"required": required, "packages": packages}


def _dpkg_query(text: str, _: dict[str, Any]) -> Any:
    packages = parse_dpkg_query(text)
    return {
        "packages": jsonable(packages),
        "installed": {p.name: [p.version, p.held] for p in packages if p.installed},
    }


def plan_changes(text: str) -> list[AptChange]:
    return list(parse_apt_plan(text).changes)


PARSERS: dict[str, Parser] = {
    "apt_plan": lambda text, _: jsonable(parse_apt_plan(text)),
    "dpkg_query": _dpkg_query,
    "apt_mark_hold": lambda text, _: jsonable(parse_apt_mark_hold(text)),
    "dpkg_audit": lambda text, _: [
        {"name": p.name, "version": p.version, "state": p.state} for p in parse_dpkg_audit(text)
    ],
    "dpkg_errors": lambda text, _: [
        {**jsonable(e), "describe": e.describe()} for e in parse_dpkg_errors(text)
    ],
    "needrestart_batch": _needrestart,
    "reboot_required": _reboot,
    "lock_error": lambda text, _: {"is_lock_error": is_lock_error(text)},
}


def golden(name: str) -> tuple[str, dict[str, Any]]:
    return GOLDEN.load(name)


def test_every_fixture_has_its_expectation() -> None:
    assert GOLDEN.unpaired() == [], f"unpaired fixtures: {GOLDEN.unpaired()}"
    assert len(GOLDEN.names()) >= 8


@pytest.mark.parametrize("name", GOLDEN.names())
def test_golden(name: str) -> None:
    GOLDEN.check(name, PARSERS)


# --- what the golden files cannot say on their own -------------------------------------------


@pytest.mark.parametrize("name", GOLDEN.names("apt_plan"))
def test_changes_agree_with_apts_own_counts(name: str) -> None:
    """An independent check of every simulation fixture: apt's summary line counts the changes."""
    text, _ = golden(name)
    plan = parse_apt_plan(text)
    if plan.errors:  # apt refused (its summary may still be printed): nothing would change
        assert not plan.changes
        return
    assert plan.summary is not None
    count = {a: sum(1 for c in plan.changes if c.action is a) for a in AptAction}
    assert count[AptAction.UPGRADE] == plan.summary.upgraded
    assert count[AptAction.INSTALL] == plan.summary.newly_installed
    assert count[AptAction.REMOVE] == plan.summary.to_remove
    assert count[AptAction.DOWNGRADE] == plan.summary.downgraded
    assert count[AptAction.REINSTALL] == plan.summary.reinstalled


def test_security_origins_and_multi_origin_lines() -> None:
    text, _ = golden("sim-upgrade-security-multi-origin")
    by_name = {c.package: c for c in plan_changes(text)}
    gcrypt = by_name["libgcrypt20"]
    assert gcrypt.origins == ("Debian:12.15/oldstable", "Debian-Security:12/oldstable-security")
    assert gcrypt.arch == "amd64" and gcrypt.old_version == "1.10.1-3" and gcrypt.action is AptAction.UPGRADE
    # apt's ordering notes after the parentheses are not part of the line's data
    pam = by_name["libpam-modules-bin"]
    assert pam.origins == ("Debian:12.15/oldstable",) and pam.arch == "amd64"


def test_filter_by_origin_label_archive_prefix_and_glob() -> None:
    text, _ = golden("sim-upgrade-security-multi-origin")
    changes = plan_changes(text)
    security = filter_changes(changes, [], [], ["Debian-Security"])
    assert security and all(any("Security" in o for o in c.origins) for c in security)
    assert filter_changes(changes, [], [], ["oldstable-security"]) == security
    assert filter_changes(changes, [], [], ["*-security"]) == security
    assert filter_changes(changes, [], [], ["Debian-Security:12/"]) == security
    # "Debian" is the label of the point release, not a prefix of "Debian-Security"
    point = filter_changes(changes, [], [], ["Debian"])
    assert all("Debian:12.15/oldstable" in c.origins for c in point)
    assert {c.package for c in security} - {c.package for c in point} == {
        c.package for c in changes if c.origins == ("Debian-Security:12/oldstable-security",)
    }


def test_filter_by_name_include_then_exclude() -> None:
    text, _ = golden("sim-upgrade-security-multi-origin")
    changes = plan_changes(text)
    picked = filter_changes(changes, ["libssl*", "openssl"], ["libssl-dev"], [])
    assert [c.package for c in picked] == ["libssl3", "openssl"]
    assert filter_changes(changes) == changes


def test_filter_matches_foreign_arch_packages_by_bare_name() -> None:
    text, _ = golden("sim-crafted-ubuntu-phasing-multiarch")
    changes = plan_changes(text)
    assert [c.package for c in filter_changes(changes, ["libc6"])] == ["libc6:i386", "libc6"]
    assert [c.package for c in filter_changes(changes, ["libc6:i386"])] == ["libc6:i386"]
    assert [c.package for c in filter_changes(changes, [], [], ["New Python Versions"])] == [
        "python3.12-minimal",
        "python3.12",
    ]


def test_an_origin_filter_never_selects_a_removal() -> None:
    text, _ = golden("sim-install-target-release-mixed")
    changes = plan_changes(text)
    assert any(c.action is AptAction.REMOVE for c in changes)
    assert all(c.action is not AptAction.REMOVE for c in filter_changes(changes, [], [], ["*"]))


@pytest.mark.parametrize(
    ("origin", "parts"),
    [
        ("Debian-Security:12/stable-security", ("Debian-Security", "12", "stable-security")),
        ("Debian:12.8/stable", ("Debian", "12.8", "stable")),
        ("Debian:unstable", ("Debian", None, "unstable")),  # a Release file without Version
        ("New Python Versions:22.04/jammy", ("New Python Versions", "22.04", "jammy")),
        ("localhost", (None, None, "localhost")),  # no Release file
    ],
)
def test_origin_parts(origin: str, parts: tuple[str | None, str | None, str]) -> None:
    parsed = AptOrigin.parse(origin)
    assert (parsed.label, parsed.version, parsed.archive) == parts


@pytest.mark.parametrize(
    ("pattern", "hit"),
    [
        ("Debian-Security", True),
        ("stable-security", True),
        ("Debian", False),
        ("Debian-Sec", False),  # a bare word is a whole label or archive
        ("Debian-Sec*", True),
        ("Debian-Security:12", True),  # with ':' or '/', a prefix of the whole string
        ("Debian-Security:11", False),
        ("*:12/*-security", True),
    ],
)
def test_origin_patterns(pattern: str, hit: bool) -> None:
    assert origin_matches("Debian-Security:12/stable-security", pattern) is hit


@pytest.mark.parametrize(
    ("a", "b", "order"),
    [
        ("1.0", "1.0", 0),
        ("0:1.0", "1.0", 0),
        ("1.0~rc1", "1.0", -1),
        ("1.0~rc1", "1.0~rc1~1", 1),
        ("1:0.1", "2.0", 1),
        ("1.0-1", "1.0-1+deb12u1", -1),
        ("7.88.1-10+deb12u14", "7.88.1-10+deb12u15", -1),
        ("2.36-9+deb12u9", "2.36-9+deb12u10", -1),
        ("1.0a", "1.0", 1),
        ("1.0+b1", "1.0", 1),
        ("1.0.0", "1.0", 1),
        ("1.001", "1.1", 0),
        ("20.20.2-1nodesource1+repack1", "18.20.4+dfsg-1~deb12u3", 1),
        ("1.0-1", "1.0-1~bpo12+1", 1),
        ("3.0.19-1~deb12u2", "3.0.22-1~deb12u2", -1),
        ("2:1.0", "1:9.9", 1),
        ("1.2-3", "1.2-03", 0),
        ("1.0-a", "1.0-+", -1),  # letters sort before non-letters
    ],
)
def test_debian_version_order(a: str, b: str, order: int) -> None:
    """The same answers as `dpkg --compare-versions` (checked against dpkg 1.21)."""
    assert compare_versions(a, b) == order
    assert compare_versions(b, a) == -order


def test_dpkg_states_installed_held_broken() -> None:
    text, _ = golden("dpkg-query-states")
    packages = {p.name: p for p in parse_dpkg_query(text)}
    installed = {name for name, p in packages.items() if p.installed}
    assert "linux-image-6.1.0-26-amd64" not in installed  # rc: only its config files remain
    assert "postgresql-15" not in installed and "nginx-common" not in installed  # half-configured, unpacked
    assert "man-db" in installed  # triggers pending: installed
    assert packages["openssl"].held and packages["openssl"].version == "3.0.15-1~deb12u1"
    assert {p.name for p in packages.values() if p.broken} == {
        "postgresql-15",
        "nginx-common",
        "brokenpkg",
    }


def test_apt_mark_showhold_real_output() -> None:
    text, _ = golden("apt-mark-showhold")
    assert parse_apt_mark_hold(text) == {"curl", "libcurl4", "openssl"}


def test_needrestart_kernel_states() -> None:
    assert parse_needrestart_batch("NEEDRESTART-KSTA: 2\n").kernel_status is KernelStatus.ABI_UPGRADE
    assert not parse_needrestart_batch("NEEDRESTART-KSTA: 0\n").restart_needed  # unknown is not "due"
    assert parse_needrestart_batch("").kernel_status is None
    with pytest.raises(AptParseError, match="KSTA"):
        parse_needrestart_batch("NEEDRESTART-KSTA: 7\n")


@pytest.mark.parametrize(
    "line",
    [
        "Inst curl [7.88.1] 7.88.2 Debian:12/stable [amd64]",  # no parentheses
        "Inst curl [7.88.1] (7.88.2 Debian:12/stable [amd64]",  # unbalanced
        "Inst curl [7.88.1] ( Debian:12/stable [amd64])",  # no version
        "Inst (1.0 Debian:12/stable [amd64])",  # no package name
    ],
)
def test_malformed_change_lines_are_errors_not_silence(line: str) -> None:
    with pytest.raises(AptParseError):
        plan_changes(line + "\n")


def test_malformed_dpkg_query_line_is_an_error() -> None:
    with pytest.raises(AptParseError, match="dpkg-query"):
        parse_dpkg_query("bash 5.2 ii\n")


def test_conf_lines_alone_change_nothing() -> None:
    assert plan_changes("Conf libc6 (2.36-9 Debian:12/stable [amd64])\n") == []


def test_reboot_required_is_the_flag_not_a_package_list() -> None:
    assert parse_reboot_required("no\nlinux-image-6.1.0-28-amd64\n") == (False, [])
    assert parse_reboot_required("yes\n") == (True, [])
    assert parse_reboot_required("") == (False, [])


def test_an_apt_change_is_a_value() -> None:
    a = AptChange("curl", AptAction.UPGRADE, "1", "2", ("Debian:12/stable",), "amd64")
    assert a == AptChange("curl", AptAction.UPGRADE, "1", "2", ("Debian:12/stable",), "amd64")
    assert len({a, a}) == 1
