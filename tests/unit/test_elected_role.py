"""Self-updating mode on a cluster without a resource manager (the `ssh` provider), in virtual
time on scripted Debian hosts: a daemon per node, the one whose pass takes the cluster's lock in
the store leads (no election of cau's own), and the leader steps aside before its own node."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from cau.clock import run_virtual
from cau.domain.results import Status
from cau.errors import PreflightError
from cau.selfupdating import NODE_PLUGINS_COMMAND, Pass, PassResult
from cau.service import Service
from tests.support import installs, service
from tests.unit.test_refused_nodes import DebianHosts, registry, ssh_cluster

NODES = ["n1", "n2", "n3"]


def same_cau(svc: Service, hosts: DebianHosts, nodes: list[str]) -> str:
    """The nodes' `cau plugins --output json` says what this machine's says."""
    mine = json.dumps([v.model_dump(mode="json") for v in svc.plugins()])
    for n in nodes:
        hosts.debian[n].answer(NODE_PLUGINS_COMMAND, mine)
    return mine


async def _round(svc: Service, nodes: list[str]) -> list[tuple[str, Pass]]:
    """One pass of every node's daemon, in turn (what three daemons polling do); a daemon that
    just stepped aside polls again at once (and must not take the run back)."""
    out = []
    for n in nodes:
        out.append((n, await svc.roles.coordinator_pass("web", n)))
        if out[-1][1].result is PassResult.HANDED_OVER:
            out.append((n, await svc.roles.coordinator_pass("web", n)))
    return out


def test_the_daemons_of_the_nodes_elect_one_leader_which_steps_aside_before_its_own_node(
    tmp_path: Path,
) -> None:
    hosts = DebianHosts(NODES)
    config = ssh_cluster(tmp_path, NODES)
    profile_args = {"plugins": [{"name": "apt", "args": {"exclude": ["labbroken"]}}]}

    async def main() -> None:
        svc = service(tmp_path / "home", config, registry(hosts))
        try:
            same_cau(svc, hosts, NODES)
            view = await svc.roles.add("web", profile=None, options=profile_args, enabled=True, by="ops")
            assert view.owner is None and view.elected  # nobody leads until a run is due
            # Nothing asked for: every daemon's pass does nothing, and takes no lock.
            assert {p.result for _, p in await _round(svc, NODES)} == {PassResult.IDLE}
            assert await svc.store.get_lock("web") is None

            await svc.roles.request_update("web", by="ops")
            passes: list[tuple[str, Pass]] = []
            for _ in range(6):
                passes += await _round(svc, NODES)
                if any(p.result is PassResult.FINISHED for _, p in passes):
                    break
                await asyncio.sleep(5)
            finished = [p for _, p in passes if p.result is PassResult.FINISHED]
            assert len(finished) == 1, passes  # exactly one run, finished by one leader
            outcome = finished[0].outcome
            assert outcome is not None and outcome.status is Status.SUCCEEDED, outcome
            assert outcome.report is not None
            handovers = [n for n, p in passes if p.result is PassResult.HANDED_OVER]
            assert handovers, passes  # each leader stepped aside before its own node
            # Every coordinator ran on a node the run was not updating at the time, and the
            # journal names each one's node.
            nodes_of = [c.node for c in outcome.report.coordinators]
            assert set(nodes_of) <= set(NODES) and len(nodes_of) == len(handovers) + 1
            # A daemon that stepped aside does not lead again until its own node is updated.
            for (node, step), (again_node, again) in itertools.pairwise(passes):
                if step.result is PassResult.HANDED_OVER:
                    assert again_node == node and again.result is PassResult.NOT_OWNER
                    assert f"{node} stepped aside for its own update" in again.message
            done = installs(await svc.store.events(outcome.run_id))
            assert len(done) == len(set(done)) and {n for n, _ in done} == set(NODES)
            assert all(n.status == Status.SUCCEEDED.value for n in outcome.report.nodes)
            assert not hosts.marker  # no node left in maintenance
        finally:
            svc.close()

    run_virtual(main())


def test_a_node_with_another_cau_or_other_plug_ins_is_named_and_the_role_refused(tmp_path: Path) -> None:
    """A coordinator elected on a node running another cau would run another run: refused."""
    hosts = DebianHosts(NODES)
    config = ssh_cluster(tmp_path, NODES)

    async def main() -> None:
        svc = service(tmp_path / "home", config, registry(hosts))
        try:
            mine = json.loads(same_cau(svc, hosts, NODES))
            older = [dict(v, version="0.0.9") if v["name"] == "apt" else v for v in mine]
            hosts.debian["n3"].answer(NODE_PLUGINS_COMMAND, json.dumps(older))
            with pytest.raises(PreflightError) as refused:
                await svc.roles.add("web", profile=None, options={}, enabled=True, by="ops")
            message = refused.value.message
            assert "cau and its plug-ins are the same on every node that may lead" in message
            assert "n3: lacks apt 0.1.0, has apt 0.0.9" in message and "n1:" not in message
            assert await svc.store.get_role("web") is None  # nothing changed
        finally:
            svc.close()

    run_virtual(main())
