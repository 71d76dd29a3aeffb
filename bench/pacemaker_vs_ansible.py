"""Benchmark: cau vs a tuned Ansible playbook, rolling update of the 3-node Pacemaker lab.

The same job for both, one node at a time, on a freshly restored lab each time (OLD packages,
NEW published, workloads on their start nodes): drain (standby), apt update and upgrade, a real
restart (labpkg 1.1 asks for one), wait until the node is an online Pacemaker member again, apt
again for the second-order update, out of standby, and the node's resources moved back to it
(cau's `failback = immediate`), so both end in the same state.

    cau:      `cau --config <lab>/clusters.toml run lab --output json` (the lab's pacemaker cluster)
    Ansible:  bench/ansible/pacemaker_rolling_update.yml, `serial: 1`, tuned: pipelining,
              ControlPersist and Mitogen's `mitogen_linear` strategy (--no-mitogen: without),
              ansible-core and mitogen pinned below, in their own venv (/var/tmp/cau-bench-venv);
              ssh with the lab's key and known_hosts (StrictHostKeyChecking=yes).

Runs are interleaved (cau, Ansible, Ansible, cau, ...), --repeat of each. While each run goes
on, the benchmark itself probes every workload every 50 ms (cau's probe monitor, in-process,
the same targets as the lab's cau probes), so both tools' availability is measured the same way.

Printed: every run's wall time, the medians and their ratio cau / Ansible (the issue's target:
<= 0.70); cau's time per node by step (median run); Ansible's per task; the probes' failed
checks and outage seconds per workload and tool; the node-return detection latency (port 22
watched every 20 ms); and a check that each run did the whole job (every node at 1.1 and
restarted, online and out of standby, every workload started on its start nodes, no location
constraint left). Exit status 1 when a check fails.

    sudo .venv/bin/python bench/pacemaker_vs_ansible.py [--repeat 3] [--no-mitogen] [--keep-lab] [--logs DIR]

Needs root (the lab), and PyPI for the first install of ansible-core and mitogen. The lab has
its own names (state /var/tmp/cau-lab-bench-pcmk-ans, netns caupa-*, 10.77.170.0/24).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path

import lab_vs_ansible as common
import tomli_w

from cau.journal.events import ProbeEvent
from cau.probes.monitor import ProbeMonitor
from cau.probes.spec import ProbeSpec
from cau_lab import Lab, LabConfig
from cau_lab.access import cluster_config

MITOGEN = "0.3.54"  # pinned, with ansible-core in lab_vs_ansible.ANSIBLE_CORE
STATE_DIR = Path("/var/tmp/cau-lab-bench-pcmk-ans")
LAB_NAME = "caupa"
SUBNET = "10.77.170.0/24"
NODES = 3
PLAYBOOK = common.HERE / "ansible" / "pacemaker_rolling_update.yml"
PROBE_INTERVAL = "50ms"

log = common.log


# --- Ansible with Mitogen ---------------------------------------------------------------------------


def ensure_mitogen() -> Path:
    """Mitogen's strategy plugins directory in the bench venv (installed when missing)."""
    python = common.ANSIBLE_VENV / "bin" / "python"
    code = "import ansible_mitogen, os; print(os.path.dirname(ansible_mitogen.__file__))"

    def where() -> str | None:
        done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
        have = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('mitogen'))"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        return done.stdout.strip() if done.returncode == 0 and have == MITOGEN else None

    found = where()
    if found is None:
        log(f"installing mitogen {MITOGEN} into {common.ANSIBLE_VENV}")
        pip = common.ANSIBLE_VENV / "bin" / "pip"
        subprocess.run([str(pip), "install", "-q", f"mitogen=={MITOGEN}"], check=True)
        found = where()
        if found is None:
            raise RuntimeError(f"mitogen {MITOGEN} did not install")
    return Path(found) / "plugins" / "strategy"


# --- availability, measured by the benchmark for both tools ------------------------------------------


@dataclass
class ProbeFigures:
    sent: int = 0
    failed: int = 0
    outages: list[float] = field(default_factory=list)  # seconds of each

    def text(self) -> str:
        down = sum(self.outages)
        return f"{self.failed} failed of {self.sent}, {len(self.outages)} outage(s), {down:.2f} s down"


