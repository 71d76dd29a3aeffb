"""A Corosync 3 / Pacemaker 2.1 cluster on the lab hosts, with real workloads (`cau lab up
--pacemaker`).

Every host of the lab is a member. The CIB is pre-seeded before the first start (no STONITH:
there is no fencing device; dc-deadtime 2 s instead of 20 s; no-quorum-policy=stop; resource
stickiness 100, so nothing fails back on its own) and already holds the workloads:

    vm1        ocf:cau:labvm, allow-migrate=true: HTTP on its own address (.101:80), live-migrated
               (with --vm-hosts: ocf:heartbeat:VirtualDomain, a real guest on .101; see
               virtual_domain)
    web        group of web-ip (ocf:heartbeat:IPaddr2, .100) + web-server (ocf:cau:labvm on .100:80)
    web-clone  clone of web-local (ocf:cau:labvm on every node's own address, port 8080)

Start locations are temporary constraints (`start-*`), removed once everything runs: the
starting CIB has no location constraint, stickiness keeps the resources where they started.
`restore` brings a used cluster back to exactly that (configuration replaced, failures
cleaned, resources moved back).

Every cluster command runs inside a host (libqb IPC is per network namespace and /dev/shm).
"""

from __future__ import annotations

import ipaddress
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cau.errors import CauError
from cau_lab import hosts, vmhosts
from cau_lab.cluster_state import ClusterState, cluster_state
from cau_lab.config import VM_OFFSET, WEB_OFFSET, LabConfig, LabError
from cau_lab.proc import Log, quiet

CLONE_PORT = 8080
VM_CONTROL_PORT = 8101  # vm1's live migration handover, on each node's own address
MONITOR_INTERVAL = "5s"


@dataclass(frozen=True)
class Workload:
    """One role cau sees: a Pacemaker resource id (primitive, group or clone)."""

    id: str
    kind: str  # primitive | group | clone
    start_nodes: tuple[str, ...]  # where `up` (and `restore`) puts it
    urls: tuple[str, ...]  # any of them answering = up


def vm_address(cfg: LabConfig) -> str:
    return str(cfg.network.network_address + VM_OFFSET)


def web_address(cfg: LabConfig) -> str:
    return str(cfg.network.network_address + WEB_OFFSET)


def workloads(cfg: LabConfig) -> list[Workload]:
    nodes = cfg.node_names
    second = nodes[1] if len(nodes) > 1 else nodes[0]
    return [
        Workload("vm1", "primitive", (nodes[0],), (f"http://{vm_address(cfg)}/",)),
        Workload("web", "group", (second,), (f"http://{web_address(cfg)}/",)),
        Workload(
            "web-clone",
            "clone",
            tuple(nodes),
            tuple(f"http://{cfg.address(n)}:{CLONE_PORT}/" for n in nodes),
        ),
    ]


def check_addresses(cfg: LabConfig) -> None:
    net = cfg.network
    if net.num_addresses <= VM_OFFSET + 1:
        raise LabError(f"subnet {net} is too small for the pacemaker workloads (.{VM_OFFSET} needed)")
    hosts_end = ipaddress.IPv4Address(cfg.address(cfg.node_names[-1]))
    if hosts_end >= net.network_address + WEB_OFFSET:
        raise LabError("too many nodes: host addresses would reach the workloads' .100")


# --- configuration files ----------------------------------------------------------------------


def corosync_conf(cfg: LabConfig) -> str:
    nodelist = "".join(
        f"    node {{\n        name: {n}\n        nodeid: {i}\n        ring0_addr: {cfg.address(n)}\n    }}\n"
        for i, n in enumerate(cfg.node_names, start=1)
    )
    # Two nodes: Corosync's two_node (quorate on one vote; wait_for_all comes with it), the
    # usual way to run a 2-node cluster.
    two_node = "\n    two_node: 1" if len(cfg.node_names) == 2 else ""
    return f"""# written by `cau lab up --pacemaker`
totem {{
    version: 2
    cluster_name: {cfg.cluster}
    transport: knet
    crypto_cipher: none
    crypto_hash: none
}}
nodelist {{
{nodelist}}}
quorum {{
    provider: corosync_votequorum{two_node}
}}
logging {{
    to_stderr: yes
    to_logfile: yes
    logfile: /var/log/corosync/corosync.log
    to_syslog: no
    timestamp: on
}}
system {{
    # never try to move corosync into the root cpu cgroup of the real machine
    move_to_root_cgroup: no
}}
"""


