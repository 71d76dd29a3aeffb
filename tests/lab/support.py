"""Shared helpers of the lab tests: the real `cau` command against a lab's cluster config, and
what the tests look at on the hosts and in the Pacemaker CIB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import tomli_w

from cau.journal.events import EventKind, JournalEvent
from cau.store.sqlite import SqliteFile
from cau_lab import Lab

OLD = {"labpkg": "1.0", "labtool": "1.0", "labrelease": "1.0", "labextra": "1.0"}
NEW = {"labpkg": "1.1", "labtool": "1.1", "labrelease": "1.1", "labextra": "1.1"}
T = TypeVar("T")
START = {"vm1": ["node1"], "web": ["node2"], "web-clone": ["node1", "node2", "node3"]}


def env(lab: Lab, home: Path, config: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a `cau` subprocess: its own CAU_HOME, the lab's config (or `config`)."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    out.update(CAU_HOME=str(home), CAU_CONFIG=str(config or lab.config_path), COLUMNS="200", **extra)
    return out


def config_with(lab: Lab, path: Path, **options: Any) -> Path:
    """A copy of the lab's clusters.toml with provider options changed (e.g. drain_timeout)."""
    data = tomllib.loads(lab.config_path.read_text())
    data["clusters"][lab.cluster]["options"].update(options)
    path.write_text(tomli_w.dumps(data))
    return path


def cau(
    lab: Lab,
    home: Path,
    *args: str,
    timeout: float = 400,
    config: Path | None = None,
    environ: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cau", *args],
        env=env(lab, home, config, **(environ or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(lab: Lab, home: Path, *args: str, config: Path | None = None) -> tuple[int, dict[str, Any], str]:
    """(exit code, the JSON document printed: a report, or an error, and every message)."""
    result = cau(lab, home, "run", lab.cluster, "--output", "json", *args, config=config)
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, data, result.stderr + result.stdout


def run_watched(
    lab: Lab, home: Path, sample: Callable[[], T | None], *args: str
) -> tuple[subprocess.CompletedProcess[str], list[T]]:
    """`cau run` in the background with `args`, calling `sample()` every 0.2 s until it ends:
    the finished process and every sample that was not None."""
    samples: list[T] = []
    proc = subprocess.Popen(
        [sys.executable, "-m", "cau", "run", lab.cluster, "--output", "json", *args],
        env=env(lab, home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while proc.poll() is None:
            value = sample()
            if value is not None:
                samples.append(value)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), samples


PROBE_INTERVAL_MS = 50  # the lab's probes of its VMs (cau_lab.access)
RESUME_MS = 50  # the destination resumes a guest 20-30 ms after libvirt's downtime: twice that


def switch_over_failures(downtime_ms: float | None) -> int:
    """The most 50 ms probes a live migration's switch-over can fail, by libvirt's downtime of
    it: those started while the guest is unreachable (paused, then resuming on the destination),
    and one in flight as that began. A probe that reaches the paused guest waits for TCP's SYN
    retransmit (1 s) and fails; the outage is QEMU's switch-over, none of it cau's."""
    assert downtime_ms is not None, "libvirt gave no downtime for the migration"
    return 1 + int(downtime_ms + RESUME_MS) // PROBE_INTERVAL_MS


def versions(lab: Lab, node: str) -> dict[str, str]:
    out = lab.exec(node, "dpkg-query -W -f='${Package} ${Version}\\n' 'lab*'").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def updated_and_restarted(lab: Lab, boots: dict[str, str | None]) -> None:
    """Every host has the NEW packages (real apt) and a boot id other than `boots` (it really
    restarted)."""
    for node in lab.nodes:
        assert versions(lab, node) == NEW, node
        assert lab.boot_id(node) != boots[node], node


def journal(home: Path, run_id: str) -> list[JournalEvent]:
    """A run's journal, as the coordinators in `home` wrote it."""
    store = SqliteFile(home / "cau.db")  # the synchronous file under the async store
    try:
        return store.events(run_id)
    finally:
        store.close()


def unfinished_steps(events: list[JournalEvent]) -> list[tuple[str | None, str | None]]:
    """(node, step key) of every intent without its outcome: work left half-done."""
    ended = {(e.node, e.key) for e in events if e.kind is EventKind.OUTCOME}
    return [(e.node, e.key) for e in events if e.kind is EventKind.INTENT and (e.node, e.key) not in ended]


def availability(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["role"]: a for a in report["availability"]}


def cau_leftovers(lab: Lab) -> dict[str, Any]:
    """What cau may change in the CIB, as it is now: standby nodes, cau-* constraints,
    resources marked saved, target-role meta attributes."""
    root = ET.fromstring(lab.pacemaker.cib(scope="configuration"))
    return {
        "standby": sorted(
            n.get("uname", "")
            for n in root.iter("node")
            for nv in n.iter("nvpair")
            if nv.get("name") == "standby" and nv.get("value") == "on"
        ),
        "constraints": sorted(
            c.get("id", "") for c in root.iter("rsc_location") if c.get("id", "").startswith("cau-")
        ),
        "meta": sorted(
            f"{nv.get('name')}={nv.get('value')}"
            for nv in root.iter("nvpair")
            if nv.get("name") in ("cau-saved-on", "target-role")
        ),
    }


NOTHING_LEFT: dict[str, list[str]] = {"standby": [], "constraints": [], "meta": []}


def only_updates_on(lab: Lab, nodes: list[str]) -> None:
    """Only `nodes` have updates: the others get the new versions first (and no restart flag)."""
    for node in lab.nodes:
        if node in nodes:
            continue
        done = lab.exec(
            node,
            "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
            "labpkg labtool labrelease && apt-get update -qq && "
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq labextra && "
            "rm -f /var/run/reboot-required /var/run/reboot-required.pkgs",
        )
        assert done.returncode == 0, done.stderr


def handover_seconds(journal: list[JournalEvent]) -> list[float]:
    """From each hand-over's intent to the next coordinator taking the run."""
    out = []
    moving: datetime | None = None
    for e in journal:
        if e.kind is EventKind.HANDOVER and e.data.get("stage") == "moving":
            moving = e.ts
        elif e.kind is EventKind.COORDINATOR and moving is not None:
            out.append((e.ts - moving).total_seconds())
            moving = None
    return out
