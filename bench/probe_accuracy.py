"""Benchmark: how exactly cau's availability probes measure an outage, and what they cost.

Accuracy: a real HTTP server on loopback is taken down (its listening socket closed: clients get
"connection refused") for a known time, 100 ms, 500 ms and 2 s, several times each, while a 50 ms
probe runs. The true downtime is measured around the socket's close and re-open (monotonic clock);
the probe's downtime is the outage it reports (from the first failed check's send time to the next
successful check's). With a 50 ms grid the error should stay within about one interval.

Cost: three 50 ms probes (two HTTP, one TCP) against a server in another process for 10 s: the
CPU time of this process (the prober only), as a share of one core.

    .venv/bin/python bench/probe_accuracy.py [--repeat 5] [--cost-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.probe_servers import HttpServer, free_port

from cau.probes import ProbeMonitor, ProbeSpec

INTERVAL = "50ms"


async def one_outage(seconds: float) -> tuple[float, float, int]:
    """(true downtime, measured downtime, failed checks) for one outage of about `seconds`."""
    server = HttpServer().start()
    monitor = ProbeMonitor(
        [ProbeSpec(role="web", targets=[server.url], interval=INTERVAL)], summary_seconds=3600
    )
    await monitor.start(lambda event: None)
    # steady state first, then a random phase against the probe's grid
    await asyncio.sleep(0.5 + random.uniform(0, 0.05))

    def outage() -> float:
        server.stop()
        down = time.monotonic()
        time.sleep(seconds)
        server.start()
        return time.monotonic() - down

    true = await asyncio.to_thread(outage)
    await asyncio.sleep(0.5)
    await monitor.stop()
    server.stop()
    stats = monitor.stats("web")
    measured = sum(o.seconds for o in stats.outages)
    return true, measured, stats.failed


async def accuracy(repeat: int) -> None:
    print(f"Accuracy of a {INTERVAL} probe (true downtime: listening socket closed -> open again)")
    header = ("target", "true (mean)", "measured (mean)", "error mean", "error max", "checks failed")
    widths = (8, 12, 16, 11, 10, 14)
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True)))
    for target in (0.1, 0.5, 2.0):
        rows = [await one_outage(target) for _ in range(repeat)]
        errors = [m - t for t, m, _ in rows]
        print(
            f"{target * 1000:>6.0f}ms {statistics.mean(t for t, _, _ in rows) * 1000:>10.1f}ms"
            f" {statistics.mean(m for _, m, _ in rows) * 1000:>14.1f}ms"
            f" {statistics.mean(errors) * 1000:>+9.1f}ms {max(errors, key=abs) * 1000:>+8.1f}ms"
            f" {statistics.mean(f for _, _, f in rows):>14.1f}"
        )


async def cost(seconds: float, kinds: tuple[str, str, str]) -> None:
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "http.server",
        "--bind",
        "127.0.0.1",
        str(port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait for the server to listen
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.05)
        target = {"http": url, "tcp": f"tcp://127.0.0.1:{port}"}
        specs = [ProbeSpec(role=f"r{i}", targets=[target[k]], interval=INTERVAL) for i, k in enumerate(kinds)]
        monitor = ProbeMonitor(specs, summary_seconds=3600)
        cpu0, wall0 = time.process_time(), time.monotonic()
        await monitor.start(lambda event: None)
        await asyncio.sleep(seconds)
        await monitor.stop()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        sent = sum(monitor.stats(p).sent for p in monitor.probe_ids)
        failed = sum(monitor.stats(p).failed for p in monitor.probe_ids)
        p99 = max(monitor.stats(p).times.percentile(99) or 0 for p in monitor.probe_ids)
        print(f"\nCost of three {INTERVAL} probes ({', '.join(kinds)}) for {wall:.1f}s:")
        print(f"  checks: {sent} ({sent / wall:.1f}/s), failed: {failed}, worst p99 response: {p99:.1f} ms")
        print(f"  CPU time of the prober: {cpu:.2f}s = {100 * cpu / wall:.1f}% of one core")
    finally:
        server.terminate()
        await server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cost-seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(accuracy(args.repeat))
    for kinds in (("http", "http", "tcp"), ("http", "http", "http"), ("tcp", "tcp", "tcp")):
        asyncio.run(cost(args.cost_seconds, kinds))


if __name__ == "__main__":
    main()