def _op(rid: str, name: str, interval: str, timeout: str) -> str:
    return f'<op id="{rid}-{name}-{interval}" name="{name}" interval="{interval}" timeout="{timeout}"/>'


def _nvpairs(kind: str, rid: str, values: dict[str, str]) -> str:
    pairs = "".join(f'<nvpair id="{rid}-{kind}-{k}" name="{k}" value="{v}"/>' for k, v in values.items())
    tag = "instance_attributes" if kind == "params" else "meta_attributes"
    return f'<{tag} id="{rid}-{kind}">{pairs}</{tag}>'


def _labvm(rid: str, params: dict[str, str], meta: dict[str, str] | None = None) -> str:
    ops = (
        _op(rid, "monitor", MONITOR_INTERVAL, "10s")
        + _op(rid, "start", "0s", "20s")
        + _op(rid, "stop", "0s", "20s")
    )
    if meta and meta.get("allow-migrate") == "true":
        ops += _op(rid, "migrate_to", "0s", "20s") + _op(rid, "migrate_from", "0s", "20s")
    return (
        f'<primitive id="{rid}" class="ocf" provider="cau" type="labvm">'
        + _nvpairs("params", rid, params)
        + (_nvpairs("meta", rid, meta) if meta else "")
        + f"<operations>{ops}</operations></primitive>"
    )


def virtual_domain(cfg: LabConfig) -> str:
    """vm1 of a `--pacemaker --vm-hosts` lab: ocf:heartbeat:VirtualDomain managing the real guest
    vm1 (vmhosts.domain_xml: TCG, 128 MiB, its address .101) from the shared storage.

    The agent runs `virsh migrate --live [migrate_options] vm1 qemu+tcp://<target>/system
    <migrateuri>` on the source, <target> being the Pacemaker node name: the hosts' /etc/hosts
    gives each name its lab address (on vmbr0), for libvirtd's connection and for QEMU's
    migration stream (migrateuri tcp://%n) alike. The domain is transient (`virsh create`):
    nothing is left defined on a host it left.

    Tuned as the libvirt provider in the VM-host lab: auto-converge and a 50 ms downtime limit.
    The agent's own migration_downtime (resource-agents 4.12) is set 2 s into a migration, and
    vm1's take 0.3-0.6 s: it came too late every time (and made each migrate_to 2 s longer).
    Instead a monitor script (vmhosts.SET_DOWNTIME_SCRIPT) sets the limit on the QEMU running
    vm1 after each start and arrival: measured 14-38 ms of downtime (QEMU's default limit:
    23-145 ms). The guest has no ACPI handling, so a graceful shutdown would wait out the stop
    timeout: force_stop (it is diskless). No utilization attributes: the agent would write
    them into the CIB on its monitors."""
    rid = "vm1"
    params = {
        "config": vmhosts.domain_file(cfg, rid),
        "hypervisor": "qemu:///system",
        "migration_transport": "tcp",
        "migrateuri": "tcp://%n",
        "migrate_options": " ".join(vmhosts.MIGRATE_OPTIONS),
        "monitor_scripts": vmhosts.set_downtime_file(),
        "force_stop": "true",
        "autoset_utilization_cpu": "false",
        "autoset_utilization_hv_memory": "false",
        "autoset_utilization_host_memory": "false",
    }
    ops = (
        _op(rid, "monitor", MONITOR_INTERVAL, "30s")
        + _op(rid, "start", "0s", "60s")
        + _op(rid, "stop", "0s", "60s")
        + _op(rid, "migrate_to", "0s", "120s")
        + _op(rid, "migrate_from", "0s", "60s")
    )
    return (
        f'<primitive id="{rid}" class="ocf" provider="heartbeat" type="VirtualDomain">'
        + _nvpairs("params", rid, params)
        + _nvpairs("meta", rid, {"allow-migrate": "true"})
        + f"<operations>{ops}</operations></primitive>"
    )


