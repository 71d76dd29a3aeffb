"""Self-updating mode: `cau role add|show|set|enable|disable|update-now|remove CLUSTER` (CAU's
*-CauClusterRole) and `cau daemon CLUSTER` (the role's coordinator)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cau.cli import common
from cau.cli.common import ClusterArg, OutputFormat, OutputOpt
from cau.cli.errors import Exit, fail, reported
from cau.daemon import STOP_GRACE, resident
from cau.domain.results import RunState
from cau.logfile import start_log_file
from cau.selfupdating import PassResult
from cau.views import RoleView

if TYPE_CHECKING:
    from rich.console import Console

    from cau.service import Service

role_app = typer.Typer(
    help="Self-updating mode: the cluster's clustered coordinator role.", no_args_is_help=True
)

ProfileOpt = Annotated[str | None, typer.Option("--profile", help="A stored profile's name ('' clears it).")]
OptionsOpt = Annotated[
    str | None,
    typer.Option("--options", help="Run options over the profile, as JSON: '{\"max_retries_per_node\": 2}'."),
]

ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        help="When runs start: monthly:last-tue@03:00, weekly/2:wed@22:00, daily@01:30,"
        " once:2027-01-05T03:00 ('' clears it).",
    ),
]
TzOpt = Annotated[str | None, typer.Option("--tz", help="The schedule's IANA time zone (default UTC).")]
StartOpt = Annotated[str | None, typer.Option("--start", help="The schedule's first date (YYYY-MM-DD).")]

# `cau daemon --node NODE --once` exits with one of these (the supervisor reads them).
PASS_EXIT = {PassResult.IDLE: 0, PassResult.FINISHED: 0, PassResult.HANDED_OVER: 10, PassResult.NOT_OWNER: 11}


def _options(text: str | None, json_out: bool) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise fail(
            f"--options is not JSON: {exc}",
            hint="e.g. --options '{\"max_retries_per_node\": 2}'",
            json_output=json_out,
        ) from None
    if not isinstance(value, dict):
        raise fail("--options must be a JSON object", json_output=json_out)
    return value


def _show(view: RoleView, json_out: bool) -> None:
    if json_out:
        common.print_json(view)
        return
    console = common.console()
    state = "enabled" if view.enabled else "disabled"
    where = f"coordinator on {view.owner or 'no node'}"
    if view.elected:  # no resource manager: the nodes' daemons elect one per run
        where = f"coordinator elected among the nodes' daemons (now: {view.owner or 'none'})"
    console.print(f"clustered role of '{view.cluster}': {state}, {where}")
    console.print(
        f"  profile: {view.profile or '(defaults)'}"
        + (f", options {json.dumps(view.options)}" if view.options else "")
    )
    if view.schedule_text:
        nexts = ", ".join(f"{t:%Y-%m-%d %H:%M} UTC" for t in view.next_starts) or "none left"
        console.print(f"  schedule: {view.schedule_text} ({view.schedule}); next starts: {nexts}")
    else:
        console.print("  schedule: none (runs start only when asked: cau role update-now)")
    if view.window:
        console.print(f"  maintenance window: {view.window}")
    if view.update_requested:
        console.print(
            f"  update requested at {view.update_requested.at:%Y-%m-%d %H:%M:%S} UTC"
            f" by {view.update_requested.by}"
        )
    for check in view.readiness:
        mark = "ok  " if check.ok else "[red]FAIL[/]"
        console.print(f"  {mark} {check.check}" + (f": {check.detail}" if check.detail else ""))
    if view.active_run:
        console.print(f"  run in progress: {view.active_run}")
    console.print(f"  changed {view.updated:%Y-%m-%d %H:%M:%S} UTC by {view.updated_by}")


@role_app.command("add")
def role_add(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: ProfileOpt = None,
    options: OptionsOpt = None,
    schedule: ScheduleOpt = None,
    tz: TzOpt = None,
    start: StartOpt = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Add it disabled.")] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Add the clustered role (Add-CauClusterRole): checked first, nothing changed when refused."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        view = asyncio.run(
            svc.roles.add(
                cluster, profile=profile or None, options=_options(options, json_out) or {},
                enabled=not disabled, by=common.operator(), schedule=schedule, tz=tz, start=start,
            )
        )  # fmt: skip
    _show(view, json_out)


@role_app.command("show")
def role_show(
    ctx: typer.Context,
    cluster: ClusterArg,
    output: OutputOpt = OutputFormat.TEXT,
    no_check: Annotated[
        bool,
        typer.Option("--no-check", help="Leave out the readiness checks (they ask every node): for polling."),
    ] = False,
) -> None:
    """The role: where its coordinator runs, its profile, whether enabled, its run (Get-CauClusterRole)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        view = asyncio.run(svc.roles.show(cluster, check=not no_check))
    _show(view, json_out)


