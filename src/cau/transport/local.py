"""Run commands on this machine: the sandbox's nodes, and the coordinator's own scripts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from cau.clock import hold_virtual_time
from cau.errors import CommandTimeout, TransportError
from cau.ports import CommandResult


class LocalTransport:
    def __init__(self, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> None:
        self._env = dict(env or {})
        self._cwd = cwd

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> CommandResult:
        full_env = {**os.environ, **self._env, **(env or {})}
        with hold_virtual_time():
            try:
                proc = await asyncio.create_subprocess_shell(
                    command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                    env=full_env,
                    cwd=self._cwd,
                    start_new_session=True,
                )
            except OSError as exc:
                raise TransportError(f"cannot start '{command}': {exc}") from exc
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            except TimeoutError:
                # The command runs in its own session: end its whole process group by id.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                await proc.wait()
                raise CommandTimeout(f"'{command}' did not finish within {timeout:g}s") from None
        return CommandResult(
            command=command,
            exit_status=proc.returncode if proc.returncode is not None else -1,
            stdout=out.decode(errors="replace"),
            stderr=err.decode(errors="replace"),
        )

    async def put(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        target = Path(remote)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)
        if mode is not None:
            target.chmod(mode)  # noqa: ASYNC240 - a local chmod does not block in any way that matters

    async def close(self) -> None:
        return None
