"""The tiny guest of a VM-host lab (`cau lab up --vm-hosts`): a Debian kernel booted directly
(no disk, no bootloader) with a busybox initramfs that gives itself a static address and serves
HTTP on port 80.

    GET /   ->   boot=<the guest's boot id> count=<requests so far, in guest RAM> uptime=<s>

so a lost guest state (a reboot instead of a live migration) is visible: a new boot id, the
count starting again, the uptime going back.

Built once and cached, keyed by the kernel and busybox versions:
    /var/cache/cau-lab/guest-<key>/vmlinux         the uncompressed kernel (QEMU boots it by its
                                                   PVH note: ~3 s instead of 8-9 s for vmlinuz)
    /var/cache/cau-lab/guest-<key>/initramfs.cpio  busybox, the virtio network modules, /init
The packages come from this machine's apt sources (`apt-get download`; /boot is empty here).
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cau_lab.config import LabConfig, LabError
from cau_lab.proc import Log, cache_lock, quiet, run

GUEST_RECIPE = 1
# Module load order of Debian's virtio network stack (they are modules, not built in).
VIRTIO_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"
XZ_MAGIC = b"\xfd7zXZ\x00"

# /init: PID 1 of the guest. Address and name come from the kernel command line
# (cau.ip=A.B.C.D/N cau.name=NAME).
INIT = r"""#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in __MODULES__; do insmod /lib/modules/$m.ko; done
ip= name=guest
for w in $(cat /proc/cmdline); do
  case $w in cau.ip=*) ip=${w#cau.ip=} ;; cau.name=*) name=${w#cau.name=} ;; esac
done
hostname "$name"
ip link set lo up
i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
ip addr add "$ip" dev eth0
ip link set eth0 up
mkdir -p /run
cat /proc/sys/kernel/random/boot_id > /run/boot_id
echo 0 > /run/count
arping -U -c 2 -I eth0 "${ip%/*}" >/dev/null 2>&1 &
echo "cau-guest $name $ip boot=$(cat /run/boot_id) ready" > /dev/console
exec httpd -f -p 80 -h /www
"""

# The request handler: shell built-ins only (each process start costs ~40 ms under TCG), but for
# one `mv`. Requests overlap (probes every 50 ms, a CGI taking 30 ms, more after a pause): the
# count is written to a file of its own and renamed over the old one, so a reader never finds
# it empty (`echo > /run/count` truncates first: a request reading then counted from 1 again,
# which looked like a guest losing its state).
CGI = r"""#!/bin/sh
read c < /run/count
c=$((c+1))
echo "$c" > /run/count.$$
mv -f /run/count.$$ /run/count
read b < /run/boot_id
read u r < /proc/uptime
echo "Content-Type: text/plain"
echo ""
echo "boot=$b count=$c uptime=$u"
"""


@dataclass(frozen=True)
class GuestFiles:
    kernel: Path
    initrd: Path


@dataclass(frozen=True)
class GuestAnswer:
    """One answer of a guest's HTTP server."""

    boot: str
    count: int
    uptime: float


ANSWER = re.compile(r"boot=(\S+) count=(\d+) uptime=([\d.]+)")


def parse_answer(body: str) -> GuestAnswer:
    m = ANSWER.search(body)
    if m is None:
        raise LabError(f"not a guest's answer: {body[:80]!r}")
    return GuestAnswer(m.group(1), int(m.group(2)), float(m.group(3)))


def _candidate(package: str) -> str:
    out = run(["apt-cache", "policy", package], check=False).stdout
    m = re.search(r"Candidate:\s*(\S+)", out)
    if m is None or m.group(1) == "(none)":
        raise LabError(
            f"no {package} in this machine's apt sources",
            hint="run `apt-get update` (the guest's kernel and busybox come from Debian's packages)",
        )
    return m.group(1)


def kernel_package() -> str:
    """The versioned kernel package the metapackage depends on (linux-image-6.1.0-NN-amd64)."""
    out = run(["apt-cache", "depends", KERNEL_META], check=False).stdout
    m = re.search(r"Depends:\s*(linux-image-\S+)", out)
    if m is None:
        raise LabError(f"cannot tell which kernel {KERNEL_META} depends on", hint="run `apt-get update`")
    return m.group(1)


def cache_key() -> tuple[str, dict[str, str]]:
    kernel = kernel_package()
    recipe = {
        "recipe": str(GUEST_RECIPE),
        "kernel": f"{kernel}={_candidate(kernel)}",
        "busybox": _candidate(BUSYBOX),
        "modules": " ".join(VIRTIO_MODULES),
        # a changed /init or request handler makes a new guest image
        "guest": hashlib.sha256((INIT + CGI).encode()).hexdigest()[:16],
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    return digest, recipe


def ensure_guest(cfg: LabConfig, log: Log = quiet) -> GuestFiles:
    """The cached guest kernel and initramfs (built when missing)."""
    key, recipe = cache_key()
    target = cfg.cache_dir / f"guest-{key}"
    files = GuestFiles(target / "vmlinux", target / "initramfs.cpio")
    if target.is_dir():
        return files
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    with cache_lock(cfg.cache_dir, ".guest.lock"):
        if target.is_dir():
            return files
        started = time.monotonic()
        tmp = target.with_name(target.name + ".build")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        _build(tmp, recipe)
        tmp.rename(target)
        log(f"guest {target.name} built in {time.monotonic() - started:.1f} s")
    return files


def _build(out: Path, recipe: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory(prefix="cau-guest-") as tmpdir:
        work = Path(tmpdir)
        kernel_pkg = recipe["kernel"].split("=", 1)[0]
        # apt's _apt user must be able to write the download dir
        os.chmod(work, 0o755)
        run(["apt-get", "download", "-q", kernel_pkg, BUSYBOX], cwd=work, timeout=600)
        kdeb = next(work.glob("linux-image-*.deb"))
        bdeb = next(work.glob("busybox-static_*.deb"))
        kroot, broot = work / "kernel", work / "busybox"
        run(["dpkg-deb", "-x", str(kdeb), str(kroot)], timeout=300)
        run(["dpkg-deb", "-x", str(bdeb), str(broot)], timeout=300)
        vmlinuz = next((kroot / "boot").glob("vmlinuz-*"))
        (out / "vmlinux").write_bytes(vmlinux_of(vmlinuz.read_bytes()))
        (out / "kernel-version").write_text(vmlinuz.name.removeprefix("vmlinuz-") + "\n")
        (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
        _initramfs(work / "initramfs", kroot, broot / "bin/busybox", out / "initramfs.cpio")


def vmlinux_of(bzimage: bytes) -> bytes:
    """The uncompressed kernel in Debian's vmlinuz: its XZ payload, decompressed."""
    start = bzimage.find(XZ_MAGIC)
    if start < 0:
        raise LabError("the guest kernel has no XZ payload (not a Debian amd64 vmlinuz?)")
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    data = dec.decompress(bzimage[start:])
    if not data.startswith(b"\x7fELF"):
        raise LabError("the guest kernel's XZ payload is not an ELF vmlinux")
    return data


def _initramfs(root: Path, kroot: Path, busybox: Path, out: Path) -> None:
    for d in ("bin", "dev", "proc", "sys", "run", "tmp", "lib/modules", "www/cgi-bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(busybox, root / "bin/busybox")
    (root / "bin/busybox").chmod(0o755)
    applets = ("sh", "mount", "insmod", "ip", "hostname", "sleep", "cat", "arping", "httpd", "mv")
    for applet in applets:
        (root / "bin" / applet).symlink_to("busybox")
    found = {p.name.split(".ko")[0]: p for p in kroot.rglob("*.ko*")}
    for name in VIRTIO_MODULES:
        src = found.get(name)
        if src is None:
            raise LabError(f"the guest kernel has no module {name}")
        data = src.read_bytes()
        if src.name.endswith(".xz"):
            data = lzma.decompress(data)
        (root / "lib/modules" / f"{name}.ko").write_bytes(data)
    init = root / "init"
    init.write_text(INIT.replace("__MODULES__", " ".join(VIRTIO_MODULES)))
    init.chmod(0o755)
    cgi = root / "www/cgi-bin/index.cgi"
    cgi.write_text(CGI)
    cgi.chmod(0o755)
    os.mknod(root / "dev/console", 0o600 | 0o020000, os.makedev(5, 1))
    # the cpio package is absent here: busybox's own cpio writes the newc archive
    listing = run(["find", ".", "-mindepth", "1"], cwd=root).stdout
    with open(out, "wb") as f:
        done = subprocess.run(
            [str(root / "bin/busybox"), "cpio", "-o", "-H", "newc"],
            cwd=root,
            input=listing.encode(),
            stdout=f,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
    if done.returncode != 0:
        raise LabError(f"busybox cpio failed: {done.stderr.decode(errors='replace').strip()}")
