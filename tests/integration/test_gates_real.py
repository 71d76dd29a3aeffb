"""Health gates and alert silences against a real Prometheus and a real Alertmanager (Debian's
packages, on loopback): real `cau run` processes update a sandbox cluster.

* A Prometheus gate `node_ok{node="{node}"} == 0` (stable_for 3s) on a Prometheus scraping a test
  exporter: when node n1 has failed back, its metric goes bad for a few seconds; n2 is drained
  only once n1's metric was green for stable_for (read from the journal).
* The metric never recovers: the run pauses (exit 7, HealthGateTimeout, with the gate's name and
  its last answer); it recovers; `cau run` resumes and finishes.
* Alertmanager: each node has a silence exactly while it is in maintenance (polled during the
  run), none after; a coordinator killed with SIGKILL mid-maintenance leaves its silence, the
  resumed run finds it again and expires it; `cau cleanup` expires a leftover.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Cau
from tests.integration.test_cli import journal, wait_for
from tests.support_prometheus import Monitoring, monitoring

pytestmark = pytest.mark.slow

NODES = ["n1", "n2", "n3"]
SPEC = """
speed = 10
scan_seconds = 2
[[nodes]]
name = "n1"
restart_seconds = 20
[[nodes]]
name = "n2"
restart_seconds = 20
[[nodes]]
name = "n3"
restart_seconds = 20
[[updates]]
id = "kernel"
title = "Linux kernel"
restart = true
install_seconds = 5
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    with monitoring(tmp_path_factory.mktemp("monitoring"), NODES) as started:
        yield started


@pytest.fixture
def mon(stack: Monitoring) -> Monitoring:
    for node in NODES:
        stack.exporter.set(node, 1)
    stack.prometheus.wait_for("node_ok == 0", empty=True)
    stack.alertmanager.expire_all()  # a fresh start for each test
    return stack


def configure(cau: Cau, mon: Monitoring, *, gate: bool, silences: bool, timeout: str = "2m") -> None:
    (cau.home / "c.toml").write_text(SPEC)
    text = '[clusters.sandbox]\nprovider = "sandbox"\n[clusters.sandbox.options]\n'
    text += f'spec = "{cau.home / "c.toml"}"\n'
    if gate:
        text += (
            "[[clusters.sandbox.health_gates]]\n"
            'name = "node-ok"\nkind = "prometheus"\n'
            f'url = "{mon.prometheus.url}"\n'
            "query = 'node_ok{node=\"{node}\"} == 0'\n"
            f'interval = "500ms"\nstable_for = "3s"\ntimeout = "{timeout}"\n'
        )
    if silences:
        text += (
            "[clusters.sandbox.alertmanager]\n"
            f'url = "{mon.alertmanager.url}"\n'
            'matchers = { instance = "{node}:9100", job = "node" }\n'
            'comment = "patching"\nduration = "30m"\n'
        )
    (cau.home / "clusters.toml").write_text(text)


