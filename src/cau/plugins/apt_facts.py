"""Facts of the apt plug-in: the commands it runs on a node and PURE parsers of their output.

Every parser takes text and returns small frozen values; none does I/O. The plug-in runs:

    apt-get -s -o Debug::NoLocking=1 ... upgrade | dist-upgrade               parse_apt_plan
    dpkg-query -W -f='${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n' parse_dpkg_query
                                    (every package: parse_dpkg_audit)
    apt-mark showhold                                                         parse_apt_mark_hold
    if test -e /var/run/reboot-required; then echo yes; cat ....pkgs; ...     parse_reboot_required
    needrestart -b                                                            parse_needrestart_batch
    apt-get install (its output: dpkg's errors, a held lock)        parse_dpkg_errors, is_lock_error

tests/fixtures/apt holds outputs of these commands, each recorded with the exact command the
plug-in runs (a test checks that it does), and outputs of other apt commands, for the shapes the
parsers must also read.

Run them all with `LC_ALL=C` (and `LANGUAGE=` unset): apt translates its headings ("The following
packages have been kept back:") and summary line; only the `Inst`/`Remv` lines are not translated.
`Debug::NoLocking=1` makes sure a simulation never takes or waits for apt's locks (apt 2.6 run as
root already skipped the dpkg lock for `-s` when tried); `is_lock_error` tells a held lock (wait
and retry) from every other failure of a real run. apt 3.0 (Debian 13) keeps this classic output
for `apt-get`; its new columns (`APT::Output-Version=30`, the default of `apt`) are understood too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from fnmatch import fnmatchcase

from cau.errors import OutputError


class AptParseError(OutputError):
    """Output that does not have the documented shape (the message quotes the line)."""


class AptAction(StrEnum):
    INSTALL = "install"  # a package that is not installed yet (pulled in as a dependency, or asked for)
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    REINSTALL = "reinstall"  # same version again (`install --reinstall`)
    REMOVE = "remove"  # `Remv` and `Purg` (purge=True)


@dataclass(frozen=True)
class AptChange:
    """One `Inst`/`Remv`/`Purg` line of `apt-get -s`.

    `package` is the name as apt prints it: the bare name for the native architecture, `name:arch`
    for a foreign one (what `apt-get install` accepts back). `origins` are apt's release strings,
    `Label:Version/Archive` such as "Debian-Security:12/stable-security" (none for a removal).
    `old_version` is None for a new install; `new_version` is "" for a removal.
    """

    package: str
    action: AptAction
    old_version: str | None
    new_version: str
    origins: tuple[str, ...] = ()
    arch: str | None = None
    purge: bool = False


@dataclass(frozen=True)
class AptSummary:
    """apt's count line ("3 upgraded, 1 newly installed, 0 to remove and 2 not upgraded.")."""

    upgraded: int
    newly_installed: int
    to_remove: int
    not_upgraded: int
    downgraded: int = 0
    reinstalled: int = 0
    not_fully_installed: int = 0


@dataclass(frozen=True)
class AptPlan:
    """Everything `apt-get -s` says about what it would do. When `errors` is not empty apt refused
    (e.g. "held broken packages", or a held package would change under -y): nothing would be done,
    even though the summary line may still be printed."""

    changes: tuple[AptChange, ...]
    kept_back: tuple[str, ...] = ()  # held, or the upgrade needs a new package / a removal
    deferred_phasing: tuple[str, ...] = ()  # Ubuntu phased updates not offered to this node yet
    held_changed: tuple[str, ...] = ()  # held packages the request would change anyway
    autoremovable: tuple[str, ...] = ()
    # name -> (installed, candidate) for list entries apt annotated with their versions
    # (APT::Get::Show-Versions=1: "labpkg (1.0 => 1.1)"), e.g. what a kept-back package would be
    versions: dict[str, tuple[str, str]] = field(default_factory=dict)
    summary: AptSummary | None = None
    errors: tuple[str, ...] = ()  # `E:` lines (when stderr was captured with stdout)


# ---------------------------------------------------------------------------------------------
# apt-get -s

_INST = re.compile(r"^Inst (?P<pkg>\S+)(?: \[(?P<old>[^\]]*)\])? \((?P<body>.*)$")
_REMV = re.compile(r"^(?P<verb>Remv|Purg) (?P<pkg>\S+)(?: \[(?P<old>[^\]]*)\])?(?: .*)?$")
_ARCH_TAIL = re.compile(r"^(?P<rest>.*?) ?\[(?P<arch>[^\]\s]+)\]$")

