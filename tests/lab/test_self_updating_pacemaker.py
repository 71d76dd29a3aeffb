"""Self-updating mode on a real Pacemaker cluster (issue 12): `cau role add` makes the
coordinator a Pacemaker resource of cau's own agent (ocf:cau:coordinator), which runs `cau daemon
--resident` on one node; the run's journal, lock and reports live in the etcd cluster on the
nodes themselves (the `su_lab`: etcd on every host, cau installed on every host).

One lab, one role, three runs that each earn their minutes:
1. `update-now` on a disabled role: the run rolls through the cluster while the coordinator
   moves; mid-run, a remote `cau run` is refused naming the role's coordinator; the coordinator's
   host is powered off hard in the middle of another node's update (its etcd member goes with
   it) and the run is still completed by a coordinator on another node: nothing left in standby,
   nothing installed twice.
2. The disabled role's scheduled start passes: nothing starts, and the audit trail says why.
3. Enabled, its scheduled start fires, and the run completes with the role having moved (the
   journal names each coordinator and its node). Hand-over times and the run's wall time are
   printed (the note's figures).
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cau.journal.events import EventKind, JournalEvent
from cau.providers.pacemaker_role import AGENT_PATH, ROLE_RESOURCE
from cau.service import Service
from cau_lab import Lab
from tests.lab.support import NEW, cau, cau_leftovers, config_with, handover_seconds, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]

POLL = 1.0  # the daemons' poll interval, seconds


def wait_for(what: str, probe: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")


def cau_ok(lab: Lab, home: Path, *args: str, timeout: float = 120) -> str:
    done = cau(lab, home, *args, timeout=timeout)
    assert done.returncode == 0, f"cau {' '.join(args)}: {done.stderr}{done.stdout}"
    return done.stdout


def role(lab: Lab, home: Path) -> dict[str, Any]:
    out = cau(lab, home, "role", "show", lab.cluster, "--output", "json", "--no-check")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


def status(lab: Lab, home: Path) -> dict[str, Any] | None:
    """The run in progress as `cau status` shows it from this machine (the store on the nodes)."""
    out = cau(lab, home, "status", lab.cluster, "--output", "json", timeout=60)
    if out.returncode != 0 or not out.stdout.strip():
        return None
    data: dict[str, Any] = json.loads(out.stdout)
    run: dict[str, Any] | None = data["run"] if data["active"] else None
    return run


def events(lab: Lab, home: Path, run_id: str) -> list[JournalEvent]:
    """The run's journal, read from the etcd store on the nodes (any member)."""

    async def read() -> list[JournalEvent]:
        svc = Service(home, lab.config_path)
        try:
            return list(await svc.store.events(run_id))
        finally:
            svc.close()

    return asyncio.run(read())


def upgrades(lab: Lab, node: str) -> int:
    """How many times dpkg upgraded labpkg to the new version on `node` since the log was cut."""
    out = lab.exec(node, "grep -c ' upgrade labpkg:all 1.0 1.1' /var/log/dpkg.log || true").stdout
    return int(out.strip() or 0)


def cib_leftovers(lab: Lab) -> dict[str, list[str]]:
    """Standby nodes and cau-* constraints (tests.lab.support.cau_leftovers, without meta)."""
    found = cau_leftovers(lab)
    return {"standby": found["standby"], "constraints": found["constraints"]}


def next_minute(after: timedelta) -> datetime:
    at = datetime.now(UTC) + after
    return (at + timedelta(minutes=1)).replace(second=0, microsecond=0)


@pytest.fixture
def su(su_lab: Lab, tmp_path: Path) -> Iterator[tuple[Lab, Path]]:
    """The self-updating lab with old packages, new ones published, the dpkg log cut; the role
    removed afterwards whatever happened (nothing of cau's left in the cluster)."""
    lab = su_lab
    lab.restore()  # the starting CIB (no role resource, no ban), an empty etcd store
    for node in lab.nodes:
        lab.exec(node, ": > /var/log/dpkg.log; rm -f /var/log/cau/coordinator.log")
    home = tmp_path / "home"
    yield lab, home
    stopped = cau(lab, home, "stop", lab.cluster, timeout=60)
    removed = cau(lab, home, "role", "remove", lab.cluster, timeout=180)
    print("teardown:", stopped.stdout, stopped.stderr, removed.stdout, removed.stderr)


