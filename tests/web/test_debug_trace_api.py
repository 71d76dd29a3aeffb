"""GET /api/v1/clusters/{cluster}/debug-trace: the debug trace as a zip, for admins only, audited."""

from __future__ import annotations

import io
import json
import zipfile

from tests.web.conftest import Api
from tests.web.test_api import wait_finished


def test_an_admin_downloads_the_runs_debug_trace_and_it_is_audited(api: Api) -> None:
    started = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    wait_finished(api, run_id)

    assert api.call("GET", "/api/v1/clusters/quick/debug-trace", role="operator").status_code == 403
    got = api.call("GET", "/api/v1/clusters/quick/debug-trace")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/zip"
    assert got.headers["x-cau-missing"] == "0"
    assert 'filename="cau-debug-trace-quick-' in got.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(got.content)) as zf:
        files = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(files["manifest.json"])
    assert manifest["run_id"] == run_id and manifest["created_by"] == "token:test-admin"
    events = api.call("GET", f"/api/v1/runs/{run_id}/events", role="viewer").text
    journal = files["run/journal.jsonl"].decode().splitlines()
    assert len(journal) == events.count("\nid: ") + events.startswith("id: ") > 5
    assert json.loads(files["run/report.json"])["run_id"] == run_id

    audit = api.call("GET", "/api/v1/audit?action=cluster.debug_trace").json()
    assert [(a["actor"], a["target"]) for a in audit] == [("token:test-admin", "quick")]
    assert audit[0]["detail"]["run_id"] == run_id

    unknown = api.call("GET", "/api/v1/clusters/quick/debug-trace?run=nosuch")
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["error"]["message"]