# Headings of the package lists: classic apt-get, then apt >= 2.9 / 3.0 (Output-Version 30).
_SECTIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), key)
    for pattern, key in (
        (r"^The following packages? (?:has|have) been kept back:$", "kept_back"),
        (r"^Not upgrading:$", "kept_back"),
        (r"^The following upgrades have been deferred due to phasing:$", "deferred_phasing"),
        (r"^Not upgrading yet due to phasing:$", "deferred_phasing"),
        (r"^The following held packages will be changed:$", "held_changed"),
        (r"^Changing held packages:$", "held_changed"),
        (
            r"^The following packages? (?:was|were) automatically installed and (?:is|are) no longer "
            r"required:$",
            "autoremovable",
        ),
        (r"^The following .*:$", "other"),
        (r"^[A-Z][A-Za-z ]*:$", "other"),  # Upgrading:, Installing dependencies:, REMOVING:, Summary:
    )
)
_CLASSIC_SUMMARY = re.compile(r"^\d+ upgraded, \d+ newly installed, ")
_SUMMARY_PART = re.compile(r"(\d+) (upgraded|newly installed|reinstalled|downgraded|to remove|not upgraded)")
_CLASSIC_KEYS = {
    "upgraded": "upgraded",
    "newly installed": "newly_installed",
    "reinstalled": "reinstalled",
    "downgraded": "downgraded",
    "to remove": "to_remove",
    "not upgraded": "not_upgraded",
}
_V30_KEYS = {
    "Upgrading": "upgraded",
    "Installing": "newly_installed",
    "Reinstalling": "reinstalled",
    "Downgrading": "downgraded",
    "Removing": "to_remove",
    "Not Upgrading": "not_upgraded",
}
_V30_PART = re.compile(r"([A-Z][A-Za-z ]*?): (\d+)(?:,|$)")
_NOT_FULLY = re.compile(r"^(\d+) not fully installed or removed\.$")


def parse_apt_plan(text: str) -> AptPlan:
    """Parse the whole output of `apt-get -s ...` (stdout; stderr may be appended)."""
    changes: list[AptChange] = []
    lists: dict[str, list[str]] = {
        "kept_back": [],
        "deferred_phasing": [],
        "held_changed": [],
        "autoremovable": [],
    }
    counts: dict[str, int] = {}
    versions: dict[str, tuple[str, str]] = {}
    errors: list[str] = []
    section: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if section is not None and line.startswith(" ") and line.strip():
            if section == "summary":
                counts.update(_v30_counts(line))
            elif section in lists:
                lists[section].extend(_list_items(line))
                versions.update(_annotated_versions(line))
            continue
        section = None
        if not line:
            continue
        if line.startswith("Inst "):
            changes.append(_parse_inst(line))
        elif line.startswith(("Remv ", "Purg ")):
            changes.append(_parse_remv(line))
        elif line.startswith("Conf "):
            continue  # repeats an Inst line: configuring is part of installing
        elif line.startswith("E: "):
            errors.append(line[3:])
        elif _CLASSIC_SUMMARY.match(line):
            for number, what in _SUMMARY_PART.findall(line):
                counts[_CLASSIC_KEYS[what]] = int(number)
        elif match := _NOT_FULLY.match(line):
            counts["not_fully_installed"] = int(match.group(1))
        elif line == "Summary:":
            section = "summary"
        else:
            section = _heading(line)
    summary = None
    if {"upgraded", "newly_installed", "to_remove", "not_upgraded"} <= counts.keys():
        summary = AptSummary(**counts)
    return AptPlan(
        changes=tuple(changes),
        kept_back=tuple(lists["kept_back"]),
        deferred_phasing=tuple(lists["deferred_phasing"]),
        held_changed=tuple(lists["held_changed"]),
        autoremovable=tuple(lists["autoremovable"]),
        versions=versions,
        summary=summary,
        errors=tuple(errors),
    )


def _heading(line: str) -> str | None:
    for pattern, key in _SECTIONS:
        if pattern.match(line):
            return key
    return None


def _list_items(line: str) -> list[str]:
    # "  curl* jq (1.6 => 1.7)": drop version annotations (APT::Get::Show-Versions) and purge marks.
    line = re.sub(r"\([^)]*\)", " ", line)
    return [item.rstrip("*") for item in line.split() if item.rstrip("*")]


_ANNOTATED = re.compile(r"(\S+) \((\S+) => (\S+)\)")


def _annotated_versions(line: str) -> dict[str, tuple[str, str]]:
    return {name.rstrip("*"): (old, new) for name, old, new in _ANNOTATED.findall(line)}


