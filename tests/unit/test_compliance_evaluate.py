"""A node's findings against its baselines, from what the plug-ins reported (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from cau.compliance.evaluate import NodeFacts, findings
from cau.domain.compliance import (
    AdvisoryRule,
    AllUpdatesRule,
    Baseline,
    BaselineRule,
    FindingState,
    HotfixRule,
    OriginRule,
    PackageRule,
)
from cau.domain.updates import Update
from cau.ports import PackageLevel

NOW = datetime(2026, 12, 1, tzinfo=UTC)
F = FindingState


def base(*rules: BaselineRule) -> Baseline:
    return Baseline(name="b", rules=rules, created=NOW, updated=NOW, updated_by="t")


def apt(pkg: str, frm: str, to: str, origin: str = "Debian:12.8/stable [amd64]") -> Update:
    return Update(
        id=pkg, title=f"{pkg} {frm} -> {to}", plugin="apt", details={"from": frm, "to": to, "origin": origin}
    )


SECURITY = "Debian-Security:12/stable-security [amd64]"


def facts(**kw: object) -> NodeFacts:
    return NodeFacts(
        updates=kw.get("updates", {}),  # type: ignore[arg-type]
        scan_errors=kw.get("scan_errors", {}),  # type: ignore[arg-type]
        levels=kw.get("levels", {}),  # type: ignore[arg-type]
        level_errors=kw.get("level_errors", {}),  # type: ignore[arg-type]
    )


def test_a_package_rule_is_met_missing_with_what_is_offered_or_not_concerned() -> None:
    rule = PackageRule(name="openssl", min_version="3.0.15-1")
    offered = facts(
        updates={"apt": [apt("openssl", "3.0.11-1", "3.0.15-1")]},
        levels={"apt": {"openssl": PackageLevel("openssl", "3.0.11-1", meets=False)}},
    )
    [f] = findings([base(rule)], offered)
    assert (f.state, f.installed, f.required, f.available) == (F.MISSING, "3.0.11-1", "3.0.15-1", "3.0.15-1")
    [f] = findings(
        [base(rule)], facts(levels={"apt": {"openssl": PackageLevel("openssl", "3.0.11-1", meets=False)}})
    )
    assert f.state is F.MISSING and f.available is None and "no version offered" in f.detail
    [f] = findings(
        [base(rule)], facts(levels={"apt": {"openssl": PackageLevel("openssl", "3.0.16-1", meets=True)}})
    )
    assert f.state is F.SATISFIED and f.installed == "3.0.16-1"
    [f] = findings(
        [base(rule)], facts(levels={"apt": {"openssl": PackageLevel("openssl", None, meets=False)}})
    )
    assert f.state is F.SATISFIED and "not installed" in f.detail
    [f] = findings([base(rule)], facts(level_errors={"apt": "dpkg-query failed"}))
    assert f.state is F.ERROR and f.detail == "dpkg-query failed"


def test_an_origin_rule_takes_in_each_update_from_the_origin_only() -> None:
    rule = OriginRule(origin="Debian-Security")
    ups = [
        apt("openssl", "1", "2", SECURITY),
        apt("nginx", "1", "2"),
        apt("libc6", "1", "2", f"Debian:12.8/stable, {SECURITY}"),
    ]
    found = findings([base(rule)], facts(updates={"apt": ups}))
    assert [(f.update, f.state) for f in found] == [("apt:openssl", F.MISSING), ("apt:libc6", F.MISSING)]
    [met] = findings([base(rule)], facts(updates={"apt": [apt("nginx", "1", "2")]}))
    assert met.state is F.SATISFIED and met.update == "apt:origin=Debian-Security"
    [err] = findings([base(rule)], facts(scan_errors={"apt": "apt-get update failed"}))
    assert err.state is F.ERROR


def test_advisory_hotfix_and_every_update_rules() -> None:
    kernel = Update(
        id="kernel.x86_64",
        title="kernel",
        plugin="dnf",
        details={"name": "kernel", "advisories": "RHSA-1, RHSA-2", "severity": "Important"},
    )
    bash = Update(id="bash.x86_64", title="bash", plugin="dnf", details={"name": "bash", "severity": "Low"})
    dnf = facts(updates={"dnf": [kernel, bash]})
    assert [f.update for f in findings([base(AdvisoryRule(advisory="RHSA-2"))], dnf)] == ["dnf:kernel.x86_64"]
    assert [f.update for f in findings([base(AdvisoryRule(min_severity="Moderate"))], dnf)] == [
        "dnf:kernel.x86_64"
    ]
    assert len(findings([base(AdvisoryRule())], dnf)) == 2
    kb = Update(id="KB1001", title="fix", plugin="hotfix")
    assert findings([base(HotfixRule(id="KB1001"))], facts(updates={"hotfix": [kb]}))[0].state is F.MISSING
    assert findings([base(HotfixRule(id="KB1002"))], facts(updates={"hotfix": [kb]}))[0].state is F.SATISFIED
    assert len(findings([base(AllUpdatesRule(plugin="dnf"))], dnf)) == 2


@pytest.mark.parametrize("bad", [{"name": "open ssl"}, {"min_version": "1.0; reboot"}, {"name": "$(id)"}])
def test_a_package_rule_takes_only_package_names_and_versions(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        PackageRule(**{"name": "openssl", "min_version": "3.0", **bad})


def test_an_update_two_rules_take_in_is_listed_once_under_its_package_rule() -> None:
    rules = (OriginRule(origin="Debian-Security"), PackageRule(name="openssl", min_version="3.0.15-1"))
    found = findings(
        [base(*rules)],
        facts(
            updates={
                "apt": [apt("openssl", "3.0.11-1", "3.0.15-1", SECURITY), apt("libc6", "1", "2", SECURITY)]
            },
            levels={"apt": {"openssl": PackageLevel("openssl", "3.0.11-1", meets=False)}},
        ),
    )
    assert [(f.update, f.required) for f in found] == [("apt:openssl", "3.0.15-1"), ("apt:libc6", None)]
