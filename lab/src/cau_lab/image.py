"""The golden image: a Debian root filesystem built once with debootstrap and shared, read-only,
by every host of every lab (each host writes to its own overlay upper dir).

It is cached outside the repository, keyed by a hash of what goes into it:
    /var/cache/cau-lab/rootfs-<key>.tar.zst   the archive (what a CI cache would keep)
    /var/cache/cau-lab/rootfs-<key>/          the unpacked tree the overlays use
A build takes about a minute (network); restoring the archive about 2 s; an unpacked tree is
used as it is.

Nothing lab-specific goes in here: the init, the shims, keys, /etc/hosts and sources.list
are in each lab's own thin layer (see layer.py), so one image serves labs of any shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from cau_lab.config import LabConfig, LabError
from cau_lab.proc import IMAGE_TOOLS, Log, cache_lock, ensure_tools, quiet, remove_tree, run

# Bump when the build steps below change in a way that changes the image.
RECIPE_VERSION = 2
VARIANT = "minbase"
# What every host needs: sshd (and ssh-keygen), tini as PID 1, python3 for lab-reboot's
# reboot(2) call, and the usual tools an admin (or a cau plug-in) expects.
BASE_PACKAGES = (
    "openssh-server",
    "tini",
    "python3",
    "iproute2",
    "iputils-ping",
    "procps",
    "psmisc",
    "ca-certificates",
    "less",
    "apt-utils",  # as on a usual server; without it debconf warns on every install
)
# Installed after debootstrap (with apt, so dependencies resolve): the cluster stack of
# `cau lab up --pacemaker`, arping for the gratuitous ARP of a moved address, and etcd 3.4 (the
# run store of `--self-updating`; etcdctl comes with etcd-client). In the one image every lab
# uses, so CI builds and caches one image; a plain lab starts none of them.
CLUSTER_PACKAGES = (
    "pacemaker",
    "corosync",
    "crmsh",
    "resource-agents",
    "iputils-arping",
    "etcd-server",
    "etcd-client",
)
# The hypervisor of `cau lab up --vm-hosts` (Debian 12: the monolithic libvirtd, with virtlogd;
# QEMU under TCG). Only in the VM hosts' image: a separate cache key, the other labs' image
# stays as it is.
VM_PACKAGES = (
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "qemu-system-x86",
)
FALLBACK_MIRROR = "http://deb.debian.org/debian"


def architecture() -> str:
    return run(["dpkg", "--print-architecture"]).stdout.strip()


def cache_key(cfg: LabConfig) -> str:
    """A hash of the build inputs (not of the mirror: any mirror gives the same packages)."""
    recipe = {
        "recipe": RECIPE_VERSION,
        "suite": cfg.suite,
        "variant": VARIANT,
        "arch": architecture(),
        "include": sorted(BASE_PACKAGES),
        "cluster": sorted(CLUSTER_PACKAGES),
        "packages": sorted(cfg.packages),
    }
    if cfg.vm_hosts:  # only then: the key (and image) of the other labs stays the same
        recipe["vm"] = sorted(VM_PACKAGES)
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def image_dir(cfg: LabConfig) -> Path:
    return cfg.cache_dir / f"rootfs-{cache_key(cfg)}"


def archive_path(cfg: LabConfig) -> Path:
    return cfg.cache_dir / f"rootfs-{cache_key(cfg)}.tar.zst"


def _sources_files() -> Iterator[Path]:
    yield Path("/etc/apt/sources.list")
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        yield from sorted(d.iterdir())


def detect_mirror(suite: str) -> str:
    """The Debian mirror this machine's apt uses for `suite` (the network may allow no other)."""
    for path in _sources_files():
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822: blank-line separated stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[:1].isspace():
                        continue
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
                if (
                    "deb" in fields.get("types", "").split()
                    and suite in fields.get("suites", "").split()
                    and fields.get("enabled", "yes").lower() != "no"
                ):
                    for uri in fields.get("uris", "").split():
                        if uri.startswith(("http://", "https://")):
                            return uri.rstrip("/")
        elif path.suffix == ".list" or path.name == "sources.list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if (
                    len(words) >= 3
                    and words[0] == "deb"
                    and words[2] == suite
                    and words[1].startswith(("http://", "https://"))
                ):
                    return words[1].rstrip("/")
    return FALLBACK_MIRROR


