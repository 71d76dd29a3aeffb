"""Benchmark: cau vs an Ansible rolling playbook, on the same 4-host lab of real Debian hosts.

The update is the same for both tools, one host at a time: maintenance marker on, apt update and
upgrade (labpkg, labtool, labrelease 1.0 -> 1.1; labpkg 1.1 asks for a restart), a real restart
where /var/run/reboot-required says so, apt update and upgrade again for the second-order update
(labrelease 1.1 adds a repository where labextra 1.1 appears), maintenance marker off.

    cau:      `cau --config <lab>/clusters.toml run lab --output json` (the lab's ssh + apt cluster)
    Ansible:  bench/ansible/rolling_update.yml with `serial: 1`, ansible-core pinned below, in its
              own venv (/var/tmp/cau-bench-venv, made on first use, so the project's venv stays
              clean); ssh with the lab's key and known_hosts (StrictHostKeyChecking=yes),
              pipelining and ControlPersist (Ansible's fair best); per-task times come from the
              callback in bench/ansible/callback_plugins (ansible-core has no JSON callback).

Each tool runs on a freshly restored lab (every host up, OLD versions installed, NEW published).
The lab has its own names (state /var/tmp/cau-lab-bench, netns caubench-*, 10.77.150.0/24), so
it never collides with another lab on the machine; its image adds python3-apt, which Ansible's
apt module needs on the hosts (cau does not). It always goes down at the end (--keep-lab: not).

Printed: both wall times and their ratio; cau's orchestration overhead per node (wall time minus
the install and restart step durations from cau's report, per node, with the breakdown); the
node-return detection latency of both tools, measured independently by a watcher that polls every
host's port 22 every 20 ms from the root namespace; and a check that each run really updated
(every host at 1.1) and restarted (new boot id) every host. Exit status 1 when a check fails.

    sudo .venv/bin/python bench/lab_vs_ansible.py [--repeat 3] [--keep-lab] [--logs DIR]

Needs root (the lab: namespaces, mounts), and PyPI for the first install of ansible-core.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from types import FrameType
from typing import Any

from cau_lab import Lab, LabConfig

ANSIBLE_CORE = "2.19.14"  # pinned: the version the numbers in the docs were taken with
ANSIBLE_VENV = Path("/var/tmp/cau-bench-venv")

STATE_DIR = Path("/var/tmp/cau-lab-bench")
LAB_NAME = "caubench"
SUBNET = "10.77.150.0/24"
NODES = 4
REBOOT_DELAY = 1.0
IMAGE_PACKAGES = ("python3-apt",)  # for Ansible's apt module; cau runs apt-get itself

PACKAGES = ("labpkg", "labtool", "labrelease", "labextra")
NEW = "1.1"
MARKER = "/var/lib/cau/maintenance"

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "ansible" / "rolling_update.yml"
CALLBACK_DIR = HERE / "ansible" / "callback_plugins"

POLL_INTERVAL = 0.02  # the port watcher's period, per host
PROBE_TIMEOUT = 0.1  # a probe that gets no answer this long counts as "not accepting"
RUN_TIMEOUT = 900.0  # one tool's run


# --- small helpers ----------------------------------------------------------------------------------


def log(message: str = "") -> None:
    print(message, flush=True)


def ts(value: str | None) -> float | None:
    """A report timestamp (ISO 8601) as seconds since the epoch (time.time()'s clock)."""
    return datetime.fromisoformat(value).timestamp() if value else None


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(seconds: float | None, width: int = 6) -> str:
    return f"{'-':>{width}}" if seconds is None else f"{seconds:{width}.2f}"


def become_subreaper() -> bool:
    """Orphaned descendants (ssh's ControlPersist masters fork into the background) become our
    children instead of PID 1's, so we can reap them: this machine's PID 1 does not."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def reap(pid: int, timeout: float = 5.0) -> None:
    """Wait for one process of ours (a child, or an orphan re-parented to us) to end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child: nothing to reap
            return
        if done:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def descendants(root: int) -> list[int]:
    """PIDs of every process under `root` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Finished:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    started: float  # time.time()
    ended: float

    @property
    def wall(self) -> float:
        return self.ended - self.started


def run_tool(argv: list[str], env: dict[str, str], cwd: Path, timeout: float = RUN_TIMEOUT) -> Finished:
    """Run a tool in its own process group; on timeout or interrupt end that group (ours)."""
    started = time.time()
    proc = subprocess.Popen(
        argv,
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        # the tool and every process under it (Ansible's workers setsid() into their own
        # sessions, so its process group is not enough), found by PID before any of them ends
        others = descendants(proc.pid)
        for pid in [proc.pid, *others]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()
        for pid in others:
            reap(pid)  # re-parented to us (a subreaper) when their parent died first
        raise
    return Finished(argv, proc.returncode, out, err, started, time.time())


# --- Ansible in its own venv ------------------------------------------------------------------------


def ensure_ansible() -> tuple[Path, str]:
    """ansible-playbook of the pinned ansible-core (installed into ANSIBLE_VENV when missing)."""
    playbook = ANSIBLE_VENV / "bin" / "ansible-playbook"

    def installed() -> str | None:
        if not playbook.exists():
            return None
        out = subprocess.run([str(playbook), "--version"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"\[core ([^\]]+)\]", out)
        return found.group(1) if found else None

    have = installed()
    if have != ANSIBLE_CORE:
        log(f"installing ansible-core {ANSIBLE_CORE} into {ANSIBLE_VENV} (was: {have or 'none'})")
        if not (ANSIBLE_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run(
            [str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", f"ansible-core=={ANSIBLE_CORE}"],
            check=True,
        )
        have = installed()
        if have != ANSIBLE_CORE:
            raise RuntimeError(f"ansible-core {ANSIBLE_CORE} did not install ({have})")
    return playbook, have


# --- the port watcher -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortReturn:
    """sshd of a host stopped accepting at down_at and accepted again at up_at (time.time())."""

    node: str
    down_at: float
    up_at: float


class PortWatcher:
    """Every 20 ms, for every host: is its port 22 accepting? Records each first accept after a
    period of refused (or unanswered) connections: the moment a rebooted host's sshd is back.

    A host seen accepting is held by that one idle TCP connection (sshd waits for our banner),
    checked every tick: a closed connection means sshd or the host went away, and plain connects
    every 20 ms follow until one is accepted. Holding rather than connecting every 20 ms keeps
    sshd from forking 50 pre-auth children a second per host on a machine of two CPUs, which
    would slow the very runs being measured. A closed connection followed at once by an accept
    (sshd's LoginGraceTime) is not a return: a return needs a refusal before it."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self._addresses = dict(addresses)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._returns: list[PortReturn] = []
        self._up: set[str] = set()
        self._threads = [
            threading.Thread(target=self._watch, args=(n, a), name=f"port22-{n}", daemon=True)
            for n, a in self._addresses.items()
        ]
        self.probes = 0
        self.refused = 0
        self.timeouts = 0

    def __enter__(self) -> PortWatcher:
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # every host seen up before a run starts
            with self._lock:
                if self._up == set(self._addresses):
                    return self
            time.sleep(0.02)
        self.__exit__(None, None, None)
        raise RuntimeError(f"port watcher: sshd not accepting on {sorted(set(self._addresses) - self._up)}")

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def summary(self) -> str:
        with self._lock:
            return (
                f"port 22: {len(self._returns)} return(s), {self.probes} probes, "
                f"{self.refused} refused, {self.timeouts} unanswered"
            )

    @property
    def returns(self) -> list[PortReturn]:
        with self._lock:
            return list(self._returns)

    def _probe(self, address: str) -> socket.socket | None:
        with self._lock:
            self.probes += 1
        try:
            return socket.create_connection((address, 22), timeout=PROBE_TIMEOUT)
        except TimeoutError:
            with self._lock:
                self.timeouts += 1
        except OSError:
            with self._lock:
                self.refused += 1
        return None

    @staticmethod
    def _closed(sock: socket.socket) -> bool:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        try:
            return sock.recv(4096) == b""  # data is sshd's banner; b"" is the end
        except OSError:
            return True

    def _watch(self, node: str, address: str) -> None:
        held: socket.socket | None = None
        closed_at: float | None = None  # the held connection ended here
        down_at: float | None = None  # first refusal after it
        tick = time.monotonic()
        try:
            while not self._stop.is_set():
                if held is not None and self._closed(held):
                    held.close()
                    held, closed_at = None, time.time()
                    with self._lock:
                        self._up.discard(node)
                if held is None:
                    sock = self._probe(address)
                    now = time.time()
                    if sock is None:
                        if down_at is None:
                            down_at = closed_at if closed_at is not None else now
                    else:
                        held = sock
                        held.setblocking(False)
                        with self._lock:
                            if down_at is not None:
                                self._returns.append(PortReturn(node, down_at, now))
                            self._up.add(node)
                        closed_at = down_at = None
                tick += POLL_INTERVAL
                delay = tick - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    tick = time.monotonic()  # fell behind: no burst of catch-up probes
        finally:
            if held is not None:
                held.close()


# --- one tool's run ---------------------------------------------------------------------------------


@dataclass
class Window:
    """A restart as one tool saw it (started, ended), with the watcher's view of the port."""

    node: str
    started: float
    ended: float
    port: PortReturn | None = None

    @property
    def detect(self) -> float | None:
        """Port 22 accepting again -> the tool knows the host is back."""
        return None if self.port is None else self.ended - self.port.up_at

    @property
    def to_down(self) -> float | None:
        return None if self.port is None else self.port.down_at - self.started

    @property
    def down(self) -> float | None:
        return None if self.port is None else self.port.up_at - self.port.down_at


@dataclass
class ToolRun:
    tool: str  # "cau" | "ansible"
    rep: int
    wall: float
    ok_exit: bool
    summary: str
    restarts: list[Window] = field(default_factory=list)
    # cau: per node, step name -> summed seconds; Ansible: per host, task name -> seconds
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    spans: dict[str, float] = field(default_factory=dict)  # per node: first step start -> last end
    steps: list[tuple[float, float]] = field(default_factory=list)  # cau: every step's (start, end)
    report_seconds: float | None = None
    watch: str = ""  # what the port watcher saw
    check_ok: bool = False
    check: str = ""


def match_ports(windows: list[Window], returns: list[PortReturn]) -> None:
    """The port return inside each restart window (the last one if, oddly, several)."""
    for w in windows:
        inside = [r for r in returns if r.node == w.node and w.started <= r.up_at <= w.ended + 1.0]
        w.port = inside[-1] if inside else None


def cau_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    env.update(CAU_HOME=str(home), COLUMNS="200")
    return env


def cau_argv() -> list[str]:
    script = Path(sys.executable).parent / "cau"
    return [str(script)] if script.exists() else [sys.executable, "-m", "cau"]


def run_cau(lab: Lab, rep: int, work: Path, config: Path | None = None) -> ToolRun:
    home = work / f"cau-home-{rep}"
    home.mkdir(parents=True)
    argv = [*cau_argv(), "--config", str(config or lab.config_path), "run", lab.cluster, "--output", "json"]
    with PortWatcher(lab.addresses) as watcher:
        done = run_tool(argv, cau_env(home), cwd=work)
    (work / f"cau-{rep}.json").write_text(done.stdout)
    (work / f"cau-{rep}.stderr").write_text(done.stderr)
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        return ToolRun("cau", rep, done.wall, False, f"exit {done.returncode}, no JSON report: {tail}")
    run = ToolRun(
        "cau",
        rep,
        done.wall,
        done.returncode == 0 and report.get("status") == "Succeeded",
        f"exit {done.returncode}, status {report.get('status')}",
        report_seconds=float(report.get("duration_seconds") or 0.0),
    )
    for node in report.get("nodes", []):
        name = node["name"]
        phases: dict[str, float] = defaultdict(float)
        first: float | None = None
        last: float | None = None
        for step in node.get("steps", []):
            start, end = ts(step.get("started")), ts(step.get("finished"))
            if start is None or end is None:
                continue
            phases[step["step"]] += end - start
            run.steps.append((start, end))
            first = start if first is None else min(first, start)
            last = end if last is None else max(last, end)
            if step["step"] == "restart":
                run.restarts.append(Window(name, start, end))
        node_start, node_end = ts(node.get("started")), ts(node.get("finished"))
        if node_start is not None and node_end is not None:
            run.spans[name] = node_end - node_start
        elif first is not None and last is not None:
            run.spans[name] = last - first
        run.phases[name] = dict(phases)
    match_ports(run.restarts, watcher.returns)
    run.watch = watcher.summary()
    return run


ANSIBLE_CFG = """\
[defaults]
inventory = {work}/inventory.ini
host_key_checking = True
retry_files_enabled = False
interpreter_python = /usr/bin/python3
callbacks_enabled = cau_bench_times
callback_plugins = {callbacks}
local_tmp = {work}/local
nocolor = True
forks = 5

[ssh_connection]
pipelining = True
ssh_args = -F /dev/null -o ControlMaster=auto -o ControlPersist=60s -o IdentitiesOnly=yes \
-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
control_path_dir = {control}
"""


def ansible_files(lab: Lab, work: Path, strategy: Path | None = None) -> Path:
    """inventory.ini and ansible.cfg for the lab, in work/ (reused by every repetition).
    strategy: Mitogen's strategy plugins directory, to run with its `mitogen_linear`."""
    lines = ["[lab]", *(f"{n} ansible_host={a}" for n, a in lab.addresses.items())]
    lines += [
        "",
        "[lab:vars]",
        "ansible_user=root",
        f"ansible_ssh_private_key_file={lab.identity}",
    ]
    (work / "inventory.ini").write_text("\n".join(lines) + "\n")
    (work / "local").mkdir(exist_ok=True)
    cfg = work / "ansible.cfg"
    cfg.write_text(
        ANSIBLE_CFG.format(
            work=work, callbacks=CALLBACK_DIR, known_hosts=lab.known_hosts, control=control_dir()
        )
    )
    if strategy is not None:
        text = cfg.read_text().replace(
            "[defaults]\n", f"[defaults]\nstrategy_plugins = {strategy}\nstrategy = mitogen_linear\n", 1
        )
        cfg.write_text(text)
    return cfg


def control_dir() -> Path:
    # a unix socket path has at most 107 bytes: keep the directory short
    return Path(tempfile.gettempdir()) / f"cau-bench-cp-{os.getpid()}"


def close_control_masters(directory: Path) -> None:
    """End the ssh ControlPersist masters Ansible left (started by our run, found by their socket,
    asked to exit by ssh itself; reaped by PID, as they are re-parented to us)."""
    if not directory.is_dir():
        return
    for sock in sorted(directory.iterdir()):
        base = ["ssh", "-F", "/dev/null", "-o", f"ControlPath={sock}"]
        check = subprocess.run([*base, "-O", "check", "x"], capture_output=True, text=True, check=False)
        found = re.search(r"pid=(\d+)", check.stderr + check.stdout)
        subprocess.run([*base, "-O", "exit", "x"], capture_output=True, text=True, check=False)
        if found:
            reap(int(found.group(1)))
        sock.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
    reap_dead_ssh()


def reap_dead_ssh() -> None:
    """Reap the ssh masters that ended with their host's restart: orphans re-parented to us
    (a subreaper), dead, and named ssh. Nothing else of ours (the lab's supervisors) is touched."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if comm == "ssh" and state == "Z" and int(ppid) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)


def run_ansible(
    lab: Lab,
    rep: int,
    work: Path,
    ansible_playbook: Path,
    playbook: Path = PLAYBOOK,
    strategy: Path | None = None,
) -> ToolRun:
    cfg = ansible_files(lab, work, strategy)
    times = work / f"ansible-{rep}.times.jsonl"
    control = control_dir()
    control.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "CAU_"))}
    env.update(
        ANSIBLE_CONFIG=str(cfg),
        ANSIBLE_HOME=str(work / "ansible-home"),
        CAU_BENCH_TIMES=str(times),
        PYTHONUNBUFFERED="1",
    )
    try:
        with PortWatcher(lab.addresses) as watcher:
            done = run_tool([str(ansible_playbook), str(playbook)], env, cwd=work)
    finally:
        close_control_masters(control)
    (work / f"ansible-{rep}.log").write_text(done.stdout + done.stderr)
    recap = re.findall(r"^(\S+)\s+: ok=\d+.*failed=(\d+)", done.stdout, re.M)
    run = ToolRun("ansible", rep, done.wall, done.returncode == 0, f"exit {done.returncode}")
    if done.returncode != 0:
        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])
        run.summary += f": {tail}"
    elif len(recap) != len(lab.nodes):
        run.ok_exit = False
        run.summary += f", PLAY RECAP lists {len(recap)} of {len(lab.nodes)} hosts"
    records = [json.loads(line) for line in times.read_text().splitlines()] if times.exists() else []
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for rec in records:
        host = rec["host"]
        if rec["status"] != "skipped":
            run.phases.setdefault(host, {})
            run.phases[host][rec["task"]] = run.phases[host].get(rec["task"], 0.0) + rec["end"] - rec["start"]
        first[host] = min(first.get(host, rec["start"]), rec["start"])
        last[host] = max(last.get(host, rec["end"]), rec["end"])
        if str(rec["action"]).endswith("reboot") and rec["status"] == "ok":
            run.restarts.append(Window(host, rec["start"], rec["end"]))
    run.spans = {h: last[h] - first[h] for h in first}
    match_ports(run.restarts, watcher.returns)
    run.watch = watcher.summary()
    return run


# --- checks ----------------------------------------------------------------------------------------


def versions(lab: Lab, node: str) -> dict[str, str]:
    out = lab.exec(node, ["dpkg-query", "-W", "-f=${Package} ${Version}\\n", *PACKAGES]).stdout
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def verify(lab: Lab, run: ToolRun, boots_before: dict[str, str | None]) -> None:
    """Did the run really do the job? Every host at NEW, restarted, out of maintenance."""
    problems: list[str] = []
    updated = restarted = unmarked = 0
    for node in lab.nodes:
        have = versions(lab, node)
        wrong = {p: have.get(p, "missing") for p in PACKAGES if have.get(p) != NEW}
        if wrong:
            problems.append(f"{node} not updated: " + ", ".join(f"{p} {v}" for p, v in wrong.items()))
        else:
            updated += 1
        boot = lab.boot_id(node)
        if boot is None or boot == boots_before.get(node):
            problems.append(f"{node} not restarted (boot id {boot})")
        else:
            restarted += 1
        if lab.exec(node, ["test", "-e", MARKER]).returncode == 0:
            problems.append(f"{node} still has the maintenance marker")
        else:
            unmarked += 1
    if not run.ok_exit:
        problems.insert(0, f"the run failed ({run.summary})")
    n = len(lab.nodes)
    facts = (
        f"{updated}/{n} hosts at {'/'.join(PACKAGES)} {NEW}, {restarted}/{n} restarted (new boot id), "
        f"{unmarked}/{n} out of maintenance"
    )
    run.check_ok = not problems
    run.check = facts if not problems else facts + "; " + "; ".join(problems)


def fresh(lab: Lab) -> dict[str, str | None]:
    """Back to the start (all hosts up, OLD installed, NEW published, no marker); the boot ids."""
    lab.restore()
    for node in lab.nodes:
        lab.exec(node, f"rm -f {MARKER} /var/run/reboot-required /var/run/reboot-required.pkgs", check=True)
    boots = {n: lab.boot_id(n) for n in lab.nodes}
    for node in lab.nodes:
        have = versions(lab, node)
        if any(have.get(p) != "1.0" for p in PACKAGES):
            raise RuntimeError(f"{node} did not go back to the OLD versions: {have}")
    return boots


# --- the report ------------------------------------------------------------------------------------


def median_run(runs: list[ToolRun]) -> ToolRun:
    ordered = sorted(runs, key=lambda r: r.wall)
    return ordered[(len(ordered) - 1) // 2]


CAU_STEPS = (
    "scan",
    "stage",
    "enter_maintenance",
    "install",
    "restart",
    "rescan",
    "exit_maintenance",
    "failback",
)


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """How long at least one of the intervals was going on."""
    total = 0.0
    end = float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def print_overhead(run: ToolRun, n: int) -> None:
    installing = sum(p.get("install", 0.0) for p in run.phases.values())
    restarting = sum(p.get("restart", 0.0) for p in run.phases.values())
    other = run.wall - installing - restarting
    log(
        f"   wall {run.wall:.2f} s = installing {installing:.2f} s + restarting {restarting:.2f} s "
        f"+ everything else {other:.2f} s  (run {run.rep})"
    )
    log(
        f"   per node: installing {installing / n:.2f} s, restarting {restarting / n:.2f} s, "
        f"everything else {other / n:.2f} s  <- cau's orchestration overhead per node"
    )
    log("   everything else, per node (mean over the nodes):")
    steps_other = {s: sum(p.get(s, 0.0) for p in run.phases.values()) / n for s in CAU_STEPS}
    for step in CAU_STEPS:
        if step not in ("install", "restart"):
            log(f"     {step:<18} {steps_other[step]:6.3f} s")
    in_steps = sum(sum(p.values()) for p in run.phases.values())
    covered = union_seconds(run.steps)
    report = run.report_seconds or 0.0
    log(
        f"     {'outside any step':<18} {(report - covered) / n:6.3f} s   (the run's duration in the "
        "report minus the time some step ran: admissions, decisions, between steps and nodes)"
    )
    if in_steps - covered > 0.001:
        log(
            f"     {'overlapped':<18} {(in_steps - covered) / n:6.3f} s   (step time that ran while "
            "another node's steps ran: the next node's scan and staging, ahead of its turn)"
        )
    log(
        f"     {'process':<18} {(run.wall - report) / n:6.3f} s   "
        f"(wall minus the report's duration: start-up, preflight, report; {run.wall - report:.2f} s in all)"
    )


def print_ansible_tasks(run: ToolRun, n: int) -> None:
    tasks: dict[str, float] = defaultdict(float)
    for per_host in run.phases.values():
        for task, seconds in per_host.items():
            tasks[task] += seconds
    log(f"   Ansible, same view (run {run.rep}), per host (mean over the hosts):")
    for task, total in tasks.items():
        log(f"     {task[:48]:<48} {total / n:6.3f} s")
    in_tasks = sum(tasks.values()) / n
    log(f"     {'outside the tasks (start-up, play, between tasks)':<48} {run.wall / n - in_tasks:6.3f} s")


def print_latency(runs: list[ToolRun], nodes: list[str]) -> dict[str, list[float]]:
    """Per host (median over the repetitions) and over everything; returns the samples by tool."""
    samples: dict[str, list[float]] = {}
    log(
        "   restart window: tool starts the restart -> port 22 refuses (to down) -> accepts "
        "again (down) -> tool sees the host back (detect)"
    )
    log(f"   {'host':<7} {'tool':<8} {'to down':>8} {'down':>8} {'detect':>8}   restarts seen")
    for tool in ("cau", "ansible"):
        windows = [w for r in runs if r.tool == tool for w in r.restarts]
        samples[tool] = [w.detect for w in windows if w.detect is not None]
        for node in nodes:
            mine = [w for w in windows if w.node == node]
            got = [w for w in mine if w.port is not None]
            if not mine:
                log(f"   {node:<7} {tool:<8} {'no restart recorded':>26}")
                continue
            log(
                f"   {node:<7} {tool:<8} {fmt(median([w.to_down or 0 for w in got]) if got else None, 8)} "
                f"{fmt(median([w.down or 0 for w in got]) if got else None, 8)} "
                f"{fmt(median([w.detect or 0 for w in got]) if got else None, 8)}   "
                f"{len(mine)} ({len(got)} matched to a port return)"
            )
    return samples


# --- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool (median reported)")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--logs", type=Path, help="keep the reports and Ansible logs here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep.absolute()
        return
    path = Path(tempfile.mkdtemp(prefix="cau-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the finally blocks take the lab down


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        log("the lab needs root (network namespaces, mounts)")
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    reaper = become_subreaper()
    playbook, ansible_version = ensure_ansible()
    cfg = LabConfig(
        state_dir=STATE_DIR,
        name=LAB_NAME,
        subnet=SUBNET,
        nodes=NODES,
        reboot_delay=REBOOT_DELAY,
        packages=IMAGE_PACKAGES,
    )
    # detach only when the lab is to outlive us; else its supervisors are our children
    lab = Lab(cfg, detach=args.keep_lab, log=lambda m: log(f"   lab: {m}"))
    load = os.getloadavg()
    log(f"cau vs Ansible on the lab: {NODES} hosts, one at a time, reboot delay {REBOOT_DELAY:g} s")
    log(
        f"cau {dist_version('cau')} ({' '.join(cau_argv())}); ansible-core {ansible_version} "
        f"({playbook}); Python {platform.python_version()}"
    )
    log(
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"lab {LAB_NAME} {SUBNET} in {STATE_DIR}; {args.repeat} run(s) of each tool"
        + ("" if reaper else "; (not a subreaper: ssh ControlPersist masters are not reaped)")
    )
    runs: list[ToolRun] = []
    started = time.monotonic()
    with workdir(args.logs) as work:
        try:
            log("bringing the lab up (the first time builds its image with python3-apt: a minute or two)")
            lab.up(recreate=True)
            log(f"lab up in {time.monotonic() - started:.1f} s")
            for rep in range(1, args.repeat + 1):
                order = ("cau", "ansible") if rep % 2 else ("ansible", "cau")  # alternate the order
                for tool in order:
                    boots = fresh(lab)
                    run = run_cau(lab, rep, work) if tool == "cau" else run_ansible(lab, rep, work, playbook)
                    verify(lab, run, boots)
                    runs.append(run)
                    log(
                        f"run {rep}/{args.repeat} {tool:<7} {run.wall:6.2f} s  {run.summary}; "
                        f"check {'OK' if run.check_ok else 'FAILED'}; {run.watch}"
                    )
        finally:
            if args.keep_lab:
                log(f"lab left up: `cau lab down --state-dir {STATE_DIR}` takes it down")
            else:
                lab.down()
                log("lab down")
        if args.logs is not None:
            log(f"reports and logs in {work}")
    report(runs, lab.nodes)
    return 0 if runs and all(r.check_ok for r in runs) else 1


def print_walls(cau_runs: list[ToolRun], ans_runs: list[ToolRun], n: int) -> tuple[float, float]:
    """Every run's wall time, and the medians (returned: cau's, Ansible's)."""
    cau_wall = median([r.wall for r in cau_runs])
    ans_wall = median([r.wall for r in ans_runs])
    every = "; ".join(
        f"{tool} " + ", ".join(f"{r.wall:.2f}" for r in mine)
        for tool, mine in (("cau", cau_runs), ("Ansible", ans_runs))
    )
    log(f"1. Wall time, median of {len(cau_runs)} run(s) each (all runs, in order: {every})")
    log(f"   cau      {cau_wall:7.2f} s  ({cau_wall / n:.2f} s per node)")
    log(f"   Ansible  {ans_wall:7.2f} s  ({ans_wall / n:.2f} s per node)")
    return cau_wall, ans_wall


def print_checks(cau_runs: list[ToolRun], ans_runs: list[ToolRun]) -> None:
    """What each run's check found, and the verdict."""
    for tool, mine in (("cau", cau_runs), ("Ansible", ans_runs)):
        for r in mine:
            log(f"   {tool:<8} run {r.rep}: {'OK' if r.check_ok else 'FAILED'}: {r.check}")
    verdict = all(r.check_ok for r in [*cau_runs, *ans_runs])
    log(f"   {'every run did the job' if verdict else 'NOT every run did the job'}")


def report(runs: list[ToolRun], nodes: list[str]) -> None:
    n = len(nodes)
    cau_runs = [r for r in runs if r.tool == "cau"]
    ans_runs = [r for r in runs if r.tool == "ansible"]
    log()
    cau_wall, ans_wall = print_walls(cau_runs, ans_runs, n)
    log(f"   ratio Ansible / cau: {ans_wall / cau_wall:.2f}x")
    log()
    log("2. cau's orchestration overhead per node (median cau run; install, restart steps from its report)")
    if cau_runs:
        print_overhead(median_run(cau_runs), n)
    if ans_runs:
        print_ansible_tasks(median_run(ans_runs), n)
    log()
    log("3. Node-return detection latency (port 22 watched every 20 ms; medians over the runs)")
    samples = print_latency(runs, nodes)
    log(
        f"   median detect: cau {fmt(median(samples['cau']), 0).strip()} s over {len(samples['cau'])} "
        f"restart(s); Ansible {fmt(median(samples['ansible']), 0).strip()} s over "
        f"{len(samples['ansible'])} restart(s)"
    )
    log()
    log("4. Did each tool do the job? (dpkg-query on every host, boot ids, the maintenance marker)")
    print_checks(cau_runs, ans_runs)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted (the lab was taken down)", file=sys.stderr)
        sys.exit(130)
