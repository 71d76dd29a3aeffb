"""Health gates and Alertmanager silences in whole runs on the sandbox, in virtual time, against
scripted HTTP servers (httpx MockTransport): a Prometheus gate holds the next node until the
returned node's metric is green for stable_for; a gate that never recovers pauses the run, which
`cau run` resumes; every node's silence exists exactly while it is in maintenance, also across a
coordinator killed mid-maintenance, and `cau cleanup` expires leftovers. (The same against the
real Prometheus and Alertmanager: tests/integration/test_gates_real.py.)"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import build_profile
from cau.engine.coordinator import RunOutcome
from cau.journal.events import EventKind, JournalEvent
from cau.service import Service
from tests.support import finished, spec, write_cluster

GATE = """
[[clusters.c1.health_gates]]
name = "node-ok"
kind = "prometheus"
url = "http://prom:9090"
query = 'node_ok{{node="{{node}}"}} == 0'
interval = "10s"
stable_for = "60s"
timeout = "{timeout}"
bearer_token_secret = "PROM_TOKEN"
[clusters.c1.secrets]
env = ["PROM_TOKEN"]
"""
ALERTMANAGER = """
[clusters.c1.alertmanager]
url = "http://am:9093"
matchers = { instance = "{node}:9100" }
comment = "patching"
"""


@dataclass
class Backends:
    """A scripted Prometheus (node_ok per node, changed by the test) and Alertmanager."""

    bad: dict[str, float] = field(default_factory=dict)  # node -> virtual time it recovers
    now: Callable[[], float] = lambda: 0.0
    silences: dict[str, dict[str, Any]] = field(default_factory=dict)
    am_down: bool = False
    tokens: set[str] = field(default_factory=set)

    def active(self) -> dict[str, str]:
        """node -> silence id, of the silences not expired."""
        return {
            s["matchers"][0]["value"].split(":")[0]: sid
            for sid, s in self.silences.items()
            if s["status"]["state"] == "active"
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.tokens.add(request.headers.get("authorization", ""))
        if request.url.host == "prom":
            query = httpx.QueryParams(request.content.decode())["query"]
            node = query.split('node="')[1].split('"')[0]
            failing = self.now() < self.bad.get(node, -1.0)
            result = [{"metric": {"node": node}, "value": [1, "0"]}] if failing else []
            return httpx.Response(
                200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
            )
        if self.am_down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.method == "POST" and request.url.path == "/api/v2/silences":
            body = json.loads(request.content)
            sid = f"s{len(self.silences) + 1}"
            self.silences[sid] = {**body, "id": sid, "status": {"state": "active"}}
            return httpx.Response(200, json={"silenceID": sid})
        if request.method == "GET" and request.url.path == "/api/v2/silences":
            return httpx.Response(200, json=list(self.silences.values()))
        if request.method == "DELETE" and request.url.path.startswith("/api/v2/silence/"):
            sid = request.url.path.rsplit("/", 1)[1]
            if sid not in self.silences:
                return httpx.Response(404, text="silence not found")
            self.silences[sid]["status"] = {"state": "expired"}
            return httpx.Response(200)
        return httpx.Response(404)


def setup(tmp: Path, monkeypatch: Any, *, timeout: str = "30m", alertmanager: bool = True) -> Path:
    monkeypatch.setenv("PROM_TOKEN", "prom-token-secret-value")
    config = write_cluster(tmp, spec(3))
    with config.open("a") as f:
        f.write(GATE.format(timeout=timeout))
        if alertmanager:
            f.write(ALERTMANAGER)
    return config


def run(
    home: Path,
    config: Path,
    backends: Backends,
    *,
    hour: int = 2,
    on_event: Callable[[JournalEvent], None] | None = None,
    cancel_after: Callable[[JournalEvent], bool] | None = None,
) -> RunOutcome | None:
    async def main() -> RunOutcome | None:
        clock = VirtualClock(datetime(2026, 11, 1, hour, 0, tzinfo=UTC))
        svc = Service(home, config, clock=clock)
        svc.http_transport = httpx.MockTransport(backends.handler)
        backends.now = clock.monotonic
        me = asyncio.current_task()

        def listen(event: JournalEvent) -> None:
            if on_event is not None:
                on_event(event)
            if cancel_after is not None and cancel_after(event) and me is not None:
                me.cancel()

        try:
            return await svc.run(
                "c1", build_profile(None, {"node_order": ["n1", "n2", "n3"]}), on_event=listen
            )
        except asyncio.CancelledError:
            return None
        finally:
            svc.close()

    return run_virtual(main())


def refusal_of_a_run(home: Path, config: Path) -> str:
    """Why a run of c1 is refused before it starts (and that no run was created)."""

    async def main() -> str:
        svc = Service(home, config, clock=VirtualClock())
        try:
            await svc.run("c1", build_profile(None, {}))
        except Exception as exc:  # ConfigError
            return str(exc)
        finally:
            svc.close()
        return "started"

    message = run_virtual(main())
    svc = Service(home, config)
    try:
        assert asyncio.run(svc.store.active_run("c1")) is None
    finally:
        svc.close()
    return message


def ts(events: list[JournalEvent], pred: Callable[[JournalEvent], bool]) -> list[datetime]:
    return [e.ts for e in events if pred(e)]


def test_a_prometheus_gate_holds_the_next_node_until_the_metric_is_green_for_stable_for(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch)
    backends = Backends()
    in_maintenance: set[str] = set()
    problems: list[str] = []

    def on_event(e: JournalEvent) -> None:
        # the exporter of n1: its metric goes bad when n1 has failed back, for 300 s
        if e.kind is EventKind.OUTCOME and e.step == "failback" and e.node == "n1":
            backends.bad["n1"] = backends.now() + 300
        # silences exactly while in maintenance: from its admission (the silence's intent comes
        # right before the drain's; the next node, scanned ahead, journals in between) to its end
        if e.kind is EventKind.SILENCE and e.data["action"] == "create" and e.node:
            in_maintenance.add(e.node)
        if e.kind is EventKind.INTENT and e.step == "enter_maintenance" and e.node:
            in_maintenance.add(e.node)
            if e.node not in backends.active():
                problems.append(f"{e.node} drained without a silence")
        if e.kind is EventKind.NODE_FINISHED and e.node:
            in_maintenance.discard(e.node)
            if e.node in backends.active():
                problems.append(f"{e.node} finished with its silence")
        if set(backends.active()) - in_maintenance - {e.node}:
            problems.append(f"silence of a node not in maintenance after {e.kind} of {e.node}")

    outcome = run(tmp_path, config, backends, on_event=on_event)
    assert outcome is not None and outcome.report is not None
    assert outcome.report.status == "Succeeded"
    events = finished(tmp_path, "c1", outcome).events
    assert not problems
    assert backends.active() == {} and len(backends.silences) == 3
    assert backends.tokens == {"Bearer prom-token-secret-value", ""}  # Prometheus's token only

    green = ts(events, lambda e: e.kind is EventKind.GATE and e.node == "n1" and e.data["state"] == "green")
    red = ts(events, lambda e: e.kind is EventKind.GATE and e.node == "n1" and e.data["state"] == "red")
    (n2_drain,) = ts(
        events, lambda e: e.kind is EventKind.INTENT and e.step == "enter_maintenance" and e.node == "n2"
    )
    assert len(red) == 1 and red[0] < green[-1]
    assert (n2_drain - green[-1]).total_seconds() >= 60  # green for stable_for before moving on
    assert (green[-1] - red[0]).total_seconds() >= 300 - 10
    (n1_wait,) = next(n.gate_waits for n in outcome.report.nodes if n.name == "n1")
    assert n1_wait.phase == "return" and n1_wait.outcome == "passed" and n1_wait.seconds >= 300 + 60 - 10
    # the token is nowhere in the journal
    assert "prom-token-secret-value" not in json.dumps([e.flat() for e in events])


def test_a_gate_that_never_recovers_pauses_the_run_and_cau_run_resumes_it(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch, timeout="10m")
    backends = Backends()

    def on_event(e: JournalEvent) -> None:
        if e.kind is EventKind.OUTCOME and e.step == "failback" and e.node == "n1":
            backends.bad["n1"] = float("inf")

    outcome = run(tmp_path, config, backends, on_event=on_event)
    assert outcome is not None
    assert outcome.state.value == "Paused" and outcome.error_id == "HealthGateTimeout"
    assert outcome.message is not None
    assert "node-ok" in outcome.message and 'last answer: 1 series: {node="n1"} = 0' in outcome.message
    assert backends.active() == {}  # n1 is out of maintenance: no silence while the run waits
    done = finished(tmp_path, "c1", outcome)
    assert not done.steps("n2", "enter_maintenance")
    waits = [e for e in done.events if e.kind is EventKind.GATE_WAIT]
    assert [(w.node, w.data["outcome"]) for w in waits] == [("n1", "timeout")]

    backends.bad.clear()  # recovered
    resumed = run(tmp_path, config, backends, hour=3)
    assert resumed is not None and resumed.report is not None
    assert resumed.report.status == "Succeeded"
    assert [p.error_id for p in resumed.report.pauses] == ["HealthGateTimeout"]
    assert backends.active() == {}


def test_a_silence_is_found_again_after_a_coordinator_killed_mid_maintenance(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch)
    backends = Backends()

    def crash(e: JournalEvent) -> bool:  # killed during n2's install, after its silence
        return e.kind is EventKind.INTENT and e.step == "install" and e.node == "n2"

    assert run(tmp_path, config, backends, cancel_after=crash) is None
    assert set(backends.active()) == {"n2"}  # left by the dead coordinator, n2 in maintenance

    resumed = run(tmp_path, config, backends, hour=3)
    assert resumed is not None and resumed.report is not None and resumed.report.status == "Succeeded"
    assert backends.active() == {}
    # the resumed coordinator kept n2's silence while n2 finished its maintenance, then expired it
    events = finished(tmp_path, "c1", resumed).events
    n2 = [e.data["action"] for e in events if e.kind is EventKind.SILENCE and e.node == "n2"]
    assert n2 == ["create", "created", "expire", "expired"]


def test_a_silence_created_just_before_the_crash_is_found_by_its_marker(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch)
    backends = Backends()

    def crash(e: JournalEvent) -> bool:  # the intent is journaled, the silence created, then death
        return e.kind is EventKind.SILENCE and e.data["action"] == "create" and e.node == "n1"

    assert run(tmp_path, config, backends, cancel_after=crash) is None
    # The coordinator died right after the intent; whether the POST went out or not, the resumed
    # run ends with no silence left.
    resumed = run(tmp_path, config, backends, hour=3)
    assert resumed is not None and resumed.report is not None and resumed.report.status == "Succeeded"
    assert backends.active() == {}


def test_cleanup_expires_a_leftover_silence(tmp_path: Path, monkeypatch: Any) -> None:
    config = setup(tmp_path, monkeypatch)
    backends = Backends()
    outcome = run(tmp_path, config, backends)
    assert outcome is not None and outcome.report is not None
    # a silence a coordinator lost with its journal left behind, and one that is not cau's
    backends.silences["old"] = {
        "id": "old",
        "matchers": [{"name": "instance", "value": "n2:9100"}],
        "comment": f"patching [cau run {outcome.run_id} cluster c1 node n2]",
        "createdBy": "cau",
        "status": {"state": "active"},
    }
    backends.silences["theirs"] = {
        "id": "theirs",
        "matchers": [{"name": "instance", "value": "n3:9100"}],
        "comment": "planned work",
        "createdBy": "alice",
        "status": {"state": "active"},
    }

    async def main() -> Any:
        svc = Service(tmp_path, config, clock=VirtualClock())
        svc.http_transport = httpx.MockTransport(backends.handler)
        try:
            return await svc.cleanup("c1", by="test")
        finally:
            svc.close()

    result = run_virtual(main())
    assert any("old" in line and "n2" in line for line in result.done)
    assert backends.silences["old"]["status"]["state"] == "expired"
    assert backends.silences["theirs"]["status"]["state"] == "active"


def test_an_alertmanager_that_does_not_answer_does_not_break_the_run(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch)
    backends = Backends(am_down=True)
    outcome = run(tmp_path, config, backends)
    assert outcome is not None and outcome.report is not None
    assert outcome.report.status == "Succeeded"
    assert any("Alertmanager silence of n1: create failed" in w for w in outcome.report.warnings)


def test_a_gate_naming_an_undeclared_secret_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = write_cluster(tmp_path, spec(3))
    with config.open("a") as f:
        f.write(GATE.format(timeout="5m").split("[clusters.c1.secrets]")[0])

    message = refusal_of_a_run(tmp_path, config)
    assert "node-ok" in message and "PROM_TOKEN is not a secret of the cluster" in message


def test_a_node_in_maintenance_longer_than_its_silence_keeps_one_without_a_gap(
    tmp_path: Path, monkeypatch: Any
) -> None:
    config = setup(tmp_path, monkeypatch)
    with config.open("a") as f:
        f.write('duration = "2m"\n')  # shorter than a node's maintenance (installs, a restart)
    backends = Backends()
    outcome = run(tmp_path, config, backends)
    assert outcome is not None and outcome.report is not None and outcome.report.status == "Succeeded"
    assert backends.active() == {}
    events = finished(tmp_path, "c1", outcome).events
    for node in ("n1", "n2", "n3"):
        mine = sorted(
            (
                datetime.fromisoformat(s["startsAt"]),
                datetime.fromisoformat(s["endsAt"]),
            )
            for s in backends.silences.values()
            if s["matchers"][0]["value"] == f"{node}:9100"
        )
        assert len(mine) >= 2, (node, mine)  # renewed at least once
        for (_, ends), (starts, _) in itertools.pairwise(mine):
            assert starts <= ends, (node, mine)  # the next one began before the last one ended
        left = max(e.ts for e in events if e.step == "exit_maintenance" and e.node == node)
        assert left <= mine[-1][1], (node, left, mine)  # silent until it was out of maintenance


def test_a_probe_gate_naming_no_probe_of_the_cluster_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    config = write_cluster(tmp_path, spec(3))
    with config.open("a") as f:
        f.write(
            '[[clusters.c1.probes]]\nrole = "web"\ntargets = ["tcp://127.0.0.1:9"]\n'
            '[[clusters.c1.health_gates]]\nname = "db-serves"\nkind = "probe"\nprobe = "db"\n'
        )

    message = refusal_of_a_run(tmp_path, config)
    assert "health gate db-serves: the cluster has no probe of role db" in message and "web" in message
