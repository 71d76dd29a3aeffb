"""cau.testing, the public test kit for providers and plug-ins: what its doubles promise."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

import cau.testing
from cau.clock import run_virtual
from cau.errors import CommandTimeout, NodeUnreachable
from cau.ports import CommandResult, NodeSession, Transport
from cau.testing import Call, Reply, Rules, ScriptedCluster, ScriptedTransport, Session, UnexpectedCommand


def test_the_public_names() -> None:
    assert sorted(cau.testing.__all__) == [
        "Answer",
        "Call",
        "Handler",
        "NodeHandler",
        "Put",
        "Reply",
        "Result",
        "Rules",
        "ScriptedCluster",
        "ScriptedTransport",
        "Session",
        "UnexpectedCommand",
    ]


def test_a_scripted_transport_answers_through_its_handler_and_records_every_call() -> None:
    node = ScriptedTransport(lambda command: command.upper(), name="n1")
    transport: Transport = node  # it is a Transport
    result = run_virtual(transport.run("echo hi", timeout=5, env={"CAU_NODE": "n1"}))
    assert result == CommandResult("echo hi", 0, "ECHO HI", "")
    assert node.commands == ["echo hi"]
    assert node.calls == [Call("echo hi", 5, {"CAU_NODE": "n1"})]


def test_replies_command_results_and_raised_errors() -> None:
    rules = Rules(
        {
            "fail": Reply("out", 3, "err"),
            "result": CommandResult("ignored", 7, "o", "e"),
            "down": NodeUnreachable("n1 is down"),
        }
    )
    node = ScriptedTransport(rules)
    assert run_virtual(node.run("fail now")) == CommandResult("fail now", 3, "out", "err")
    assert run_virtual(node.run("result")) == CommandResult("result", 7, "o", "e")  # the command run
    with pytest.raises(NodeUnreachable, match="n1 is down"):
        run_virtual(node.run("down"))
    with pytest.raises(UnexpectedCommand, match="no rule answers 'other'"):
        run_virtual(node.run("other"))


def test_a_slow_reply_takes_its_time_and_times_out_like_a_real_transport() -> None:
    node = ScriptedTransport(Rules({"sleep": Reply("done", delay=30)}), name="n1")

    async def main() -> tuple[float, CommandResult]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        result = await node.run("sleep 30", timeout=60)
        return loop.time() - start, result

    took, result = run_virtual(main())  # virtual time: no real wait
    assert took == pytest.approx(30) and result.stdout == "done"
    with pytest.raises(CommandTimeout, match=r"^'sleep 30' on n1 did not finish within 10s$"):
        run_virtual(node.run("sleep 30", timeout=10))


def test_rules_match_prefixes_and_regexes_in_order_and_sequences_repeat_their_last() -> None:
    rules = Rules(
        {
            re.compile(r"^apt-get .* upgrade$"): "simulated",
            "apt-get": ["first", "second"],
            "x": lambda command: f"handled {command}",
        }
    )
    assert [rules("apt-get -s upgrade"), rules("apt-get update"), rules("apt-get update")] == [
        "simulated",
        "first",
        "second",
    ]
    assert rules("apt-get update") == "second"  # the last answer repeats
    assert rules("x 1") == "handled x 1"


def test_on_answers_first_and_replaces_the_same_pattern() -> None:
    rules = Rules({"boot": "b1\n", "": "anything"})
    rules.on("boot", NodeUnreachable("rebooting"), "b2\n")
    with pytest.raises(NodeUnreachable):
        rules("boot id")
    assert rules("boot id") == "b2\n" and rules("uptime") == "anything"
    assert rules.on("boot", "b3\n")("boot id") == "b3\n"
    with pytest.raises(ValueError, match="at least one answer"):
        rules.on("boot")


def test_otherwise_answers_what_no_rule_does() -> None:
    rules = Rules({"a": "ruled"}, otherwise=lambda command: f"default {command}")
    assert rules("a") == "ruled" and rules("b") == "default b"


def test_puts_are_recorded_with_their_bytes_and_close_is_counted(tmp_path: Path) -> None:
    local = tmp_path / "fix.sh"
    local.write_bytes(b"#!/bin/sh\n")
    node = ScriptedTransport(Rules({"": ""}))

    async def main() -> None:
        await node.put(local, "/var/tmp/fix.sh", mode=0o700)
        local.write_bytes(b"changed later")
        await node.close()
        assert node.closed and node.closes == 1
        await node.run("true")  # a closed transport may run again, as SshTransport reconnects
        assert not node.closed

    run_virtual(main())
    (put,) = node.puts
    assert (put.local, put.remote, put.mode, put.data) == (local, "/var/tmp/fix.sh", 0o700, b"#!/bin/sh\n")


def test_a_scripted_cluster_makes_one_transport_per_name_and_logs_across_nodes() -> None:
    cluster = ScriptedCluster(lambda node, command: f"{node}: {command}")
    assert cluster("n1") is cluster("n1") and cluster("n2") is not cluster("n1")
    run_virtual(cluster("n2").run("hostname"))
    run_virtual(cluster("n1").run("uptime"))
    assert cluster.log == [("n2", "hostname"), ("n1", "uptime")]
    assert cluster.commands() == ["hostname", "uptime"] and cluster.commands("n1") == ["uptime"]
    assert run_virtual(cluster("n1").run("x")).stdout == "n1: x"


def test_a_scripted_cluster_from_a_mapping_refuses_unknown_names() -> None:
    cluster = ScriptedCluster({"n1": Rules({"": "one"})})
    assert run_virtual(cluster("n1").run("x")).stdout == "one"
    with pytest.raises(UnexpectedCommand, match="n9 is not in the script"):
        run_virtual(cluster("n9").run("x"))


def test_a_session_is_a_node_session() -> None:
    node = ScriptedTransport(Rules())
    session: NodeSession = Session("n1", node)
    assert session.node == "n1" and session.transport is node
