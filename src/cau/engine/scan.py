"""Scanning a node with the run's plug-ins: one place for it, used by a run's scans and rescans
and by `cau scan` (a preview outside any run)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from cau.domain.updates import HeldUpdate, ScanResult, Update
from cau.errors import CauError
from cau.ports import NodeUpdater
from cau.redact import redact


@dataclass
class PluginScans:
    """What each plug-in found on one node (a plug-in that could not scan: in `errors`)."""

    updates: dict[str, list[Update]] = field(default_factory=dict)
    held: dict[str, list[HeldUpdate]] = field(default_factory=dict)
    restart_pending: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """At least one plug-in scanned (a node none could scan is not compliant: unknown)."""
        return bool(self.updates)


async def scan_plugins(
    plugins: Sequence[str],
    updater: Callable[[str], Awaitable[NodeUpdater]],
    *,
    serially: bool,
    stop_on_failure: bool,
) -> PluginScans:
    """Scan with each plug-in (`updater(name)` gives its updater on the node): all at once, or in
    order when `serially`, then stopping at the first failure when `stop_on_failure`."""

    async def one(name: str) -> tuple[str, ScanResult | CauError]:
        try:
            return name, await (await updater(name)).scan()
        except CauError as exc:
            return name, exc

    if serially:
        pairs = []
        for name in plugins:
            pair = await one(name)
            pairs.append(pair)
            if isinstance(pair[1], CauError) and stop_on_failure:
                break
    else:
        pairs = list(await asyncio.gather(*(one(name) for name in plugins)))
    out = PluginScans()
    for name, result in pairs:
        if isinstance(result, CauError):
            # with its remedy: a refused node's hint is the command that fixes it (cau hosts trust)
            hint = f" (hint: {result.hint})" if result.hint else ""
            out.errors[name] = redact(str(result) + hint)
            continue
        out.updates[name] = list(result.updates)
        if result.held:
            out.held[name] = list(result.held)
        out.restart_pending = out.restart_pending or result.restart_pending
    return out
