"""An HTTP probe loop for the lab tests: from the root namespace (where cau runs), a GET every
`interval` seconds on a new connection, each result recorded. It measures what a user of the
service sees while the cluster moves it.

    with ProbeLoop("http://10.77.201.101/") as probe:
        ...move the resource...
    assert probe.failed == []
    print(probe.longest_outage())
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Probe:
    at: float  # time.monotonic() when sent
    ok: bool
    body: str  # the response body, or the error
    latency: float


class ProbeLoop:
    def __init__(self, url: str, interval: float = 0.05, timeout: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.results: list[Probe] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> Probe:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as resp:
                body = resp.read().decode(errors="replace").strip()
                ok = resp.status == 200
        except (OSError, urllib.error.URLError) as exc:  # refused, reset, timed out
            body, ok = f"{type(exc).__name__}: {exc}", False
        return Probe(started, ok, body, time.monotonic() - started)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.results.append(self._once())
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> ProbeLoop:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def failed(self) -> list[Probe]:
        return [p for p in self.results if not p.ok]

    @property
    def answered(self) -> list[Probe]:
        return [p for p in self.results if p.ok]

    def longest_outage(self) -> float:
        """Seconds from the last answered probe before a run of failures to the first answered
        one after it (0.0 with no failure): the interruption a user saw."""
        longest = 0.0
        last_ok: float | None = None
        failing = False
        for p in self.results:
            if p.ok:
                if failing and last_ok is not None:
                    longest = max(longest, p.at - last_ok)
                last_ok, failing = p.at, False
            else:
                failing = True
        if failing and self.results:  # still failing at the end: until the last probe
            start = last_ok if last_ok is not None else self.results[0].at
            longest = max(longest, self.results[-1].at + self.results[-1].latency - start)
        return longest

    def summary(self) -> str:
        return (
            f"{len(self.results)} probes every {self.interval * 1000:.0f} ms, {len(self.failed)} failed, "
            f"longest outage {self.longest_outage():.3f} s"
        )
