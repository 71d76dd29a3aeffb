"""What a node has against its baselines: one compliance scan's findings, from the plug-ins'
scans of the node and the versions of the packages the baselines name (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cau.domain.compliance import (
    AdvisoryRule,
    AllUpdatesRule,
    Baseline,
    BaselineRule,
    Finding,
    FindingState,
    HotfixRule,
    OriginRule,
    PackageRule,
    update_key,
)
from cau.domain.updates import Update
from cau.plugins.apt_facts import origin_matches
from cau.ports import PackageLevel


@dataclass(frozen=True)
class NodeFacts:
    """What the scan learned on one node: each plug-in's applicable updates (or why it could not
    scan), and the levels of the packages the baselines name, per plug-in (or why not)."""

    updates: Mapping[str, list[Update]]
    scan_errors: Mapping[str, str]
    levels: Mapping[str, Mapping[str, PackageLevel]]
    level_errors: Mapping[str, str]


def package_name(update: Update) -> str:
    """The package an update is of (dnf's ids carry the architecture)."""
    return update.details.get("name") or update.id


def _error(baseline: str, rule: BaselineRule, message: str) -> Finding:
    return Finding(
        baseline=baseline,
        rule=rule.key,
        update=rule.key,
        title=rule.describe(),
        state=FindingState.ERROR,
        detail=message,
    )


def _met(baseline: str, rule: BaselineRule, detail: str = "") -> Finding:
    return Finding(
        baseline=baseline,
        rule=rule.key,
        update=rule.key,
        title=rule.describe(),
        state=FindingState.SATISFIED,
        detail=detail,
    )


def _missing(baseline: str, rule: BaselineRule, u: Update) -> Finding:
    return Finding(
        baseline=baseline,
        rule=rule.key,
        update=update_key(u.plugin, u.id),
        title=u.title,
        state=FindingState.MISSING,
        installed=u.details.get("from") or None,
        available=u.details.get("to") or None,
    )


def _package(baseline: str, rule: PackageRule, facts: NodeFacts) -> Finding:
    if rule.plugin in facts.level_errors:
        return _error(baseline, rule, facts.level_errors[rule.plugin])
    level = facts.levels.get(rule.plugin, {}).get(rule.name)
    if level is None:
        return _error(baseline, rule, f"the {rule.plugin} plug-in did not report {rule.name}")
    base = {"baseline": baseline, "rule": rule.key, "update": rule.key, "required": rule.min_version}
    if level.installed is None:
        return Finding(
            **base,
            title=rule.describe(),
            state=FindingState.SATISFIED,
            detail="not installed: nothing to update",
        )
    if level.meets:
        return Finding(**base, title=rule.describe(), state=FindingState.SATISFIED, installed=level.installed)
    offered = [u for u in facts.updates.get(rule.plugin, []) if package_name(u) == rule.name]
    available = offered[0].details.get("to") if offered else None
    detail = (
        ""
        if offered
        else (
            f"no version offered by the node's {rule.plugin} sources"
            if rule.plugin not in facts.scan_errors
            else f"its sources could not be read: {facts.scan_errors[rule.plugin]}"
        )
    )
    return Finding(
        **base,
        title=rule.describe(),
        state=FindingState.MISSING,
        installed=level.installed,
        available=available,
        detail=detail,
    )


def _matching(rule: BaselineRule, updates: Iterable[Update]) -> list[Update]:
    if isinstance(rule, OriginRule):
        return [
            u
            for u in updates
            if any(origin_matches(o.strip(), rule.origin) for o in u.details.get("origin", "").split(","))
        ]
    if isinstance(rule, AdvisoryRule):
        order = ["Low", "Moderate", "Important", "Critical"]
        out = []
        for u in updates:
            advisories = [a.strip() for a in u.details.get("advisories", "").split(",") if a.strip()]
            if rule.advisory is not None:
                if rule.advisory in advisories:
                    out.append(u)
            elif u.details.get("severity") in order and order.index(u.details["severity"]) >= order.index(
                rule.min_severity or "Low"
            ):
                out.append(u)
        return out
    if isinstance(rule, HotfixRule):
        return [u for u in updates if u.id == rule.id]
    return list(updates)


def findings(baselines: Iterable[Baseline], facts: NodeFacts) -> list[Finding]:
    """Every baseline's findings on the node: one per package rule, and for the other rules one
    per applicable update they take in (or one saying the rule is met). An update two rules of a
    baseline take in is listed once, under its package rule when it has one (with its minimum)."""
    out: list[Finding] = []
    for b in baselines:
        seen: set[str] = set()
        ordered = sorted(b.rules, key=lambda r: not isinstance(r, PackageRule))
        for rule in ordered:
            if isinstance(rule, PackageRule):
                found = [_package(b.name, rule, facts)]
            elif rule.plugin in facts.scan_errors:
                found = [_error(b.name, rule, facts.scan_errors[rule.plugin])]
            else:
                assert isinstance(rule, OriginRule | AdvisoryRule | HotfixRule | AllUpdatesRule)
                missing = _matching(rule, facts.updates.get(rule.plugin, []))
                found = [_missing(b.name, rule, u) for u in missing] if missing else [_met(b.name, rule)]
            for f in found:
                if f.update not in seen:
                    seen.add(f.update)
                    out.append(f)
    return out
