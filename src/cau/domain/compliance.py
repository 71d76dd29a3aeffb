"""Compliance (VMM's workflow): baselines of required updates, where they apply, exemptions, what
a compliance scan found on each node, and the statuses that follow. Pure data and rules, no I/O.

An update is named the same way everywhere — baselines, scans, runs, reports, exemptions — by its
**update key** `<plug-in>:<id>` (`apt:openssl`, `dnf:kernel.x86_64`, `hotfix:KB1001`), the plug-in
and the id a plug-in's scan gives it (cau.domain.updates.Update)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from cau.domain.documents import Document

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Debian and RPM package names and versions (what dpkg/rpm accept): nothing a shell would read.
PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]*$")
VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z.+~:_-]*$")


def update_key(plugin: str, update_id: str) -> str:
    return f"{plugin}:{update_id}"


def split_key(key: str) -> tuple[str, str]:
    plugin, sep, ident = key.partition(":")
    if not sep or not plugin or not ident:
        raise ValueError(f"'{key}' is not an update key: write <plug-in>:<id>, e.g. apt:openssl")
    return plugin, ident


def _name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise ValueError(
            f"{what} '{value}' must start with a letter or digit and hold only letters, digits, '.', '_' "
            "and '-' (at most 64)"
        )
    return value


# --- baselines --------------------------------------------------------------------------------


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageRule(_Rule):
    """A package at a minimum version (apt or dnf). A node without the package is not concerned:
    compliant (nothing to update)."""

    kind: Literal["package"] = "package"
    plugin: Literal["apt", "dnf"] = "apt"
    name: str = Field(min_length=1)
    min_version: str = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _package_name(cls, value: str) -> str:
        if not PACKAGE.match(value):
            raise ValueError(f"'{value}' is not a package name")
        return value

    @field_validator("min_version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not VERSION.match(value):
            raise ValueError(f"'{value}' is not a package version (e.g. 1.1-1, 2:3.0.15-1~deb12u1)")
        return value

    @property
    def key(self) -> str:
        return update_key(self.plugin, self.name)

    def describe(self) -> str:
        return f"{self.key} >= {self.min_version}"


class OriginRule(_Rule):
    """Every apt update from an origin (e.g. `Debian-Security`: the security archive)."""

    kind: Literal["origin"] = "origin"
    plugin: Literal["apt"] = "apt"
    origin: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return f"apt:origin={self.origin}"

    def describe(self) -> str:
        return f"every apt update from origin {self.origin}"


class AdvisoryRule(_Rule):
    """dnf updates of an advisory (e.g. RHSA-2026:1234), or of every security advisory of at least
    a severity."""

    kind: Literal["advisory"] = "advisory"
    plugin: Literal["dnf"] = "dnf"
    advisory: str | None = None
    min_severity: Literal["Low", "Moderate", "Important", "Critical"] | None = None

    @property
    def key(self) -> str:
        if self.advisory:
            return f"dnf:advisory={self.advisory}"
        return f"dnf:security>={self.min_severity or 'Low'}"

    def describe(self) -> str:
        if self.advisory:
            return f"the dnf updates of advisory {self.advisory}"
        return f"every dnf security update of severity {self.min_severity or 'Low'} or more"


class HotfixRule(_Rule):
    kind: Literal["hotfix"] = "hotfix"
    plugin: Literal["hotfix"] = "hotfix"
    id: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return update_key("hotfix", self.id)

    def describe(self) -> str:
        return f"hotfix {self.id}"


class AllUpdatesRule(_Rule):
    """Everything a plug-in finds applicable (VMM's sample baselines of all updates)."""

    kind: Literal["all"] = "all"
    plugin: str = Field(min_length=1)

    @property
    def key(self) -> str:
        return f"{self.plugin}:*"

    def describe(self) -> str:
        return f"every update the {self.plugin} plug-in finds"


BaselineRule = Annotated[
    PackageRule | OriginRule | AdvisoryRule | HotfixRule | AllUpdatesRule, Field(discriminator="kind")
]


class ScopeKind(StrEnum):
    CLUSTER = "cluster"
    NODE = "node"
    GROUP = "group"


class Scope(BaseModel):
    """Where a baseline applies or an exemption holds: a cluster, a node (by its name, whatever
    cluster it is in: an assignment follows the node), or a named group of clusters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ScopeKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value} {self.name}"


class Baseline(Document):
    kind: ClassVar[str] = "baseline"

    name: str
    description: str = ""
    rules: tuple[BaselineRule, ...] = ()
    scopes: tuple[Scope, ...] = ()
    # Goes up at every change of its rules: scans of an older revision say Unknown.
    revision: int = 1
    created: datetime
    updated: datetime
    updated_by: str

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value, "baseline name")

    @property
    def key(self) -> str:
        return self.name

    def plugins(self) -> set[str]:
        return {r.plugin for r in self.rules}


class ClusterGroup(Document):
    """A named group of clusters (branch offices...), a baseline scope."""

    kind: ClassVar[str] = "cluster-group"

    name: str
    clusters: tuple[str, ...] = ()
    updated: datetime
    updated_by: str

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        return _name(value, "group name")

    @property
    def key(self) -> str:
        return self.name


def applies(baseline: Baseline, cluster: str, node: str, groups: Iterable[ClusterGroup]) -> bool:
    """A node gets its cluster's baselines, its cluster's groups' and its own."""
    in_groups = {g.name for g in groups if cluster in g.clusters}
    for scope in baseline.scopes:
        if scope.kind is ScopeKind.CLUSTER and scope.name == cluster:
            return True
        if scope.kind is ScopeKind.NODE and scope.name == node:
            return True
        if scope.kind is ScopeKind.GROUP and scope.name in in_groups:
            return True
    return False


# --- exemptions -------------------------------------------------------------------------------


class Exemption(Document):
    """One update kept out of compliance (and of every remediation) on a node or a cluster, with
    who, why and until when. An expired exemption holds no more: the update is Unknown until the
    next scan."""

    kind: ClassVar[str] = "exemption"

    id: str
    update: str  # an update key, or a rule's key for a rule as a whole
    scope: Scope
    baseline: str | None = None  # None: in every baseline
    by: str
    reason: str = Field(min_length=1)
    created: datetime
    until: datetime | None = None
    # Removed exemptions are kept, ended: an update whose exemption ended after its node's last
    # scan is Unknown until the next scan (VMM), whether the exemption expired or was removed.
    removed: datetime | None = None
    removed_by: str | None = None

    @field_validator("update")
    @classmethod
    def _valid_update(cls, value: str) -> str:
        split_key(value)
        return value

    @property
    def key(self) -> str:
        return self.id

    def active(self, now: datetime) -> bool:
        return self.removed is None and (self.until is None or now < self.until)

    def ended(self, now: datetime) -> datetime | None:
        """When it stopped holding (removed, or expired), or None while it holds."""
        ends = [t for t in (self.removed, self.until) if t is not None and t <= now]
        return min(ends) if ends else None


def covering(
    exemptions: Iterable[Exemption],
    groups: Sequence[ClusterGroup],
    *,
    cluster: str,
    node: str,
    baseline: str,
    update: str,
) -> list[Exemption]:
    """The exemptions of `update` on the node, in force or not: of the node, its cluster, or a
    group of clusters it is in."""
    in_groups = {g.name for g in groups if cluster in g.clusters}
    out = []
    for e in exemptions:
        if e.update != update or e.baseline not in (None, baseline):
            continue
        kind, name = e.scope.kind, e.scope.name
        if (
            (kind is ScopeKind.NODE and name == node)
            or (kind is ScopeKind.CLUSTER and name == cluster)
            or (kind is ScopeKind.GROUP and name in in_groups)
        ):
            out.append(e)
    return out


def exemption_for(
    exemptions: Iterable[Exemption],
    groups: Sequence[ClusterGroup],
    *,
    cluster: str,
    node: str,
    baseline: str,
    update: str,
    rule: str,
    now: datetime,
) -> Exemption | None:
    """The exemption in force for an update of a rule on the node: of the update itself, or of
    its rule as a whole (every update the rule takes in)."""
    for key in dict.fromkeys((update, rule)):
        for e in covering(exemptions, groups, cluster=cluster, node=node, baseline=baseline, update=key):
            if e.active(now):
                return e
    return None


def lapsed_since(
    exemptions: Iterable[Exemption],
    groups: Sequence[ClusterGroup],
    *,
    cluster: str,
    node: str,
    baseline: str,
    update: str,
    rule: str,
    since: datetime,
    now: datetime,
) -> bool:
    """An exemption of the update (or its rule) ended, removed or expired, after `since` (the
    node's last scan): what the scan said may no longer be what counts."""
    for key in dict.fromkeys((update, rule)):
        for e in covering(exemptions, groups, cluster=cluster, node=node, baseline=baseline, update=key):
            ended = e.ended(now)
            if ended is not None and ended > since:
                return True
    return False


# --- what a scan found ------------------------------------------------------------------------


class FindingState(StrEnum):
    SATISFIED = "satisfied"  # installed at the required version, or nothing of it applies
    MISSING = "missing"  # applicable, not installed
    ERROR = "error"  # could not be told (the plug-in failed on this node)


class Finding(BaseModel):
    """One required update on one node for one baseline, as the scan saw it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline: str
    rule: str  # the rule's key
    update: str  # the update key (for a rule met as a whole: the rule's key)
    title: str
    state: FindingState
    installed: str | None = None  # version found on the node
    required: str | None = None  # minimum version, when the rule says one
    available: str | None = None  # version its sources offer, when an update applies
    detail: str = ""
    # Exempt when scanned: an exemption removed or expired since makes the status Unknown.
    exempt_at_scan: bool = False


class NodeComplianceScan(Document):
    """The last compliance scan of one node: what each of its baselines required and what the
    node had, with the baselines' revisions it was measured against."""

    kind: ClassVar[str] = "compliance-scan"

    cluster: str
    node: str
    scanned_at: datetime
    boot_id: str | None = None
    error: str | None = None  # the node could not be scanned at all
    baselines: dict[str, int] = Field(default_factory=dict)  # name -> revision scanned
    findings: tuple[Finding, ...] = ()
    restart_pending: bool = False  # the node itself says it waits for a restart

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.node}"


