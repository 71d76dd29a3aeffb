"""Compliance end to end in a real headless Chromium against a real `cau serve` (issue 13 part 7):
a baseline made through the API, a scan from the dashboard, NonCompliant nodes, VMM's Remediate
dialog with one update unticked and "do not restart", the run followed to its end, and the view
after it: what was installed PendingReboot, the unticked update still NonCompliant.
Screenshots go to tests/artifacts/browser/ (compliance.png: the Compliance view after remediation).

Reproduce: .venv/bin/pytest tests/web/test_browser_compliance.py -m slow -v   (needs /usr/bin/chromium)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.web.conftest import Server
from tests.web.test_browser import ARTIFACTS, CHROMIUM

pytestmark = pytest.mark.slow  # no skip: without Chromium this fails, as the house rules want

CONFIG = """
[clusters.sandbox]
provider = "sandbox"
[clusters.sandbox.options]
speed = 300
"""


def statuses(page: Any, node: str) -> dict[str, str]:
    """What the Compliance view shows for one node: update key -> status."""
    rows = page.locator(f'details.node[data-node="{node}"] tr[data-update]')
    return {
        rows.nth(i).get_attribute("data-update"): rows.nth(i).get_attribute("data-status")
        for i in range(rows.count())
    }


def test_scan_remediate_and_see_pending_reboot_in_the_dashboard(serve: Callable[[str], Server]) -> None:
    from playwright.sync_api import expect, sync_playwright

    server = serve(CONFIG)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    server.request(
        "POST", "/api/v1/baselines", {"name": "all-updates", "rules": [{"kind": "all", "plugin": "sandbox"}]}
    )
    server.request(
        "POST", "/api/v1/baselines/all-updates/assignments", {"kind": "cluster", "name": "sandbox"}
    )

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.goto(f"{server.url}/login?next=%2Fcompliance")
        page.fill("#token", server.token)
        page.click("text=Sign in with the token")
        expect(page).to_have_url(f"{server.url}/compliance")

        # Before the first scan: Unknown, never scanned. Scan now, from the dashboard.
        row = page.locator('#compliance tr[data-cluster="sandbox"]')
        expect(row).to_have_attribute("data-status", "Unknown")
        expect(row).to_contain_text("never scanned")
        row.locator("button:has-text('Scan now')").click()
        expect(row).to_have_attribute("data-status", "NonCompliant")  # the page reloads after the scan
        expect(row.locator(".node-status")).to_have_count(4)
        expect(row.locator('.node-status[data-status="NonCompliant"]')).to_have_count(4)
        expect(row).not_to_contain_text("never scanned")
        page.screenshot(path=str(ARTIFACTS / "compliance-clusters.png"), full_page=True)

        # The cluster's view: each node, its baseline, its updates.
        row.locator("a:has-text('sandbox')").click()
        expect(page).to_have_url(f"{server.url}/compliance/sandbox")
        expect(page.locator("details.node")).to_have_count(4)
        before = statuses(page, "node1")
        unticked = next(k for k in before if k.startswith("sandbox:nginx-"))
        assert set(before.values()) == {"NonCompliant"}, before

        # VMM's Update Remediation dialog: everything ticked at first; untick one update, no restart.
        page.click("#remediate-button")
        dialog = page.locator("#remediate-dialog")
        expect(dialog).to_be_visible()
        boxes = dialog.locator('input[name="update"]')
        assert boxes.count() >= len(before)
        for i in range(boxes.count()):
            expect(boxes.nth(i)).to_be_checked()
        expect(dialog.locator('input[name="baseline"][value="all-updates"]')).to_be_checked()
        expect(dialog.locator("#move-live")).to_be_checked()
        dialog.locator("#remediate-standalone").check()  # standalone hosts: no cluster options...
        expect(dialog.locator("#standalone-hosts")).to_be_visible()
        expect(dialog.locator("#cluster-options")).to_be_hidden()
        expect(dialog.locator("#standalone-hosts")).to_contain_text("its roles are not moved")
        dialog.locator("#remediate-standalone").uncheck()  # ...this time the cluster, node by node
        expect(dialog.locator("#cluster-options")).to_be_visible()
        dialog.locator(f'input[name="update"][value="{unticked}"]').uncheck()
        dialog.locator("#remediate-no-restart").check()
        page.screenshot(path=str(ARTIFACTS / "compliance-remediate-dialog.png"))
        dialog.locator("button[type=submit]").click()

        # The run's page, followed live to its end.
        page.wait_for_url(f"{server.url}/runs/*")
        run_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("#live-state")).to_have_text("Run ended: Succeeded", timeout=120_000)

        # After it: what was installed waits for a restart; the unticked update is still missing.
        # (The run's end rescans the cluster: the view may need a moment to show it.)
        page.goto(f"{server.url}/compliance/sandbox")
        deadline = time.monotonic() + 30
        while statuses(page, "node1").get(unticked) != "NonCompliant" or "PendingReboot" not in set(
            statuses(page, "node1").values()
        ):
            assert time.monotonic() < deadline, statuses(page, "node1")
            time.sleep(0.5)
            page.reload()
        for node in ("node1", "node2", "node3", "node4"):
            after = statuses(page, node)
            for key in before if node == "node1" else ():
                assert after[key] == ("NonCompliant" if key == unticked else "PendingReboot"), (node, after)
            installed = {k for k, s in after.items() if s == "PendingReboot"}
            assert installed, (node, after)
            # besides the unticked update, only second-order updates (seen once others are
            # installed) may still be missing: nothing that was offered and ticked
            missing = {k for k, s in after.items() if s == "NonCompliant"}
            assert missing - {unticked} <= set(after) - set(before) - installed, (node, after)
        expect(page.locator("#cluster-status")).to_contain_text("NonCompliant")
        page.screenshot(path=str(ARTIFACTS / "compliance.png"), full_page=True)

        # The cluster's page sums it up and links to the view.
        page.goto(f"{server.url}/clusters/sandbox")
        expect(page.locator("#compliance-summary a[href='/compliance/sandbox']")).to_be_visible()
        browser.close()

    assert [m for m in console if "Content Security Policy" in m or "pageerror" in m] == []
    audit = server.request("GET", "/api/v1/audit?action=remediate")
    assert [(e["target"], e["detail"]["run_id"], e["detail"]["exclude"]) for e in audit] == [
        ("sandbox", run_id, [unticked])
    ]
    assert audit[0]["detail"]["options"]["no_restart"] is True
    server.stop()
