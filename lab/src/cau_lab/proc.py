"""Processes and commands: running tools, and PIDs we can safely signal.

The root namespace sees every lab host's processes, so the lab never kills by name: it
records each process it starts as a PID plus that process's start time (a PID alone may have
been reused), and signals only a process that still matches.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cau_lab.config import LabError

Log = Callable[[str], None]


def quiet(_: str) -> None:
    pass


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    check: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a tool, capture its output; with check, a failure raises LabError naming the tool."""
    args = [str(a) for a in argv]
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=env,
            cwd=cwd,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LabError(f"{args[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(args)}: no answer after {timeout} s") from None
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise LabError(f"{' '.join(args)} failed (exit {result.returncode}): " + " | ".join(detail))
    return result


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError(
            "the lab needs root (network namespaces, mounts)", hint="run it as root, e.g. with sudo"
        )


# Commands the lab runs on the machine, and the Debian package that brings each.
HOST_TOOLS = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "zstd": "zstd",
    "tar": "tar",
    "dpkg-deb": "dpkg",
}
IMAGE_TOOLS = {"debootstrap": "debootstrap"}


def ensure_tools(tools: dict[str, str], log: Log = quiet) -> None:
    """Install the Debian packages of missing tools (apt-get; the lab runs on Debian)."""
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise LabError(f"missing tools and no apt-get to install them: {', '.join(missing)}")
    log(f"installing {', '.join(missing)} (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], env=env, timeout=900)


# --- processes ---------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after its closing one
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19])


@dataclass(frozen=True)
class ProcRef:
    """A process we started: its PID and start time, so a reused PID is never signalled."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcRef | None:
        st = _stat(pid)
        return None if st is None else cls(pid, st[1])

    @classmethod
    def read(cls, path: Path) -> ProcRef | None:
        try:
            pid, start = path.read_text().split()
            return cls(int(pid), int(start))
        except (OSError, ValueError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"{self.pid} {self.start}\n")
        tmp.replace(path)

    def alive(self) -> bool:
        """Running (a zombie is not: this machine's PID 1 may never reap orphans)."""
        st = _stat(self.pid)
        return st is not None and st[1] == self.start and st[0] not in ("Z", "X")

    def signal(self, sig: signal.Signals) -> bool:
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: scan every process
        return [p for p in _all_pids() if _ppid(p) == pid]
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _all_pids() -> list[int]:
    return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])


def pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def pids_in_pid_namespace(ns: str) -> list[int]:
    """The root-namespace PIDs of every live process of a PID namespace."""
    found = []
    for pid in _all_pids():
        if pid_namespace(pid) == ns:
            st = _stat(pid)
            if st is not None and st[0] != "Z":
                found.append(pid)
    return sorted(found)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def mounts_under(path: Path) -> list[str]:
    """Mount points of the calling process's mount namespace at or below path."""
    root = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == root or point.startswith(root + "/"):
                found.append(point)
    return found


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to descend into a mount (a live host's /proc, say)."""
    if not path.exists() and not path.is_symlink():
        return
    busy = mounts_under(path)
    if busy:
        raise LabError(f"cannot remove {path}: still mounted: {', '.join(busy[:3])}")
    shutil.rmtree(path)


@contextmanager
def cache_lock(cache_dir: Path, name: str) -> Iterator[None]:
    """One writer at a time of a part of the lab cache (two labs may come up together)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / name, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
