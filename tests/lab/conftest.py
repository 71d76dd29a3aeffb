"""The lab of real hosts, brought up once per test session (see cau_lab).

    def test_something(lab):          # the session's lab, as the previous test left it
    def test_other(clean_lab):        # the same lab, first put back to its starting state

`lab` is a cau_lab.Lab: state_dir, nodes, addresses ({node: address}), config_path
(clusters.toml, cluster name `lab.cluster` == "lab"), known_hosts, identity, exec(node, cmd),
ssh(node, cmd), kill/boot/reset/poweroff/hold(node), boot_id(node), publish_new(),
publish_old(), reset_packages(nodes), repos (add test packages), restore().

The lab uses its own names (netns `caulabt-nodeN`, bridge `caulabtbr0`, 10.77.200.0/24) and
state dir, so it does not collide with a `cau lab up` of the default lab on the same machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cau_lab import Lab, LabConfig

STATE_DIR = Path(os.environ.get("CAU_LAB_TEST_STATE_DIR", "/var/tmp/cau-lab-test"))
NAME = "caulabt"
SUBNET = "10.77.200.0/24"


def lab_unavailable() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network namespaces, mounts)"
    for tool in ("unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"the lab needs `{tool}`"
    probe = subprocess.run(
        ["unshare", "--net", "--pid", "--mount", "--uts", "--ipc", "--time", "--fork", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"namespaces unavailable: {probe.stderr.strip()}"
    return None


def running_lab(cfg: LabConfig) -> Iterator[Lab]:
    """A lab up for a fixture's lifetime (skipped where the lab cannot run), always down after."""
    reason = lab_unavailable()
    if reason:
        pytest.skip(reason)
    # detach=False: the supervisors are this process's children, waited for at the end
    the_lab = Lab(cfg, detach=False)
    try:
        the_lab.up(recreate=True)  # a crashed session's leftovers are replaced
        yield the_lab
    finally:
        the_lab.down()  # always: hosts by PID, netns, bridge (mounts die with the hosts)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    yield from running_lab(
        LabConfig(state_dir=STATE_DIR, name=NAME, subnet=SUBNET, nodes=4, reboot_delay=1.0)
    )


@pytest.fixture
def clean_lab(lab: Lab) -> Lab:
    """The session's lab, put back to its starting state first (all up, OLD installed, NEW published)."""
    lab.restore()
    return lab


@pytest.fixture
def fresh(clean_lab: Lab) -> Lab:
    """The clean lab, with no maintenance marker and no pending restart on any host."""
    for node in clean_lab.nodes:
        clean_lab.exec(
            node, "rm -f /var/lib/cau/maintenance /var/run/reboot-required /var/run/reboot-required.pkgs"
        )
    return clean_lab


# --- the Pacemaker lab -------------------------------------------------------------------------

PCMK_STATE_DIR = Path(os.environ.get("CAU_LAB_PCMK_TEST_STATE_DIR", "/var/tmp/cau-lab-pcmk-test"))
PCMK_NAME = "caulabp"
PCMK_SUBNET = "10.77.201.0/24"


@pytest.fixture(scope="session")
def pcmk_lab() -> Iterator[Lab]:
    """A `cau lab up --pacemaker` lab of 3 nodes (names `caulabp-nodeN`, 10.77.201.0/24): a
    Corosync/Pacemaker cluster with vm1 on node1 (http://10.77.201.101/, live-migratable), the
    web group on node2 (http://10.77.201.100/), web-clone on every node (port 8080).

    `pcmk_lab.pacemaker` reads and drives the cluster from inside a host: state() (crm_mon XML
    read by cau's parser: nodes, online, dc, quorum, failures, locations(rid), all_started(),
    and cau's ClusterStatus as `status`), locations(),
    location_constraints(), crm_mon_xml(), cib(), wait(until), wait_placed(), restore(),
    workloads (ids, start nodes, URLs), exec(node, cmd)."""
    yield from running_lab(
        LabConfig(
            state_dir=PCMK_STATE_DIR,
            name=PCMK_NAME,
            subnet=PCMK_SUBNET,
            nodes=3,
            pacemaker=True,
            reboot_delay=1.0,
        )
    )


@pytest.fixture
def clean_pcmk_lab(pcmk_lab: Lab) -> Lab:
    """The Pacemaker lab back in its starting state: every host up, every node online (no
    standby, no maintenance), the starting CIB (no cli-prefer/cli-ban constraints), failures
    cleaned, each workload on its start nodes."""
    pcmk_lab.restore()
    return pcmk_lab


# --- the self-updating lab ---------------------------------------------------------------------

SU_STATE_DIR = Path(os.environ.get("CAU_LAB_SU_TEST_STATE_DIR", "/var/tmp/cau-lab-su-test"))
SU_NAME = "caulabs"
SU_SUBNET = "10.77.204.0/24"


