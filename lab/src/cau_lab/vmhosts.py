"""VM hosts (`cau lab up --vm-hosts`): every lab host a libvirt/QEMU hypervisor running tiny real
virtual machines that move between the hosts by live migration, for cau's `libvirt` provider.

On every host:
    libvirtd --listen (lab-service `libvirtd`, TCP 16509, no auth: a private subnet) and
    virtlogd (lab-service `virtlogd`), both enabled: they come back after the host's reboot;
    the bridge vmbr0 (net.py: the host's address, its uplink eth0, the guests' taps; pinned MAC)
    /var/lib/cau-vms: one directory of this machine (cfg.vms_dir), the same on every host: the
    guest kernel and initramfs (guests are diskless, so a migration copies no storage).

Guests guest1..N (guest.py): persistent domains under KVM where the machine can run it, TCG
(`<domain type='qemu'>`) otherwise (accel.py; this machine's KVM is a software nested one that
hangs a guest), 128 MiB, 1 vCPU, a fixed MAC on vmbr0, the address
.110+i given on the kernel command line; defined and started round robin (guest1 on node1...),
not autostarted. Each carries cau's placement metadata naming that start host. A migration:

    virsh -c qemu:///system migrate --live --persistent --undefinesource GUEST \\
        qemu+tcp://<dest address>/system --migrateuri tcp://<dest address>
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar
from xml.sax.saxutils import escape, quoteattr

from cau.providers.libvirt import LibvirtOptions, migrate_command
from cau_lab import hosts
from cau_lab.accel import Accelerator, accelerator
from cau_lab.config import VM_BRIDGE, LabConfig, LabError
from cau_lab.guest import GuestAnswer, GuestFiles, parse_answer
from cau_lab.layer import make_dirs
from cau_lab.proc import Log, quiet, wait_until

T = TypeVar("T")

VMS_MOUNT = "/var/lib/cau-vms"  # the shared storage, on every host
KERNEL = f"{VMS_MOUNT}/vmlinux"
INITRD = f"{VMS_MOUNT}/initramfs.cpio"
GUEST_MEMORY_MIB = 128
GUEST_VCPUS = 1
# the libvirt provider's migration tuning for the lab (see access.py). Not lower: with a 10 or 30
# ms limit QEMU 7.2's TCG migrations corrupted guest memory now and then (a virtio ring "id N is
# not a head", oopses, panics on the destination; about 1 in 10-40 migrations under a 200/s ping
# load), with 50 ms and with the default 300 ms none in 120 and 86 (the guests' console logs).
MAX_DOWNTIME_MS = 50
MIGRATE_OPTIONS = ("--auto-converge",)
# what each host offers guests (clusters.toml's guest_memory_mib): two guests and a bit
HOST_GUEST_MEMORY_MIB = 320
LIBVIRT_PORT = 16509
CAU_NS = "urn:cau:libvirt:1"
VIRSH = ("virsh", "-c", "qemu:///system")
EMULATOR = "/usr/bin/qemu-system-x86_64"
MIGRATE_URI = "qemu+tcp://{address}/system"
MIGRATE_DATA_URI = "tcp://{address}"
SERVICES = ("virtlogd", "libvirtd", "libvirt-events")
# libvirt's `job-completed` events on each host (lab-service libvirt-events): on a migration's
# source host, its figures (the downtime of a migration Pacemaker's VirtualDomain made)
EVENTS_LOG = "/var/log/lab/libvirt-events.log"
# each guest's serial console, logged by virtlogd on the host it runs on (and appended to there)
CONSOLE_LOG = "/var/log/libvirt/qemu/{guest}-console.log"
# what a guest kernel prints when something broke it (the guests print only warnings and worse)
KERNEL_TROUBLE = re.compile(
    r"BUG:|Oops|Kernel panic|general protection fault|is not a head|soft lockup|rcu: INFO|Call Trace"
)

LIBVIRTD_CONF = f"""\
# libvirtd on a lab VM host (written by `cau lab up --vm-hosts`; /usr/local/sbin/lab-libvirtd
# adds this host's own host_uuid). TCP without auth: the lab's private subnet only.
listen_tls = 0
listen_tcp = 1
tcp_port = "{LIBVIRT_PORT}"
listen_addr = "0.0.0.0"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
log_outputs = "3:stderr"
"""

# No cgroups (a lab host has none mounted), no security driver (no AppArmor/SELinux), no
# private /dev per guest, QEMU as root: the host is a namespace of one real machine.
QEMU_CONF = """\
# QEMU driver of libvirtd on a lab VM host (written by `cau lab up --vm-hosts`).
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
cgroup_controllers = [ ]
namespaces = [ ]
"""


def write_layer(cfg: LabConfig, layer: Path) -> None:
    """libvirt's configuration for every VM host (the lab layer; the image has none)."""
    if not cfg.vm_hosts:
        return
    d = layer / "etc/libvirt"
    make_dirs(d)
    (d / "libvirtd.conf").write_text(LIBVIRTD_CONF)
    (d / "qemu.conf").write_text(QEMU_CONF)
    for name in ("libvirtd.conf", "qemu.conf"):
        (d / name).chmod(0o644)