def ensure_image(cfg: LabConfig, log: Log = quiet) -> Path:
    """The unpacked golden image for cfg: used as is, unpacked from the archive, or built."""
    target = image_dir(cfg)
    if target.is_dir():
        return target
    with cache_lock(cfg.cache_dir, ".lock"):
        if target.is_dir():
            return target
        archive = archive_path(cfg)
        if not archive.is_file():
            build(cfg, log, keep_tree=target)
            return target
        started = time.monotonic()
        tmp = target.with_name(target.name + ".unpack")
        remove_tree(tmp)
        tmp.mkdir()
        tar = "tar --numeric-owner --xattrs --xattrs-include='*' -xpf - -C " + _sh(tmp)
        run(["sh", "-c", f"zstd -q -d -c {_sh(archive)} | {tar}"], timeout=600)
        tmp.rename(target)  # atomic: a complete tree or none
        log(f"image {target.name} unpacked in {time.monotonic() - started:.1f} s")
    return target


def _sh(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def build(cfg: LabConfig, log: Log = quiet, keep_tree: Path | None = None) -> Path:
    """debootstrap the image and store it as the archive; with keep_tree, also keep the built
    tree there (saves unpacking the archive again). Returns the archive's path."""
    ensure_tools(IMAGE_TOOLS, log)
    archive = archive_path(cfg)
    work = cfg.cache_dir / f"build-{cache_key(cfg)}"
    remove_tree(work)
    root = work / "rootfs"
    root.mkdir(parents=True)
    logfile = cfg.log_dir / "image-build.log"
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    mirror = cfg.mirror or detect_mirror(cfg.suite)
    started = time.monotonic()
    log(f"building the {cfg.suite} image with debootstrap from {mirror} (about a minute; log: {logfile})")
    # debootstrap and the chroot steps mount /proc (and more) in the target: run them in a
    # private mount namespace so those mounts vanish with the process, even on a failure.
    steps = [
        f"debootstrap --variant={VARIANT} --include={','.join(BASE_PACKAGES)} "
        f"{cfg.suite} {_sh(root)} {mirror}",
    ]
    packages = [*CLUSTER_PACKAGES, *(VM_PACKAGES if cfg.vm_hosts else ()), *cfg.packages]
    steps += [
        # before any maintainer script runs: they must start no daemon (corosync, pacemaker)
        f"printf '#!/bin/sh\\nexit 101\\n' > {_sh(root)}/usr/sbin/policy-rc.d",
        f"chmod 755 {_sh(root)}/usr/sbin/policy-rc.d",
        f"mount -t proc proc {_sh(root)}/proc",
        f"chroot {_sh(root)} apt-get update -q",
        f"chroot {_sh(root)} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
        f"--no-install-recommends {' '.join(packages)}",
    ]
    script = "set -ex\n" + "\n".join(steps) + "\n"
    with open(logfile, "w") as out:
        out.write(f"mirror {mirror}\n")
        out.flush()
        result = _run_logged(["unshare", "--mount", "--propagation", "private", "sh", "-c", script], out)
    if result != 0:
        tail = logfile.read_text(errors="replace").strip().splitlines()[-8:]
        raise LabError("image build failed:\n  " + "\n  ".join(tail), hint=f"full log: {logfile}")
    _clean(root)
    log(f"image built in {time.monotonic() - started:.0f} s; packing {archive.name}")
    tmp = archive.with_name(archive.name + ".tmp")
    tar = f"tar --numeric-owner --xattrs --xattrs-include='*' -cpf - -C {_sh(root)} ."
    run(["sh", "-c", f"{tar} | zstd -q -T0 -3 -o {_sh(tmp)} -f"], timeout=600)
    tmp.rename(archive)
    if keep_tree is not None:
        root.rename(keep_tree)
    remove_tree(work)
    return archive


def _run_logged(argv: list[str], out: TextIO) -> int:
    proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    return proc.returncode


def _clean(root: Path) -> None:
    """Make the tree a golden image: no daemons from maintainer scripts, no per-machine state."""
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\n# lab hosts: maintainer scripts never start daemons\nexit 101\n")
    policy.chmod(0o755)
    # every host makes its own host keys at first boot (lab-init)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # apt sources come from the lab layer (lab repositories only); no downloaded state
    for entry in (root / "etc/apt/sources.list.d").glob("*"):
        entry.unlink()
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    for sub in ("var/lib/apt/lists", "var/cache/apt/archives"):
        d = root / sub
        if d.is_dir():
            for entry in d.iterdir():
                if entry.is_file():
                    entry.unlink()
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("")
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    (root / "etc/resolv.conf").write_text("# lab hosts have no DNS\n")
    (root / "etc/machine-id").unlink(missing_ok=True)
    os.chmod(root / "root", 0o700)
    shutil.rmtree(root / "tmp", ignore_errors=True)
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
