"""A health gate and alert silences around a real Pacemaker run on the lab: Debian's Prometheus
and Alertmanager (on loopback, started here), the real `cau` command against the lab's cluster.

One run does it all, as an operator would set it up:

* a Prometheus gate `node_ok{node="{node}"} == 0` (stable_for 3 s) on a Prometheus scraping a
  test exporter: when node1 has failed back, its metric goes bad for 4 s (its storage
  rebuilding, say); node2 is drained only once node1's metric was green for stable_for;
* Alertmanager silences: each node is silenced exactly while it is in maintenance (polled every
  0.1 s during the run);
* the coordinator is killed (SIGKILL) as soon as node2 is in standby, its drain under way: its
  silence of node2 stays; the same command resumes the run, finishes the drain, finds that
  silence again and expires it; none is left at the end, nothing is installed twice, and the
  cluster is back where it started (no standby, no constraint, every workload home).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from cau_lab import Lab
from tests.lab.support import NEW, NOTHING_LEFT, START, cau_leftovers, env, run_json, versions
from tests.support import journal_rows
from tests.support_prometheus import Monitoring, monitoring

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NODES = ["node1", "node2", "node3"]


@pytest.fixture(scope="module")
def mon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitoring]:
    with monitoring(tmp_path_factory.mktemp("monitoring"), NODES) as started:
        yield started


def config(lab: Lab, mon: Monitoring, path: Path) -> Path:
    data = tomllib.loads(lab.config_path.read_text())
    cluster = data["clusters"][lab.cluster]
    cluster["health_gates"] = [
        {
            "name": "node-ok",
            "kind": "prometheus",
            "url": mon.prometheus.url,
            "query": 'node_ok{node="{node}"} == 0',
            "interval": "500ms",
            "stable_for": "3s",
            "timeout": "2m",
        }
    ]
    cluster["alertmanager"] = {
        "url": mon.alertmanager.url,
        "matchers": {"instance": "{node}:9100", "job": "node"},
        "comment": "patching",
        "duration": "30m",
    }
    path.write_text(tomli_w.dumps(data))
    return path


def rows(home: Path) -> list[dict[str, Any]]:
    """Every journal event in `home`'s store so far (none before the store exists)."""
    return journal_rows(home / "cau.db")


def ts(row: dict[str, Any]) -> datetime:
    value = datetime.fromisoformat(str(row["ts"]))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def first(found: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    hits = [r for r in found if all(r.get(k) == v or r["data"].get(k) == v for k, v in match.items())]
    assert hits, f"no journal event {match}"
    return hits[0]


def wait_for(home: Path, pred: Callable[[dict[str, Any]], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not any(pred(r) for r in rows(home)):
        assert time.monotonic() < deadline, f"no {what} after {timeout:g} s"
        time.sleep(0.1)


def test_a_prometheus_gate_holds_node2_until_node1_recovered_and_each_node_is_silenced_only_in_maintenance(
    clean_pcmk_lab: Lab, tmp_path: Path, mon: Monitoring
) -> None:
    lab = clean_pcmk_lab
    mon.alertmanager.expire_all()  # nothing from an earlier test
    for node in NODES:
        lab.exec(node, ": > /var/log/dpkg.log")
    cfg = config(lab, mon, tmp_path / "clusters.toml")
    home = tmp_path / "home"
    home.mkdir()
    seen: list[tuple[datetime, set[str]]] = []
    stop = threading.Event()

    def poll_silences() -> None:
        while not stop.is_set():
            seen.append((datetime.now(UTC), set(mon.alertmanager.active())))
            stop.wait(0.1)

    def node1_breaks() -> None:
        failed_back = ("outcome", "failback", "node1")
        wait_for(home, lambda r: (r["kind"], r["step"], r["node"]) == failed_back, "failback of node1")
        mon.exporter.set("node1", 0)
        time.sleep(4)
        mon.exporter.set("node1", 1)

    poller = threading.Thread(target=poll_silences, daemon=True)
    breaker = threading.Thread(target=node1_breaks, daemon=True)
    poller.start()
    breaker.start()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cau", "run", lab.cluster, "--node-order", "node1,node2,node3"],
            env=env(lab, home, cfg),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:  # killed as soon as node2 is in standby: silenced, its drain under way
            lab.pacemaker.wait(lambda st: st.nodes["node2"].standby, timeout=180)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert lab.pacemaker.state().nodes["node2"].standby  # what the dead coordinator left
        breaker.join(timeout=30)
        left = mon.alertmanager.active()
        assert set(left) == {"node2"}  # the dead coordinator's silence of node2
        code, report, err = run_json(lab, home, config=cfg)  # the same command resumes the run
    finally:
        stop.set()
        poller.join(timeout=5)
    assert code == 0, err
    assert report["status"] == "Succeeded"
    assert mon.alertmanager.active() == {}  # none left

    found = rows(home)
    # the gate: red once node1 was back, green again after 4 s; node2 drained only once node1's
    # metric had been green for stable_for (3 s)
    red = first(found, kind="gate", node="node1", state="red")
    recovered = next(
        r
        for r in found
        if r["kind"] == "gate"
        and r["node"] == "node1"
        and r["data"]["state"] == "green"
        and r["seq"] > red["seq"]
    )
    assert (ts(recovered) - ts(red)).total_seconds() >= 2
    assert 'node="node1"' in red["data"]["answer"]
    node2_drain = first(found, kind="intent", step="enter_maintenance", node="node2")
    assert ts(node2_drain) - ts(recovered) >= timedelta(seconds=3)

    # silences: each node's only between its drain and its end (the slack: a poll in flight)
    slack = timedelta(milliseconds=300)
    for node in NODES:
        entered = ts(first(found, kind="intent", step="enter_maintenance", node=node))
        done = ts(first(found, kind="node_finished", node=node))
        silenced = [at for at, nodes in seen if node in nodes]
        assert silenced, f"{node} was never seen silenced"
        assert all(entered - slack <= at <= done + slack for at in silenced), node
    # node2's silence was found again and expired by the resumed coordinator, not made anew
    expired = [
        r
        for r in found
        if r["kind"] == "silence" and r["data"]["action"] == "expired" and r["node"] == "node2"
    ]
    assert [r["data"]["silence_id"] for r in expired] == [left["node2"]]

    for node in NODES:
        assert versions(lab, node) == NEW, node
        upgraded = lab.exec(node, "grep -c ' upgrade labpkg:all 1.0 1.1' /var/log/dpkg.log || true").stdout
        assert upgraded.strip() == "1", (node, upgraded)  # installed once, across the two coordinators
    assert lab.pacemaker.locations() == START
    assert cau_leftovers(lab) == NOTHING_LEFT
