"""`cau lab ...`: bring a lab of real hosts up and down, and drive its hosts by hand."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from cau.errors import CauError
from cau_lab import access, hostcau
from cau_lab.config import DEFAULT_CACHE_DIR, DEFAULT_SUBNET, LabConfig, state_dir_default
from cau_lab.control import Lab
from cau_lab.errors import reported
from cau_lab.hosts import exec_argv
from cau_lab.pacemaker import workloads

lab_app = typer.Typer(
    help="A lab of real Linux hosts on this machine (namespaces, needs root), for trying cau.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

StateDirOpt = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        envvar="CAU_LAB_STATE_DIR",
        default_factory=state_dir_default,
        help="Where the lab keeps its state (keys, host disks, repos, clusters.toml).",
    ),
]
NodeArg = Annotated[str, typer.Argument(help="A host of the lab, e.g. node1.")]


def _echo(message: str) -> None:
    typer.echo(message)


def _open(state_dir: Path) -> Lab:
    return Lab.open(state_dir, log=_echo)


def _usage(lab: Lab) -> None:
    typer.echo(f"known_hosts:  {lab.known_hosts}")
    typer.echo(f"client key:   {lab.identity}")
    typer.echo(f"cluster:      {lab.config_path}")
    typer.echo("")
    typer.echo("Use it with:")
    typer.echo(f"  cau --config {lab.config_path} scan {lab.cluster}")
    first = lab.nodes[0]
    typer.echo(f"  cau lab exec {first} -- apt list --upgradable")
    typer.echo(f"  {shlex.join(lab.ssh_argv(first, 'hostname'))}")


@lab_app.command()
def up(
    state_dir: StateDirOpt,
    nodes: Annotated[
        int | None, typer.Option("--nodes", min=1, help="Number of hosts (default 4; 3 with --pacemaker).")
    ] = None,
    pacemaker: Annotated[
        bool,
        typer.Option(
            "--pacemaker",
            help="Form a Corosync/Pacemaker cluster of all the hosts, with workloads "
            "(vm1: live-migratable HTTP on .101; web: failover group on .100; "
            "web-clone: port 8080 on each node).",
        ),
    ] = False,
    self_updating: Annotated[
        bool,
        typer.Option(
            "--self-updating",
            help="With --pacemaker: the environment of self-updating mode: an etcd member on "
            "every host (the run store), this machine's cau installed on every host, and "
            "/etc/cau/cau.toml there naming the etcd store and the cluster.",
        ),
    ] = False,
    vm_hosts: Annotated[
        bool,
        typer.Option(
            "--vm-hosts",
            help="Make every host a libvirt/QEMU hypervisor running tiny real guests (HTTP on "
            ".111, .112, ...), live-migratable between the hosts (qemu+tcp); clusters.toml "
            "names the libvirt provider. With --pacemaker: the Pacemaker lab's vm1 is a real guest "
            "(ocf:heartbeat:VirtualDomain, live-migrated by Pacemaker), the only one.",
        ),
    ] = False,
    guests: Annotated[
        int, typer.Option("--guests", min=1, help="With --vm-hosts alone: number of guests (default 2).")
    ] = 2,
    reboot_delay: Annotated[
        float, typer.Option("--reboot-delay", min=0, help="Seconds a rebooting host stays down.")
    ] = 1.0,
    old_only: Annotated[
        bool, typer.Option("--old-only", help="Publish only the OLD package versions (nothing to update).")
    ] = False,
    name: Annotated[
        str, typer.Option("--name", help="Prefix of the lab's netns, bridge and veth names.")
    ] = "lab",
    subnet: Annotated[str, typer.Option("--subnet", help="The lab's private IPv4 subnet.")] = DEFAULT_SUBNET,
    cluster: Annotated[str, typer.Option("--cluster", help="The cluster's name in clusters.toml.")] = "lab",
    min_online: Annotated[
        int | None, typer.Option("--min-online", help="min_online in clusters.toml (default: half).")
    ] = None,
    package: Annotated[
        list[str] | None, typer.Option("--package", help="Extra Debian package for the image (repeat).")
    ] = None,
    mirror: Annotated[
        str | None, typer.Option("--mirror", help="Debian mirror for the image (default: this machine's).")
    ] = None,
    cache_dir: Annotated[
        Path, typer.Option("--cache-dir", help="Where the built image is cached.")
    ] = DEFAULT_CACHE_DIR,
    recreate: Annotated[bool, typer.Option("--recreate", help="If the lab is up, start it afresh.")] = False,
) -> None:
    """Bring a lab up: image (built once, cached), repos, network, hosts, keys, clusters.toml."""
    with reported():
        cfg = LabConfig(
            state_dir=state_dir,
            nodes=nodes if nodes is not None else (3 if pacemaker or vm_hosts else 4),
            pacemaker=pacemaker,
            vm_hosts=vm_hosts,
            guests=guests,
            self_updating=self_updating,
            name=name,
            cluster=cluster,
            subnet=subnet,
            reboot_delay=reboot_delay,
            min_online=min_online,
            cache_dir=cache_dir,
            mirror=mirror,
            packages=tuple(package or ()),
        )
        lab = Lab(cfg, log=_echo)
        if lab.is_up() and not recreate:
            typer.echo(f"The lab in {lab.state_dir} is already up (--recreate to start it afresh).")
            _print_status(Lab.open(state_dir))
            _usage(lab)
            return
        lab.up(publish_new=not old_only, recreate=recreate)
        typer.echo(f"Lab up: {', '.join(f'{n} {a}' for n, a in lab.addresses.items())}")
        typer.echo(f"Packages: OLD installed; {'only OLD' if old_only else 'NEW'} versions published.")
        if lab.cfg.pacemaker:
            _print_workloads(lab)
        if lab.cfg.self_updating:
            _print_self_updating(lab)
        if lab.cfg.vm_hosts:
            _print_guests(lab)
        _usage(lab)


def _print_self_updating(lab: Lab) -> None:
    typer.echo(f"etcd (the run store): {' '.join(lab.etcd_endpoints)}, every member healthy.")
    typer.echo(f"cau on every host: {hostcau.WRAPPER} (this machine's cau), config {access.HOST_CONFIG}")
    typer.echo(f"  cau lab exec {lab.nodes[0]} -- cau --config {access.HOST_CONFIG} status {lab.cluster}")


def _print_guests(lab: Lab) -> None:
    typer.echo("Guests (libvirt domains; host: virsh domstate; GET / answer):")
    for guest, where in lab.guest_locations().items():
        on = ", ".join(f"{n} {st}" for n, st in where.items()) or "not defined"
        try:
            a = lab.guest_answer(guest, timeout=1)
            answer = f"boot={a.boot[:8]} count={a.count} uptime={a.uptime:g}"
        except CauError as exc:
            answer = f"no answer ({exc})"
        typer.echo(f"  {guest:<8} {lab.guest_addresses[guest]:<15} {on:<20} {answer}")


def _print_workloads(lab: Lab) -> None:
    typer.echo("Pacemaker cluster: all hosts online; workloads (resource: started on, addresses):")
    for w in workloads(lab.cfg):
        typer.echo(f"  {w.id:<10} {','.join(w.start_nodes):<20} {' '.join(w.urls)}")


def _print_status(lab: Lab) -> None:
    for st in lab.status():
        extra = f"  init={st.init_pid} procs={st.processes} boot_id={st.boot_id}" if st.init_pid else ""
        held = "  (no-return)" if st.no_return else ""
        typer.echo(f"{st.node:<10} {st.address:<15} {st.state:<10}{extra}{held}")
    if lab.cfg.vm_hosts:
        _print_guests(lab)
    if lab.cfg.self_updating:
        health = lab.etcd_health()
        typer.echo("etcd: " + ", ".join(f"{n} {'NOT ' if why else ''}healthy" for n, why in health.items()))
    if lab.cfg.pacemaker:
        try:
            state = lab.pacemaker.state()
        except CauError as exc:  # LabError, or crm_mon output cau could not read
            typer.echo(f"pacemaker: no answer ({exc})")
            return
        quorum = "with quorum" if state.quorum else "WITHOUT quorum"
        typer.echo(
            f"pacemaker: DC {state.dc or 'none'} ({quorum}), online: {' '.join(state.online) or 'none'}"
        )
        for w in workloads(lab.cfg):
            where = ",".join(state.locations(w.id)) or "stopped"
            typer.echo(f"  {w.id:<10} {where:<20} {' '.join(w.urls)}")


@lab_app.command()
def status(
    state_dir: StateDirOpt,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """One line per host: up, booting, rebooting (down for its reboot delay) or down."""
    with reported():
        lab = _open(state_dir)
        if as_json:
            typer.echo(json.dumps([st.as_dict() for st in lab.status()], indent=2))
        else:
            _print_status(lab)


@lab_app.command()
def down(state_dir: StateDirOpt) -> None:
    """Power every host off and remove the lab's network (idempotent)."""
    with reported():
        cfg_file = state_dir / "lab.json"
        if not cfg_file.exists():
            typer.echo(f"No lab in {state_dir}.")
            return
        lab = _open(state_dir)
        lab.down()
        typer.echo(f"Lab in {lab.state_dir} is down.")


