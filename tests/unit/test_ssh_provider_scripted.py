"""The ssh provider's own code through scripted transports (cau.testing): observation, the
maintenance hooks, restarts and the wait for a node's return, without sshd or root. (tests/ssh
runs it against a real sshd.) Waits run on virtual time."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.cluster import NodeState
from cau.domain.profile import MoveMethod
from cau.errors import CommandTimeout, MaintenanceError, NodeUnreachable, NotFound, ProviderError
from cau.ports import ProviderContext, TransportFactory
from cau.providers.ssh import SshOptions, SshProvider
from cau.testing import Reply, Rules, ScriptedCluster
from tests.contract.scripted import BOOT_ID, HOOKS, REBOOT, SshHosts

READY = "systemctl is-system-running --wait"


def provider(
    transports: TransportFactory, names: tuple[str, ...] = ("n1", "n2", "n3"), **options: Any
) -> SshProvider:
    opts = SshOptions.model_validate(
        {
            "nodes": [{"name": n, "host": f"10.0.0.1{i}"} for i, n in enumerate(names, 1)],
            "known_hosts": "/nonexistent/known_hosts",
            **options,
        }
    )
    made = SshProvider.create(
        opts, ProviderContext("web", VirtualClock(), Path("/nonexistent"), transports=transports)
    )
    assert isinstance(made, SshProvider)
    return made


def test_discover_reads_each_hosts_boot_id_and_maintenance_marker() -> None:
    hosts = SshHosts(["n1", "n2", "n3"])
    hosts.marker.add("n2")
    hosts.held.add("n3")
    snap = run_virtual(provider(hosts.transports).discover())
    assert [(n.name, n.state, n.in_maintenance, n.boot_id) for n in snap.nodes] == [
        ("n1", NodeState.UP, False, "n1-boot-1"),
        ("n2", NodeState.UP, True, "n2-boot-1"),
        ("n3", NodeState.DOWN, False, None),
    ]
    assert snap.min_online == 2 and snap.roles == ()
    assert hosts.transports.commands("n1") == [BOOT_ID, HOOKS.status]


def test_maintenance_is_the_marker_file_and_exit_leaves_a_node_cau_did_not_put_there() -> None:
    hosts = SshHosts(["n1", "n2"])
    p = provider(hosts.transports, ("n1", "n2"))

    async def main() -> None:
        prior = await p.maintenance_prior("n1")
        assert not prior.was_in_maintenance and prior.extra == {"observed": True}
        await p.enter_maintenance("n1", MoveMethod.LIVE, prior)
        assert hosts.marker == {"n1"}
        await p.exit_maintenance("n1", prior)
        assert hosts.marker == set()
        hosts.marker.add("n2")  # put there by someone else
        prior = await p.maintenance_prior("n2")
        await p.enter_maintenance("n2", MoveMethod.LIVE, prior)
        await p.exit_maintenance("n2", prior)
        assert hosts.marker == {"n2"}

    run_virtual(main())
    assert hosts.transports.commands("n1") == [HOOKS.status, HOOKS.enter, HOOKS.exit]


def lb_options() -> dict[str, Any]:
    return {
        "maintenance": {
            "run_on": "lb",
            "enter": "haproxy-drain $CAU_HOST",
            "exit": "haproxy-enable $CAU_HOST",
            "status": "haproxy-is-drained $CAU_HOST",
        },
        "hook_hosts": {"lb": {"host": "10.0.0.5"}},
    }


def test_hooks_run_on_their_hook_host_with_the_nodes_name_and_address() -> None:
    lb = Rules({"haproxy-is-drained": Reply("", 1), "haproxy-": ""})
    cluster = ScriptedCluster({"n1": Rules({BOOT_ID: "b1\n"}), "lb": lb})
    p = provider(cluster, ("n1",), **lb_options())

    async def main() -> None:
        prior = await p.maintenance_prior("n1")
        await p.enter_maintenance("n1", MoveMethod.LIVE, prior)
        await p.exit_maintenance("n1", prior)

    run_virtual(main())
    assert cluster.log == [
        ("lb", "haproxy-is-drained $CAU_HOST"),
        ("lb", "haproxy-drain $CAU_HOST"),
        ("lb", "haproxy-enable $CAU_HOST"),
    ]
    env = {"CAU_NODE": "n1", "CAU_HOST": "10.0.0.11", "CAU_CLUSTER": "web"}
    assert [(c.env, c.timeout) for c in cluster.transports["lb"].calls] == [(env, 300.0)] * 3


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Reply("", 1, "no server n1 in backend web\n"), "failed on lb (exit 1): no server n1 in backend web"),
        (NodeUnreachable("cannot reach lb"), "could not run on lb: cannot reach lb"),
    ],
)
def test_a_failing_hook_is_a_maintenance_error_saying_where(answer: Any, message: str) -> None:
    cluster = ScriptedCluster(
        {"n1": Rules({BOOT_ID: "b1\n"}), "lb": Rules({"haproxy-drain": answer, HOOKS.status: Reply("", 1)})}
    )
    p = provider(
        cluster, ("n1",), **{**lb_options(), "maintenance": {"run_on": "lb", "enter": "haproxy-drain"}}
    )
    prior = run_virtual(p.maintenance_prior("n1"))  # status: the default marker test, on lb
    with pytest.raises(MaintenanceError, match=f"^the maintenance enter hook for n1 {re.escape(message)}$"):
        run_virtual(p.enter_maintenance("n1", MoveMethod.LIVE, prior))


def test_restart_then_wait_ready_sees_the_new_boot_id() -> None:
    hosts = SshHosts(["n1"], restart_probes=3)
    p = provider(hosts.transports, ("n1",))

    async def main() -> str:
        old = await p.boot_id("n1")
        await p.restart("n1")  # the connection drops with the node
        return await p.wait_ready("n1", previous_boot_id=old, timeout=60)

    assert run_virtual(main()) == "n1-boot-2"
    node = hosts.transports.transports["n1"]
    assert node.commands == [BOOT_ID, REBOOT, BOOT_ID, BOOT_ID, BOOT_ID, BOOT_ID]
    assert node.closes >= 2  # after the restart, and before looking for the new boot


def test_wait_ready_waits_while_the_old_boot_still_answers() -> None:
    # `systemctl reboot` returns at once; sshd answers a little longer, then the host goes down
    boots = Rules({BOOT_ID: ["b1\n", "b1\n", NodeUnreachable("connection refused"), "b2\n"], REBOOT: ""})
    p = provider(ScriptedCluster({"n1": boots}), ("n1",))

    async def main() -> str:
        await p.restart("n1")
        return await p.wait_ready("n1", previous_boot_id="b1", timeout=60)

    assert run_virtual(main()) == "b2"


@pytest.mark.parametrize(
    ("answer", "restarted"),
    [
        (Reply("", -1), True),  # killed with the connection
        (Reply("", 0, delay=600), True),  # hangs until its timeout: the node went away under it
        (Reply("", 1, "Failed to reboot system via logind: Access denied\n"), False),
    ],
)
def test_what_a_reboot_command_answers(answer: Reply, restarted: bool) -> None:
    p = provider(ScriptedCluster({"n1": Rules({REBOOT: answer})}), ("n1",))
    if restarted:
        run_virtual(p.restart("n1"))
    else:
        with pytest.raises(ProviderError, match=r"^reboot_command failed on n1 \(exit 1\): Failed to reboot"):
            run_virtual(p.restart("n1"))


def test_a_node_that_never_comes_back_times_out_with_node_unreachable() -> None:
    hosts = SshHosts(["n1"])
    p = provider(hosts.transports, ("n1",))

    async def main() -> str:
        await p.restart("n1")
        hosts.held.add("n1")
        return await p.wait_ready("n1", previous_boot_id="n1-boot-1", timeout=30)

    with pytest.raises(NodeUnreachable, match=r"^n1 did not come back within 30s \(cannot reach n1: "):
        run_virtual(main())


def test_wait_ready_runs_the_ready_command_until_the_services_are_up() -> None:
    node = Rules(
        {BOOT_ID: "b2\n", READY: [Reply("starting\n", 1), NodeUnreachable("reset"), Reply("running\n")]}
    )
    p = provider(ScriptedCluster({"n1": node}), ("n1",), ready_command=READY)
    assert run_virtual(p.wait_ready("n1", previous_boot_id="b1", timeout=60)) == "b2"


def test_a_ready_command_still_waiting_at_the_deadline_is_a_node_not_back() -> None:
    # `--wait` blocks until the boot is over: past the deadline that is NodeUnreachable, as the
    # protocol says, not the command's CommandTimeout (fixed: it escaped wait_ready)
    node = Rules({BOOT_ID: "b2\n", READY: Reply("", 0, delay=3600)})
    p = provider(ScriptedCluster({"n1": node}), ("n1",), ready_command=READY)
    with pytest.raises(NodeUnreachable, match=r"^n1 did not come back within 30s \(services not ready\)$"):
        run_virtual(p.wait_ready("n1", previous_boot_id="b1", timeout=30))


def test_a_boot_id_probe_that_hangs_is_tried_again() -> None:
    # a probe slower than its 10 s limit (with a connect_timeout above it): a node not back yet
    # (fixed: its CommandTimeout escaped wait_ready)
    node = Rules({BOOT_ID: [Reply("b2\n", delay=25), "b2\n"]})
    p = provider(ScriptedCluster({"n1": node}), ("n1",), connect_timeout=30)
    assert run_virtual(p.wait_ready("n1", previous_boot_id="b1", timeout=120)) == "b2"


def test_a_failing_boot_id_command_is_a_provider_error_with_a_hint() -> None:
    p = provider(ScriptedCluster({"n1": Rules({BOOT_ID: Reply("", 1, "cat: No such file\n")})}), ("n1",))
    with pytest.raises(
        ProviderError, match=r"^boot_id_command failed on n1 \(exit 1\): cat: No such file"
    ) as caught:
        run_virtual(p.boot_id("n1"))
    assert caught.value.hint is not None and "boot_id_command" in caught.value.hint


def test_sessions_use_the_nodes_transport_and_close_closes_them_all() -> None:
    hosts = SshHosts(["n1", "n2"])
    p = provider(hosts.transports, ("n1", "n2"))

    async def main() -> None:
        session = await p.session("n2")
        assert session.node == "n2" and session.transport is hosts.transports("n2")
        assert (await session.transport.run("hostname")).stdout == "n2\n"
        await p.discover()
        await p.close()

    run_virtual(main())
    assert all(t.closed for t in hosts.transports.transports.values())
    with pytest.raises(NotFound, match="cluster 'web' has no node 'n9'"):
        p.transport("n9")


def test_scripted_transports_time_out_like_real_ones() -> None:
    hosts = SshHosts(["n1"])
    hosts.overrides.on("sleep", Reply("", 0, delay=5))
    with pytest.raises(CommandTimeout, match="did not finish within 1s"):
        run_virtual(hosts.transports("n1").run("sleep 5", timeout=1))