def test_the_role_rolls_through_the_cluster_survives_its_hosts_power_off_and_runs_on_schedule(
    su: tuple[Lab, Path],
) -> None:
    lab, home = su
    pm = lab.pacemaker
    dc = pm.state().dc
    options = json.dumps({"max_retries_per_node": 1})
    config = config_with(lab, home.parent / "clusters.toml", role={"poll": POLL})
    first_start = next_minute(timedelta(seconds=100))

    # --- the role: a Pacemaker resource of cau's agent, on one node; disabled, with a schedule --
    added = cau(
        lab, home, "role", "add", lab.cluster, "--disabled", "--options", options,
        "--schedule", f"once:{first_start:%Y-%m-%dT%H:%M}", "--tz", "UTC",
        "--output", "json", timeout=240, config=config,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr + added.stdout
    view = json.loads(added.stdout)
    assert all(c["ok"] for c in view["readiness"]), view["readiness"]
    checks = {c["check"] for c in view["readiness"]}
    assert "cau and its plug-ins are the same on every node that may lead" in checks
    assert "every node's cau knows the cluster and reaches the store" in checks
    owner = view["owner"]
    assert owner in lab.nodes
    assert pm.state().status.resource(ROLE_RESOURCE) is not None
    for node in lab.nodes:  # the agent is on every node
        assert lab.exec(node, f"test -x {AGENT_PATH}").returncode == 0, node
    # (the daemon polls every second: the role's `poll` in the config the role was added with)

    # --- 1. update now; a remote run is refused; the coordinator's host is powered off ---------
    before = {n: lab.boot_id(n) for n in lab.nodes}
    cau_ok(lab, home, "role", "update-now", lab.cluster)
    running = wait_for("the role's run to start", lambda: status(lab, home), 60)
    run_id = running["run_id"]

    refused = cau(lab, home, "run", lab.cluster, timeout=60)
    assert refused.returncode == 6, refused.stderr  # locked
    # the owner, named: the role's daemon on the node it runs on now (it may have moved already),
    # or, asked while no daemon holds the lock (between two passes of the role's daemon), the
    # clustered role with its last coordinator's node
    named = re.search(r"being updated by cau daemon on (\S+) ", refused.stderr) or re.search(
        r"belongs to the cluster's clustered role \(its last coordinator ran on (\S+)\)", refused.stderr
    )
    assert named and named.group(1) in lab.nodes, refused.stderr

    def other_node_installing() -> tuple[str, str] | None:
        """(the coordinator's node, a node it has drained and not restarted yet), read from the
        journal in the store (in-process: a look takes milliseconds, the window a second or two)."""
        journal = events(lab, home, run_id)
        took = [e.data.get("node") for e in journal if e.kind is EventKind.COORDINATOR]
        if not took or took[-1] is None:
            return None
        done = {(e.node, e.step) for e in journal if e.kind is EventKind.OUTCOME}
        for node in lab.nodes:
            if node != took[-1] and (node, "enter_maintenance") in done and (node, "restart") not in done:
                return took[-1], node
        return None

    victim, updating = wait_for(
        "a node's update under the role's coordinator", other_node_installing, 240, 0.3
    )
    lab.kill(victim)  # hard power-off: the coordinator and the etcd member on it go at once
    # Off long enough for Pacemaker to see it gone and start the role elsewhere; that coordinator
    # takes the run over once the dead one's lease ran out (lease = 20 s in the lab's config).
    wait_for(
        "the role to restart on another node", lambda: role(lab, home)["owner"] not in (None, victim), 60, 1
    )
    lab.boot(victim)  # powered on again: it rejoins the cluster and etcd

    report = wait_for(
        "the run to finish after the power-off", lambda: finished_run(lab, home, run_id), 600, 2
    )
    assert report["status"] == "Succeeded", report
    for node in lab.nodes:
        assert versions(lab, node) == NEW, node
        assert lab.boot_id(node) != before[node], node
        assert upgrades(lab, node) == 1, node  # nothing installed twice
    coordinators = [c["node"] for c in report["coordinators"]]
    assert len(set(coordinators)) >= 2, coordinators  # the role moved (at least once)
    # after the power-off, a coordinator on another node took the run over (and resumed it)
    after = [c for c in report["coordinators"] if c["resumed"] and c["node"] != victim]
    assert after, report["coordinators"]
    assert report["nodes"][-1]["name"] == dc, "the DC is updated last"
    assert cib_leftovers(lab) == {"standby": [], "constraints": []}
    print("run 1 (update-now, power-off of", victim, "while", updating, "updated):",
          f"{report['duration_seconds']:.1f}s, coordinators {coordinators}")  # fmt: skip

    # --- 2. the disabled role's scheduled start passes: nothing starts --------------------------
    lab.reset_packages()
    for node in lab.nodes:
        lab.exec(node, ": > /var/log/dpkg.log")
    wait_for(
        "the first scheduled start to pass",
        lambda: datetime.now(UTC) > first_start + timedelta(seconds=8),
        200,
        1,
    )
    assert status(lab, home) is None, "a disabled role started a run"
    # the coordinator said so (its log on the role's node; the audit trail there has it too)
    where = role(lab, home)["owner"]
    said = lab.exec(where, "cat /var/log/cau/coordinator.log").stdout
    assert f"the role is disabled: no run for the start at {first_start:%Y-%m-%d %H:%M} UTC" in said, said[
        -2000:
    ]

    # --- 3. enabled, its next scheduled start fires and the run completes with hand-overs -------
    second_start = next_minute(timedelta(seconds=15))
    cau_ok(lab, home, "role", "set", lab.cluster, "--schedule", f"once:{second_start:%Y-%m-%dT%H:%M}",
           "--tz", "UTC", timeout=240)  # fmt: skip
    cau_ok(lab, home, "role", "enable", lab.cluster, timeout=240)
    scheduled = wait_for("the scheduled run to start", lambda: status(lab, home), 150, 1)
    started_by = scheduled.get("started_by") or ""
    assert "schedule" in started_by, scheduled
    run2 = scheduled["run_id"]
    report2 = wait_for("the scheduled run to finish", lambda: finished_run(lab, home, run2), 600, 2)
    assert report2["status"] == "Succeeded", report2
    for node in lab.nodes:
        assert versions(lab, node) == NEW, node
        assert upgrades(lab, node) == 1, node
    journal = events(lab, home, run2)
    took = [(e.data.get("node"), e.data.get("resumed")) for e in journal if e.kind is EventKind.COORDINATOR]
    assert len({n for n, _ in took}) >= 2 and all(n in lab.nodes for n, _ in took), took
    moves = handover_seconds(journal)
    assert moves, "the role never moved"
    assert cib_leftovers(lab) == {"standby": [], "constraints": []}
    print(
        f"run 2 (scheduled): {report2['duration_seconds']:.1f}s wall; coordinators {[n for n, _ in took]};"
        f" hand-overs {[f'{s:.1f}s' for s in moves]} (median {statistics.median(moves):.1f}s)"
    )


def finished_run(lab: Lab, home: Path, run_id: str) -> dict[str, Any] | None:
    """The run's report, as `cau report` gives it from this machine, once the run finished."""
    out = cau(lab, home, "report", lab.cluster, "--run", run_id, "--detailed", "--format", "json", timeout=60)
    if out.returncode != 0:
        return None
    rep: dict[str, Any] = json.loads(out.stdout)[0]
    return rep if rep["state"] == "Finished" else None


def test_role_remove_leaves_nothing_in_the_cluster(su: tuple[Lab, Path]) -> None:
    """Add then remove: no resource, no agent on any node, no constraint."""
    lab, home = su
    cau_ok(lab, home, "role", "add", lab.cluster, "--disabled", timeout=240)
    cau_ok(lab, home, "role", "remove", lab.cluster, timeout=240)
    assert lab.pacemaker.state().status.resource(ROLE_RESOURCE) is None
    for node in lab.nodes:
        assert lab.exec(node, f"test -e {AGENT_PATH}").returncode != 0, node
    assert cib_leftovers(lab) == {"standby": [], "constraints": []}
