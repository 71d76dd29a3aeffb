"""Ansible callback for bench/lab_vs_ansible.py: when each task started and ended on each host.

Enabled by the benchmark's ansible.cfg (callbacks_enabled = cau_bench_times); writes one JSON
object per task result, as a line, to the file named by $CAU_BENCH_TIMES:

    {"host": "node1", "task": "Restart", "action": "ansible.builtin.reboot",
     "start": 1700000000.12, "end": 1700000003.45, "status": "ok"}

Times are the controller's time.time() (the clock cau's report and the benchmark use).
ansible-core has no JSON or profile_tasks callback of its own (they are in collections).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase  # type: ignore[import-not-found]

DOCUMENTATION = """
    name: cau_bench_times
    type: aggregate
    short_description: per-host task start and end times as JSON lines
    description: Writes one JSON line per task result to the file named by $CAU_BENCH_TIMES.
"""


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "cau_bench_times"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self._path = os.environ.get("CAU_BENCH_TIMES")
        self._started: dict[tuple[str, str], float] = {}

    def _key(self, host: Any, task: Any) -> tuple[str, str]:
        return host.get_name(), task._uuid

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._started[self._key(host, task)] = time.time()

    def _record(self, result: Any, status: str) -> None:
        end = time.time()
        host, task = result._host, result._task
        start = self._started.pop(self._key(host, task), end)
        line = {
            "host": host.get_name(),
            "task": task.get_name(),
            "action": task.action,
            "start": start,
            "end": end,
            "status": status,
        }
        if self._path:
            with open(self._path, "a", encoding="utf-8") as out:
                out.write(json.dumps(line) + "\n")

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result, "ok")

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, "unreachable")
