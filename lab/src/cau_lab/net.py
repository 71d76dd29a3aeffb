"""The lab's private L2 network: one bridge in the root namespace, one network namespace per
host joined to it by a veth pair.

The bridge holds the subnet's first address, so the root namespace (cau, the tests) reaches
every host. No host gets a default route and ip_forward is left as it is, so nothing a host
sends can leave the subnet.
"""

from __future__ import annotations

from pathlib import Path

from cau_lab.config import VM_BRIDGE, LabConfig, LabError
from cau_lab.proc import run, wait_until


def _netns_list() -> set[str]:
    out = run(["ip", "-o", "netns", "list"], check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _link_exists(name: str) -> bool:
    return run(["ip", "link", "show", "dev", name], check=False).returncode == 0


def netns_exists(cfg: LabConfig, node: str) -> bool:
    return cfg.netns(node) in _netns_list()


def leftovers(cfg: LabConfig) -> list[str]:
    """Network objects of this lab's names that exist now."""
    names = _netns_list()
    found = [cfg.netns(n) for n in cfg.node_names if cfg.netns(n) in names]
    if _link_exists(cfg.bridge):
        found.append(cfg.bridge)
    return found


def up(cfg: LabConfig) -> None:
    prefix = cfg.network.prefixlen
    if _link_exists(cfg.bridge):
        raise LabError(f"bridge {cfg.bridge} exists already", hint="run `cau lab down` first")
    run(["ip", "link", "add", cfg.bridge, "type", "bridge"])
    run(["ip", "addr", "add", f"{cfg.gateway}/{prefix}", "dev", cfg.bridge])
    run(["ip", "link", "set", cfg.bridge, "up"])
    for node in cfg.node_names:
        ns, veth = cfg.netns(node), cfg.veth(cfg.index(node))
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "master", cfg.bridge, "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        if cfg.vm_hosts:
            _vm_bridge(cfg, node)
        else:
            run(["ip", "-n", ns, "addr", "add", f"{cfg.address(node)}/{prefix}", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        # ARP requests from a host name its own address, never a floating one it serves (as
        # on real HA nodes): else a node that is handing an address over would point the
        # neighbours back at itself (the hosts cannot set this: their /proc/sys is read-only)
        run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv4.conf.all.arp_announce=2"])
        # deliberately no default route: the subnet is all a host can reach


def _vm_bridge(cfg: LabConfig, node: str) -> None:
    """A VM host's bridge: it holds the host's address, eth0 (the uplink) and the guests' taps.

    Its MAC is pinned: a bridge without one takes the lowest MAC of its ports, so each new
    guest tap would change the host address's MAC and leave the neighbours' ARP entries stale.
    No STP and no forwarding delay: a new tap forwards at once (a live-migrated guest's first
    packets go through the destination's fresh tap). It lives in the network namespace, which
    outlives the host's reboots."""
    ns, br = cfg.netns(node), VM_BRIDGE
    run(["ip", "-n", ns, "link", "add", br, "address", cfg.bridge_mac(node), "type", "bridge",
         "stp_state", "0", "forward_delay", "0"])  # fmt: skip
    run(["ip", "-n", ns, "link", "set", "eth0", "master", br, "up"])
    run(["ip", "-n", ns, "addr", "add", f"{cfg.address(node)}/{cfg.network.prefixlen}", "dev", br])
    run(["ip", "-n", ns, "link", "set", br, "up"])


def down(cfg: LabConfig) -> None:
    """Remove this lab's namespaces and bridge (only our own names); idempotent."""
    existing = _netns_list()
    for node in cfg.node_names:
        if cfg.netns(node) in existing:
            run(["ip", "netns", "del", cfg.netns(node)], check=False)  # deletes the veth pair too
    if _link_exists(cfg.bridge):
        run(["ip", "link", "del", cfg.bridge], check=False)
    # The kernel frees a netns (and its veth ends) asynchronously after its last process.
    veths = [cfg.veth(i) for i in range(1, cfg.nodes + 1)]
    if not wait_until(lambda: not any(_link_exists(v) for v in veths), timeout=10, interval=0.1):
        # seen after a Pacemaker lab on a busy machine: the kernel was still tearing a netns
        # down after 10 s; deleting our end of the pair removes both ends now
        for veth in veths:
            if _link_exists(veth):
                run(["ip", "link", "del", veth], check=False)
        wait_until(lambda: not any(_link_exists(v) for v in veths), timeout=10, interval=0.1)
    # `ip netns add` bind-mounts /run/netns onto itself; drop that once no netns is left.
    run_netns = Path("/run/netns")
    if run_netns.is_dir() and not any(run_netns.iterdir()):
        with open("/proc/self/mountinfo") as f:
            mounted = any(line.split()[4] == "/run/netns" for line in f)
        if mounted:
            run(["umount", "/run/netns"], check=False)
