"""A stock Debian 12 root filesystem: `python3` and `python3-pip` on a minimal bookworm, and NOT
`python3-venv` (so `python3 -m venv` fails for want of ensurepip), to try `./dev` on as a new user
would find Debian.

Built once with debootstrap from this machine's Debian mirror and cached as a plain tar (about a
minute to build; extracting it takes a few seconds):
    /var/cache/cau-test/bookworm-stock-<key>.tar   (CAU_STOCK_DEBIAN_CACHE overrides the folder)
The key hashes the recipe below, so a changed recipe builds a new archive. It is kept apart from
the lab's image (/var/cache/cau-lab), which is not stock.

Commands run in the tree through `chroot`, each in its own mount and PID namespaces (never a
network namespace: the chroot shares this machine's network, so apt and pip reach their
registries): /proc and /dev are mounted there and vanish with the namespace when the command ends,
however it ends, and every process it started goes with it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from cau_lab.image import architecture, detect_mirror
from cau_lab.proc import remove_tree

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = ("python3", "python3-pip")
# Bump when the build steps change in a way that changes the tree.
RECIPE_VERSION = 1
CACHE_DIR = Path(os.environ.get("CAU_STOCK_DEBIAN_CACHE", "/var/cache/cau-test"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What a chroot's commands get from this process's environment (a proxy, if this machine needs
# one to reach the registries); nothing else, above all no pip settings of this machine.
PASSED_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class StockDebianError(RuntimeError):
    pass


def cache_key() -> str:
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": SUITE,
        "variant": VARIANT,
        "arch": architecture(),
        "packages": sorted(PACKAGES),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def archive_path() -> Path:
    return CACHE_DIR / f"bookworm-stock-{cache_key()}.tar"


@contextmanager
def _locked() -> Iterator[None]:
    """One build at a time (two test sessions may start together)."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_archive(log: list[str]) -> Path:
    """The cached archive, built first if there is none."""
    archive = archive_path()
    if archive.is_file():
        return archive
    with _locked():
        if not archive.is_file():
            build(archive, log)
    return archive


def build(archive: Path, log: list[str]) -> None:
    work = archive.with_name(archive.name + ".build")
    remove_tree(work)
    root = work / "rootfs"
    root.mkdir(parents=True)
    mirror = detect_mirror(SUITE)
    started = time.monotonic()
    try:
        _sh(
            f"debootstrap --variant={VARIANT} --include={','.join(PACKAGES)} {SUITE} "
            f"{shlex.quote(str(root))} {shlex.quote(mirror)}",
            timeout=1200,
            what=f"debootstrap of {SUITE} from {mirror}",
        )
        # Stock: what the packages' own scripts left, minus downloaded .debs (debootstrap's cache).
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        check = run_in(root, "dpkg -s python3-venv; python3 -c 'import ensurepip'", timeout=120)
        if check.returncode == 0:
            raise StockDebianError(f"the {SUITE} tree has python3-venv or ensurepip; it must not")
        tmp = archive.with_name(archive.name + ".tmp")
        _sh(
            f"tar --numeric-owner --xattrs --xattrs-include='*' -cpf {shlex.quote(str(tmp))} "
            f"-C {shlex.quote(str(root))} .",
            timeout=600,
            what="packing the tree",
        )
        tmp.rename(archive)
        log.append(f"built {archive.name} from {mirror} in {time.monotonic() - started:.0f} s")
    finally:
        remove_tree(work)


def extract(archive: Path, root: Path) -> None:
    root.mkdir(parents=True)
    _sh(
        f"tar --numeric-owner --xattrs --xattrs-include='*' -xpf {shlex.quote(str(archive))} "
        f"-C {shlex.quote(str(root))}",
        timeout=600,
        what=f"extracting {archive}",
    )


# How this machine reaches the registries, which a Debian installed on it would be given too: its
# DNS, the certificate authorities it trusts (a TLS-inspecting proxy's included) and pip's
# machine-wide settings (its `cert`, an index). Copied in when this machine has them.
NETWORK_FILES = ("etc/resolv.conf", "etc/ssl/certs/ca-certificates.crt", "etc/pip.conf")


def share_network_config(root: Path) -> list[str]:
    """Copy NETWORK_FILES into the tree; the ones copied."""
    copied = []
    for name in NETWORK_FILES:
        source = Path("/") / name
        if not source.is_file():
            continue
        dest = root / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.unlink(missing_ok=True)  # never write through a symlink out of the tree
        dest.write_bytes(source.read_bytes())
        copied.append(name)
    return copied


def run_in(
    root: Path,
    command: str,
    *,
    uid: int = 0,
    home: str = "/root",
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`command` (sh) in the tree as uid (whose group is the same number), with a clean environment,
    /proc and /dev mounted for it alone; output and errors together in stdout."""
    passed = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    environment = {"PATH": PATH, "HOME": home, "LANG": "C.UTF-8", "TERM": "dumb", **passed, **(env or {})}
    q = shlex.quote(str(root))
    inner = (
        f"mount -t proc proc {q}/proc && mount --rbind /dev {q}/dev && "
        f"exec chroot --userspec={uid}:{uid} {q} env -i "
        + " ".join(shlex.quote(f"{k}={v}") for k, v in environment.items())
        + f" sh -c {shlex.quote(command)}"
    )
    # A private mount namespace (the mounts never show outside it) and a PID namespace (its
    # processes end with it); --kill-child: they end with us too, on a timeout.
    argv = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    try:
        return subprocess.run(
            [*argv, "sh", "-c", inner],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise StockDebianError(f"no end after {timeout} s in the chroot: {command}\n{e.output}") from None


def _sh(script: str, *, timeout: float, what: str) -> None:
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n  ".join((result.stderr or result.stdout).strip().splitlines()[-10:])
        raise StockDebianError(f"{what} failed (exit {result.returncode}):\n  {tail}")
