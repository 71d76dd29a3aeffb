"""End to end in a real headless Chromium against a real `cau serve` on loopback: sign in, preview,
apply from the dialog and watch every node reach Succeeded live, stop a second run, open and
export the report. Screenshots of the main pages go to tests/artifacts/browser/.

Reproduce: .venv/bin/pytest tests/web/test_browser.py -m slow -v   (needs /usr/bin/chromium)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import Server

CHROMIUM = os.environ.get("CAU_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "browser"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (.ci/run installs Debian's chromium package)",
    ),
]

CONFIG = """
[clusters.sandbox]
provider = "sandbox"
[clusters.sandbox.options]
speed = 120

[clusters.slow]
provider = "sandbox"
[clusters.slow.options]
speed = 4
"""


@pytest.fixture
def server(serve: Callable[[str], Server]) -> Server:
    return serve(CONFIG)


def test_dashboard_end_to_end(server: Server) -> None:
    from playwright.sync_api import expect, sync_playwright

    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)

    def shot(page: object, name: str) -> None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        csp_violations: list[str] = []

        def on_console(m: Any) -> None:
            print("console:", m.type, m.text)
            if "Content Security Policy" in m.text:
                csp_violations.append(m.text)

        page.on("console", on_console)
        page.on("pageerror", lambda e: print("pageerror:", e))

        # Signed out: any page sends to the sign-in page; a wrong token is refused.
        page.goto(f"{server.url}/clusters/sandbox")
        expect(page).to_have_url(f"{server.url}/login?next=%2Fclusters%2Fsandbox")
        shot(page, "01-sign-in")
        page.fill("#token", "cau_wrong_token")
        page.click("text=Sign in with the token")
        expect(page.locator(".callout.bad")).to_contain_text("unknown token")
        page.fill("#token", server.token)
        page.click("text=Sign in with the token")
        expect(page).to_have_url(f"{server.url}/clusters/sandbox")
        cookie = next(c for c in context.cookies() if c["name"] == "cau_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

        # An admin creates a run profile: validated (the bad key is named), then saved.
        page.goto(f"{server.url}/profiles/new")
        page.fill("#name", "no-restart")
        page.fill("#description", "install now, restart in the maintenance window")
        page.fill("#options", '{"no_restart": true, "max_parallel_nodes": "auto", "restart": 1}')
        page.click("text=Validate")
        expect(page.locator("#flash")).to_contain_text("restart: unknown option")
        page.fill("#options", '{"no_restart": true, "max_parallel_nodes": "auto"}')
        page.click("text=Validate")
        expect(page.locator("#flash")).to_contain_text("Valid.")
        page.click("button:has-text('Save')")
        expect(page).to_have_url(f"{server.url}/profiles/no-restart?saved=1")
        shot(page, "02a-profile")
        page.goto(f"{server.url}/clusters/sandbox")

        # The cluster: nodes and roles, then a preview.
        expect(page.locator("#nodes tbody tr")).to_have_count(4)
        expect(page.locator("#roles tbody tr")).to_have_count(8)
        page.click("#preview-button")
        expect(page.locator("#preview-table")).to_be_visible()
        expect(page.locator("#preview h2")).to_contain_text("update(s) on 4 node(s)")
        page.reload()  # the nodes table now shows the pending updates
        expect(page.locator("#nodes tbody tr").first).not_to_contain_text("preview to see")
        shot(page, "02-cluster-preview")
        page.click("#preview-button")
        expect(page.locator("#preview-table")).to_be_visible()

        # Apply from the dialog, with VMM's options; watch every node reach Succeeded live.
        page.click("#apply-button")
        dialog = page.locator("#apply-dialog")
        expect(dialog).to_be_visible()
        expect(page.locator("#profile option")).to_have_text(["(cluster default)", "no-restart"])
        page.fill("#max_parallel_nodes", "1")
        page.select_option("#move", "live")
        page.fill("#node_order", "node2")
        # The viewport only: a full-page shot would draw the modal's backdrop over part of the page.
        page.screenshot(path=str(ARTIFACTS / "03-apply-dialog.png"))
        dialog.locator("button[type=submit]").click()
        page.wait_for_url(f"{server.url}/runs/*")
        run_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#started-by")).to_have_text("token:e2e-0")  # who applied it
        expect(page.locator('#run-nodes tr[data-status="running"]')).to_have_count(1, timeout=60_000)
        expect(page.locator("#events tbody tr").first).to_be_visible()
        shot(page, "04-run-live")
        expect(page.locator("#live-state")).to_have_text("Run ended: Succeeded", timeout=120_000)
        expect(page.locator('#run-nodes tr[data-status="Succeeded"]')).to_have_count(4)
        assert page.locator("#events tbody tr").count() > 20  # the journal arrived event by event
        expect(page.locator("figure.timeline svg g.lane")).to_have_count(4)
        shot(page, "05-run-succeeded")

        # A second run, stopped from the dashboard.
        page.goto(f"{server.url}/clusters/slow")
        page.click("#apply-button")
        page.locator("#apply-dialog button[type=submit]").click()
        page.wait_for_url(f"{server.url}/runs/*")
        stopped_id = page.url.rsplit("/", 1)[1]
        expect(page.locator('#run-nodes tr[data-status="running"]')).to_have_count(1, timeout=60_000)
        # the next node, scanned ahead while the first works, waits for its turn and says so
        waiting = page.locator('#run-nodes tr[data-status="waiting"]')
        expect(waiting).to_have_count(1, timeout=60_000)
        expect(waiting).to_contain_text("waiting: its turn")
        page.once("dialog", lambda d: d.accept("e2e: change freeze"))
        page.click("#stop-button")
        expect(page.locator("#flash")).to_contain_text("Stop requested")
        expect(page.locator("#live-state")).to_contain_text("Run ended", timeout=120_000)
        expect(page.locator("#panel")).to_contain_text("StoppedByOperator")
        expect(page.locator('#run-nodes tr[data-status="Canceled"]').first).to_be_visible()
        shot(page, "06-run-stopped")

        # Jobs, reports, the report and its exports.
        page.goto(f"{server.url}/jobs")
        expect(page.locator("#jobs-recent")).to_contain_text(run_id)
        expect(page.locator("#jobs-recent")).to_contain_text(stopped_id)
        shot(page, "07-jobs")
        page.goto(f"{server.url}/reports?cluster=sandbox")
        expect(page.locator("#reports tbody tr")).to_have_count(1)
        shot(page, "08-reports")
        page.click(f"text={run_id}")
        expect(page).to_have_url(f"{server.url}/reports/{run_id}")
        expect(page.locator(".cau-report svg").first).to_be_visible()
        shot(page, "09-report")
        for fmt in ("html", "csv", "json"):
            with page.expect_download() as info:
                page.click(f"#export-{fmt}")
            target = ARTIFACTS / f"report.{fmt}"
            info.value.save_as(target)
            text = target.read_text()
            assert run_id in text and "node1" in text, fmt
        assert "<svg" in (ARTIFACTS / "report.html").read_text()

        # Admins see the audit trail: who started and stopped what.
        page.goto(f"{server.url}/admin")
        audit = page.locator("#audit")
        expect(audit).to_contain_text("run.start")
        expect(audit).to_contain_text("run.stop")
        expect(audit).to_contain_text("token:e2e")
        shot(page, "10-admin-audit")

        # A second browser signs in; the admin ends its session from the sessions table.
        other = browser.new_context().new_page()
        other.goto(f"{server.url}/login")
        other.fill("#token", server.token)
        other.click("text=Sign in with the token")
        expect(other).to_have_url(f"{server.url}/clusters")
        page.reload()
        rows = page.locator("#sessions tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.filter(has_text="this session")).to_have_count(1)
        page.once("dialog", lambda d: d.accept())
        rows.filter(has_not_text="this session").locator("button:has-text('End')").click()
        expect(rows).to_have_count(1)  # the page reloads without it
        other.goto(f"{server.url}/clusters")
        expect(other).to_have_url(f"{server.url}/login?next=%2Fclusters")  # signed out
        expect(page.locator("#audit")).to_contain_text("session.end")
        page.goto(f"{server.url}/clusters")
        shot(page, "00-clusters")
        browser.close()
    # Every page worked under the Content-Security-Policy (scripts from /static only)
    assert csp_violations == []

    # The CLI sees what the dashboard did (same store), and the server shuts down cleanly.
    status = subprocess.run(
        [sys.executable, "-m", "cau", "report", "sandbox", "--last", "--output", "json"],
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout)[0]["run_id"] == run_id
    assert json.loads(status.stdout)[0]["nodes"][0]["name"] == "node2"  # the dialog's node order
    server.stop()
