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
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from datetime import timedelta
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from cau.domain.durations import Duration
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import CauError, PluginError
from cau.plugins import apt_facts as facts
from cau.plugins import refuse_this_machine
from cau.ports import Clock, CommandResult, NodeSession, NodeUpdater, PluginContext, ProgressCallback
from cau.redact import tail

ENV = "LC_ALL=C DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=l"
REBOOT_REQUIRED = "/var/run/reboot-required"


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

    async def _changes(self) -> list[facts.AptChange]:
        if self._args.update_lists:
            refreshed = await self._run(self._apt("update"), 600, "apt-get update")
            if not refreshed.ok:
                raise self._failure("apt-get update", refreshed)
        sim = await self._run(f"{ENV} apt-get -s -o Debug::NoLocking=1 {self._args.mode}", 600, "simulation")
        if not sim.ok:
            raise self._failure(f"apt-get -s {self._args.mode}", sim)
        changes = facts.parse_apt_simulation(sim.stdout)
        wanted = [c for c in changes if c.action != "remove"]
        return facts.filter_changes(wanted, self._args.include, self._args.exclude, self._args.origins)

    async def scan(self) -> ScanResult:
        changes = await self._changes()
        pending = await self._run(f"test -e {REBOOT_REQUIRED}", 30, "reboot-required check")
        updates = tuple(
            Update(
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
            for c in changes
        )
        return ScanResult(updates=updates, restart_pending=pending.ok)

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

    async def _versions(self, packages: Sequence[str]) -> dict[str, tuple[str, bool]]:
        if not packages:
            return {}
        names = " ".join(shlex.quote(p) for p in packages)
        fmt = "'${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'"
        result = await self._run(f"dpkg-query -W -f={fmt} {names} 2>/dev/null; true", 60, "dpkg-query")
        return facts.parse_dpkg_status(result.stdout)

    async def _restart_facts(self) -> tuple[bool, list[str]]:
        check = (
            f"if test -e {REBOOT_REQUIRED}; then echo yes; cat {REBOOT_REQUIRED}.pkgs 2>/dev/null; "
            "else echo no; fi"
        )
        probe = await self._run(check, 30, "reboot-required check")
        first, _, rest = probe.stdout.partition("\n")
        needed, pkgs = facts.reboot_required(first.strip() == "yes", rest)
        if self._args.use_needrestart and not needed:
            nr = await self._run(
                "command -v needrestart >/dev/null && needrestart -b 2>/dev/null; true", 120, "needrestart"
            )
            if nr.stdout.strip():
                result = facts.parse_needrestart_batch(nr.stdout)
                if result.kernel_restart_needed:
                    needed = True
        return needed, pkgs

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        if not updates:
            return []
        names = [u.id for u in updates]
        before = await self._versions(names)
        progress(f"apt-get installing {len(updates)} package(s)")
        started = self._clock.now()
        command = self._apt(f"-y {self._dpkg_options()} {self._selection(updates)}")
        result = await self._run(command, self._args.install_timeout.total_seconds(), "install")
        after = await self._versions(names)
        needed, pkgs = await self._restart_facts()
        finished = self._clock.now()
        failure = "" if result.ok else str(self._failure("apt-get install", result))
        out = []
        for u in updates:
            target = u.details.get("to", "")
            now_version, held = after.get(u.id, ("", False))
            installed = now_version == target or (not target and result.ok)
            restart = needed and (not pkgs or u.id in pkgs or u.needs_restart)
            message = ""
            if not installed:
                message = (
                    f"held: not upgraded ({now_version})"
                    if held
                    else failure or f"still at {now_version or 'nothing'} after apt-get, wanted {target}"
                )
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
                        "before": before.get(u.id, ("", False))[0],
                        "after": now_version,
                        "wanted": target,
                    },
                )
            )
        return out


class AptPlugin:
    """Debian/Ubuntu package updates through apt-get (simulate, download, install)."""

    name: ClassVar[str] = "apt"
    Args: ClassVar[type[BaseModel]] = AptArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        refuse_this_machine(session, "apt")
        assert isinstance(args, AptArgs)
        return AptNodeUpdater(session, args, ctx.clock)