@lab_app.command()
def publish(
    state_dir: StateDirOpt,
    old_only: Annotated[bool, typer.Option("--old-only", help="Withdraw the NEW versions.")] = False,
) -> None:
    """Publish the NEW package versions in the lab repositories (or, --old-only, withdraw them)."""
    with reported():
        lab = _open(state_dir)
        if old_only:
            lab.publish_old()
        else:
            lab.publish_new()
        for repo, pkgs in lab.repos.published().items():
            typer.echo(f"{repo}: " + ", ".join(f"{n} {v}" for n, v in pkgs))


@lab_app.command("reset-packages")
def reset_packages(
    state_dir: StateDirOpt,
    nodes: Annotated[list[str] | None, typer.Argument(help="Hosts (default: all).")] = None,
) -> None:
    """Put hosts' packages back to the OLD versions (and drop test packages, apt lists, pending restarts)."""
    with reported():
        lab = _open(state_dir)
        targets = nodes or lab.nodes
        for node in targets:
            lab.cfg.index(node)
        lab.reset_packages(targets)
        typer.echo(f"Packages reset on {', '.join(targets)}.")


@lab_app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    state_dir: StateDirOpt,
    node: NodeArg,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).")],
) -> None:
    """Run a command inside a host (all its namespaces and its root), e.g. `exec node1 -- hostname`."""
    with reported():
        lab = _open(state_dir)
        argv = exec_argv(lab.cfg, node, command)
    code = subprocess.run(argv, check=False).returncode
    raise typer.Exit(code if code >= 0 else 128 - code)