class ProbeWatch:
    """cau's probe monitor on the lab's workloads, on an event loop of its own thread."""

    def __init__(self, specs: list[ProbeSpec]) -> None:
        self._monitor = ProbeMonitor(specs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="probes", daemon=True)

    def __enter__(self) -> ProbeWatch:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._monitor.start(self._ignore), self._loop).result(10)
        return self

    @staticmethod
    def _ignore(event: ProbeEvent) -> None:
        pass  # the figures are read from the monitor's stats at the end

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._monitor.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def figures(self) -> dict[str, ProbeFigures]:
        out: dict[str, ProbeFigures] = {}
        for pid in self._monitor.probe_ids:
            stats = self._monitor.stats(pid)
            seconds = [(o.ended - o.started).total_seconds() for o in stats.outages if o.ended]
            out[pid] = ProbeFigures(stats.sent, stats.failed, seconds)
        return out


def probe_specs(lab: Lab) -> list[ProbeSpec]:
    probes = cluster_config(lab.cfg)["clusters"][lab.cluster]["probes"]
    return [ProbeSpec.model_validate({**p, "interval": PROBE_INTERVAL}) for p in probes]


# --- the runs ---------------------------------------------------------------------------------------


@dataclass
class Run:
    tool: common.ToolRun
    probes: dict[str, ProbeFigures]


def without_probes(lab: Lab, work: Path) -> Path:
    """The lab's config without cau's own probes: cau then puts no more load on the hosts than
    Ansible does (on a lab of two CPUs, probing every 50 ms costs the workloads some speed)."""
    data = tomllib.loads(lab.config_path.read_text())
    data["clusters"][lab.cluster].pop("probes", None)
    path = work / "clusters-no-probes.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def run_cau(lab: Lab, rep: int, work: Path, config: Path | None) -> Run:
    with ProbeWatch(probe_specs(lab)) as watch:
        run = common.run_cau(lab, rep, work, config)
    return Run(run, watch.figures())


def run_ansible(lab: Lab, rep: int, work: Path, ansible_playbook: Path, strategy: Path | None) -> Run:
    with ProbeWatch(probe_specs(lab)) as watch:
        run = common.run_ansible(lab, rep, work, ansible_playbook, PLAYBOOK, strategy)
    return Run(run, watch.figures())


def fresh(lab: Lab) -> dict[str, str | None]:
    """The lab back to its start (Pacemaker placement included); the boot ids."""
    return common.fresh(lab)


def verify(lab: Lab, run: common.ToolRun, boots: dict[str, str | None]) -> None:
    """The package/restart checks of lab_vs_ansible, plus the cluster's end state."""
    common.verify(lab, run, boots)
    problems: list[str] = []
    pm = lab.pacemaker
    try:
        state = pm.wait(lambda s: s.all_started(), timeout=30)
    except Exception as exc:  # the cluster never settled: that is the finding
        problems.append(f"cluster: {exc}")
    else:
        if state.online != sorted(lab.nodes):
            problems.append(f"online: {', '.join(state.online)}")
        standby = [n for n, s in state.nodes.items() if s.standby or s.maintenance]
        if standby:
            problems.append(f"in standby or maintenance: {', '.join(standby)}")
        for w in pm.workloads:
            where = state.locations(w.id)
            if where != sorted(w.start_nodes):
                began = ", ".join(w.start_nodes)
                problems.append(f"{w.id} on {', '.join(where) or 'no node'} (started on {began})")
    constraints = pm.location_constraints()
    if constraints:
        problems.append(f"location constraints left: {', '.join(constraints)}")
    facts = "cluster: all online, none in standby, every workload back on its start nodes, no constraint left"
    if problems:
        run.check_ok = False
        run.check += "; " + "; ".join(problems)
    else:
        run.check += "; " + facts


# --- the report -------------------------------------------------------------------------------------


