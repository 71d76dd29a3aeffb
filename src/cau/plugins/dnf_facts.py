"""Facts of the dnf plug-in: PURE parsers of what dnf, needs-restarting and rpm print.

    dnf -q check-update [--refresh]           parse_check_update (exit 100: updates, 0: none)
    dnf -q updateinfo list --security         parse_updateinfo_list (with --all / --with-cve too)
    needs-restarting -r                       parse_needs_restarting_r (exit 1: reboot required)
    rpm -q --qf '%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n' NAME...   parse_rpm_versions

Run them with `LC_ALL=C`. The formats are those of dnf 4 (RHEL/Alma/Rocky 8-10, Fedora <= 40):
check-update prints `name.arch  [epoch:]version-release  repo` in columns sized for an
80-column terminal, and a name (or version) wider than its column is printed alone with the rest
of the row on the next line, indented. dnf 5 (Fedora >= 41) prints differently and is not handled.

tests/fixtures/dnf holds outputs of these commands, each recorded with the exact command the
plug-in runs (a test checks that it does), and a few of other dnf commands the parsers also read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from cau.errors import OutputError


class DnfParseError(OutputError):
    """Output that does not have the documented shape (the message quotes the line)."""


def split_evr(evr: str) -> tuple[int | None, str, str]:
    """Split an EVR: "1:3.0.7-27.el9" -> (1, "3.0.7", "27.el9"); no epoch (or "(none)") -> None."""
    epoch: int | None = None
    if ":" in evr:
        head, evr = evr.split(":", 1)
        if head != "(none)":
            if not head.isdigit():
                raise DnfParseError(f"bad epoch {head!r}")
            epoch = int(head)
    version, sep, release = evr.rpartition("-")
    if not sep or not version or not release:
        raise DnfParseError(f"not version-release: {evr!r}")
    return epoch, version, release


def split_nevra(nevra: str) -> tuple[str, str, str]:
    """Split a NEVRA: "openssl-libs-1:3.0.7-27.el9.x86_64" -> ("openssl-libs", "1:3.0.7-27.el9", "x86_64")."""
    rest, dot, arch = nevra.rpartition(".")
    parts = rest.rsplit("-", 2)
    if not dot or len(parts) != 3 or not all(parts):
        raise DnfParseError(f"not a name-[epoch:]version-release.arch: {nevra!r}")
    name, version, release = parts
    return name, f"{version}-{release}", arch


@dataclass(frozen=True)
class DnfChange:
    """One available package of `dnf check-update`. `evr` is printed as dnf prints it (epoch only
    when not 0), so `nevra` equals what `dnf updateinfo list` prints for the same package.
    `obsoletes` names (as NEVRA) installed packages this one replaces; a package that only appears
    under "Obsoleting Packages" is a new package (`kind` "obsoleting")."""

    name: str
    arch: str
    evr: str
    repo: str
    obsoletes: tuple[str, ...] = ()
    kind: str = "upgrade"  # "upgrade" | "obsoleting"

    @property
    def nevra(self) -> str:
        return f"{self.name}-{self.evr}.{self.arch}"

    @property
    def epoch(self) -> int:
        return split_evr(self.evr)[0] or 0

    @property
    def version(self) -> str:
        return split_evr(self.evr)[1]

    @property
    def release(self) -> str:
        return split_evr(self.evr)[2]


_NOISE = (
    "Last metadata expiration check:",
    "Security: ",  # "Security: kernel-core-... is an installed security update"
)
_OBSOLETING = "obsoleting packages"
_EVR = re.compile(r"^(?:\d+:)?[^\s:-]+-[^\s:-]+$")


def updates_available(exit_code: int) -> bool:
    """`dnf check-update` exits 100 when updates exist, 0 when none; anything else is an error."""
    if exit_code == 100:
        return True
    if exit_code == 0:
        return False
    raise DnfParseError(f"dnf check-update failed (exit {exit_code})")


def parse_check_update(text: str) -> list[DnfChange]:
    """The packages `dnf -q check-update` offers, with the "Obsoleting Packages" section merged:
    an obsoleting package already listed as an update gains `obsoletes`; one not listed is added
    with kind "obsoleting". Rows wrapped onto the next line are joined."""
    changes: list[DnfChange] = []
    index: dict[tuple[str, str, str], int] = {}
    obsoleting = False
    pending: list[str] = []
    last_new: int | None = None  # the obsoleting row the next "@repo" row belongs to

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(_NOISE):
            continue
        if line.lower().rstrip(":") == _OBSOLETING:
            if pending:
                raise DnfParseError(f"incomplete row before 'Obsoleting Packages': {' '.join(pending)!r}")
            obsoleting = True
            continue
        pending.extend(line.split())
        if len(pending) < 3:
            continue
        if len(pending) > 3:
            raise DnfParseError(f"not a 'name.arch version repo' row: {raw!r}")
        na, evr, repo = pending
        pending = []
        name, dot, arch = na.rpartition(".")
        if not dot or not name or not _EVR.match(evr):
            raise DnfParseError(f"not a 'name.arch version repo' row: {na} {evr} {repo}")
        if obsoleting and repo.startswith("@"):
            # the installed package the previous row obsoletes (printed indented, repo "@...")
            if last_new is None:
                raise DnfParseError(f"installed package {na} without an obsoleting package before it")
            old = changes[last_new]
            obsoleted = f"{name}-{evr}.{arch}"
            if obsoleted not in old.obsoletes:
                changes[last_new] = _replace(old, obsoletes=(*old.obsoletes, obsoleted))
            continue
        key = (name, arch, evr)
        if key in index:
            last_new = index[key]
            continue
        index[key] = len(changes)
        last_new = len(changes)
        changes.append(DnfChange(name, arch, evr, repo, kind="obsoleting" if obsoleting else "upgrade"))
    if pending:
        raise DnfParseError(f"incomplete row at the end: {' '.join(pending)!r}")
    return changes


def _replace(change: DnfChange, *, obsoletes: tuple[str, ...]) -> DnfChange:
    return DnfChange(change.name, change.arch, change.evr, change.repo, obsoletes, change.kind)


# ---------------------------------------------------------------------------------------------
# updateinfo


@dataclass(frozen=True)
class DnfAdvisory:
    """One row of `dnf updateinfo list`: an advisory (or, with --with-cve/--with-bz, a CVE or bug
    id) and one package it updates."""

    id: str
    kind: str  # security | bugfix | enhancement | newpackage | unknown
    severity: str | None  # Critical | Important | Moderate | Low | None (security without one)
    nevra: str
    installed: bool | None = None  # only with --all ("i" mark)
    updated: str | None = None  # only with -v

    @property
    def name(self) -> str:
        return split_nevra(self.nevra)[0]

    @property
    def arch(self) -> str:
        return split_nevra(self.nevra)[2]


_KINDS = {"bugfix", "enhancement", "security", "newpackage", "unknown"}
_SEC_LABEL = re.compile(r"^(Critical|Important|Moderate|Low|Unknown)/Sec\.$")
_ADVISORY_ROW = re.compile(
    r"^(?P<mark>i |  )?(?P<id>\S+)\s+(?P<label>\S+)\s+(?P<nevra>\S+)"
    r"(?:\s+(?P<updated>\d{4}-\d\d-\d\d.*?))?\s*$"
)


def parse_updateinfo_list(text: str) -> list[DnfAdvisory]:
    """Rows `ID TYPE NEVRA` where TYPE is "Important/Sec." (a security advisory and its severity;
    "Unknown/Sec." without one) or "bugfix", "enhancement", "newpackage", ...; `--all` adds an
    "i " / "  " column (installed or not), `-v` the advisory's date, `--with-cve` puts CVE ids in
    the first column."""
    out = []
    for raw in text.splitlines():
        if not raw.strip() or raw.strip().startswith(_NOISE):
            continue
        match = _ADVISORY_ROW.match(raw.rstrip())
        if not match:
            raise DnfParseError(f"not an updateinfo row: {raw!r}")
        label = match.group("label")
        if sec := _SEC_LABEL.match(label):
            kind, severity = "security", (None if sec.group(1) == "Unknown" else sec.group(1))
        elif label in _KINDS:
            kind, severity = label, None
        else:
            raise DnfParseError(f"unknown advisory type {label!r} in: {raw!r}")
        nevra = match.group("nevra")
        split_nevra(nevra)  # validate
        mark = match.group("mark")
        out.append(
            DnfAdvisory(
                id=match.group("id"),
                kind=kind,
                severity=severity,
                nevra=nevra,
                installed=None if mark is None else mark == "i ",
                updated=match.group("updated"),
            )
        )
    return out


_SEVERITY_RANK = {"Low": 1, "Moderate": 2, "Important": 3, "Critical": 4}


def security_changes(
    changes: Sequence[DnfChange], advisories: Sequence[DnfAdvisory], min_severity: str | None = None
) -> list[DnfChange]:
    """The changes that fix a security advisory (of at least `min_severity` when given). An
    advisory names the package version that fixes it; the newest version check-update offers
    contains every earlier fix, so name and arch decide."""
    if min_severity is not None and min_severity not in _SEVERITY_RANK:
        raise ValueError(f"min_severity must be one of {', '.join(_SEVERITY_RANK)}")
    floor = _SEVERITY_RANK[min_severity] if min_severity else 0
    wanted = {
        (a.name, a.arch)
        for a in advisories
        if a.kind == "security" and _SEVERITY_RANK.get(a.severity or "", 0) >= floor
    }
    return [c for c in changes if (c.name, c.arch) in wanted]


def advisory_details(change: DnfChange, advisories: Sequence[DnfAdvisory]) -> dict[str, str]:
    """An update's advisories (ids, comma-separated) and its highest security severity, for its
    details; empty when none names its package (name and arch decide, as for security_changes)."""
    mine = [a for a in advisories if (a.name, a.arch) == (change.name, change.arch)]
    if not mine:
        return {}
    out = {"advisories": ", ".join(dict.fromkeys(a.id for a in mine))}
    severities = [a.severity for a in mine if a.kind == "security" and a.severity]
    if severities:
        out["severity"] = max(severities, key=lambda s: _SEVERITY_RANK.get(s, 0))
    return out


# ---------------------------------------------------------------------------------------------
# needs-restarting -r

_BULLET = re.compile(r"^\s*\*\s+(\S+)\s*$")


def parse_needs_restarting_r(exit_code: int, text: str) -> tuple[bool, list[str]]:
    """(reboot required, the packages named "* kernel" under "Core libraries or services have been
    updated since boot-up:"). Exit 1 means required, 0 not; other codes are errors."""
    if exit_code not in (0, 1):
        raise DnfParseError(f"needs-restarting -r failed (exit {exit_code}): {text.strip()[:200]!r}")
    packages: list[str] = []
    for line in text.splitlines():
        if (match := _BULLET.match(line)) and match.group(1) not in packages:
            packages.append(match.group(1))
    return exit_code == 1, packages


# ---------------------------------------------------------------------------------------------
# rpm -q


@dataclass(frozen=True)
class RpmPackage:
    name: str
    epoch: int | None  # None: rpm printed "(none)"
    version: str
    release: str
    arch: str | None  # None: "(none)", e.g. gpg-pubkey

    @property
    def evr(self) -> str:
        """As dnf prints it: the epoch only when it is not 0."""
        prefix = f"{self.epoch}:" if self.epoch else ""
        return f"{prefix}{self.version}-{self.release}"


_NOT_INSTALLED = re.compile(r"^package (\S+) is not installed$")


def parse_rpm_versions(text: str) -> dict[str, tuple[RpmPackage, ...]]:
    """name -> installed versions (several for kernels and multilib i686+x86_64), in rpm's order.
    A name rpm reports as "package X is not installed" maps to ()."""
    out: dict[str, tuple[RpmPackage, ...]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if match := _NOT_INSTALLED.match(line.strip()):
            out.setdefault(match.group(1), ())
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0]:
            raise DnfParseError(f"not an rpm query line (name<TAB>epoch:version-release<TAB>arch): {line!r}")
        name, evr, arch = parts
        epoch, version, release = split_evr(evr)
        arch = arch.strip()
        package = RpmPackage(name, epoch, version, release, None if arch == "(none)" else arch)
        out[name] = (*out.get(name, ()), package)
    return out