def resources_xml(cfg: LabConfig) -> str:
    """The <resources> section: vm1 (an imitation, or with --vm-hosts a real VM), the web group,
    the web-clone clone."""
    vm1 = (
        virtual_domain(cfg)
        if cfg.vm_hosts
        else _labvm(
            "vm1",
            {"ip": vm_address(cfg), "add_ip": "true", "port": "80", "control_port": str(VM_CONTROL_PORT)},
            {"allow-migrate": "true"},
        )
    )
    web_ip = (
        '<primitive id="web-ip" class="ocf" provider="heartbeat" type="IPaddr2">'
        + _nvpairs("params", "web-ip", {"ip": web_address(cfg), "cidr_netmask": "24"})
        + f"<operations>{_op('web-ip', 'monitor', MONITOR_INTERVAL, '20s')}</operations></primitive>"
    )
    web_server = _labvm("web-server", {"ip": web_address(cfg), "port": "80"})
    local = _labvm("web-local", {"port": str(CLONE_PORT)})
    return (
        "<resources>"
        + vm1
        + f'<group id="web">{web_ip}{web_server}</group>'
        + f'<clone id="web-clone">{_nvpairs("meta", "web-clone", {"interleave": "true"})}{local}</clone>'
        + "</resources>"
    )


def start_constraints_xml(cfg: LabConfig) -> list[str]:
    """Where each single-instance workload starts (temporary: removed once it runs there)."""
    return [
        f'<rsc_location id="start-{w.id}" rsc="{w.id}" node="{w.start_nodes[0]}" score="INFINITY"/>'
        for w in workloads(cfg)
        if w.kind != "clone"
    ]


def seed_script(cfg: LabConfig) -> str:
    """Shell run on each host before the first start: config files and the pre-seeded CIB."""
    constraints = "<constraints>" + "".join(start_constraints_xml(cfg)) + "</constraints>"
    rsc_defaults = (
        '<rsc_defaults><meta_attributes id="rsc-options">'
        '<nvpair id="rsc-options-resource-stickiness" name="resource-stickiness" value="100"/>'
        "</meta_attributes></rsc_defaults>"
    )
    return f"""set -e
cat > /etc/corosync/corosync.conf <<'EOF'
{corosync_conf(cfg)}EOF
printf 'PCMK_logfile=/var/log/pacemaker/pacemaker.log\\nPCMK_logfacility=none\\n' > /etc/default/pacemaker
cib=$(mktemp)
cibadmin --empty > "$cib"
export CIB_file="$cib"
crm_attribute --type crm_config --name stonith-enabled --update false
crm_attribute --type crm_config --name dc-deadtime --update 2s
crm_attribute --type crm_config --name no-quorum-policy --update stop
# (crm_attribute --type rsc_defaults fails on a CIB_file: "Could not map name=... to a UUID")
cibadmin --create -o configuration -X '{rsc_defaults}'
cibadmin --replace -o resources -X '{resources_xml(cfg)}'
cibadmin --replace -o constraints -X '{constraints}'
unset CIB_file
rm -f /var/lib/pacemaker/cib/cib.xml* /var/lib/pacemaker/cib/cib-*
install -o hacluster -g haclient -m 600 "$cib" /var/lib/pacemaker/cib/cib.xml
rm -f "$cib"
systemctl enable corosync
systemctl enable pacemaker
"""


# --- driving the cluster ------------------------------------------------------------------------


