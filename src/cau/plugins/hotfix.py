"""The `hotfix` plug-in: files from a hotfix root folder, run by rules (CAU's HotfixPlugin).

    [[plugins]]
    name = "hotfix"
    args.root = "/srv/hotfixes"          # see cau.plugins.hotfix_rules for the folder layout
    args.location = "coordinator"        # or "node": a share mounted at `root` on every node

Before anything runs, the plug-in checks that the root folder, its hotfix.toml and its SHA256SUMS
are not writable by others (unless `disable_acl_checks`), and that every file matches the manifest:
a tampered file stops the scan and nothing is installed. Files on the coordinator are pushed to
the node and their digest is checked again there, right before they run. What was installed is
recorded on the node (by digest), so a rescan does not offer it again.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import stat
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import CauError, ConfigError, PluginError
from cau.plugins import refuse_simulated
from cau.plugins.exitcodes import ExitClass
from cau.plugins.hotfix_rules import (
    CONFIG_NAME,
    MANIFEST_NAME,
    HotfixConfig,
    HotfixItem,
    classify_exit,
    parse_hotfix_config,
    parse_manifest,
    plan_hotfixes,
    render_command,
    verify_manifest,
    writable_by_others,
)
from cau.ports import Clock, CommandResult, NodeSession, NodeUpdater, PluginContext, ProgressCallback
from cau.redact import redact, tail


class HotfixArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    root: str
    location: Literal["coordinator", "node"] = "coordinator"
    disable_acl_checks: bool = False
    staging_dir: str = "/var/tmp/cau-hotfix"
    registry: str = "/var/lib/cau/hotfix-installed"


class _Root:
    """The hotfix root as one side sees it: files, their digests, their modes."""

    async def read(self, rel: str) -> str:
        raise NotImplementedError

    async def files(self) -> list[str]:
        raise NotImplementedError

    async def digests(self, files: Sequence[str]) -> dict[str, str]:
        raise NotImplementedError

    async def modes(self, rels: Sequence[str]) -> dict[str, int]:
        raise NotImplementedError


class _LocalRoot(_Root):
    def __init__(self, root: Path) -> None:
        self.root = root

    async def read(self, rel: str) -> str:
        try:
            return (self.root / rel).read_text(encoding="utf-8")
        except OSError as exc:
            raise PluginError(f"hotfix: cannot read {self.root / rel}: {exc.strerror or exc}") from exc

    async def files(self) -> list[str]:
        if not self.root.is_dir():
            raise PluginError(f"hotfix: the root folder {self.root} does not exist on the coordinator")
        out = []
        for dirpath, _, names in os.walk(self.root):
            for name in names:
                out.append(PurePosixPath(Path(dirpath, name).relative_to(self.root)).as_posix())
        return sorted(out)

    async def digests(self, files: Sequence[str]) -> dict[str, str]:
        return {f: hashlib.sha256((self.root / f).read_bytes()).hexdigest() for f in files}

    async def modes(self, rels: Sequence[str]) -> dict[str, int]:
        return {r: stat.S_IMODE((self.root / r).stat().st_mode) for r in rels if (self.root / r).exists()}


class _NodeRoot(_Root):
    """A share mounted on the node: read through the transport."""

    def __init__(self, session: NodeSession, root: str) -> None:
        self.session = session
        self.root = root

    async def _run(self, command: str) -> CommandResult:
        try:
            return await self.session.transport.run(command, timeout=300)
        except CauError as exc:
            if not exc.retryable:
                raise  # a node refusing cau (its host key, the login): the engine decides by its class
            raise PluginError(f"hotfix: on {self.session.node}: {exc}") from exc

    async def read(self, rel: str) -> str:
        result = await self._run(f"cat -- {shlex.quote(self.root + '/' + rel)}")
        if not result.ok:
            raise PluginError(
                f"hotfix: cannot read {self.root}/{rel} on {self.session.node}: {tail(result.stderr, 200)}"
            )
        return result.stdout

    async def files(self) -> list[str]:
        result = await self._run(f"cd -- {shlex.quote(self.root)} && find . -type f -printf '%P\\n'")
        if not result.ok:
            raise PluginError(f"hotfix: the root folder {self.root} is not readable on {self.session.node}")
        return sorted(line for line in result.stdout.splitlines() if line)

    async def digests(self, files: Sequence[str]) -> dict[str, str]:
        if not files:
            return {}
        names = " ".join(shlex.quote(f) for f in files)
        result = await self._run(f"cd -- {shlex.quote(self.root)} && sha256sum -- {names}")
        return {
            path: digest
            for digest, path in (line.split("  ", 1) for line in result.stdout.splitlines() if "  " in line)
        }

    async def modes(self, rels: Sequence[str]) -> dict[str, int]:
        names = " ".join(shlex.quote(self.root + "/" + r if r != "." else self.root) for r in rels)
        result = await self._run(f"stat -c '%a %n' -- {names} 2>/dev/null; true")
        out = {}
        for line in result.stdout.splitlines():
            mode, _, path = line.partition(" ")
            rel = "." if path == self.root else path[len(self.root) + 1 :]
            out[rel] = int(mode, 8)
        return out


class HotfixNodeUpdater:
    def __init__(
        self, session: NodeSession, args: HotfixArgs, clock: Clock, secrets: Mapping[str, str] | None = None
    ) -> None:
        self._session = session
        self._env = dict(secrets or {})  # for the installers only: they are the admin's commands
        self._args = args
        self._clock = clock
        if args.location == "coordinator":
            self._root: _Root = _LocalRoot(Path(args.root))
        else:
            self._root = _NodeRoot(session, args.root.rstrip("/"))

    @property
    def _node(self) -> str:
        return self._session.node

    async def _run(self, command: str, timeout: float = 300) -> CommandResult:
        try:
            return await self._session.transport.run(command, timeout=timeout)
        except CauError as exc:
            if not exc.retryable:
                raise  # a node refusing cau (its host key, the login): the engine decides by its class
            raise PluginError(f"hotfix: on {self._node}: {exc}") from exc

    # --- checks ----------------------------------------------------------------------------------

    async def _config(self) -> HotfixConfig:
        text = await self._root.read(CONFIG_NAME)
        try:
            return parse_hotfix_config(text, f"{self._args.root}/{CONFIG_NAME}")
        except ConfigError as exc:
            raise PluginError(f"hotfix: {exc}") from exc

    async def _check_acls(self) -> None:
        if self._args.disable_acl_checks:
            return
        modes = await self._root.modes([".", CONFIG_NAME, MANIFEST_NAME])
        loose = [rel for rel, mode in modes.items() if writable_by_others(mode)]
        if loose:
            where = ", ".join(
                f"{self._args.root}/{r}".rstrip("/.") + f" ({modes[r]:o})" for r in sorted(loose)
            )
            raise PluginError(
                f"hotfix: refusing a root that others can write to: {where}; make it writable by its "
                "owner only (chmod go-w), or set disable_acl_checks in the profile"
            )

    async def _verified_plan(self) -> tuple[HotfixConfig, list[HotfixItem], dict[str, str]]:
        await self._check_acls()
        config = await self._config()
        files = [f for f in await self._root.files() if f not in (CONFIG_NAME, MANIFEST_NAME)]
        try:
            manifest = parse_manifest(
                await self._root.read(MANIFEST_NAME), f"{self._args.root}/{MANIFEST_NAME}"
            )
        except ConfigError as exc:
            raise PluginError(f"hotfix: {exc}") from exc
        digests = await self._root.digests(files)
        problems = verify_manifest(manifest, digests)
        if problems:
            raise PluginError(
                f"hotfix: integrity check failed, nothing was installed: {'; '.join(problems[:5])}"
                + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
            )
        return config, plan_hotfixes(files, self._node, config), digests

    async def _installed(self) -> set[str]:
        result = await self._run(f"cat -- {shlex.quote(self._args.registry)} 2>/dev/null; true")
        return {line.split()[0] for line in result.stdout.splitlines() if line.strip()}

    # --- the plug-in -------------------------------------------------------------------------------

    async def scan(self) -> ScanResult:
        _, plan, digests = await self._verified_plan()
        done = await self._installed()
        updates = tuple(
            Update(
                id=item.path,
                title=f"{PurePosixPath(item.path).name} ({item.rule.label if item.rule else 'no rule'})",
                plugin="hotfix",
                needs_restart=bool(item.rule and item.rule.always_restart),
                details={"sha256": digests[item.path], "scope": item.scope or ""},
            )
            for item in plan
            if item.applies and digests[item.path] not in done
        )
        return ScanResult(updates=updates)

    def _node_path(self, update: Update) -> str:
        if self._args.location == "node":
            return f"{self._args.root.rstrip('/')}/{update.id}"
        return f"{self._args.staging_dir}/{update.details['sha256'][:16]}-{PurePosixPath(update.id).name}"

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]:
        if self._args.location == "node":
            return [StagingResult(u.id, ok=True, message="on the share") for u in updates]
        assert isinstance(self._root, _LocalRoot)
        results = []
        for u in updates:
            try:
                await self._session.transport.put(self._root.root / u.id, self._node_path(u), mode=0o700)
            except CauError as exc:
                results.append(StagingResult(u.id, ok=False, message=redact(str(exc))))
                continue
            results.append(StagingResult(u.id, ok=True, message=f"copied to {self._node_path(u)}"))
        return results

    def _result(
        self,
        update: Update,
        started: datetime,
        outcome: UpdateOutcome,
        message: str,
        *,
        code: int | None = None,
        restart: bool = False,
        cls: str = "",
    ) -> UpdateResult:
        return UpdateResult(
            update_id=update.id,
            title=update.title,
            plugin="hotfix",
            outcome=outcome,
            restart_required=restart,
            error_code=code,
            message=message,
            started=started,
            finished=self._clock.now(),
            details={"exit_class": cls, "sha256": update.details.get("sha256", "")},
        )

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        if not updates:
            return []
        config, plan, _ = await self._verified_plan()
        items = {item.path: item for item in plan}
        staged = {r.update_id for r in await self.stage(updates) if r.ok}  # idempotent: re-push
        out = []
        for i, u in enumerate(updates, 1):
            progress(f"running {i}/{len(updates)}: {u.id}")
            started = self._clock.now()
            item = items.get(u.id)
            path = self._node_path(u)

            if item is None or item.rule is None or u.id not in staged:
                why = "no longer planned for this node" if item is None or item.rule is None else "not copied"
                out.append(self._result(u, started, UpdateOutcome.FAILED, why))
                continue
            # The file that runs is the file that was checked: verify its digest on the node.
            check = await self._run(f"sha256sum -- {shlex.quote(path)}")
            if not check.ok or check.stdout.split()[:1] != [u.details["sha256"]]:
                out.append(
                    self._result(
                        u, started, UpdateOutcome.FAILED, f"digest mismatch on the node at {path}: not run"
                    )
                )
                continue
            rule = item.rule
            timeout = config.timeout_for(rule).total_seconds()
            try:
                ran = await self._session.transport.run(
                    render_command(rule.command, path), timeout=timeout, env=self._env or None
                )
            except CauError as exc:
                if not exc.retryable:
                    raise  # a node refusing cau (its host key, the login): the engine decides by its class
                out.append(
                    self._result(
                        u, started, UpdateOutcome.FAILED, f"installer did not complete: {redact(str(exc))}"
                    )
                )
                continue
            cls = classify_exit(ran.exit_status, rule)
            restart = cls.restart_required or (rule.always_restart and cls.outcome is UpdateOutcome.SUCCEEDED)
            if cls is not ExitClass.FAILED and cls is not ExitClass.FAILED_RESTART_NEEDED:
                registry = shlex.quote(self._args.registry)
                entry = shlex.quote(u.details["sha256"] + "  " + u.id)
                await self._run(f'mkdir -p -- "$(dirname {registry})" && echo {entry} >> {registry}')
            note = "" if cls is ExitClass.SUCCESS else f"exit {ran.exit_status}: {cls.value}"
            detail = tail(ran.stderr or ran.stdout, 300) if cls.outcome is UpdateOutcome.FAILED else ""
            out.append(
                self._result(
                    u,
                    started,
                    cls.outcome,
                    redact("; ".join(x for x in (note, detail) if x)),
                    code=ran.exit_status if cls.outcome is UpdateOutcome.FAILED else None,
                    restart=restart,
                    cls=cls.value,
                )
            )
        return out


class HotfixPlugin:
    """Hotfix files from a root folder (all nodes, per node, folder rules), checked and run by rules."""

    name: ClassVar[str] = "hotfix"
    Args: ClassVar[type[BaseModel]] = HotfixArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        refuse_simulated(session, "hotfix")
        assert isinstance(args, HotfixArgs)
        return HotfixNodeUpdater(session, args, ctx.clock, secrets=ctx.secrets)
