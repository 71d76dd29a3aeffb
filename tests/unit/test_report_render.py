"""The HTML and CSV renderers of run reports, fed with real reports of sandbox runs in virtual time."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from markupsafe import escape

from cau.clock import VirtualClock, run_virtual
from cau.domain.durations import format_duration
from cau.domain.profile import build_profile
from cau.reports.model import RunReport
from cau.reports.render_csv import DETAILED_COLUMNS, SUMMARY_COLUMNS, render_csv
from cau.reports.render_html import (
    build_timeline,
    format_offset,
    format_utc,
    render_html,
    render_html_fragment,
    report_stylesheet,
)
from cau.service import Service

FAILING_UPDATE = "openssl-3.0.17-1~deb12u3"


async def _run(data_dir: Path, cluster: str, config: Path | None = None, **options: object) -> RunReport:
    svc = Service(data_dir, config_path=config, clock=VirtualClock())
    try:
        out = await svc.run(cluster, build_profile(None, dict(options)))
    finally:
        svc.close()
    assert out.report is not None
    return out.report


@pytest.fixture(scope="module")
def sandbox_report(tmp_path_factory: pytest.TempPathFactory) -> RunReport:
    return run_virtual(_run(tmp_path_factory.mktemp("sandbox"), "sandbox"))


@pytest.fixture(scope="module")
def faulty_report(tmp_path_factory: pytest.TempPathFactory) -> RunReport:
    """The built-in sandbox, but one update fails on every node, every time (a budget of 3
    failed nodes lets the run reach them all)."""
    d = tmp_path_factory.mktemp("faulty")
    default = Path(__file__).parents[2] / "src" / "cau" / "sandbox" / "default.toml"
    spec = default.read_text()
    marker = f'id = "{FAILING_UPDATE}"'
    assert marker in spec
    (d / "faulty.toml").write_text(spec.replace(marker, marker + '\nfail_installs = { "*" = 9 }'))
    config = d / "clusters.toml"
    config.write_text(
        '[clusters.faulty]\nprovider = "sandbox"\n[clusters.faulty.options]\nspec = "faulty.toml"\n'
    )
    return run_virtual(_run(d, "faulty", config, max_failed_nodes=3))


def _in_progress(report: RunReport) -> RunReport:
    """The same run seen while the last node is still installing."""
    last = report.nodes[-1]
    cut = next(i for i, s in enumerate(last.steps) if s.step == "install")
    steps = [*last.steps[:cut], last.steps[cut].model_copy(update={"finished": None, "ok": None})]
    node = last.model_copy(
        update={
            "status": None,
            "state": "running",
            "current_step": "install",
            "steps": steps,
            "finished": None,
        }
    )
    return report.model_copy(
        update={"status": None, "state": "Running", "finished": None, "nodes": [*report.nodes[:-1], node]}
    )


def _svg(html: str) -> str:
    svgs: list[str] = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(svgs) == 1
    return svgs[0]


# --- the reports we feed in are what we think they are -------------------------------------------


def test_fixture_reports_are_real_runs(sandbox_report: RunReport, faulty_report: RunReport) -> None:
    assert sandbox_report.status == "Succeeded"
    assert [n.status for n in sandbox_report.nodes] == ["Succeeded"] * 4
    # updating failed on all 4 nodes (each PartiallyFailed), one more than the budget of 3
    assert faulty_report.status == "Failed" and faulty_report.error_id == "MaxFailedNodesExceeded"
    assert [n.status for n in faulty_report.nodes] == ["PartiallyFailed"] * 4
    assert faulty_report.updates_failed == 4
    assert all(
        any(u.id == FAILING_UPDATE and u.status == "Failed" for u in n.updates) for n in faulty_report.nodes
    )


# --- HTML -----------------------------------------------------------------------------------------


def test_html_shows_every_node_update_and_status(sandbox_report: RunReport) -> None:
    html = render_html([sandbox_report])
    assert html.startswith("<!DOCTYPE html>")
    assert sandbox_report.run_id in html
    assert "Succeeded" in html
    for node in sandbox_report.nodes:
        assert f'<td class="name">{node.name}</td>' in html
        for u in node.updates:
            assert u.id in html
            assert u.title in html
    assert format_duration(sandbox_report.duration_seconds) in html
    assert format_duration(sandbox_report.maintenance_seconds) in html
    assert format_utc(sandbox_report.started) in html  # e.g. "2026-01-01 00:00:00 UTC"
    assert sandbox_report.finished is not None
    assert format_utc(sandbox_report.finished) in html
    for a in sandbox_report.availability:
        assert a.role in html


def test_html_is_self_contained(sandbox_report: RunReport, faulty_report: RunReport) -> None:
    html = render_html([sandbox_report, faulty_report])
    assert "http://" not in html
    assert "https://" not in html
    assert not re.search(r"""(src|href)=["']?[^"'#\s>]""", html)  # links only to anchors in the page
    assert "url(" not in html
    assert "@import" not in html
    assert "<link" not in html
    assert "<script" not in html
    assert "src=" not in html
    assert "<style>" in html  # inline CSS


def test_html_timeline_has_one_lane_per_node(sandbox_report: RunReport) -> None:
    svg = _svg(render_html([sandbox_report]))
    lanes = re.findall(r'<g class="lane" data-node="([^"]*)"', svg)
    assert lanes == [n.name for n in sandbox_report.nodes]
    steps = sum(len(n.steps) for n in sandbox_report.nodes)
    assert svg.count('<rect class="step') == steps
    # every step bar and maintenance band has a tooltip
    assert len(re.findall(r'<rect class="step[^>]*><title>[^<]+</title></rect>', svg)) == steps
    assert svg.count('<rect class="band"') == len(sandbox_report.nodes)
    # the built-in sandbox moves failover roles: their outages get a lane each
    roles = {o.role for o in sandbox_report.outages}
    assert roles
    assert sorted(re.findall(r'data-role="([^"]*)"', svg)) == sorted(roles)
    assert svg.count('<rect class="outage"') == len(sandbox_report.outages)
    # labelled relative ticks, the first at +0:00
    ticks = re.findall(r'<g class="tick">.*?<text[^>]*>([^<]*)</text>', svg)
    assert ticks[0] == "+0:00"
    assert 2 <= len(ticks) <= 9


def test_html_shows_failures(faulty_report: RunReport) -> None:
    html = render_html([faulty_report])
    assert "Partially failed" in html
    assert 'class="badge warn"' in html
    assert "InstallFailed" in html
    assert "installer exited with 100 (injected fault)" in html
    assert ">100</td>" in html  # the error code column
    assert ">4</td>" in html  # attempts
    assert "update remaining" in html
    svg = _svg(html)
    failed_steps = sum(1 for n in faulty_report.nodes for s in n.steps if s.ok is False)
    assert failed_steps > 0
    assert svg.count('class="step failed"') == failed_steps
    assert "Failed step" in html  # in the legend
    for w in faulty_report.warnings:
        assert w in html


def test_html_escapes_untrusted_text(sandbox_report: RunReport) -> None:
    evil = '<script>alert("x")</script>'
    node = sandbox_report.nodes[0]
    update = node.updates[0].model_copy(
        update={"title": "<b>bold</b>", "message": "<img src=x onerror=alert(1)>"}
    )
    step = node.steps[0].model_copy(update={"message": "</title><script>1</script>"})
    node = node.model_copy(
        update={
            "name": evil,
            "message": "output: <iframe>",
            "error_id": "X<y>",
            "updates": [update, *node.updates[1:]],
            "steps": [step, *node.steps[1:]],
        }
    )
    report = sandbox_report.model_copy(
        update={"nodes": [node, *sandbox_report.nodes[1:]], "message": '" onmouseover="alert(1)'}
    )
    html = render_html([report], title="<i>title</i>")
    for raw in ("<script", "<b>bold", "<img", "<iframe", "<i>title", "X<y>", '" onmouseover'):
        assert raw not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "&lt;iframe&gt;" in html
    assert 'data-node="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in html  # in an attribute, too


def test_html_long_messages_are_folded(sandbox_report: RunReport) -> None:
    node = sandbox_report.nodes[0].model_copy(update={"message": "line\n" * 200})
    html = render_html([sandbox_report.model_copy(update={"nodes": [node]})])
    assert '<details class="more">' in html
    assert html.count("line\n") >= 200  # nothing is lost, it is folded away


def test_html_several_runs_get_a_summary_and_a_section_each(
    sandbox_report: RunReport, faulty_report: RunReport
) -> None:
    html = render_html([sandbox_report, faulty_report])
    assert html.count('<section class="run ') == 2
    links = re.findall(r'<a href="#([^"]+)">([^<]+)</a>', html)
    assert [text for _, text in links] == [sandbox_report.run_id, faulty_report.run_id]
    for anchor, _ in links:
        assert f'id="{anchor}"' in html
    assert html.count("<svg") == 2
    assert "2 updating runs on faulty, sandbox" in html


def test_html_of_a_run_in_progress(sandbox_report: RunReport) -> None:
    report = _in_progress(sandbox_report)
    html = render_html([report])
    assert "In progress" in html
    assert "Running: install" in html
    assert 'class="now"' in html
    timeline = build_timeline(report)
    assert timeline is not None
    running = [b for b in timeline.nodes[-1].bars if b.css == "open"]
    assert len(running) == 1
    # a step still running extends to the end of the report
    assert running[0].x + running[0].w == pytest.approx(timeline.plot_x1, abs=0.11)


def test_html_of_nothing_and_of_a_run_without_steps(sandbox_report: RunReport) -> None:
    assert "No runs to report" in render_html([])
    bare = sandbox_report.model_copy(update={"nodes": [], "outages": [], "availability": []})
    html = render_html([bare])
    assert "<svg" not in html
    assert "No nodes yet" in html
    assert build_timeline(bare) is None


def test_timeline_geometry_stays_in_the_plot(faulty_report: RunReport) -> None:
    t = build_timeline(faulty_report)
    assert t is not None
    assert [lane.name for lane in t.nodes] == [n.name for n in faulty_report.nodes]
    for lane in t.nodes + t.roles:
        for b in [*lane.bars, *([lane.band] if lane.band else [])]:
            assert t.plot_x0 <= b.x
            assert b.x + b.w <= t.plot_x1 + 0.11
            assert lane.y <= b.y
            assert b.y + b.h <= lane.y + lane.h
            assert b.w >= 2.0  # even an instant step is visible
    # node lanes follow the run order in time: each node starts right of the previous one
    firsts = [min(b.x for b in lane.bars) for lane in t.nodes]
    assert firsts == sorted(firsts)
    xs = [tick.x for tick in t.ticks]
    assert xs == sorted(xs)
    assert xs[-1] <= t.plot_x1


@pytest.mark.parametrize(
    ("seconds", "hours", "text"),
    [
        (0, False, "+0:00"),
        (30, False, "+0:30"),
        (90, False, "+1:30"),
        (3599, False, "+59:59"),
        (3600, False, "+1:00:00"),
        (60, True, "+0:01:00"),
    ],
)
def test_format_offset(seconds: float, hours: bool, text: str) -> None:
    assert format_offset(seconds, hours=hours) == text


def test_timeline_ticks_of_a_long_run(sandbox_report: RunReport) -> None:
    """Stretch the run to ~7 hours: the ticks switch to h:mm:ss and stay few."""
    k = 1000

    def stretch(t: datetime) -> datetime:
        return sandbox_report.started + (t - sandbox_report.started) * k

    nodes = [
        n.model_copy(
            update={
                "steps": [
                    s.model_copy(
                        update={
                            "started": stretch(s.started),
                            "finished": stretch(s.finished) if s.finished else None,
                        }
                    )
                    for s in n.steps
                ]
            }
        )
        for n in sandbox_report.nodes
    ]
    long = sandbox_report.model_copy(
        update={
            "nodes": nodes,
            "duration_seconds": sandbox_report.duration_seconds * k,
            "finished": sandbox_report.started + timedelta(seconds=sandbox_report.duration_seconds * k),
            "outages": [],
        }
    )
    t = build_timeline(long)
    assert t is not None
    assert 3 <= len(t.ticks) <= 9
    assert t.ticks[1].label == "+1:00:00"


# --- CSV ------------------------------------------------------------------------------------------


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def _iso(value: str) -> datetime:
    assert value.endswith("Z")
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


def test_csv_summary_one_row_per_run(sandbox_report: RunReport, faulty_report: RunReport) -> None:
    text = render_csv([sandbox_report, faulty_report], detailed=False)
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == SUMMARY_COLUMNS
    assert list(SUMMARY_COLUMNS[:13]) == [
        "run_id", "cluster", "status", "started", "finished", "duration_seconds", "nodes",
        "nodes_succeeded", "nodes_failed", "updates_installed", "updates_failed", "error_id", "message",
    ]  # fmt: skip
    ok, bad = _rows(text)
    assert ok["run_id"] == sandbox_report.run_id
    assert ok["cluster"] == "sandbox"
    assert ok["status"] == "Succeeded"
    assert _iso(ok["started"]) == sandbox_report.started
    assert sandbox_report.finished is not None
    assert abs(_iso(ok["finished"]) - sandbox_report.finished) < timedelta(milliseconds=1)
    assert float(ok["duration_seconds"]) == sandbox_report.duration_seconds
    assert (ok["nodes"], ok["nodes_succeeded"], ok["nodes_failed"]) == ("4", "4", "0")
    assert int(ok["updates_installed"]) == sandbox_report.updates_installed == 19
    assert ok["updates_failed"] == "0"
    assert ok["error_id"] == ok["message"] == ""

    assert bad["status"] == "Failed" and bad["error_id"] == "MaxFailedNodesExceeded"
    assert (bad["nodes_succeeded"], bad["nodes_failed"], bad["nodes_partially_failed"]) == ("0", "0", "4")
    assert int(bad["updates_failed"]) == 4
    assert bad["message"] == faulty_report.message


def test_csv_detailed_one_row_per_node_and_update(faulty_report: RunReport) -> None:
    text = render_csv([faulty_report], detailed=True)
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == DETAILED_COLUMNS
    rows = list(reader)
    expected = [(n.name, u.id) for n in faulty_report.nodes for u in n.updates]
    assert [(r["node"], r["update_id"]) for r in rows] == expected
    by_key = {(r["node"], r["update_id"]): r for r in rows}
    for n in faulty_report.nodes:
        for u in n.updates:
            row = by_key[(n.name, u.id)]
            assert row["run_id"] == faulty_report.run_id
            assert row["run_status"] == "Failed"
            assert row["node_status"] == n.status
            assert row["node_error_id"] == (n.error_id or "")
            assert float(row["maintenance_seconds"]) == n.maintenance_seconds
            assert int(row["restarts"]) == n.restarts
            assert row["update_title"] == u.title
            assert row["plugin"] == "sandbox"
            assert row["update_status"] == u.status
            assert int(row["attempts"]) == u.attempts
            assert row["restart_required"] == ("true" if u.restart_required else "false")
            if u.started is not None:
                _iso(row["update_started"])
    failed = [r for r in rows if r["update_status"] == "Failed"]
    assert len(failed) == 4
    assert {r["update_id"] for r in failed} == {FAILING_UPDATE}
    assert {r["error_code"] for r in failed} == {"100"}
    assert {r["attempts"] for r in failed} == {"4"}
    assert all("injected fault" in r["message"] for r in failed)


def test_csv_detailed_keeps_nodes_without_updates(sandbox_report: RunReport) -> None:
    idle = sandbox_report.nodes[0].model_copy(update={"updates": [], "message": "nothing to do"})
    report = sandbox_report.model_copy(update={"nodes": [idle, *sandbox_report.nodes[1:]]})
    rows = _rows(render_csv([report], detailed=True))
    assert len(rows) == 1 + sum(len(n.updates) for n in sandbox_report.nodes[1:])
    first = rows[0]
    assert first["node"] == idle.name
    assert first["update_id"] == first["update_status"] == ""
    assert first["message"] == "nothing to do"
    assert {r["node"] for r in rows} == {n.name for n in report.nodes}


def test_csv_guards_against_formula_injection(sandbox_report: RunReport) -> None:
    node = sandbox_report.nodes[0]
    payloads = ['=HYPERLINK("x","y")', "+1+1", "-1+1", "@SUM(A1)", "\t=1"]
    updates = [
        u.model_copy(update={"title": p, "message": p, "error_code": -5})
        for u, p in zip(node.updates, payloads, strict=True)
    ]
    node = node.model_copy(update={"updates": updates, "name": "=cmd|'/c calc'!A1"})
    report = sandbox_report.model_copy(update={"nodes": [node], "message": "=2+3"})
    rows = _rows(render_csv([report], detailed=True))
    assert [r["update_title"] for r in rows] == ["'" + p for p in payloads]
    assert [r["message"] for r in rows] == ["'" + p for p in payloads]
    assert {r["node"] for r in rows} == {"'=cmd|'/c calc'!A1"}
    assert {r["error_code"] for r in rows} == {"-5"}  # a number we wrote is not a formula
    (summary,) = _rows(render_csv([report], detailed=False))
    assert summary["message"] == "'=2+3"
    # ordinary text is left alone
    plain = _rows(render_csv([sandbox_report], detailed=True))
    assert all(not r["update_title"].startswith("'") for r in plain)


def test_csv_of_a_run_in_progress(sandbox_report: RunReport) -> None:
    report = _in_progress(sandbox_report)
    (summary,) = _rows(render_csv([report], detailed=False))
    assert summary["status"] == "Running"
    assert summary["finished"] == ""
    rows = _rows(render_csv([report], detailed=True))
    assert {r["node_status"] for r in rows if r["node"] == report.nodes[-1].name} == {"running"}


def test_the_dashboard_shows_the_export_s_sections_escaped_alike(sandbox_report: RunReport) -> None:
    node = sandbox_report.nodes[0].model_copy(update={"name": "<script>x</script>", "message": "<img src=x>"})
    report = sandbox_report.model_copy(update={"nodes": [node, *sandbox_report.nodes[1:]]})
    fragment = str(render_html_fragment(report))
    page = render_html([report])
    # a part of a page, not a page: no document, no style or script of its own
    assert fragment.startswith('<div class="cau-report">')
    for whole_page in ("<html", "<head", "<body", "<style", "<script", "<img"):
        assert whole_page not in fragment
    assert "&lt;script&gt;x&lt;/script&gt;" in fragment and "&lt;img src=x&gt;" in fragment
    # the same sections as the export: one per run, the timeline, a row per node
    assert fragment.count('<section class="run ') == page.count('<section class="run ') == 1
    assert _svg(fragment) == _svg(page)
    for n in report.nodes:
        assert f'<td class="name">{escape(n.name)}</td>' in fragment
    # and the export carries the stylesheet the dashboard links
    assert report_stylesheet().strip() in page
