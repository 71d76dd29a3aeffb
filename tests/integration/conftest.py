from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


@dataclass
class Cau:
    """Runs the real `cau` command in its own process, with its own data and config folders."""

    home: Path
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
        env.update(CAU_HOME=str(self.home / "data"), XDG_CONFIG_HOME=str(self.home / "xdg"), COLUMNS="200")
        config = self.home / "clusters.toml"
        if config.exists():
            env["CAU_CONFIG"] = str(config)
        return env

    def __call__(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cau", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> Any:
        out = self(*args, "--output", "json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """Start `cau` in the background; its output goes to a log file (a pipe could fill up)."""
        log = self.home / f"bg-{len(self.procs)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cau", *args],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
            )
        self.procs.append(proc)
        return proc


@pytest.fixture
def cau(tmp_path: Path) -> Iterator[Cau]:
    runner = Cau(tmp_path)
    yield runner
    for i, proc in enumerate(runner.procs):  # end what the test started, by PID
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        # shown by pytest beside a failure: what each background command printed
        log = tmp_path / f"bg-{i}.log"
        print(f"--- cau {' '.join(map(str, proc.args[3:]))} (exit {proc.returncode}) ---")
        print(log.read_text(errors="replace")[-4000:] if log.exists() else "(no output)")


# `cau serve` as a real process, shared with the web tests (the secrets canary uses both).
from tests.web.conftest import serve  # noqa: E402, F401
