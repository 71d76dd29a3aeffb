"""The lab's VM hosts (`cau lab up --vm-hosts`) without a lab: the address plan, the guests'
domain XML, the clusters.toml for the libvirt provider, the guest's answer and kernel."""

from __future__ import annotations

import lzma
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cau.errors import CauError
from cau_lab.accel import accelerator, hardware_virtualization
from cau_lab.access import clusters_toml_text
from cau_lab.config import LabConfig
from cau_lab.guest import parse_answer, vmlinux_of
from cau_lab.image import cache_key
from cau_lab.pacemaker import resources_xml
from cau_lab.vmhosts import SET_DOWNTIME_SCRIPT, CompletedJob, domain_xml, parse_job_events, trouble_lines

CFG = LabConfig(name="vmx", subnet="10.77.206.0/24", nodes=3, vm_hosts=True, guests=4, cluster="vmx")
CAU = "{urn:cau:libvirt:1}"


def test_guests_get_addresses_after_the_hosts_and_floating_ones_and_start_round_robin() -> None:
    assert CFG.guest_names == ["guest1", "guest2", "guest3", "guest4"]
    assert CFG.guest_addresses == {
        "guest1": "10.77.206.111",
        "guest2": "10.77.206.112",
        "guest3": "10.77.206.113",
        "guest4": "10.77.206.114",
    }
    assert [CFG.guest_home(g) for g in CFG.guest_names] == ["node1", "node2", "node3", "node1"]
    assert CFG.guest_mac("guest1") == "52:54:00:4d:ce:6f"
    assert CFG.bridge_mac("node2") == "02:4c:0a:4d:ce:0c"
    assert LabConfig().guest_names == []  # not a VM-host lab: no guests


def test_vm_hosts_conflict_with_self_updating_and_saved_config_round_trips(tmp_path: Path) -> None:
    with pytest.raises(CauError, match="--vm-hosts or --self-updating"):
        LabConfig(vm_hosts=True, pacemaker=True, self_updating=True)
    with pytest.raises(CauError, match="too small"):
        LabConfig(vm_hosts=True, subnet="10.77.206.0/25", guests=20)
    cfg = LabConfig(state_dir=tmp_path, vm_hosts=True, guests=3)
    cfg.save()
    assert LabConfig.load(tmp_path) == cfg


def test_domain_xml_is_a_persistent_tcg_guest_on_the_bridge_with_caus_placement() -> None:
    root = ET.fromstring(domain_xml(CFG, "guest2"))
    assert root.get("type") == "qemu"  # TCG: this machine's KVM hangs guests
    assert root.findtext("name") == "guest2"
    placement = root.find(f"metadata/{CAU}placement")
    assert placement is not None and placement.get("preferred") == "node2"
    assert (root.findtext("memory"), root.find("memory").get("unit")) == ("128", "MiB")  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "1"
    assert root.findtext("os/kernel") == "/var/lib/cau-vms/vmlinux"
    assert "cau.ip=10.77.206.112/24" in (root.findtext("os/cmdline") or "")
    iface = root.find("devices/interface")
    assert iface is not None and iface.get("type") == "bridge"
    assert iface.find("source").get("bridge") == "vmbr0"  # type: ignore[union-attr]
    assert iface.find("mac").get("address") == CFG.guest_mac("guest2")  # type: ignore[union-attr]
    assert iface.find("model").get("type") == "virtio"  # type: ignore[union-attr]
    assert root.find("devices/disk") is None  # diskless: a migration copies no storage
    # its console logged on its host, where the lab tests look for a broken guest kernel
    log = root.find("devices/serial/log")
    assert log is not None and log.get("file") == "/var/log/libvirt/qemu/guest2-console.log"


