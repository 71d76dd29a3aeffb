"""Health gates during a run: waits at a node's admission and return, and the watch in between.

Each (gate, node) pair is a *key*: a cluster-wide gate has one key (node None); a per-node gate
one per node it was evaluated for. A key's state is its last answer, when it was checked, and
since when it has been green without a red in between (its *streak*). The monitor never assumes
green before it looked.

`wait(node, phase)` holds a node until every key that concerns it is green and its streak is at
least the gate's `stable_for` old: the cluster-wide gates, the node's own per-node gates, and the
per-node gates of the nodes that returned before (watched for the rest of the run). At the start
of a wait every key is checked afresh. A key seen green the first time it is checked has no red
to wait out (its streak counts as old), but a wait after the node's **return** counts the streak
from the return at the earliest, so an answer from before the node came back never lets the run
move on. A key is checked again every `interval` while anyone waits on it. A wait that lasts longer
than a pending gate's `timeout` raises GateTimeout with the gate's name and last answer (the
coordinator pauses the run: HealthGateTimeout).

`watch()` checks the watched keys every interval while the run goes on, so a gate that turns red
between nodes is in the journal when it happens, and holds the next admission.

Only transitions are journaled (`GateChanged`: first seen, green -> red, red -> green), and each
wait that did wait (`GateWait`: passed, timeout, or stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from cau.domain.durations import format_duration
from cau.domain.gates import GateSpec
from cau.domain.results import ErrorId
from cau.gates.check import Answer
from cau.journal.events import EventPayload, GateChanged, GateWait
from cau.ports import Clock

Phase = Literal["admission", "return"]
Evaluate = Callable[[GateSpec, str | None], Awaitable[Answer]]
Note = Callable[[EventPayload, str | None], None]
MIN_SLEEP = 0.05


class GateTimeout(Exception):
    """A gate stayed red (or not stably green) past its timeout: the run pauses."""

    pause_reason = ErrorId.HEALTH_GATE_TIMEOUT

    def __init__(self, gate: str, node: str, phase: Phase, answer: str, waited: float) -> None:
        where = "before draining" if phase == "admission" else "after the return of"
        super().__init__(
            f"health gate {gate} is not green {where} {node} after {format_duration(waited)} "
            f"(its timeout); last answer: {answer or 'none'}; `cau run` resumes once it recovers"
        )
        self.gate = gate
        self.node = node
        self.phase = phase
        self.answer = answer


class WaitStopped(Exception):
    """The run is stopping: a wait at a node's admission ends (the node is not drained)."""


@dataclass
class _State:
    green: bool | None = None
    answer: str = ""
    checked: float | None = None  # monotonic time of the last evaluation
    streak: float | None = None  # green since (monotonic), None while red or unknown
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


Key = tuple[str, str | None]  # (gate name, node or None)


