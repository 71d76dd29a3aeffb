"""The `dnf` plug-in: RHEL/Fedora/Rocky/Alma package updates, with the same semantics as `apt`.

    [[plugins]]
    name = "dnf"
    args.security_only = true           # only updates that fix a security advisory
    args.min_severity = "Important"     # ... of at least this severity
    args.exclude = ["postgresql*"]

Scan is `dnf check-update` (exit 100: updates), optionally narrowed by `dnf updateinfo list
--security`; stage is `--downloadonly`; install upgrades exactly the versions the scan saw; a
restart is needed when `needs-restarting -r` exits 1. Everything runs with LC_ALL=C.
"""

from __future__ import annotations

import fnmatch
import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from cau.domain.durations import Duration
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import CauError, PluginError, PluginOutputError
from cau.plugins import dnf_facts as facts
from cau.plugins import refuse_this_machine
from cau.ports import (
    Clock,
    CommandResult,
    NodeSession,
    NodeUpdater,
    PackageLevel,
    PluginContext,
    ProgressCallback,
)
from cau.redact import tail

ENV = "LC_ALL=C"
T = TypeVar("T")
RESTART_PACKAGES = ("kernel", "kernel-core", "glibc", "systemd", "linux-firmware", "dbus", "dbus-broker")


class DnfArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    security_only: bool = False
    min_severity: Literal["Low", "Moderate", "Important", "Critical"] | None = None
    include: list[str] = []
    exclude: list[str] = []
    install_timeout: Duration = timedelta(hours=1)
    refresh: bool = True
    # Each update's security advisories and severity in its details (one more dnf call per scan):
    # compliance baselines with advisory rules turn it on.
    advisories: bool = False


