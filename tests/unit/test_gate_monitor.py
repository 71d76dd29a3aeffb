"""Health gates' waits in virtual time (cau.gates.monitor): stable_for, timeout, interval, the
return phase that never trusts an answer from before, the watch; and Prometheus answers judged
(cau.gates.check)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from cau.clock import VirtualClock, run_virtual
from cau.domain.gates import CommandGate, GateSpec, ProbeGate, PrometheusGate
from cau.gates.check import Answer, GateChecks, prometheus_answer
from cau.gates.monitor import GateMonitor, GateTimeout
from cau.journal.events import EventPayload, GateChanged, GateWait
from cau.probes.spec import ProbeSpec
from cau.sandbox.provider import SandboxProvider


def prom(name: str = "storage", **kw: Any) -> PrometheusGate:
    base: dict[str, Any] = {"name": name, "url": "http://prom:9090", "query": "x", "interval": "10s"}
    return PrometheusGate.model_validate({**base, **kw})


class Scripted:
    """A gate's answers as a function of virtual time (seconds since the start)."""

    def __init__(self, clock: VirtualClock, green: Callable[[float, str | None], bool]) -> None:
        self.clock = clock
        self.green = green
        self.calls: list[tuple[float, str, str | None]] = []

    async def __call__(self, gate: GateSpec, node: str | None) -> Answer:
        t = self.clock.monotonic()
        self.calls.append((t, gate.name, node))
        ok = self.green(t, node)
        return Answer(ok, "ok" if ok else f"rebuilding at t={t:g}")


def monitor(
    gates: list[GateSpec], green: Callable[[float, str | None], bool]
) -> tuple[GateMonitor, Scripted, list[tuple[float, str | None, EventPayload]], VirtualClock]:
    clock = VirtualClock()
    scripted = Scripted(clock, green)
    notes: list[tuple[float, str | None, EventPayload]] = []
    mon = GateMonitor(gates, scripted, clock, lambda p, n: notes.append((clock.monotonic(), n, p)))
    return mon, scripted, notes, clock


def test_a_red_gate_holds_until_green_for_stable_for() -> None:
    gate = prom(stable_for="60s", timeout="30m")
    mon, scripted, notes, clock = monitor([gate], lambda t, _n: t >= 95)

    async def main() -> float:
        await mon.wait("n1", "return")
        return clock.monotonic()

    passed = run_virtual(main())
    # red at 0..90 (checked every 10 s), first seen green at 100, stable from 160
    assert passed == pytest.approx(160)
    changes = [(t, p.state) for t, _n, p in notes if isinstance(p, GateChanged)]
    assert changes == [(0, "red"), (pytest.approx(100), "green")]
    (wait,) = [p for _t, n, p in notes if isinstance(p, GateWait)]
    assert (wait.phase, wait.outcome, wait.gates) == ("return", "passed", ["storage"])
    assert wait.seconds == pytest.approx(160)
    # checked every interval while waiting, not more often
    times = [t for t, _g, _n in scripted.calls]
    assert all(b - a >= 10 - 1e-6 for a, b in itertools.pairwise(times))
    assert len(times) <= 18


def test_a_red_in_between_starts_the_streak_again() -> None:
    gate = prom(stable_for="30s", interval="5s")
    mon, _s, notes, clock = monitor([gate], lambda t, _n: not (t < 3 or 12 <= t < 17))

    async def main() -> float:
        await mon.wait("n1", "admission")
        return clock.monotonic()

    # red at 0; green at 5, 10; red at 15; green again from 20: stable at 50
    assert run_virtual(main()) == pytest.approx(50)
    states = [p.state for _t, _n, p in notes if isinstance(p, GateChanged)]
    assert states == ["red", "green", "red", "green"]


def test_past_its_timeout_the_wait_raises_with_the_gate_and_its_last_answer() -> None:
    gate = prom(name="replica-lag", timeout="2m", stable_for="10s")
    mon, _s, notes, clock = monitor([gate], lambda _t, _n: False)

    async def main() -> GateTimeout:
        with pytest.raises(GateTimeout) as info:
            await mon.wait("n2", "admission")
        assert clock.monotonic() == pytest.approx(120)
        return info.value

    exc = run_virtual(main())
    assert exc.gate == "replica-lag" and exc.node == "n2"
    assert "rebuilding at t=120" in exc.answer and "rebuilding at t=120" in str(exc)
    assert exc.pause_reason.value == "HealthGateTimeout"
    (wait,) = [p for _t, _n, p in notes if isinstance(p, GateWait)]
    assert wait.outcome == "timeout" and wait.answer == exc.answer


def test_green_but_not_yet_stable_at_the_timeout_says_so() -> None:
    gate = prom(timeout="1m", stable_for="50s")
    mon, _s, _notes, _clock = monitor([gate], lambda t, _n: t >= 25)

    async def main() -> str:
        with pytest.raises(GateTimeout) as info:
            await mon.wait("n1", "admission")
        return info.value.answer

    assert run_virtual(main()) == "ok (green for 30s of stable_for 50s)"


def test_after_a_return_an_earlier_green_does_not_count() -> None:
    gate = prom(stable_for="30s", interval="5s")
    mon, _s, _notes, clock = monitor([gate], lambda _t, _n: True)

    async def main() -> tuple[float, float, float]:
        await mon.wait("n1", "admission")
        first = clock.monotonic()
        await clock.sleep(100)  # green all along (the watch would say so)
        await mon.wait("n2", "admission")  # the streak is old enough: no wait
        second = clock.monotonic()
        await mon.wait("n2", "return")  # counts from the return
        return first, second, clock.monotonic()

    first, second, returned = run_virtual(main())
    assert first == 0  # first seen green: no red to wait out
    assert second == pytest.approx(100)
    assert returned == pytest.approx(130)  # stable_for from the return


