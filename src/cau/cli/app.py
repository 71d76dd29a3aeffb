"""The `cau` command line. Its commands mirror CAU's cmdlets:

cau run      Invoke-CauRun      cau status   Get-CauRun       cau report   Get-/Export-CauReport
cau scan     Invoke-CauScan     cau stop     Stop-CauRun      cau plugins  Get-CauPlugin
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from cau import __version__
from cau.cli.errors import STATUS_EXIT, Exit, fail, reported
from cau.cli.live import RunWatcher
from cau.cli.render_text import run_summary, runs_table, status_text, when
from cau.cli.web_cli import serve, token_app, user_app
from cau.config import default_data_dir
from cau.domain.durations import format_duration
from cau.domain.profile import RunProfile
from cau.domain.results import ErrorId, RunState
from cau.domain.runs import ReportQuery, RunRecord
from cau.engine.coordinator import Coordinator
from cau.errors import CauError, ConfigError
from cau.journal.events import JournalEvent
from cau.journal.progress import apply, replay
from cau.lease import Holder
from cau.reports.model import RunReport
from cau.service import Service

app = typer.Typer(
    name="cau",
    help="Cluster-Aware Updating for Linux clusters: patch every node while the cluster keeps serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
sandbox_app = typer.Typer(help="The built-in simulated cluster.", no_args_is_help=True)
profile_app = typer.Typer(help="Updating Run Profiles.", no_args_is_help=True)
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(profile_app, name="profile")
app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.command("serve")(serve)


def _add_command_groups() -> None:
    """Command groups other distributions add under `cau` (entry point group `cau.commands`,
    name -> a Typer app): e.g. `cau lab` from cau-lab. One that fails to load is left out with a
    warning; cau itself still works."""
    from importlib import metadata

    for ep in metadata.entry_points(group="cau.commands"):
        try:
            sub = ep.load()
        except Exception as exc:  # a broken add-on must not break cau
            print(f"cau: the '{ep.name}' commands ({ep.value}) did not load: {exc}", file=sys.stderr)
            continue
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)


_add_command_groups()


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class ReportFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


@dataclass
class State:
    data_dir: Path
    config: Path | None

    def service(self) -> Service:
        return Service(self.data_dir, self.config)


OutputOpt = Annotated[OutputFormat, typer.Option("--output", help="text, or json for scripts.")]
ClusterArg = Annotated[str, typer.Argument(help="The cluster (`sandbox` is built in).")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cau {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="CAU_HOME", help="Where runs, journals and reports are kept."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", envvar="CAU_CONFIG", help="The clusters config file (TOML).")
    ] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    ctx.obj = State(data_dir or default_data_dir(), config)


def _console(*, stderr: bool = False) -> Console:
    """A console; when output goes to a file or pipe, wide enough that tables are not squeezed."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=140)
    return console


