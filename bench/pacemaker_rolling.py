"""Benchmark: a rolling update of the 3-node Pacemaker lab by cau, and the drain/undrain cost of
the usual manual recipe (`crm_attribute ... standby` + `crm_resource --wait`) on the same cluster.

For each repetition, on a freshly restored lab (OLD packages, NEW published, workloads on their
start nodes):
    cau:     `cau run` with the lab's pacemaker cluster (standby drains, apt, real restarts,
             immediate failback), probes at 50 ms on vm1 (live-migratable), web (failover group)
             and web-clone (on every node).
    manual:  for each node, `crm_attribute --node N --name standby --update on && crm_resource
             --wait`, then `--update off && crm_resource --wait`, timed (no update, no restart:
             only the cluster moves, which is what cau's drain and failback steps replace).

Printed: cau's wall time; per node, the seconds of each step from cau's report (drain, install,
restart until the node is a Pacemaker member again, exit, failback); the drain and undrain times
of both, medians, and their ratio; each workload's probe figures (failed, downtime).

    sudo .venv/bin/python bench/pacemaker_rolling.py [--repeat 3] [--keep-lab]

Needs root (the lab). The lab has its own names (state /var/tmp/cau-lab-bench-pcmk, netns
caubp-*, 10.77.160.0/24) and always goes down at the end unless --keep-lab.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cau_lab import Lab, LabConfig

STATE = Path("/var/tmp/cau-lab-bench-pcmk")
STEPS = ("enter_maintenance", "install", "restart", "exit_maintenance", "failback")


def run_cau(lab: Lab, home: Path) -> tuple[float, dict[str, Any]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    env.update(CAU_HOME=str(home), CAU_CONFIG=str(lab.config_path))
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "cau", "run", lab.cluster, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    wall = time.monotonic() - t0
    if done.returncode != 0:
        raise SystemExit(f"cau run failed ({done.returncode}): {done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout)
    return wall, report


def step_seconds(node: dict[str, Any]) -> dict[str, float]:
    out = dict.fromkeys(STEPS, 0.0)
    for s in node["steps"]:
        if s["step"] in out and s.get("finished"):
            began = datetime.fromisoformat(s["started"])
            ended = datetime.fromisoformat(s["finished"])
            out[s["step"]] += (ended - began).total_seconds()
    return out


def manual_cycle(lab: Lab, node: str) -> tuple[float, float]:
    """(drain seconds, undrain seconds) the way the recipe does it, run on another member."""
    other = next(n for n in lab.nodes if n != node)
    pm = lab.pacemaker
    t0 = time.monotonic()
    pm.exec(
        other, f"crm_attribute --node {node} --name standby --update on && crm_resource --wait --timeout=120s"
    )
    t1 = time.monotonic()
    pm.exec(
        other,
        f"crm_attribute --node {node} --name standby --update off && crm_resource --wait --timeout=120s",
    )
    t2 = time.monotonic()
    return t1 - t0, t2 - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 2
    cfg = LabConfig(state_dir=STATE, name="caubp", subnet="10.77.160.0/24", nodes=3, pacemaker=True)
    lab = Lab(cfg, detach=False)
    walls: list[float] = []
    per_step: dict[str, list[float]] = {s: [] for s in STEPS}
    probes: dict[str, list[tuple[int, float]]] = {}
    manual_drain: list[float] = []
    manual_undrain: list[float] = []
    try:
        t = time.monotonic()
        lab.up(recreate=True)
        print(f"lab up (3 Pacemaker nodes) in {time.monotonic() - t:.1f} s")
        for i in range(args.repeat):
            lab.restore()
            with tempfile.TemporaryDirectory() as home:
                wall, report = run_cau(lab, Path(home))
            walls.append(wall)
            order = [n["name"] for n in report["nodes"]]
            print(f"\nrun {i + 1}: cau {wall:.2f} s, status {report['status']}, order {' -> '.join(order)}")
            print(f"  {'node':6} " + " ".join(f"{s:>17}" for s in STEPS))
            for node in report["nodes"]:
                secs = step_seconds(node)
                for s in STEPS:
                    per_step[s].append(secs[s])
                print(f"  {node['name']:6} " + " ".join(f"{secs[s]:17.2f}" for s in STEPS))
            for a in report["availability"]:
                probes.setdefault(a["role"], []).append((a["probes_failed"], a["downtime_seconds"]))
            lab.restore()
            for node in lab.nodes:
                drain, undrain = manual_cycle(lab, node)
                manual_drain.append(drain)
                manual_undrain.append(undrain)
    finally:
        if not args.keep_lab:
            lab.down()

    med = statistics.median
    print(f"\n== {args.repeat} run(s), medians")
    print(f"cau rolling update of 3 nodes (apt + real restarts + failback): {med(walls):.2f} s")
    print("cau per node: " + ", ".join(f"{s} {med(per_step[s]):.2f} s" for s in STEPS))
    cau_undrain = [a + b for a, b in zip(per_step["exit_maintenance"], per_step["failback"], strict=True)]
    print(
        f"drain:   cau {med(per_step['enter_maintenance']):.2f} s vs standby + crm_resource --wait "
        f"{med(manual_drain):.2f} s  (ratio {med(manual_drain) / med(per_step['enter_maintenance']):.2f}x)"
    )
    print(
        f"undrain: cau exit + failback {med(cau_undrain):.2f} s vs unstandby + crm_resource --wait "
        f"{med(manual_undrain):.2f} s  (ratio {med(manual_undrain) / med(cau_undrain):.2f}x)"
    )
    for role, figures in probes.items():
        failed = [f for f, _ in figures]
        down = [d for _, d in figures]
        print(f"probe {role:10} failed per run {failed}, downtime per run {[round(d, 2) for d in down]} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
