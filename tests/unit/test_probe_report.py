"""The report from the probes' journal events: outages attributed to node steps, probed roles
measured by their probes, a crash's open outage, counts added up across coordinators."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cau.domain.results import RunState, Status
from cau.domain.runs import RunRecord
from cau.journal.events import EventKind, JournalEvent, load_payload
from cau.journal.progress import replay
from cau.ports import RoleOutage
from cau.reports.availability import INTERRUPTED
from cau.reports.build import build_report
from cau.reports.model import RunReport
from cau.reports.render_csv import render_csv
from cau.reports.render_html import render_html

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def t(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


class Journal:
    def __init__(self) -> None:
        self.events: list[JournalEvent] = []

    def add(
        self,
        kind: EventKind,
        at: float,
        *,
        node: str | None = None,
        step: str | None = None,
        key: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """An event as the store keeps it (kind, step, key and a JSON object), read back."""
        payload = load_payload(kind.value, step, key, data or {})
        self.events.append(JournalEvent.of("r1", len(self.events) + 1, t(at), node, payload))

    def step(self, node: str, step: str, start: float, end: float | None) -> None:
        key = f"{step}/1"
        intent = {"plugin": "sandbox"} if step == "install" else {}
        self.add(EventKind.INTENT, start, node=node, step=step, key=key, data=intent)
        if end is not None:
            self.add(EventKind.OUTCOME, end, node=node, step=step, key=key, data={"ok": True})

    def probe(self, kind: EventKind, at: float, probe: str = "web", session: str = "s1", **data: Any) -> None:
        self.add(kind, at, data={"probe": probe, "role": probe.split("#")[0], "session": session, **data})

    def summary(self, at: float, session: str, probe: str = "web", **counts: Any) -> None:
        data = {"sent": 0, "ok": 0, "failed": 0, "late": 0, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0}
        data.update(counts)
        self.probe(
            EventKind.PROBE_SUMMARY, at, probe, session, targets=["http://***@h/"], interval_ms=50, **data
        )


def two_nodes() -> Journal:
    j = Journal()
    roles = {"web": {"kind": "failover"}, "db": {"kind": "live"}}
    j.add(EventKind.RUN_CREATED, 0, data={"order": ["n1", "n2"], "roles": roles, "max_failed": 1})
    j.add(EventKind.NODE_STARTED, 1, node="n1")
    j.step("n1", "enter_maintenance", 1, 10)
    j.step("n1", "install", 10, 20)
    j.step("n1", "failback", 20, 25)
    j.add(EventKind.NODE_FINISHED, 25, node="n1", data={"status": "Succeeded"})
    j.add(EventKind.NODE_STARTED, 30, node="n2")
    j.step("n2", "enter_maintenance", 30, 40)
    j.step("n2", "install", 40, 50)
    j.step("n2", "failback", 50, 55)
    j.add(EventKind.NODE_FINISHED, 55, node="n2", data={"status": "Succeeded"})
    return j


def finish(j: Journal, at: float = 60, outages: list[RoleOutage] | None = None) -> RunReport:
    j.add(EventKind.RUN_FINISHED, at, data={"status": "Succeeded"})
    record = RunRecord(
        "r1", "c1", "sandbox", RunState.FINISHED, T0, {}, status=Status.SUCCEEDED, finished=t(at)
    )
    return build_report(record, replay(j.events), now=t(at), outages=outages or [])


def test_a_probe_outage_is_attributed_to_the_steps_in_progress() -> None:
    j = two_nodes()
    j.probe(EventKind.PROBE_DOWN, 35, started=t(34).isoformat(), error="connection refused")
    up = {"started": t(34).isoformat(), "ended": t(36).isoformat(), "seconds": 2.0}
    j.probe(EventKind.PROBE_UP, 36.1, **up, failed_checks=40, errors=["connection refused (x40)"])
    j.probe(EventKind.PROBE_DOWN, 52, started=t(52).isoformat(), error="HTTP 503")
    up = {"started": t(52).isoformat(), "ended": t(52.05).isoformat(), "seconds": 0.05}
    j.probe(EventKind.PROBE_UP, 52.1, **up, failed_checks=1, errors=["HTTP 503"])
    j.summary(59, "s1", sent=1200, ok=1159, failed=41, late=0)
    # the provider also reports web (a simulation): the probe's measurement wins
    provider = [
        RoleOutage("web", t(31), t(39), "n2", "failing over"),
        RoleOutage("db", t(45), t(46), "n2", "x"),
    ]
    report = finish(j, outages=provider)

    probe_outages = [o for o in report.outages if o.role == "web"]
    assert [o.source for o in probe_outages] == ["probe", "probe"]
    first, second = probe_outages
    assert first.seconds == 2.0 and first.attribution == "n2 / enter_maintenance"
    assert first.errors == ["connection refused (x40)"] and first.failed_checks == 40
    assert second.attribution == "n2 / failback" and second.reason == "HTTP 503"
    db = next(o for o in report.outages if o.role == "db")
    assert db.source == "provider" and db.attribution == "n2 / install"

    web = next(a for a in report.availability if a.role == "web")
    assert web.measured == "probe" and web.probes == ["web"] and web.targets == ["http://***@h/"]
    assert (web.probes_sent, web.probes_failed, web.outages) == (1200, 41, 2)
    assert web.downtime_seconds == pytest.approx(2.05)
    assert web.availability_percent == pytest.approx(100 * (1 - 2.05 / 60), abs=1e-3)
    assert web.worst_outage_seconds == 2.0 and web.worst_outage_during == "n2 / enter_maintenance"
    by_step = {(s.node, s.step): s.seconds for s in web.downtime_by_step}
    assert by_step == {("n2", "enter_maintenance"): 2.0, ("n2", "failback"): 0.05}
    dbav = next(a for a in report.availability if a.role == "db")
    assert dbav.measured == "provider" and dbav.downtime_seconds == 1.0

    # the renderers show it
    html = render_html([report])
    assert 'class="outage probe"' in html and "during n2 / enter_maintenance" in html
    assert render_csv([report], detailed=False, availability=True).count(",web,probe,1200,41,0,") == 1


def test_an_outage_overlapping_two_steps_and_one_between_nodes() -> None:
    j = two_nodes()
    up = {"started": t(18).isoformat(), "ended": t(22).isoformat(), "seconds": 4.0}
    j.probe(EventKind.PROBE_UP, 22, **up, failed_checks=80, errors=["timeout after 1s (x80)"])
    up = {"started": t(27).isoformat(), "ended": t(28).isoformat(), "seconds": 1.0}
    j.probe(EventKind.PROBE_UP, 28, **up, failed_checks=20, errors=["connection refused (x20)"])
    j.summary(59, "s1", sent=1200, ok=1100, failed=100, late=80)
    report = finish(j)
    first, second = (o for o in report.outages if o.role == "web")
    assert [(d.node, d.step, d.seconds) for d in first.during] == [
        ("n1", "install", 2.0),
        ("n1", "failback", 2.0),
    ]
    assert second.during == [] and second.attribution == "between steps"
    web = next(a for a in report.availability if a.role == "web")
    assert web.downtime_between_steps_seconds == 1.0 and web.probes_late == 80


def test_a_crash_keeps_the_outages_and_adds_up_the_coordinators() -> None:
    j = two_nodes()
    # first coordinator (s1): an outage closed, then one still open when it was killed at ~33
    up = {"started": t(5).isoformat(), "ended": t(6).isoformat(), "seconds": 1.0}
    j.probe(EventKind.PROBE_UP, 6, session="s1", **up, failed_checks=20, errors=["connection refused (x20)"])
    j.summary(6, "s1", sent=100, ok=80, failed=20)
    j.probe(EventKind.PROBE_DOWN, 31, session="s1", started=t(31).isoformat(), error="connection refused")
    down = {"started": t(31).isoformat(), "failed_checks": 30, "errors": ["connection refused (x30)"]}
    j.summary(32.5, "s1", sent=600, ok=570, failed=30, p99_ms=5.0, max_ms=9.0, down=down)  # cumulative
    # the second coordinator (s2) takes over at 40; the web answers again
    j.add(EventKind.COORDINATOR, 40, data={"owner": "x", "resumed": True})
    j.summary(59, "s2", sent=400, ok=400, failed=0, p99_ms=3.0, max_ms=4.0, final=True)
    report = finish(j)
    (crash,) = (o for o in report.outages if o.started == t(31))
    assert crash.ended == t(32.5) and crash.seconds == 1.5  # the last moment it was known down
    assert INTERRUPTED in crash.errors and crash.attribution == "n2 / enter_maintenance"
    web = next(a for a in report.availability if a.role == "web")
    assert web.outages == 2 and web.downtime_seconds == 2.5
    assert (web.probes_sent, web.probes_ok, web.probes_failed) == (1000, 970, 30)
    assert web.response_ms_p99 == 5.0 and web.response_ms_max == 9.0


def test_an_outage_still_going_at_the_end_lasts_to_the_end() -> None:
    j = two_nodes()
    j.probe(EventKind.PROBE_DOWN, 56, started=t(56).isoformat(), error="HTTP 502")
    down = {"started": t(56).isoformat(), "failed_checks": 60, "errors": ["HTTP 502 (x60)"]}
    j.summary(59, "s1", sent=1200, ok=1140, failed=60, down=down, final=True)
    report = finish(j, at=59)
    (o,) = report.outages
    assert o.ended is None and o.seconds == 3.0 and o.errors == ["HTTP 502 (x60)"]
    assert o.attribution == "between steps"
    assert "not over when the report was made" in render_html([report])


def test_a_report_without_probes_is_unchanged_and_old_reports_still_load() -> None:
    report = finish(two_nodes(), outages=[RoleOutage("db", t(45), t(46), "n2", "moving")])
    assert {a.role: a.measured for a in report.availability} == {"web": "provider", "db": "provider"}
    old = report.model_dump(mode="json")
    for o in old["outages"]:
        for key in ("source", "probe", "errors", "failed_checks", "during"):
            del o[key]
    old["availability"] = [
        {k: a[k] for k in ("role", "downtime_seconds", "outages", "availability_percent")}
        for a in old["availability"]
    ]
    again = RunReport.model_validate(old)
    assert again.outages[0].source == "provider" and again.availability[0].measured == "provider"
    assert "Role availability" in render_html([again])


def test_a_run_in_progress_shows_its_open_outage_as_going_on() -> None:
    j = two_nodes()
    j.probe(EventKind.PROBE_DOWN, 33, started=t(32).isoformat(), error="connection refused")
    record = RunRecord("r1", "c1", "sandbox", RunState.RUNNING, T0, {})
    report = build_report(record, replay(j.events), now=t(36))
    (o,) = report.outages
    assert o.ended is None and o.seconds == 4.0 and INTERRUPTED not in o.errors
    assert o.attribution == "n2 / enter_maintenance"


def test_a_paused_run_ends_its_open_outage_where_measuring_stopped() -> None:
    j = two_nodes()
    j.probe(EventKind.PROBE_DOWN, 12, started=t(12).isoformat(), error="connection refused")
    down = {"started": t(12).isoformat(), "failed_checks": 40, "errors": ["connection refused (x40)"]}
    j.summary(14, "s1", sent=300, ok=260, failed=40, down=down, final=True)  # paused at 14
    j.add(EventKind.COORDINATOR, 30, data={"owner": "x", "resumed": True})
    j.summary(59, "s2", sent=500, ok=500, final=True)
    report = finish(j)
    (o,) = report.outages
    assert o.ended == t(14) and o.seconds == 2.0 and INTERRUPTED in o.errors