@pytest.fixture(scope="session")
def su_lab() -> Iterator[Lab]:
    """A `cau lab up --pacemaker --self-updating` lab of 3 nodes (names `caulabs-nodeN`,
    10.77.204.0/24): the Pacemaker lab (see pcmk_lab), plus an etcd member on every host
    (`su_lab.etcd_endpoints`, http://10.77.204.1N:2379; `etcd_health()`), this machine's cau
    installed on every host (`cau` on the PATH there), and /etc/cau/cau.toml there: the etcd
    store and the cluster `lab` (key /etc/cau/id_ed25519, /etc/cau/known_hosts,
    store_members). Its clusters.toml (config_path) names the same etcd store."""
    yield from running_lab(
        LabConfig(
            state_dir=SU_STATE_DIR,
            name=SU_NAME,
            subnet=SU_SUBNET,
            nodes=3,
            pacemaker=True,
            self_updating=True,
            reboot_delay=1.0,
        )
    )


@pytest.fixture
def clean_su_lab(su_lab: Lab) -> Lab:
    """The self-updating lab back in its starting state: as clean_pcmk_lab, and every etcd
    member running and healthy, the store empty."""
    su_lab.restore()
    return su_lab


# --- the VM-host lab ---------------------------------------------------------------------------

VM_STATE_DIR = Path(os.environ.get("CAU_LAB_VM_TEST_STATE_DIR", "/var/tmp/cau-lab-vm-test"))
VM_NAME = "caulabv"
VM_SUBNET = "10.77.205.0/24"


@pytest.fixture(scope="session")
def vm_lab() -> Iterator[Lab]:
    """A `cau lab up --vm-hosts` lab of 3 hypervisor hosts (names `caulabv-nodeN`,
    10.77.205.0/24), each running libvirtd, with 2 real guests (TCG, 128 MiB): guest1 on node1
    (http://10.77.205.111/), guest2 on node2 (.112), answering `boot=... count=... uptime=...`.
    `vm_lab.guests`, `guest_home(g)`, `guest_answer(g)`, `guest_locations()`, `virsh(node, ...)`.
    Its clusters.toml names the libvirt provider and a 50 ms probe per guest."""
    yield from running_lab(
        LabConfig(
            state_dir=VM_STATE_DIR,
            name=VM_NAME,
            subnet=VM_SUBNET,
            nodes=3,
            vm_hosts=True,
            guests=2,
            reboot_delay=1.0,
        )
    )


@pytest.fixture
def clean_vm_lab(vm_lab: Lab) -> Lab:
    """The VM-host lab back in its starting state: every host up with the OLD packages, each
    guest running on its start host only (its state kept where it could be), none of cau's
    marks left on the hosts."""
    vm_lab.restore()
    for node in vm_lab.nodes:
        vm_lab.exec(
            node, "rm -rf /var/lib/cau/libvirt /var/run/reboot-required /var/run/reboot-required.pkgs"
        )
    return vm_lab


# --- the Pacemaker lab with a real VM ----------------------------------------------------------

PCVM_STATE_DIR = Path(os.environ.get("CAU_LAB_PCVM_TEST_STATE_DIR", "/var/tmp/cau-lab-pcvm-test"))
PCVM_NAME = "caulabq"
PCVM_SUBNET = "10.77.206.0/24"


@pytest.fixture(scope="session")
def pcmk_vm_lab() -> Iterator[Lab]:
    """A `cau lab up --pacemaker --vm-hosts` lab of 3 nodes (names `caulabq-nodeN`,
    10.77.206.0/24): the Pacemaker lab (see pcmk_lab) on libvirt/QEMU hosts, its vm1 a real
    guest (ocf:heartbeat:VirtualDomain, allow-migrate=true; TCG, 128 MiB) on node1, answering
    `boot=... count=... uptime=...` on http://10.77.206.101/ (`guest_answer("vm1")`,
    `guest_locations()`, `virsh(node, ...)`); web and web-clone as in pcmk_lab."""
    yield from running_lab(
        LabConfig(
            state_dir=PCVM_STATE_DIR,
            name=PCVM_NAME,
            subnet=PCVM_SUBNET,
            nodes=3,
            pacemaker=True,
            vm_hosts=True,
            reboot_delay=1.0,
        )
    )


@pytest.fixture
def clean_pcmk_vm_lab(pcmk_vm_lab: Lab) -> Lab:
    """The Pacemaker lab with a real VM back in its starting state: as clean_pcmk_lab, and vm1's
    guest answering on node1 (with the state it had, when it could be moved back live)."""
    pcmk_vm_lab.restore()
    return pcmk_vm_lab