def test_per_node_gates_of_returned_nodes_hold_the_next_admission() -> None:
    gate = prom(query='node_ok{node="{node}"} == 0', interval="5s")
    # n1 is fine until 20 s, then broken until 60 s; n2 is always fine
    mon, scripted, _n, clock = monitor([gate], lambda t, node: node != "n1" or not (20 <= t < 60))

    async def main() -> float:
        await mon.wait("n1", "return")
        mon.watch_node("n1")
        await clock.sleep(25)
        await mon.wait("n2", "admission")
        return clock.monotonic()

    assert run_virtual(main()) == pytest.approx(60)
    assert {n for _t, _g, n in scripted.calls} == {"n1", "n2"}


def test_the_watch_journals_a_gate_that_turns_red_between_nodes() -> None:
    gate = prom(interval="10s")
    mon, _s, notes, clock = monitor([gate], lambda t, _n: t < 35)

    async def main() -> None:
        import asyncio

        task = asyncio.ensure_future(mon.watch())
        await clock.sleep(100)
        task.cancel()

    run_virtual(main())
    changes = [(t, p.state) for t, _n, p in notes if isinstance(p, GateChanged)]
    assert changes == [(0, "green"), (pytest.approx(40), "red")]


def test_no_gates_no_wait() -> None:
    mon, scripted, notes, clock = monitor([], lambda _t, _n: False)

    async def main() -> float:
        await mon.wait("n1", "return")
        return clock.monotonic()

    assert run_virtual(main()) == 0 and not scripted.calls and not notes


# --- Prometheus answers ---------------------------------------------------------------------------


def vector(*values: str) -> dict[str, Any]:
    result = [{"metric": {"node": f"n{i}"}, "value": [1.0, v]} for i, v in enumerate(values)]
    return {"status": "success", "data": {"resultType": "vector", "result": result}}


@pytest.mark.parametrize(
    ("body", "expect", "green"),
    [
        (vector(), "empty", True),
        (vector("0"), "empty", False),  # a series is something wrong, whatever its value
        (vector("1", "2"), "nonzero", True),
        (vector("1", "0"), "nonzero", False),
        (vector("NaN"), "nonzero", False),
        (vector(), "nonzero", False),  # no data is not green
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "1"]}}, "nonzero", True),
        ({"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0"]}}, "nonzero", False),
        ({"status": "success", "data": {"resultType": "string", "result": [1.0, "x"]}}, "empty", False),
        ({"status": "error", "errorType": "bad_data", "error": "parse error"}, "empty", False),
    ],
)
def test_prometheus_answers(body: dict[str, Any], expect: str, green: bool) -> None:
    assert prometheus_answer(body, expect).green is green


def test_a_prometheus_check_asks_the_query_api_with_the_node_and_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=vector("0"))

    checks = GateChecks(
        provider=SandboxProvider.__new__(SandboxProvider),
        run_id="r1",
        secrets={"PROM_TOKEN": "s3cret-token-value"},
        http_transport=httpx.MockTransport(handler),
    )
    gate = prom(query='node_ok{node="{node}"} == 0', bearer_token_secret="PROM_TOKEN")

    async def main() -> Answer:
        return await checks.evaluate(gate, "n3")

    answer = run_virtual(main())
    assert not answer.green and 'node="n0"' in answer.text
    (request,) = seen
    assert request.url.path == "/api/v1/query"
    assert httpx.QueryParams(request.content.decode())["query"] == 'node_ok{node="n3"} == 0'
    assert request.headers["authorization"] == "Bearer s3cret-token-value"


def test_a_server_that_does_not_answer_is_red_not_an_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    checks = GateChecks(
        provider=SandboxProvider.__new__(SandboxProvider),
        run_id="r1",
        secrets={},
        http_transport=httpx.MockTransport(handler),
    )

    async def main() -> Answer:
        return await checks.evaluate(prom(), None)

    answer = run_virtual(main())
    assert not answer.green and "connection refused" in answer.text


def test_gate_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="stable_for"):
        prom(stable_for="10m", timeout="5m")
    with pytest.raises(ValueError, match="no user or password"):
        prom(url="http://user:pw@prom:9090")
    with pytest.raises(ValueError, match="secret's name"):
        prom(bearer_token_secret="Bearer abc")
    assert CommandGate(name="c", command="true").per_node  # on the node: per node
    assert not CommandGate(name="c", command="true", on="coordinator").per_node
    assert CommandGate(name="c", command="check {node}", on="coordinator").per_node
    assert prom().timeout == timedelta(minutes=30)


def test_a_probe_gate_is_green_while_the_role_answers_and_red_when_it_does_not() -> None:
    async def main() -> tuple[Answer, Answer, Answer]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        probe = ProbeSpec(role="web", targets=[f"tcp://127.0.0.1:{port}"], interval="100ms", timeout="1s")
        checks = GateChecks(
            provider=SandboxProvider.__new__(SandboxProvider), run_id="r1", secrets={}, probes=[probe]
        )
        gate = ProbeGate(name="web-serves", probe="web", interval="200ms")
        up = await checks.evaluate(gate, None)
        server.close()
        await server.wait_closed()
        down = await checks.evaluate(gate, None)
        unknown = await checks.evaluate(ProbeGate(name="x", probe="nothing"), None)
        return up, down, unknown

    up, down, unknown = asyncio.run(main())
    assert up.green and up.text.startswith("web answers")
    assert not down.green and "web does not answer" in down.text
    assert not unknown.green and "no probe of role nothing" in unknown.text
