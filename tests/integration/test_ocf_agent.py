"""cau's resource agent ocf:cau:coordinator, run as Pacemaker's executor runs it (the action as
argument, its parameters as OCF_RESKEY_* variables), on this machine against the built-in
sandbox: start brings up a real `cau daemon --resident`, monitor tells running from not running
by OCF's codes, stop ends the daemon with SIGTERM (it says so) and is idempotent; what cannot
run is refused with OCF's codes for "not installed" and "not configured". The lab
(tests/lab/test_self_updating_pacemaker.py) runs it under a real Pacemaker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from cau.providers.pacemaker_role import agent_text

OCF_SUCCESS, OCF_ERR_INSTALLED, OCF_ERR_CONFIGURED, OCF_NOT_RUNNING = 0, 5, 6, 7


def agent(tmp: Path, action: str, **params: str) -> subprocess.CompletedProcess[str]:
    script = tmp / "coordinator"
    if not script.exists():
        script.write_text(agent_text())
        script.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "HA_RSCTMP": str(tmp / "rsctmp"),
        "OCF_RESOURCE_INSTANCE": "cau-coordinator",
        "CAU_HOME": str(tmp / "home"),
        **{f"OCF_RESKEY_{k}": v for k, v in params.items()},
    }
    return subprocess.run([str(script), action], env=env, capture_output=True, text=True, timeout=60)


def test_start_monitor_stop_run_a_resident_daemon(tmp_path: Path) -> None:
    cau = tmp_path / "cau"
    # the cau of this test run, as an installed `cau` command would be
    cau.write_text(f'#!/bin/sh\nexec {sys.executable} -m cau "$@"\n')
    cau.chmod(0o755)
    config = tmp_path / "cau.toml"
    config.write_text("")  # the built-in sandbox only
    log = tmp_path / "coordinator.log"
    params = {
        "cluster": "sandbox",
        "binary": str(cau),
        "config": str(config),
        "data_dir": str(tmp_path / "data"),
        "poll": "0.5",
        "log": str(log),
    }
    assert agent(tmp_path, "monitor", **params).returncode == OCF_NOT_RUNNING
    started = agent(tmp_path, "start", **params)
    assert started.returncode == OCF_SUCCESS, started.stderr
    try:
        # the daemon has looked at the role once (Python's start-up takes a while on a busy machine)
        deadline = time.monotonic() + 60
        while "has no clustered role" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
            time.sleep(0.2)
        assert agent(tmp_path, "monitor", **params).returncode == OCF_SUCCESS
        pid = int((tmp_path / "rsctmp" / "cau-coordinator-cau-coordinator.pid").read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert b"daemon" in cmdline and b"--resident" in cmdline and b"sandbox" in cmdline
        assert agent(tmp_path, "start", **params).returncode == OCF_SUCCESS  # already running
    finally:
        stopped = agent(tmp_path, "stop", **params)
    assert stopped.returncode == OCF_SUCCESS, stopped.stderr
    assert not Path(f"/proc/{pid}").exists() or b"daemon" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert agent(tmp_path, "monitor", **params).returncode == OCF_NOT_RUNNING
    assert agent(tmp_path, "stop", **params).returncode == OCF_SUCCESS  # stopping twice is fine
    said = log.read_text()
    # the daemon ran (no role on the sandbox: it said so at each change) and stopped on SIGTERM
    assert "resident coordinator of 'sandbox'" in said
    assert "has no clustered role" in said
    assert "stopped (SIGTERM)" in said
    # one line per event, however long (a log read by grep): every line starts with its time
    assert all(line[:4].isdigit() and line[10] == "T" for line in said.splitlines()), said


def test_a_daemon_that_exits_at_once_fails_the_start_with_its_words(tmp_path: Path) -> None:
    cau = tmp_path / "cau"
    cau.write_text("#!/bin/sh\necho 'error: the store is out of reach' >&2\nexit 1\n")
    cau.chmod(0o755)
    config = tmp_path / "cau.toml"
    config.write_text("")
    started = agent(
        tmp_path, "start", cluster="lab", binary=str(cau), config=str(config), log=str(tmp_path / "log")
    )
    assert started.returncode == 1
    assert "exited at once" in started.stderr and "the store is out of reach" in started.stderr


def test_what_cannot_run_is_refused_with_ocf_codes(tmp_path: Path) -> None:
    missing = agent(tmp_path, "start", cluster="lab", binary="/nonexistent/cau", log=str(tmp_path / "log"))
    assert missing.returncode == OCF_ERR_INSTALLED and "is not installed" in missing.stderr
    unconfigured = agent(
        tmp_path, "start", cluster="lab", binary="sh", config="/nonexistent.toml", log=str(tmp_path / "log")
    )
    assert unconfigured.returncode == OCF_ERR_CONFIGURED and "/nonexistent.toml" in unconfigured.stderr
    no_cluster = agent(tmp_path, "start", binary="sh", log=str(tmp_path / "log"))
    assert no_cluster.returncode == OCF_ERR_CONFIGURED


def test_meta_data_is_ocf_xml_naming_every_parameter(tmp_path: Path) -> None:
    meta = agent(tmp_path, "meta-data")
    assert meta.returncode == OCF_SUCCESS
    root = ET.fromstring(meta.stdout)
    names = {p.get("name") for p in root.iter("parameter")}
    assert names == {"cluster", "config", "data_dir", "binary", "poll", "log"}
    assert {a.get("name") for a in root.iter("action")} >= {"start", "stop", "monitor", "meta-data"}
    assert agent(tmp_path, "promote").returncode == 3  # unimplemented