def _state(ctx: typer.Context) -> State:
    state = ctx.obj
    assert isinstance(state, State)
    return state


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _parse_value(text: str) -> Any:
    """A flag value as TOML would read it (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _plugin_overrides(
    plugins: list[str] | None, plugin_args: list[str] | None
) -> list[dict[str, Any]] | None:
    if not plugins and not plugin_args:
        return None
    specs: dict[str, dict[str, Any]] = {name: {} for name in plugins or []}
    for item in plugin_args or []:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(
                f"--plugin-arg '{item}': expected PLUGIN.KEY=VALUE, e.g. apt.exclude=[\"linux-*\"]"
            )
        specs.setdefault(name, {})[key] = _parse_value(value)
    return [{"name": name, "args": args} for name, args in specs.items()]


# --- run ------------------------------------------------------------------------------------------


@app.command()
def run(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: Annotated[Path | None, typer.Option("--profile", help="An Updating Run Profile (TOML).")] = None,
    max_retries_per_node: Annotated[
        int | None, typer.Option(help="Retries per node (CAU default 3, max 64).")
    ] = None,
    max_failed_nodes: Annotated[
        int | None, typer.Option(help="Failed nodes tolerated (default about a third).")
    ] = None,
    max_parallel_nodes: Annotated[
        str | None, typer.Option(help="Nodes updated at once: a number or 'auto'.")
    ] = None,
    require_all_nodes_online: Annotated[bool | None, typer.Option("--require-all-nodes-online")] = None,
    reboot_timeout: Annotated[str | None, typer.Option(help="e.g. 15m")] = None,
    stop_after: Annotated[str | None, typer.Option(help="Cancel the run after this long, e.g. 4h.")] = None,
    warn_after: Annotated[str | None, typer.Option(help="Warn when the run takes longer, e.g. 2h.")] = None,
    pre_update_script: Annotated[
        str | None, typer.Option(help="Run on each node before it is updated.")
    ] = None,
    post_update_script: Annotated[
        str | None, typer.Option(help="Run on each node after it is updated.")
    ] = None,
    plugin: Annotated[
        list[str] | None, typer.Option("--plugin", help="Plug-in to use (repeat, in order).")
    ] = None,
    plugin_arg: Annotated[list[str] | None, typer.Option("--plugin-arg", help="PLUGIN.KEY=VALUE")] = None,
    run_plugins_serially: Annotated[bool | None, typer.Option("--run-plugins-serially")] = None,
    stop_on_plugin_failure: Annotated[bool | None, typer.Option("--stop-on-plugin-failure")] = None,
    separate_reboots: Annotated[bool | None, typer.Option("--separate-reboots")] = None,
    node_order: Annotated[str | None, typer.Option(help="Comma-separated node names, updated first.")] = None,
    failback_mode: Annotated[str | None, typer.Option(help="immediate | policy | none")] = None,
    drain: Annotated[str | None, typer.Option(help="always | when-restart-needed")] = None,
    move: Annotated[str | None, typer.Option(help="live (migrate) | save (stop in place)")] = None,
    no_restart: Annotated[
        bool | None, typer.Option("--no-restart", help="Never restart; nodes end pending restart.")
    ] = None,
    allow_nodes_in_maintenance: Annotated[bool | None, typer.Option("--allow-nodes-in-maintenance")] = None,
    allow_unhealthy_cluster: Annotated[
        bool | None,
        typer.Option("--allow-unhealthy-cluster", help="Start despite failed resources or unclean nodes."),
    ] = None,
    force_recovery: Annotated[
        bool,
        typer.Option(
            "--force-recovery", help="Take over the cluster lock of a coordinator known to be dead."
        ),
    ] = False,
    speed: Annotated[
        float | None, typer.Option(help="Sandbox clusters only: simulation speed factor.")
    ] = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Run an Updating Run on a cluster (or resume its unfinished one)."""
    json_out = output is OutputFormat.JSON
    overrides: dict[str, Any] = {
        "max_retries_per_node": max_retries_per_node,
        "max_failed_nodes": max_failed_nodes,
        "max_parallel_nodes": (
            None
            if max_parallel_nodes is None
            else (max_parallel_nodes if max_parallel_nodes == "auto" else _parse_value(max_parallel_nodes))
        ),
        "require_all_nodes_online": require_all_nodes_online,
        "reboot_timeout": reboot_timeout,
        "stop_after": stop_after,
        "warn_after": warn_after,
        "pre_update_script": pre_update_script,
        "post_update_script": post_update_script,
        "run_plugins_serially": run_plugins_serially,
        "stop_on_plugin_failure": stop_on_plugin_failure,
        "separate_reboots": separate_reboots,
        "node_order": [n.strip() for n in node_order.split(",") if n.strip()] if node_order else None,
        "failback_mode": failback_mode,
        "drain": drain,
        "move": move,
        "no_restart": no_restart,
        "allow_nodes_in_maintenance": allow_nodes_in_maintenance,
        "allow_unhealthy_cluster": allow_unhealthy_cluster,
    }
    console = _console(stderr=json_out)
    svc = _state(ctx).service()
    with reported(json_out):
        overrides["plugins"] = _plugin_overrides(plugin, plugin_arg)
        run_profile = svc.profile(cluster, profile, overrides)
        given = profile is not None or any(v is not None for v in overrides.values())
        provider_overrides = {"speed": speed} if speed is not None else None
        if speed is not None and svc.config.cluster(cluster).provider != "sandbox":
            raise ConfigError("--speed only applies to sandbox clusters")
        outcome = _run_with_signals(
            svc, cluster, run_profile, console, json_out, force_recovery, provider_overrides, given
        )
    if outcome is None:
        raise typer.Exit(Exit.INTERRUPTED)
    if outcome.state is RunState.PAUSED:
        raise fail(
            f"run {outcome.run_id} paused: {outcome.error_id}: {outcome.message}",
            hint=f"fix the cause, then `cau run {cluster}` resumes it",
            code="run_paused",
            exit_code=Exit.PAUSED,
            json_output=json_out,
        )
    report = outcome.report
    assert report is not None and outcome.status is not None
    if json_out:
        _print_json(report.model_dump(mode="json"))
    else:
        console.print()
        console.print(run_summary(report))
        console.print(
            f"[dim]Full report: cau report {cluster} --last --detailed "
            "(--format html -o report.html for a picture)[/]"
        )
    raise typer.Exit(STATUS_EXIT[outcome.status])