class PendingRestart(Document):
    """Updates cau installed on a node without restarting it (`no_restart`): PendingReboot until
    the node has restarted (another boot id) and was scanned again."""

    kind: ClassVar[str] = "pending-restart"

    cluster: str
    node: str
    boot_id: str | None
    updates: tuple[str, ...]
    run_id: str | None = None
    recorded: datetime

    @property
    def key(self) -> str:
        return f"{self.cluster}/{self.node}"


# --- statuses ---------------------------------------------------------------------------------


class ComplianceStatus(StrEnum):
    COMPLIANT = "Compliant"
    NON_COMPLIANT = "NonCompliant"
    PENDING_REBOOT = "PendingReboot"
    UNKNOWN = "Unknown"
    ERROR = "Error"
    EXEMPT = "Exempt"


# An overall state is the worst of its parts, in this order (Exempt counts as Compliant): a
# missing update says most, an error hides what is missing, Unknown is not yet measured, and
# PendingReboot is installed, waiting only for a restart.
SEVERITY = {
    ComplianceStatus.NON_COMPLIANT: 5,
    ComplianceStatus.ERROR: 4,
    ComplianceStatus.UNKNOWN: 3,
    ComplianceStatus.PENDING_REBOOT: 2,
    ComplianceStatus.EXEMPT: 1,
    ComplianceStatus.COMPLIANT: 0,
}


