"""The REST API through its ASGI app: auth for every route and role, validation, runs, SSE resume."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cau.domain.access import Role
from cau.store.access import AccessStore
from cau.store.sqlite import SCHEMA_VERSION, SqliteFile
from cau.web.throttle import PAIR_LIMIT
from tests.web.conftest import Api

# (method, path, the least role allowed, a body that is harmless or invalid when allowed)
ROUTES: list[tuple[str, str, str, object]] = [
    ("GET", "/api/v1/me", "viewer", None),
    ("GET", "/api/v1/clusters", "viewer", None),
    ("GET", "/api/v1/clusters/quick", "viewer", None),
    ("GET", "/api/v1/clusters/quick/check", "operator", None),
    ("POST", "/api/v1/clusters/quick/scan", "operator", {"profile": "no-such-profile"}),
    ("POST", "/api/v1/clusters/quick/runs", "operator", {"options": {"max_parallel_nodes": 0}}),
    ("POST", "/api/v1/clusters/quick/stop", "operator", {"reason": "x"}),
    ("GET", "/api/v1/runs", "viewer", None),
    ("GET", "/api/v1/runs/nope", "viewer", None),
    ("POST", "/api/v1/runs/nope/stop", "operator", {}),
    ("GET", "/api/v1/runs/nope/events", "viewer", None),
    ("GET", "/api/v1/reports", "viewer", None),
    ("GET", "/api/v1/reports/nope", "viewer", None),
    ("GET", "/api/v1/reports/nope/export", "viewer", None),
    ("GET", "/api/v1/export?format=csv", "viewer", None),
    ("GET", "/api/v1/profiles", "viewer", None),
    ("POST", "/api/v1/profiles/validate", "admin", {"options": {}}),
    ("POST", "/api/v1/profiles", "admin", {"name": "p", "options": {"bogus": 1}}),
    ("GET", "/api/v1/profiles/nope", "viewer", None),
    ("PUT", "/api/v1/profiles/p", "admin", {"options": {"bogus": 1}}),
    ("DELETE", "/api/v1/profiles/nope", "admin", None),
    ("GET", "/api/v1/plugins", "viewer", None),
    ("GET", "/api/v1/tokens", "admin", None),
    ("POST", "/api/v1/tokens", "admin", {"name": "", "role": "viewer"}),
    ("DELETE", "/api/v1/tokens/nope", "admin", None),
    ("GET", "/api/v1/users", "admin", None),
    ("PUT", "/api/v1/users/bob/password", "admin", {"role": "viewer", "password": "short"}),
    ("DELETE", "/api/v1/users/nope", "admin", None),
    ("GET", "/api/v1/audit", "admin", None),
    ("GET", "/api/v1/sessions", "admin", None),
    ("DELETE", "/api/v1/sessions/nope", "admin", None),
    ("GET", "/api/v1/clusters/quick/role", "viewer", None),
    ("POST", "/api/v1/clusters/quick/role", "admin", {"options": {"bogus": 1}}),
    ("PATCH", "/api/v1/clusters/quick/role", "admin", {"enabled": False}),
    ("POST", "/api/v1/clusters/quick/role/update-now", "operator", None),
    ("DELETE", "/api/v1/clusters/quick/role", "admin", None),
    ("GET", "/api/v1/clusters/quick/debug-trace?run=nope", "admin", None),
    ("GET", "/metrics", "viewer", None),
]
RANK = ["viewer", "operator", "admin"]


def wait_finished(api: Api, run_id: str) -> dict:
    async def go(client: httpx.AsyncClient) -> dict:
        for _ in range(600):
            r = await client.get(f"/api/v1/runs/{run_id}", headers=api.headers("viewer"))
            assert r.status_code == 200, r.text
            if r.json()["state"] != "Running":
                return r.json()
            await asyncio.sleep(0.05)
        raise AssertionError("the run did not finish")

    return api.run(go)


def sse(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        events.append(fields)
    return events


def test_health_needs_no_token_and_openapi_describes_the_errors(api: Api) -> None:
    assert api.call("GET", "/api/v1/health", role=None).json()["ok"] is True
    doc = api.call("GET", "/api/v1/openapi.json", role="viewer").json()
    assert "/api/v1/clusters/{cluster}/runs" in doc["paths"]
    assert "/api/v1/runs/{run_id}/events" in doc["paths"]
    errors = doc["paths"]["/api/v1/clusters/{cluster}/runs"]["post"]["responses"]
    assert {"401", "403", "404", "409", "422"} <= set(errors)


def test_pages_carry_a_content_security_policy_that_allows_no_inline_script(api: Api) -> None:
    page = api.call("GET", "/login", role=None)
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    assert "<script>" not in page.text and " onclick=" not in page.text
    assert page.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "least", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
def test_every_route_answers_401_without_credentials_and_403_below_its_role(
    api: Api, method: str, path: str, least: str, body: object
) -> None:
    kw = {"json": body} if body is not None else {}
    anonymous = api.call(method, path, role=None, **kw)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()["error"]["code"] == "unauthenticated"
    bad = api.call(method, path, role=None, headers={"Authorization": "Bearer cau_nope_nope"}, **kw)
    assert bad.status_code == 401
    for role in RANK:
        got = api.call(method, path, role=role, **kw)
        if RANK.index(role) < RANK.index(least):
            assert got.status_code == 403, (role, got.text)
            assert got.json()["error"]["code"] == "forbidden"
        else:
            assert got.status_code not in (401, 403, 500), (role, got.text)


def test_invalid_input_is_a_4xx_naming_the_field(api: Api) -> None:
    r = api.call(
        "POST", "/api/v1/clusters/quick/runs", role="operator", json={"options": {"max_parallel_nodes": 0}}
    )
    assert r.status_code == 422
    assert any("max_parallel_nodes" in f["field"] for f in r.json()["error"]["fields"])
    r = api.call(
        "POST", "/api/v1/clusters/quick/runs", role="operator", json={"options": {"frobnicate": True}}
    )
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "options.frobnicate"
    r = api.call(
        "POST", "/api/v1/clusters/quick/runs", role="operator", json={"options": {"reboot_timeout": "soon"}}
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_profile"
    assert "reboot_timeout" in r.json()["error"]["fields"][0]["field"]
    r = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={"options": {"no_restart": 0}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "options.no_restart"
    r = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={"profile": "missing"})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "profile"
    r = api.call("POST", "/api/v1/clusters/nowhere/runs", role="operator", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = api.call("POST", "/api/v1/profiles", json={"name": "../x", "options": {}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "name"
    r = api.call("PUT", "/api/v1/profiles/bad name!", json={"options": {}})
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "name"
    r = api.call("GET", "/api/v1/reports?since=yesterday-ish")
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "since"
    r = api.call(
        "POST",
        "/api/v1/clusters/quick/runs",
        role="operator",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422


def test_a_run_started_through_the_api_is_followed_live_and_resumed_with_last_event_id(api: Api) -> None:
    preview = api.call("POST", "/api/v1/clusters/quick/scan", role="operator", json={})
    assert preview.status_code == 200
    assert {n["node"] for n in preview.json()["nodes"]} == {"n1", "n2", "n3"}
    assert all(n["updates"] for n in preview.json()["nodes"])
    started = api.call(
        "POST", "/api/v1/clusters/quick/runs", role="operator", json={"options": {"max_parallel_nodes": 1}}
    )
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    report = wait_finished(api, run_id)
    assert report["status"] == "Succeeded"
    assert {n["name"]: n["status"] for n in report["nodes"]} == {
        "n1": "Succeeded",
        "n2": "Succeeded",
        "n3": "Succeeded",
    }

    stream = api.call("GET", f"/api/v1/runs/{run_id}/events", role="viewer")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [e for e in sse(stream.text) if "event" in e]
    journal = [e for e in events if e["event"] == "journal"]
    seqs = [int(e["id"]) for e in journal]
    assert seqs == list(range(1, len(seqs) + 1))
    assert json.loads(journal[0]["data"])["kind"] == "run_created"
    assert events[-1]["event"] == "end" and json.loads(events[-1]["data"])["status"] == "Succeeded"

    # A client that saw up to seq 5 reconnects: it gets 6.. and nothing twice.
    again = api.call("GET", f"/api/v1/runs/{run_id}/events", role="viewer", headers={"Last-Event-ID": "5"})
    resumed = [int(e["id"]) for e in sse(again.text) if e.get("event") == "journal"]
    assert resumed == seqs[5:]
    bad = api.call("GET", f"/api/v1/runs/{run_id}/events", headers={"Last-Event-ID": "five"})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "Last-Event-ID"

    cluster = api.call("GET", "/api/v1/clusters/quick").json()
    assert {n["name"]: n["last_result"] for n in cluster["nodes"]} == {
        "n1": "Succeeded",
        "n2": "Succeeded",
        "n3": "Succeeded",
    }
    assert {r["name"]: r["kind"] for r in cluster["roles"]} == {"web": "live", "db": "failover"}
    assert cluster["last_run"]["run_id"] == run_id

    assert run_id in [r["run_id"] for r in api.call("GET", "/api/v1/reports?cluster=").json()]
    listed = api.call("GET", "/api/v1/reports?cluster=quick&since=2000-01-01").json()
    assert [r["run_id"] for r in listed] == [run_id]
    assert api.call("GET", "/api/v1/reports?cluster=quick&until=2000-01-01").json() == []
    csv = api.call("GET", f"/api/v1/reports/{run_id}/export?format=csv")
    assert csv.headers["content-type"].startswith("text/csv") and "n1" in csv.text
    html = api.call("GET", f"/api/v1/reports/{run_id}/export?format=html")
    assert "<svg" in html.text and "attachment" in html.headers["content-disposition"]
    assert api.call("GET", f"/api/v1/reports/{run_id}/export?format=json").json()[0]["run_id"] == run_id

    metrics = api.call("GET", "/metrics", role="viewer").text
    assert 'cau_runs{cluster="quick",status="Succeeded"} 1.0' in metrics
    assert "cau_step_duration_seconds_bucket" in metrics
    assert 'cau_nodes_in_maintenance{cluster="quick"} 0.0' in metrics

    audit = api.call("GET", "/api/v1/audit?action=run.start").json()
    assert audit[0]["actor"] == "token:test-operator" and audit[0]["detail"]["run_id"] == run_id


def test_stop_through_the_api_cancels_the_rest_and_is_audited(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> dict:
        op = api.headers("operator")
        r = await client.post("/api/v1/clusters/slow/runs", headers=op, json={})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        cluster = (await client.get("/api/v1/clusters/slow", headers=op)).json()
        assert cluster["coordinator"].startswith("cau serve (pid ")
        assert cluster["active_run"]["run_id"] == run_id and cluster["active_run"]["interrupted"] is False
        second = await client.post("/api/v1/clusters/slow/runs", headers=op, json={})
        assert second.status_code == 409 and second.json()["error"]["code"] == "cluster_locked"
        stop = await client.post(f"/api/v1/runs/{run_id}/stop", headers=op, json={"reason": "change freeze"})
        assert stop.status_code == 200 and stop.json()["stop_requested"] is True
        for _ in range(1200):
            report = (await client.get(f"/api/v1/runs/{run_id}", headers=op)).json()
            if report["state"] != "Running":
                return report
            await asyncio.sleep(0.05)
        raise AssertionError("the run did not stop")

    report = api.run(go)
    assert report["error_id"] == "StoppedByOperator"
    assert any(n["status"] == "Canceled" for n in report["nodes"])
    actions = [(e["action"], e["actor"]) for e in api.call("GET", "/api/v1/audit").json()]
    assert ("run.stop", "token:test-operator") in actions
    assert ("run.start", "token:test-operator") in actions


def test_profiles_are_created_validated_used_and_deleted_by_admins(api: Api) -> None:
    body = {
        "name": "careful",
        "description": "one at a time, no restart",
        "options": {"no_restart": True, "move": "save"},
    }
    assert api.call("POST", "/api/v1/profiles", role="operator", json=body).status_code == 403
    created = api.call("POST", "/api/v1/profiles", json=body)
    assert created.status_code == 201
    assert (
        created.json()["effective"]["no_restart"] is True
        and created.json()["effective"]["max_retries_per_node"] == 3
    )
    assert api.call("POST", "/api/v1/profiles", json=body).status_code == 409
    bad = api.call("PUT", "/api/v1/profiles/careful", json={"options": {"max_parallel_nodes": 0}})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["field"] == "max_parallel_nodes"
    check = api.call("POST", "/api/v1/profiles/validate", json={"options": {"move": "teleport"}}).json()
    assert check["valid"] is False and check["problems"][0]["field"] == "move"
    updated = api.call(
        "PUT", "/api/v1/profiles/careful", json={"options": {"no_restart": True, "max_parallel_nodes": 2}}
    )
    assert updated.status_code == 200 and updated.json()["options"] == {
        "no_restart": True,
        "max_parallel_nodes": 2,
    }

    run = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={"profile": "careful"})
    assert run.status_code == 202
    report = wait_finished(api, run.json()["run_id"])
    assert report["profile"]["no_restart"] is True and report["profile"]["max_parallel_nodes"] == 2
    assert all(n["restarts"] == 0 for n in report["nodes"])

    assert api.call("DELETE", "/api/v1/profiles/careful").status_code == 204
    assert api.call("GET", "/api/v1/profiles/careful").status_code == 404
    actions = [e["action"] for e in api.call("GET", "/api/v1/audit").json()]
    assert {"profile.create", "profile.update", "profile.delete"} <= set(actions)


def test_browser_sessions_need_the_csrf_token_and_set_strict_httponly_cookies(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        wrong = await client.post("/api/v1/session", json={"token": "cau_x_wrong"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "bad_credentials"
        r = await client.post("/api/v1/session", json={"token": api.tokens["operator"]})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
        csrf = r.headers["x-csrf-token"]
        assert (await client.get("/api/v1/me")).json()["role"] == "operator"
        no_csrf = await client.post("/api/v1/runs/nope/stop", json={})
        assert no_csrf.status_code == 403 and no_csrf.json()["error"]["code"] == "csrf_failed"
        forged = await client.post("/api/v1/runs/nope/stop", json={}, headers={"X-CSRF-Token": "guess"})
        assert forged.status_code == 403
        ok = await client.post("/api/v1/runs/nope/stop", json={}, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 404  # past auth and CSRF: the run does not exist
        admin_only = await client.get("/api/v1/audit")
        assert admin_only.status_code == 403
        out = await client.request("DELETE", "/api/v1/session", headers={"X-CSRF-Token": csrf})
        assert out.status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401

    api.run(go)


def test_passwords_and_revoked_tokens(api: Api) -> None:
    assert (
        api.call(
            "PUT", "/api/v1/users/alice/password", json={"role": "viewer", "password": "short"}
        ).status_code
        == 422
    )
    assert (
        api.call(
            "PUT",
            "/api/v1/users/alice/password",
            json={"role": "viewer", "password": "correct horse battery"},
        ).status_code
        == 200
    )

    async def go(client: httpx.AsyncClient) -> None:
        bad = await client.post("/api/v1/session", json={"name": "alice", "password": "wrong password!"})
        assert bad.status_code == 401
        good = await client.post(
            "/api/v1/session", json={"name": "alice", "password": "correct horse battery"}
        )
        assert good.status_code == 200 and good.json()["role"] == "viewer"

    api.run(go)
    made = api.call("POST", "/api/v1/tokens", json={"name": "ci", "role": "operator"}).json()
    assert made["token"].startswith("cau_")
    listed = api.call("GET", "/api/v1/tokens").json()
    assert all("token" not in t for t in listed)
    assert (
        api.call(
            "GET", "/api/v1/me", role=None, headers={"Authorization": f"Bearer {made['token']}"}
        ).status_code
        == 200
    )
    assert api.call("DELETE", f"/api/v1/tokens/{made['token_id']}").status_code == 204
    assert (
        api.call(
            "GET", "/api/v1/me", role=None, headers={"Authorization": f"Bearer {made['token']}"}
        ).status_code
        == 401
    )


def test_secrets_are_stored_hashed(api: Api, tmp_path: Path) -> None:
    api.call(
        "PUT", "/api/v1/users/bob/password", json={"role": "admin", "password": "a long enough password"}
    )
    raw = (tmp_path / "data" / "cau.db").read_bytes()
    assert api.tokens["admin"].encode() not in raw
    assert b"a long enough password" not in raw


def test_a_schema_1_store_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "cau.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '1');"
    )
    db.close()
    store = SqliteFile(path)
    access = AccessStore(store)
    _, secret = access.create_token("t", Role.ADMIN, by="test")
    who = access.check_token(secret)
    assert who is not None
    cookie, _ = access.create_session(who)  # schema 4: a session records its token
    assert access.check_session(cookie) is not None
    assert [s.via for s in access.list_sessions()] == ["token"]  # schema 5: sessions are listed
    version = store.connection.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION == 7  # schema 7: typed documents (compliance)
    store.close()


async def form(client: httpx.AsyncClient) -> dict[str, str]:
    """What the sign-in page puts in its form (and sets as a cookie): the login CSRF token."""
    page = await client.get("/login")
    return {"csrf_token": page.text.split('name="csrf_token" value="')[1].split('"')[0]}


def test_every_page_renders_for_a_signed_in_admin(api: Api) -> None:
    api.call("POST", "/api/v1/profiles", json={"name": "p1", "options": {"no_restart": True}})
    run_id = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={}).json()["run_id"]
    wait_finished(api, run_id)

    async def go(client: httpx.AsyncClient) -> None:
        first = await client.get("/clusters")
        assert first.status_code == 303 and first.headers["location"] == "/login?next=%2Fclusters"
        forged = await client.post("/login", data={"token": api.tokens["admin"], "csrf_token": "x"})
        assert forged.status_code == 403 and "cau_session" not in forged.headers.get("set-cookie", "")
        signed = await client.post(
            "/login", data={"token": api.tokens["admin"], "next": "/jobs", **await form(client)}
        )
        assert signed.status_code == 303 and signed.headers["location"] == "/jobs"
        for path in (
            "/clusters",
            "/clusters/quick",
            f"/runs/{run_id}",
            f"/runs/{run_id}/panel",
            "/jobs",
            "/reports",
            "/reports?cluster=quick&since=2000-01-01&until=2100-01-01",
            f"/reports/{run_id}",
            "/profiles",
            "/profiles/new",
            "/profiles/p1",
            "/admin",
        ):
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert page.headers["content-type"].startswith("text/html")
        missing = await client.get("/runs/nope")
        assert missing.status_code == 404 and "no run" in missing.text
        redirect = await client.post(
            "/login", data={"token": api.tokens["admin"], "next": "//evil.example/", **await form(client)}
        )
        assert redirect.headers["location"] == "/clusters"

    api.run(go)


def test_pages_below_the_role_are_refused(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await client.post("/login", data={"token": api.tokens["viewer"], **await form(client)})
        assert (await client.get("/clusters")).status_code == 200
        assert (await client.get("/admin")).status_code == 403
        assert (await client.get("/profiles/new")).status_code == 403
        cluster = await client.get("/clusters/quick")
        assert "Apply updates" not in cluster.text  # a viewer sees, but is offered no action

    api.run(go)


def test_repeated_failed_sign_ins_are_throttled(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> list[int]:
        codes = []
        for _ in range(12):
            r = await client.post("/api/v1/session", json={"name": "admin", "password": "guess number n"})
            codes.append(r.status_code)
        good = await client.post("/api/v1/session", json={"token": api.tokens["admin"]})
        codes.append(good.status_code)
        return codes

    codes = api.run(go)
    # guessing one account from one address stops after PAIR_LIMIT; a valid token is never held
    # back (the whole rule, against both attacks: tests/web/test_signin_throttle.py)
    assert codes == [401] * PAIR_LIMIT + [429] * (12 - PAIR_LIMIT) + [200]


def test_a_secret_in_a_stored_profile_stays_out_of_the_audit_trail(api: Api) -> None:
    body = {"name": "deploy", "options": {"pre_update_script": "drain.sh --token=s3cr3t-value-42"}}
    assert api.call("POST", "/api/v1/profiles", json=body).status_code == 201
    trail = api.call("GET", "/api/v1/audit").text
    assert "profile.create" in trail and "drain.sh" in trail
    assert "s3cr3t-value-42" not in trail


def test_answers_are_never_cached_and_https_asks_for_https_only(api: Api) -> None:
    created = api.call("POST", "/api/v1/tokens", json={"name": "ci", "role": "viewer"})
    assert created.status_code == 201 and created.json()["token"]
    for answer in (created, api.call("GET", "/api/v1/me"), api.call("GET", "/api/v1/clusters/nowhere")):
        assert answer.headers["Cache-Control"] == "no-store", answer.request.url
    assert "Strict-Transport-Security" not in created.headers  # plain http here
    api.app.state.ctx.settings.secure_cookies = True  # as `cau serve --ssl-certfile ...` sets it
    assert api.call("GET", "/api/v1/me").headers["Strict-Transport-Security"].startswith("max-age=")


def test_a_stranger_gets_401_before_any_body_is_read(api: Api) -> None:
    for method, url in (
        ("POST", "/api/v1/clusters/quick/runs"),
        ("POST", "/api/v1/profiles"),
        ("POST", "/api/v1/profiles/validate"),
        ("PUT", "/api/v1/users/alice/password"),
        ("POST", "/api/v1/tokens"),
    ):
        for body in (b"{not json", b'{"frobnicate": 1}'):
            got = api.call(method, url, role=None, content=body, headers={"Content-Type": "application/json"})
            assert got.status_code == 401, (method, url, body, got.text)
            assert got.json()["error"]["code"] == "unauthenticated"
            assert got.headers["Cache-Control"] == "no-store"
        bad_token = api.call(
            method, url, role=None, content=b"{", headers={"Authorization": "Bearer cau_nope"}
        )
        assert bad_token.status_code == 401 and bad_token.json()["error"]["code"] == "invalid_token"
    # what stays open: the health check and signing in
    assert api.call("GET", "/api/v1/health", role=None).status_code == 200
    assert api.call("POST", "/api/v1/session", role=None, json={"token": "cau_nope"}).status_code == 401


def test_token_and_user_names_are_unique_and_cannot_pass_for_another_principal(api: Api) -> None:
    first = api.call("POST", "/api/v1/tokens", json={"name": "backup-job", "role": "viewer"})
    assert first.status_code == 201
    again = api.call("POST", "/api/v1/tokens", json={"name": "backup-job", "role": "admin"})
    assert again.status_code == 409 and again.json()["error"]["code"] == "name_taken"
    # once revoked, its name is free again
    assert api.call("DELETE", f"/api/v1/tokens/{first.json()['token_id']}").status_code == 204
    reused = api.call("POST", "/api/v1/tokens", json={"name": "backup-job", "role": "viewer"})
    assert reused.status_code == 201
    for name in ("token:ci", "alice@host (cli)", "two words"):
        token = api.call("POST", "/api/v1/tokens", json={"name": name, "role": "viewer"})
        assert token.status_code == 400 and "not allowed" in token.json()["error"]["message"], name
        body = {"role": "viewer", "password": "x" * 16}
        user = api.call("PUT", f"/api/v1/users/{name}/password", json=body)
        assert user.status_code == 400, (name, user.text)
    audit = api.call("GET", "/api/v1/audit").json()
    assert not any(e["target"] in ("token:ci", "alice@host (cli)") for e in audit)


def test_revoking_a_token_ends_the_browser_sessions_signed_in_with_it(api: Api) -> None:
    made = api.call("POST", "/api/v1/tokens", json={"name": "laptop", "role": "admin"}).json()

    async def go(client: httpx.AsyncClient) -> None:
        signed_in = await client.post("/api/v1/session", json={"token": made["token"]})
        csrf = signed_in.headers["x-csrf-token"]
        assert (await client.get("/api/v1/me")).json()["role"] == "admin"
        # another admin revokes it (the bearer header speaks for that admin, not the cookie)
        revoked = await client.delete(f"/api/v1/tokens/{made['token_id']}", headers=api.headers("admin"))
        assert revoked.status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401
        mint = await client.post(
            "/api/v1/tokens", json={"name": "backdoor", "role": "admin"}, headers={"X-CSRF-Token": csrf}
        )
        assert mint.status_code == 401

    api.run(go)
    assert "backdoor" not in {t["name"] for t in api.call("GET", "/api/v1/tokens").json()}


def test_a_new_password_or_role_ends_the_user_s_sessions(api: Api) -> None:
    body = {"role": "operator", "password": "correct horse battery"}
    assert api.call("PUT", "/api/v1/users/alice/password", json=body).status_code == 200

    async def sign_in(client: httpx.AsyncClient, password: str) -> None:
        r = await client.post("/api/v1/session", json={"name": "alice", "password": password})
        assert r.status_code == 200

    async def go(client: httpx.AsyncClient) -> None:
        await sign_in(client, "correct horse battery")
        assert (await client.get("/api/v1/me")).json()["role"] == "operator"
        # an admin takes the operator role away (same password): the session does not keep it
        demoted = {"role": "viewer", "password": "correct horse battery"}
        put = await client.put("/api/v1/users/alice/password", json=demoted, headers=api.headers("admin"))
        assert put.status_code == 200
        assert (await client.get("/api/v1/me")).status_code == 401
        await sign_in(client, "correct horse battery")
        assert (await client.get("/api/v1/me")).json()["role"] == "viewer"
        gone = await client.delete("/api/v1/users/alice", headers=api.headers("admin"))
        assert gone.status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401

    api.run(go)


def test_the_server_runs_no_admin_script_on_its_own_host_unless_its_operator_allows_it(
    api: Api, tmp_path: Path
) -> None:
    marker = tmp_path / "ran-on-the-server"
    body = {"name": "scripted", "options": {"pre_update_script": f"touch {marker}"}}
    assert api.call("POST", "/api/v1/profiles", json=body).status_code == 201
    refused = api.call("POST", "/api/v1/clusters/quick/runs", json={"profile": "scripted"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "local_scripts_refused"
    assert "--allow-local-scripts" in refused.json()["error"]["hint"]
    assert api.call("GET", "/api/v1/runs").json() == []  # nothing started
    audit = api.call("GET", "/api/v1/audit?action=run.start.refused").json()
    assert audit and audit[0]["target"] == "quick"
    api.app.state.ctx.settings.allow_local_scripts = True  # `cau serve --allow-local-scripts`
    started = api.call("POST", "/api/v1/clusters/quick/runs", json={"profile": "scripted"})
    assert started.status_code == 202, started.text
    wait_finished(api, started.json()["run_id"])
    assert marker.exists()


def test_validating_a_profile_needs_the_role_that_writes_profiles(api: Api) -> None:
    body = {"options": {"move": "teleport"}}
    for role in ("viewer", "operator"):
        refused = api.call("POST", "/api/v1/profiles/validate", role=role, json=body)
        assert refused.status_code == 403, (role, refused.text)
        assert "admin" in refused.json()["error"]["message"]
    checked = api.call("POST", "/api/v1/profiles/validate", role="admin", json=body)
    assert checked.status_code == 200 and checked.json()["problems"][0]["field"] == "move"
    stranger = api.call(
        "POST",
        "/api/v1/profiles/validate",
        role=None,
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert stranger.status_code == 401 and stranger.json()["error"]["code"] == "unauthenticated"

    async def viewer_page(client: httpx.AsyncClient) -> str:
        await client.post("/login", data={"token": api.tokens["viewer"], **await form(client)})
        return (await client.get("/profiles/p")).text

    assert api.call("POST", "/api/v1/profiles", json={"name": "p", "options": {}}).status_code == 201
    assert 'data-action="validate-profile"' not in api.run(viewer_page)  # no button it cannot use


def test_a_run_started_through_the_api_shows_who_started_it(api: Api) -> None:
    started = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    assert wait_finished(api, run_id)["started_by"] == "token:test-operator"
    assert api.call("GET", f"/api/v1/reports/{run_id}").json()["started_by"] == "token:test-operator"
    html = api.call("GET", f"/api/v1/reports/{run_id}/export?format=html").text
    assert '<dd class="started-by">token:test-operator</dd>' in html

    async def pages(client: httpx.AsyncClient) -> list[str]:
        await client.post("/login", data={"token": api.tokens["viewer"], **await form(client)})
        return [(await client.get(path)).text for path in (f"/runs/{run_id}", f"/reports/{run_id}")]

    for page in api.run(pages):
        assert '<span id="started-by">token:test-operator</span>' in page


def test_the_clustered_role_through_the_api_each_action_by_its_role_and_audited(api: Api) -> None:
    assert api.call("GET", "/api/v1/clusters/quick/role", role="viewer").status_code == 404
    bad = api.call("POST", "/api/v1/clusters/quick/role", json={"options": {"bogus": 1}})
    assert bad.status_code == 422 and "bogus" in bad.text, bad.text
    added = api.call("POST", "/api/v1/clusters/quick/role", json={"options": {"max_retries_per_node": 1}})
    assert added.status_code == 201, added.text
    assert added.json()["owner"] == "n1" and added.json()["enabled"] is True
    assert api.call("POST", "/api/v1/clusters/quick/role/update-now", role="viewer").status_code == 403
    asked = api.call("POST", "/api/v1/clusters/quick/role/update-now", role="operator")
    assert asked.status_code == 200 and asked.json()["update_requested"]["by"] == "token:test-operator"
    assert (
        api.call("PATCH", "/api/v1/clusters/quick/role", role="operator", json={"enabled": False}).status_code
        == 403
    )
    off = api.call("PATCH", "/api/v1/clusters/quick/role", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    shown = api.call("GET", "/api/v1/clusters/quick/role", role="viewer").json()
    assert shown["enabled"] is False and shown["updated_by"] == "token:test-admin"
    audit = [(a["action"], a["actor"]) for a in api.call("GET", "/api/v1/audit").json()]
    for entry in (
        ("role.add", "token:test-admin"),
        ("role.update_now", "token:test-operator"),
        ("role.disable", "token:test-admin"),
    ):
        assert entry in audit, audit
    assert api.call("DELETE", "/api/v1/clusters/quick/role").status_code == 204
    assert api.call("GET", "/api/v1/clusters/quick/role", role="viewer").status_code == 404


def test_an_admin_lists_the_browser_sessions_and_ends_any_of_them(api: Api) -> None:
    body = {"role": "operator", "password": "correct horse battery"}
    assert api.call("PUT", "/api/v1/users/alice/password", json=body).status_code == 200
    secrets: list[str] = []

    async def go(client: httpx.AsyncClient) -> None:
        signed_in = await client.post(
            "/api/v1/session", json={"name": "alice", "password": "correct horse battery"}
        )
        assert signed_in.status_code == 200
        secrets.extend([client.cookies["cau_session"], signed_in.headers["x-csrf-token"]])
        for role in ("viewer", "operator"):
            refused = await client.get("/api/v1/sessions", headers=api.headers(role))
            assert refused.status_code == 403, role
        listing = await client.get("/api/v1/sessions", headers=api.headers("admin"))
        assert listing.status_code == 200
        assert not any(secret in listing.text for secret in secrets)  # never a session's secret
        (alice,) = [s for s in listing.json() if s["name"] == "alice"]
        assert (alice["role"], alice["via"], alice["client"]) == ("operator", "password", "127.0.0.1")
        assert alice["signed_in"] < alice["expires"] and alice["handle"]
        # alice, an operator, cannot end anyone's session (her own cookie, her CSRF token)
        own = await client.delete(f"/api/v1/sessions/{alice['handle']}", headers={"X-CSRF-Token": secrets[1]})
        assert own.status_code == 403
        assert (await client.get("/api/v1/me")).json()["name"] == "alice"
        ended = await client.delete(f"/api/v1/sessions/{alice['handle']}", headers=api.headers("admin"))
        assert ended.status_code == 204
        assert (await client.get("/api/v1/me")).status_code == 401  # her next request
        again = await client.delete(f"/api/v1/sessions/{alice['handle']}", headers=api.headers("admin"))
        assert again.status_code == 404 and "cau session list" in again.json()["error"]["hint"]
        left = await client.get("/api/v1/sessions", headers=api.headers("admin"))
        assert alice["handle"] not in {s["handle"] for s in left.json()}

    api.run(go)
    (entry,) = api.call("GET", "/api/v1/audit?action=session.end").json()
    assert entry["actor"] == "token:test-admin" and entry["detail"]["name"] == "alice"
    assert entry["detail"]["client"] == "127.0.0.1"  # from where the admin ended it


def test_the_admin_page_lists_sessions_with_an_end_button_that_needs_the_csrf_token(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> None:
        await client.post("/login", data={"token": api.tokens["admin"], **await form(client)})
        page = (await client.get("/admin")).text
        listed = (await client.get("/api/v1/sessions", headers=api.headers("admin"))).json()
        (mine,) = [s for s in listed if s["name"] == "token:test-admin"]
        assert f'data-action="end-session" data-handle="{mine["handle"]}"' in page
        assert "this session" in page
        csrf = page.split('name="csrf-token" content="')[1].split('"')[0]
        forged = await client.delete(f"/api/v1/sessions/{mine['handle']}")
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        ended = await client.delete(f"/api/v1/sessions/{mine['handle']}", headers={"X-CSRF-Token": csrf})
        assert ended.status_code == 204
        assert (await client.get("/admin")).status_code == 303  # signed out: to the sign-in page

    api.run(go)


def test_a_journal_seq_beyond_what_the_store_holds_is_bad_input(api: Api) -> None:
    # schemathesis found it: a seq past SQLite's INTEGER crashed the event stream (500).
    started = api.call("POST", "/api/v1/clusters/quick/runs", role="operator", json={})
    assert started.status_code == 202, started.text
    run_id = started.json()["run_id"]
    wait_finished(api, run_id)
    events = f"/api/v1/runs/{run_id}/events"
    for query, headers, field in [
        (f"?after={2**63}", {}, "after"),
        ("", {"Last-Event-ID": str(2**63)}, "Last-Event-ID"),
        ("", {"Last-Event-ID": "-1"}, "Last-Event-ID"),
    ]:
        got = api.call("GET", events + query, role="viewer", headers=headers)
        assert got.status_code == 422, got.text
        assert [f["field"] for f in got.json()["error"]["fields"]] == [field]
    # the largest seq there can be is a question with an answer: nothing after it
    last = api.call("GET", events, role="viewer", headers={"Last-Event-ID": str(2**63 - 1)})
    assert last.status_code == 200 and "event: journal" not in last.text and "event: end" in last.text


@pytest.mark.parametrize("path", ["/api/v1/reports", "/api/v1/export"])
def test_a_date_that_utc_cannot_hold_is_bad_input(api: Api, path: str) -> None:
    # schemathesis found it: year 1 east of Greenwich is year 0 in UTC, and the query crashed (500).
    for field, value in [("since", "0001-01-01T00:00:00+01:00"), ("until", "9999-12-31T23:59:59-01:00")]:
        got = api.call("GET", path, params={field: value})
        assert got.status_code == 422, got.text
        assert got.json()["error"]["fields"][0]["field"] == field
        assert value in got.json()["error"]["message"]
    # the same dates within range are fine
    fine = api.call(
        "GET", path, params={"since": "0001-01-01T00:00:00-01:00", "until": "9999-12-31T00:00:00Z"}
    )
    assert fine.status_code == 200, fine.text


def test_a_run_option_window_through_the_api(api: Api) -> None:
    bad = api.call(
        "POST",
        "/api/v1/clusters/quick/runs",
        role="operator",
        json={"options": {"window": "daily@1am for 1h"}},
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_profile"
    assert "window" in bad.json()["error"]["fields"][0]["field"]
    assert "'1am' is not a time of day" in bad.text
    opens = datetime.now(UTC) + timedelta(hours=12)
    run = api.call(
        "POST",
        "/api/v1/clusters/quick/runs",
        role="operator",
        json={"options": {"window": f"daily@{opens:%H:%M} for 1h"}},
    )
    assert run.status_code == 202
    report = wait_finished(api, run.json()["run_id"])
    assert report["state"] == "Paused" and report["error_id"] == "OutsideMaintenanceWindow"
    assert f"it opens next at {opens:%Y-%m-%d %H:%M} UTC" in report["message"]
    assert report["pauses"][0]["error_id"] == "OutsideMaintenanceWindow"
    assert all(n["started"] is None for n in report["nodes"])


def test_an_operator_checks_a_cluster_s_readiness_as_cau_check_does(api: Api) -> None:
    ok = api.call("GET", "/api/v1/clusters/quick/check", role="operator")
    assert ok.status_code == 200, ok.text
    body = ok.json()
    assert body["cluster"] == "quick" and body["schema_version"] == 1
    outcomes = {r["rule"]: r["outcome"] for r in body["results"]}
    assert outcomes["quorum"] == "pass" and outcomes["no-automatic-updates"] == "not-applicable"
    # a stored profile's options are checked: a failure budget the cluster cannot meet fails
    api.call("POST", "/api/v1/profiles", json={"name": "tight", "options": {"max_failed_nodes": 99}})
    tight = api.call("GET", "/api/v1/clusters/quick/check?profile=tight", role="operator").json()
    (budget,) = [r for r in tight["results"] if r["rule"] == "failure-budget"]
    assert budget["outcome"] == "fail" and "max_failed_nodes = 99 is out of range" in budget["detail"]
    unknown = api.call("GET", "/api/v1/clusters/quick/check?profile=nope", role="operator")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_profile"
    assert api.call("GET", "/api/v1/clusters/nope/check", role="operator").status_code == 404


def test_a_run_in_progress_has_an_eta_in_its_summary_and_its_report(api: Api) -> None:
    async def go(client: httpx.AsyncClient) -> tuple[dict, dict]:
        op = api.headers("operator")
        r = await client.post("/api/v1/clusters/slow/runs", headers=op, json={})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        for _ in range(400):
            summary = (await client.get("/api/v1/clusters/slow", headers=op)).json()["active_run"]
            if summary and summary["eta"]:
                break
            await asyncio.sleep(0.05)
        report = (await client.get(f"/api/v1/runs/{run_id}", headers=op)).json()
        await client.post(f"/api/v1/runs/{run_id}/stop", headers=op, json={"reason": "done looking"})
        for _ in range(1200):
            if (await client.get(f"/api/v1/runs/{run_id}", headers=op)).json()["state"] != "Running":
                break
            await asyncio.sleep(0.05)
        return summary, report

    summary, report = api.run(go)
    eta = summary["eta"]
    assert eta is not None, summary
    # no past run of this cluster: a rough prediction, said so, with a wide margin
    assert eta["basis"] == "default" and eta["remaining_seconds"] > 0
    assert eta["plus_minus_seconds"] == pytest.approx(eta["remaining_seconds"] * 0.5)
    assert datetime.fromisoformat(eta["eta"]) > datetime.fromisoformat(summary["started"])
    assert summary["predicted_seconds"] == eta["predicted_seconds"] > 0
    assert report["eta"] is not None and report["predicted_seconds"] == summary["predicted_seconds"]