class Pacemaker:
    """The lab's Pacemaker cluster, driven from inside its hosts."""

    def __init__(self, cfg: LabConfig, log: Log = quiet) -> None:
        self.cfg = cfg
        self.log = log

    @property
    def baseline(self) -> Path:
        """The starting configuration section of the CIB, saved by `up` for `restore`."""
        return self.cfg.state_dir / "pacemaker" / "cib-configuration.xml"

    def exec(self, node: str, cmd: str, *, check: bool = True, timeout: float = 60) -> str:
        return hosts.exec_in(self.cfg, node, cmd, check=check, timeout=timeout).stdout

    def any_node(self) -> str:
        """A host that is up and runs pacemaker (cluster commands need one)."""
        for node in self.cfg.node_names:
            if hosts.booted(self.cfg, node):
                out = hosts.exec_in(self.cfg, node, "systemctl is-active pacemaker", check=False)
                if out.returncode == 0:
                    return node
        raise LabError("no lab host runs pacemaker")

    # --- reading ---------------------------------------------------------------------------------

    def crm_mon_xml(self, node: str | None = None) -> str:
        return self.exec(node or self.any_node(), "crm_mon --output-as=xml", timeout=30)

    def state(self, node: str | None = None) -> ClusterState:
        return cluster_state(self.crm_mon_xml(node))

    def cib(self, node: str | None = None, scope: str | None = None) -> str:
        opt = f" --scope {scope}" if scope else ""
        return self.exec(node or self.any_node(), f"cibadmin --query{opt}", timeout=30)

    def location_constraints(self, node: str | None = None) -> list[str]:
        """Ids of the location constraints (a `crm_resource --move` adds `cli-prefer-<rsc>`)."""
        root = ET.fromstring(self.cib(node, "constraints"))
        return sorted(el.get("id", "") for el in root.iter("rsc_location"))

    @property
    def workloads(self) -> list[Workload]:
        return workloads(self.cfg)

    def wait(
        self, until: Callable[[ClusterState], bool], *, timeout: float = 60, node: str | None = None
    ) -> ClusterState:
        """Poll crm_mon (every 0.1 s) until `until(state)`; the state that satisfied it."""
        deadline = time.monotonic() + timeout
        last: ClusterState | str = "no answer"
        while True:
            try:
                state = self.state(node)
                # A member whose Pacemaker is (re)starting answers with no nodes at all: no
                # answer yet, not a cluster without node2 (a condition would fail on it).
                if not state.nodes:
                    raise LabError("crm_mon listed no nodes (its node not a member yet)")
                if until(state):
                    return state
                last = state
            except CauError as exc:  # LabError, or crm_mon output cau cannot read: ask again
                last = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"pacemaker: condition not met after {timeout:g} s; last: {last}")
            time.sleep(0.1)

    def locations(self, node: str | None = None) -> dict[str, list[str]]:
        state = self.state(node)
        return {w.id: state.locations(w.id) for w in workloads(self.cfg)}

    # --- set-up ----------------------------------------------------------------------------------

    def setup(self, timeout: float = 120) -> None:
        """Configure and start the cluster on every host; wait until everything runs where it
        should; drop the start constraints; save the starting configuration."""
        check_addresses(self.cfg)
        nodes = self.cfg.node_names
        script = seed_script(self.cfg)
        _parallel(lambda n: self.exec(n, script), nodes)
        _parallel(lambda n: self.exec(n, "systemctl start corosync && systemctl start pacemaker"), nodes)
        self.wait_placed(timeout=timeout)
        first = nodes[0]
        for c in start_constraints_xml(self.cfg):
            cid = ET.fromstring(c).get("id")
            self.exec(first, f"cibadmin --delete -o constraints -X '<rsc_location id=\"{cid}\"/>'")
        self.wait_placed(timeout=timeout)
        self.baseline.parent.mkdir(parents=True, exist_ok=True)
        self.baseline.write_text(self.cib(first, "configuration"))

    def wait_placed(self, timeout: float = 120, node: str | None = None, clean: bool = False) -> ClusterState:
        """Until every node is online (none in standby), there is a DC with quorum, and every
        workload runs, started, on its start nodes. With `clean`, failures seen on the way are
        cleaned up (every few seconds), since a failed start keeps a resource off its node."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        expected = {w.id: sorted(w.start_nodes) for w in workloads(self.cfg)}
        next_clean = time.monotonic()
        while True:
            try:
                state = self.state(node)
                problems = self._problems(state, expected)
                if not problems:
                    return state
                if state.failures:
                    problems.append(
                        "failures: " + ", ".join(f"{f.resource} {f.task} on {f.node}" for f in state.failures)
                    )
                    if clean and time.monotonic() >= next_clean:
                        self.exec(node or self.any_node(), "crm_resource --cleanup >/dev/null", check=False)
                        next_clean = time.monotonic() + 5
                last = "; ".join(problems)
            except CauError as exc:  # LabError, or crm_mon output cau cannot read: ask again
                last = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"the pacemaker cluster is not ready after {timeout:g} s: {last}")
            time.sleep(0.2)

    def _problems(self, state: ClusterState, expected: dict[str, list[str]]) -> list[str]:
        problems = []
        want = self.cfg.node_names
        if state.online != sorted(want):
            problems.append(f"online: {', '.join(state.online) or 'none'}")
        if any(s.standby or s.maintenance for s in state.nodes.values()):
            problems.append("a node is in standby or maintenance")
        if state.dc is None or not state.quorum:
            problems.append("no DC with quorum")
        for rid, nodes in expected.items():
            where = state.locations(rid)
            if where != nodes:
                problems.append(f"{rid} on {', '.join(where) or 'no node'} (want {', '.join(nodes)})")
        if not state.all_started():
            problems.append("not all resources started")
        return problems

    # --- back to the start -----------------------------------------------------------------------

    def restore(self, timeout: float = 120) -> None:
        """Back to the starting state: all nodes online (no standby, no maintenance), the
        starting configuration (no cli-prefer/cli-ban constraints, no target-role, the same
        properties), failures cleaned, every workload on its start nodes. The hosts must be up."""
        if not self.baseline.exists():
            raise LabError(
                f"no starting CIB saved ({self.baseline})", hint="bring the lab up with --pacemaker"
            )
        nodes = self.cfg.node_names
        # the labvm agent's test knobs (slow stops, failing starts) go first
        _parallel(
            lambda n: self.exec(
                n, "rm -rf /etc/labvm && systemctl start corosync && systemctl start pacemaker"
            ),
            nodes,
        )
        node = self._wait_members(timeout)
        # the starting configuration plus the start constraints (resources move back, vm1 live)
        root = ET.fromstring(self.baseline.read_text())
        cons = root.find("constraints")
        if cons is None:
            cons = ET.SubElement(root, "constraints")
        for c in start_constraints_xml(self.cfg):
            cons.append(ET.fromstring(c))
        tmp = "/run/lab/cib-restore.xml"
        hosts.exec_in(self.cfg, node, f"cat > {tmp}", input=ET.tostring(root, encoding="unicode"), check=True)
        self.exec(node, f"cibadmin --replace --scope configuration --xml-file {tmp} && rm -f {tmp}")
        # standby/maintenance set for this boot only live in the status section, not replaced
        transient = " ; ".join(
            f"crm_attribute --node {n} --name {a} --lifetime reboot --delete >/dev/null 2>&1"
            for n in nodes
            for a in ("standby", "maintenance")
        )
        self.exec(node, transient, check=False)
        self.exec(node, "crm_resource --cleanup >/dev/null")
        # a probe of a node that just rejoined may fail once more, and a failed start keeps its
        # resource off that node until cleaned: clean while waiting, not only before
        self.wait_placed(timeout=timeout, node=node, clean=True)
        for c in start_constraints_xml(self.cfg):
            cid = ET.fromstring(c).get("id")
            self.exec(node, f"cibadmin --delete -o constraints -X '<rsc_location id=\"{cid}\"/>'")
        state = self.wait_placed(timeout=timeout, node=node, clean=True)
        if state.failures:  # placed, but a failure left over from the way there
            self.exec(node, "crm_resource --cleanup >/dev/null")
            self.wait_placed(timeout=timeout, node=node, clean=True)

    def _wait_members(self, timeout: float) -> str:
        """Until every node is an online member (whatever its attributes); a node to talk to."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                node = self.any_node()
                state = self.state(node)
                if state.online == sorted(self.cfg.node_names) and state.dc is not None:
                    return node
                last = f"online: {', '.join(state.online) or 'none'}"
            except CauError as exc:  # LabError, or crm_mon output cau cannot read: ask again
                last = str(exc)
            if time.monotonic() > deadline:
                raise LabError(f"pacemaker nodes not all online after {timeout:g} s: {last}")
            time.sleep(0.2)


def _parallel(fn: Callable[[str], object], nodes: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(fn, nodes))