def _v30_counts(line: str) -> dict[str, int]:
    out = {}
    for key, number in _V30_PART.findall(line.strip()):
        if key.strip() in _V30_KEYS:
            out[_V30_KEYS[key.strip()]] = int(number)
    return out


def _parse_inst(line: str) -> AptChange:
    match = _INST.match(line)
    if not match:
        raise AptParseError(f"not an apt Inst line: {line!r}")
    body = _paren_body(match.group("body"), line)
    new_version, _, rest = body.partition(" ")
    if not new_version:
        raise AptParseError(f"no candidate version in: {line!r}")
    arch = None
    if tail := _ARCH_TAIL.match(rest):
        rest, arch = tail.group("rest"), tail.group("arch")
    origins = tuple(o.strip() for o in rest.split(", ") if o.strip())
    old = match.group("old")
    return AptChange(
        package=match.group("pkg"),
        action=_action(old, new_version),
        old_version=old,
        new_version=new_version,
        origins=origins,
        arch=arch,
    )


def _paren_body(body: str, line: str) -> str:
    """`body` is what follows "(": the version and origins end at the ")" that ends the line or is
    followed by apt's ordering notes (" [pkg:arch on pkg:arch]", " []")."""
    for match in re.finditer(r"\)", body):
        after = body[match.end() :]
        if not after or after.startswith(" ["):
            return body[: match.start()]
    raise AptParseError(f"unbalanced parentheses in: {line!r}")


def _parse_remv(line: str) -> AptChange:
    match = _REMV.match(line)
    if not match:
        raise AptParseError(f"not an apt Remv/Purg line: {line!r}")
    return AptChange(
        package=match.group("pkg"),
        action=AptAction.REMOVE,
        old_version=match.group("old"),
        new_version="",
        purge=match.group("verb") == "Purg",
    )


def _action(old: str | None, new: str) -> AptAction:
    if old is None:
        return AptAction.INSTALL
    order = compare_versions(new, old)
    if order == 0:
        return AptAction.REINSTALL
    return AptAction.UPGRADE if order > 0 else AptAction.DOWNGRADE


# ---------------------------------------------------------------------------------------------
# Debian version order (dpkg's verrevcmp), used to tell an upgrade from a downgrade.


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version `a` sorts before, equal to or after `b` ("1:2.0~rc1-1")."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return 1 if ea > eb else -1
    return _sign(_compare_part(ua, ub) or _compare_part(ra, rb))


def _split_version(version: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in version:
        head, version = version.split(":", 1)
        if not head.isdigit():
            raise AptParseError(f"bad epoch in Debian version {head + ':' + version!r}")
        epoch = int(head)
    upstream, _, revision = version.rpartition("-")
    if not upstream:
        return epoch, revision, ""
    return epoch, upstream, revision


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isascii() and char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_part(a: str, b: str) -> int:
    i = j = 0
    digits = "0123456789"
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in digits) or (j < len(b) and b[j] not in digits):
            ca = _order(a[i]) if i < len(a) and a[i] not in digits else 0
            cb = _order(b[j]) if j < len(b) and b[j] not in digits else 0
            if ca != cb:
                return ca - cb
            i += 1
            j += 1
        na = nb = ""
        while i < len(a) and a[i] in digits:
            na += a[i]
            i += 1
        while j < len(b) and b[j] in digits:
            nb += b[j]
            j += 1
        if int(na or "0") != int(nb or "0"):
            return int(na or "0") - int(nb or "0")
    return 0


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


# ---------------------------------------------------------------------------------------------
# Filtering (what the run profile asks for, in the spirit of WUA's query string)


@dataclass(frozen=True)
class AptOrigin:
    """An origin string split into apt's parts: "Debian-Security:12/stable-security"."""

    label: str | None
    version: str | None
    archive: str

    @classmethod
    def parse(cls, origin: str) -> AptOrigin:
        label, sep, rest = origin.partition(":")
        if not sep:
            label, rest = "", origin
        version, sep, archive = rest.partition("/")
        if not sep:
            version, archive = "", rest
        return cls(label or None, version or None, archive)


def origin_matches(origin: str, pattern: str) -> bool:
    """A pattern with ':' or '/' matches the origin string by prefix (or as a glob when it has
    glob characters): "Debian-Security:12/" , "Ubuntu:22.04/jammy-*". A bare word matches the
    label or the archive exactly (or as a glob): "Debian-Security", "stable-security", "*-security".
    So "Debian" selects the Debian archive, not "Debian-Security"."""
    globbing = any(c in pattern for c in "*?[")
    if ":" in pattern or "/" in pattern:
        return fnmatchcase(origin, pattern) if globbing else origin.startswith(pattern)
    parts = AptOrigin.parse(origin)
    return any(fnmatchcase(part, pattern) for part in (parts.label, parts.archive) if part)


