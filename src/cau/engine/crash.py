"""Crash points, for tests that kill a coordinator at an exact place on a real cluster.

With `CAU_TEST_CRASH_AFTER=KIND:KEY[@NODE]` in its environment (e.g. `intent:failback@node2`,
`outcome:enter_maintenance/1`), a coordinator kills its own process with SIGKILL right after it
stored that journal event: no `finally`, no cleanup, as in a power cut. The next `cau run`
resumes from there. Unset (always, outside tests), this does nothing.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from cau.journal.events import JournalEvent

ENV = "CAU_TEST_CRASH_AFTER"


@dataclass(frozen=True)
class CrashPoint:
    kind: str
    key: str
    node: str | None = None

    @classmethod
    def parse(cls, text: str) -> CrashPoint:
        head, _, node = text.partition("@")
        kind, sep, key = head.partition(":")
        if not sep or not kind or not key:
            raise ValueError(f"{ENV} must be KIND:KEY[@NODE] (e.g. intent:failback@node2), not {text!r}")
        return cls(kind, key, node or None)

    @classmethod
    def from_env(cls) -> CrashPoint | None:
        text = os.environ.get(ENV, "").strip()
        return cls.parse(text) if text else None

    def matches(self, event: JournalEvent) -> bool:
        return (
            event.kind.value == self.kind
            and event.key == self.key
            and (self.node is None or event.node == self.node)
        )

    def check(self, event: JournalEvent) -> None:
        if self.matches(event):
            os.kill(os.getpid(), signal.SIGKILL)
