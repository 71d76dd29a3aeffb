"""The libvirt provider on scripted hypervisor hosts (tests/contract/scripted.LibvirtPool), which
answer virsh in the formats of real libvirt: evacuation planning and its refusals, live
migration and its failures, managed save and restore, failback modes, leftovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.cluster import RoleKind
from cau.domain.profile import FailbackMode, MoveMethod, RunProfile
from cau.errors import MaintenanceError
from cau.ports import MaintenancePrior, ProviderContext
from cau.providers.libvirt import LibvirtOptions, LibvirtProvider
from tests.contract.scripted import Guest, LibvirtPool

NODES = ["hv1", "hv2", "hv3"]


def pool(*guests: Guest) -> LibvirtPool:
    return LibvirtPool(NODES, guests)


def provider(p: LibvirtPool, tmp_path: Path, **options: Any) -> LibvirtProvider:
    opts = LibvirtOptions.model_validate(
        {
            "nodes": [{"name": n, "host": a} for n, a in p.addresses.items()],
            "known_hosts": tmp_path / "known_hosts",
            "guest_memory_mib": 512,
            **options,
        }
    )
    made = LibvirtProvider.create(
        opts, ProviderContext("vm", VirtualClock(), tmp_path, transports=p.transports)
    )
    assert isinstance(made, LibvirtProvider)
    return made


def drain(prov: LibvirtProvider, node: str, move: MoveMethod = MoveMethod.LIVE) -> MaintenancePrior:
    async def main() -> MaintenancePrior:
        prior = await prov.maintenance_prior(node)
        await prov.enter_maintenance(node, move, prior)
        return prior

    return run_virtual(main())


def hosts(p: LibvirtPool) -> dict[str, str]:
    return {g.name: g.host for g in p.guests.values()}


def test_discover_sees_guests_as_live_roles_with_needs_and_hosts_with_room(
    tmp_path: Path,
) -> None:
    p = pool(Guest("a", "hv1", memory_mib=256, vcpus=2, preferred=("hv1", "hv2")), Guest("b", "hv2"))
    p.marks["hv3"].add("maintenance")
    snap = run_virtual(provider(p, tmp_path).discover())
    a = next(r for r in snap.roles if r.name == "a")
    assert (a.kind, a.owner, a.needs.cpu, a.needs.memory_gb) == (RoleKind.LIVE, "hv1", 2, 0.25)
    assert a.preferred_owners == ("hv1", "hv2")
    assert snap.node("hv1").capacity.memory_gb == 0.5 and snap.node("hv1").capacity.cpu == 16
    assert snap.node("hv3").in_maintenance and not snap.node("hv1").in_maintenance


def test_evacuation_places_the_biggest_guest_first_and_never_over_a_hosts_room(tmp_path: Path) -> None:
    # hv1 runs 384 + 128 + 128 MiB; hv2 has 512 free, hv3 256 free (it runs 256)
    p = pool(
        Guest("big", "hv1", memory_mib=384),
        Guest("s1", "hv1"),
        Guest("s2", "hv1"),
        Guest("other", "hv3", memory_mib=256),
    )
    prov = provider(p, tmp_path)
    drain(prov, "hv1")
    placed = hosts(p)
    assert placed["big"] == "hv2"  # the only host with room for it, taken before the small ones
    assert all(placed[g] != "hv1" for g in ("big", "s1", "s2"))
    for host in ("hv2", "hv3"):
        assert sum(g.memory_mib for g in p.guests.values() if g.host == host) <= 512
    assert "maintenance" in p.marks["hv1"]
    assert run_virtual(prov.discover()).node("hv1").in_maintenance


def test_a_guest_too_large_for_any_other_host_fails_the_drain_by_name_before_anything_moves(
    tmp_path: Path,
) -> None:
    p = pool(Guest("huge", "hv1", memory_mib=500), Guest("small", "hv1"), Guest("x", "hv2", memory_mib=128))
    p.marks["hv3"].add("maintenance")  # hv3 takes no guests
    prov = provider(p, tmp_path)
    assert run_virtual(prov.drain_problems("hv1", MoveMethod.LIVE)) == [
        "huge on hv1 needs 500 MiB and 1 vCPU, and no other host has room "
        "(free memory for guests: hv2 384 MiB)"
    ]
    with pytest.raises(MaintenanceError, match="huge on hv1 needs 500 MiB") as err:
        drain(prov, "hv1")
    assert "unmovable" in str(err.value)
    assert p.migrations == [] and "maintenance" not in p.marks["hv1"]  # nothing moved, not marked


def test_unmovable_save_saves_a_guest_with_nowhere_to_go_and_exit_restores_it(
    tmp_path: Path,
) -> None:
    p = pool(
        Guest("huge", "hv1", memory_mib=500),
        Guest("small", "hv1"),
        Guest("x", "hv2", memory_mib=256),
        Guest("y", "hv3", memory_mib=256),
    )
    prov = provider(p, tmp_path, unmovable="save")
    assert run_virtual(prov.drain_problems("hv1", MoveMethod.LIVE)) == []
    prior = drain(prov, "hv1")
    assert hosts(p)["small"] != "hv1" and p.guests["huge"].managed_save
    assert "saved-huge" in p.marks["hv1"]
    assert "huge saved on hv1 by cau (move = save), not started again" in run_virtual(prov.leftovers("hv1"))
    run_virtual(prov.exit_maintenance("hv1", prior))
    huge = p.guests["huge"]
    assert (huge.host, huge.state, huge.reason, huge.boots) == ("hv1", "running", "restored", 1)
    assert p.marks["hv1"] == set()
    methods = [(m.role, m.method, m.ok) for m in prov.take_moves("hv1")]
    assert ("huge", "save", True) in methods and ("huge", "restore", True) in methods


def test_a_guest_with_a_host_device_is_pinned_and_named(tmp_path: Path) -> None:
    p = pool(Guest("gpu", "hv1", hostdev=True))
    prov = provider(p, tmp_path)
    snap = run_virtual(prov.discover())
    assert snap.roles[0].kind is RoleKind.PINNED
    with pytest.raises(MaintenanceError, match=r"gpu on hv1 cannot live-migrate: a host device"):
        drain(prov, "hv1")


def test_save_mode_saves_every_guest_in_place_and_exit_restores_its_state(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"), Guest("b", "hv1"))
    prov = provider(p, tmp_path)
    prior = drain(prov, "hv1", MoveMethod.SAVE)
    assert p.migrations == [] and all(g.managed_save and g.host == "hv1" for g in p.guests.values())
    snap = run_virtual(prov.discover())
    assert {r.name: r.owner for r in snap.roles} == {"a": None, "b": None}  # down while saved
    run_virtual(prov.exit_maintenance("hv1", prior))
    assert all(g.state == "running" and g.boots == 1 for g in p.guests.values())
    assert run_virtual(prov.leftovers()) == []


def test_a_failed_migration_resumes_the_paused_guest_on_its_source_and_names_it(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"))
    p.fail_migration["a"] = "error: operation failed: migration out job: unexpectedly failed\n"
    p.pause_on_failure = True
    prov = provider(p, tmp_path)
    with pytest.raises(
        MaintenanceError, match="a could not migrate from hv1 to hv2: error: operation failed"
    ):
        drain(prov, "hv1")
    a = p.guests["a"]
    assert (a.host, a.state) == ("hv1", "running")  # resumed where it was
    (move,) = prov.take_moves("hv1")
    assert (move.role, move.ok, move.to_node) == ("a", False, "hv2")


def test_a_migration_reports_libvirts_figures(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"))
    prov = provider(p, tmp_path)
    drain(prov, "hv1")
    (move,) = prov.take_moves("hv1")
    assert (move.method, move.from_node, move.to_node) == ("live", "hv1", "hv2")
    assert move.reported_seconds == pytest.approx(0.612) and move.downtime_ms == 41
    assert move.data_bytes == int(63.921 * 1024**2)
    assert prov.take_moves("hv1") == []  # taken once


def test_a_planned_target_is_followed_when_it_has_room_and_refused_when_it_has_not(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"), Guest("fill", "hv3", memory_mib=448))
    prov = provider(p, tmp_path)

    async def planned(plan: dict[str, str]) -> None:
        prior = await prov.maintenance_prior("hv1")
        await prov.enter_maintenance_planned("hv1", MoveMethod.LIVE, prior, plan)

    run_virtual(planned({"a": "hv2"}))
    assert hosts(p)["a"] == "hv2"
    p.guests["a"].host = "hv1"
    p.marks["hv1"].clear()
    run_virtual(planned({"a": "hv3"}))  # hv3 has 64 MiB left: another host with room is taken
    assert hosts(p)["a"] == "hv2"


@pytest.mark.parametrize(
    ("mode", "back"),
    [(FailbackMode.IMMEDIATE, {"a", "b"}), (FailbackMode.POLICY, {"a"}), (FailbackMode.NONE, set())],
)
def test_failback_modes(tmp_path: Path, mode: FailbackMode, back: set[str]) -> None:
    p = pool(Guest("a", "hv1", preferred=("hv1",)), Guest("b", "hv1", preferred=("hv2",)))
    prov = provider(p, tmp_path)
    prior = drain(prov, "hv1")
    run_virtual(prov.exit_maintenance("hv1", prior))
    moved = run_virtual(prov.failback("hv1", prior, mode))
    assert set(moved) == back
    assert {g for g, h in hosts(p).items() if h == "hv1"} == back
    assert all(g.boots == 1 for g in p.guests.values())  # migrated, never restarted


def test_failback_to_a_host_without_room_leaves_the_guest_and_says_so(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"))
    prov = provider(p, tmp_path)
    prior = drain(prov, "hv1")
    run_virtual(prov.exit_maintenance("hv1", prior))
    p.guests["intruder"] = Guest("intruder", "hv1", memory_mib=448)
    with pytest.raises(MaintenanceError, match="a stays on hv2: hv1 has no room for it"):
        run_virtual(prov.failback("hv1", prior, FailbackMode.IMMEDIATE))
    assert hosts(p)["a"] == "hv2"


def test_leftovers_and_clean_up_after_a_lost_coordinator(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"), Guest("b", "hv2", state="paused", reason="migrating"))
    prov = provider(p, tmp_path)
    drain(prov, "hv1", MoveMethod.SAVE)  # then the coordinator is gone: only the hosts remember
    found = run_virtual(prov.leftovers())
    assert found == [
        "hv1 is marked in maintenance by cau (/var/lib/cau/libvirt/maintenance)",
        "a saved on hv1 by cau (move = save), not started again",
        "b paused on hv2 (migrating)",
    ]
    problems = run_virtual(prov.preflight())
    assert any("a was saved on hv1 by an earlier run" in x for x in problems)
    done, waiting = run_virtual(prov.clean_up())
    assert waiting == [] and "started a again on hv1 from its saved state" in done
    assert p.guests["a"].state == "running" and p.guests["b"].state == "running"
    assert run_virtual(prov.leftovers()) == []


def test_a_restart_kills_running_guests_but_a_saved_state_survives(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"))
    prov = provider(p, tmp_path)
    prior = drain(prov, "hv1", MoveMethod.SAVE)

    async def restart() -> None:
        old = await prov.boot_id("hv1")
        await prov.restart("hv1")
        await prov.wait_ready("hv1", previous_boot_id=old, timeout=60)
        await prov.exit_maintenance("hv1", prior)

    run_virtual(restart())
    assert (p.guests["a"].state, p.guests["a"].boots) == ("running", 1)


def test_options_refuse_hooks_and_bad_uri_templates(tmp_path: Path) -> None:
    base = {"nodes": [{"name": "hv1", "host": "h"}]}
    with pytest.raises(ValueError, match="only \\{address\\} and \\{node\\}"):
        LibvirtOptions.model_validate({**base, "migrate_uri": "qemu+ssh://{host}/system"})
    with pytest.raises(ValueError, match="remove the 'maintenance' hooks"):
        LibvirtOptions.model_validate({**base, "maintenance": {"enter": "x"}})
    with pytest.raises(ValueError, match="unknown node"):
        LibvirtOptions.model_validate({**base, "guest_memory_mib": {"hv9": 1}})


def test_the_downtime_limit_is_set_before_each_migration_and_options_passed_on(tmp_path: Path) -> None:
    p = pool(Guest("a", "hv1"))
    prov = provider(
        p,
        tmp_path,
        max_downtime_ms=10,
        migrate_options=["--auto-converge"],
        migrate_data_uri="tcp://{address}",
    )
    drain(prov, "hv1")
    assert p.max_downtime == {"a": 10}  # QEMU's parameter, on the source, before the move
    (args,) = p.migrate_commands
    assert args[:5] == ["migrate", "--live", "--persistent", "--undefinesource", "--auto-converge"]
    assert args[-2:] == ["--migrateuri", "tcp://10.0.0.12"]
    with pytest.raises(ValueError, match="migrate_options are `virsh migrate` options"):
        LibvirtOptions.model_validate(
            {"nodes": [{"name": "hv1", "host": "h"}], "migrate_options": ["xbzrle"]}
        )


def test_readiness_says_how_to_clear_a_maintenance_mark_a_lost_run_left() -> None:
    from cau.readiness.rules import _leave_maintenance_hint

    class Obs:  # the two fields the hint reads
        provider = "libvirt"
        cluster = "vm"

    assert _leave_maintenance_hint(Obs()) == "a maintenance mark a lost cau run left: `cau cleanup vm`"  # type: ignore[arg-type]


NO_KEYS = "Cannot recv data: Host key verification failed.: Connection reset by peer"


def test_preflight_names_each_host_that_cannot_reach_another_for_live_migration(tmp_path: Path) -> None:
    p = pool(Guest("g1", "hv1"))
    p.no_path[("hv1", "hv3")] = NO_KEYS
    prov = provider(p, tmp_path)
    problems = run_virtual(prov.preflight(RunProfile()))
    assert problems == [
        "hv1 -> hv3 (1 of 6 migration paths): the source host cannot reach the target's libvirt at "
        "migrate_uri = qemu+ssh://{address}/system as a live migration would: "
        f"{NO_KEYS} (give each host access to the others there, e.g. SSH keys from host "
        "to host for qemu+ssh, or change migrate_uri)"
    ]
    assert sorted(p.path_checks) == NODES  # every host checked every other, each in one round trip
    p.no_path.clear()
    assert run_virtual(prov.preflight(RunProfile())) == []
    # one finding per cause, naming every path it breaks
    p.no_path.update(
        {
            ("hv1", "hv3"): NO_KEYS,
            ("hv2", "hv3"): NO_KEYS,
            ("hv3", "hv1"): "unable to connect to server at '10.0.0.11:22'",
        }
    )
    problems = run_virtual(prov.preflight(RunProfile()))
    assert [x.split(" (")[0] for x in problems] == ["hv1 -> hv3, hv2 -> hv3", "hv3 -> hv1"], problems
    p.no_path.clear()
    # move = save migrates nothing: the paths are not asked for
    p.no_path[("hv1", "hv3")] = NO_KEYS
    p.path_checks.clear()
    assert run_virtual(prov.preflight(RunProfile(move=MoveMethod.SAVE))) == []
    assert p.path_checks == []


def test_a_host_that_does_not_answer_is_named_once_and_not_checked_as_a_path(tmp_path: Path) -> None:
    p = pool(Guest("g1", "hv1"))
    p.down["hv2"] = 10**6  # (SshHosts: a host whose ssh does not answer)
    problems = run_virtual(provider(p, tmp_path).preflight(RunProfile()))
    assert len(problems) == 1 and problems[0].startswith("hv2: "), problems
    assert sorted(p.path_checks) == ["hv1", "hv3"]


DISK = "/var/lib/libvirt/images/g1-data.img"


def test_preflight_names_a_local_disk_that_has_nowhere_to_be_copied(tmp_path: Path) -> None:
    # copy_storage: libvirt copies a local disk only into an active storage pool at its
    # directory, or over a file already there (libvirt 9.0 refuses the migration otherwise)
    p = pool(Guest("g1", "hv1", local_disk=DISK), Guest("g2", "hv2"))
    prov = provider(p, tmp_path, copy_storage=True)
    problems = run_virtual(prov.preflight(RunProfile()))
    assert problems == [
        f"g1's local disk {DISK} (on hv1) has nowhere to be copied on hv2, hv3: libvirt creates a "
        "copied disk only in an active storage pool whose target is its directory, or over a file "
        "already at its path (define one on each host: virsh pool-define-as NAME dir --target "
        "/var/lib/libvirt/images, then pool-start and pool-autostart; or put the disk under "
        "shared_storage)"
    ]
    assert sorted(p.storage_checks) == NODES  # one round trip per host
    p.storage_pools["hv2"].add("/var/lib/libvirt/images")
    p.files["hv3"].add(DISK)
    assert run_virtual(prov.preflight(RunProfile())) == []
    # a pool that is active but not autostarted: inactive once hv2 has restarted in the run, so
    # a later copy there fails; not a problem for a run that restarts nothing
    p.storage_pools["hv2"].clear()
    p.manual_pools["hv2"].add("/var/lib/libvirt/images")
    assert run_virtual(prov.preflight(RunProfile())) == [
        f"g1's local disk {DISK} (on hv1) would be copied into storage pools that are not "
        "autostarted (pool-images on hv2): each host restarts in the run and such a pool is "
        "inactive after its host's restart, so a later copy there fails (virsh pool-autostart "
        "NAME on each)"
    ]
    assert run_virtual(prov.preflight(RunProfile(no_restart=True))) == []
    p.manual_pools["hv2"].clear()
    # not asked: without copy_storage (the guest is pinned), with move = save, under shared storage
    p.storage_pools["hv2"].clear()
    p.storage_checks.clear()
    assert run_virtual(provider(p, tmp_path).preflight(RunProfile())) == []
    assert run_virtual(prov.preflight(RunProfile(move=MoveMethod.SAVE))) == []
    shared = provider(p, tmp_path, copy_storage=True, shared_storage=["/var/lib/libvirt/images"])
    assert run_virtual(shared.preflight(RunProfile())) == []
    assert p.storage_checks == []