def _name_matches(package: str, patterns: Iterable[str]) -> bool:
    bare = package.split(":", 1)[0]
    return any(fnmatchcase(package, p) or fnmatchcase(bare, p) for p in patterns)


def filter_changes(
    changes: Sequence[AptChange],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    origins: Sequence[str] = (),
) -> list[AptChange]:
    """Keep the changes whose package matches an `include` glob (all when empty), matches no
    `exclude` glob, and (when `origins` is given) comes from a matching origin (see
    `origin_matches`). A removal has no origin, so an origin filter never selects one."""
    out = []
    for change in changes:
        if include and not _name_matches(change.package, include):
            continue
        if exclude and _name_matches(change.package, exclude):
            continue
        if origins and not any(origin_matches(o, p) for o in change.origins for p in origins):
            continue
        out.append(change)
    return out


# ---------------------------------------------------------------------------------------------
# dpkg-query, apt-mark


@dataclass(frozen=True)
class DpkgPackage:
    """One line of `dpkg-query -W -f='${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'`.

    want: u(nknown) i(nstall) h(old) r(emove) p(urge); status: n(ot-installed) c(onfig-files)
    H(alf-installed) U(npacked) F (half-configured) W (triggers-awaited) t (triggers-pending)
    i(nstalled); error: "" or R (reinstall required)."""

    name: str
    version: str
    want: str
    status: str
    error: str = ""

    @property
    def installed(self) -> bool:
        return self.status in ("i", "W", "t")

    @property
    def held(self) -> bool:
        return self.want == "h"

    @property
    def broken(self) -> bool:
        """dpkg was interrupted on this package: `dpkg --configure -a` / a reinstall is due."""
        return self.status in ("H", "U", "F") or self.error == "R"

    @property
    def unfinished(self) -> bool:
        """Not fully installed: broken, or its triggers still to run (what `dpkg --audit` lists)."""
        return self.broken or self.status in ("W", "t")

    @property
    def state(self) -> str:
        """dpkg's name of the package's state ("half-configured", "installed", ...)."""
        if self.error == "R":
            return "reinstall-required"
        return _DPKG_STATES.get(self.status, f"status {self.status!r}")


_DPKG_STATES = {
    "n": "not-installed",
    "c": "config-files",
    "H": "half-installed",
    "U": "unpacked",
    "F": "half-configured",
    "W": "triggers-awaited",
    "t": "triggers-pending",
    "i": "installed",
}


def parse_dpkg_query(text: str) -> list[DpkgPackage]:
    """Every package line. Use `${binary:Package}` on multi-arch nodes (else libc6:amd64 and
    libc6:i386 both print "libc6"). "dpkg-query: no packages found matching X" lines are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("dpkg-query: "):
            continue
        parts = line.split("\t")
        if len(parts) != 3 or not parts[0] or not 2 <= len(parts[2]) <= 3:
            raise AptParseError(f"not a dpkg-query line (name<TAB>version<TAB>status): {line!r}")
        abbrev = parts[2].ljust(3)
        out.append(DpkgPackage(parts[0], parts[1], abbrev[0], abbrev[1], abbrev[2].strip()))
    return out


def parse_dpkg_audit(text: str) -> list[DpkgPackage]:
    """The packages of a full `dpkg-query -W` listing that are not fully installed."""
    return [p for p in parse_dpkg_query(text) if p.unfinished]


def parse_apt_mark_hold(text: str) -> set[str]:
    """`apt-mark showhold`: one held package per line."""
    return {line.strip() for line in text.splitlines() if line.strip()}


# ---------------------------------------------------------------------------------------------
# Restart facts


def parse_reboot_required(text: str) -> tuple[bool, list[str]]:
    """`if test -e /var/run/reboot-required; then echo yes; cat /var/run/reboot-required.pkgs;
    else echo no; fi`: the flag file's existence is the fact; reboot-required.pkgs says which
    packages asked (one per line, may repeat), and is only read with the flag (a list left behind
    without it means nothing)."""
    first, _, rest = text.partition("\n")
    if first.strip() != "yes":
        return False, []
    seen: dict[str, None] = {}
    for line in rest.splitlines():
        if line.strip():
            seen.setdefault(line.strip(), None)
    return True, list(seen)


class KernelStatus(IntEnum):
    """needrestart's NEEDRESTART-KSTA."""

    UNKNOWN = 0
    CURRENT = 1
    ABI_UPGRADE = 2  # a newer kernel with the same ABI is installed: reboot to run it
    VERSION_UPGRADE = 3  # a newer kernel version is installed: reboot to run it


