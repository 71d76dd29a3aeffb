"""`Lab`: one lab of N hosts, and everything done to it (what `cau lab ...` and the tests use).

    lab = Lab(LabConfig(nodes=4))
    lab.up()                       # image, repos, network, hosts, keys, clusters.toml
    lab.exec("node1", "apt-get update")
    lab.down()

State lives in cfg.state_dir; any later `Lab.open(state_dir)` drives the same lab.
"""

from __future__ import annotations

import fcntl
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from cau_lab import access, etcd, guest, hostcau, hosts, image, net, vmhosts
from cau_lab.config import LabConfig, LabError
from cau_lab.guest import GuestAnswer
from cau_lab.layer import assets_dir, build_layer
from cau_lab.pacemaker import Pacemaker
from cau_lab.proc import (
    HOST_TOOLS,
    Log,
    ProcRef,
    ensure_tools,
    mounts_under,
    quiet,
    remove_tree,
    require_root,
)
from cau_lab.repo import EXTRA_LIST, MAINTAINER, STANDARD, LabRepos

T = TypeVar("T")


class Lab:
    def __init__(self, cfg: LabConfig, *, detach: bool = True, log: Log = quiet) -> None:
        self.cfg = replace(cfg, state_dir=cfg.state_dir.absolute(), cache_dir=cfg.cache_dir.absolute())
        self.detach = detach  # supervisors outlive this process (CLI) or are its children (tests)
        self.log = log
        self.repos = LabRepos(self.cfg)
        self.timings: dict[str, float] = {}
        self._t0 = time.monotonic()

    @classmethod
    def open(cls, state_dir: Path, *, detach: bool = True, log: Log = quiet) -> Lab:
        """The lab whose state is in state_dir (as `up` saved it)."""
        return cls(LabConfig.load(state_dir.absolute()), detach=detach, log=log)

    # --- what tests and cau need to know -------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        return self.cfg.state_dir

    @property
    def nodes(self) -> list[str]:
        return self.cfg.node_names

    @property
    def addresses(self) -> dict[str, str]:
        return self.cfg.addresses

    @property
    def config_path(self) -> Path:
        return self.cfg.clusters_toml

    @property
    def known_hosts(self) -> Path:
        return self.cfg.known_hosts

    @property
    def identity(self) -> Path:
        return self.cfg.identity

    @property
    def cluster(self) -> str:
        return self.cfg.cluster

    @property
    def etcd_endpoints(self) -> list[str]:
        """The client URLs of a --self-updating lab's etcd members (one per host)."""
        return self.cfg.etcd_endpoints

    def etcd_health(self) -> dict[str, str | None]:
        """Each etcd member of a --self-updating lab: None when healthy, else why not."""
        return dict(zip(self.nodes, self._parallel(lambda n: etcd.health(self.cfg, n)), strict=True))

    def wait_etcd_healthy(self, nodes: Sequence[str] | None = None, timeout: float = 60) -> None:
        """Until the etcd members of nodes (default: all) answer healthy; LabError naming the others."""
        etcd.wait_healthy(self.cfg, timeout=timeout, nodes=list(nodes or self.nodes))

    # --- a --vm-hosts lab's guests ---------------------------------------------------------------

    @property
    def guests(self) -> list[str]:
        """The guests of a --vm-hosts lab (guest1..N; none otherwise)."""
        return self.cfg.guest_names

    @property
    def guest_addresses(self) -> dict[str, str]:
        return self.cfg.guest_addresses

    def guest_home(self, guest: str) -> str:
        """The host `up` (and `restore`) starts the guest on."""
        return self.cfg.guest_home(guest)

    def guest_url(self, guest: str) -> str:
        return vmhosts.guest_url(self.cfg, guest)

    def guest_answer(self, guest: str, timeout: float = 2) -> GuestAnswer:
        """The guest's boot id, request count (kept in guest RAM) and uptime, read over HTTP."""
        return vmhosts.guest_answer(self.cfg, guest, timeout=timeout)

    def guest_kernel_trouble(self) -> list[str]:
        """What the guest kernels printed of panics, oopses, lockups or broken virtio rings on
        their consoles since the last `restore` ("host guest: line"; [] when all is well)."""
        return vmhosts.kernel_trouble(self.cfg)

    def outgoing_migrations(self) -> list[vmhosts.CompletedJob]:
        """The live migrations libvirt completed since the last `restore`, whoever started them,
        each with libvirt's figures (its `job-completed` event on the source host)."""
        return vmhosts.outgoing_migrations(self.cfg)

    def guest_locations(self) -> dict[str, dict[str, str]]:
        """guest -> {host it is defined on: its virsh domstate}."""
        return vmhosts.locations(self.cfg)

    def virsh(
        self, node: str, *args: str, check: bool = False, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`virsh -c qemu:///system ARGS` on a host (nsenter)."""
        return vmhosts.virsh(self.cfg, node, *args, check=check, timeout=timeout)

    def migrate(self, guest: str, source: str, dest: str, timeout: float = 120) -> float:
        """Live-migrate a guest (virsh on the source, as the libvirt provider does); seconds."""
        return vmhosts.migrate(self.cfg, guest, source, dest, timeout=timeout)

    @property
    def pacemaker(self) -> Pacemaker:
        """The Pacemaker cluster of a `--pacemaker` lab (state, locations, constraints, restore)."""
        return Pacemaker(self.cfg, self.log)

    # --- whole lab -----------------------------------------------------------------------------

    def is_up(self) -> bool:
        """Any host or supervisor of this lab alive (as configured now, or as last brought up)."""
        return any(_is_up(c) for c in (self.cfg, self._saved()) if c is not None)

    def _saved(self) -> LabConfig | None:
        """The lab as the last `up` in this state dir saved it (it may differ from self.cfg)."""
        if not self.cfg.config_file.exists():
            return None
        try:
            return LabConfig.load(self.state_dir)
        except LabError:
            return None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up` or `down` at a time per state dir."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _step(self, name: str, started: float) -> float:
        now = time.monotonic()
        self.timings[name] = now - started
        self.log(f"[{now - self._t0:6.1f}s] {name} ({now - started:.1f} s)")
        return now

    def up(self, *, publish_new: bool = True, recreate: bool = False) -> None:
        """Bring the lab up from nothing (fresh hosts with the OLD packages installed).

        With the lab already up: recreate it, or refuse (LabError)."""
        require_root()
        self._t0 = t = time.monotonic()
        self.timings = {}
        with self._locked():
            if self.is_up() and not recreate:
                raise LabError(
                    f"the lab in {self.state_dir} is already up",
                    hint="`cau lab status` shows it; `cau lab up --recreate` starts it afresh",
                )
            self._clear_leftovers()
            ensure_tools(HOST_TOOLS, self.log)
            t = self._step("host tools", t)
            try:
                self._up(publish_new, t)
            except BaseException:
                self.log("bring-up failed: tearing down what was started")
                try:
                    self._down()
                except LabError as exc:  # keep the first failure the one reported
                    self.log(f"tear-down: {exc}")
                raise
        self.timings["total"] = time.monotonic() - self._t0

    def _clear_leftovers(self) -> None:
        """Stop what the last `up` in this state dir started (running, or left by a crash);
        refuse to touch network objects of our names that another lab owns."""
        saved = self._saved()
        if saved is not None:
            self._down(saved)
        if saved != self.cfg:
            self._down_hosts_only(self.cfg)
        taken = net.leftovers(self.cfg)
        if taken:
            raise LabError(
                f"network objects of this lab's names exist already: {', '.join(taken)}",
                hint="another lab with the same --name is up (`cau lab down --state-dir ...` it), "
                "or choose another --name and --subnet",
            )

    def _down_hosts_only(self, cfg: LabConfig) -> None:
        if cfg.hosts_dir.is_dir():
            hosts.stop_all(cfg, include_netns=False)

    def _up(self, publish_new: bool, t: float) -> None:
        cfg = self.cfg
        img = image.ensure_image(cfg, self.log)
        t = self._step("golden image", t)
        if cfg.vm_hosts:
            vmhosts.prepare_storage(cfg, guest.ensure_guest(cfg, self.log))
            t = self._step("guest kernel and initramfs", t)

        # a half-built lab must not offer the last lab's host keys or cluster config
        cfg.known_hosts.unlink(missing_ok=True)
        cfg.clusters_toml.unlink(missing_ok=True)
        access.ensure_client_key(cfg)
        layer = build_layer(cfg, img)
        vmhosts.write_layer(cfg, layer)
        if cfg.self_updating:
            t = self._step("layer", t)
            for part, seconds in hostcau.install(cfg, layer, img, self.log).items():
                self.timings[f"cau on the hosts: {part}"] = seconds
            t = self._step("cau installed in the layer", t)
        self.repos.reset()
        if publish_new:
            self.repos.publish_new()
        remove_tree(cfg.hosts_dir)  # fresh hosts: new disks, new host keys
        for node in self.nodes:
            d = cfg.host_dir(node)
            d.mkdir(parents=True)
            (d / "lowerdirs").write_text(f"{layer}:{img}\n")
        cfg.bin_dir.mkdir(parents=True, exist_ok=True)
        # a private copy: editing the package while hosts run cannot break a boot
        boot = cfg.bin_dir / "host-boot.sh"
        shutil.copyfile(assets_dir() / "host-boot.sh", boot)
        boot.chmod(0o755)
        cfg.save()
        t = self._step("layer, repositories, host dirs", t)

        net.up(cfg)
        t = self._step("network", t)

        for node in self.nodes:
            hosts.start(cfg, node, detach=self.detach)
        self._parallel(lambda n: hosts.wait_booted(cfg, n, timeout=60))
        t = self._step("boot", t)

        self._parallel(self._provision)
        keys = {n: access.host_key_line(self._host_key(n)) for n in self.nodes}
        access.write_known_hosts(cfg, keys)
        if cfg.self_updating:
            hostcau.write_known_hosts(cfg, cfg.known_hosts.read_text())
        t = self._step("old packages installed, host keys read", t)

        self._parallel(lambda n: hosts.wait_ssh(cfg, n, timeout=60))
        self._parallel(self._check_login)
        t = self._step("ssh", t)
        if cfg.self_updating:  # members start now, become healthy while Pacemaker forms
            etcd.setup(cfg)
            t = self._step("etcd started", t)
        if cfg.vm_hosts:  # before Pacemaker: the hosts' libvirtd runs vm1 (--pacemaker --vm-hosts)
            for part, seconds in vmhosts.setup(cfg, self.log).items():
                self.timings[part] = seconds
            t = self._step("libvirtd on every host" + ("" if cfg.pacemaker else ", guests answering"), t)
        if cfg.pacemaker:
            self.pacemaker.setup()
            t = self._step("pacemaker cluster formed, workloads started", t)
        if cfg.pacemaker_vms:
            vmhosts.wait_guests(cfg)
            t = self._step("vm1's guest answering", t)
        if cfg.self_updating:
            etcd.wait_healthy(cfg)
            t = self._step("etcd members healthy", t)
            # the hosts share the layer cau is installed in: one host answers for all
            hostcau.check_same_cau(cfg, self.nodes[:1])
            t = self._step("cau on the hosts is this machine's", t)
        access.write_clusters_toml(cfg)

    def _host_key(self, node: str) -> str:
        text = hosts.read_file(self.cfg, node, "/etc/ssh/ssh_host_ed25519_key.pub")
        if not text:
            raise LabError(f"{node}: no host key (/etc/ssh/ssh_host_ed25519_key.pub)")
        return text

    def _check_login(self, node: str) -> None:
        result = self.ssh(node, "hostname", timeout=30)
        if result.returncode != 0 or result.stdout.strip() != node:
            raise LabError(f"{node}: ssh login failed: {(result.stderr or result.stdout).strip()}")

    def _parallel(self, fn: Callable[[str], T], nodes: Sequence[str] | None = None) -> list[T]:
        targets = list(nodes or self.nodes)
        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            return list(pool.map(fn, targets))

    def down(self) -> None:
        """Power everything off, remove the network. Idempotent. Keeps the state dir (keys,
        logs, host disks) for inspection; the next `up` starts fresh hosts anyway."""
        require_root()
        with self._locked():
            self._down()

    def _down(self, cfg: LabConfig | None = None) -> None:
        cfg = cfg or self.cfg
        qemus = [p for n in cfg.node_names for p in vmhosts.qemu_pids(cfg, n)] if cfg.vm_hosts else []
        hosts.stop_all(cfg)
        # the hosts' PID namespaces ended, and the kernel killed their QEMUs with them; make sure
        for ref in filter(None, (ProcRef.of(pid) for pid in qemus)):
            ref.signal(signal.SIGKILL)
        net.down(cfg)
        left = mounts_under(cfg.state_dir)
        if left:
            raise LabError(f"mounts left under {cfg.state_dir}: {', '.join(left[:3])}")

    def status(self) -> list[hosts.HostStatus]:
        return [hosts.status(self.cfg, n) for n in self.nodes]

    # --- one host ------------------------------------------------------------------------------

    def exec(
        self,
        node: str,
        cmd: str | Sequence[str],
        *,
        timeout: float | None = 120,
        input: str | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run cmd inside the host (nsenter, ~0.03 s): a shell string, or an argv."""
        return hosts.exec_in(self.cfg, node, cmd, timeout=timeout, input=input, check=check)

    def ssh_argv(self, node: str, command: str) -> list[str]:
        return access.ssh_argv(self.cfg, node, command)

    def ssh(self, node: str, command: str, *, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run command over ssh as root, the way cau does (strict host key checking)."""
        return subprocess.run(
            self.ssh_argv(node, command),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def boot(self, node: str, *, wait: bool = True, timeout: float = 60) -> None:
        """Power on (no-op when up) and clear a hold; with wait, until sshd answers."""
        if not net.netns_exists(self.cfg, node):
            raise LabError(f"the lab in {self.state_dir} is down", hint="bring it up with `cau lab up`")
        hosts.hold(self.cfg, node, False)
        hosts.start(self.cfg, node, detach=self.detach)
        if wait:
            hosts.wait_booted(self.cfg, node, timeout=timeout)
            hosts.wait_ssh(self.cfg, node, timeout=timeout)

    def kill(self, node: str) -> None:
        """Hard power-off; the host stays down until `boot`."""
        hosts.kill(self.cfg, node)

    def poweroff(self, node: str) -> None:
        """Graceful power-off (services stopped); the host stays down until `boot`."""
        hosts.poweroff(self.cfg, node)

    def reset(self, node: str) -> None:
        """Hard reset: killed, and booted again after the reboot delay."""
        hosts.reset(self.cfg, node)

    def hold(self, node: str, on: bool = True) -> None:
        """The next time the host goes down (an in-host reboot, a reset) it does not come back."""
        hosts.hold(self.cfg, node, on)

    def set_reboot_delay(self, node: str, seconds: float | None) -> None:
        hosts.set_reboot_delay(self.cfg, node, seconds)

    def boot_id(self, node: str) -> str | None:
        return hosts.boot_id(self.cfg, node)

    def wait_ssh(self, node: str, timeout: float = 60) -> None:
        hosts.wait_ssh(self.cfg, node, timeout=timeout)

    def pids(self, node: str) -> list[int]:
        return hosts.pids(self.cfg, node)

    def restore(self) -> None:
        """Back to the state `up` left: every host up (held or slowed hosts released), the NEW
        versions published, the OLD ones installed; in a --pacemaker lab, the cluster as `up`
        left it too (see Pacemaker.restore; with --vm-hosts, vm1's guest answering on node1);
        in a --vm-hosts lab, every guest running on its start host; in a --self-updating lab,
        every etcd member running and healthy, and the store empty. For tests that share one
        lab."""
        for node in self.nodes:
            self.hold(node, False)
            self.set_reboot_delay(node, None)
        self._parallel(lambda n: self.boot(n, wait=True, timeout=60))
        self.publish_new()
        self.reset_packages()
        if self.cfg.pacemaker_vms:  # VirtualDomain needs libvirtd (it starts on boot, after sshd)
            self._parallel(lambda n: vmhosts.wait_libvirtd(self.cfg, n))
        if self.cfg.pacemaker:
            self.pacemaker.restore()
        if self.cfg.vm_hosts:
            vmhosts.restore(self.cfg, self.log)
        if self.cfg.self_updating:  # after Pacemaker's: no coordinator resource writes any more
            etcd.start(self.cfg)
            etcd.wait_healthy(self.cfg)
            etcd.clear(self.cfg)

    # --- packages ------------------------------------------------------------------------------

    def publish_new(self) -> None:
        """Publish the NEW versions (1.1, and labextra 1.1 in the extra repository)."""
        self.repos.publish_new()

    def publish_old(self) -> None:
        """Withdraw the NEW versions: only the OLD ones are published."""
        self.repos.publish_old()

    def reset_packages(self, nodes: Sequence[str] | None = None) -> None:
        """Put hosts back to the starting point: the OLD versions of the standard packages, no
        other lab test package, no extra repository, no apt lists, no pending restart."""
        self._parallel(self._provision, nodes)

    def _provision(self, node: str) -> None:
        keep = "|".join(STANDARD)
        script = f"""
set -e
export DEBIAN_FRONTEND=noninteractive
# test packages added by tests (the lab's maintainer marks them), in any state
extra=$(dpkg-query -W -f '${{Package}}\\t${{Maintainer}}\\n' 2>/dev/null \\
        | awk -F '\\t' '$2 == "{MAINTAINER}" && $1 !~ /^({keep})$/ {{print $1}}')
[ -z "$extra" ] || dpkg --purge --force-all $extra >/dev/null 2>&1
# dpkg -i installs, upgrades or downgrades to exactly these files
dpkg -i {" ".join(self.repos.old_debs())} >/dev/null 2>&1 || dpkg -i {" ".join(self.repos.old_debs())}
printf '%s install\\n' {" ".join(STANDARD)} | dpkg --set-selections   # no holds
rm -f {EXTRA_LIST} /run/reboot-required /run/reboot-required.pkgs
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
mkdir -p /var/lib/apt/lists/partial
"""
        self.exec(node, script, check=True, timeout=120)


def _is_up(cfg: LabConfig) -> bool:
    if not cfg.hosts_dir.is_dir():
        return False
    return any(hosts.init(cfg, n) is not None or hosts.supervisor(cfg, n) is not None for n in cfg.node_names)
