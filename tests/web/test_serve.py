"""`cau serve` as a real process: stopping it mid-run leaves the run resumable, never half-done."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest

from cau.web.throttle import PAIR_LIMIT
from tests.web.conftest import Server

pytestmark = pytest.mark.slow

CONFIG = """
[clusters.sandbox]
provider = "sandbox"
[clusters.sandbox.options]
speed = 40
"""


def test_sigterm_mid_run_leaves_it_resumable_and_the_cli_finishes_it(serve: Callable[[str], Server]) -> None:
    server = serve(CONFIG)
    started = server.request("POST", "/api/v1/clusters/sandbox/runs", {"options": {}})
    run_id = started["run_id"]
    for _ in range(600):  # until a node is in maintenance: the worst moment to stop
        report = server.request("GET", f"/api/v1/runs/{run_id}")
        if any(n["maintenance_started"] and n["status"] is None for n in report["nodes"]):
            break
        time.sleep(0.05)
    else:
        pytest.fail("no node entered maintenance")
    log = server.stop()
    assert f"run {run_id} on 'sandbox' left resumable" in log

    # A new server shows the run as interrupted; the CLI sees it too and resumes it to the end.
    again = serve(CONFIG)
    active = again.request("GET", "/api/v1/runs?active=true")
    assert [(r["run_id"], r["interrupted"]) for r in active] == [(run_id, True)]
    again.stop()
    status = json.loads(server.cau("status", "sandbox", "--output", "json").stdout)
    assert status["active"] is True and status["lock"] is None
    assert status["run"]["run_id"] == run_id and status["run"]["state"] == "Running"
    resumed = server.cau("run", "sandbox", "--output", "json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["run_id"] == run_id and report["status"] == "Succeeded"
    assert [n["restarts"] for n in report["nodes"]] == [1, 1, 1, 1]  # nobody restarted twice
    assert not any(n["left_in_maintenance"] for n in report["nodes"])
    shown = json.loads(server.cau("sandbox", "show", "--output", "json").stdout)
    assert not any(n["in_maintenance"] for n in shown["nodes"])


def test_serve_believes_x_forwarded_for_only_from_the_proxies_it_is_told_to_trust(
    serve: Callable[..., Server],
) -> None:
    def sign_in(server: Server, forwarded_for: str) -> tuple[int, str]:
        body = json.dumps({"name": "nobody", "password": "a wrong password"}).encode()
        headers = {"Content-Type": "application/json", "X-Forwarded-For": forwarded_for}
        req = urllib.request.Request(server.url + "/api/v1/session", body, headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, ""
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["error"]["message"]

    # Behind a proxy on loopback, told to trust it: each forwarded client is counted for itself.
    proxied = serve(CONFIG, "--trusted-proxy", "127.0.0.1")
    assert [sign_in(proxied, f"198.51.100.{i}")[0] for i in range(PAIR_LIMIT + 1)] == [401] * (PAIR_LIMIT + 1)
    # Not told: the header is ignored, and every one of those clients is the connection's address.
    plain = serve(CONFIG)
    codes = [sign_in(plain, f"198.51.100.{i}") for i in range(PAIR_LIMIT + 1)]
    assert [c for c, _ in codes] == [401] * PAIR_LIMIT + [429]
    assert "'nobody' from here" in codes[-1][1]