def prepare_storage(cfg: LabConfig, files: GuestFiles) -> None:
    """The shared directory: the cached guest kernel and initramfs (hard links when it can)."""
    cfg.vms_dir.mkdir(parents=True, exist_ok=True)
    for src, name in ((files.kernel, "vmlinux"), (files.initrd, "initramfs.cpio")):
        dest = cfg.vms_dir / name
        dest.unlink(missing_ok=True)
        try:
            os.link(src, dest)
        except OSError:
            shutil.copyfile(src, dest)


def domain_xml(cfg: LabConfig, guest: str, preferred: str | None = None, accel: Accelerator = "qemu") -> str:
    """The persistent definition of a guest: TCG, direct kernel boot, the bridge, cau's
    placement metadata (preferred: its start host).

    virtio-net without event_idx: with it (the default), a guest on the lab once stopped
    receiving after a live migration (QEMU 7.2, TCG): its receive ring had buffers the guest had
    made available (`info virtio-queue-status`: shadow_avail_idx ahead of last_avail_idx) but
    QEMU delivered nothing, for minutes, until the next migration; shorter stalls of 1-2 s came
    after 2 of about 60 migrations. Without event_idx the guest notifies QEMU of every buffer
    it adds; none of 24 migrations stalled since. (That was with a 10 ms downtime limit, which
    later showed guest memory corruption, "is not a head" among it: see MAX_DOWNTIME_MS.)"""
    address = cfg.guest_address(guest)
    home = preferred or cfg.guest_home(guest)
    ip = f"{address}/{cfg.network.prefixlen}"
    cmdline = f"console=ttyS0 quiet panic=-1 mitigations=off cau.ip={ip} cau.name={guest}"
    # (a Pacemaker lab's vm1 is placed by Pacemaker: no metadata for the libvirt provider)
    metadata = (
        ""
        if cfg.pacemaker
        else f"""  <metadata>
    <cau:placement xmlns:cau="{CAU_NS}" preferred={quoteattr(home)}/>
  </metadata>
"""
    )
    return f"""<domain type='{accel}'>
  <name>{escape(guest)}</name>
  <title>cau lab guest {escape(guest)} ({address})</title>
{metadata}  <memory unit='MiB'>{GUEST_MEMORY_MIB}</memory>
  <currentMemory unit='MiB'>{GUEST_MEMORY_MIB}</currentMemory>
  <vcpu placement='static'>{GUEST_VCPUS}</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{KERNEL}</kernel>
    <initrd>{INITRD}</initrd>
    <cmdline>{escape(cmdline)}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{EMULATOR}</emulator>
    <interface type='bridge'>
      <mac address='{cfg.guest_mac(guest)}'/>
      <source bridge='{VM_BRIDGE}'/>
      <model type='virtio'/>
      <driver name='qemu' event_idx='off'/>
      <rom enabled='no'/>
    </interface>
    <serial type='pty'>
      <log file={quoteattr(CONSOLE_LOG.format(guest=guest))} append='on'/>
      <target port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def _parallel(fn: Callable[[str], T], items: Sequence[str]) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


def virsh(
    cfg: LabConfig, node: str, *args: str, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`virsh -c qemu:///system ARGS` inside a host (nsenter, as root)."""
    return hosts.exec_in(cfg, node, [*VIRSH, *args], check=check, timeout=timeout)


def start_services(cfg: LabConfig, node: str, timeout: float = 60) -> None:
    """Enable (for every later boot) and start virtlogd and libvirtd; wait until virsh answers."""
    hosts.exec_in(
        cfg,
        node,
        " && ".join(f"systemctl enable {s} && systemctl start {s}" for s in SERVICES),
        check=True,
    )
    wait_libvirtd(cfg, node, timeout)


def wait_libvirtd(cfg: LabConfig, node: str, timeout: float = 60) -> None:
    if not wait_until(lambda: virsh(cfg, node, "version", timeout=20).returncode == 0, timeout=timeout):
        why = virsh(cfg, node, "version", timeout=20)
        raise LabError(
            f"{node}: libvirtd does not answer after {timeout:g} s: {(why.stderr or why.stdout).strip()}",
            hint="see the host's /var/log/lab/libvirtd.log",
        )


