"""The dashboard's rough edges (issue 11 #20), as a user meets them: the report detail is part of
the page, profile options read as written, each role sees only the controls it can use, and
/favicon.ico is there."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser

import httpx

from tests.web.conftest import Api
from tests.web.test_api import wait_finished
from tests.web.test_api_docs import sign_in


def pages_of(api: Api, role: str, paths: list[str]) -> dict[str, str]:
    async def go(client: httpx.AsyncClient) -> dict[str, str]:
        await sign_in(client, api.tokens[role])
        out = {}
        for path in paths:
            page = await client.get(path)
            assert page.status_code == 200, (role, path, page.text[:300])
            out[path] = page.text
        return out

    return api.run(go)


def test_the_report_detail_is_part_of_the_page(api: Api) -> None:
    run_id = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={}).json()["run_id"]
    nodes = [n["name"] for n in wait_finished(api, run_id)["nodes"]]
    page = pages_of(api, "viewer", [f"/reports/{run_id}"])[f"/reports/{run_id}"]
    assert "<iframe" not in page
    assert '<link rel="stylesheet" href="/static/report.css">' in page
    detail = page.split('<div class="cau-report">', 1)[1]
    assert re.findall(r'<td class="name">([^<]+)</td>', detail)[: len(nodes)] == nodes
    assert "<svg" in detail  # the timeline
    style = api.call("GET", "/static/report.css", role=None)
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    assert ".cau-report table" in style.text


def test_profile_options_read_as_they_were_written(api: Api) -> None:
    options = {"pre_update_script": "echo 'héllo' && test 1 < 2", "node_order": ["n2", "n1"]}
    made = api.call("POST", "/api/v1/profiles", json={"name": "quoted", "options": options})
    assert made.status_code == 201, made.text
    pages = pages_of(api, "admin", ["/profiles/quoted", "/profiles"])
    edit = pages["/profiles/quoted"]
    assert "\\u00" not in edit and "\\u00" not in pages["/profiles"]
    textarea = re.search(r'<textarea id="options"[^>]*>(.*?)</textarea>', edit, re.S)
    assert textarea is not None and json.loads(html.unescape(textarea.group(1))) == options
    assert "echo 'héllo' && test 1 < 2" in html.unescape(pages["/profiles"])  # the list, too


class Controls(HTMLParser):
    """What a page offers to do: its actions (data-action, data-submit) and the fields a user could
    fill, leaving out the filters (forms sent with GET) and signing out."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()
        self.form: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.form = a
        for key in ("data-action", "data-submit"):
            if a.get(key):
                self.found.add(f"{key[5:]}:{a[key]}")
        harmless = self.form is not None and (
            (self.form.get("method") or "").lower() == "get"
            or self.form.get("action") in ("/logout", "/login")
        )
        fillable = tag in ("input", "select", "textarea") and a.get("type") not in ("hidden", "submit")
        if fillable and not harmless and "readonly" not in a:
            self.found.add(f"field:{a.get('id') or a.get('name')}")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.form = None


OPERATOR_ACTIONS = {
    "action:preview",
    "action:check",
    "action:open-dialog",
    "action:close-dialog",
    "action:stop-run",
    "submit:apply",
}


def test_each_role_sees_only_the_controls_it_can_use(api: Api) -> None:
    api.call("POST", "/api/v1/profiles", json={"name": "p1", "options": {"no_restart": True}})
    run_id = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={}).json()["run_id"]
    wait_finished(api, run_id)
    paths = ["/clusters", "/clusters/quick", f"/runs/{run_id}", "/jobs", "/reports", f"/reports/{run_id}"]
    paths += ["/profiles", "/profiles/p1", "/api/docs"]

    def controls(role: str) -> set[str]:
        seen: set[str] = set()
        for text in pages_of(api, role, paths).values():
            parser = Controls()
            parser.feed(text)
            seen |= parser.found
        return seen

    assert controls("viewer") == set()
    operator = controls("operator")
    assert {"action:preview", "submit:apply"} <= operator
    assert {c for c in operator if c.startswith(("action:", "submit:"))} <= OPERATOR_ACTIONS
    assert {"submit:save-profile", "action:delete-profile"} <= controls("admin")
    cluster = pages_of(api, "operator", ["/clusters/quick"])["/clusters/quick"]
    assert "Create or modify a run profile" not in cluster  # only admins change profiles


def test_the_favicon_is_served_and_linked(api: Api) -> None:
    icon = api.call("GET", "/favicon.ico", role=None)
    assert icon.status_code in (301, 302, 307, 308)
    target = icon.headers["location"]
    svg = api.call("GET", target, role=None)
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.text.lstrip().startswith("<svg")
    login = api.call("GET", "/login", role=None).text
    assert f'<link rel="icon" href="{target}" type="image/svg+xml">' in login


def test_the_cluster_page_shows_its_self_updating_role_with_the_controls_each_role_may_use(api: Api) -> None:
    page = pages_of(api, "admin", ["/clusters/quick"])["/clusters/quick"]
    assert 'data-role="add"' in page  # no role yet: admins may add one
    added = api.call("POST", "/api/v1/clusters/quick/role", json={"schedule": "daily@03:00"})
    assert added.status_code == 201, added.text
    pages = {role: pages_of(api, role, ["/clusters/quick"])["/clusters/quick"] for role in RANKS}
    for text in pages.values():
        assert '<strong id="role-owner">n1</strong>' in text
        assert "Schedule: every day at 03:00 UTC" in text
    assert "data-role=" not in pages["viewer"]
    assert 'data-role="update-now"' in pages["operator"] and 'data-role="disable"' not in pages["operator"]
    assert 'data-role="update-now"' in pages["admin"] and 'data-role="disable"' in pages["admin"]


RANKS = ("viewer", "operator", "admin")
