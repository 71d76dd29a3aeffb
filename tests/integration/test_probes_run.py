"""Availability probes in real runs: `cau run` probes real HTTP servers on loopback while it updates
the sandbox cluster; one server is stopped during one node's pre-update script (a real outage:
connection refused), the other stays up. What a user checks: the report attributes the outage to
that node and step, the HTML timeline marks it, and a coordinator killed with SIGKILL and resumed
keeps the outage measured before the crash."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Cau
from tests.integration.test_cli import journal, wait_for
from tests.probe_servers import HttpServer

pytestmark = pytest.mark.slow


@dataclass
class Workloads:
    shop: HttpServer  # stopped while the flag file exists
    static: HttpServer  # always up
    flag: Path

    def script(self, node: str, seconds: float = 1.0) -> str:
        """A pre-update script that takes `shop` down for `seconds` on `node`."""
        return f'if [ "$CAU_NODE" = {node} ]; then touch {self.flag}; sleep {seconds}; rm -f {self.flag}; fi'


@pytest.fixture
def workloads(cau: Cau) -> Iterator[Workloads]:
    shop, static = HttpServer().start(), HttpServer().start()
    flag = cau.home / "shop-down"
    stop = threading.Event()

    def follow_flag() -> None:  # the "operator" of the shop: down while the flag exists
        while not stop.is_set():
            down = flag.exists()
            if down and shop.running:
                shop.stop()
            elif not down and not shop.running:
                shop.start()
            stop.wait(0.005)

    watcher = threading.Thread(target=follow_flag, daemon=True)
    watcher.start()
    (cau.home / "clusters.toml").write_text(
        '[clusters.sandbox]\nprovider = "sandbox"\n'
        f'[[clusters.sandbox.probes]]\nrole = "shop"\ntargets = ["{shop.url}"]\ninterval = "50ms"\n'
        f'[[clusters.sandbox.probes]]\nrole = "static"\ntargets = ["{static.url}", "tcp://127.0.0.1:{static.port}"]\n'
        'interval = "50ms"\ntimeout = "2s"\n'
    )
    try:
        yield Workloads(shop, static, flag)
    finally:
        stop.set()
        watcher.join(timeout=5)
        shop.stop()
        static.stop()


def role(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in report["availability"] if a["role"] == name)


def probe_outages(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [o for o in report["outages"] if o["role"] == name and o["source"] == "probe"]


def test_a_run_measures_the_outage_and_attributes_it_to_the_node_and_step(
    cau: Cau, workloads: Workloads, tmp_path: Path
) -> None:
    out = cau("run", "sandbox", "--speed", "300", "--pre-update-script", workloads.script("node2"))
    assert out.returncode == 0, out.stdout + out.stderr
    # the live view shows the outage with its first error: connection refused, or, when the
    # server is stopped in the middle of an answer, a reset or a closed connection
    assert "probe shop: DOWN (" in out.stdout
    assert "Workload availability during the run" in out.stdout

    (report,) = cau.json("report", "sandbox", "--last")
    shop, static = role(report, "shop"), role(report, "static")
    assert shop["measured"] == "probe" and static["measured"] == "probe"
    assert shop["availability_percent"] < 100 and shop["probes_failed"] > 0 and shop["outages"] == 1
    assert static["availability_percent"] == 100 and static["probes_failed"] == 0 and static["outages"] == 0
    assert static["probes_sent"] > 0 and static["probes_ok"] == static["probes_sent"]
    (outage,) = probe_outages(report, "shop")
    assert any(e.startswith("connection refused") for e in outage["errors"])
    assert {"node": "node2", "step": "pre_script"} in [
        {"node": d["node"], "step": d["step"]} for d in outage["during"]
    ]
    assert {d["node"] for d in outage["during"]} == {"node2"}
    assert shop["worst_outage_during"].startswith("node2 / pre_script")
    assert outage["failed_checks"] == shop["probes_failed"]
    # roles the sandbox simulates are still reported by it
    assert role(report, "web-vm")["measured"] == "provider"

    # the journal holds transitions and summaries, not every check
    probe_rows = [r for r in journal(cau) if r["kind"].startswith("probe_")]
    assert len(probe_rows) <= 10 and shop["probes_sent"] > 20

    page = tmp_path / "report.html"
    assert cau("report", "sandbox", "--last", "--format", "html", "-o", str(page)).returncode == 0
    html = page.read_text()
    assert 'class="outage probe"' in html and "shop down: " in html and "during node2 / pre_script" in html
    assert 'data-role="static"' in html  # a measured role without outage still has its lane

    rows = cau("report", "sandbox", "--last", "--format", "csv", "--availability")
    assert rows.returncode == 0
    line = next(r for r in rows.stdout.splitlines() if ",shop,probe," in r)
    assert "node2 / pre_script" in line


def test_sigkill_and_resume_keep_the_outage_measured_before_the_crash(cau: Cau, workloads: Workloads) -> None:
    # node3 goes first (fewest roles): the shop is down during its pre-update script
    proc = cau.start("run", "sandbox", "--speed", "10", "--pre-update-script", workloads.script("node3"))

    def outage_recorded_and_second_node_busy() -> bool:
        rows = journal(cau)
        finished = [r for r in rows if r["kind"] == "node_finished"]
        return (
            any(r["kind"] == "probe_up" for r in rows)
            and bool(finished)
            and any(r["kind"] == "intent" and r["node"] != finished[0]["node"] for r in rows)
        )

    wait_for(outage_recorded_and_second_node_busy, timeout=120, what="the outage and the second node")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    before = [r for r in journal(cau) if r["kind"] == "probe_up"]

    resumed = cau("run", "sandbox", "--speed", "100", timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming run" in resumed.stdout
    (report,) = cau.json("report", "sandbox", "--last")
    assert report["status"] == "Succeeded"
    (outage,) = probe_outages(report, "shop")
    started = datetime.fromisoformat(before[0]["data"]["started"])
    assert datetime.fromisoformat(outage["started"]) == started
    assert "node3" in {d["node"] for d in outage["during"]}
    assert "pre_script" in {d["step"] for d in outage["during"] if d["node"] == "node3"}
    shop = role(report, "shop")
    assert shop["availability_percent"] < 100 and shop["outages"] == 1
    # both coordinators measured: the counts of the killed one (its last summary) and the new one
    sessions = {r["data"]["session"] for r in journal(cau) if r["kind"] == "probe_summary"}
    assert len(sessions) == 2
    assert role(report, "static")["probes_failed"] == 0
    assert os.path.exists(cau.home / "data" / "cau.db")
    assert json.dumps(report)  # the whole report is plain JSON