def domain_file(cfg: LabConfig, guest: str) -> str:
    """Where a guest's domain XML is, on the hosts (the shared storage)."""
    cfg.guest_address(guest)
    return f"{VMS_MOUNT}/{guest}.xml"


def write_domain(cfg: LabConfig, guest: str, accel: Accelerator | None = None) -> None:
    """The guest's domain XML on the shared storage (domain_file on every host), with `accel`
    (default: what the lab's guests already use)."""
    (cfg.vms_dir / f"{guest}.xml").write_text(domain_xml(cfg, guest, accel=accel or _lab_accel(cfg)))


# A monitor script of a Pacemaker lab's VirtualDomain resource (its `monitor_scripts`), run on
# the host that runs the guest after every start, every arrival (migrate_from) and every monitor:
# QEMU's downtime limit of the running QEMU, which the next live migration uses. The agent's own
# migration_downtime is set 2 s into a migration, and vm1's take 0.3-0.6 s. It never fails the
# monitor (VirtualDomain would take that for a failed guest).
SET_DOWNTIME = "set-max-downtime"
SET_DOWNTIME_SCRIPT = f"""\
#!/bin/sh
# written by `cau lab up --pacemaker --vm-hosts`: QEMU's downtime limit for vm1's next live
# migration ({MAX_DOWNTIME_MS} ms); a VirtualDomain monitor script (the domain is the resource)
virsh --connect="${{OCF_RESKEY_hypervisor:-qemu:///system}}" --quiet \\
  migrate-setmaxdowntime "$OCF_RESOURCE_INSTANCE" {MAX_DOWNTIME_MS} >/dev/null 2>&1 || true
exit 0
"""


def set_downtime_file() -> str:
    """The monitor script's path on the hosts (the shared storage)."""
    return f"{VMS_MOUNT}/{SET_DOWNTIME}"


def write_set_downtime(cfg: LabConfig) -> None:
    path = cfg.vms_dir / SET_DOWNTIME
    path.write_text(SET_DOWNTIME_SCRIPT)
    path.chmod(0o755)


def define_and_start(
    cfg: LabConfig, guest: str, node: str | None = None, accel: Accelerator | None = None
) -> None:
    """Define guest (persistent) on node (default: its start host) and start it, with `accel`
    (default: what the lab's guests already use)."""
    node = node if node is not None else cfg.guest_home(guest)
    write_domain(cfg, guest, accel)
    virsh(cfg, node, "define", domain_file(cfg, guest), check=True)
    virsh(cfg, node, "start", guest, check=True)


def setup(cfg: LabConfig, log: Log = quiet, timeout: float = 120) -> dict[str, float]:
    """libvirt on every host, every guest defined and started on its start host, answering.
    In a Pacemaker lab: libvirt on every host and vm1's domain XML only (Pacemaker starts it,
    see pacemaker.virtual_domain; call this before the cluster starts)."""
    started = time.monotonic()
    _parallel(lambda n: start_services(cfg, n), cfg.node_names)
    t_libvirt = time.monotonic()
    log(f"libvirtd up on every host ({t_libvirt - started:.1f} s)")
    if cfg.pacemaker:
        for guest in cfg.guest_names:
            write_domain(cfg, guest)
        write_set_downtime(cfg)
        return {"libvirtd": t_libvirt - started}
    accel = accelerator()
    for guest in cfg.guest_names:
        define_and_start(cfg, guest, accel=accel)
    try:
        wait_guests(cfg, timeout=timeout if accel == "qemu" else 30)
    except LabError:
        if accel == "qemu":
            raise
        # hardware virtualization, yet the guest does not answer under KVM: software emulation
        log("the guests do not answer under KVM: starting them again under TCG")
        accel = "qemu"
        for guest in cfg.guest_names:
            virsh(cfg, cfg.guest_home(guest), "destroy", guest)
            virsh(cfg, cfg.guest_home(guest), "undefine", guest, check=True)
            define_and_start(cfg, guest, accel=accel)
        wait_guests(cfg, timeout=timeout)
    (cfg.vms_dir / ACCEL_FILE).write_text(accel + "\n")
    log(f"guests run under {'KVM' if accel == 'kvm' else 'TCG (software emulation)'}")
    done = time.monotonic()
    log(f"guests answering: {', '.join(f'{g} {a}' for g, a in cfg.guest_addresses.items())}")
    return {"libvirtd": t_libvirt - started, "guests boot": done - t_libvirt}