def ts(row: dict[str, Any]) -> datetime:
    value = datetime.fromisoformat(str(row["ts"]))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def first(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    found = [r for r in rows if all(r.get(k) == v or r["data"].get(k) == v for k, v in match.items())]
    assert found, f"no journal event {match}"
    return found[0]


def has(cau: Cau, kind: str, step: str, node: str) -> bool:
    return any(r["kind"] == kind and r["step"] == step and r["node"] == node for r in journal(cau))


def after_failback(cau: Cau, node: str, then: Any) -> threading.Thread:
    """Call `then()` once `node`'s failback outcome is in the journal (the node is back)."""

    def follow() -> None:
        wait_for(
            lambda: any(
                r["kind"] == "outcome" and r["step"] == "failback" and r["node"] == node for r in journal(cau)
            ),
            timeout=120,
            what=f"{node}'s failback",
        )
        then()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def test_a_prometheus_gate_holds_the_next_node_until_the_metric_recovered_for_stable_for(
    cau: Cau, mon: Monitoring
) -> None:
    configure(cau, mon, gate=True, silences=False)

    def n1_breaks() -> None:
        mon.exporter.set("n1", 0)  # e.g. its storage rebuilds after the restart
        time.sleep(4)
        mon.exporter.set("n1", 1)

    follower = after_failback(cau, "n1", n1_breaks)
    started = time.monotonic()
    out = cau("run", "sandbox", "--node-order", "n1,n2,n3", timeout=180)
    follower.join(timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = journal(cau)
    red = first(rows, kind="gate", node="n1", state="red")
    greens = [r for r in rows if r["kind"] == "gate" and r["node"] == "n1" and r["data"]["state"] == "green"]
    recovered = next(g for g in greens if g["seq"] > red["seq"])
    n2_drain = first(rows, kind="intent", step="enter_maintenance", node="n2")
    assert (ts(recovered) - ts(red)).total_seconds() >= 2  # it really was red for a while
    # n2 went into maintenance only once n1 had been green for stable_for (3 s)
    assert ts(n2_drain) - ts(recovered) >= timedelta(seconds=3)
    assert red["data"]["answer"].startswith("1 series: node_ok{") and 'node="n1"' in red["data"]["answer"]
    wait = first(rows, kind="gate_wait", node="n1")
    assert wait["data"]["phase"] == "return" and wait["data"]["outcome"] == "passed"
    assert wait["data"]["gates"] == ["node-ok"] and wait["data"]["seconds"] >= 5
    # the detailed report shows the wait under n1
    report = cau("report", "sandbox", "--last", "--detailed")
    assert "health gates after its return: waited" in report.stdout and "node-ok" in report.stdout
    assert time.monotonic() - started < 120


def test_a_gate_that_never_recovers_pauses_the_run_and_cau_run_resumes_it(cau: Cau, mon: Monitoring) -> None:
    configure(cau, mon, gate=True, silences=False, timeout="5s")
    follower = after_failback(cau, "n1", lambda: mon.exporter.set("n1", 0))
    out = cau("run", "sandbox", "--node-order", "n1,n2,n3", timeout=180)
    follower.join(timeout=10)
    assert out.returncode == 7, out.stdout + out.stderr
    status = cau.json("status", "sandbox")
    run = status["run"]
    assert (run["state"], run["error_id"]) == ("Paused", "HealthGateTimeout")
    # the gate's name and its last answer (Prometheus's series, with its labels)
    assert "health gate node-ok is not green after the return of n1" in run["message"]
    assert "last answer: 1 series: node_ok{" in run["message"] and 'node="n1"} = 0' in run["message"]
    assert not [
        r
        for r in journal(cau)
        if r["kind"] == "intent" and r["node"] == "n2" and r["step"] == "enter_maintenance"
    ]

    mon.exporter.set("n1", 1)  # recovered
    mon.prometheus.wait_for("node_ok == 0", empty=True)
    again = cau("run", "sandbox", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    last = cau.json("status", "sandbox")["last_run"]
    assert last["status"] == "Succeeded"
    assert [p["error_id"] for p in last["pauses"]] == ["HealthGateTimeout"]


def test_each_node_is_silenced_exactly_while_in_maintenance(cau: Cau, mon: Monitoring) -> None:
    configure(cau, mon, gate=False, silences=True)
    seen: list[tuple[datetime, set[str]]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            at = datetime.now(UTC)
            seen.append((at, set(mon.alertmanager.active())))
            stop.wait(0.05)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    out = cau("run", "sandbox", "--node-order", "n1,n2,n3", timeout=180)
    stop.set()
    poller.join(timeout=5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert mon.alertmanager.active() == {}  # none left
    rows = journal(cau)
    slack = timedelta(milliseconds=300)  # a poll in flight while the journal was written
    for node in NODES:
        entered = ts(first(rows, kind="intent", step="enter_maintenance", node=node))
        done = ts(first(rows, kind="node_finished", node=node))
        silenced = [at for at, nodes in seen if node in nodes]
        assert silenced, f"{node} was never seen silenced"
        assert all(entered - slack <= at <= done + slack for at in silenced), node
        # silenced for most of its maintenance, not just a glimpse
        assert silenced[-1] - silenced[0] >= (done - entered) / 2
    created = [r for r in rows if r["kind"] == "silence" and r["data"]["action"] == "created"]
    assert sorted(r["node"] for r in created) == NODES
    # the silence matched the node's labels
    ours = [s for s in mon.alertmanager.silences() if s["createdBy"] == "cau"]
    n1 = next(s for s in ours if "node n1]" in s["comment"])
    assert {m["name"]: m["value"] for m in n1["matchers"]} == {"instance": "n1:9100", "job": "node"}
    assert n1["comment"].startswith("patching [cau run ")


def test_a_killed_coordinator_s_silence_is_found_again_and_expired_on_resume(
    cau: Cau, mon: Monitoring
) -> None:
    configure(cau, mon, gate=False, silences=True)
    proc = cau.start("run", "sandbox", "--node-order", "n1,n2,n3")
    wait_for(
        lambda: any(
            r["kind"] == "intent" and r["step"] == "restart" and r["node"] == "n2" for r in journal(cau)
        ),
        timeout=120,
        what="n2's restart",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    left = mon.alertmanager.active()
    assert set(left) == {"n2"}  # the dead coordinator's silence of n2, in maintenance
    out = cau("run", "sandbox", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert mon.alertmanager.active() == {}
    expired = [
        r
        for r in journal(cau)
        if r["kind"] == "silence" and r["data"]["action"] == "expired" and r["node"] == "n2"
    ]
    assert [r["data"]["silence_id"] for r in expired] == [left["n2"]]  # found again, not a new one


def test_cleanup_expires_a_leftover_silence(cau: Cau, mon: Monitoring) -> None:
    configure(cau, mon, gate=False, silences=True)
    # a silence of a run whose coordinator (and journal) was lost
    now = datetime.now(UTC)
    body = {
        "matchers": [{"name": "instance", "value": "n3:9100", "isRegex": False, "isEqual": True}],
        "startsAt": now.isoformat(),
        "endsAt": (now + timedelta(hours=1)).isoformat(),
        "createdBy": "cau",
        "comment": "patching [cau run 20260101-000000-abcdef cluster sandbox node n3]",
    }
    sid = httpx.post(f"{mon.alertmanager.url}/api/v2/silences", json=body, timeout=5).json()["silenceID"]
    assert mon.alertmanager.active() == {"n3": sid}
    out = cau("cleanup", "sandbox")
    assert out.returncode == 0, out.stdout + out.stderr
    assert sid in out.stdout
    assert mon.alertmanager.active() == {}
