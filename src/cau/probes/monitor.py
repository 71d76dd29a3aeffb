"""The probe monitor: one asyncio task per probe, checking on a fixed monotonic grid.

Check k of a probe starts at t0 + k * interval whatever happened to check k-1: a hanging target
does not delay the next check (they run concurrently, each bounded by the probe's timeout), and
the schedule does not drift. If the event loop stalled past whole intervals, the missed slots are
skipped, not sent in a burst. Results are folded in send order (`ProbeStats`); the journal gets
only transitions (`probe_down`, `probe_up`) and a `probe_summary` per probe every
`summary_seconds`, after each outage and at the end, so its volume stays bounded however fast the
probes run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cau.journal.events import OutageFigures, ProbeDown, ProbeEvent, ProbeSummary, ProbeUp
from cau.ports import AvailabilityRecorder
from cau.probes.check import Checker, CheckResult
from cau.probes.spec import ProbeSpec, probe_ids
from cau.probes.stats import Outage, ProbeStats, Transition

log = logging.getLogger(__name__)

SUMMARY_SECONDS = 30.0
STOP_GRACE_SECONDS = 2.0  # at stop, checks still out get this long (at most their timeout)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Probe:
    id: str
    spec: ProbeSpec
    checker: Checker
    stats: ProbeStats = field(default_factory=ProbeStats)
    next_seq: int = 0  # the next check to send
    next_fold: int = 0  # the next check whose result is folded in (send order)
    done: dict[int, tuple[datetime, CheckResult]] = field(default_factory=dict)
    out: set[asyncio.Future[None]] = field(default_factory=set)
    skipped: int = 0  # grid slots missed because the event loop stalled


class ProbeMonitor:
    """Implements `cau.ports.AvailabilitySource` with HTTP and TCP probes."""

    def __init__(
        self,
        specs: list[ProbeSpec],
        *,
        now: Callable[[], datetime] = _utcnow,
        summary_seconds: float = SUMMARY_SECONDS,
    ) -> None:
        self._probes = [
            _Probe(pid, spec, Checker(spec)) for pid, spec in zip(probe_ids(specs), specs, strict=True)
        ]
        self._now = now
        self._summary_seconds = summary_seconds
        self._record: AvailabilityRecorder | None = None
        self._tasks: list[asyncio.Future[None]] = []
        self.session = secrets.token_hex(4)  # tells this coordinator's counts from a crashed one's

    @property
    def probe_ids(self) -> list[str]:
        return [p.id for p in self._probes]

    def stats(self, probe_id: str) -> ProbeStats:
        return next(p.stats for p in self._probes if p.id == probe_id)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self, record: AvailabilityRecorder) -> None:
        self._record = record
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self._tasks = [asyncio.ensure_future(self._grid(p, t0)) for p in self._probes]
        if self._probes:
            self._tasks.append(asyncio.ensure_future(self._summaries()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for probe in self._probes:
            if probe.out:
                grace = min(STOP_GRACE_SECONDS, probe.spec.timeout_seconds + 0.1)
                await asyncio.wait(probe.out, timeout=grace)
            for task in list(probe.out):
                task.cancel()
            for task in list(probe.out):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(Exception):
                await probe.checker.close()
            self._emit_summary(probe, final=True)

    # --- the grid ----------------------------------------------------------------------------------

    async def _grid(self, probe: _Probe, t0: float) -> None:
        loop = asyncio.get_running_loop()
        interval = probe.spec.interval_seconds
        k = 0
        while True:
            delay = t0 + k * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay >= interval:  # stalled past whole slots: skip them, keep the grid
                behind = math.floor(-delay / interval)
                probe.skipped += behind
                k += behind
                continue
            seq = probe.next_seq
            probe.next_seq += 1
            task = asyncio.ensure_future(self._check(probe, seq, self._now()))
            probe.out.add(task)
            task.add_done_callback(probe.out.discard)
            k += 1

    async def _check(self, probe: _Probe, seq: int, sent_at: datetime) -> None:
        try:
            result = await probe.checker.check()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a check is a failed check, never a stopped monitor
            log.exception("probe %s: check failed unexpectedly", probe.id)
            result = CheckResult(False, 0.0, f"probe error: {type(exc).__name__}")
        probe.done[seq] = (sent_at, result)
        while probe.next_fold in probe.done:
            at, res = probe.done.pop(probe.next_fold)
            probe.next_fold += 1
            transition = probe.stats.record(at, res)
            if transition is not None:
                self._emit_transition(probe, transition)

    async def _summaries(self) -> None:
        while True:
            await asyncio.sleep(self._summary_seconds)
            for probe in self._probes:
                self._emit_summary(probe, final=False)

    # --- what reaches the journal --------------------------------------------------------------

    def _emit(self, event: ProbeEvent) -> None:
        if self._record is None:
            return
        try:
            self._record(event)
        except Exception:  # the journal refusing an event must not stop the measurement
            log.exception("could not record a %s event", event.kind.value)

    def _emit_transition(self, probe: _Probe, transition: Transition) -> None:
        outage = transition.outage
        who = {"probe": probe.id, "role": probe.spec.role, "session": self.session}
        if transition.kind == "down":
            self._emit(ProbeDown(**who, started=outage.started, error=next(iter(outage.errors), "")))
            return
        self._emit(ProbeUp(**who, **outage_figures(outage).model_dump()))
        self._emit_summary(probe, final=False)  # the counts around an outage survive a crash

    def _emit_summary(self, probe: _Probe, *, final: bool) -> None:
        current = probe.stats.current
        self._emit(
            ProbeSummary(
                probe=probe.id,
                role=probe.spec.role,
                session=self.session,
                **probe.stats.summary(),
                targets=probe.spec.shown_targets,
                interval_ms=round(probe.spec.interval_seconds * 1000, 3),
                timeout_ms=round(probe.spec.timeout_seconds * 1000, 3),
                skipped=probe.skipped,
                final=final,
                # an outage still going on: enough to report it if we die now
                down=outage_figures(current) if current is not None else None,
            )
        )


def outage_figures(outage: Outage) -> OutageFigures:
    return OutageFigures(
        started=outage.started,
        ended=outage.ended,
        seconds=round(outage.seconds, 3),
        failed_checks=outage.failed_checks,
        late_checks=outage.late_checks,
        errors=outage.error_list(),
    )