@dataclass(frozen=True)
class NeedrestartResult:
    """`needrestart -b` (batch mode, the apt-dater protocol)."""

    version: str | None = None
    kernel_current: str | None = None
    kernel_expected: str | None = None
    kernel_status: KernelStatus | None = None
    microcode_status: int | None = None  # 0 unknown, 1 current, 2 obsolete
    microcode_current: str | None = None
    microcode_expected: str | None = None
    services: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()

    @property
    def kernel_restart_needed(self) -> bool:
        """A newer kernel is installed than the one running."""
        return self.kernel_status in (KernelStatus.ABI_UPGRADE, KernelStatus.VERSION_UPGRADE)

    @property
    def restart_needed(self) -> bool:
        """The node must restart: a newer kernel, or obsolete CPU microcode. (Services listed in
        `services` only need restarting themselves.)"""
        return self.kernel_restart_needed or self.microcode_status == 2


_NEEDRESTART_LINE = re.compile(r"^NEEDRESTART-([A-Z]+):\s*(.*?)\s*$")


def parse_needrestart_batch(text: str) -> NeedrestartResult:
    """Lines `NEEDRESTART-KEY: value`; unknown keys and other lines are ignored."""
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {"SVC": [], "CONT": [], "SESS": []}
    for line in text.splitlines():
        match = _NEEDRESTART_LINE.match(line.strip())
        if not match:
            continue
        key, value = match.groups()
        if key in multi:
            if value and value not in multi[key]:
                multi[key].append(value)
        else:
            single[key] = value
    return NeedrestartResult(
        version=single.get("VER"),
        kernel_current=single.get("KCUR"),
        kernel_expected=single.get("KEXP"),
        kernel_status=KernelStatus(_status(single, "KSTA", 3)) if "KSTA" in single else None,
        microcode_status=_status(single, "UCSTA", 2) if "UCSTA" in single else None,
        microcode_current=single.get("UCCUR"),
        microcode_expected=single.get("UCEXP"),
        services=tuple(multi["SVC"]),
        containers=tuple(multi["CONT"]),
        sessions=tuple(multi["SESS"]),
    )


def _status(values: dict[str, str], key: str, highest: int) -> int:
    value = values[key]
    if not value.isdigit() or int(value) > highest:
        raise AptParseError(f"NEEDRESTART-{key} must be 0..{highest}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------
# Lock errors

_LOCK_HELD = re.compile(
    r"Could not get lock "  # "... It is held by process N (name)" or "- open (11: Resource ...)"
    r"|Unable to acquire the dpkg frontend lock .*is another process using it"
    r"|Unable to lock the administration directory .*is another process using it"
    r"|Waiting for cache lock"
    r"|locked by another process"  # dpkg: "dpkg frontend lock was locked by another process with pid N"
)


def is_lock_error(stderr: str) -> bool:
    """The stderr of a FAILED apt/dpkg command says another apt/dpkg holds the lock (wait and
    retry). Not a permission problem ("Could not open lock file ... Permission denied", "are you
    root?"): retrying would not help with that."""
    return bool(_LOCK_HELD.search(stderr))


# ---------------------------------------------------------------------------------------------
# dpkg's errors (in apt's output: apt runs dpkg on a terminal, so they reach apt's stdout)


@dataclass(frozen=True)
class DpkgError:
    """One "dpkg: error processing package P (--configure):" block: the package, what dpkg was
    doing (--configure, --unpack, --install...) and why ("installed P package post-installation
    script subprocess returned error exit status 1")."""

    package: str
    action: str
    reason: str

    def describe(self) -> str:
        return f"{self.reason} (dpkg {self.action} {self.package})"


_DPKG_ERROR = re.compile(r"^dpkg: error processing (?:package|archive) (\S+) \((--[a-z-]+)\):\s*$")


def parse_dpkg_errors(text: str) -> list[DpkgError]:
    """Every dpkg error block, in order; a package's reason is its indented lines joined."""
    out: list[DpkgError] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = _DPKG_ERROR.match(line.rstrip())
        if not match:
            continue
        reason = []
        for follow in lines[i + 1 :]:
            if not follow.startswith(" ") or not follow.strip():
                break
            reason.append(follow.strip())
        package = match.group(1)
        if package.endswith(".deb"):  # "error processing archive /var/cache/.../p_1.1_all.deb"
            package = package.rsplit("/", 1)[-1].split("_", 1)[0]
        out.append(DpkgError(package, match.group(2), " ".join(reason) or "failed"))
    return out