def overall(statuses: Iterable[ComplianceStatus]) -> ComplianceStatus:
    worst = max(statuses, key=SEVERITY.__getitem__, default=ComplianceStatus.COMPLIANT)
    return ComplianceStatus.COMPLIANT if worst is ComplianceStatus.EXEMPT else worst


@dataclass(frozen=True)
class StatusInputs:
    """What an update's status depends on, now."""

    finding: Finding | None  # None: never scanned against this baseline
    scanned_revision: int | None  # the baseline's revision the scan measured
    revision: int  # the baseline's revision now
    exempt_now: bool
    pending_restart: bool  # cau installed it without restart, and the node has not restarted since
    exemption_lapsed: bool = False  # an exemption of it ended (removed or expired) since the scan


def update_status(i: StatusInputs) -> ComplianceStatus:
    """VMM's rules: Exempt while an exemption holds; Unknown before the first scan, after the
    baseline changed, and after an exemption went away, until the next scan; Error when the scan
    could not tell; NonCompliant when missing; PendingReboot when installed without restart."""
    if i.exempt_now:
        return ComplianceStatus.EXEMPT
    if i.finding is None or i.scanned_revision != i.revision or i.exemption_lapsed:
        return ComplianceStatus.UNKNOWN
    if i.finding.state is FindingState.ERROR:
        return ComplianceStatus.ERROR
    if i.finding.state is FindingState.MISSING:
        return ComplianceStatus.NON_COMPLIANT
    if i.pending_restart:
        return ComplianceStatus.PENDING_REBOOT
    return ComplianceStatus.COMPLIANT
