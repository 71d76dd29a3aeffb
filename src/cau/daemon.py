"""The resident coordinator: `cau daemon CLUSTER --node NODE --resident`, as a resource agent
(ocf:cau:coordinator) or a service manager runs it.

A pass every `poll` seconds (cau.selfupdating.SelfUpdating.coordinator_pass) until asked to stop.
A stop (SIGTERM: the cluster moves the role, or stops it) starts no other pass; the pass in hand
may end within STOP_GRACE seconds (a hand-over's last journal entry and lock release), else it is
cancelled where it is (its run stays in the journal, its lock is released on the way out).
The stop is a flag as well as a cancellation, because a cancellation can be absorbed on its way
(an `await` in a `finally` that suppresses CancelledError): the agent must not wait its whole
stop timeout for a daemon that went on (found on the lab: 110 s, then SIGKILL).
After a hand-over it waits for the cluster to move the role away (and stop it) before looking
again, so that it never takes the run back in between.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from cau.errors import CauError
from cau.selfupdating import Pass, PassResult

STOPPED = "stopped (SIGTERM): a run in hand stays in the journal for the next coordinator"
# Seconds a pass in hand may take to end after SIGTERM before it is cancelled.
STOP_GRACE = 3.0


async def resident(
    *,
    node: str,
    do_pass: Callable[[], Awaitable[Pass]],
    owner: Callable[[], Awaitable[str | None]],
    poll: float,
    say: Callable[[str], None],
    stop: asyncio.Event,
) -> None:
    """Passes until `stop` is set; the caller sets it (and cancels this task) on SIGTERM."""
    said: str | None = None
    handed_over = False

    async def pause() -> None:
        """`poll` seconds, or less when asked to stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll)

    try:
        while not stop.is_set():
            try:
                if handed_over and await owner() == node:
                    await pause()  # the cluster has not moved the role yet
                    continue
                handed_over = False
                done = await do_pass()
                line = done.result.value + (f": {done.message}" if done.message else "")
                handed_over = done.result is PassResult.HANDED_OVER
                if done.result is PassResult.FINISHED:
                    said = None  # every finished run is said
            except CauError as exc:
                line = f"error: {exc}" + (f" ({exc.hint})" if exc.hint else "")
            if line != said and not (line == PassResult.IDLE.value and said is None):
                say(line)
            said = line
            await pause()
    except asyncio.CancelledError:
        pass
    say(STOPPED)