class GateMonitor:
    def __init__(
        self,
        gates: Sequence[GateSpec],
        evaluate: Evaluate,
        clock: Clock,
        note: Note,
        *,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._gates = {g.name: g for g in gates}
        self._evaluate = evaluate
        self._clock = clock
        self._note = note
        self._stopping = stopping
        self._states: dict[Key, _State] = {}
        self._returned: list[str] = []  # nodes whose per-node gates are watched
        self._wake = asyncio.Event()

    @property
    def gates(self) -> list[GateSpec]:
        return list(self._gates.values())

    def state(self, gate: str, node: str | None = None) -> _State:
        return self._states.setdefault((gate, node), _State())

    def keys_for(self, node: str | None) -> list[Key]:
        """The keys a wait of `node` depends on (None: only the watched ones)."""
        nodes = [*self._returned, *([node] if node is not None and node not in self._returned else [])]
        keys: list[Key] = []
        for gate in self._gates.values():
            if gate.per_node:
                keys += [(gate.name, n) for n in nodes]
            else:
                keys.append((gate.name, None))
        return keys

    def watch_node(self, node: str) -> None:
        """Watch `node`'s per-node gates from now on (it returned)."""
        if node not in self._returned:
            self._returned.append(node)
            self._wake.set()

    # --- evaluation ------------------------------------------------------------------------------

    async def _check(self, key: Key, newer_than: float | None) -> None:
        """Evaluate `key` unless it was checked after `newer_than` (or, with None, within its
        interval); journal a change of state."""
        gate = self._gates[key[0]]
        state = self.state(*key)
        async with state.lock:
            now = self._clock.monotonic()
            if state.checked is not None:
                if newer_than is not None and state.checked >= newer_than:
                    return
                if newer_than is None and now - state.checked < gate.interval.total_seconds():
                    return
            answer = await self._evaluate(gate, key[1])
            now = self._clock.monotonic()
            changed = state.green is None or state.green != answer.green
            state.checked = now
            state.answer = answer.text
            if answer.green:
                if state.streak is None:
                    # first seen green: no red seen, nothing to wait out (but a wait after a
                    # return counts from the return, whatever the streak)
                    state.streak = -math.inf if state.green is None else now
            else:
                state.streak = None
            state.green = answer.green
            if changed:
                self._note(
                    GateChanged(gate=gate.name, state="green" if answer.green else "red", answer=answer.text),
                    key[1],
                )

    async def _check_all(self, keys: Sequence[Key], newer_than: float | None) -> None:
        await asyncio.gather(*(self._check(k, newer_than) for k in keys))

    def _next_check(self, key: Key) -> float:
        state = self.state(*key)
        interval = self._gates[key[0]].interval.total_seconds()
        return (state.checked if state.checked is not None else -math.inf) + interval

    def red(self, node: str) -> list[str]:
        """The gates a wait of `node` depends on that were red when last checked (no check made)."""
        return [
            key[0] if key[1] in (None, node) else f"{key[0]} ({key[1]})"
            for key in self.keys_for(node)
            if self.state(*key).green is False
        ]

    # --- waits -----------------------------------------------------------------------------------

    async def wait(self, node: str, phase: Phase) -> None:
        """Until every gate concerning `node` is green for its stable_for (see the module)."""
        if not self._gates:
            return
        keys = self.keys_for(node)
        start = self._clock.monotonic()
        held: list[str] = []
        fresh: float | None = start  # the first round checks everything afresh
        while True:
            await self._check_all(keys, fresh)
            fresh = None
            now = self._clock.monotonic()
            pending: list[Key] = []
            wake = math.inf
            for key in keys:
                gate = self._gates[key[0]]
                state = self.state(*key)
                wake = min(wake, self._next_check(key))
                if state.streak is None:
                    pending.append(key)
                    continue
                since = max(state.streak, start) if phase == "return" else state.streak
                stable_at = since + gate.stable_for.total_seconds()
                if now < stable_at:
                    pending.append(key)
                    wake = min(wake, stable_at)
            waited = now - start
            if not pending:
                if held:
                    self._note(GateWait(phase=phase, outcome="passed", seconds=waited, gates=held), node)
                return
            for key in pending:
                label = key[0] if key[1] in (None, node) else f"{key[0]} ({key[1]})"
                if label not in held:
                    held.append(label)
            for key in pending:
                gate = self._gates[key[0]]
                timeout = gate.timeout.total_seconds()
                if waited >= timeout:
                    state = self.state(*key)
                    answer = state.answer
                    if state.green:
                        answer += f" (green for {format_duration(now - (state.streak or now))} of "
                        answer += f"stable_for {format_duration(gate.stable_for)})"
                    self._note(
                        GateWait(phase=phase, outcome="timeout", seconds=waited, gates=held, answer=answer),
                        node,
                    )
                    raise GateTimeout(key[0], node, phase, answer, waited)
                wake = min(wake, start + timeout)
            if self._stopping():
                self._note(GateWait(phase=phase, outcome="stopped", seconds=waited, gates=held), node)
                raise WaitStopped()
            await self._clock.sleep(max(wake - now, MIN_SLEEP))

    # --- the watch -------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Check the watched keys every interval, until cancelled."""
        if not self._gates:
            return
        while True:
            keys = self.keys_for(None)
            await self._check_all(keys, None)
            now = self._clock.monotonic()
            wake = min((self._next_check(k) for k in keys), default=now + 60.0)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wake - now, MIN_SLEEP)):
                    await self._wake.wait()