def report(runs: list[Run], nodes: list[str]) -> None:
    n = len(nodes)
    cau = [r for r in runs if r.tool.tool == "cau"]
    ans = [r for r in runs if r.tool.tool == "ansible"]
    log()
    cau_wall, ans_wall = common.print_walls([r.tool for r in cau], [r.tool for r in ans], n)
    log(f"   ratio cau / Ansible: {cau_wall / ans_wall:.2f}  (target <= 0.70)")
    log()
    log("2. Where the time goes (median run of each)")
    if cau:
        common.print_overhead(common.median_run([r.tool for r in cau]), n)
    if ans:
        common.print_ansible_tasks(common.median_run([r.tool for r in ans]), n)
    log()
    log(f"3. Availability, probed by the benchmark every {PROBE_INTERVAL} during each run (all runs summed)")
    for name, mine in (("cau", cau), ("Ansible", ans)):
        total: dict[str, ProbeFigures] = defaultdict(ProbeFigures)
        for r in mine:
            for pid, f in r.probes.items():
                t = total[pid]
                t.sent += f.sent
                t.failed += f.failed
                t.outages += f.outages
        for pid, t in sorted(total.items()):
            log(f"   {name:<8} {pid:<10} {t.text()}")
    log()
    log("4. Node-return detection latency (port 22 watched every 20 ms; medians over the runs)")
    samples = common.print_latency([r.tool for r in runs], nodes)
    log(
        f"   median detect: cau {common.fmt(common.median(samples['cau']), 0).strip()} s, "
        f"Ansible {common.fmt(common.median(samples['ansible']), 0).strip()} s"
    )
    log()
    log("5. Did each run do the whole job?")
    common.print_checks([r.tool for r in cau], [r.tool for r in ans])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool, interleaved")
    parser.add_argument("--no-mitogen", action="store_true", help="Ansible's own linear strategy")
    parser.add_argument(
        "--no-cau-probes",
        action="store_true",
        help="cau without its own availability probes (the benchmark's probes still measure both)",
    )
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--logs", type=Path, help="keep the reports and Ansible logs here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("the lab needs root (network namespaces, mounts)")
        return 2
    signal.signal(signal.SIGTERM, common.on_sigterm)
    common.become_subreaper()
    playbook, ansible_version = common.ensure_ansible()
    strategy = None if args.no_mitogen else ensure_mitogen()
    cfg = LabConfig(
        state_dir=STATE_DIR,
        name=LAB_NAME,
        subnet=SUBNET,
        nodes=NODES,
        pacemaker=True,
        packages=common.IMAGE_PACKAGES,
    )
    lab = Lab(cfg, detach=args.keep_lab, log=lambda m: log(f"   lab: {m}"))
    load = os.getloadavg()
    when = f"{datetime.now():%Y-%m-%d %H:%M}"
    log(f"cau vs Ansible on the Pacemaker lab: {NODES} nodes, one at a time ({when})")
    log(
        f"cau {dist_version('cau')}; ansible-core {ansible_version}"
        f"{'' if strategy is None else f' with mitogen {MITOGEN} (mitogen_linear)'}; "
        f"Python {platform.python_version()}; {os.cpu_count()} CPUs, load {load[0]:.2f}"
    )
    if args.no_cau_probes:
        log("cau runs without its own probes (--no-cau-probes)")
    runs: list[Run] = []
    started = time.monotonic()
    with common.workdir(args.logs) as work:
        try:
            lab.up(recreate=True)
            log(f"lab up in {time.monotonic() - started:.1f} s")
            for rep in range(1, args.repeat + 1):
                order = ("cau", "ansible") if rep % 2 else ("ansible", "cau")
                for tool in order:
                    boots = fresh(lab)
                    config = without_probes(lab, work) if args.no_cau_probes else None
                    run = (
                        run_cau(lab, rep, work, config)
                        if tool == "cau"
                        else run_ansible(lab, rep, work, playbook, strategy)
                    )
                    verify(lab, run.tool, boots)
                    runs.append(run)
                    probes = ", ".join(f"{p} {f.failed}" for p, f in sorted(run.probes.items()))
                    log(
                        f"run {rep}/{args.repeat} {tool:<7} {run.tool.wall:6.2f} s  {run.tool.summary}; "
                        f"check {'OK' if run.tool.check_ok else 'FAILED'}; failed probes: {probes}"
                    )
        finally:
            if args.keep_lab:
                log(f"lab left up: `cau lab down --state-dir {STATE_DIR}` takes it down")
            else:
                lab.down()
        if args.logs is not None:
            log(f"reports and logs in {work}")
    report(runs, lab.nodes)
    return 0 if runs and all(r.tool.check_ok for r in runs) else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted (the lab was taken down)", file=sys.stderr)
        sys.exit(130)