ACCEL_FILE = "accelerator"  # in the shared storage: what the lab's guests run under


def _lab_accel(cfg: LabConfig) -> Accelerator:
    """The accelerator `up` chose for this lab's guests (TCG when it has not said)."""
    try:
        return "kvm" if (cfg.vms_dir / ACCEL_FILE).read_text().strip() == "kvm" else "qemu"
    except OSError:
        return "qemu"


def guest_url(cfg: LabConfig, guest: str) -> str:
    return f"http://{cfg.guest_address(guest)}/"


def guest_answer(cfg: LabConfig, guest: str, timeout: float = 2) -> GuestAnswer:
    """GET / of the guest (from this machine's root namespace): boot id, count, uptime."""
    try:
        with urllib.request.urlopen(guest_url(cfg, guest), timeout=timeout) as resp:
            body = resp.read().decode(errors="replace")
    except (OSError, urllib.error.URLError) as exc:
        raise LabError(f"{guest} ({cfg.guest_address(guest)}) does not answer: {exc}") from exc
    return parse_answer(body)


def answers(cfg: LabConfig, guest: str) -> bool:
    try:
        guest_answer(cfg, guest, timeout=1)
    except LabError:
        return False
    return True


def wait_guests(cfg: LabConfig, guests: Sequence[str] | None = None, timeout: float = 120) -> None:
    targets = list(guests or cfg.guest_names)
    if not wait_until(lambda: all(answers(cfg, g) for g in targets), timeout=timeout, interval=0.2):
        late = [g for g in targets if not answers(cfg, g)]
        raise LabError(
            f"guests not answering HTTP after {timeout:g} s: {', '.join(late)}",
            hint="`cau lab exec NODE -- virsh -c qemu:///system list --all` on the hosts",
        )


def kernel_trouble(cfg: LabConfig) -> list[str]:
    """The lines of trouble (panics, oopses, lockups, a broken virtio ring) each guest kernel
    printed on its console since the last `restore`, as "host guest: line" (hosts that are down
    are skipped). A guest whose console log no host has is an error, not a clean bill."""
    found = []
    logged: set[str] = set()
    for node in cfg.node_names:
        for guest in cfg.guest_names:
            text = hosts.read_file(cfg, node, CONSOLE_LOG.format(guest=guest))
            if text is not None:
                logged.add(guest)
                found += [f"{node} {guest}: {line}" for line in trouble_lines(text)]
    unlogged = [g for g in cfg.guest_names if g not in logged]
    if unlogged:  # a guest with no console log anywhere: nothing to tell whether all went well
        raise LabError(f"no console log of {', '.join(unlogged)} on any host ({CONSOLE_LOG})")
    return found


def trouble_lines(console: str) -> list[str]:
    return [line.strip() for line in console.splitlines() if KERNEL_TROUBLE.search(line)]


@dataclass(frozen=True)
class CompletedJob:
    """A migration job libvirt completed on a host, from its `job-completed` event there."""

    node: str
    guest: str
    at: str  # the event's timestamp, as virsh prints it
    operation: int  # libvirt's virDomainJobOperation: 5 outgoing migration, 4 incoming
    elapsed_ms: float | None
    downtime_ms: float | None


_JOB_HEAD = re.compile(r"^(\S+ \S+): event 'job-completed' for domain '?([^':]+)'?:")


def parse_job_events(node: str, text: str) -> list[CompletedJob]:
    """The `job-completed` events of `virsh event --timestamp` (each a head line, then
    "\tkey: value" lines)."""
    jobs: list[CompletedJob] = []
    head: tuple[str, str] | None = None
    fields: dict[str, str] = {}

    def number(key: str) -> float | None:
        return float(fields[key]) if key in fields else None

    def close() -> None:
        if head is not None:
            operation = int(fields.get("operation", "0"))
            jobs.append(
                CompletedJob(node, head[1], head[0], operation, number("time_elapsed"), number("downtime"))
            )

    for line in text.splitlines():
        m = _JOB_HEAD.match(line)
        if m:
            close()
            head, fields = (m.group(1), m.group(2)), {}
        elif head is not None and line.startswith("\t"):
            key, _, value = line.strip().partition(": ")
            fields[key] = value
    close()
    return jobs


OUTGOING_MIGRATION = 5  # virDomainJobOperation VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT


def outgoing_migrations(cfg: LabConfig) -> list[CompletedJob]:
    """Every outgoing migration libvirt completed on the hosts since the last `restore`, in time
    order, with libvirt's figures (hosts that are down are skipped)."""
    found = []
    for node in cfg.node_names:
        text = hosts.read_file(cfg, node, EVENTS_LOG)  # None on a host that is down
        found += [j for j in parse_job_events(node, text or "") if j.operation == OUTGOING_MIGRATION]
    return sorted(found, key=lambda j: j.at)


