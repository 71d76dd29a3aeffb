"""Power and console of the lab hosts: boot, kill, reset, power off, run a command inside.

A host is up while its PID 1 (tini) lives. Each host has a supervisor process (see
supervisor.py) that boots it and boots it again after an in-host reboot. Everything is done by
PID (with start time, see proc.ProcRef): the root namespace sees every host's processes, so
nothing is ever killed by name.

Supervisors are started either detached (the CLI: they outlive `cau lab up`) or as children of
the calling process (the test fixture: this machine's PID 1 does not reap orphans, so a
detached supervisor that ends stays a zombie until the machine restarts).
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cau_lab.config import LabConfig, LabError
from cau_lab.proc import ProcRef, pid_namespace, pids_in_pid_namespace, run, wait_until

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Supervisors started as our children, by (state dir, node): waited for, never left as zombies.
_attached: dict[tuple[str, str], subprocess.Popen[bytes]] = {}


def _flag(cfg: LabConfig, node: str, name: str) -> Path:
    return cfg.host_dir(node) / name


def reap() -> None:
    """Collect the exit status of attached supervisors that have ended."""
    for key, proc in list(_attached.items()):
        if proc.poll() is not None:
            del _attached[key]


def supervisor(cfg: LabConfig, node: str) -> ProcRef | None:
    reap()
    ref = ProcRef.read(_flag(cfg, node, "supervisor.pid"))
    return ref if ref is not None and ref.alive() else None


def init(cfg: LabConfig, node: str) -> ProcRef | None:
    """The host's PID 1 (as seen from the root namespace), if the host is up."""
    ref = ProcRef.read(_flag(cfg, node, "init.pid"))
    return ref if ref is not None and ref.alive() else None


def _host_file(ref: ProcRef, path: str) -> Path:
    """A file of the host, reached through its PID 1's root (no need to enter its namespaces)."""
    return Path(f"/proc/{ref.pid}/root") / path.lstrip("/")


def _is_tini(ref: ProcRef) -> bool:
    try:
        return Path(f"/proc/{ref.pid}/comm").read_text().strip() == "tini"
    except OSError:
        return False


def booted(cfg: LabConfig, node: str) -> bool:
    """Up, and lab-init has started the host's services."""
    ref = init(cfg, node)
    # before host-boot.sh execs tini, /proc/PID/root is still the machine's root
    return ref is not None and _is_tini(ref) and _host_file(ref, "/run/lab/booted").exists()


def read_file(cfg: LabConfig, node: str, path: str) -> str | None:
    ref = init(cfg, node)
    if ref is None or not _is_tini(ref):
        return None
    try:
        return _host_file(ref, path).read_text()
    except OSError:
        return None


def boot_id(cfg: LabConfig, node: str) -> str | None:
    text = read_file(cfg, node, "/run/lab/boot_id")
    return text.strip() if text else None


@dataclass(frozen=True)
class HostStatus:
    node: str
    address: str
    state: str  # up | booting | rebooting | down
    init_pid: int | None
    processes: int
    boot_id: str | None
    no_return: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "node": self.node,
            "address": self.address,
            "state": self.state,
            "init_pid": self.init_pid,
            "processes": self.processes,
            "boot_id": self.boot_id,
            "no_return": self.no_return,
        }


def status(cfg: LabConfig, node: str) -> HostStatus:
    ref = init(cfg, node)
    if ref is not None:
        state = "up" if booted(cfg, node) else "booting"
    else:
        state = "rebooting" if supervisor(cfg, node) is not None else "down"
    return HostStatus(
        node=node,
        address=cfg.address(node),
        state=state,
        init_pid=ref.pid if ref else None,
        processes=len(pids(cfg, node)),
        boot_id=boot_id(cfg, node),
        no_return=_flag(cfg, node, "no-return").exists(),
    )


def pids(cfg: LabConfig, node: str) -> list[int]:
    """Root-namespace PIDs of all of the host's processes."""
    ref = init(cfg, node)
    ns = pid_namespace(ref.pid) if ref else None
    return pids_in_pid_namespace(ns) if ns else []


