"""Errors that retrying cannot help, in whole Updating Runs: a node that comes back from its restart
with another host key, or refuses the login, fails at once (one restart, no retries, no waiting out
the reboot timeout) with an error id that says so and the command that records the key; output a
plug-in cannot read fails the node, naming the command and the node. Neither pauses the run; a
refusal met while observing the whole cluster pauses it with that reason. Runs of the ssh provider
on scripted Debian hosts (tests/contract/scripted.py), in virtual time. Plug-ins and the ssh
provider's hooks let a refusal through as it is, so the engine can decide by its class."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import MoveMethod
from cau.domain.results import PAUSE_REASONS, ErrorId, RunState
from cau.engine.coordinator import RunOutcome
from cau.engine.scan import scan_plugins
from cau.errors import CauError, HostKeyError
from cau.journal.events import EventKind, JournalEvent
from cau.ports import MaintenancePrior, PluginContext, ProviderContext
from cau.providers.ssh import SshOptions, SshProvider
from cau.registry import Entry, Registry
from cau.testing import Result, Rules, ScriptedCluster, ScriptedTransport, Session
from cau.transport.ssh import SshTarget, changed_host_key, refused_login
from tests.contract.scripted import BOOT_ID, DPKG_QUERY, REBOOT, DebianHost, SshHosts
from tests.support import run_journaled

PROBE = (  # the apt plug-in's reboot-required probe, after an install
    "if test -e /var/run/reboot-required; then echo yes; cat /var/run/reboot-required.pkgs 2>/dev/null; "
    "else echo no; fi"
)
KNOWN_HOSTS = "/etc/cau/known_hosts"


class DebianHosts(SshHosts):
    """SSH hosts that are each the apt fixtures' Debian host; their installs ask for a restart.
    A host in `refuse` answers, once restarted, with that error (as SshTransport raises it when
    it reconnects to a host presenting another key, or refusing the login); one in `garbled`
    answers the commands starting with that prefix with what no parser reads."""

    def __init__(self, names: list[str]) -> None:
        super().__init__(names)
        self.debian = {name: DebianHost() for name in names}
        for host in self.debian.values():
            host.answer(PROBE, "yes\n")
        self.refuse: dict[str, CauError] = {}
        self.garbled: dict[str, str] = {}

    def answer(self, node: str, command: str) -> Result:
        if node in self.refuse and self.boots[node] > 1 and not self.down.get(node):
            raise self.refuse[node]
        return super().answer(node, command)

    def other(self, node: str, command: str) -> Result:
        if node in self.garbled and command.startswith(self.garbled[node] + " "):
            return "<html><body>502 Bad Gateway</body></html>\n"
        return self.debian[node](command)


class ScriptedSsh(SshProvider):
    """The ssh provider, reaching the nodes of `HOSTS` (a Service makes providers without
    transports: this registry entry gives them)."""

    HOSTS: ClassVar[DebianHosts]

    @classmethod
    def create(cls, options: BaseModel, ctx: ProviderContext) -> SshProvider:
        assert isinstance(options, SshOptions)
        return cls(ctx.cluster, options, transports=cls.HOSTS.transports)


def registry(hosts: DebianHosts) -> Registry:
    ScriptedSsh.HOSTS = hosts
    reg = Registry.discover()
    reg.providers["ssh"] = Entry(
        group="cau.providers", name="ssh", target="tests:ScriptedSsh", obj=ScriptedSsh
    )
    return reg


def ssh_cluster(tmp: Path, names: list[str]) -> Path:
    config = tmp / "clusters.toml"
    nodes = "".join(
        f'[[clusters.web.options.nodes]]\nname = "{n}"\nhost = "192.0.2.{i}"\n'
        for i, n in enumerate(names, 1)
    )
    config.write_text(
        '[clusters.web]\nprovider = "ssh"\n[clusters.web.options]\n'
        f'known_hosts = "{KNOWN_HOSTS}"\nallow_member_coordinator = true\n' + nodes
    )
    return config


def target(node: str, index: int) -> SshTarget:
    return SshTarget(name=node, host=f"192.0.2.{index}", known_hosts=Path(KNOWN_HOSTS), cluster="web")


def run(tmp: Path, hosts: DebianHosts, **profile: Any) -> tuple[RunOutcome, list[JournalEvent]]:
    """One Updating Run of the apt plug-in (labbroken, whose postinst fails, left alone)."""
    config = ssh_cluster(tmp, hosts.names)
    profile = {"plugins": [{"name": "apt", "args": {"exclude": ["labbroken"]}}], **profile}
    return run_journaled(tmp, config, "web", registry=registry(hosts), **profile)


def intents(events: list[JournalEvent], node: str, step: str) -> list[JournalEvent]:
    return [e for e in events if e.kind is EventKind.INTENT and e.node == node and e.step == step]


def node(outcome: RunOutcome, name: str) -> Any:
    assert outcome.report is not None
    return next(n for n in outcome.report.nodes if n.name == name)


REFUSALS = [
    pytest.param(
        changed_host_key, ErrorId.HOST_KEY_REJECTED, "`cau hosts trust web n2 --replace`", id="host-key"
    ),
    pytest.param(refused_login, ErrorId.LOGIN_REFUSED, "the node's authorized_keys", id="login"),
]


@pytest.mark.parametrize(("refuse", "error_id", "remedy"), REFUSALS)
def test_a_node_that_refuses_cau_after_its_restart_fails_at_once(
    tmp_path: Path, refuse: Callable[[SshTarget], CauError], error_id: ErrorId, remedy: str
) -> None:
    hosts = DebianHosts(["n1", "n2", "n3"])
    error = refuse(target("n2", 2))  # what SshTransport raises when it reconnects
    hosts.refuse["n2"] = error
    outcome, events = run(tmp_path, hosts, node_order=["n2"], max_failed_nodes=0, max_retries_per_node=3)
    assert outcome.state is RunState.FINISHED  # a node failure, not a pause
    assert not any(e.kind is EventKind.RUN_PAUSED for e in events)
    n2 = node(outcome, "n2")
    assert n2.status == "Failed" and n2.error_id == error_id
    assert error.hint and remedy in error.hint and error.hint in n2.message
    assert len(intents(events, "n2", "restart")) == 1  # one restart, no retries
    restart = next(s for s in n2.steps if s.step == "restart")
    assert restart.finished is not None
    assert (restart.finished - restart.started).total_seconds() < 60  # not the reboot timeout (15 min)
    # no reconnect loop: two probes while it was down, the one refused, and one that decides it
    # stays in maintenance
    commands = hosts.transports.commands("n2")
    assert commands[commands.index(REBOOT) + 1 :] == [BOOT_ID] * 4
    # cau does not take a node it cannot trust out of maintenance: an operator looks at it first
    assert n2.left_in_maintenance and "n2" in hosts.marker
    # the failure budget (0) stops the run: the other nodes are not started
    assert outcome.report is not None
    assert outcome.report.status == "Failed" and outcome.report.error_id == "MaxFailedNodesExceeded"
    assert {n.name: n.status for n in outcome.report.nodes if n.name != "n2"} == {
        "n1": "Canceled",
        "n3": "Canceled",
    }


def test_a_refusal_met_while_observing_the_cluster_pauses_the_run_with_its_reason(tmp_path: Path) -> None:
    """Within the failure budget the run goes on, but discovery reaches every node: cau cannot
    count the cluster while one node refuses it. The run pauses, saying why and what to do;
    once the key is recorded, `cau run` resumes it."""
    hosts = DebianHosts(["n1", "n2", "n3", "n4", "n5"])
    error = changed_host_key(target("n2", 2))
    hosts.refuse["n2"] = error
    paused, events = run(tmp_path, hosts, node_order=["n2"], max_failed_nodes=1)
    assert paused.state is RunState.PAUSED and paused.error_id == ErrorId.HOST_KEY_REJECTED
    assert ErrorId.HOST_KEY_REJECTED in PAUSE_REASONS
    assert paused.message is not None and error.hint is not None and error.hint in paused.message
    pause = next(e for e in events if e.kind is EventKind.RUN_PAUSED)
    assert pause.data["error_id"] == "HostKeyRejected" and pause.data["traceback"] == ""  # no bug
    finished = [e for e in events if e.kind is EventKind.NODE_FINISHED]
    assert [(e.node, e.data["error_id"]) for e in finished] == [("n2", "HostKeyRejected")]
    del hosts.refuse["n2"]  # `cau hosts trust web n2 --replace`
    resumed, _ = run(tmp_path, hosts, node_order=["n2"], max_failed_nodes=1)
    assert resumed.run_id == paused.run_id and resumed.state is RunState.FINISHED
    assert resumed.report is not None
    assert {n.name: (n.status, n.error_id) for n in resumed.report.nodes} == {
        "n1": ("Succeeded", None),
        "n2": ("Failed", "HostKeyRejected"),
        "n3": ("Succeeded", None),
        "n4": ("Succeeded", None),
        "n5": ("Succeeded", None),
    }


def test_output_a_plugin_cannot_read_fails_the_node_once_without_pausing(tmp_path: Path) -> None:
    hosts = DebianHosts(["n1", "n2", "n3"])
    hosts.garbled["n2"] = DPKG_QUERY  # dpkg-query of the installed versions answers what apt cannot read
    outcome, events = run(tmp_path, hosts, node_order=["n2"], max_failed_nodes=1, max_retries_per_node=3)
    assert outcome.state is RunState.FINISHED
    assert not any(e.kind is EventKind.RUN_PAUSED for e in events)
    n2 = node(outcome, "n2")
    assert n2.status == "Failed" and n2.error_id == ErrorId.PLUGIN_FAILED
    assert "apt: unexpected output of dpkg-query on n2: " in n2.message
    assert len(intents(events, "n2", "install")) == 1  # not retried in another pass
    assert not intents(events, "n2", "restart")
    assert not n2.left_in_maintenance and "n2" not in hosts.marker  # back in service
    assert outcome.report is not None
    assert {n.name: n.status for n in outcome.report.nodes if n.name != "n2"} == {
        "n1": "Succeeded",
        "n3": "Succeeded",
    }


PLUGIN_ARGS = {
    "apt": {},
    "dnf": {},
    "command": {"scan": "list-updates", "install": "install-update $update$"},
    "hotfix": {"root": "/srv/hotfix", "location": "node"},
}


@pytest.mark.parametrize("name", sorted(PLUGIN_ARGS))
def test_a_plugin_lets_a_node_refusing_cau_through_as_it_is(name: str, tmp_path: Path) -> None:
    """Not wrapped in a PluginError, which is worth retrying: the engine decides by its class."""
    error = changed_host_key(target("n2", 2))
    transport = ScriptedTransport(Rules({"": error}))
    plugin = Registry.discover().plugin(name)
    ctx = PluginContext("run-1", "web", VirtualClock(), tmp_path)
    made = plugin().create_updater(
        Session("n2", transport), plugin.Args.model_validate(PLUGIN_ARGS[name]), ctx
    )
    with pytest.raises(HostKeyError) as caught:
        run_virtual(made.scan())
    assert caught.value is error and transport.commands


def test_a_maintenance_hook_host_refusing_cau_is_not_a_maintenance_error_to_retry() -> None:
    error = changed_host_key(target("lb", 9))
    hosts = ScriptedCluster({"n1": Rules({BOOT_ID: "n1-boot-1\n"}), "lb": Rules({"": error})})
    options = SshOptions.model_validate(
        {
            "nodes": [{"name": "n1", "host": "192.0.2.1"}],
            "known_hosts": KNOWN_HOSTS,
            "maintenance": {"run_on": "lb", "status": None},
            "hook_hosts": {"lb": {"host": "192.0.2.9"}},
        }
    )
    provider = SshProvider.create(
        options, ProviderContext("web", VirtualClock(), Path("/nonexistent"), transports=hosts)
    )
    prior = MaintenancePrior("n1", was_in_maintenance=False)
    with pytest.raises(HostKeyError) as caught:
        run_virtual(provider.enter_maintenance("n1", MoveMethod.LIVE, prior))
    assert caught.value is error and hosts.commands("lb")


def test_a_scan_that_meets_a_refusing_node_says_how_to_fix_it() -> None:
    """`cau scan` reports the node's error with its remedy (the command that records the key)."""
    error = changed_host_key(target("n2", 2))

    class Refusing:
        async def scan(self) -> Any:
            raise error

    async def updater(_name: str) -> Any:
        return Refusing()

    found = run_virtual(scan_plugins(["apt"], updater, serially=False, stop_on_failure=False))
    assert "CHANGED" in found.errors["apt"]
    assert "cau hosts trust web n2 --replace" in found.errors["apt"]