def test_clusters_toml_names_the_libvirt_provider_and_probes_every_guest() -> None:
    data = tomllib.loads(clusters_toml_text(CFG))
    cluster = data["clusters"]["vmx"]
    assert cluster["provider"] == "libvirt" and cluster["plugins"] == ["apt"]
    opts = cluster["options"]
    assert opts["guest_memory_mib"] == 320
    assert opts["migrate_uri"] == "qemu+tcp://{address}/system"
    assert opts["migrate_data_uri"] == "tcp://{address}"
    assert [n["host"] for n in opts["nodes"]] == ["10.77.206.11", "10.77.206.12", "10.77.206.13"]
    assert {"user", "identity", "known_hosts", "boot_id_command", "reboot_command", "min_online"} <= set(opts)
    assert cluster["probes"][0] == {
        "role": "guest1",
        "targets": ["http://10.77.206.111/"],
        "interval": "50ms",
    }
    assert len(cluster["probes"]) == 4


def test_guest_answer_and_kernel_extraction() -> None:
    a = parse_answer("boot=5c885aca-1 count=7 uptime=58.39\n")
    assert (a.boot, a.count, a.uptime) == ("5c885aca-1", 7, 58.39)
    with pytest.raises(CauError):
        parse_answer("<html>")
    elf = b"\x7fELF" + b"\0" * 64
    bzimage = b"MZ setup code" + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert vmlinux_of(bzimage) == elf


def test_kvm_only_with_hardware_virtualization_and_dev_kvm(tmp_path: Path) -> None:
    intel = "processor\t: 0\nflags\t\t: fpu vme de pse vmx ept\n"
    pvm = "processor\t: 0\nflags\t\t: fpu vme de pse hypervisor\n"  # kvm_pvm's machine: no vmx/svm
    assert hardware_virtualization(intel) and hardware_virtualization(intel.replace("vmx", "svm"))
    assert not hardware_virtualization(pvm)
    (cpuinfo := tmp_path / "cpuinfo").write_text(intel)
    (kvm := tmp_path / "kvm").touch()
    assert accelerator(cpuinfo, kvm) == "kvm"
    assert accelerator(cpuinfo, tmp_path / "no-kvm") == "qemu"
    cpuinfo.write_text(pvm)
    assert accelerator(cpuinfo, kvm) == "qemu"
    assert "type='kvm'" in domain_xml(CFG, "guest1", accel="kvm")


PCVM = LabConfig(name="pcx", subnet="10.77.207.0/24", nodes=3, pacemaker=True, vm_hosts=True)


def test_a_pacemaker_lab_on_vm_hosts_has_one_guest_vm1_on_vm1s_address() -> None:
    assert PCVM.pacemaker_vms and PCVM.guest_names == ["vm1"]
    assert PCVM.guest_addresses == {"vm1": "10.77.207.101"}  # the address vm1's probe uses
    assert PCVM.guest_home("vm1") == "node1"
    root = ET.fromstring(domain_xml(PCVM, "vm1"))
    assert root.get("type") == "qemu" and root.findtext("name") == "vm1"
    assert root.find("metadata") is None  # Pacemaker places it, not the libvirt provider
    assert "cau.ip=10.77.207.101/24" in (root.findtext("os/cmdline") or "")
    driver = root.find("devices/interface/driver")
    assert driver is not None and driver.get("event_idx") == "off"
    # the VM hosts' image (it has the cluster packages too), not the plain Pacemaker lab's
    assert cache_key(PCVM) == cache_key(LabConfig(vm_hosts=True))
    assert cache_key(PCVM) != cache_key(LabConfig(pacemaker=True))


