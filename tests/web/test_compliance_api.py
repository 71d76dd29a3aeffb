"""Compliance through the REST API (issue 13): each route's role, baselines and exemptions by admins,
scans and remediation by operators, every change audited as its caller, and the refusals."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any

import httpx
import pytest

from tests.web.conftest import Api
from tests.web.test_api import RANK, wait_finished

# (method, path, the least role allowed, a body that is harmless or invalid when allowed)
ROUTES: list[tuple[str, str, str, object]] = [
    ("GET", "/api/v1/compliance", "viewer", None),
    ("GET", "/api/v1/compliance/quick", "viewer", None),
    ("POST", "/api/v1/compliance/quick/scan", "operator", {"profile": "no-such-profile"}),
    ("GET", "/api/v1/compliance/quick/export?format=csv", "viewer", None),
    ("POST", "/api/v1/compliance/quick/remediate", "operator", {"options": {"max_parallel_nodes": 0}}),
    ("GET", "/api/v1/baselines", "viewer", None),
    ("POST", "/api/v1/baselines", "admin", {"name": "../x"}),
    ("GET", "/api/v1/baselines/nope", "viewer", None),
    ("DELETE", "/api/v1/baselines/nope", "admin", None),
    ("POST", "/api/v1/baselines/nope/rules", "admin", {"rules": []}),
    ("DELETE", "/api/v1/baselines/nope/rules/apt:openssl", "admin", None),
    ("POST", "/api/v1/baselines/nope/assignments", "admin", {"kind": "cluster", "name": "quick"}),
    ("DELETE", "/api/v1/baselines/nope/assignments/cluster/quick", "admin", None),
    ("GET", "/api/v1/cluster-groups", "viewer", None),
    ("PUT", "/api/v1/cluster-groups/g", "admin", {"clusters": ["nowhere"]}),
    ("DELETE", "/api/v1/cluster-groups/nope", "admin", None),
    ("GET", "/api/v1/exemptions", "viewer", None),
    ("POST", "/api/v1/exemptions", "admin", {"update": "no key", "scope": {"kind": "node", "name": "n1"}}),
    ("DELETE", "/api/v1/exemptions/nope", "admin", None),
]


@pytest.mark.parametrize(
    ("method", "path", "least", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_every_compliance_route_answers_401_without_credentials_and_403_below_its_role(
    api: Api, method: str, path: str, least: str, body: object
) -> None:
    kw = {"json": body} if body is not None else {}
    assert api.call(method, path, role=None, **kw).status_code == 401
    for role in RANK:
        got = api.call(method, path, role=role, **kw)
        if RANK.index(role) < RANK.index(least):
            assert got.status_code == 403, (role, got.text)
            assert got.json()["error"]["code"] == "forbidden"
        else:
            assert got.status_code not in (401, 403) and got.status_code < 500, (role, got.text)


def test_every_compliance_operation_of_the_document_is_in_the_table(api: Api) -> None:
    doc = api.call("GET", "/api/v1/openapi.json").json()
    ours = {
        f"{m.upper()} {p}"
        for p, item in doc["paths"].items()
        for m, op in item.items()
        if "compliance" in op.get("tags", [])
    }
    tested = set()
    for method, path, _, _ in ROUTES:
        real = path.split("?")[0]
        matches = {
            op
            for op in ours
            if op.split(" ")[0] == method
            and re.fullmatch(re.sub(r"\{\w+\}", "[^/]+", op.split(" ")[1]), real)
        }
        assert len(matches) == 1, (method, path, matches)
        tested |= matches
    assert tested == ours
    assert len(ours) == 19


def audit(api: Api, action: str) -> list[dict[str, Any]]:
    rows = api.call("GET", f"/api/v1/audit?action={action}").json()
    assert isinstance(rows, list)
    return rows


def settle(api: Api, cluster: str) -> None:
    """Until the cluster's run task is over: its end includes the compliance scan after the run."""
    job = api.app.state.ctx.worker.jobs[cluster]

    async def go(_client: httpx.AsyncClient) -> None:
        await asyncio.wait_for(asyncio.shield(job.task), 60)

    api.run(go)


