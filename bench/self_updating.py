"""Self-updating vs remote-updating on the sandbox, one run each: the run's wall time, and for
each hand-over the time from the role having moved (`HandOver moved` in the journal) to the new
coordinator process taking the run (its `coordinator` record). Real processes, real time.

    .venv/bin/python bench/self_updating.py [--speed 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cau.domain.runs import ReportQuery
from cau.journal.events import Coordinator, EventPayload, HandOver
from cau.service import Service


def cau(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    env.update(CAU_HOME=str(home / "data"), CAU_CONFIG=str(home / "clusters.toml"))
    done = subprocess.run([sys.executable, "-m", "cau", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"cau {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def setup(home: Path, speed: float) -> None:
    home.mkdir(parents=True)
    (home / "clusters.toml").write_text(
        f'[clusters.branch]\nprovider = "sandbox"\n[clusters.branch.options]\nspeed = {speed}\n'
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--speed", type=float, default=100.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        remote = Path(tmp) / "remote"
        setup(remote, args.speed)
        started = time.monotonic()
        cau(remote, "run", "branch")
        remote_s = time.monotonic() - started

        role = Path(tmp) / "role"
        setup(role, args.speed)
        cau(role, "role", "add", "branch")
        cau(role, "role", "update-now", "branch")
        started = time.monotonic()
        cau(role, "daemon", "branch", "--exit-when-idle", "--poll", "0.1")
        role_s = time.monotonic() - started

        async def journal() -> list[tuple[float, EventPayload]]:
            svc = Service(role / "data", role / "clusters.toml")
            try:
                run = (await svc.runs(ReportQuery()))[-1]
                return [(e.ts.timestamp(), e.payload) for e in await svc.events(run.run_id)]
            finally:
                svc.close()

        events = asyncio.run(journal())
    gaps = []
    for i, (ts, payload) in enumerate(events):
        if isinstance(payload, HandOver) and payload.stage == "moved":
            took = next(t for t, p in events[i + 1 :] if isinstance(p, Coordinator))
            gaps.append(took - ts)
    print(f"sandbox, 4 nodes, speed {args.speed:g}")
    print(f"remote-updating run (cau run):             {remote_s:6.2f} s")
    print(f"self-updating run (cau daemon, role):      {role_s:6.2f} s  ({role_s / remote_s:.2f}x)")
    if gaps:
        print(
            f"hand-overs: {len(gaps)}, role moved -> new coordinator took the run: "
            f"median {statistics.median(gaps) * 1000:.0f} ms, max {max(gaps) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