def test_vm1_of_a_pacemaker_lab_on_vm_hosts_is_a_live_migratable_virtual_domain() -> None:
    root = ET.fromstring(resources_xml(PCVM))
    vm1 = root.find("primitive[@id='vm1']")
    assert vm1 is not None
    assert (vm1.get("class"), vm1.get("provider"), vm1.get("type")) == ("ocf", "heartbeat", "VirtualDomain")
    params = {nv.get("name"): nv.get("value") for nv in vm1.iterfind("instance_attributes/nvpair")}
    assert params["config"] == "/var/lib/cau-vms/vm1.xml"
    assert params["hypervisor"] == "qemu:///system" and params["migration_transport"] == "tcp"
    assert params["migrateuri"] == "tcp://%n"  # the node name: /etc/hosts gives its lab address
    assert params["migrate_options"] == "--auto-converge" and params["force_stop"] == "true"
    assert params["monitor_scripts"] == "/var/lib/cau-vms/set-max-downtime"
    assert "migrate-setmaxdowntime" in SET_DOWNTIME_SCRIPT and SET_DOWNTIME_SCRIPT.rstrip().endswith("exit 0")
    meta = {nv.get("name"): nv.get("value") for nv in vm1.iterfind("meta_attributes/nvpair")}
    assert meta == {"allow-migrate": "true"}
    ops = {op.get("name"): op.get("timeout") for op in vm1.iterfind("operations/op")}
    assert set(ops) == {"monitor", "start", "stop", "migrate_to", "migrate_from"}
    # web and web-clone as in every Pacemaker lab; the plain lab's vm1 is still the imitation
    assert root.find("group[@id='web']") is not None and root.find("clone[@id='web-clone']") is not None
    plain = ET.fromstring(resources_xml(LabConfig(pacemaker=True))).find("primitive[@id='vm1']")
    assert plain is not None and plain.get("type") == "labvm"


def test_clusters_toml_of_a_pacemaker_lab_on_vm_hosts_names_the_pacemaker_provider() -> None:
    cluster = tomllib.loads(clusters_toml_text(PCVM))["clusters"]["lab"]
    assert cluster["provider"] == "pacemaker"
    assert "guest_memory_mib" not in cluster["options"] and "migrate_uri" not in cluster["options"]
    probes = {p["role"]: p for p in cluster["probes"]}
    assert set(probes) == {"vm1", "web", "web-clone"}
    assert probes["vm1"]["targets"] == ["http://10.77.207.101/"] and probes["vm1"]["interval"] == "50ms"


def test_a_guest_console_shows_trouble_only_for_what_broke_its_kernel() -> None:
    # lines of the lab guests' consoles, as QEMU 7.2's TCG migrations with a 10 ms limit left them
    console = """\
[    0.026157] ACPI BIOS Error (bug): A valid RSDP was not found (20220331/tbxfroot-210)
cau-guest guest1 10.77.205.111/24 boot=954c9828-2430-47ad-8ebd-3342073b0f9f ready
[   15.637099] virtio_net virtio0: input.0:id 210 is not a head!
[   40.687371] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [kworker/0:2:47]
[   88.721843] Kernel panic - not syncing: Fatal exception in interrupt
"""
    assert trouble_lines(console) == [
        "[   15.637099] virtio_net virtio0: input.0:id 210 is not a head!",
        "[   40.687371] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [kworker/0:2:47]",
        "[   88.721843] Kernel panic - not syncing: Fatal exception in interrupt",
    ]
    assert trouble_lines(console.split("\n[   15")[0]) == []


def test_libvirts_job_completed_events_give_each_migrations_figures() -> None:
    # `virsh event --event job-completed --loop --timestamp` on a source host (libvirt 9.0), the
    # lab's libvirt-events service, after guest1 migrated away (abridged: fewer memory_ lines)
    log = """2026-12-04 08:34:12.753+0000: event 'job-completed' for domain 'guest1':
	operation: 5
	time_elapsed: 420
	time_elapsed_net: 419
	downtime: 129
	downtime_net: 128
	setup_time: 0
	data_total: 134610944
	data_processed: 64571175
	memory_iteration: 3
2026-12-04 08:35:40.101+0000: event 'job-completed' for domain 'vm1':
	operation: 4
	time_elapsed: 512
events received: 2
"""
    assert parse_job_events("node1", log) == [
        CompletedJob("node1", "guest1", "2026-12-04 08:34:12.753+0000", 5, 420.0, 129.0),
        CompletedJob("node1", "vm1", "2026-12-04 08:35:40.101+0000", 4, 512.0, None),
    ]
