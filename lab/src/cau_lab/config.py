"""What a lab is: its names, its subnet, where it keeps its state. Saved as `lab.json` in the
state dir, so every later command (status, down, exec, the supervisors) finds the same lab.

Names of kernel objects derive from `name` (default "lab"): network namespaces `lab-node1`..,
the bridge `labbr0`, the bridge ports `vlab1`..; two labs with different names, subnets and
state dirs can run side by side.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cau.errors import CauError

DEFAULT_STATE_DIR = Path("/var/lib/cau-lab")
DEFAULT_CACHE_DIR = Path("/var/cache/cau-lab")
DEFAULT_SUBNET = "10.77.0.0/24"
HOST_OFFSET = 10  # node i gets the subnet's address .10+i (10.77.0.11 for node1)
# a VM-host lab's guest i gets .110+i (after the hosts and the floating addresses .100, .101)
GUEST_OFFSET = 110
# the floating addresses of a Pacemaker lab's workloads: web's .100, vm1's .101 (in a
# `--pacemaker --vm-hosts` lab vm1 is a real guest, and .101 its own address)
WEB_OFFSET = 100
VM_OFFSET = 101
PCMK_VM = "vm1"  # the guest of a `--pacemaker --vm-hosts` lab (a VirtualDomain resource)
VM_BRIDGE = "vmbr0"  # in each VM host's network namespace: its address, its uplink, the taps
_IFNAMSIZ = 15  # longest network interface name the kernel takes


class LabError(CauError):
    """The lab could not be built, started, stopped or reached."""


def state_dir_default() -> Path:
    env = os.environ.get("CAU_LAB_STATE_DIR")
    return Path(env) if env else DEFAULT_STATE_DIR


@dataclass(frozen=True)
class LabConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    nodes: int = 4
    name: str = "lab"  # prefix of the kernel objects (netns, bridge, veth)
    cluster: str = "lab"  # the cluster's name in clusters.toml
    subnet: str = DEFAULT_SUBNET
    node_prefix: str = "node"
    reboot_delay: float = 1.0  # seconds between a host's reboot(2) and its next boot
    min_online: int | None = None  # written to clusters.toml; default: half the nodes
    cache_dir: Path = DEFAULT_CACHE_DIR
    suite: str = "bookworm"
    mirror: str | None = None  # Debian mirror for the image build; default: the machine's
    packages: tuple[str, ...] = field(default=())  # extra packages for the golden image
    pacemaker: bool = False  # a Corosync/Pacemaker cluster of all the hosts, with workloads
    # self-updating mode's environment: etcd on every host, this machine's cau installed on
    # every host with /etc/cau/cau.toml (the etcd store, the cluster); needs pacemaker
    self_updating: bool = False
    # every host a libvirt/QEMU hypervisor running `guests` tiny virtual machines (see vmhosts.py);
    # with pacemaker: the hypervisors of one guest, vm1, a VirtualDomain resource (guests unused)
    vm_hosts: bool = False
    guests: int = 2

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]*", self.name):
            raise LabError(
                f"lab name '{self.name}': use lower-case letters and digits, starting with a letter"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.cluster):
            raise LabError(f"cluster name '{self.cluster}': use letters, digits, '-' and '_'")
        if not re.fullmatch(r"[a-z][a-z0-9-]*", self.node_prefix):
            raise LabError(f"node prefix '{self.node_prefix}': use lower-case letters, digits and '-'")
        if self.nodes < 1:
            raise LabError("a lab needs at least one node")
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as exc:
            raise LabError(f"subnet '{self.subnet}': {exc}") from exc
        if net.num_addresses < HOST_OFFSET + self.nodes + 2:
            raise LabError(f"subnet {net} is too small for {self.nodes} nodes")
        longest = max(len(self.bridge), len(self.veth(self.nodes)))
        if longest > _IFNAMSIZ:
            raise LabError(f"lab name '{self.name}' is too long for interface names (max {_IFNAMSIZ})")
        if self.reboot_delay < 0:
            raise LabError("the reboot delay cannot be negative")
        if self.self_updating and not self.pacemaker:
            raise LabError(
                "a self-updating lab is a Pacemaker cluster: self_updating needs pacemaker",
                hint="`cau lab up --pacemaker --self-updating`",
            )
        if self.vm_hosts and self.self_updating:
            raise LabError(
                "a self-updating lab has no VM hosts (yet): choose --vm-hosts or --self-updating",
                hint="`cau lab up --pacemaker --vm-hosts` (vm1 a real VM) or "
                "`cau lab up --pacemaker --self-updating`",
            )
        if self.vm_hosts and not self.pacemaker:
            if self.guests < 1:
                raise LabError("a VM-host lab needs at least one guest")
            if net.num_addresses < GUEST_OFFSET + self.guests + 2:
                raise LabError(f"subnet {net} is too small for {self.guests} guests (.{GUEST_OFFSET + 1}..)")

    # --- names and addresses -------------------------------------------------------------------

    @property
    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet)

    @property
    def node_names(self) -> list[str]:
        return [f"{self.node_prefix}{i}" for i in range(1, self.nodes + 1)]

    def index(self, node: str) -> int:
        try:
            return self.node_names.index(node) + 1
        except ValueError:
            raise LabError(f"unknown node '{node}'; this lab has {', '.join(self.node_names)}") from None

    def address(self, node: str) -> str:
        return str(self.network.network_address + HOST_OFFSET + self.index(node))

    @property
    def addresses(self) -> dict[str, str]:
        return {node: self.address(node) for node in self.node_names}

    @property
    def gateway(self) -> str:
        """The bridge's address: the root namespace (cau, the tests) reaches the hosts from it."""
        return str(self.network.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"{self.name}br0"

    def netns(self, node: str) -> str:
        return f"{self.name}-{node}"

    def veth(self, index: int) -> str:
        return f"v{self.name}{index}"

    @property
    def pacemaker_vms(self) -> bool:
        """A `--pacemaker --vm-hosts` lab: vm1 is a real guest, a VirtualDomain resource."""
        return self.pacemaker and self.vm_hosts

    @property
    def guest_names(self) -> list[str]:
        """The guests of a VM-host lab: guest1..guestN; with pacemaker, vm1 only."""
        if self.pacemaker_vms:
            return [PCMK_VM]
        return [f"guest{i}" for i in range(1, self.guests + 1)] if self.vm_hosts else []

    def guest_address(self, guest: str) -> str:
        """guest i: the subnet's address .110+i (10.77.0.111 for guest1); a Pacemaker lab's vm1:
        .101, the address its workload always had."""
        if guest not in self.guest_names:
            raise LabError(f"unknown guest '{guest}'; this lab has {', '.join(self.guest_names) or 'none'}")
        if self.pacemaker_vms:
            return str(self.network.network_address + VM_OFFSET)
        return str(self.network.network_address + GUEST_OFFSET + self.guest_names.index(guest) + 1)

    @property
    def guest_addresses(self) -> dict[str, str]:
        return {g: self.guest_address(g) for g in self.guest_names}

    def guest_home(self, guest: str) -> str:
        """The host a guest is defined and started on by `up` (round robin: guest1 on node1...)."""
        self.guest_address(guest)
        return self.node_names[self.guest_names.index(guest) % self.nodes]

    def guest_mac(self, guest: str) -> str:
        """A fixed MAC (QEMU's 52:54:00 prefix and the guest's address): unique per lab subnet."""
        octets = ipaddress.IPv4Address(self.guest_address(guest)).packed[1:]
        return "52:54:00:" + ":".join(f"{b:02x}" for b in octets)

    def bridge_mac(self, node: str) -> str:
        """The pinned MAC of a VM host's bridge: locally administered, from the host's address."""
        octets = ipaddress.IPv4Address(self.address(node)).packed
        return "02:4c:" + ":".join(f"{b:02x}" for b in octets)

    @property
    def vms_dir(self) -> Path:
        """The VM hosts' shared storage (guest kernel, initramfs), /var/lib/cau-vms on every host."""
        return self.state_dir / "vms"

    @property
    def effective_min_online(self) -> int:
        return self.min_online if self.min_online is not None else max(1, self.nodes // 2)

    # --- files ---------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def hosts_dir(self) -> Path:
        return self.state_dir / "hosts"

    def host_dir(self, node: str) -> Path:
        self.index(node)
        return self.hosts_dir / node

    @property
    def layer_dir(self) -> Path:
        """The lab's own thin image layer (init, shims, keys, /etc/hosts) over the golden image."""
        return self.state_dir / "layer"

    @property
    def repo_dir(self) -> Path:
        return self.state_dir / "repo"

    @property
    def bin_dir(self) -> Path:
        return self.state_dir / "bin"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"

    @property
    def identity(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def clusters_toml(self) -> Path:
        return self.state_dir / "clusters.toml"

    @property
    def etcd_endpoints(self) -> list[str]:
        """The client URLs of the etcd members of a self-updating lab (one per host)."""
        return [f"http://{addr}:2379" for addr in self.addresses.values()]

    # --- persistence ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["cache_dir"] = str(self.cache_dir)
        data["packages"] = list(self.packages)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabConfig:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["state_dir"] = Path(values.get("state_dir", DEFAULT_STATE_DIR))
        values["cache_dir"] = Path(values.get("cache_dir", DEFAULT_CACHE_DIR))
        values["packages"] = tuple(values.get("packages", ()))
        return cls(**values)

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.config_file)

    @classmethod
    def load(cls, state_dir: Path) -> LabConfig:
        path = state_dir / "lab.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabError(
                f"no lab in {state_dir} (no lab.json)", hint="start one with `cau lab up`"
            ) from None
        except (OSError, ValueError) as exc:
            raise LabError(f"{path}: cannot read: {exc}") from exc
        return replace(cls.from_json(data), state_dir=state_dir)
