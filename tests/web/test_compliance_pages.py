"""The dashboard's compliance pages (issue 13 part 7): they render for every role from the same
views as the API, show each node → baseline → update, and offer each role only what it may do:
Scan now and Remediate to operators (Remediate only when something is NonCompliant), baselines and
exemptions to admins. The browser test drives them end to end."""

from __future__ import annotations

import re
from html import unescape

from tests.web.conftest import Api
from tests.web.test_compliance_api import make_baseline
from tests.web.test_dashboard_pages import Controls, pages_of

PAGES = ["/compliance", "/compliance/quick", "/baselines", "/exemptions", "/clusters/quick"]


def controls(api: Api, role: str) -> set[str]:
    seen: set[str] = set()
    for text in pages_of(api, role, PAGES).values():
        parser = Controls()
        parser.feed(text)
        seen |= parser.found
    return {c for c in seen if c.startswith(("action:", "submit:"))}


def test_the_pages_render_before_any_baseline_and_say_what_to_do(api: Api) -> None:
    pages = pages_of(api, "admin", PAGES)
    assert "No baseline applies to any cluster yet" in pages["/compliance"]
    assert "No baseline applies to quick" in pages["/compliance/quick"]
    assert 'id="remediate-button"' not in pages["/compliance/quick"]
    assert "No baselines yet." in pages["/baselines"] and "No exemptions." in pages["/exemptions"]
    assert "No baseline applies to this cluster" in pages["/clusters/quick"]
    assert '<a href="/compliance" class="on">Compliance</a>' in pages["/compliance"]  # the nav entry


def test_each_role_sees_only_the_compliance_controls_it_can_use(api: Api) -> None:
    make_baseline(api)
    assert api.call("POST", "/api/v1/compliance/quick/scan", role="operator").status_code == 200
    viewer = controls(api, "viewer")
    assert viewer == set()
    operator = controls(api, "operator")
    assert {"action:compliance-scan", "submit:remediate", "action:open-dialog"} <= operator
    assert not {c for c in operator if "baseline" in c or "exemption" in c or "group" in c}
    admin = controls(api, "admin")
    assert {
        "submit:baseline-create",
        "submit:baseline-add-rule",
        "submit:baseline-assign",
        "action:baseline-remove-rule",
        "action:baseline-unassign",
        "action:baseline-delete",
        "submit:group-set",
        "submit:exemption-create",
    } <= admin


def test_the_compliance_view_drills_down_to_each_update_and_the_dialog_offers_what_is_missing(
    api: Api,
) -> None:
    make_baseline(api)
    pages = pages_of(api, "operator", ["/compliance/quick"])
    assert "never scanned" in pages["/compliance/quick"]
    assert 'id="remediate-button"' not in pages["/compliance/quick"]  # nothing NonCompliant yet: Unknown
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    made = api.call(
        "POST",
        "/api/v1/exemptions",
        json={
            "update": "sandbox:openssl",
            "scope": {"kind": "node", "name": "n1"},
            "reason": "<b>vendor</b> says no",
        },
    )
    assert made.status_code == 201
    page = pages_of(api, "operator", ["/compliance/quick"])["/compliance/quick"]
    nodes = dict(re.findall(r'<details class="node" data-node="(\w+)" data-status="(\w+)"', page))
    assert nodes == {"n1": "NonCompliant", "n2": "NonCompliant", "n3": "NonCompliant"}
    n1 = page.split('data-node="n1"')[1].split('<details class="node"')[0]
    rows = dict(re.findall(r'<tr data-update="([^"]+)" data-status="(\w+)">', n1))
    assert rows == {"sandbox:kernel": "NonCompliant", "sandbox:openssl": "Exempt"}
    assert "&lt;b&gt;vendor&lt;/b&gt; says no (token:test-admin)" in n1  # the note, escaped
    # the dialog: the baseline ticked, each NonCompliant update once, ticked, with where it is missing
    dialog = page.split('<dialog id="remediate-dialog">')[1]
    assert re.findall(r'name="baseline" value="([^"]+)" checked', dialog) == ["all"]
    offered = re.findall(r'name="update" value="([^"]+)" checked>.*?missing on ([^·]+?) ·', dialog)
    assert offered == [("sandbox:kernel", "n1, n2, n3"), ("sandbox:openssl", "n2, n3")]
    assert "runs web" in dialog and "runs db" in dialog and "runs no roles" in dialog  # n1, n2, n3
    assert "its roles are not moved" in unescape(dialog)
    # the cluster page sums it up and links here
    cluster = pages_of(api, "viewer", ["/clusters/quick"])["/clusters/quick"]
    summary = cluster.split('id="compliance-summary"')[1].split("</div>")[0]
    assert 'data-compliance="NonCompliant"' in summary and '<a href="/compliance/quick">' in summary


def test_an_admin_s_exempt_link_fills_the_exemption_form(api: Api) -> None:
    make_baseline(api)
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    page = pages_of(api, "admin", ["/compliance/quick"])["/compliance/quick"]
    link = unescape(re.findall(r'<a href="(/exemptions\?[^"]+)">Exempt…</a>', page)[0])
    assert link == "/exemptions?update=sandbox%3Akernel&node=n1&baseline=all"
    form = pages_of(api, "admin", [link])[link]
    assert 'id="ex-update" name="update" required value="sandbox:kernel"' in form
    assert 'id="ex-name" name="name" required value="n1"' in form
    assert "<option selected>all</option>" in form
    assert "Exempt…" not in pages_of(api, "operator", ["/compliance/quick"])["/compliance/quick"]
