"""A store written by the release before the typed journal (tests/fixtures/journal/README.md) is
migrated by the current store, and every run's journal replays and reports what that release's
own saved report said."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from cau.domain.runs import ReportQuery
from cau.journal.events import EVENT_SCHEMA, EventKind, RunCreated, StepIntent, StepOutcome
from cau.journal.progress import replay
from cau.reports.build import build_report
from cau.reports.model import RunReport
from cau.store.sqlite import SCHEMA_VERSION, SqliteFile

FIXTURE = Path(__file__).parents[1] / "fixtures" / "journal" / "release-5b9c0de.cau.db"


@pytest.fixture
def store(tmp_path: Path) -> SqliteFile:
    path = tmp_path / "cau.db"
    shutil.copy(FIXTURE, path)
    return SqliteFile(path)  # the file the async store delegates to


def test_the_old_store_is_migrated_and_its_events_keep_their_schema(store: SqliteFile) -> None:
    db = store.connection
    assert (
        int(db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]) == SCHEMA_VERSION
    )
    assert {r[0] for r in db.execute("SELECT DISTINCT schema FROM journal")} == {1}  # as written
    runs = store.list_runs(ReportQuery())
    assert [(r.cluster, r.status.value if r.status else None) for r in runs] == [
        ("sandbox", "Succeeded"),
        ("faulty", "PartiallyFailed"),
        ("probed", "Canceled"),
        ("rackp", "Succeeded"),
    ]
    # every kind of event the release wrote reads as its model
    kinds = {e.kind for r in runs for e in store.events(r.run_id)}
    # (the hand-over of self-updating mode, the readiness warnings, health gates, silences and
    # forecasts came after that release)
    later = {
        EventKind.HANDOVER,
        EventKind.READINESS,
        EventKind.GATE,
        EventKind.GATE_WAIT,
        EventKind.SILENCE,
        EventKind.FORECAST,
    }
    assert kinds >= set(EventKind) - {EventKind.RUN_PAUSED} - later
    for r in runs:
        events = store.events(r.run_id)
        assert isinstance(events[0].payload, RunCreated)
        steps = [e.payload for e in events if isinstance(e.payload, StepIntent | StepOutcome)]
        assert steps and all(p.key for p in steps)


def test_new_events_appended_to_an_old_journal_carry_the_new_schema(store: SqliteFile) -> None:
    from datetime import UTC, datetime

    from cau.journal.events import WarningEvent

    run = store.list_runs(ReportQuery(cluster="sandbox"))[0]
    store.append(run.run_id, WarningEvent(message="read by a newer cau"), datetime.now(UTC))
    rows = store.connection.execute(
        "SELECT schema FROM journal WHERE run_id=? ORDER BY seq DESC LIMIT 1", (run.run_id,)
    ).fetchall()
    assert rows[0][0] == EVENT_SCHEMA
    assert replay(store.events(run.run_id)).warnings[-1][1] == "read by a newer cau"


@pytest.mark.parametrize("cluster", ["sandbox", "faulty", "probed", "rackp"])
def test_each_old_run_replays_into_the_report_the_old_release_saved(store: SqliteFile, cluster: str) -> None:
    (run,) = store.list_runs(ReportQuery(cluster=cluster))
    saved = store.get_report(run.run_id)
    assert saved is not None
    old = RunReport.model_validate(saved)  # the old release's report still loads
    assert run.finished is not None
    new = build_report(run, replay(store.events(run.run_id)), now=run.finished)
    assert (new.status, new.error_id, new.message) == (old.status, old.error_id, old.message)
    assert (new.started, new.finished, new.max_failed_nodes, new.plugins) == (
        old.started,
        old.finished,
        old.max_failed_nodes,
        old.plugins,
    )
    assert [c.owner for c in new.coordinators] == [c.owner for c in old.coordinators]
    assert new.warnings == old.warnings
    for n, o in zip(new.nodes, old.nodes, strict=True):
        assert n.model_dump(exclude={"held_updates"}) == o.model_dump(exclude={"held_updates"}), n.name
    # roles measured by probes (in the journal) come out the same; the provider's own outage
    # list is not in the journal (it was read from the sandbox when the run finished)
    probed = {a.role: a for a in old.availability if a.measured == "probe"}
    assert {a.role: a for a in new.availability if a.measured == "probe"} == probed
    assert (cluster in ("probed", "rackp")) == bool(probed)


def test_an_old_run_s_starter_is_unknown_and_says_so_in_every_format(store: SqliteFile) -> None:
    from rich.console import Console

    from cau.cli.render_text import run_summary
    from cau.reports.render_csv import render_csv
    from cau.reports.render_html import render_html

    (run,) = store.list_runs(ReportQuery(cluster="sandbox"))
    report = build_report(run, replay(store.events(run.run_id)), now=run.finished or run.created)
    assert report.started_by is None  # not recorded then: unknown, not guessed
    console = Console(record=True, width=200)
    console.print(run_summary(report))
    assert "by unknown" in console.export_text()
    assert '<dd class="started-by">unknown</dd>' in render_html([report])
    assert render_csv([report], detailed=False).splitlines()[1].endswith(",")  # an empty cell


def test_the_fixture_is_the_old_releases_file() -> None:
    """Nothing rewrote the fixture itself (the tests work on copies)."""
    db = sqlite3.connect(f"file:{FIXTURE}?mode=ro&immutable=1", uri=True)
    try:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"
        columns = {r[1] for r in db.execute("PRAGMA table_info(journal)")}
        assert "schema" not in columns
    finally:
        db.close()
