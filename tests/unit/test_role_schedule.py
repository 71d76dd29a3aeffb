"""The clustered role's schedule, in virtual time on a sandbox cluster: a start runs a run through
the role's coordinators (handing over as the owners' turns come), a start missed while no
coordinator was up is skipped past its grace period, and a disabled role starts nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cau.clock import run_virtual
from cau.domain.results import RunState, Status
from cau.errors import ConfigError, PreflightError
from cau.selfupdating import Pass, PassResult
from cau.service import Service
from tests.support import installs, service, spec, write_cluster

START = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # tests.support.service's virtual clock


async def _sleep_until(svc: Service, when: datetime) -> None:
    await asyncio.sleep((when - svc.clock.now()).total_seconds())


async def _passes_until_done(svc: Service, cluster: str) -> list[Pass]:
    """What the cluster would do: start the coordinator on the role's owner, again after each
    hand-over, until a pass neither hands over nor finds itself on the wrong node."""
    done: list[Pass] = []
    for _ in range(10):
        owner = (await svc.roles.show(cluster)).owner
        assert owner is not None
        one = await svc.roles.coordinator_pass(cluster, owner)
        done.append(one)
        if one.result is not PassResult.HANDED_OVER:
            return done
    raise AssertionError(f"no end after 10 passes: {done}")


def test_a_scheduled_start_runs_missed_ones_are_skipped_and_a_disabled_role_starts_nothing(
    tmp_path: Path,
) -> None:
    config = write_cluster(tmp_path, spec())

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        try:
            view = await svc.roles.add(
                "c1", profile=None, options={}, enabled=True, by="ops", schedule="daily@03:00"
            )
            assert view.next_starts[:2] == [START.replace(hour=3), START.replace(day=2, hour=3)]
            assert view.schedule_text == "every day at 03:00 UTC"
            # Before the start: nothing to do.
            assert (await svc.roles.coordinator_pass("c1", view.owner or "")).result is PassResult.IDLE

            await _sleep_until(svc, START.replace(hour=3, second=20))
            passes = await _passes_until_done(svc, "c1")
            assert passes[-1].result is PassResult.FINISHED
            outcome = passes[-1].outcome
            assert outcome is not None and outcome.status is Status.SUCCEEDED
            assert outcome.report is not None
            assert outcome.report.started_by is not None
            assert outcome.report.started_by.startswith("the schedule (the 03:00 start is due")
            done = installs(await svc.store.events(outcome.run_id))
            assert len(done) == len(set(done)) == 2 * len(outcome.report.nodes)  # each update once

            # The coordinator was down through the next start and comes back 2h30 late: no window,
            # so past the grace period the start is skipped, said, and the next one awaited.
            await _sleep_until(svc, START.replace(day=2, hour=5, minute=30))
            owner = (await svc.roles.show("c1")).owner or ""
            late = await svc.roles.coordinator_pass("c1", owner)
            assert late.result is PassResult.IDLE
            said = svc.access.audit_entries(action="role.schedule")  # newest first
            assert "skipped, next start" in said[0].detail["message"]
            assert await svc.store.active_run("c1") is None

            # Disabled: its start passes and no run begins; enabled again, the next one runs.
            await svc.roles.set("c1", by="ops", enabled=False)
            await _sleep_until(svc, START.replace(day=3, hour=3, second=10))
            assert (await svc.roles.coordinator_pass("c1", owner)).result is PassResult.IDLE
            assert await svc.store.active_run("c1") is None
            said = svc.access.audit_entries(action="role.schedule")
            assert (
                said[0].detail["message"]
                == "the role is disabled: no run for the start at 2026-11-03 03:00 UTC"
            )
            assert said[0].detail["run"] is False
        finally:
            svc.close()

    run_virtual(main())


def test_a_schedule_with_no_start_to_come_is_refused(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec())

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        try:
            with pytest.raises(ConfigError, match="has no start after now"):
                await svc.roles.add(
                    "c1", profile=None, options={}, enabled=True, by="ops", schedule="once:2026-10-01T03:00"
                )
            with pytest.raises(ConfigError, match="'often' is not a kind") as bad:
                await svc.roles.add("c1", profile=None, options={}, enabled=True, by="ops", schedule="often")
            assert "monthly:last-tue@03:00" in (bad.value.hint or "")  # with valid examples
            assert await svc.store.get_role("c1") is None
            view = await svc.roles.add(
                "c1", profile=None, options={}, enabled=True, by="ops",
                schedule="monthly:last-tue@03:00", tz="Europe/Berlin",
            )  # fmt: skip
            # the last Tuesday of November 2026 is the 24th: 03:00 in Berlin is 02:00 UTC
            assert view.next_starts[0] == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
            assert view.next_starts[1] - view.next_starts[0] > timedelta(days=27)
        finally:
            svc.close()

    run_virtual(main())


def test_a_role_that_is_not_ready_is_refused_at_add_and_enable_naming_the_check(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec())
    past = {"window": "once:2026-10-01T01:00 for 2h"}  # a one-off window that has closed for good

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        try:
            with pytest.raises(PreflightError, match="the maintenance window opens again") as err:
                await svc.roles.add("c1", profile=None, options=past, enabled=True, by="ops")
            assert "nothing was changed" in (err.value.hint or "")
            assert await svc.store.get_role("c1") is None
            view = await svc.roles.add("c1", profile=None, options={}, enabled=False, by="ops")
            assert all(c.ok for c in view.readiness) and len(view.readiness) >= 2
            with pytest.raises(PreflightError, match="the maintenance window opens again"):
                await svc.roles.set("c1", by="ops", options=past, enabled=True)
            assert (await svc.roles.show("c1")).enabled is False  # nothing changed
        finally:
            svc.close()

    run_virtual(main())


def test_a_role_run_paused_for_an_error_waits_for_update_now_then_resumes_once(tmp_path: Path) -> None:
    """The daemon does not retry what paused a run at every pass: the operator's update-now
    resumes it (and is taken by that resume, not left to start a second run afterwards)."""
    config = write_cluster(tmp_path, spec())

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        try:
            view = await svc.roles.add("c1", profile=None, options={}, enabled=True, by="ops")
            await svc.roles.request_update("c1", by="ops")
            owner = view.owner or ""
            # The first coordinator hands over before its own node; the run is then paused for
            # an error, as Coordinator._pause records one.
            first = await svc.roles.coordinator_pass("c1", owner)
            assert first.result is PassResult.HANDED_OVER, first
            run = await svc.store.active_run("c1")
            assert run is not None
            await svc.store.set_run_state(
                run.run_id, RunState.PAUSED, error_id="provider_error", message="crm_mon failed"
            )
            journaled = len(await svc.store.events(run.run_id))

            owner = (await svc.roles.show("c1", check=False)).owner or ""
            idle = await svc.roles.coordinator_pass("c1", owner)
            assert idle.result is PassResult.IDLE and idle.run_id == run.run_id
            assert "is paused (crm_mon failed)" in idle.message and "cau role update-now c1" in idle.message
            assert len(await svc.store.events(run.run_id)) == journaled  # nothing retried

            await svc.roles.request_update("c1", by="ops")
            passes = await _passes_until_done(svc, "c1")
            assert passes[-1].result is PassResult.FINISHED and passes[-1].run_id == run.run_id
            assert (await svc.roles.show("c1", check=False)).update_requested is None
            owner = (await svc.roles.show("c1", check=False)).owner or ""
            after = await svc.roles.coordinator_pass("c1", owner)
            assert after.result is PassResult.IDLE and after.run_id is None  # no second run
        finally:
            svc.close()

    run_virtual(main())


def test_the_roles_record_is_there_when_its_coordinator_starts_and_gone_if_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource manager starts the role's first coordinator while `role add` is still waiting
    for it (Pacemaker): that coordinator must find the role's record. If the role cannot start,
    nothing is left: no record either."""
    from cau.errors import MaintenanceError
    from cau.sandbox.provider import SandboxProvider

    config = write_cluster(tmp_path, spec())
    seen: list[object] = []
    real_add = SandboxProvider.add_coordinator_role

    async def main() -> None:
        svc = service(tmp_path / "home", config)

        async def add_and_look(self: SandboxProvider) -> str | None:
            seen.append(await svc.store.get_role("c1"))  # what the first coordinator would read
            return await real_add(self)

        try:
            monkeypatch.setattr(SandboxProvider, "add_coordinator_role", add_and_look)
            await svc.roles.add("c1", profile=None, options={}, enabled=True, by="ops")
            assert seen and seen[0] is not None
            await svc.roles.remove("c1", by="ops")

            async def cannot_start(self: SandboxProvider) -> str | None:
                raise MaintenanceError("the coordinator role did not start on any node")

            monkeypatch.setattr(SandboxProvider, "add_coordinator_role", cannot_start)
            with pytest.raises(MaintenanceError):
                await svc.roles.add("c1", profile=None, options={}, enabled=True, by="ops")
            assert await svc.store.get_role("c1") is None
        finally:
            svc.close()

    run_virtual(main())


def test_a_role_with_a_stored_profile_runs_it_where_the_stored_profiles_are_not(tmp_path: Path) -> None:
    """Stored profiles live in the local store of the machine `cau role` ran on; the role's
    coordinators run on the nodes. The role's record keeps the profile's options: a coordinator
    that cannot see the stored profile still runs the run with them."""
    config = write_cluster(tmp_path, spec())

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        try:
            svc.admin.put_profile("nightly", "", {"max_retries_per_node": 7}, by="ops")
            view = await svc.roles.add("c1", profile="nightly", options={}, enabled=True, by="ops")
            assert view.profile == "nightly"
            svc.admin.delete_profile("nightly", by="ops")  # a node's local store: no such profile
            await svc.roles.request_update("c1", by="ops")
            passes = await _passes_until_done(svc, "c1")
            assert passes[-1].result is PassResult.FINISHED, passes
            run = await svc.store.get_run(passes[-1].run_id or "")
            assert run is not None and run.profile.max_retries_per_node == 7
        finally:
            svc.close()

    run_virtual(main())
