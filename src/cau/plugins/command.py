"""The `command` plug-in: admin-given scan and install commands, with the installer exit-code
contract of the hotfix plug-in.

    [[plugins]]
    name = "command"
    args.scan = "/usr/local/sbin/firmware-check"       # prints one update per line: ID [title]
    args.install = "/usr/local/sbin/firmware-apply $update$"
    args.success_restart_needed = [3010]
    args.timeout = "45m"

The scan command exits 0 and prints the applicable updates (nothing when the node is compliant);
any other exit is a failure of the plug-in itself. The install command runs once per update, with
`$update$` replaced by the update's id (shell-quoted); its exit code is classified.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import ClassVar

from pydantic import BaseModel, field_validator

from cau.domain.durations import Duration
from cau.domain.updates import ScanResult, StagingResult, Update, UpdateOutcome, UpdateResult
from cau.errors import CauError, PluginError
from cau.plugins import refuse_simulated
from cau.plugins.exitcodes import ExitClass, ExitCodes
from cau.ports import Clock, NodeSession, NodeUpdater, PluginContext, ProgressCallback
from cau.redact import redact, tail

PLACEHOLDER = "$update$"


class CommandArgs(ExitCodes):
    scan: str
    install: str
    stage: str | None = None
    timeout: Duration = timedelta(minutes=30)
    scan_timeout: Duration = timedelta(minutes=5)

    @field_validator("install", "stage")
    @classmethod
    def _has_placeholder(cls, value: str | None) -> str | None:
        if value is not None and PLACEHOLDER not in value:
            raise ValueError(f"the command must contain {PLACEHOLDER} (replaced by the update's id)")
        return value


def render(template: str, update_id: str) -> str:
    return template.replace(PLACEHOLDER, shlex.quote(update_id))


def parse_scan_output(text: str) -> list[tuple[str, str]]:
    """`ID [title]` per line; blank lines and `#` comments are ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        out.append((parts[0], parts[1].strip() if len(parts) > 1 else parts[0]))
    return out


class CommandNodeUpdater:
    def __init__(
        self,
        session: NodeSession,
        args: CommandArgs,
        clock: Clock,
        plugin: str = "command",
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        self._session = session
        self._env = dict(secrets or {})
        self._args = args
        self._clock = clock
        self._plugin = plugin

    async def _run(self, command: str, timeout: timedelta, what: str) -> tuple[int, str, str]:
        try:
            result = await self._session.transport.run(
                command, timeout=timeout.total_seconds(), env=self._env or None
            )
        except CauError as exc:
            if not exc.retryable:
                raise  # a node refusing cau (its host key, the login): the engine decides by its class
            raise PluginError(f"{what} on {self._session.node}: {exc}") from exc
        return result.exit_status, result.stdout, result.stderr

    async def scan(self) -> ScanResult:
        code, out, err = await self._run(self._args.scan, self._args.scan_timeout, "the scan command")
        if code != 0:
            raise PluginError(
                f"the scan command failed on {self._session.node} (exit {code}): {tail(err, 300)}"
            )
        return ScanResult(
            tuple(Update(id=i, title=t, plugin=self._plugin) for i, t in parse_scan_output(out))
        )

    async def stage(self, updates: Sequence[Update]) -> list[StagingResult]:
        if self._args.stage is None:
            return [StagingResult(u.id, ok=True, message="nothing to stage") for u in updates]
        results = []
        for u in updates:
            code, _, err = await self._run(
                render(self._args.stage, u.id), self._args.timeout, "the stage command"
            )
            results.append(StagingResult(u.id, ok=code == 0, message="" if code == 0 else tail(err, 300)))
        return results

    async def install(self, updates: Sequence[Update], progress: ProgressCallback) -> list[UpdateResult]:
        results = []
        for i, u in enumerate(updates, 1):
            progress(f"installing {i}/{len(updates)}: {u.title}")
            started = self._clock.now()
            code, out, err = await self._run(
                render(self._args.install, u.id), self._args.timeout, "the install command"
            )
            cls = self._args.classify(code)
            note = "" if cls is ExitClass.SUCCESS else f"exit {code}: {cls.value}"
            detail = tail(err or out, 300) if cls.outcome is UpdateOutcome.FAILED else ""
            results.append(
                UpdateResult(
                    update_id=u.id,
                    title=u.title,
                    plugin=self._plugin,
                    outcome=cls.outcome,
                    restart_required=cls.restart_required,
                    error_code=code if cls.outcome is UpdateOutcome.FAILED else None,
                    message=redact("; ".join(x for x in (note, detail) if x)),
                    started=started,
                    finished=self._clock.now(),
                    details={"exit_class": cls.value},
                )
            )
        return results


class CommandPlugin:
    """Admin-given scan and install commands run on each node (with the hotfix exit-code contract)."""

    name: ClassVar[str] = "command"
    Args: ClassVar[type[BaseModel]] = CommandArgs

    def create_updater(self, session: NodeSession, args: BaseModel, ctx: PluginContext) -> NodeUpdater:
        refuse_simulated(session, "command")
        assert isinstance(args, CommandArgs)
        return CommandNodeUpdater(session, args, ctx.clock, secrets=ctx.secrets)