def clear_consoles(cfg: LabConfig) -> None:
    """Empty every guest console log (virtlogd appends to them: the next line lands at 0) and
    the log of libvirt's completed jobs."""
    paths = " ".join([*(CONSOLE_LOG.format(guest=g) for g in cfg.guest_names), EVENTS_LOG])
    for node in cfg.node_names:
        if hosts.booted(cfg, node):
            hosts.exec_in(cfg, node, f"for f in {paths}; do [ -e $f ] && : > $f; done; true", check=True)


def locations(cfg: LabConfig) -> dict[str, dict[str, str]]:
    """Where each guest is defined: guest -> {node: state} (hosts that are down are skipped)."""
    found: dict[str, dict[str, str]] = {g: {} for g in cfg.guest_names}

    def listing(node: str) -> dict[str, str]:
        if not hosts.booted(cfg, node):
            return {}
        out = virsh(cfg, node, "list", "--all", "--name", timeout=30)
        states: dict[str, str] = {}
        for name in out.stdout.split():
            st = virsh(cfg, node, "domstate", name, timeout=30).stdout.strip()
            states[name] = st
        return states

    for node, states in zip(cfg.node_names, _parallel(listing, cfg.node_names), strict=True):
        for name, st in states.items():
            if name in found:
                found[name][node] = st
    return found


def restore(cfg: LabConfig, log: Log = quiet, timeout: float = 120) -> None:
    """Every guest defined only on its start host, running there (a guest found elsewhere is
    migrated back live when it runs, else undefined there and started at home; one that runs
    but does not answer is booted again), its console log emptied. In a Pacemaker
    lab, Pacemaker.restore places vm1 (libvirtd must answer first: call this after): here vm1's
    answer is waited for."""
    _parallel(lambda n: wait_libvirtd(cfg, n), cfg.node_names)
    if cfg.pacemaker:
        wait_guests(cfg, timeout=timeout)
        clear_consoles(cfg)
        return
    running: list[str] = []
    for guest, where in locations(cfg).items():
        home = cfg.guest_home(guest)
        at_home = where.get(home)
        for node, state in where.items():
            if node == home:
                continue
            if state == "running" and at_home is None:
                migrate(cfg, guest, node, home)
                at_home = "running"
                log(f"{guest}: migrated back from {node} to {home}")
                continue
            virsh(cfg, node, "destroy", guest)
            virsh(cfg, node, "managedsave-remove", guest)
            virsh(cfg, node, "undefine", guest, check=True)
        if at_home is None:
            define_and_start(cfg, guest, home)
        elif at_home == "paused":
            virsh(cfg, home, "resume", guest, check=True)
        elif at_home != "running":
            virsh(cfg, home, "start", guest, check=True)
        else:
            running.append(guest)
    # A guest that runs but does not answer has lost its network (its receive ring drained and
    # never refilled, seen after a live migration under load): only a fresh boot brings it back.
    for guest in running:
        if not wait_until(partial(answers, cfg, guest), timeout=5, interval=0.2):
            home = cfg.guest_home(guest)
            virsh(cfg, home, "destroy", guest, check=True)
            virsh(cfg, home, "start", guest, check=True)
            log(f"{guest}: ran on {home} without answering; booted again")
    wait_guests(cfg, timeout=timeout)
    clear_consoles(cfg)


def migrate(cfg: LabConfig, guest: str, source: str, dest: str, timeout: float = 120) -> float:
    """Live-migrate guest from source to dest with the libvirt provider's own command (and the
    options the lab gives it); returns seconds."""
    from cau_lab.access import libvirt_options  # (access imports this module)

    options = LibvirtOptions.model_validate(
        {"nodes": [{"name": n, "host": cfg.address(n)} for n in cfg.node_names], **libvirt_options()}
    )
    command = migrate_command(options, guest, target=dest, address=cfg.address(dest))
    started = time.monotonic()
    hosts.exec_in(cfg, source, command, check=True, timeout=timeout)
    return time.monotonic() - started


def qemu_pids(cfg: LabConfig, node: str) -> list[int]:
    """Root-namespace PIDs of the host's QEMU processes."""
    found = []
    for pid in hosts.pids(cfg, node):
        try:
            exe = os.readlink(f"/proc/{pid}/exe")
        except OSError:
            continue
        if exe.endswith(EMULATOR):
            found.append(pid)
    return found