# --- power -------------------------------------------------------------------------------------


def start(cfg: LabConfig, node: str, *, detach: bool) -> ProcRef:
    """Power on: start the host's supervisor (which boots it). Returns the supervisor."""
    running = supervisor(cfg, node)
    if running is not None:
        return running
    d = cfg.host_dir(node)
    for name in ("stop-requested", "reset-requested", "no-return", "supervisor.pid"):
        (d / name).unlink(missing_ok=True)
    argv = [sys.executable, "-m", "cau_lab.supervisor", str(cfg.state_dir), node]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(d / "supervisor.log", "ab") as log:
        if detach:
            # setsid -f forks and returns at once: the supervisor is nobody's child and
            # outlives us, in its own session (a Ctrl-C to `cau` does not reach it)
            subprocess.run(
                ["setsid", "-f", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd="/",  # pins no directory of the caller's
                check=True,
            )
        else:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                cwd="/",
                start_new_session=True,
            )
            _attached[(str(cfg.state_dir), node)] = proc
    pidfile = d / "supervisor.pid"
    if not wait_until(lambda: ProcRef.read(pidfile) is not None, timeout=15):
        raise LabError(f"{node}: the supervisor did not start (see {d / 'supervisor.log'})")
    ref = ProcRef.read(pidfile)
    assert ref is not None
    return ref


def kill(cfg: LabConfig, node: str, timeout: float = 10) -> None:
    """Hard power-off: SIGKILL the host's PID 1 (the kernel ends the whole host); it stays off."""
    _flag(cfg, node, "stop-requested").touch()

    def gone() -> bool:
        ref = init(cfg, node)
        if ref is not None:
            ref.signal(signal.SIGKILL)
        return ref is None and supervisor(cfg, node) is None

    if not wait_until(gone, timeout=timeout):
        raise LabError(f"{node}: still running {timeout} s after SIGKILL")


def reset(cfg: LabConfig, node: str) -> None:
    """Hard reset: SIGKILL the host's PID 1; the supervisor boots it again after the delay."""
    ref = init(cfg, node)
    if ref is None or supervisor(cfg, node) is None:
        raise LabError(f"{node} is not running", hint=f"power it on with `cau lab boot {node}`")
    _flag(cfg, node, "reset-requested").touch()
    ref.signal(signal.SIGKILL)


def poweroff(cfg: LabConfig, node: str, timeout: float = 30) -> None:
    """Graceful power-off: SIGTERM to PID 1 (lab-init stops the services), SIGKILL if it lingers."""
    _flag(cfg, node, "stop-requested").touch()
    ref = init(cfg, node)
    if ref is not None:
        ref.signal(signal.SIGTERM)
        wait_until(lambda: init(cfg, node) is None, timeout=timeout, interval=0.05)
    kill(cfg, node)


def hold(cfg: LabConfig, node: str, on: bool = True) -> None:
    """With on, the next time the host goes down (reboot, reset) it stays off: a node that never
    comes back. `start` (boot) clears it."""
    flag = _flag(cfg, node, "no-return")
    if on:
        flag.touch()
    else:
        flag.unlink(missing_ok=True)


def set_reboot_delay(cfg: LabConfig, node: str, seconds: float | None) -> None:
    """The host's own delay between reboot(2) and its next boot (None: the lab's)."""
    flag = _flag(cfg, node, "reboot-delay")
    if seconds is None:
        flag.unlink(missing_ok=True)
    else:
        flag.write_text(f"{seconds}\n")


def wait_booted(cfg: LabConfig, node: str, timeout: float = 60) -> None:
    console = cfg.host_dir(node) / "console.log"

    def done() -> bool:
        if booted(cfg, node):
            return True
        if supervisor(cfg, node) is None and init(cfg, node) is None:  # it gave up: say why
            tail = console.read_text(errors="replace").strip().splitlines()[-3:] if console.exists() else []
            raise LabError(f"{node} did not boot: " + " | ".join(tail), hint=f"see {console}")
        return False

    if not wait_until(done, timeout=timeout):
        raise LabError(f"{node} did not boot within {timeout:g} s", hint=f"see {console}")