def _run_with_signals(
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


# --- scan -----------------------------------------------------------------------------------------


@app.command()
def scan(
    ctx: typer.Context,
    cluster: ClusterArg,
    profile: Annotated[Path | None, typer.Option("--profile")] = None,
    plugin: Annotated[list[str] | None, typer.Option("--plugin")] = None,
    plugin_arg: Annotated[list[str] | None, typer.Option("--plugin-arg")] = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Preview the updates applicable to each node (nothing is changed)."""
    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    with reported(json_out):
        run_profile = svc.profile(cluster, profile, {"plugins": _plugin_overrides(plugin, plugin_arg)})
        scans = asyncio.run(svc.scan(cluster, run_profile))
    if json_out:
        _print_json(
            {
                "cluster": cluster,
                "nodes": [
                    {
                        "node": s.node,
                        "reachable": s.reachable,
                        "restart_pending": s.restart_pending,
                        "errors": s.errors,
                        "updates": [
                            {
                                "id": u.id,
                                "title": u.title,
                                "plugin": u.plugin,
                                "needs_restart": u.needs_restart,
                                "size_bytes": u.size_bytes,
                                "details": u.details,
                            }
                            for u in s.updates
                        ],
                        "held": [
                            {
                                "id": h.id,
                                "title": h.title,
                                "plugin": h.plugin,
                                "reason": h.reason,
                                "details": h.details,
                            }
                            for h in s.held
                        ],
                    }
                    for s in scans
                ],
            }
        )
        return
    console = _console()
    total = 0
    for s in scans:
        restart = sum(1 for u in s.updates if u.needs_restart)
        head = f"[bold]{escape(s.node)}[/]: {len(s.updates)} update(s)"
        if restart:
            head += f", {restart} need a restart"
        if s.restart_pending:
            head += ", [yellow]restart pending[/]"
        console.print(head)
        for u in s.updates:
            flag = " [yellow](restart)[/]" if u.needs_restart else ""
            console.print(f"  {escape(f'{u.id:<36}')} {escape(u.title)}{flag}", highlight=False)
        for h in s.held:
            console.print(f"  [cyan]not installed, {escape(h.reason)}:[/] {escape(h.title)}", highlight=False)
        for name, err in s.errors.items():
            console.print(f"  [red]{escape(name)}: {escape(err)}[/]")
        total += len(s.updates)
    console.print(
        f"[dim]{total} update(s) on {len(scans)} node(s); first-order only: second-order updates "
        "appear after these are installed.[/]"
    )


# --- status and stop --------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    cluster: ClusterArg,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Follow the run live until it ends.")] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Show the Updating Run in progress (or say there is none)."""
    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    with reported(json_out):
        st = asyncio.run(svc.status(cluster))
    if json_out:
        lock = st.lock
        _print_json(
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
    console = _console()
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


@app.command()
def stop(
    ctx: typer.Context,
    cluster: ClusterArg,
    reason: Annotated[str, typer.Option(help="Recorded in the run's journal.")] = "",
    wait: Annotated[bool, typer.Option("--wait", help="Return when the run has ended.")] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Stop the Updating Run in progress gracefully."""
    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    import getpass
    import socket

    by = f"{getpass.getuser()}@{socket.gethostname()}"
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
        _print_json(
            {
                "run_id": record.run_id,
                "stop_requested": True,
                "state": final.state.value if final else None,
                "status": final.status.value if final and final.status else None,
            }
        )
        return
    console = _console()
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


# --- reports --------------------------------------------------------------------------------------


def _parse_date(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{option} '{text}': expected a date like 2026-11-01 or 2026-11-01T08:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@app.command()
def report(
    ctx: typer.Context,
    cluster: ClusterArg,
    last: Annotated[bool, typer.Option("--last", help="Only the most recent run.")] = False,
    since: Annotated[str | None, typer.Option(help="Runs started at or after this date (UTC).")] = None,
    until: Annotated[str | None, typer.Option(help="Runs started at or before this date (UTC).")] = None,
    run_id: Annotated[str | None, typer.Option("--run", help="One run, by id (or a unique prefix).")] = None,
    detailed: Annotated[bool, typer.Option("--detailed", help="Per-node and per-update results.")] = False,
    fmt: Annotated[
        ReportFormat, typer.Option("--format", help="text, json, csv or html.")
    ] = ReportFormat.TEXT,
    availability: Annotated[
        bool, typer.Option("--availability", help="CSV: a row per run and role (probes, downtime).")
    ] = False,
    out_file: Annotated[Path | None, typer.Option("-o", "--out", help="Write to this file.")] = None,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Reports of past Updating Runs (Get-CauReport), exported as text, JSON, CSV or HTML."""
    if output is OutputFormat.JSON:
        fmt = ReportFormat.JSON
    json_out = fmt is ReportFormat.JSON
    svc = _state(ctx).service()

    async def load() -> list[RunReport]:
        svc.config.cluster(cluster)
        if run_id:
            records = [await svc.find_run(run_id)]
        else:
            query = ReportQuery(
                cluster=cluster,
                since=_parse_date(since, "--since"),
                until=_parse_date(until, "--until"),
                last=1 if last else None,
            )
            records = await svc.runs(query)
        return [await svc.run_report(r) for r in records]

    with reported(json_out):
        reports = asyncio.run(load())
    text = _render_reports(reports, fmt, detailed, availability=availability)
    if out_file is not None:
        out_file.write_text(text if isinstance(text, str) else "", encoding="utf-8")
        Console(stderr=True).print(f"[dim]wrote {len(reports)} report(s) to {escape(str(out_file))}[/]")
        return
    if isinstance(text, str):
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    console = _console()
    if not reports:
        console.print(f"No Updating Run reports for '{cluster}' in that range.")
    elif detailed:
        for r in reports:
            console.print(run_summary(r, detailed=True))
            console.print()
    else:
        console.print(runs_table(reports))


def _render_reports(
    reports: list[RunReport], fmt: ReportFormat, detailed: bool, *, availability: bool = False
) -> str | None:
    if fmt is ReportFormat.JSON:
        if detailed:
            return json.dumps([r.model_dump(mode="json") for r in reports], indent=2)
        return json.dumps([_summary(r) for r in reports], indent=2)
    if fmt is ReportFormat.CSV:
        from cau.reports.render_csv import render_csv

        return render_csv(reports, detailed=detailed, availability=availability)
    if fmt is ReportFormat.HTML:
        from cau.reports.render_html import render_html

        return render_html(reports)
    return None


def _summary(r: RunReport) -> dict[str, Any]:
    return {
        "run_id": r.run_id,
        "cluster": r.cluster,
        "status": r.status,
        "state": r.state,
        "started": r.started.isoformat(),
        "finished": r.finished.isoformat() if r.finished else None,
        "duration_seconds": r.duration_seconds,
        "error_id": r.error_id,
        "message": r.message,
        "nodes": [
            {
                "name": n.name,
                "status": n.status,
                "maintenance_seconds": n.maintenance_seconds,
                "updates": [{"id": u.id, "title": u.title, "status": u.status} for u in n.updates],
            }
            for n in r.nodes
        ],
        # per role: measured by cau's probes or reported by the provider, with every outage's
        # attribution to the node steps in progress (see RoleAvailability, OutageReport)
        "availability": [a.model_dump(mode="json") for a in r.availability],
        "outages": [o.model_dump(mode="json") for o in r.outages],
    }


# --- plug-ins -------------------------------------------------------------------------------------


@app.command()
def plugins(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """List the installed plug-ins and providers (and any that failed to load)."""
    from cau.registry import Registry

    reg = Registry.discover()
    rows = [("plug-in", e) for e in reg.plugins.values()] + [("provider", e) for e in reg.providers.values()]
    if output is OutputFormat.JSON:
        _print_json(
            [
                {
                    "kind": kind,
                    "name": e.name,
                    "target": e.target,
                    "distribution": e.distribution,
                    "version": e.version,
                    "ok": e.ok,
                    "error": e.error,
                    "summary": e.summary,
                }
                for kind, e in rows
            ]
        )
        return
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False, header_style="bold")
    for col in ("kind", "name", "from", "status", "description"):
        table.add_column(col, overflow="fold")
    for kind, e in rows:
        state = "[green]ok[/]" if e.ok else f"[red]failed to load: {e.error}[/]"
        table.add_row(kind, e.name, f"{e.distribution or '?'} {e.version or ''}", state, e.summary)
    _console().print(table)
    if any(not e.ok for _, e in rows):
        raise typer.Exit(Exit.ERROR)


# --- profiles -------------------------------------------------------------------------------------


@profile_app.command("validate")
def profile_validate(path: Path, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Check a profile file; print its effective options (defaults included)."""
    from cau.domain.profile import build_profile

    json_out = output is OutputFormat.JSON
    with reported(json_out):
        prof = build_profile(path)
    if json_out:
        _print_json({"valid": True, "profile": prof.model_dump(mode="json")})
        return
    import tomli_w

    Console(stderr=True).print(f"[green]{escape(str(path))}: valid[/]")
    sys.stdout.write(tomli_w.dumps({k: v for k, v in prof.model_dump(mode="json").items() if v is not None}))


# --- nodes ----------------------------------------------------------------------------------------

node_app = typer.Typer(help="One node of a cluster.", no_args_is_help=True)
app.add_typer(node_app, name="node")


@node_app.command("resume")
def node_resume(
    ctx: typer.Context,
    cluster: ClusterArg,
    node: Annotated[str, typer.Argument(help="The node.")],
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Take a node out of the maintenance cau left it in (e.g. it came back after the reboot timeout)."""
    import getpass
    import socket

    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    with reported(json_out):
        done = asyncio.run(svc.resume_node(cluster, node, by=f"{getpass.getuser()}@{socket.gethostname()}"))
    if json_out:
        _print_json(
            {
                "node": node,
                "run_id": done.run_id,
                "roles_failed_back": done.roles_failed_back,
                "cleaned": done.cleaned,
                "waiting": done.waiting,
            }
        )
        return
    console = _console()
    if done.run_id is not None:
        console.print(
            f"{node} is out of maintenance (recorded in run {done.run_id}); "
            f"roles failed back: {', '.join(done.roles_failed_back) or 'none'}"
        )
    for line in done.cleaned:
        console.print(f"{node}: {line}")
    for line in done.waiting:
        console.print(f"[yellow]{node}: {line}[/]")


@app.command("cleanup")
def cleanup(ctx: typer.Context, cluster: ClusterArg, output: OutputOpt = OutputFormat.TEXT) -> None:
    """Undo everything cau left in a cluster: nodes it left in maintenance (once back), and what
    it finds of its own by looking (e.g. Pacemaker constraints `cau-*` of a lost coordinator)."""
    import getpass
    import socket

    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    with reported(json_out):
        done = asyncio.run(svc.cleanup(cluster, by=f"{getpass.getuser()}@{socket.gethostname()}"))
    if json_out:
        _print_json({"cluster": cluster, "done": done.done, "waiting": done.waiting})
        return
    console = _console()
    if not done.done and not done.waiting:
        console.print(f"nothing of cau's left in '{cluster}'")
    for line in done.done:
        console.print(line)
    for line in done.waiting:
        console.print(f"[yellow]{line}[/]")
    if done.waiting:
        raise typer.Exit(1)


# --- SSH host keys -----------------------------------------------------------------------------------

hosts_app = typer.Typer(help="SSH host keys of a cluster's nodes.", no_args_is_help=True)
app.add_typer(hosts_app, name="hosts")


@hosts_app.command("trust")
def hosts_trust(
    ctx: typer.Context,
    cluster: ClusterArg,
    nodes: Annotated[list[str] | None, typer.Argument(help="Nodes (default: all).")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace a different key already recorded (a reinstalled node).")
    ] = False,
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Record the host keys the nodes present now. Check the fingerprints out of band first."""
    json_out = output is OutputFormat.JSON
    svc = _state(ctx).service()
    with reported(json_out):
        rows = asyncio.run(svc.trust_hosts(cluster, list(nodes or []), replace=replace))
    if json_out:
        _print_json([{"node": n, "fingerprint": fp, "result": r} for n, fp, r in rows])
        return
    console = _console()
    for node, fingerprint, result in rows:
        console.print(f"{escape(node)}: {fingerprint} ({result})")


# --- the sandbox ----------------------------------------------------------------------------------


def _sandbox(svc: Service, cluster: str) -> Any:
    cfg = svc.config.cluster(cluster)
    if cfg.provider != "sandbox":
        raise ConfigError(f"'{cluster}' is not a sandbox cluster (provider {cfg.provider})")
    return svc.open_provider(cluster)


@sandbox_app.command("reset")
def sandbox_reset(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument()] = "sandbox",
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Put a sandbox cluster back to its initial state (old versions, roles at home)."""
    from cau.sandbox.provider import state_file

    svc = _state(ctx).service()
    with reported(output is OutputFormat.JSON):
        _sandbox(svc, cluster)
        active = asyncio.run(svc.active_run(cluster))
        if active is not None:
            raise CauError(
                f"run {active.run_id} is not finished on '{cluster}'",
                hint=f"finish it with `cau run {cluster}` (or `cau stop {cluster}` then `cau run`)",
            )
        state_file(svc.data_dir, cluster).unlink(missing_ok=True)
    if output is OutputFormat.JSON:
        _print_json({"cluster": cluster, "reset": True})
        return
    _console().print(f"sandbox cluster '{cluster}' reset")


@sandbox_app.command("show")
def sandbox_show(
    ctx: typer.Context,
    cluster: Annotated[str, typer.Argument()] = "sandbox",
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """Show a sandbox cluster: nodes, where roles run, installed updates, outages."""
    svc = _state(ctx).service()
    with reported(output is OutputFormat.JSON):
        provider = _sandbox(svc, cluster)
        snap = asyncio.run(provider.discover())
    sim = provider.sim
    nodes = [
        {
            "name": n.name,
            "state": n.state.value,
            "in_maintenance": n.in_maintenance,
            "boot_id": n.boot_id,
            "roles": [r.name for r in snap.roles_on(n.name)],
            "installed": sorted(sim.nodes[n.name].installed),
            "pending_restart": sim.nodes[n.name].pending_restart,
            "restarts": sim.nodes[n.name].restarts,
        }
        for n in snap.nodes
    ]
    roles = [
        {
            "name": r.name,
            "kind": r.kind.value,
            "owner": r.owner,
            "instances": list(r.instances),
            "available": sim._down_reason(r.name) is None,
        }
        for r in snap.roles
    ]
    if output is OutputFormat.JSON:
        _print_json(
            {
                "cluster": cluster,
                "nodes": nodes,
                "roles": roles,
                "violations": sim.violations,
                "outages": [
                    {
                        "role": o.role,
                        "node": o.node,
                        "reason": o.reason,
                        "started": o.started.isoformat(),
                        "ended": o.ended.isoformat() if o.ended else None,
                    }
                    for o in sim.outages
                ],
            }
        )
        return
    from rich.table import Table

    console = _console()
    t = Table(
        show_edge=False,
        pad_edge=False,
        header_style="bold",
        title=f"sandbox cluster '{cluster}'",
        title_justify="left",
    )
    for col in ("node", "state", "maintenance", "roles", "installed", "restarts"):
        t.add_column(col, overflow="fold")
    for n in nodes:
        t.add_row(
            n["name"],
            n["state"] + (" (restart pending)" if n["pending_restart"] else ""),
            "yes" if n["in_maintenance"] else "",
            ", ".join(n["roles"]),
            str(len(n["installed"])),
            str(n["restarts"]),
        )
    console.print(t)
    for v in sim.violations:
        console.print(f"[red]violation: {escape(v['kind'])}: {escape(v['detail'])}[/]")
    down = [o for o in sim.outages if o.ended is None]
    for o in down:
        console.print(f"[yellow]{escape(o.role)} is down: {escape(o.reason)} (since {when(o.started)})[/]")
    total = sum(((o.ended or datetime.now(UTC)) - o.started).total_seconds() for o in sim.outages)
    console.print(f"[dim]{len(sim.outages)} recorded outage(s), {format_duration(total)} of role downtime[/]")


def main() -> None:
    app()
