"""The dnf plug-in's facts, tested with golden files (tests/fixtures/dnf/NAME.txt + NAME.json, the
same layout as the apt ones: {"parser", "command", "provenance", "exit_status"?, "args"?, "expected"};
`command` is exactly what the plug-in runs, where it runs it: tests/unit/test_dnf_plugin.py checks).

No RPM host was at hand: the fixtures are crafted from dnf 4's formatting code (output.py
fmtColumns: a cell wider than its column ends the line and the row goes on, indented, on the
next; updateinfo.py display_list) and published outputs. `CAU_UPDATE_GOLDEN=1` rewrites them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cau.plugins.dnf_facts import (
    DnfChange,
    DnfParseError,
    parse_check_update,
    parse_needs_restarting_r,
    parse_rpm_versions,
    parse_updateinfo_list,
    security_changes,
    split_evr,
    split_nevra,
    updates_available,
)
from tests.golden import GoldenFiles, Parser, jsonable

GOLDEN = GoldenFiles(Path(__file__).resolve().parent.parent / "fixtures" / "dnf")


def _needs_restarting(text: str, args: dict[str, Any]) -> Any:
    required, packages = parse_needs_restarting_r(args["exit_code"], text)
    return {"reboot_required": required, "packages": packages}


PARSERS: dict[str, Parser] = {
    "check_update": lambda text, _: jsonable(parse_check_update(text)),
    "updateinfo_list": lambda text, _: jsonable(parse_updateinfo_list(text)),
    "needs_restarting_r": _needs_restarting,
    "rpm_versions": lambda text, _: jsonable(parse_rpm_versions(text)),
}


def golden(name: str) -> tuple[str, dict[str, Any]]:
    return GOLDEN.load(name)


def test_every_fixture_has_its_expectation() -> None:
    assert GOLDEN.unpaired() == [], f"unpaired fixtures: {GOLDEN.unpaired()}"
    assert len(GOLDEN.names()) >= 6


@pytest.mark.parametrize("name", GOLDEN.names())
def test_golden(name: str) -> None:
    GOLDEN.check(name, PARSERS)


# --- beyond the golden files ------------------------------------------------------------------


def test_wrapped_rows_are_joined() -> None:
    text, _ = golden("check-update-wrapped-fedora")
    by_name = {c.name: c for c in parse_check_update(text)}
    tex = by_name["texlive-collection-latexrecommended"]
    assert (tex.arch, tex.evr, tex.repo, tex.epoch) == ("noarch", "11:svn65512-72.fc39", "updates", 11)
    exporter = by_name["golang-github-prometheus-node-exporter"]  # name and version both wrapped
    assert exporter.repo == "updates-testing" and exporter.version == "1.7.0^20240118git0e17b2b"


def test_obsoleting_section_merges_into_updates_or_adds_new_packages() -> None:
    text, _ = golden("check-update-obsoleting-rhel8")
    changes = {c.name: c for c in parse_check_update(text)}
    assert changes["grub2-tools"].kind == "upgrade"
    assert changes["grub2-tools"].obsoletes == ("grub2-tools-1:2.02-150.el8.x86_64",)
    assert changes["grub2-tools-efi"].kind == "obsoleting"
    assert changes["yum-utils"].obsoletes == ("dnf-utils-4.0.21-23.el8.noarch",)
    assert len([c for c in parse_check_update(text) if c.name == "grub2-tools"]) == 1


def test_security_only_selection() -> None:
    updates, _ = golden("check-update-rhel9")
    advisories, _ = golden("updateinfo-security-rhel9")
    changes = parse_check_update(updates)
    advisories_ = parse_updateinfo_list(advisories)
    picked = [c.name for c in security_changes(changes, advisories_)]
    assert picked == [
        "NetworkManager",
        "NetworkManager-libnm",
        "kernel",
        "kernel-core",
        "openssl",
        "openssl-libs",
    ]
    important = [c.name for c in security_changes(changes, advisories_, "Important")]
    assert important == ["kernel", "kernel-core"]
    with pytest.raises(ValueError, match="min_severity"):
        security_changes(changes, advisories_, "Severe")


def test_nevra_of_a_change_is_what_updateinfo_prints() -> None:
    change = DnfChange("openssl-libs", "x86_64", "1:3.2.2-6.el9_5", "baseos")
    assert change.nevra == "openssl-libs-1:3.2.2-6.el9_5.x86_64"
    assert split_nevra(change.nevra) == ("openssl-libs", "1:3.2.2-6.el9_5", "x86_64")
    assert (change.epoch, change.version, change.release) == (1, "3.2.2", "6.el9_5")


@pytest.mark.parametrize(
    ("evr", "parts"),
    [
        ("1:3.0.7-27.el9", (1, "3.0.7", "27.el9")),
        ("(none):5.14.0-503.21.1.el9_5", (None, "5.14.0", "503.21.1.el9_5")),
        ("2.38-18.fc39", (None, "2.38", "18.fc39")),
        ("0:1.0-1", (0, "1.0", "1")),
    ],
)
def test_split_evr(evr: str, parts: tuple[int | None, str, str]) -> None:
    assert split_evr(evr) == parts


@pytest.mark.parametrize("bad", ["3.0.7", "x:1-2", "-1"])
def test_split_evr_refuses_nonsense(bad: str) -> None:
    with pytest.raises(DnfParseError):
        split_evr(bad)


def test_check_update_exit_codes() -> None:
    assert updates_available(100) is True
    assert updates_available(0) is False
    with pytest.raises(DnfParseError, match="exit 1"):
        updates_available(1)


@pytest.mark.parametrize(
    "text",
    [
        "kernel.x86_64  5.14.0-503.21.1.el9_5  baseos  extra\n",  # four cells
        "kernel.x86_64\n",  # a wrapped row that never ends
        "kernel  5.14.0-503.21.1.el9_5  baseos\n",  # no arch
        "kernel.x86_64  latest  baseos\n",  # not version-release
        "Obsoleting Packages\n    grub2-tools.x86_64  1:2.02-150.el8  @baseos\n",  # nothing it belongs to
    ],
)
def test_malformed_check_update_is_an_error(text: str) -> None:
    with pytest.raises(DnfParseError):
        parse_check_update(text)


def test_unknown_advisory_type_is_an_error() -> None:
    with pytest.raises(DnfParseError, match="unknown advisory type"):
        parse_updateinfo_list("RHSA-2024:1 Urgent/Sec. kernel-5.14.0-1.el9.x86_64\n")


def test_needs_restarting_other_exit_codes_are_errors() -> None:
    with pytest.raises(DnfParseError, match="exit 2"):
        parse_needs_restarting_r(2, "needs-restarting: error: ...")


def test_rpm_query_keeps_every_installed_version() -> None:
    text, _ = golden("rpm-query")
    versions = parse_rpm_versions(text)
    assert [p.evr for p in versions["kernel-core"]] == ["5.14.0-427.13.1.el9_4", "5.14.0-503.21.1.el9_5"]
    assert [p.arch for p in versions["glibc"]] == ["x86_64", "i686"]
    assert versions["bind-utils"][0].evr == "32:9.16.23-24.el9_5"
    assert versions["gpg-pubkey"][0].arch is None
    assert versions["nginx"] == ()