def ssh_banner(address: str, timeout: float = 1.0) -> bool:
    """sshd accepts connections (reads its version banner; no login)."""
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(cfg: LabConfig, node: str, timeout: float = 60) -> None:
    address = cfg.address(node)
    if not wait_until(lambda: ssh_banner(address, 0.5), timeout=timeout, interval=0.05):
        raise LabError(
            f"{node}: sshd on {address} does not answer after {timeout:g} s; " + _ssh_diagnosis(cfg, node),
            hint=f"see {cfg.host_dir(node) / 'console.log'} and the host's /var/log/lab/ssh.log",
        )


def _ssh_diagnosis(cfg: LabConfig, node: str) -> str:
    """What the host itself says about its sshd: is it running, listening, what did it print."""
    try:
        out = exec_in(
            cfg,
            node,
            "pgrep -a sshd | head -3; ip -brief address | grep -v '^lo'; ss -ltn | grep ':22 ';"
            " tail -n 5 /var/log/lab/ssh.log",
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired, LabError) as exc:
        return f"the host could not be asked ({exc})"
    lines = [x.strip() for x in (out.stdout + out.stderr).splitlines() if x.strip()]
    return "in the host: " + (" | ".join(lines[-10:]) or "no sshd, no listener, no log")


# --- console -----------------------------------------------------------------------------------


def exec_argv(cfg: LabConfig, node: str, argv: Sequence[str]) -> list[str]:
    """nsenter into all of the host's namespaces and its root, with a clean environment."""
    ref = init(cfg, node)
    if ref is None or not _is_tini(ref):
        raise LabError(f"{node} is not up", hint=f"power it on with `cau lab boot {node}`")
    env = ["env", "-i", f"PATH={HOST_PATH}", "HOME=/root", "TERM=dumb", "LANG=C.UTF-8", "USER=root"]
    return ["nsenter", "-t", str(ref.pid), "-a", "-r", "-w", *env, *argv]


def command_argv(cmd: str | Sequence[str]) -> list[str]:
    return ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def exec_in(
    cfg: LabConfig,
    node: str,
    cmd: str | Sequence[str],
    *,
    timeout: float | None = 120,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run cmd (a shell string, or argv) inside the host; output captured as text."""
    argv = exec_argv(cfg, node, command_argv(cmd))
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        check=False,
    )
    if check and result.returncode != 0:
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        detail = (result.stderr or result.stdout).strip().splitlines()[-5:]
        raise LabError(f"{node}: `{shown}` failed (exit {result.returncode}): " + " | ".join(detail))
    return result


def stop_all(cfg: LabConfig, timeout: float = 30, *, include_netns: bool = True) -> None:
    """Power every host off (gracefully, then hard), end the supervisors, and any process still
    in the lab's network namespaces. Idempotent; works from the state files alone."""
    nodes = cfg.node_names
    for node in nodes:
        if cfg.host_dir(node).is_dir():
            _flag(cfg, node, "stop-requested").touch()
            ref = init(cfg, node)
            if ref is not None:
                ref.signal(signal.SIGTERM)
    wait_until(lambda: all(init(cfg, n) is None for n in nodes), timeout=timeout, interval=0.05)
    for node in nodes:
        ref = init(cfg, node)
        if ref is not None:
            ref.signal(signal.SIGKILL)
    wait_until(lambda: all(supervisor(cfg, n) is None for n in nodes), timeout=10, interval=0.05)
    for node in nodes:
        ref = supervisor(cfg, node)
        if ref is not None:  # stuck: it would never boot again anyway (stop-requested)
            ref.signal(signal.SIGKILL)
    if include_netns:  # anything else living in our network namespaces (`ip netns exec` by hand)
        for node in nodes:
            out = run(["ip", "netns", "pids", cfg.netns(node)], check=False).stdout
            for pid in out.split():
                ref = ProcRef.of(int(pid))
                if ref is not None:
                    ref.signal(signal.SIGKILL)
    for key in [k for k in _attached if k[0] == str(cfg.state_dir)]:
        proc = _attached.pop(key)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its PID
            proc.wait()