class DnfNodeUpdater:
    def __init__(self, session: NodeSession, args: DnfArgs, clock: Clock) -> None:
        self._session = session
        self._args = args
        self._clock = clock

    async def _run(self, command: str, timeout: float, what: str) -> CommandResult:
        try:
            return await self._session.transport.run(command, timeout=timeout)
        except CauError as exc:
            if not exc.retryable:
                raise  # a node refusing cau (its host key, the login): the engine decides by its class
            raise PluginError(f"dnf: {what} on {self._session.node}: {exc}") from exc

    def _parsed(self, parser: Callable[[str], T], text: str, what: str) -> T:
        try:
            return parser(text)
        except facts.DnfParseError as exc:
            raise PluginOutputError(
                f"dnf: unexpected output of {what} on {self._session.node}: {exc}"
            ) from exc

    async def _restart_needed(self) -> tuple[bool, list[str]]:
        result = await self._run(f"{ENV} needs-restarting -r", 120, "needs-restarting")
        if result.exit_status == 127:  # dnf-utils / yum-utils not installed: cannot tell
            return False, []
        try:
            return facts.parse_needs_restarting_r(result.exit_status, result.stdout)
        except facts.DnfParseError as exc:
            raise PluginError(f"dnf: needs-restarting on {self._session.node}: {exc}") from exc

    def _wanted(self, change: facts.DnfChange) -> bool:
        if self._args.include and not any(fnmatch.fnmatchcase(change.name, p) for p in self._args.include):
            return False
        return not any(fnmatch.fnmatchcase(change.name, p) for p in self._args.exclude)

    async def scan(self) -> ScanResult:
        refresh = " --refresh" if self._args.refresh else ""
        result = await self._run(f"{ENV} dnf -q check-update{refresh}", 900, "check-update")
        try:
            available = facts.updates_available(result.exit_status)
        except facts.DnfParseError as exc:  # dnf failed (a mirror, the network): worth another try
            raise PluginError(
                f"dnf: check-update on {self._session.node}: {exc}: {tail(result.stderr, 300)}"
            ) from exc
        changes = (
            self._parsed(facts.parse_check_update, result.stdout, "dnf check-update") if available else []
        )
        advisories: list[facts.DnfAdvisory] = []
        if (self._args.security_only or self._args.advisories) and changes:
            info = await self._run(f"{ENV} dnf -q updateinfo list --security", 300, "updateinfo")
            if not info.ok:
                raise PluginError(
                    f"dnf: updateinfo on {self._session.node} (exit {info.exit_status}): "
                    f"{tail(info.stderr, 300)}"
                )
            advisories = self._parsed(facts.parse_updateinfo_list, info.stdout, "dnf updateinfo")
            if self._args.security_only:
                changes = facts.security_changes(changes, advisories, self._args.min_severity)
        pending, _ = await self._restart_needed()
        updates = tuple(
            Update(
                id=f"{c.name}.{c.arch}",
                title=f"{c.name} {c.evr}",
                plugin="dnf",
                needs_restart=c.name in RESTART_PACKAGES,
                details={
                    "name": c.name,
                    "arch": c.arch,
                    "to": c.evr,
                    "repo": c.repo,
                    "nevra": c.nevra,
                    **facts.advisory_details(c, advisories),
                },
            )
            for c in changes
            if self._wanted(c)
        )
        return ScanResult(updates=updates, restart_pending=pending)

    def _targets(self, updates: Sequence[Update]) -> str:
        return " ".join(shlex.quote(u.details["nevra"]) for u in updates)

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]:
        if not updates:
            return []
        result = await self._run(
            f"{ENV} dnf -y -q upgrade --downloadonly {self._targets(updates)}", 3600, "download"
        )
        message = "downloaded" if result.ok else tail(result.stderr, 300)
        return [StagingResult(u.id, ok=result.ok, message=message) for u in updates]

    async def _installed(self, updates: Sequence[Update]) -> dict[str, tuple[facts.RpmPackage, ...]]:
        names = " ".join(sorted({shlex.quote(u.details["name"]) for u in updates}))
        fmt = "'%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'"
        result = await self._run(f"rpm -q --qf {fmt} {names}", 120, "rpm -q")
        return self._parsed(facts.parse_rpm_versions, result.stdout, "rpm -q")

    async def package_levels(self, minimums: Mapping[str, str]) -> dict[str, PackageLevel]:
        """Each package's newest installed version, compared by rpm itself (rpm.vercmp, rpm >= 4.16)."""
        names = " ".join(shlex.quote(n) for n in sorted(minimums))
        fmt = "'%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n'"
        result = await self._run(f"rpm -q --qf {fmt} {names}", 120, "rpm -q")
        found = self._parsed(facts.parse_rpm_versions, result.stdout, "rpm -q")
        checks = []
        for name, packages in sorted(found.items()):
            for p in packages:
                evr = f"{p.epoch or 0}:{p.version}-{p.release}"
                lua = f"%{{lua: print(rpm.vercmp('{evr}', '{minimums.get(name, '')}'))}}"
                said = f"{shlex.quote(name)} {shlex.quote(p.evr)}"
                checks.append(f"echo {said} $(rpm --eval {shlex.quote(lua)})")
        meets: dict[str, bool] = {}
        newest: dict[str, str] = {}
        if checks:
            out = await self._run("; ".join(checks), 60, "rpm.vercmp")
            for line in out.stdout.splitlines():
                parts = line.split()
                if len(parts) == 3:
                    name, evr, cmp = parts
                    newest.setdefault(name, evr)
                    if cmp in ("0", "1"):
                        meets[name] = True
                        newest[name] = evr
        return {n: PackageLevel(name=n, installed=newest.get(n), meets=meets.get(n, False)) for n in minimums}

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        if not updates:
            return []
        before = await self._installed(updates)
        progress(f"dnf upgrading {len(updates)} package(s)")
        started = self._clock.now()
        result = await self._run(
            f"{ENV} dnf -y -q upgrade {self._targets(updates)}",
            self._args.install_timeout.total_seconds(),
            "upgrade",
        )
        after = await self._installed(updates)
        needed, restart_pkgs = await self._restart_needed()
        finished = self._clock.now()
        out = []
        for u in updates:
            name, arch, target = u.details["name"], u.details["arch"], u.details["to"]
            now = [p.evr for p in after.get(name, ()) if p.arch == arch or p.arch is None]
            was = [p.evr for p in before.get(name, ()) if p.arch == arch or p.arch is None]
            installed = target in now
            restart = installed and needed and (not restart_pkgs or name in restart_pkgs or u.needs_restart)
            message = "" if installed else (tail(result.stderr, 500) or f"still {', '.join(now) or 'absent'}")
            out.append(
                UpdateResult(
                    update_id=u.id,
                    title=u.title,
                    plugin="dnf",
                    outcome=UpdateOutcome.SUCCEEDED if installed else UpdateOutcome.FAILED,
                    restart_required=restart,
                    error_code=None if installed else result.exit_status,
                    message=message,
                    started=started,
                    finished=finished,
                    details={"before": ", ".join(was), "after": ", ".join(now), "wanted": target},
                )
            )
        return out


class DnfPlugin:
    """RHEL/Fedora package updates through dnf (check-update, download, upgrade, needs-restarting)."""

    name: ClassVar[str] = "dnf"
    Args: ClassVar[type[BaseModel]] = DnfArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        refuse_this_machine(session, "dnf")
        assert isinstance(args, DnfArgs)
        return DnfNodeUpdater(session, args, ctx.clock)
