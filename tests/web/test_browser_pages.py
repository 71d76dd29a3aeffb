"""In a real headless Chromium against a real `cau serve` (issue 11 #4, #20): the API explorer
renders under the dashboard's Content-Security-Policy with nothing from another host; the report
detail is part of the page (no frame, no scroll inside the scroll); probe summaries read as text.

Reproduce: .venv/bin/pytest tests/web/test_browser_pages.py -m slow -v   (needs /usr/bin/chromium)
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tomli_w

from tests.probe_servers import HttpServer
from tests.web.conftest import Server
from tests.web.test_browser import ARTIFACTS, CHROMIUM, pytestmark  # noqa: F401  (slow, needs Chromium)


@dataclass
class Browser:
    """One signed-in page, and what the browser saw: console messages and the hosts it asked."""

    page: Any
    server: Server
    console: list[str] = field(default_factory=list)
    hosts: set[str] = field(default_factory=set)

    @property
    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "Content Security Policy" in m or "Content-Security-Policy" in m]


@pytest.fixture
def browser_on(serve: Callable[[str], Server]) -> Iterator[Callable[[str], Browser]]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
        )

        def start(config: str) -> Browser:
            server = serve(config)
            context = chromium.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(30_000)
            seen = Browser(page, server)
            page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: seen.console.append(f"pageerror: {e}"))
            page.on("request", lambda r: seen.hosts.add(urlsplit(r.url).netloc))
            page.goto(f"{server.url}/login")
            page.fill("#token", server.token)
            page.click("text=Sign in with the token")
            page.wait_for_url(f"{server.url}/clusters")
            return seen

        yield start
        chromium.close()


SANDBOX = '[clusters.sandbox]\nprovider = "sandbox"\n[clusters.sandbox.options]\nspeed = 200\n'


def test_the_api_explorer_renders_every_operation_under_the_dashboard_policy(
    browser_on: Callable[[str], Browser],
) -> None:
    from playwright.sync_api import expect

    b = browser_on(SANDBOX)
    operations = b.server.request("GET", "/api/v1/openapi.json")["paths"]
    count = sum(
        len([m for m in item if m in ("get", "post", "put", "delete", "patch")])
        for item in operations.values()
    )
    b.page.goto(f"{b.server.url}/api/docs")
    expect(b.page.locator("#swagger-ui .opblock")).to_have_count(count)
    runs = b.page.locator('.opblock-post:has([data-path="/api/v1/clusters/{cluster}/runs"])')
    expect(runs).to_be_visible()
    # "Try it out" reads the API as the signed-in user
    clusters = b.page.locator('.opblock-get:has([data-path="/api/v1/clusters"])').first
    clusters.locator(".opblock-summary").click()
    clusters.locator("button.try-out__btn").click()
    clusters.locator("button.execute").click()
    expect(clusters.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")
    expect(clusters.locator(".live-responses-table tbody")).to_contain_text('"sandbox"')
    # ... and changes with the session's CSRF token (a POST without it would get 403 csrf_failed)
    validate = b.page.locator('.opblock-post:has([data-path="/api/v1/profiles/validate"])').first
    validate.locator(".opblock-summary").click()
    validate.locator("button.try-out__btn").click()
    validate.locator("textarea.body-param__text").fill('{"options": {"no_restart": true}}')
    validate.locator("button.execute").click()
    expect(validate.locator(".live-responses-table tbody .response-col_status")).to_have_text("200")
    expect(validate.locator(".live-responses-table tbody")).to_contain_text('"valid": true')
    assert b.csp_violations == []
    assert b.hosts == {urlsplit(b.server.url).netloc}  # nothing fetched from another host


def finished_run(server: Server, cluster: str = "sandbox") -> str:
    run_id: str = server.request("POST", f"/api/v1/clusters/{cluster}/runs", {})["run_id"]
    deadline = time.monotonic() + 120
    while server.request("GET", f"/api/v1/runs/{run_id}")["state"] == "Running":
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    return run_id


# Every element on the page that scrolls its own content, across or down (the page itself aside).
NESTED_SCROLLS = """() => Array.from(document.querySelectorAll("body *")).filter((e) => {
  const s = getComputedStyle(e);
  const down = /(auto|scroll)/.test(s.overflowY) && e.scrollHeight > e.clientHeight + 1;
  const across = /(auto|scroll)/.test(s.overflowX) && e.scrollWidth > e.clientWidth + 1;
  return down || across;
}).map((e) => e.tagName + "." + e.className)"""


def test_the_report_detail_is_part_of_the_page_with_every_table_in_full(
    browser_on: Callable[[str], Browser],
) -> None:
    from playwright.sync_api import expect

    b = browser_on(SANDBOX)
    run_id = finished_run(b.server)
    b.page.goto(f"{b.server.url}/reports/{run_id}")
    expect(b.page.locator("iframe")).to_have_count(0)
    report = b.page.locator("main .cau-report")
    expect(report.locator("svg").first).to_be_visible()
    tables = report.locator("table")
    assert tables.count() >= 3  # nodes, updates of each node, role availability
    nodes = [n["name"] for n in b.server.request("GET", f"/api/v1/reports/{run_id}")["nodes"]]
    assert tables.first.locator("td.name").all_inner_texts() == nodes
    width = b.page.viewport_size["width"]
    for i in range(tables.count()):
        box = tables.nth(i).bounding_box()
        if box is None:  # inside a closed <details>
            continue
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, (i, box)
    assert b.page.evaluate(NESTED_SCROLLS) == []
    # The report's own style applies: its figures are the report's big numbers, not the dashboard's.
    assert report.locator(".tile .v").first.evaluate("(e) => getComputedStyle(e).fontSize") == "24px"
    b.page.screenshot(path=str(ARTIFACTS / "report-inline.png"), full_page=True)
    assert b.csp_violations == []


def test_probe_summaries_read_as_text_in_the_run_s_events(browser_on: Callable[[str], Browser]) -> None:
    from playwright.sync_api import expect

    web = HttpServer().start()
    try:
        b = browser_on(
            SANDBOX
            + f'[[clusters.sandbox.probes]]\nrole = "web"\ntargets = ["{web.url}"]\ninterval = "50ms"\n'
        )
        run_id = finished_run(b.server)
        b.page.goto(f"{b.server.url}/runs/{run_id}")
        summaries = b.page.locator("#events tbody tr", has_text="probe_summary")
        expect(summaries.first).to_be_visible()
        text = summaries.first.locator("td").nth(3).inner_text()
        # e.g. "probe web-1 (web): 100.0 % of 211 checks answered, p99 1.2 ms (final)"
        assert re.fullmatch(
            r"probe \S+ \(web\): 100\.0 % of \d+ checks answered, p99 [\d.]+ ms \(final\)", text
        ), text
    finally:
        web.stop()


def test_the_cluster_page_checks_readiness_and_shows_the_failing_rule_with_its_fix(
    browser_on: Callable[[str], Browser], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    # a simulated cluster with a node left in maintenance by someone else: that rule fails
    spec = {"nodes": [{"name": "n1", "in_maintenance": True}, {"name": "n2"}, {"name": "n3"}], "roles": [],
            "updates": [{"id": "openssl"}]}  # fmt: skip
    (tmp_path / "maint.toml").write_text(tomli_w.dumps(spec))
    b = browser_on(
        '[clusters.branch]\nprovider = "sandbox"\n[clusters.branch.options]\nspec = "maint.toml"\n'
    )
    b.page.goto(f"{b.server.url}/clusters/branch")
    b.page.click("#check-button")
    summary = b.page.locator("#readiness-summary")
    expect(summary).to_contain_text("1 failed")
    failed = b.page.locator('#readiness-table tr[data-outcome="fail"]')
    expect(failed).to_have_count(1)
    row = failed.first.inner_text()
    assert "nodes-in-maintenance" in row and "n1" in row and "allow_nodes_in_maintenance" in row, row
    # what cannot be told on simulated nodes says so, rather than passing
    expect(b.page.locator('#readiness-table tr[data-rule="nodes-reachable"]')).to_have_attribute(
        "data-outcome", "not-applicable"
    )
    assert not b.csp_violations, b.csp_violations