@role_app.command("set")
def role_set(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: ProfileOpt = None,
    options: OptionsOpt = None,
    schedule: ScheduleOpt = None,
    tz: TzOpt = None,
    start: StartOpt = None,
    update_now: Annotated[
        bool, typer.Option("--update-now", help="Start a run through the role now.")
    ] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Change the role's profile or options (Set-CauClusterRole); --update-now starts a run."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        parsed = _options(options, json_out)
        view = None
        if any(x is not None for x in (profile, parsed, schedule, tz, start)):
            view = asyncio.run(
                svc.roles.set(
                    cluster, by=common.operator(), profile=profile, options=parsed,
                    schedule=schedule, tz=tz, start=start,
                )
            )  # fmt: skip
        if update_now:
            view = asyncio.run(svc.roles.request_update(cluster, by=common.operator()))
        if view is None:
            view = asyncio.run(svc.roles.show(cluster))
    _show(view, json_out)


def _enable(ctx: typer.Context, cluster: str, output: OutputFormat, enabled: bool) -> None:
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        view = asyncio.run(svc.roles.set(cluster, by=common.operator(), enabled=enabled))
    _show(view, json_out)


@role_app.command("enable")
def role_enable(ctx: typer.Context, cluster: ClusterArg, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Enable the role (Enable-CauClusterRole)."""
    _enable(ctx, cluster, output, True)


@role_app.command("disable")
def role_disable(ctx: typer.Context, cluster: ClusterArg, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Disable the role (Disable-CauClusterRole): no new runs; one in progress goes on unless stopped."""
    _enable(ctx, cluster, output, False)


@role_app.command("update-now")
def role_update_now(ctx: typer.Context, cluster: ClusterArg, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Ask the role's coordinator for a run now (same as `cau role set CLUSTER --update-now`)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        view = asyncio.run(svc.roles.request_update(cluster, by=common.operator()))
    _show(view, json_out)


@role_app.command("remove")
def role_remove(ctx: typer.Context, cluster: ClusterArg) -> None:
    """Remove the role (Remove-CauClusterRole); refused while its run is unfinished."""
    svc = common.service(ctx)
    with reported(False):
        asyncio.run(svc.roles.remove(cluster, by=common.operator()))
    common.console().print(f"the clustered role of '{cluster}' is removed")


def daemon(
    ctx: typer.Context,
    cluster: ClusterArg,
    node: Annotated[
        str | None,
        typer.Option(
            "--node", help="The node this coordinator runs on (what the cluster starts on the role's owner)."
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (code 10: handed over).")] = False,
    poll: Annotated[float, typer.Option("--poll", help="Seconds between looks at the role.")] = 5.0,
    exit_when_idle: Annotated[
        bool,
        typer.Option("--exit-when-idle", help="Exit once nothing is asked for and no run is unfinished."),
    ] = False,
    resident: Annotated[
        bool,
        typer.Option(
            "--resident",
            help="With --node: stay up until stopped (SIGTERM), through hand-overs and pauses: what"
            " a resource agent (ocf:cau:coordinator) or a service manager runs.",
        ),
    ] = False,
) -> None:
    """The role's coordinator. With --node: what the cluster runs on the node that owns the role.
    Without: for a simulated cluster, stands in for its resource manager, starting a coordinator
    process on the role's owner each time the role moves."""
    svc = common.service(ctx)
    start_log_file(svc.data_dir, f"cau daemon {cluster}" + (f" --node {node}" if node else ""))
    console = common.console(stderr=True)
    if resident:
        if node is None or once or exit_when_idle:
            raise fail("--resident goes with --node, and not with --once or --exit-when-idle")
        _resident(svc, cluster, node, poll, console)
        return
    if node is not None:
        while True:
            with reported(False):
                done = asyncio.run(svc.roles.coordinator_pass(cluster, node))
            if done.result is not PassResult.IDLE or done.message:
                console.print(
                    f"cau daemon on {node}: {done.result.value}"
                    + (f": {done.message}" if done.message else "")
                )
            if done.outcome is not None and done.outcome.state is RunState.PAUSED:
                raise typer.Exit(Exit.PAUSED)  # `cau role show` / `cau status` say why
            if once or done.result in (PassResult.HANDED_OVER, PassResult.NOT_OWNER):
                raise typer.Exit(PASS_EXIT[done.result])
            if exit_when_idle and done.result is PassResult.IDLE:
                raise typer.Exit(0)
            time.sleep(poll)
    _supervise(ctx, cluster, poll=poll, exit_when_idle=exit_when_idle)


def _supervise(ctx: typer.Context, cluster: str, *, poll: float, exit_when_idle: bool) -> None:
    """A simulated cluster's resource manager for its coordinator role: one coordinator process
    at a time, on the role's owner; started again there after a hand-over."""
    svc = common.service(ctx)
    console = common.console(stderr=True)
    state = ctx.obj
    base = [sys.executable, "-m", "cau", "--data-dir", str(state.data_dir)]
    if state.config is not None:
        base += ["--config", str(state.config)]
    stopping = False

    def stop(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        with reported(False):
            view = asyncio.run(svc.roles.show(cluster, check=False))
        if view.elected:
            raise fail(
                f"'{cluster}' has no resource manager to stand in for: its coordinator is elected"
                " among the daemons of its nodes",
                hint=f"run `cau daemon {cluster} --node NODE` on every node (e.g. a systemd unit)",
            )
        if view.owner is None:
            raise fail(
                f"the coordinator role of '{cluster}' runs on no node", hint=f"`cau role add {cluster}`"
            )
        console.print(f"cau daemon: starting the coordinator of '{cluster}' on {view.owner}")
        child = subprocess.run(
            [*base, "daemon", cluster, "--node", view.owner, "--once"], env=os.environ.copy()
        )
        if child.returncode == PASS_EXIT[PassResult.HANDED_OVER]:
            continue  # the role moved: its new owner's coordinator goes on at once
        if child.returncode == Exit.PAUSED:
            raise fail(
                f"the role's run on '{cluster}' paused",
                hint=f"`cau status {cluster}` says why",
                exit_code=Exit.PAUSED,
            )
        if child.returncode not in (0, PASS_EXIT[PassResult.NOT_OWNER]):
            console.print(
                f"[yellow]cau daemon: the coordinator on {view.owner} exited with {child.returncode}[/]"
            )
        with reported(False):
            after = asyncio.run(svc.roles.show(cluster, check=False))
        if exit_when_idle and after.active_run is None and after.update_requested is None:
            raise typer.Exit(Exit.OK)
        time.sleep(poll)


def _resident(svc: Service, cluster: str, node: str, poll: float, console: Console) -> None:
    """The coordinator as a resource agent runs it (cau.daemon.resident), until SIGTERM."""

    def say(line: str) -> None:
        # one line per event, never wrapped: the log is read by grep and by people
        console.print(
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} cau daemon on {node}: {line}",
            highlight=False, soft_wrap=True, markup=False,
        )  # fmt: skip

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stop = asyncio.Event()

        def on_signal() -> None:
            if stop.is_set():
                task.cancel()  # asked twice: at once
                return
            stop.set()  # no new pass, whatever happens to the cancellation below
            # The pass in hand may be ending (a hand-over: the stop follows its ban at once, and
            # its last journal entry and the lock's release take milliseconds); past the grace
            # it is cancelled where it is. The cluster lock keeps the next coordinator out
            # meanwhile.
            loop.call_later(STOP_GRACE, task.cancel)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)

        async def owner() -> str | None:
            return (await svc.roles.show(cluster, check=False)).owner

        await resident(
            node=node, do_pass=lambda: svc.roles.coordinator_pass(cluster, node), owner=owner,
            poll=poll, say=say, stop=stop,
        )  # fmt: skip

    say(f"resident coordinator of '{cluster}' (pid {os.getpid()})")
    asyncio.run(main())
