"""The lines `cau run` prints as a run goes: a failed script says how it failed."""

from __future__ import annotations

from datetime import UTC, datetime

from cau.cli.live import describe
from cau.journal.events import JournalEvent, ScriptOutcome, Step


def _event(payload: ScriptOutcome) -> JournalEvent:
    return JournalEvent(run_id="r", seq=1, ts=datetime(2026, 1, 1, tzinfo=UTC), node="n1", payload=payload)


def test_a_failed_script_shows_its_exit_status_and_last_line() -> None:
    silent = ScriptOutcome(step=Step.PRE_SCRIPT, key="pre_script/1", ok=False, exit_status=3)
    assert describe(_event(silent)) == "n1: pre-update script failed: exit status 3"
    told = ScriptOutcome(
        step=Step.PRE_SCRIPT, key="pre_script/1", ok=False, exit_status=1, stdout="checking\ndisk full\n"
    )
    line = describe(_event(told)) or ""
    assert line.endswith("failed: exit status 1: disk full") and "failed: failed" not in line
