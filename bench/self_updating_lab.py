"""Benchmark: self-updating vs remote-updating mode on the same real Pacemaker lab, and how long
the coordinator role takes to move.

A 3-node `cau lab up --pacemaker --self-updating` lab (etcd on every host, cau installed on
every host, the journal in etcd). On a freshly restored lab each time (OLD packages, NEW
published):
    remote:  `cau run` from this machine (outside the cluster), the same store;
    role:    `cau role add` (once), then `cau role update-now`: the coordinator runs on a node as
             the Pacemaker resource cau-coordinator and hands over before its own node.
Printed: each run's wall time (from the command / the update-now to the run's end, as its report
says), the ratio role / remote, every hand-over (from the coordinator's HandOver intent to the next
coordinator taking the run: ban, Pacemaker's stop and start of the agent, cau's start-up, the lock)
and their median.

    sudo .venv/bin/python bench/self_updating_lab.py [--repeat 2] [--keep-lab]

Needs root (the lab). Its own names: state /var/tmp/cau-lab-bench-su, netns caubs-*,
10.77.161.0/24; the lab goes down at the end unless --keep-lab.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

import tomli_w
from tests.lab.support import handover_seconds

from cau.journal.events import JournalEvent
from cau.service import Service
from cau_lab import Lab, LabConfig

STATE = Path("/var/tmp/cau-lab-bench-su")


def cau(
    lab: Lab, home: Path, config: Path, *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    env.update(CAU_HOME=str(home), CAU_CONFIG=str(config))
    return subprocess.run(
        [sys.executable, "-m", "cau", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(done.args[2:])} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def events(home: Path, config: Path, run_id: str) -> list[JournalEvent]:
    async def read() -> list[JournalEvent]:
        svc = Service(home, config)
        try:
            return list(await svc.store.events(run_id))
        finally:
            svc.close()

    return asyncio.run(read())


def report_of(lab: Lab, home: Path, config: Path, run_id: str) -> dict[str, Any] | None:
    args = ("report", lab.cluster, "--run", run_id, "--detailed", "--format", "json")
    done = cau(lab, home, config, *args, timeout=60)
    if done.returncode != 0:
        return None
    rep: dict[str, Any] = json.loads(done.stdout)[0]
    return rep if rep["state"] == "Finished" else None


def role_run(lab: Lab, home: Path, config: Path) -> tuple[float, dict[str, Any]]:
    t0 = time.monotonic()
    ok(cau(lab, home, config, "role", "update-now", lab.cluster, timeout=120))
    run_id = None
    while run_id is None:
        st = json.loads(ok(cau(lab, home, config, "status", lab.cluster, "--output", "json", timeout=60)))
        if st["active"]:
            run_id = st["run"]["run_id"]
        elif time.monotonic() - t0 > 120:
            raise SystemExit("the role's run did not start in 120 s")
        else:
            time.sleep(0.5)
    while True:
        rep = report_of(lab, home, config, run_id)
        if rep is not None:
            return time.monotonic() - t0, rep
        if time.monotonic() - t0 > 900:
            raise SystemExit(f"run {run_id} did not finish in 900 s")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    cfg = LabConfig(
        state_dir=STATE, name="caubs", subnet="10.77.161.0/24", nodes=3, pacemaker=True, self_updating=True
    )
    lab = Lab(cfg, detach=False)
    t0 = time.monotonic()
    lab.up(recreate=True)
    print(f"lab up: {time.monotonic() - t0:.1f}s")
    home = Path(tempfile.mkdtemp(prefix="cau-bench-su-"))
    config = home / "clusters.toml"
    data = tomllib.loads(lab.config_path.read_text())
    data["clusters"][lab.cluster]["options"]["role"] = {"poll": 1.0}  # the daemons look every second
    config.write_text(tomli_w.dumps(data))
    remote: list[float] = []
    role: list[float] = []
    moves: list[float] = []
    try:
        for i in range(args.repeat):
            lab.restore()
            t = time.monotonic()
            rep = json.loads(ok(cau(lab, home, config, "run", lab.cluster, "--output", "json")))
            remote.append(time.monotonic() - t)
            said = f"{rep['status']}, report {rep['duration_seconds']:.1f}s"
            print(f"remote run {i + 1}: {remote[-1]:.1f}s wall ({said})")
        ok(cau(lab, home, config, "role", "add", lab.cluster, "--disabled", timeout=300))
        for i in range(args.repeat):
            lab.reset_packages()  # (restore would put back the starting CIB, without the role)
            wall, rep = role_run(lab, home, config)
            role.append(wall)
            these = handover_seconds(events(home, config, rep["run_id"]))
            moves += these
            nodes = [c["node"] for c in rep["coordinators"]]
            print(
                f"role run {i + 1}: {wall:.1f}s wall ({rep['status']},"
                f" report {rep['duration_seconds']:.1f}s);"
                f" coordinators on {nodes}; hand-overs {[round(s, 2) for s in these]}"
            )
        ok(cau(lab, home, config, "role", "remove", lab.cluster, timeout=300))
    finally:
        if not args.keep_lab:
            lab.down()
    r, s = statistics.median(remote), statistics.median(role)
    print(f"\nmedian wall: remote {r:.1f}s, self-updating {s:.1f}s, ratio {s / r:.2f}x")
    if moves:
        print(f"hand-overs: {len(moves)}, median {statistics.median(moves):.2f}s, max {max(moves):.2f}s")


if __name__ == "__main__":
    main()
