"""The power supply of one lab host: `python -m cau_lab.supervisor STATE_DIR NODE`.

It boots the host (host-boot.sh as PID 1 of new namespaces) and waits for it to end. A host
that called reboot(2) inside its PID namespace ends "killed by SIGHUP": the supervisor boots it
again after the reboot delay. A host reset from outside (flag `reset-requested`) also comes
back. Anything else -- a power-off, a kill, a stop request, or the flag `no-return` ("this node
never comes back") -- leaves it off, and the supervisor exits.

Files in the host's directory (hosts/NODE/):
    supervisor.pid, init.pid   "PID START-TIME" of the supervisor and of the host's PID 1 (kept
                               after they end: readers check that the process still lives)
    stop-requested             set by kill/poweroff/down: stay off
    reset-requested            set by reset: come back even though PID 1 was SIGKILLed
    no-return                  set by hold: the next time the host goes down, it stays off
    reboot-delay               seconds; overrides the lab's reboot delay for this host
    console.log, supervisor.log
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cau_lab.config import LabConfig, LabError
from cau_lab.proc import ProcRef, children

# reboot(2) RESTART in a child PID namespace: its PID 1 dies of SIGHUP; `unshare --fork`
# passes that on by killing itself with the same signal.
REBOOT_SIGNAL = signal.SIGHUP


def _log(message: str) -> None:
    print(f"{time.time():.3f} {message}", flush=True)


def _uptime() -> float:
    return float(Path("/proc/uptime").read_text().split()[0])


def _delay(cfg: LabConfig, d: Path) -> float:
    try:
        return max(0.0, float((d / "reboot-delay").read_text().strip()))
    except (OSError, ValueError):
        return cfg.reboot_delay


def boot_command(cfg: LabConfig, node: str, lowerdirs: str) -> list[str]:
    # A time namespace whose boot clock starts near 0: `uptime` in the host counts from its
    # own boot (the kernel's boot_id and load average stay global; see lab-init).
    offset = max(0, int(_uptime()) - 1)
    return [
        "ip", "netns", "exec", cfg.netns(node),
        "unshare", "--uts", "--ipc", "--pid", "--mount", "--time", "--boottime", f"-{offset}",
        "--fork", "--propagation", "private",
        str(cfg.bin_dir / "host-boot.sh"), node, lowerdirs, str(cfg.host_dir(node)), str(cfg.repo_dir),
        *([str(cfg.vms_dir)] if cfg.vm_hosts else []),
    ]  # fmt: skip


def _find_init(outer: subprocess.Popen[bytes]) -> ProcRef | None:
    """The host's PID 1: the child `unshare --fork` made (host-boot.sh, then tini)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and outer.poll() is None:
        kids = children(outer.pid)
        if kids:
            return ProcRef.of(kids[0])
        time.sleep(0.005)
    return None


def supervise(cfg: LabConfig, node: str) -> int:
    d = cfg.host_dir(node)
    me = ProcRef.of(os.getpid())
    assert me is not None
    me.write(d / "supervisor.pid")
    # down/kill stop us by a flag and by ending the host; a SIGTERM to us means the same
    signal.signal(signal.SIGTERM, lambda *_: (d / "stop-requested").touch())
    lowerdirs = (d / "lowerdirs").read_text().strip()
    try:
        while True:
            if (d / "stop-requested").exists():
                _log("stop requested before boot: staying off")
                return 0
            with open(d / "console.log", "ab") as console:
                outer = subprocess.Popen(
                    boot_command(cfg, node, lowerdirs),
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                )
            init = _find_init(outer)
            if init is not None:
                init.write(d / "init.pid")
                _log(f"up: init pid {init.pid}")
                if (d / "stop-requested").exists():  # a kill raced with the boot
                    init.signal(signal.SIGKILL)
            rc = outer.wait()
            (d / "init.pid").unlink(missing_ok=True)
            _log(f"down: {_describe(rc)}")
            if (d / "stop-requested").exists():
                _log("stop requested: staying off")
                return 0
            reset = (d / "reset-requested").exists()
            (d / "reset-requested").unlink(missing_ok=True)
            rebooted = rc in (-REBOOT_SIGNAL, 128 + REBOOT_SIGNAL)
            if not (reset or rebooted):
                _log("powered off: staying off")
                return 0
            if (d / "no-return").exists():
                _log("no-return set: this host does not come back")
                return 0
            delay = _delay(cfg, d)
            _log(f"{'reset' if reset else 'reboot'}: booting again in {delay:g} s")
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:  # a stop request ends the wait early
                if (d / "stop-requested").exists():
                    break
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    finally:
        # supervisor.pid stays: it names a process that is no longer alive, which is all a
        # reader checks (ProcRef.alive), and `start` can tell "started and ended" apart
        _log("supervisor exits")


def _describe(rc: int) -> str:
    try:
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        if rc > 128:
            return f"exit {rc} ({signal.Signals(rc - 128).name})"
    except ValueError:
        pass
    return f"exit {rc}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m cau_lab.supervisor STATE_DIR NODE", file=sys.stderr)
        return 2
    try:
        cfg = LabConfig.load(Path(argv[0]))
        return supervise(cfg, argv[1])
    except LabError as exc:
        _log(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
