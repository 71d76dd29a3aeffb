"""`cau run`, `cau status` and `cau stop` (Invoke-CauRun, Get-CauRun, Stop-CauRun)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import STATUS_EXIT, Exit, fail, reported
from cau.cli.live import RunWatcher
from cau.cli.render_text import forecast_text, run_summary, status_text, when
from cau.cli.run_flags import with_run_option_flags
from cau.domain.profile import RunProfile
from cau.domain.results import ErrorId, RunState
from cau.domain.runs import RunRecord
from cau.engine.coordinator import Coordinator
from cau.errors import ConfigError
from cau.journal.events import JournalEvent
from cau.journal.progress import apply, replay
from cau.lease import Holder
from cau.logfile import log, start_log_file
from cau.service import Service


@with_run_option_flags
def run(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: common.ProfileOpt = None,
    plugin: common.PluginOpt = None,
    plugin_arg: common.PluginArgOpt = None,
    force_recovery: Annotated[
        bool,
        typer.Option(
            "--force-recovery", help="Take over the cluster lock of a coordinator known to be dead."
        ),
    ] = False,
    speed: Annotated[
        float | None, typer.Option(help="Sandbox clusters only: simulation speed factor.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Start nothing: show the batches cau would form, the duration predicted from past "
            "runs, and whether it fits stop_after and the window.",
        ),
    ] = False,
    output: OutputOpt = OutputFormat.TEXT,
    *,
    options: dict[str, Any],
) -> None:
    """Run an Updating Run on a cluster (or resume its unfinished one)."""
    json_out = output is OutputFormat.JSON
    overrides: dict[str, Any] = dict(options)
    console = common.console(stderr=json_out)
    svc = common.service(ctx)
    start_log_file(svc.data_dir, f"cau run {cluster}")
    with reported(json_out):
        overrides["plugins"] = common.plugin_overrides(plugin, plugin_arg)
        run_profile = svc.profile(cluster, profile, overrides)
        given = profile is not None or any(v is not None for v in overrides.values())
        provider_overrides = {"speed": speed} if speed is not None else None
        if speed is not None and svc.config.cluster(cluster).provider != "sandbox":
            raise ConfigError("--speed only applies to sandbox clusters")
        if dry_run:
            predicted = asyncio.run(svc.preview_run(cluster, run_profile))
            if json_out:
                common.print_json(predicted)
            else:
                console.print(forecast_text(predicted))
            return
        outcome = run_with_signals(
            svc, cluster, run_profile, console, json_out, force_recovery, provider_overrides, given
        )
    if outcome is None:
        log.info("cau run %s: abandoned (resumable)", cluster)
        raise typer.Exit(Exit.INTERRUPTED)
    finish_run(outcome, cluster, console, json_out)


def finish_run(outcome: Any, cluster: str, console: Console, json_out: bool) -> None:
    """A run's end on the command line (`cau run`, `cau remediate`): its summary, or why it
    paused, and the exit code of its status."""
    log.info(
        "cau run %s: run %s %s (%s)%s",
        cluster,
        outcome.run_id,
        outcome.state.value,
        outcome.status.value if outcome.status else "no status",
        f": {outcome.error_id}: {outcome.message}" if outcome.error_id else "",
    )
    if outcome.state is RunState.PAUSED:
        raise fail(
            f"run {outcome.run_id} paused: {outcome.error_id}: {outcome.message}",
            hint=(
                f"`cau run {cluster}` in the window resumes it where it stopped"
                if outcome.error_id == ErrorId.OUTSIDE_WINDOW.value
                else f"fix the cause, then `cau run {cluster}` resumes it"
            ),
            code="run_paused",
            exit_code=Exit.PAUSED,
            json_output=json_out,
        )
    report = outcome.report
    assert report is not None and outcome.status is not None
    if json_out:
        common.print_json(report.model_dump(mode="json"))
    else:
        console.print()
        console.print(run_summary(report))
        console.print(
            f"[dim]Full report: cau report {cluster} --last --detailed "
            "(--format html -o report.html for a picture)[/]"
        )
    raise typer.Exit(STATUS_EXIT[outcome.status])


def run_with_signals(
    svc: Service,
    cluster: str,
    profile: RunProfile,
    console: Console,
    json_out: bool,
    force_recovery: bool,
    provider_overrides: dict[str, Any] | None,
    profile_given: bool,
) -> Any:
    """Run with Ctrl-C handled like an operator expects: the first stops gracefully (the node in
    hand is finished or brought back), the second abandons at once (the run stays resumable)."""
    coordinators: list[Coordinator] = []
    live = console.is_terminal and not json_out
    watcher = RunWatcher(console, live=live)

    async def on_coordinator(coordinator: Coordinator) -> None:
        coordinators.append(coordinator)
        record = await svc.get_run(coordinator.run_id)
        if record is not None:
            watcher.attach(record, coordinator.progress)  # the coordinator keeps it up to date

    def on_event(ev: JournalEvent) -> None:
        if not json_out:
            watcher.feed(ev)

    def notice(message: str) -> None:
        log.info("cau run %s: %s", cluster, message)
        console.print(f"[cyan]{escape(message)}[/]", highlight=False)

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        presses = 0

        def on_signal(signame: str) -> None:
            nonlocal presses
            presses += 1
            if presses == 1 and coordinators:
                console.print(
                    f"[yellow]{signame}: stopping gracefully; the node in hand is finished or brought "
                    "back out of maintenance. Press Ctrl-C again to abandon now (resumable).[/]"
                )
                coordinators[0].request_stop(
                    ErrorId.STOPPED_BY_OPERATOR, f"interrupted ({signame})", by="operator"
                )
            elif task is not None:
                task.cancel()

        for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
            loop.add_signal_handler(sig, on_signal, name)
        try:
            return await svc.run(
                cluster,
                profile,
                actor=common.operator(),
                force_recovery=force_recovery,
                provider_overrides=provider_overrides,
                on_event=on_event,
                on_coordinator=on_coordinator,
                on_notice=notice,
                profile_given=profile_given,
            )
        except asyncio.CancelledError:
            console.print(
                f"[yellow]abandoned: the run stays as it is in the journal; `cau run {cluster}` resumes it[/]"
            )
            return None

    with watcher:
        return asyncio.run(main())


def status(
    ctx: typer.Context,
    cluster: ClusterArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the run live until it ends.")] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Show the Updating Run in progress (or say there is none)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        st = asyncio.run(svc.status(cluster))
    if json_out:
        lock = st.lock
        common.print_json(
            {
                "cluster": cluster,
                "active": st.active,
                "lock": None
                if lock is None
                else {
                    "owner": str(lock.owner),
                    "run_id": lock.run_id,
                    "acquired": lock.acquired.isoformat(),
                    "lease_expires": lock.lease_expires.isoformat(),
                    "owner_alive": st.holder is Holder.ALIVE,
                },
                "run": st.report.model_dump(mode="json") if (st.report and st.active) else None,
                "last_run": st.report.model_dump(mode="json") if (st.report and not st.active) else None,
            }
        )
        return
    console = common.console()
    if not st.active:
        console.print(f"No Updating Run is in progress on cluster '{cluster}'.")
        if st.report is not None:
            console.print(
                Console().render_str("Last run: ") + status_text(st.report.status),
                f"{st.report.run_id}, finished {when(st.report.finished)} UTC",
            )
        return
    assert st.run is not None and st.report is not None
    if st.lock is not None and st.driven:
        owner, until = escape(str(st.lock.owner)), when(st.lock.lease_expires)
        console.print(f"[dim]coordinator: {owner}, lease until {until} UTC[/]")
    elif st.run.state is RunState.RUNNING:
        gone = f" ({escape(str(st.lock.owner))} is gone)" if st.lock is not None else ""
        console.print(
            f"[yellow]no coordinator is running this run{gone}: the run was interrupted; "
            f"`cau run {cluster}` resumes it[/]"
        )
    if not watch:
        console.print(run_summary(st.report))
        if st.run.state is RunState.PAUSED:
            console.print(
                f"[magenta]paused: {st.report.error_id}: {st.report.message}; "
                f"`cau run {cluster}` resumes it[/]"
            )
        return
    _watch(svc, st.run.run_id, console)


def _watch(svc: Service, run_id: str, console: Console) -> None:
    watcher = RunWatcher(console, live=console.is_terminal)

    async def follow() -> RunRecord | None:
        record = await svc.get_run(run_id)
        if record is None:
            return None
        progress = replay(await svc.events(run_id))
        watcher.attach(record, progress)
        while True:
            for ev in await svc.events(run_id, after_seq=progress.last_seq):
                apply(progress, ev)
                watcher.feed(ev)
            record = await svc.get_run(run_id)
            if record is None or record.state is not RunState.RUNNING:
                return record
            watcher.attach(record, progress)
            await asyncio.sleep(0.5)

    try:
        with watcher:
            record = asyncio.run(follow())
    except KeyboardInterrupt:
        return
    if record is not None:
        console.print(run_summary(asyncio.run(svc.run_report(record))))


def stop(
    ctx: typer.Context,
    cluster: ClusterArg,
    reason: Annotated[str, typer.Option(help="Recorded in the run's journal.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Return when the run has ended.")] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Stop the Updating Run in progress gracefully."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    by = common.operator()
    with reported(json_out):
        record = asyncio.run(svc.stop(cluster, by=by, reason=reason))

    def coordinator_alive() -> bool:
        return asyncio.run(svc.driven(record))

    final = None
    while wait:
        current = asyncio.run(svc.get_run(record.run_id))
        if current is None or current.state is not RunState.RUNNING:
            final = current if current is not None and current.state is RunState.FINISHED else None
            break
        if not coordinator_alive():
            break  # nothing will act on the request until `cau run` resumes the run
        time.sleep(0.5)
    if json_out:
        common.print_json(
            {
                "run_id": record.run_id,
                "stop_requested": True,
                "state": final.state.value if final else None,
                "status": final.status.value if final and final.status else None,
            }
        )
        return
    console = common.console()
    console.print(
        f"Stop requested for run {record.run_id} on '{cluster}': the node in hand is finished or "
        "brought back out of maintenance, the others are canceled."
    )
    if final is not None and final.status is not None:
        console.print(Console().render_str("The run ended: ") + status_text(final.status.value))
    elif not coordinator_alive():
        console.print(
            f"[yellow]no coordinator is running this run; `cau run {cluster}` resumes it and then stops[/]"
        )