def statuses(view: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {
        n["node"]: {u["update"]: u["status"] for b in n["baselines"] for u in b["updates"]}
        for n in view["nodes"]
    }


def make_baseline(api: Api, name: str = "all", cluster: str = "quick") -> None:
    made = api.call(
        "POST", "/api/v1/baselines", json={"name": name, "rules": [{"kind": "all", "plugin": "sandbox"}]}
    )
    assert made.status_code == 201, made.text
    assigned = api.call(
        "POST", f"/api/v1/baselines/{name}/assignments", json={"kind": "cluster", "name": cluster}
    )
    assert assigned.status_code == 200, assigned.text


def test_baselines_are_written_by_admins_and_every_change_is_audited(api: Api) -> None:
    body = {
        "name": "security",
        "description": "what the auditors ask for",
        "rules": [
            {"kind": "package", "plugin": "apt", "name": "openssl", "min_version": "3.0.15-1"},
            {"kind": "origin", "origin": "Debian-Security"},
        ],
    }
    refused = api.call("POST", "/api/v1/baselines", role="operator", json=body)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]["message"]
    made = api.call("POST", "/api/v1/baselines", json=body)
    assert made.status_code == 201, made.text
    assert [r["kind"] for r in made.json()["rules"]] == ["package", "origin"]
    assert made.json()["updated_by"] == "token:test-admin" and made.json()["revision"] == 1
    again = api.call("POST", "/api/v1/baselines", json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "name_taken"

    bad = api.call(
        "POST",
        "/api/v1/baselines",
        json={"name": "x", "rules": [{"kind": "package", "name": "a;rm", "min_version": "1"}]},
    )
    assert bad.status_code == 422 and "rules.0" in bad.json()["error"]["fields"][0]["field"]

    added = api.call(
        "POST", "/api/v1/baselines/security/rules", json={"rules": [{"kind": "hotfix", "id": "KB1001"}]}
    )
    assert added.status_code == 200 and added.json()["revision"] == 2
    assert [r["kind"] for r in added.json()["rules"]] == ["package", "origin", "hotfix"]
    removed = api.call("DELETE", "/api/v1/baselines/security/rules/apt:origin=Debian-Security")
    assert removed.status_code == 200 and [r["kind"] for r in removed.json()["rules"]] == [
        "package",
        "hotfix",
    ]
    missing = api.call("DELETE", "/api/v1/baselines/security/rules/apt:nothing")
    assert (
        missing.status_code == 404 and "apt:openssl" in missing.json()["error"]["message"]
    )  # names its rules

    nowhere = api.call(
        "POST", "/api/v1/baselines/security/assignments", json={"kind": "cluster", "name": "nowhere"}
    )
    assert nowhere.status_code == 404 and "nowhere" in nowhere.json()["error"]["message"]
    assigned = api.call("POST", "/api/v1/baselines/security/assignments", json={"kind": "node", "name": "n1"})
    assert assigned.json()["scopes"] == [{"kind": "node", "name": "n1"}]
    assert api.call("GET", "/api/v1/baselines/security", role="viewer").json()["scopes"] == [
        {"kind": "node", "name": "n1"}
    ]
    assert [b["name"] for b in api.call("GET", "/api/v1/baselines", role="viewer").json()] == ["security"]
    unassigned = api.call("DELETE", "/api/v1/baselines/security/assignments/node/n1")
    assert unassigned.status_code == 200 and unassigned.json()["scopes"] == []
    assert api.call("DELETE", "/api/v1/baselines/security/assignments/node/n1").status_code == 404

    assert api.call("DELETE", "/api/v1/baselines/security", role="operator").status_code == 403
    assert api.call("DELETE", "/api/v1/baselines/security").status_code == 204
    assert api.call("GET", "/api/v1/baselines/security").status_code == 404

    actions = [
        (e["action"], e["actor"], e["target"]) for e in reversed(api.call("GET", "/api/v1/audit").json())
    ]
    ours = [a for a in actions if a[0].startswith("baseline.")]
    assert ours == [
        ("baseline.create", "token:test-admin", "security"),
        ("baseline.add", "token:test-admin", "security"),
        ("baseline.remove", "token:test-admin", "security"),
        ("baseline.assign", "token:test-admin", "security"),
        ("baseline.unassign", "token:test-admin", "security"),
        ("baseline.delete", "token:test-admin", "security"),
    ]


def test_cluster_groups_as_a_scope(api: Api) -> None:
    unknown = api.call("PUT", "/api/v1/cluster-groups/branches", json={"clusters": ["quick", "nowhere"]})
    assert unknown.status_code == 404 and "nowhere" in unknown.json()["error"]["message"]
    assert api.call("PUT", "/api/v1/cluster-groups/bad name", json={"clusters": []}).status_code == 422
    made = api.call("PUT", "/api/v1/cluster-groups/branches", json={"clusters": ["quick", "slow"]})
    assert made.status_code == 200 and made.json()["clusters"] == ["quick", "slow"]
    assert [g["name"] for g in api.call("GET", "/api/v1/cluster-groups", role="viewer").json()] == [
        "branches"
    ]
    make_baseline(api, "all", "quick")
    assert (
        api.call(
            "POST", "/api/v1/baselines/all/assignments", json={"kind": "group", "name": "branches"}
        ).status_code
        == 200
    )
    busy = api.call("DELETE", "/api/v1/cluster-groups/branches")
    assert busy.status_code == 400 and "all" in busy.json()["error"]["message"]
    assert api.call("GET", "/api/v1/compliance/slow").json()["baselines"] == ["all"]  # through the group
    assert api.call("DELETE", "/api/v1/baselines/all/assignments/group/branches").status_code == 200
    assert api.call("DELETE", "/api/v1/cluster-groups/branches").status_code == 204
    assert [e["action"] for e in audit(api, "group.set")] == ["group.set"]
    assert [e["action"] for e in audit(api, "group.delete")] == ["group.delete"]


def test_the_view_before_and_after_a_scan_and_its_export(api: Api) -> None:
    before = api.call("GET", "/api/v1/compliance/quick", role="viewer").json()
    assert before["status"] == "Compliant" and before["baselines"] == []  # nothing applies yet
    make_baseline(api)
    unknown = api.call("GET", "/api/v1/compliance/quick", role="viewer").json()
    assert unknown["status"] == "Unknown" and unknown["oldest_scan"] is None
    assert {n["status"] for n in unknown["nodes"]} == {"Unknown"}

    assert api.call("POST", "/api/v1/compliance/quick/scan", role="viewer").status_code == 403
    scanned = api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["status"] == "NonCompliant"
    assert statuses(scanned.json()) == {
        n: {"sandbox:kernel": "NonCompliant", "sandbox:openssl": "NonCompliant"} for n in ("n1", "n2", "n3")
    }
    assert [(e["actor"], e["target"]) for e in audit(api, "compliance.scan")] == [
        ("token:test-operator", "quick")
    ]
    assert api.call("GET", "/api/v1/compliance/quick").json()["oldest_scan"] is not None

    every = api.call("GET", "/api/v1/compliance", role="viewer").json()
    assert {v["cluster"]: v["status"] for v in every} == {
        "quick": "NonCompliant",
        "slow": "Compliant",
        "sandbox": "Compliant",
    }

    exported = api.call("GET", "/api/v1/compliance/quick/export?format=csv", role="viewer")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert 'filename="cau-compliance-quick-' in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert {(r["node"], r["update"], r["status"]) for r in rows} == {
        (n, u, "NonCompliant") for n in ("n1", "n2", "n3") for u in ("sandbox:kernel", "sandbox:openssl")
    }
    as_json = api.call("GET", "/api/v1/compliance/quick/export?format=json", role="viewer")
    assert as_json.headers["content-type"] == "application/json" and as_json.json()["cluster"] == "quick"
    assert api.call("GET", "/api/v1/compliance/quick/export?format=xml").status_code == 422
    assert api.call("GET", "/api/v1/compliance/nowhere").status_code == 404


def test_exemptions_by_admins_with_their_note(api: Api) -> None:
    make_baseline(api)
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    body = {
        "update": "sandbox:openssl",
        "scope": {"kind": "node", "name": "n1"},
        "reason": "breaks the app; ask ops",
    }
    assert api.call("POST", "/api/v1/exemptions", role="operator", json=body).status_code == 403
    bad = api.call("POST", "/api/v1/exemptions", json={**body, "update": "openssl"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "update"
    no_reason = api.call("POST", "/api/v1/exemptions", json={**body, "reason": ""})
    assert no_reason.status_code == 422 and no_reason.json()["error"]["fields"][0]["field"] == "reason"
    past = api.call("POST", "/api/v1/exemptions", json={**body, "until": "2000-01-01T00:00"})
    assert past.status_code == 400 and "expired already" in past.json()["error"]["message"]
    made = api.call("POST", "/api/v1/exemptions", json={**body, "until": "2999-01-01T00:00"})  # naive: UTC
    assert made.status_code == 201, made.text
    e = made.json()
    assert e["by"] == "token:test-admin" and e["until"].startswith("2999-01-01T00:00:00")

    view = api.call("GET", "/api/v1/compliance/quick", role="viewer").json()
    n1 = next(
        u for b in view["nodes"][0]["baselines"] for u in b["updates"] if u["update"] == "sandbox:openssl"
    )
    assert n1["status"] == "Exempt" and n1["exemption"] == e["id"]
    assert n1["exemption_note"].startswith("breaks the app; ask ops (token:test-admin")
    assert statuses(view)["n2"]["sandbox:openssl"] == "NonCompliant"  # on n1 only
    assert [x["id"] for x in api.call("GET", "/api/v1/exemptions", role="viewer").json()] == [e["id"]]

    # scanned while exempt: once the exemption is gone, Unknown until the next scan (VMM)
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    assert api.call("DELETE", f"/api/v1/exemptions/{e['id']}", role="operator").status_code == 403
    assert api.call("DELETE", f"/api/v1/exemptions/{e['id']}").status_code == 204
    assert api.call("DELETE", f"/api/v1/exemptions/{e['id']}").status_code == 404
    assert statuses(api.call("GET", "/api/v1/compliance/quick").json())["n1"]["sandbox:openssl"] == "Unknown"
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    assert (
        statuses(api.call("GET", "/api/v1/compliance/quick").json())["n1"]["sandbox:openssl"]
        == "NonCompliant"
    )
    assert [x["actor"] for x in audit(api, "exemption.add")] == ["token:test-admin"]
    assert [x["actor"] for x in audit(api, "exemption.remove")] == ["token:test-admin"]


def test_remediation_installs_only_what_is_ticked_and_leaves_nodes_pending_reboot(api: Api) -> None:
    make_baseline(api)
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    assert api.call("POST", "/api/v1/compliance/quick/remediate", role="viewer", json={}).status_code == 403
    started = api.call(
        "POST",
        "/api/v1/compliance/quick/remediate",
        role="operator",
        json={"exclude": ["sandbox:openssl"], "options": {"no_restart": True, "move": "live"}},
    )
    assert started.status_code == 202, started.text
    answer = started.json()
    assert answer["plan"]["nodes"] == {n: ["sandbox:kernel"] for n in ("n1", "n2", "n3")}
    assert answer["warnings"] == []
    report = wait_finished(api, answer["run_id"])
    assert report["status"] == "Succeeded"
    settle(api, "quick")
    assert statuses(api.call("GET", "/api/v1/compliance/quick").json()) == {
        n: {"sandbox:kernel": "PendingReboot", "sandbox:openssl": "NonCompliant"} for n in ("n1", "n2", "n3")
    }
    [entry] = audit(api, "remediate")
    assert entry["actor"] == "token:test-operator" and entry["detail"]["run_id"] == answer["run_id"]
    assert (
        entry["detail"]["exclude"] == ["sandbox:openssl"] and entry["detail"]["options"]["no_restart"] is True
    )
    run = api.call("GET", f"/api/v1/runs/{answer['run_id']}").json()
    assert {u["id"] for n in run["nodes"] for u in n["updates"]} == {"kernel"}  # openssl left alone


def test_remediation_refusals(api: Api) -> None:
    nothing = api.call("POST", "/api/v1/compliance/quick/remediate", role="operator", json={})
    assert nothing.status_code == 409 and nothing.json()["error"]["code"] == "nothing_to_remediate"
    assert "nothing to remediate on 'quick'" in nothing.json()["error"]["message"]

    make_baseline(api)
    api.call("POST", "/api/v1/compliance/quick/scan", role="operator")
    every = ["sandbox:kernel", "sandbox:openssl"]
    all_unticked = api.call(
        "POST", "/api/v1/compliance/quick/remediate", role="operator", json={"exclude": every}
    )
    assert all_unticked.status_code == 409 and all_unticked.json()["error"]["code"] == "nothing_to_remediate"

    roles = api.call("POST", "/api/v1/compliance/quick/remediate", role="operator", json={"nodes": ["n1"]})
    assert roles.status_code == 409 and roles.json()["error"]["code"] == "standalone_host_has_roles"
    assert "roles web are not moved" in roles.json()["error"]["message"]
    assert "force" in roles.json()["error"]["hint"]

    stranger = api.call("POST", "/api/v1/compliance/quick/remediate", role="operator", json={"nodes": ["n9"]})
    assert stranger.status_code == 422 and stranger.json()["error"]["fields"][0]["field"] == "nodes"
    unknown = api.call(
        "POST", "/api/v1/compliance/quick/remediate", role="operator", json={"baselines": ["nope"]}
    )
    assert unknown.status_code == 422 and unknown.json()["error"]["fields"][0]["field"] == "baselines"
    scripts = api.call(
        "POST",
        "/api/v1/compliance/quick/remediate",
        role="operator",
        json={"options": {"pre_update_script": "id"}},
    )
    assert (
        scripts.status_code == 422
        and scripts.json()["error"]["fields"][0]["field"] == "options.pre_update_script"
    )

    refused = audit(api, "remediate.refused")
    assert len(refused) == 5 and {e["actor"] for e in refused} == {"token:test-operator"}
    assert (
        "roles web are not moved"
        in next(e for e in refused if e["detail"]["nodes"] == ["n1"])["detail"]["error"]
    )

    # forced: n1 is remediated alone, its role stays where it is, and the answer says so
    forced = api.call(
        "POST", "/api/v1/compliance/quick/remediate", role="operator", json={"nodes": ["n1"], "force": True}
    )
    assert forced.status_code == 202, forced.text
    assert forced.json()["plan"]["nodes"] == {"n1": ["sandbox:kernel", "sandbox:openssl"]}
    assert "web" in forced.json()["warnings"][0]
    assert wait_finished(api, forced.json()["run_id"])["status"] == "Succeeded"
    settle(api, "quick")
    after = statuses(api.call("GET", "/api/v1/compliance/quick").json())
    assert after["n1"] == {"sandbox:*": "Compliant"}  # nothing of the rule is left to install
    assert after["n2"] == {"sandbox:kernel": "NonCompliant", "sandbox:openssl": "NonCompliant"}


def test_no_remediation_while_a_run_is_in_progress(api: Api) -> None:
    make_baseline(api, "all", "slow")
    api.call("POST", "/api/v1/compliance/slow/scan", role="operator")
    run = api.call("POST", "/api/v1/clusters/slow/runs", role="operator", json={})
    assert run.status_code == 202, run.text
    busy = api.call("POST", "/api/v1/compliance/slow/remediate", role="operator", json={})
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "run_in_progress"
    assert run.json()["run_id"] in busy.json()["error"]["message"]
