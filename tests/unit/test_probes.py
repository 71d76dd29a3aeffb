"""Availability probes: configuration, checks against real loopback servers, the outage arithmetic,
the monotonic grid, and redaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cau.clock import run_virtual
from cau.config import load_config
from cau.errors import ConfigError
from cau.journal.events import ProbeEvent, ProbeSummary, ProbeUp
from cau.probes import ProbeMonitor, ProbeSpec
from cau.probes.check import Checker, CheckResult
from cau.probes.stats import ProbeStats
from tests.probe_servers import HttpServer, TcpServer, free_port

T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


# --- configuration ---------------------------------------------------------------------------------


def write_config(tmp_path: Path, probe: str) -> Path:
    path = tmp_path / "clusters.toml"
    path.write_text('[clusters.web]\nprovider = "sandbox"\n[[clusters.web.probes]]\n' + probe)
    return path


def test_probe_config_loads_with_defaults(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        'role = "web"\ntargets = ["http://10.77.0.100/", "tcp://10.77.0.100:5432"]\ninterval = "50ms"\n',
    )
    probe = load_config(path).cluster("web").probes[0]
    assert probe.role == "web" and probe.interval_seconds == 0.05
    assert probe.timeout_seconds == 1.0  # max(1s, interval)
    slow = ProbeSpec(role="db", targets=["tcp://db:5432"], interval="5s")
    assert slow.timeout_seconds == 5.0


W = 'role = "web"\n'


@pytest.mark.parametrize(
    ("probe", "key", "words"),
    [
        (W + 'targets = ["ftp://h/"]\n', "probes.0.targets", "http://, https:// or tcp://"),
        (W + "targets = []\n", "probes.0.targets", "at least 1"),
        (W + 'targets = ["tcp://h"]\n', "probes.0.targets", "tcp://host:port"),
        (W + 'targets = ["http://h/"]\ninterval = "0s"\n', "probes.0.interval", "10ms"),
        (W + 'targets = ["http://h/"]\ninterval = "5ms"\n', "probes.0.interval", "10ms"),
        (W + 'targets = ["http://h/"]\nintervall = "1s"\n', "probes.0.intervall", "unknown key"),
        ('targets = ["http://h/"]\n', "probes.0.role", "required"),
    ],
)
def test_bad_probe_config_is_refused_naming_the_key(tmp_path: Path, probe: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, probe))
    key = "clusters.web." + key
    assert key in str(err.value) and words in str(err.value), str(err.value)


def test_a_password_in_a_target_is_never_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, 'role = "web"\ntargets = ["ftp://admin:hunter2@h/"]\n'))
    assert "hunter2" not in str(err.value)
    spec = ProbeSpec(role="web", targets=["http://admin:hunter2@127.0.0.1:1/", "https://t0ken@h/x"])
    assert spec.shown_targets == ["http://***@127.0.0.1:1/", "https://***@h/x"]


# --- outages, in send order ----------------------------------------------------------------------


def test_an_outage_runs_from_the_first_failed_check_to_the_next_answer() -> None:
    stats = ProbeStats()
    ok, refused = CheckResult(True, 0.001), CheckResult(False, 0.001, "connection refused")
    assert stats.record(at(0), ok) is None
    down = stats.record(at(50), refused)
    assert down is not None and down.kind == "down"
    assert stats.record(at(100), CheckResult(False, 0.001, "HTTP 503")) is None  # still the same outage
    up = stats.record(at(150), ok)
    assert up is not None and up.kind == "up"
    assert up.outage.seconds == pytest.approx(0.1)
    assert up.outage.failed_checks == 2 and up.outage.error_list() == ["connection refused", "HTTP 503"]
    # one failed check of a 50 ms probe is 50 ms of downtime
    stats.record(at(200), refused)
    single = stats.record(at(250), ok)
    assert single is not None and single.outage.seconds == pytest.approx(0.05)
    assert (stats.sent, stats.ok, stats.failed, stats.late) == (6, 3, 3, 0)
    assert len(stats.outages) == 2 and stats.current is None


def test_response_time_percentiles() -> None:
    stats = ProbeStats()
    for i in range(1, 101):
        stats.record(at(i), CheckResult(True, i / 1000))  # 1..100 ms
    summary = stats.summary()
    assert summary["p50_ms"] == pytest.approx(50, rel=0.03)
    assert summary["p99_ms"] == pytest.approx(99, rel=0.03)
    assert summary["max_ms"] == pytest.approx(100)


# --- checks against real servers -----------------------------------------------------------------


def check(spec: ProbeSpec) -> CheckResult:
    async def main() -> CheckResult:
        checker = Checker(spec)
        try:
            return await checker.check()
        finally:
            await checker.close()

    return asyncio.run(main())


def test_http_and_tcp_checks() -> None:
    tcp = TcpServer()
    try:
        with HttpServer() as web, HttpServer(status=503) as broken, HttpServer(status=302) as moved:
            assert check(ProbeSpec(role="r", targets=[web.url])).ok
            assert check(ProbeSpec(role="r", targets=[moved.url])).ok  # 3xx is an answer
            result = check(ProbeSpec(role="r", targets=[broken.url]))
            assert not result.ok and result.error == "HTTP 503" and not result.late
            assert check(ProbeSpec(role="r", targets=[f"tcp://127.0.0.1:{tcp.port}"])).ok
        refused = check(ProbeSpec(role="r", targets=[f"tcp://127.0.0.1:{free_port()}"]))
        assert not refused.ok and refused.error == "connection refused"
        refused = check(ProbeSpec(role="r", targets=[f"http://127.0.0.1:{free_port()}/"]))
        assert not refused.ok and refused.error == "connection refused"
    finally:
        tcp.close()


def test_any_of_several_targets() -> None:
    dead = f"http://127.0.0.1:{free_port()}/"
    with HttpServer() as web:
        assert check(ProbeSpec(role="r", targets=[dead, web.url])).ok
    both = check(ProbeSpec(role="r", targets=[dead, f"tcp://127.0.0.1:{free_port()}"]))
    assert not both.ok
    assert f"{dead}: connection refused" in both.error and "tcp://127.0.0.1:" in both.error


def test_an_answer_later_than_the_timeout_is_late_and_failed() -> None:
    with HttpServer(delay=0.6) as slow:
        result = check(ProbeSpec(role="r", targets=[slow.url], timeout="200ms"))
    assert not result.ok and result.late and result.error == "timeout after 200ms"


def test_every_check_opens_a_new_connection() -> None:
    """A floating address that moved must be seen: no keep-alive between checks."""
    with HttpServer() as web:

        async def main() -> None:
            checker = Checker(ProbeSpec(role="r", targets=[web.url]))
            try:
                for _ in range(3):
                    assert (await checker.check()).ok
                    web.stop()  # the listening socket closes: a kept connection would still answer
                    assert not (await checker.check()).ok
                    web.start()
            finally:
                await checker.close()

        asyncio.run(main())


def test_errors_never_show_user_info() -> None:
    port = free_port()
    spec = ProbeSpec(role="r", targets=[f"http://admin:hunter2@127.0.0.1:{port}/", f"tcp://127.0.0.1:{port}"])
    result = check(spec)
    assert not result.ok and "hunter2" not in result.error and "admin" not in result.error
    assert "http://***@127.0.0.1" in result.error
    # a token as user name, in an error text that would echo it
    checker = Checker(ProbeSpec(role="r", targets=["https://s3cr3tt0k3n@h.example/"]))
    assert checker._scrub("bad URL https://s3cr3tt0k3n@h.example/") == "bad URL https://***@h.example/"


def test_a_hanging_server_does_not_stop_the_checks() -> None:
    """A server that accepts and never answers: every check is late, and checks keep starting."""
    with HttpServer(delay=30) as hanging:
        spec = ProbeSpec(role="r", targets=[hanging.url], interval="20ms", timeout="200ms")
        events: list[ProbeEvent] = []

        async def main() -> ProbeMonitor:
            monitor = ProbeMonitor([spec], summary_seconds=3600)
            await monitor.start(events.append)
            await asyncio.sleep(1.0)
            await monitor.stop()
            return monitor

        monitor = asyncio.run(main())
    stats = monitor.stats("r")
    assert stats.ok == 0 and stats.late == stats.failed == stats.sent and stats.sent >= 10
    assert [e.kind for e in events] == ["probe_down", "probe_summary"]
    final = events[-1]
    assert isinstance(final, ProbeSummary) and final.final and final.down is not None
    assert final.down.errors[0].startswith("timeout after 200ms")


# --- the monitor ---------------------------------------------------------------------------------


class FakeChecker:
    """Answers after a programmed delay (virtual time); check k hangs when k is in `hang`."""

    def __init__(self, spec: ProbeSpec, hang: set[int], fail: set[int]) -> None:
        self.spec, self.hang, self.fail = spec, hang, fail
        self.sent: list[float] = []

    async def check(self) -> CheckResult:
        k = len(self.sent)
        self.sent.append(asyncio.get_running_loop().time())
        if k in self.hang:
            await asyncio.sleep(self.spec.timeout_seconds)
            return CheckResult(False, self.spec.timeout_seconds, "timeout after 1s", late=True)
        await asyncio.sleep(0.002)
        return CheckResult(k not in self.fail, 0.002, "" if k not in self.fail else "connection refused")

    async def close(self) -> None:
        pass


def test_the_grid_keeps_its_beat_with_a_hanging_target() -> None:
    """Check k starts at k * interval even while earlier checks hang; results fold in send order."""
    spec = ProbeSpec(role="web", targets=["http://h/"], interval="50ms", timeout="1s")
    events: list[ProbeEvent] = []

    async def main() -> FakeChecker:
        loop = asyncio.get_running_loop()
        monitor = ProbeMonitor([spec], now=lambda: T0 + timedelta(seconds=loop.time()), summary_seconds=3600)
        fake = FakeChecker(spec, hang={2, 3}, fail={4})
        monitor._probes[0].checker = fake  # type: ignore[assignment]
        await monitor.start(events.append)
        await asyncio.sleep(2.0 + 1e-6)
        await monitor.stop()
        return fake

    fake = run_virtual(main())
    start = fake.sent[0]
    offsets = [round(t - start, 6) for t in fake.sent]
    assert offsets == [round(k * 0.05, 6) for k in range(len(offsets))]  # no drift, no gap
    assert len(offsets) == 41
    kinds = [e.kind for e in events]
    assert kinds == ["probe_down", "probe_up", "probe_summary", "probe_summary"]
    up, first, summary = events[1], events[2], events[3]
    assert isinstance(up, ProbeUp) and isinstance(first, ProbeSummary) and isinstance(summary, ProbeSummary)
    # checks 2, 3 (late) and 4 (refused) are one outage: from check 2's send to check 5's
    assert up.failed_checks == 3 and up.late_checks == 2
    assert up.seconds == pytest.approx(0.15)
    assert not first.final and first.failed == 3
    assert summary.final and summary.sent == summary.ok + summary.failed
    assert summary.late == 2 and summary.failed == 3 and summary.probe == "web"


def test_monitor_against_a_real_server_taken_down_and_up() -> None:
    events: list[ProbeEvent] = []
    with HttpServer() as web:
        spec = ProbeSpec(role="web", targets=[web.url], interval="20ms")

        async def main() -> Any:
            monitor = ProbeMonitor([spec], summary_seconds=0.1)
            await monitor.start(events.append)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(web.stop)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(web.start)
            await asyncio.sleep(0.3)
            await monitor.stop()
            return monitor.stats("web")

        stats = asyncio.run(main())
    ups = [e for e in events if isinstance(e, ProbeUp)]
    assert len(ups) == 1 and any(e.startswith("connection refused") for e in ups[0].errors)
    assert ups[0].failed_checks >= 2
    assert stats.failed >= 2 and stats.ok >= 5 and stats.sent == stats.ok + stats.failed
    summaries = [e for e in events if isinstance(e, ProbeSummary)]
    assert len(summaries) >= 2 and summaries[-1].final and not summaries[0].final
    assert all(e.session == events[0].session for e in events)
