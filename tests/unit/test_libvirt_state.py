"""The libvirt provider's parsers against outputs recorded from real libvirt 9.0 / QEMU 7.2
(tests/fixtures/libvirt, see its README.txt)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cau.errors import ProviderError
from cau.providers.libvirt_state import (
    DOMAIN_HEAD,
    SPLIT,
    StoragePool,
    StorageView,
    parse_domain_xml,
    parse_domstate,
    parse_host,
    parse_jobinfo,
    parse_nodeinfo,
    parse_paths,
    parse_storage,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_nodeinfo() -> None:
    assert parse_nodeinfo(fixture("nodeinfo.txt")) == (2, 7038792 // 1024)
    with pytest.raises(ProviderError, match="unexpected `virsh nodeinfo` output"):
        parse_nodeinfo("error: failed to connect to the hypervisor\n")


@pytest.mark.parametrize(
    ("name", "state"),
    [
        ("domstate-reason-running-migrated.txt", ("running", "migrated")),
        ("domstate-reason-running-booted-again.txt", ("running", "booted")),
        ("domstate-reason-running-restored.txt", ("running", "restored")),
        ("domstate-reason-paused.txt", ("paused", "user")),
        ("domstate-reason-saved.txt", ("shut off", "saved")),
        ("domstate-reason-shut-off-destroyed.txt", ("shut off", "destroyed")),
    ],
)
def test_domstate(name: str, state: tuple[str, str]) -> None:
    assert parse_domstate(fixture(name)) == state


def test_a_running_domains_xml() -> None:
    dom = parse_domain_xml(fixture("dumpxml-guest1-running.txt"), "running", "booted")
    assert (dom.name, dom.memory_mib, dom.vcpus, dom.preferred) == ("guest1", 128, 1, ("node1",))
    assert dom.active and not dom.pinned_by and dom.local_disks == ()


@pytest.mark.parametrize("name", ["dumpxml-guest1-shut-off.txt", "dumpxml-guest2-managed-saved.txt"])
def test_an_inactive_domains_xml(name: str) -> None:
    state, reason = parse_domstate(fixture("domstate-reason-saved.txt"))
    dom = parse_domain_xml(fixture(name), state, reason)
    assert dom.memory_mib == 128 and not dom.active


def test_local_disks_and_host_devices_keep_a_domain_from_live_migrating() -> None:
    xml = fixture("dumpxml-guest1-running.txt").replace(
        "<devices>",
        "<devices>\n<disk type='file' device='disk'><source file='/srv/shared/a.qcow2'/></disk>"
        "\n<disk type='file' device='disk'><source file='/var/lib/libvirt/images/b.qcow2'/></disk>"
        "\n<disk type='network' device='disk'><source protocol='rbd' name='pool/c'/></disk>"
        "\n<disk type='file' device='cdrom'><source file='/iso/d.iso'/></disk>"
        "\n<hostdev mode='subsystem' type='pci'/>",
        1,
    )
    dom = parse_domain_xml(xml, "running", "booted", shared_storage=("/srv/shared",))
    assert dom.local_disks == ("/var/lib/libvirt/images/b.qcow2",)
    assert dom.pinned_by == "a host device (<hostdev>)"


def test_completed_migration_job_on_the_destination() -> None:
    figures = parse_jobinfo(fixture("domjobinfo-completed-destination.txt"))
    assert figures.seconds == pytest.approx(0.393)
    assert figures.downtime_ms == 145
    assert figures.data_bytes == int(61.537 * 2**20)
    assert parse_jobinfo("") == type(figures)()  # no figures: none made up


def test_a_whole_host_read_from_recorded_pieces() -> None:
    """What the read script prints, assembled from the recorded outputs of its commands."""
    text = (
        fixture("nodeinfo.txt")
        + f"{SPLIT}\nmaintenance\nsaved-guest2\n{SPLIT}\n"
        + fixture("list-all-with-managed-save-name.txt")
        + f"{SPLIT}\n"
        + f"{DOMAIN_HEAD} guest1\n{fixture('domstate-reason-running-migrated.txt').strip()}\n"
        + fixture("dumpxml-guest1-running.txt")
        + f"{DOMAIN_HEAD} guest2\n{fixture('domstate-reason-saved.txt').strip()}\n"
        + fixture("dumpxml-guest2-managed-saved.txt")
    )
    host = parse_host(text)
    assert host.in_maintenance and host.saved_by_cau == ("guest2",)
    assert host.managed_saves == frozenset({"guest2"})
    assert [(d.name, d.state, d.active) for d in host.domains] == [
        ("guest1", "running", True),
        ("guest2", "shut off", False),
    ]
    assert host.used_mib() == 128 and host.used_vcpus() == 1


def test_a_domain_whose_xml_names_another_is_refused() -> None:
    text = (
        fixture("nodeinfo.txt")
        + f"{SPLIT}\n{SPLIT}\n{SPLIT}\n{DOMAIN_HEAD} guest9\nrunning (booted)\n"
        + fixture("dumpxml-guest1-running.txt")
    )
    with pytest.raises(ProviderError, match="the XML of 'guest1' for domain 'guest9'"):
        parse_host(text)


def test_the_migration_path_check_names_each_unreachable_target_in_virshs_words() -> None:
    # node1 checked against a reachable libvirt, qemu+ssh without keys, no such host, a closed port
    assert parse_paths(fixture("migration-paths.txt")) == {
        "node2": None,
        "node3": "Cannot recv data: Host key verification failed.: Connection reset by peer",
        "node9": "unable to connect to server at '10.77.205.99:16509': No route to host",
        "node4": "unable to connect to server at '10.77.205.13:1': Connection refused",
    }
    assert parse_paths("@@cau-path@@ node2 timeout\nsome other line\n") == {"node2": "no answer within 20 s"}


def test_the_copy_storage_check_reads_active_pools_and_the_disks_already_there() -> None:
    # node1 (real virsh output): an active, autostarted dir pool at /var/lib/libvirt/images,
    # guest1-data.img there and other.img not; an active pool at /srv/manual, not autostarted;
    # its inactive pool at /srv/pool2 is not listed (libvirt copies into active ones only)
    view = parse_storage(fixture("storage-pools-and-files.txt"))
    assert view.pools == (
        StoragePool("cau-images", "/var/lib/libvirt/images", autostart=True),
        StoragePool("cau-manual", "/srv/manual", autostart=False),
    )
    assert view.files == {"/var/lib/libvirt/images/guest1-data.img"}
    assert view.takes("/var/lib/libvirt/images/other.img")  # the pool is at its directory
    assert view.takes("/var/lib/libvirt/images/other.img", after_restart=True)  # autostarted
    assert not view.takes("/srv/pool2/disk.img")
    assert not view.takes("/var/lib/libvirt/images/sub/disk.img")  # not the pool's own directory
    # active now, but not autostarted: gone once the host has restarted
    assert view.takes("/srv/manual/disk.img")
    assert not view.takes("/srv/manual/disk.img", after_restart=True)
    # a file already there stays
    assert StorageView(files=frozenset({"/srv/a.img"})).takes("/srv/a.img", after_restart=True)
