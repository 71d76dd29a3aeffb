"""A smoke check of a --vm-hosts lab, by hand:

    python -m cau_lab.vmsmoke --state-dir /var/tmp/cau-vmx [--guest guest1] [--rounds 2]

Live-migrates a guest from its start host to the next host and back (virsh over the lab's SSH,
as the libvirt provider does) while probing its HTTP every 50 ms from this machine's root
namespace (a new connection each time, 1 s timeout), and reports per migration: its duration,
the failed probes, and whether the guest kept its state (one boot id, the count rising).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from cau_lab.config import LabError
from cau_lab.control import Lab
from cau_lab.guest import GuestAnswer
from cau_lab.vmhosts import MIGRATE_DATA_URI, MIGRATE_URI, VIRSH


@dataclass
class Probe:
    """GET / every interval, recording (time, answer or None)."""

    lab: Lab
    guest: str
    interval: float = 0.05
    timeout: float = 1.0
    results: list[tuple[float, GuestAnswer | None]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer: GuestAnswer | None = self.lab.guest_answer(self.guest, timeout=self.timeout)
            except LabError:
                answer = None
            self.results.append((started, answer))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()

    def between(self, t0: float, t1: float) -> list[tuple[float, GuestAnswer | None]]:
        return [r for r in self.results if t0 <= r[0] < t1]


def migrate_over_ssh(lab: Lab, guest: str, source: str, dest: str) -> tuple[float, str]:
    address = lab.addresses[dest]
    argv = [
        *VIRSH,
        "migrate", "--live", "--persistent", "--undefinesource", guest,
        MIGRATE_URI.format(address=address), "--migrateuri", MIGRATE_DATA_URI.format(address=address),
    ]  # fmt: skip
    started = time.monotonic()
    result = lab.ssh(source, shlex.join(argv), timeout=180)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise LabError(f"migration {source} -> {dest} failed: {result.stderr.strip()}")
    return seconds, result.stdout


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--guest", default="guest1")
    parser.add_argument("--rounds", type=int, default=1, help="there-and-back round trips")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between migrations")
    args = parser.parse_args(argv)
    lab = Lab.open(args.state_dir)
    guest = args.guest
    home = lab.guest_home(guest)
    other = lab.nodes[(lab.nodes.index(home) + 1) % len(lab.nodes)]
    probe = Probe(lab, guest)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    time.sleep(args.settle)
    failures_total = 0
    hops = [(home, other), (other, home)] * args.rounds
    marks: list[tuple[str, str, float, float, float]] = []
    for source, dest in hops:
        t0 = time.monotonic()
        seconds, _ = migrate_over_ssh(lab, guest, source, dest)
        t1 = time.monotonic()
        time.sleep(args.settle)
        marks.append((source, dest, t0, t1, seconds))
    probe.stop()
    thread.join()
    answers = [a for _, a in probe.results if a is not None]
    boots = sorted({a.boot for a in answers})
    counts = [a.count for a in answers]
    rising = all(b > a for a, b in itertools.pairwise(counts))
    for source, dest, t0, t1, seconds in marks:
        window = probe.between(t0, t1 + args.settle)
        failed = sum(1 for _, a in window if a is None)
        failures_total += failed
        print(f"{guest} {source} -> {dest}: migrate {seconds:.2f} s, {failed} of {len(window)} probes failed")
    print(
        f"probes: {len(probe.results)} ({len(probe.results) - len(answers)} failed); "
        f"boot ids: {len(boots)} ({', '.join(b[:8] for b in boots)}); count rising: {rising} "
        f"({counts[0] if counts else '-'} .. {counts[-1] if counts else '-'})"
    )
    return 0 if len(boots) == 1 and rising else 1


if __name__ == "__main__":
    sys.exit(main())
