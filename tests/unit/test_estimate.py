"""The ETA's pure parts: the duration model's fallbacks, the schedule, batches and the fit check."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cau.domain.batches import form_batches
from cau.domain.cluster import Capacity, ClusterSnapshot, Node, Role, RoleKind
from cau.domain.estimate import (
    DEFAULTS,
    Basis,
    CycleSample,
    DurationModel,
    NodeNow,
    RunPlan,
    overruns,
    plan_run,
    remaining_seconds,
)
from cau.domain.planning import run_order
from cau.domain.profile import MoveMethod, build_profile
from cau.domain.window import MaintenanceWindow
from cau.forecasting import forecast

PARTS = {"prepare": 10.0, "enter": 20.0, "install:apt": 30.0, "work": 100.0, "leave": 20.0, "after": 0.0}


def sample(node: str, run: str = "r1", **changes: float) -> CycleSample:
    return CycleSample(run_id=run, node=node, components={**PARTS, **changes})


def test_a_node_is_predicted_from_its_own_runs_then_its_class_then_the_cluster_then_defaults() -> None:
    model = DurationModel(
        [sample("a", "r2", work=200.0), sample("a", "r1", work=100.0), sample("b", "r1", work=400.0)],
        classes={"a": "big", "b": "small", "c": "small", "d": "huge"},
    )
    a = model.predict("a", ["apt"])
    assert a.basis is Basis.NODE and a.work == 150.0 + 30.0  # the median of its runs, plus apt's installs
    c = model.predict("c", ["apt"])
    assert c.basis is Basis.CLASS and c.work == 400.0 + 30.0  # b is of its class
    d = model.predict("d", ["apt"])
    assert d.basis is Basis.CLUSTER and d.work == (150.0 + 400.0) / 2 + 30.0
    # a plug-in no past run used: its installs are a rough default, and the prediction says so
    other = model.predict("a", ["apt", "hotfix"])
    assert other.basis is Basis.DEFAULT and other.work == 150.0 + 30.0 + DEFAULTS["install"]
    empty = DurationModel([]).predict("a", ["apt"])
    assert empty.basis is Basis.DEFAULT and empty.cycle == sum(
        DEFAULTS[k] for k in ("prepare", "enter", "install", "work", "leave", "after")
    )


def test_one_node_at_a_time_is_the_sum_of_the_cycles_and_batches_overlap() -> None:
    model = DurationModel([sample(n) for n in "abcd"])
    cycle = sum(PARTS.values())  # 180 s
    serial = plan_run(model, list("abcd"), ["apt"], slots=1, in_progress=1)
    assert serial.predicted_seconds == 4 * cycle
    # two at a time: the gate lets drains and failbacks through one by one, so a pair takes
    # one cycle plus one drain's and one failback's wait, not two cycles
    pairs = plan_run(model, list("abcd"), ["apt"], slots=2, in_progress=2)
    assert 2 * cycle < pairs.predicted_seconds < 3 * cycle
    # in progress beyond the slots: the next nodes scan and download while two are in maintenance
    slow_scans = DurationModel([sample(n, prepare=100.0) for n in "abcd"])
    two = plan_run(slow_scans, list("abcd"), ["apt"], slots=2, in_progress=2)
    ahead = plan_run(slow_scans, list("abcd"), ["apt"], slots=2, in_progress=4)
    assert ahead.predicted_seconds < two.predicted_seconds


def test_a_domain_order_barrier_is_in_the_schedule_and_the_live_eta() -> None:
    # four nodes of two sites, two at a time; a's cycle is longer (380 s, the others 180 s):
    # without a barrier c starts when b ends, with one c and d wait for a
    model = DurationModel([sample("a", work=300.0), *(sample(n) for n in "bcd")])
    rolling = plan_run(model, list("abcd"), ["apt"], slots=2, in_progress=2, one_gate=False)
    ranks = {"a": 0, "b": 0, "c": 1, "d": 1}
    sites = plan_run(model, list("abcd"), ["apt"], slots=2, in_progress=2, one_gate=False, domain_ranks=ranks)
    assert rolling.predicted_seconds == 180.0 + 180.0 + 180.0  # b, then c, then d (a ends at 380)
    assert sites.predicted_seconds == 380.0 + 180.0  # a, then c and d together
    assert [n.domain_rank for n in sites.nodes] == [0, 0, 1, 1]
    # live: b is done, a has just begun its work: c and d wait for a's end though a slot is free
    where = [
        NodeNow("a", "work", 0.0),
        NodeNow("b", "done"),
        NodeNow("c", "pending"),
        NodeNow("d", "pending"),
    ]
    assert remaining_seconds(sites, where) == 330.0 + 20.0 + 180.0
    assert remaining_seconds(rolling, where) == 360.0  # c now, then d; a ends meanwhile


def test_the_live_remaining_time_counts_from_where_each_node_is() -> None:
    model = DurationModel([sample(n) for n in "ab"])
    plan = plan_run(model, ["a", "b"], ["apt"], slots=1, in_progress=1)
    assert remaining_seconds(plan, [NodeNow("a", "pending"), NodeNow("b", "pending")]) == 360.0
    # a is 50 s into its 130 s of work: 80 s, its failback, then all of b
    where = [NodeNow("a", "work", 50.0), NodeNow("b", "pending")]
    assert remaining_seconds(plan, where) == 80.0 + 20.0 + 0.0 + 180.0
    assert remaining_seconds(plan, [NodeNow("a", "done"), NodeNow("b", "after")]) == 0.0
    # a run twice as slow as predicted so far: what is left is twice as long
    assert remaining_seconds(plan, [NodeNow("a", "done"), NodeNow("b", "pending")], pace=2.0) == 360.0


def test_a_serial_run_that_scans_ahead_hides_every_scan_but_the_first() -> None:
    # One node at a time, the next one scanning and staging (10 s) while the one before works:
    # only the first node's scan is on the run's path. Its turn comes when the node before is
    # done, and it takes it before any node after it starts.
    model = DurationModel([sample(n) for n in "abcd"])
    cycle = sum(PARTS.values())  # 180 s, of which 10 s prepare
    plain = plan_run(model, list("abcd"), ["apt"], slots=1, in_progress=1)
    ahead = plan_run(model, list("abcd"), ["apt"], slots=1, in_progress=1, ahead=True)
    assert plain.predicted_seconds == 4 * cycle
    assert ahead.predicted_seconds == 4 * cycle - 3 * 10.0
    assert ahead.ahead and not plain.ahead
    # live: a works, b has scanned ahead and waits for its turn, c and d have not started
    where = [
        NodeNow("a", "work", 30.0),
        NodeNow("b", "waiting", 5.0),
        NodeNow("c", "pending"),
        NodeNow("d", "pending"),
    ]
    assert remaining_seconds(ahead, where) == (130.0 - 30.0) + 20.0 + 170.0 + 170.0 + 170.0
    # the second node starts ahead with the first: its long scan runs beside the first's
    slow = DurationModel([sample(n, prepare=300.0) for n in "ab"])
    two = plan_run(slow, ["a", "b"], ["apt"], slots=1, in_progress=1, ahead=True)
    assert two.predicted_seconds == 300.0 + 170.0 + 170.0


def test_the_forecast_scans_ahead_as_the_coordinator_does() -> None:
    snap = _snapshot(4)
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def planned(**options: Any) -> bool:
        made = forecast("c", snap, build_profile(overrides=options), [], ["apt"], now)
        assert made.plan is not None
        return made.plan.ahead

    assert planned(max_parallel_nodes=1, max_failed_nodes=1)
    assert not planned(max_parallel_nodes="auto", max_failed_nodes=1)  # auto starts what it can
    assert not planned(max_parallel_nodes=1, max_failed_nodes=0)  # the budget could run out
    assert not planned(max_parallel_nodes=1, max_failed_nodes=1, pre_update_script="/bin/true")


def _snapshot(nodes: int, roles: list[Role] | None = None) -> ClusterSnapshot:
    return ClusterSnapshot(
        name="c",
        nodes=tuple(Node(f"n{i}", capacity=Capacity(16, 64)) for i in range(1, nodes + 1)),
        roles=tuple(roles or ()),
    )


def test_batches_follow_quorum_and_the_parallel_limit() -> None:
    snap = _snapshot(5)
    order = [f"n{i}" for i in range(1, 6)]
    serial = form_batches(snap, order, move=MoveMethod.LIVE, max_parallel=1, max_failed=1)
    assert [b.nodes for b in serial.batches] == [["n1"], ["n2"], ["n3"], ["n4"], ["n5"]]
    assert "max_parallel_nodes = 1" in serial.batches[0].limited_by
    # auto, a budget of 4 in progress: quorum (3 of 5 votes) lets 2 down at once
    auto = form_batches(snap, order, move=MoveMethod.LIVE, max_parallel=None, max_failed=3)
    assert [b.nodes for b in auto.batches] == [["n1", "n2"], ["n3", "n4"], ["n5"]]
    assert auto.batches[0].limited_by.startswith("quorum") and auto.typical == 2


def test_batches_follow_capacity() -> None:
    # each node runs a 5-cpu VM on 16 cpu: two nodes drained leave room for their VMs, three do not
    roles = [Role(f"vm{i}", RoleKind.LIVE, Capacity(5, 5), owner=f"n{i}") for i in range(1, 5)]
    snap = ClusterSnapshot(
        name="c",
        nodes=tuple(Node(f"n{i}", capacity=Capacity(16, 64)) for i in range(1, 5)),
        roles=tuple(roles),
        min_online=1,
    )
    forecast = form_batches(
        snap, ["n1", "n2", "n3", "n4"], move=MoveMethod.LIVE, max_parallel=None, max_failed=3
    )
    assert [b.nodes for b in forecast.batches] == [["n1", "n2"], ["n3", "n4"]]
    assert forecast.batches[0].limited_by.startswith("capacity")


def test_a_run_longer_than_stop_after_or_its_window_is_named() -> None:
    now = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)
    assert overruns(3000, now, stop_after=timedelta(hours=1), window=None) == []
    [over] = overruns(3000, now, stop_after=timedelta(minutes=30), window=None)
    assert over.limit == "stop_after" and "50m00s" in over.message and "30m00s" in over.message
    window = MaintenanceWindow.parse("daily@01:00 for 2h")  # open, closes at 03:00: 1 h left
    [late] = overruns(4000, now, stop_after=None, window=window)
    assert late.limit == "window" and late.limit_seconds == 3600 and "03:00" in late.message
    assert overruns(3000, now, stop_after=None, window=window) == []


def test_a_plan_survives_the_journal() -> None:
    plan = plan_run(DurationModel([sample("a")]), ["a"], ["apt"], slots=1, in_progress=1)
    again = RunPlan.model_validate_json(plan.model_dump_json())
    assert again == plan and again.basis is Basis.NODE and not again.rough


def test_the_forecast_forms_its_batches_as_the_run_would_with_failure_domains() -> None:
    # five nodes in three racks, quorum no limit; the profile orders the racks (b first) and lets
    # two nodes of a rack in at once: the forecast takes the run's order and limits, not defaults
    racks = {"n1": "a", "n2": "a", "n3": "b", "n4": "b", "n5": "c"}
    snap = ClusterSnapshot(
        name="c",
        nodes=tuple(Node(n, capacity=Capacity(16, 64), failure_domain=r) for n, r in racks.items()),
        min_online=1,
    )
    profile = build_profile(
        None,
        {
            "max_parallel_nodes": 3,
            "max_failed_nodes": 4,
            "domain_order": ["b", "a", "c"],
            "max_nodes_per_domain": 2,
        },
    )
    predicted = forecast("c", snap, profile, [], ["apt"], datetime(2026, 12, 3, tzinfo=UTC))
    batches = [b.nodes for b in predicted.batches]
    assert [n for b in batches for n in b] == run_order(snap, profile)
    # rack b first, both of its nodes at once; a domain_order is a barrier: each rack's nodes
    # finish before the next rack's start, though three nodes may be in progress
    assert batches == [["n3", "n4"], ["n1", "n2"], ["n5"]]
    assert predicted.batches[0].limited_by.startswith("domain-order")
