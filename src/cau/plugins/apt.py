"""The `apt` plug-in: Debian/Ubuntu package updates, CAU's OS-update plug-in brought to Linux.

    [[plugins]]
    name = "apt"
    args.mode = "upgrade"                  # or "dist-upgrade" (may install new dependencies)
    args.origins = ["Debian-Security"]     # like WUA's query string: security updates only
    args.include = ["openssl*", "linux-*"] # fnmatch patterns of package names
    args.exclude = ["postgresql-*"]
    args.lock_timeout = "5m"               # wait this long for a dpkg lock held by someone else

Scan is a simulation (`apt-get -s`), so nothing changes; stage downloads (`-d`) before the node is
drained; install is non-interactive, keeps changed conffiles unless told otherwise, respects held
packages and installs exactly the versions the scan saw. A restart is needed when
/var/run/reboot-required appears (or needrestart says the kernel is outdated); the per-package
results carry the versions before and after. apt always runs with LC_ALL=C: its output is parsed.

The scan also reads dpkg's own state: a package left half-configured, unpacked, half-installed or
with triggers pending (a maintainer script failed, dpkg was interrupted) is an update to finish
(`details.action = "repair"`, its dpkg state in `details.state`): the node is not compliant until
apt has finished it. Held packages (`apt-mark hold`) and upgrades apt keeps back are reported as
such (`ScanResult.held`): never installed, not a failure. A failed install names the package,
the maintainer script and its exit status as dpkg said them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

from cau.domain.durations import Duration
from cau.domain.updates import HeldUpdate, ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import CauError, PluginError, PluginOutputError
from cau.plugins import apt_facts as facts
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

ENV = "LC_ALL=C DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=l"
T = TypeVar("T")
REBOOT_REQUIRED = "/var/run/reboot-required"
# binary:Package: a multi-arch node has libc6:amd64 and libc6:i386, both "libc6" for ${Package}
DPKG_QUERY = "dpkg-query -W -f='${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n'"
_SPLIT = "@@cau-split@@"


class AptArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["upgrade", "dist-upgrade"] = "upgrade"
    include: list[str] = []
    exclude: list[str] = []
    origins: list[str] = []
    update_lists: bool = True
    lock_timeout: Duration = timedelta(minutes=5)
    conffiles: Literal["keep", "new"] = "keep"
    install_timeout: Duration = timedelta(hours=1)
    use_needrestart: bool = True


class AptNodeUpdater:
    def __init__(self, session: NodeSession, args: AptArgs, clock: Clock) -> None:
        self._session = session
        self._args = args
        self._clock = clock

    @property
    def _node(self) -> str:
        return self._session.node

    def _apt(self, rest: str) -> str:
        lock = int(self._args.lock_timeout.total_seconds())
        return f"{ENV} apt-get -q -o DPkg::Lock::Timeout={lock} {rest}"

    async def _run(self, command: str, timeout: float, what: str) -> CommandResult:
        try:
            return await self._session.transport.run(command, timeout=timeout)
        except CauError as exc:
            if not exc.retryable:
                raise  # a node refusing cau (its host key, the login): the engine decides by its class
            raise PluginError(f"apt: {what} on {self._node}: {exc}") from exc

    def _failure(self, what: str, result: CommandResult) -> PluginError:
        if facts.is_lock_error(result.stderr):
            return PluginError(
                f"apt: {what} on {self._node}: the dpkg lock is held by another process for more than "
                f"{self._args.lock_timeout} (lock_timeout): {tail(result.stderr, 300)}"
            )
        return PluginError(
            f"apt: {what} on {self._node} failed (exit {result.exit_status}): {tail(result.stderr, 500)}"
        )

    # --- scan ------------------------------------------------------------------------------------

    async def _plan(self) -> facts.AptPlan:
        if self._args.update_lists:
            refreshed = await self._run(self._apt("update"), 600, "apt-get update")
            if not refreshed.ok:
                raise self._failure("apt-get update", refreshed)
        sim = await self._run(
            f"{ENV} apt-get -s -o Debug::NoLocking=1 -o APT::Get::Show-Versions=1 {self._args.mode}",
            600,
            "simulation",
        )
        if not sim.ok:
            raise self._failure(f"apt-get -s {self._args.mode}", sim)
        return self._parsed(facts.parse_apt_plan, sim.stdout, "apt-get -s")

    def _parsed(self, parser: Callable[[str], T], text: str, what: str) -> T:
        try:
            return parser(text)
        except facts.AptParseError as exc:
            raise PluginOutputError(f"apt: unexpected output of {what} on {self._node}: {exc}") from exc

    async def scan(self) -> ScanResult:
        plan = await self._plan()
        wanted = [c for c in plan.changes if c.action != "remove"]
        changes = facts.filter_changes(wanted, self._args.include, self._args.exclude, self._args.origins)
        state = await self._run(
            f"test -e {REBOOT_REQUIRED}; echo $?; {DPKG_QUERY}; echo {_SPLIT}; apt-mark showhold",
            60,
            "dpkg state",
        )
        pending_text, _, rest = state.stdout.partition("\n")
        dpkg_text, _, hold_text = rest.partition(_SPLIT)
        unfinished = self._parsed(facts.parse_dpkg_audit, dpkg_text, "dpkg-query")
        holds = facts.parse_apt_mark_hold(hold_text)
        updates = [self._update(c) for c in changes]
        upgrading = {u.id for u in updates}
        updates += [self._repair(p) for p in unfinished if p.name not in upgrading and self._selected(p.name)]
        held = tuple(
            HeldUpdate(
                id=name,
                title=self._held_title(name, plan, holds),
                plugin="apt",
                reason="held" if name in holds else "kept back",
                details=dict(zip(("from", "to"), plan.versions.get(name, ("", "")), strict=True)),
            )
            for name in plan.kept_back
            if self._selected(name)
        )
        return ScanResult(updates=tuple(updates), restart_pending=pending_text.strip() == "0", held=held)

    def _selected(self, package: str) -> bool:
        """The profile's include/exclude patterns (origins need apt's candidate: not here)."""
        change = facts.AptChange(package, facts.AptAction.UPGRADE, None, "")
        return bool(facts.filter_changes([change], self._args.include, self._args.exclude))

    @staticmethod
    def _held_title(name: str, plan: facts.AptPlan, holds: set[str]) -> str:
        old, new = plan.versions.get(name, ("", ""))
        versions = f" {old} -> {new}" if old and new else ""
        why = "held (apt-mark hold)" if name in holds else "kept back (needs new packages or removals)"
        return f"{name}{versions}: {why}"

    @staticmethod
    def _update(c: facts.AptChange) -> Update:
        return Update(
            id=c.package,
            title=f"{c.package} {c.old_version or '(new)'} -> {c.new_version}",
            plugin="apt",
            # Known only after the install (reboot-required); a kernel is a safe guess to show.
            needs_restart=c.package.startswith(("linux-image", "linux-modules")),
            details={
                "from": c.old_version or "",
                "to": c.new_version,
                "origin": ", ".join(c.origins),
                "action": c.action,
            },
        )

    @staticmethod
    def _repair(p: facts.DpkgPackage) -> Update:
        """A package dpkg did not finish: installing its version again finishes it."""
        return Update(
            id=p.name,
            title=f"{p.name} {p.version} is {p.state}: finish installing it",
            plugin="apt",
            details={"from": p.version, "to": p.version, "action": "repair", "state": p.state},
        )

    # --- compliance (cau.ports.ChecksPackageLevels) ------------------------------------------------

    async def package_levels(self, minimums: Mapping[str, str]) -> dict[str, PackageLevel]:
        """Each package's version, compared by dpkg itself (`dpkg --compare-versions`); a package
        dpkg left half-installed or half-configured never meets its minimum."""
        found = await self._packages(sorted(minimums))
        sound = {n: p for n, p in found.items() if p.installed and not p.broken and p.version}
        compares = [
            f"if dpkg --compare-versions {shlex.quote(p.version)} ge {shlex.quote(minimums[n])}; "
            f"then echo {shlex.quote(n)} yes; else echo {shlex.quote(n)} no; fi"
            for n, p in sorted(sound.items())
            if n in minimums
        ]
        verdicts: dict[str, bool] = {}
        if compares:
            result = await self._run("; ".join(compares), 60, "dpkg --compare-versions")
            for line in result.stdout.splitlines():
                name, _, verdict = line.strip().rpartition(" ")
                verdicts[name] = verdict == "yes"
        out = {}
        for name in minimums:
            p = found.get(name)
            present = p is not None and p.version and p.status not in ("n", "c")
            out[name] = PackageLevel(
                name=name,
                installed=p.version if p is not None and present else None,
                meets=verdicts.get(name, False),
            )
        return out

    # --- stage and install -----------------------------------------------------------------------

    def _selection(self, updates: Sequence[Update]) -> str:
        """Exactly the versions the scan saw; a plain full (dist-)upgrade when nothing is filtered."""
        filtered = self._args.include or self._args.exclude or self._args.origins
        if self._args.mode == "dist-upgrade" and not filtered:
            return "dist-upgrade"
        pinned = " ".join(shlex.quote(f"{u.id}={u.details['to']}") for u in updates if u.details.get("to"))
        return f"install --only-upgrade {pinned}" if self._args.mode == "upgrade" else f"install {pinned}"

    def _dpkg_options(self) -> str:
        keep = "--force-confold" if self._args.conffiles == "keep" else "--force-confnew"
        return f"-o Dpkg::Options::=--force-confdef -o Dpkg::Options::={keep}"

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]:
        if not updates:
            return []
        result = await self._run(self._apt(f"-y -d {self._selection(updates)}"), 3600, "download")
        ok = result.ok
        message = "downloaded" if ok else str(self._failure("download", result))
        return [StagingResult(u.id, ok=ok, message=message) for u in updates]

    async def _packages(self, packages: Sequence[str]) -> dict[str, facts.DpkgPackage]:
        if not packages:
            return {}
        names = " ".join(shlex.quote(p) for p in packages)
        result = await self._run(f"{DPKG_QUERY} {names} 2>/dev/null; true", 60, "dpkg-query")
        found: dict[str, facts.DpkgPackage] = {}
        for p in self._parsed(facts.parse_dpkg_query, result.stdout, "dpkg-query"):
            found[p.name] = p
            # apt names a native Multi-Arch: same package "libc6", dpkg "libc6:amd64"
            found.setdefault(p.name.split(":", 1)[0], p)
        return found

    async def _restart_facts(self) -> tuple[bool, list[str]]:
        check = (
            f"if test -e {REBOOT_REQUIRED}; then echo yes; cat {REBOOT_REQUIRED}.pkgs 2>/dev/null; "
            "else echo no; fi"
        )
        probe = await self._run(check, 30, "reboot-required check")
        needed, pkgs = facts.parse_reboot_required(probe.stdout)
        if self._args.use_needrestart and not needed:
            nr = await self._run(
                "command -v needrestart >/dev/null && needrestart -b 2>/dev/null; true", 120, "needrestart"
            )
            if nr.stdout.strip():
                result = self._parsed(facts.parse_needrestart_batch, nr.stdout, "needrestart -b")
                if result.kernel_restart_needed:
                    needed = True
        return needed, pkgs

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        if not updates:
            return []
        names = [u.id for u in updates]
        before = await self._packages(names)
        progress(f"apt-get installing {len(updates)} package(s)")
        started = self._clock.now()
        command = self._apt(f"-y {self._dpkg_options()} {self._selection(updates)}")
        result = await self._run(command, self._args.install_timeout.total_seconds(), "install")
        after = await self._packages(names)
        needed, pkgs = await self._restart_facts()
        finished = self._clock.now()
        # dpkg's own words per package (a failing maintainer script, its exit status)
        dpkg_errors = {
            e.package.split(":", 1)[0]: e for e in facts.parse_dpkg_errors(result.stdout + result.stderr)
        }
        failure = "" if result.ok else str(self._failure("apt-get install", result))
        out = []
        for u in updates:
            target = u.details.get("to", "")
            now = after.get(u.id)
            now_version = now.version if now is not None and now.status != "n" else ""
            done = now is not None and now.installed
            installed = done and (now_version == target or (not target and result.ok))
            restart = needed and (not pkgs or u.id in pkgs or u.needs_restart)
            message = ""
            if not installed:
                error = dpkg_errors.get(u.id.split(":", 1)[0])
                if now is not None and now.held and done:
                    message = f"held: not upgraded ({now_version})"
                elif error is not None:
                    message = error.describe()
                    if now is not None and now.unfinished:
                        message += f"; left {now.state}"
                elif now is not None and now.unfinished:
                    message = f"left {now.state} at {now_version}: " + (failure or "dpkg did not finish it")
                else:
                    message = failure or f"still at {now_version or 'nothing'} after apt-get, wanted {target}"
            out.append(
                UpdateResult(
                    update_id=u.id,
                    title=u.title,
                    plugin="apt",
                    outcome=UpdateOutcome.SUCCEEDED if installed else UpdateOutcome.FAILED,
                    restart_required=restart and installed,
                    error_code=None if installed else result.exit_status,
                    message=message,
                    started=started,
                    finished=finished,
                    details={
                        "before": _version_state(before.get(u.id)),
                        "after": _version_state(now),
                        "wanted": target,
                    },
                )
            )
        return out


def _version_state(package: facts.DpkgPackage | None) -> str:
    """A package's version as a report shows it: "1.1", or "1.1 (half-configured)"."""
    if package is None or package.status == "n":
        return ""
    return package.version if package.installed else f"{package.version} ({package.state})"


class AptPlugin:
    """Debian/Ubuntu package updates through apt-get (simulate, download, install)."""

    name: ClassVar[str] = "apt"
    Args: ClassVar[type[BaseModel]] = AptArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        refuse_this_machine(session, "apt")
        assert isinstance(args, AptArgs)
        return AptNodeUpdater(session, args, ctx.clock)
