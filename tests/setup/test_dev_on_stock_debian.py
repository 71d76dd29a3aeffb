"""The README's commands on stock Debian 12 (python3 and pip, no python3-venv), for real: `./dev demo`
in a chroot of a debootstrapped bookworm (see stock_debian.py), first as a user, then as root.

The copy of the repository is `git archive` of the checkout's tracked files as they are (HEAD plus
uncommitted changes, through `git stash create`, which changes no ref and no file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cau_lab.proc import mounts_under, remove_tree
from tests.setup import stock_debian

# The first run builds the stock tree (about two minutes); then a run takes about 80 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
UID = 4242  # the user in the chroot, "alice"; her group has the same number
TIMINGS: dict[str, float] = {}


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mounts)"
    for tool, package in (("debootstrap", "debootstrap"), ("unshare", "util-linux"), ("git", "git")):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"needs `{tool}` (Debian package {package}; ./dev test installs it as root)"
    if not (ROOT / ".git").exists():
        return f"needs a git checkout: {ROOT} is not one"
    return None


def _copy_checkout(dest: Path) -> None:
    """The checkout's tracked files, uncommitted changes included, into dest (owned by alice)."""
    git = ["git", "-C", str(ROOT), "-c", "user.name=cau-test", "-c", "user.email=cau-test@localhost"]
    stash = subprocess.run([*git, "stash", "create"], capture_output=True, text=True, check=True)
    tree = stash.stdout.strip() or "HEAD"
    dest.mkdir(parents=True)
    archive = dest.with_name("cau.tar")
    subprocess.run([*git, "archive", "--format=tar", "-o", str(archive), tree], check=True)
    subprocess.run(["tar", "-x", "-f", str(archive), "-C", str(dest)], check=True)
    archive.unlink()
    subprocess.run(["chown", "-R", f"{UID}:{UID}", str(dest)], check=True)


def _timed(name: str, result: subprocess.CompletedProcess[str], started: float) -> str:
    TIMINGS[name] = time.monotonic() - started
    return result.stdout


def test_dev_demo_on_stock_debian_12_installs_python3_venv_as_root_and_names_it_otherwise(
    tmp_path: Path,
) -> None:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    log: list[str] = []
    started = time.monotonic()
    archive = stock_debian.ensure_archive(log)
    TIMINGS["rootfs (cached or built)"] = time.monotonic() - started
    root = tmp_path / "rootfs"
    try:
        started = time.monotonic()
        stock_debian.extract(archive, root)
        TIMINGS["extract"] = time.monotonic() - started
        stock_debian.share_network_config(root)
        made = stock_debian.run_in(
            root, f"groupadd -g {UID} alice && useradd -m -u {UID} -g {UID} -s /bin/bash alice", timeout=60
        )
        assert made.returncode == 0, made.stdout
        checkout = root / "home/alice/cau"
        _copy_checkout(checkout)

        def as_alice(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
            return stock_debian.run_in(root, command, uid=UID, home="/home/alice", timeout=timeout)

        # A user: told exactly what to install, no half-made .venv left behind.
        started = time.monotonic()
        user = as_alice("cd ~/cau && ./dev demo", timeout=300)
        out = _timed("./dev demo as a user", user, started)
        assert user.returncode == 1, f"exit {user.returncode}:\n{out}"
        assert "sudo apt-get install python3-venv" in out, out
        assert not (checkout / ".venv").exists(), "a failed ./dev left .venv behind"

        # What the same user gets from trying `python3 -m venv` by hand: a half-made .venv.
        attempt = as_alice("cd ~/cau && python3 -m venv .venv", timeout=120)
        assert attempt.returncode != 0 and "ensurepip" in attempt.stdout, attempt.stdout
        assert (checkout / ".venv/bin").is_dir() and not (checkout / ".venv/bin/pip").exists()

        # Root, in the same copy: installs python3-venv, sets up, and the demo's run succeeds.
        started = time.monotonic()
        admin = stock_debian.run_in(root, "cd /home/alice/cau && ./dev demo", timeout=1500)
        out = _timed("./dev demo as root (apt, venv, pip, demo)", admin, started)
        assert admin.returncode == 0, f"exit {admin.returncode}:\n{out[-6000:]}"
        assert "dev: installing Debian packages: python3-venv" in out, out[-6000:]
        assert "run finished: Succeeded" in out and "4 Succeeded" in out, out[-6000:]
        installed = stock_debian.run_in(root, "dpkg-query -W -f '${Status}' python3-venv", timeout=60)
        assert installed.stdout.strip() == "install ok installed", installed.stdout
        assert not (root / "usr/sbin/policy-rc.d").exists(), "./dev left its policy-rc.d behind"
    finally:
        left = mounts_under(root)
        assert left == [], f"mounts left under the chroot (not removed): {left}"
        remove_tree(root)
        print("timings:", ", ".join(f"{k} {v:.0f} s" for k, v in TIMINGS.items()), *log)
