"""The `cau` command as an operator uses it: real processes, real signals, one shared store."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cau
from tests.support import journal_rows


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def journal(cau: Cau) -> list[dict[str, Any]]:
    return journal_rows(cau.home / "data" / "cau.db")


def test_run_sandbox_and_its_json_report(cau: Cau) -> None:
    out = cau("run", "sandbox", "--speed", "300", "--output", "json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for key in ("run_id", "cluster", "status", "started", "finished", "nodes"):
        assert key in report
    assert report["cluster"] == "sandbox" and report["status"] == "Succeeded"
    assert len(report["nodes"]) == 4
    for node in report["nodes"]:
        assert node["status"] == "Succeeded" and node["maintenance_seconds"] > 0
        assert {"id", "title", "status"} <= set(node["updates"][0])
        assert all(u["status"] == "Succeeded" for u in node["updates"])


def test_text_run_shows_progress_and_summary(cau: Cau) -> None:
    out = cau("run", "sandbox", "--speed", "300")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for fragment in (
        "node3: entering maintenance",
        "node3: restarting",
        "node3: Succeeded",
        "run finished: Succeeded",
        "Workload availability",
    ):
        assert fragment in text, fragment
    # second-order updates: a second pass happens after the first install and restart
    assert "installing 1 update(s) with sandbox (pass 2)" in text


def test_reports_in_every_format(cau: Cau, tmp_path: Path) -> None:
    assert cau("run", "sandbox", "--speed", "300").returncode == 0
    summaries = cau.json("report", "sandbox")
    assert len(summaries) == 1 and summaries[0]["status"] == "Succeeded"
    detailed = json.loads(cau("report", "sandbox", "--last", "--detailed", "--format", "json").stdout)
    assert detailed[0]["nodes"][0]["steps"]
    rows = list(csv.DictReader(io.StringIO(cau("report", "sandbox", "--format", "csv", "--detailed").stdout)))
    assert {r["node"] for r in rows} == {"node1", "node2", "node3", "node4"}
    assert all(r["update_status"] == "Succeeded" for r in rows)
    html = tmp_path / "r.html"
    out = cau("report", "sandbox", "--last", "--format", "html", "-o", str(html))
    assert out.returncode == 0 and "<svg" in html.read_text()
    text = cau("report", "sandbox", "--last", "--detailed").stdout
    assert "cau-node-agent-1.1" in text and "Succeeded" in text
    assert cau.json("report", "sandbox", "--since", "2999-01-01") == []
    bad = cau("report", "sandbox", "--since", "yesterday")
    assert bad.returncode == 1 and "--since" in bad.stderr


def test_invalid_profile_names_key_and_file_and_starts_nothing(cau: Cau, tmp_path: Path) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text("max_retries_per_node = 99\nfailback = 'immediate'\n")
    out = cau("run", "sandbox", "--profile", str(profile))
    assert out.returncode == 1
    assert str(profile) in out.stderr
    assert "max_retries_per_node" in out.stderr and "failback: unknown option" in out.stderr
    assert cau.json("report", "sandbox") == []
    assert not (cau.home / "data" / "sandbox" / "sandbox.json").exists() or cau.json("sandbox", "show")
    flag = cau("run", "sandbox", "--failback-mode", "later")
    assert flag.returncode == 1 and "--failback-mode" in flag.stderr


def test_unknown_cluster_and_json_errors(cau: Cau) -> None:
    out = cau("run", "prod")
    assert out.returncode == 1 and "unknown cluster 'prod'" in out.stderr and "sandbox" in out.stderr
    err = cau("status", "prod", "--output", "json")
    assert err.returncode == 1 and json.loads(err.stdout)["error"]["code"] == "not_found"


def test_scan_lists_updates_and_changes_nothing(cau: Cau) -> None:
    scan = cau.json("scan", "sandbox")
    by_node = {n["node"]: n for n in scan["nodes"]}
    assert set(by_node) == {"node1", "node2", "node3", "node4"}
    assert "bmc-firmware-2.14" in {u["id"] for u in by_node["node3"]["updates"]}
    # first-order only: the second-order update is not applicable yet
    assert "cau-node-agent-1.1" not in {u["id"] for n in scan["nodes"] for u in n["updates"]}
    shown = cau.json("sandbox", "show")
    assert all(n["installed"] == [] and not n["in_maintenance"] for n in shown["nodes"])
    assert cau.json("report", "sandbox") == []


def test_status_and_stop_without_a_run(cau: Cau) -> None:
    out = cau("status", "sandbox")
    assert out.returncode == 0 and "No Updating Run is in progress on cluster 'sandbox'" in out.stdout
    stop = cau("stop", "sandbox")
    assert stop.returncode == 1 and "no Updating Run is in progress" in stop.stderr


def test_plugins_lists_builtins_and_survives_a_broken_plugin(cau: Cau, tmp_path: Path) -> None:
    listed = cau.json("plugins")
    names = {(p["kind"], p["name"]) for p in listed}
    assert {("plug-in", "sandbox"), ("provider", "sandbox")} <= names
    assert all(p["ok"] for p in listed)
    # a third-party distribution whose plug-in cannot be imported
    site = tmp_path / "site"
    dist = site / "broken_cau_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-cau-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cau.plugins]\nbroken = no_such_module:Plugin\n")
    env_path = cau.env.get("PYTHONPATH", "")
    import os
    import subprocess
    import sys

    env = {**cau.env, "PYTHONPATH": f"{site}{os.pathsep}{env_path}"}
    out = subprocess.run(
        [sys.executable, "-m", "cau", "plugins"], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 1
    assert "broken" in out.stdout and "ModuleNotFoundError" in out.stdout and "no_such_module" in out.stdout
    run = subprocess.run(
        [sys.executable, "-m", "cau", "run", "sandbox", "--speed", "300"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr


def test_profile_validate(cau: Cau, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('max_parallel_nodes = "auto"\nreboot_timeout = "20m"\n')
    out = cau("profile", "validate", str(good))
    assert (
        out.returncode == 0
        and 'reboot_timeout = "20m"' in out.stdout
        and "max_retries_per_node = 3" in out.stdout
    )


@pytest.mark.slow
def test_second_coordinator_is_refused_and_stop_is_graceful(cau: Cau) -> None:
    first = cau.start("run", "sandbox", "--speed", "4")
    wait_for(lambda: cau.json("status", "sandbox")["active"], what="the run to start")
    second = cau("run", "sandbox")
    assert second.returncode == 6
    assert f"pid {first.pid}" in second.stderr and "cau stop sandbox" in second.stderr
    # wait until the first node is being worked on, then stop from "another terminal"
    wait_for(
        lambda: any(r["kind"] == "intent" and r["step"] == "enter_maintenance" for r in journal(cau)),
        what="a node entering maintenance",
    )
    stop = cau("stop", "sandbox", "--wait", "--reason", "change freeze")
    assert stop.returncode == 0, stop.stderr
    assert first.wait(timeout=120) == 5  # Canceled
    report = cau.json("report", "sandbox", "--last", "--detailed")[0]
    assert report["status"] == "Canceled" and "change freeze" in report["message"]
    statuses = [n["status"] for n in report["nodes"]]
    assert statuses[0] in ("Succeeded", "Canceled") and statuses[1:] == ["Canceled"] * 3
    shown = cau.json("sandbox", "show")
    assert not any(n["in_maintenance"] for n in shown["nodes"])
    assert cau.json("status", "sandbox")["lock"] is None


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(cau: Cau) -> None:
    proc = cau.start("run", "sandbox", "--speed", "20")

    def second_node_busy() -> bool:
        rows = journal(cau)
        finished = [r for r in rows if r["kind"] == "node_finished"]
        return bool(finished) and any(
            r["kind"] == "intent" and r["node"] != finished[0]["node"] and r["step"] in ("install", "restart")
            for r in rows
        )

    wait_for(second_node_busy, timeout=90, what="the second node to be installing or restarting")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    status = cau("status", "sandbox")
    assert "interrupted" in status.stdout  # no coordinator, the run is unfinished
    before = cau.json("sandbox", "show")
    assert any(n["in_maintenance"] or n["state"] == "down" for n in before["nodes"])

    resumed = cau("run", "sandbox", "--speed", "100")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run" in resumed.stdout
    report = cau.json("report", "sandbox", "--detailed")
    assert len(report) == 1 and report[0]["status"] == "Succeeded"  # one run, finished by its resume
    shown = cau.json("sandbox", "show")
    for n in shown["nodes"]:
        assert n["restarts"] == 1 and not n["in_maintenance"] and n["state"] == "up", n
        assert len(n["installed"]) >= 4
    installed = [
        (r["node"], res["update_id"])
        for r in journal(cau)
        if r["kind"] == "outcome" and r["step"] == "install"
        for res in r["data"]["results"]
        if res["outcome"] == "Succeeded" and "observed" not in res["message"]
    ]
    assert len(installed) == len(set(installed))  # nothing installed twice


@pytest.mark.slow
def test_status_watch_follows_a_run_to_its_end(cau: Cau) -> None:
    run = cau.start("run", "sandbox", "--speed", "40")
    wait_for(lambda: cau.json("status", "sandbox")["active"], what="the run to start")
    watch = cau("status", "sandbox", "--watch", timeout=180)
    assert watch.returncode == 0, watch.stderr
    assert "node1: Succeeded" in watch.stdout and "run finished: Succeeded" in watch.stdout
    assert run.wait(timeout=60) == 0
    assert cau.json("sandbox", "reset") == {"cluster": "sandbox", "reset": True}


@pytest.mark.slow
def test_after_a_killed_coordinator_cau_says_whose_maintenance_it_is(cau: Cau) -> None:
    # The coordinator dies right after node3 entered maintenance. cau's journal says it put node3
    # there: `cau node resume` must point to the run that will take it out, not to "someone else",
    # and the next run resumes that run instead of calling node3 "not put there by cau".
    crashed = subprocess.run(
        [sys.executable, "-m", "cau", "run", "sandbox", "--speed", "100"],
        env={**cau.env, "CAU_TEST_CRASH_AFTER": "outcome:enter_maintenance/1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert cau.json("sandbox", "show")["nodes"][2]["in_maintenance"]
    resume = cau("node", "resume", "sandbox", "node3")
    assert resume.returncode == 1
    assert "is not finished" in resume.stderr and "cau run sandbox" in resume.stderr
    assert "someone else" not in resume.stderr
    finish = cau("run", "sandbox", "--speed", "300")
    assert finish.returncode == 0, finish.stdout + finish.stderr
    assert "resuming run" in finish.stdout + finish.stderr
    assert "not put there by cau" not in finish.stdout + finish.stderr
    assert not any(n["in_maintenance"] for n in cau.json("sandbox", "show")["nodes"])


def _audit(cau: Cau) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{cau.home / 'data' / 'cau.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM audit ORDER BY id")]
    finally:
        db.close()


@pytest.mark.slow
def test_the_cli_s_runs_and_stops_are_audited_with_who_and_where(cau: Cau) -> None:
    assert cau("run", "sandbox", "--speed", "300").returncode == 0
    started = [e for e in _audit(cau) if e["action"] == "run.start"]
    assert len(started) == 1 and started[0]["target"] == "sandbox"
    assert started[0]["actor"].endswith(" (cli)") and "@" in started[0]["actor"]
    assert json.loads(started[0]["detail"])["run_id"]
    assert cau("sandbox", "reset").returncode == 0
    cau.start("run", "sandbox", "--speed", "4")
    wait_for(lambda: cau.json("status", "sandbox")["active"], what="the run to start")
    assert cau("stop", "sandbox", "--wait", "--reason", "freeze").returncode == 0
    stops = [e for e in _audit(cau) if e["action"] == "run.stop"]
    assert len(stops) == 1 and stops[0]["actor"].endswith(" (cli)")
    assert json.loads(stops[0]["detail"])["reason"] == "freeze"


def test_a_run_from_the_cli_says_who_started_it_in_its_report(cau: Cau) -> None:
    import getpass
    import socket

    me = f"{getpass.getuser()}@{socket.gethostname()} (cli)"
    run = cau("run", "sandbox", "--speed", "300")
    assert run.returncode == 0, run.stderr
    assert f"by {me}" in run.stdout  # the summary `cau run` ends with
    assert cau.json("report", "sandbox")[0]["started_by"] == me
    detailed = json.loads(cau("report", "sandbox", "--last", "--detailed", "--format", "json").stdout)
    assert detailed[0]["started_by"] == me
    assert f"by {me}" in cau("report", "sandbox", "--last", "--detailed").stdout
    assert me in cau("report", "sandbox").stdout  # the table of runs
    rows = list(csv.DictReader(io.StringIO(cau("report", "sandbox", "--format", "csv").stdout)))
    assert rows[0]["started_by"] == me
    html = cau("report", "sandbox", "--last", "--format", "html").stdout
    assert f'<dd class="started-by">{me}</dd>' in html


def test_cau_session_lists_and_ends_a_dashboard_session(cau: Cau) -> None:
    from cau.domain.access import Role
    from cau.store.access import AccessStore
    from cau.store.sqlite import SqliteFile
    from cau.views import SessionView

    assert "No one is signed in" in cau("session", "list").stdout
    # `cau serve`'s side: a dashboard user signs in (its own connection to the store)
    server = AccessStore(SqliteFile(cau.home / "data" / "cau.db"))
    try:
        server.set_password("alice", Role.OPERATOR, "correct horse battery")
        alice = server.check_password("alice", "correct horse battery")
        assert alice is not None
        cookie, _ = server.create_session(alice, client="192.0.2.7")
        (listed,) = [SessionView.model_validate(s) for s in cau.json("session", "list")]
        assert (listed.name, listed.role, listed.via, listed.client) == (
            "alice",
            Role.OPERATOR,
            "password",
            "192.0.2.7",
        )
        text = cau("session", "list").stdout
        assert listed.handle in text and "alice" in text and "192.0.2.7" in text
        ended = cau("session", "end", listed.handle)
        assert ended.returncode == 0 and f"session {listed.handle} of alice" in ended.stdout
        assert server.check_session(cookie) is None  # her next request: 401
        again = cau("session", "end", listed.handle)
        assert again.returncode == 1 and "cau session list" in again.stderr
    finally:
        server.close()
    (entry,) = [e for e in _audit(cau) if e["action"] == "session.end"]
    assert entry["target"] == listed.handle and entry["actor"].endswith(" (cli)") and "@" in entry["actor"]
    assert json.loads(entry["detail"])["name"] == "alice"


def test_run_with_a_closed_window_says_when_it_opens_and_touches_no_node(cau: Cau) -> None:
    opens = datetime.now(UTC) + timedelta(hours=12)
    window = f"daily@{opens:%H:%M} for 1h"
    out = cau("run", "sandbox", "--speed", "300", "--window", window)
    assert out.returncode == 7, out.stdout + out.stderr  # paused
    said = " ".join((out.stdout + out.stderr).split())  # the message may be wrapped
    assert "OutsideMaintenanceWindow" in said and f"it opens next at {opens:%Y-%m-%d %H:%M} UTC" in said
    assert "in the window resumes it" in said
    assert not any(r["kind"] == "node_started" for r in journal(cau))
    assert not any(n["in_maintenance"] for n in cau.json("sandbox", "show")["nodes"])
    status = cau("status", "sandbox")
    assert "Paused" in status.stdout and "OutsideMaintenanceWindow" in " ".join(status.stdout.split())


def test_run_inside_its_window_completes(cau: Cau) -> None:
    opened = datetime.now(UTC) - timedelta(minutes=1)
    out = cau(
        "run", "sandbox", "--speed", "300", "--window", f"daily@{opened:%H:%M} for 2h", "--output", "json"
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["status"] == "Succeeded" and report["pauses"] == []
    assert report["profile"]["window"] == f"daily@{opened:%H:%M} for 2h in UTC"


def test_a_bad_window_names_the_part_and_shows_an_example(cau: Cau) -> None:
    out = cau("run", "sandbox", "--window", "daily@25:00 for 1h")
    assert out.returncode != 0
    said = " ".join(out.stderr.split())
    assert "'25:00' is not a time of day" in said and "daily@01:00 for 4h in Europe/Berlin" in said
    assert not journal(cau)


def test_check_says_ready_warns_or_fails_in_text_json_and_its_exit_code(cau: Cau) -> None:
    from cau.readiness import ReadinessReport
    from tests.support import node, spec, write_cluster

    ready = cau("check", "sandbox")
    assert ready.returncode == 0, ready.stderr
    assert "pass quorum: 4 of 4 votes (3 needed) online" in ready.stdout
    assert "n/a  no-automatic-updates: the sandbox cluster's nodes are simulated" in ready.stdout
    assert "ready: every rule passes" in ready.stdout

    write_cluster(cau.home, spec([node("n1"), node("n2", online=False), node("n3"), node("n4")]), name="gap")
    write_cluster(cau.home, spec([node("n1"), node("n2", in_maintenance=True), node("n3")]), name="held")
    warned = cau("check", "gap")
    assert warned.returncode == 3, warned.stdout + warned.stderr
    assert "WARN nodes-online [n2]: node(s) n2 are not online" in warned.stdout
    assert "fix: bring n2 back online" in warned.stdout
    assert "1 warning(s): a run would start and record them" in warned.stdout

    failed = cau("check", "held", "--output", "json")
    assert failed.returncode == 4, failed.stdout + failed.stderr
    report = ReadinessReport.model_validate_json(failed.stdout)
    assert [(r.rule, r.nodes) for r in report.failures] == [("nodes-in-maintenance", ["n2"])]
    assert report.cluster == "held" and report.warnings == []

    bad = cau.home / "bad.toml"
    bad.write_text('warn_after = "2h"\nstop_after = "1h"\n')
    invalid = cau("check", "sandbox", "--profile", str(bad), "--output", "json")
    assert invalid.returncode == 4
    (problem,) = ReadinessReport.model_validate_json(invalid.stdout).failures
    assert problem.rule == "profile-valid" and "warn_after must be shorter than stop_after" in problem.detail

    unknown = cau("check", "nosuch", "--output", "json")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["error"]["code"] == "not_found"


def test_run_dry_run_shows_batches_and_a_prediction_and_starts_nothing(cau: Cau) -> None:
    out = cau("run", "sandbox", "--dry-run", "--max-parallel-nodes", "auto")
    assert out.returncode == 0, out.stderr
    assert "predicted duration" in out.stdout and "rough: no history" in out.stdout
    assert "1. node" in out.stdout and "batches" in out.stdout
    assert cau.json("status", "sandbox")["active"] is False and cau.json("report", "sandbox") == []
    refused = cau(
        "run", "sandbox", "--dry-run", "--stop-after", "1m", "--on-overrun", "refuse", "--output", "json"
    )
    forecast = json.loads(refused.stdout)
    assert forecast["overruns"][0]["limit"] == "stop_after" and forecast["on_overrun"] == "refuse"