@lab_app.command()
def kill(state_dir: StateDirOpt, node: NodeArg) -> None:
    """Hard power-off of a host (SIGKILL its PID 1). It stays down until `boot`."""
    with reported():
        _open(state_dir).kill(node)
        typer.echo(f"{node} is off.")


@lab_app.command()
def poweroff(state_dir: StateDirOpt, node: NodeArg) -> None:
    """Graceful power-off of a host (services stopped). It stays down until `boot`."""
    with reported():
        _open(state_dir).poweroff(node)
        typer.echo(f"{node} is off.")


@lab_app.command()
def boot(
    state_dir: StateDirOpt,
    node: NodeArg,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="Do not wait for sshd.")] = False,
) -> None:
    """Power a host on (and wait until its sshd answers)."""
    with reported():
        lab = _open(state_dir)
        lab.boot(node, wait=not no_wait)
        typer.echo(f"{node} is {'booting' if no_wait else 'up'} (boot_id {lab.boot_id(node)}).")


@lab_app.command()
def restore(state_dir: StateDirOpt) -> None:
    """Put the whole lab back to how `up` left it: every host up, OLD packages installed, NEW
    published; in a --pacemaker lab also the cluster (all online, starting CIB, failures
    cleaned, resources on their start nodes)."""
    with reported():
        lab = _open(state_dir)
        lab.restore()
        typer.echo(f"Lab in {lab.state_dir} restored.")
        if lab.cfg.pacemaker:
            _print_workloads(lab)
        if lab.cfg.vm_hosts:
            _print_guests(lab)


@lab_app.command()
def reset(state_dir: StateDirOpt, node: NodeArg) -> None:
    """Hard reset of a host: killed, and booted again after the reboot delay."""
    with reported():
        _open(state_dir).reset(node)
        typer.echo(f"{node} was reset.")


@lab_app.command()
def hold(
    state_dir: StateDirOpt,
    node: NodeArg,
    off: Annotated[bool, typer.Option("--off", help="Let the host come back again.")] = False,
) -> None:
    """The next time the host goes down (reboot, reset), it does not come back (until `boot`)."""
    with reported():
        _open(state_dir).hold(node, not off)
        what = "comes back after a reboot" if off else "will not come back after its next reboot"
        typer.echo(f"{node}: {what}.")


def main() -> None:
    lab_app(prog_name="cau lab")


if __name__ == "__main__":
    main()
