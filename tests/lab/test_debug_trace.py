"""`cau debug-trace` on the Pacemaker lab: each real host's Pacemaker status and apt history reach
the zip over cau's own SSH sessions, as the host itself shows them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cau.cli.app import app
from cau_lab import Lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_the_debug_trace_holds_each_hosts_pacemaker_status_and_apt_history(
    clean_pcmk_lab: Lab, tmp_path: Path
) -> None:
    lab = clean_pcmk_lab
    out = tmp_path / "trace.zip"
    where = ["--data-dir", str(tmp_path / "data"), "--config", str(lab.config_path)]
    got = CliRunner().invoke(app, [*where, "debug-trace", "lab", "-o", str(out)])
    assert got.exit_code == 0, got.output
    with zipfile.ZipFile(out) as zf:
        files = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(files["manifest.json"])
    assert manifest["provider"] == "pacemaker" and manifest["missing"] == [], manifest["missing"]
    for node in lab.nodes:
        base = f"nodes/{node}"
        status = ET.fromstring(files[f"{base}/pacemaker/crm_mon.xml"])
        online = sorted(n.get("name", "") for n in status.iter("node") if n.get("online") == "true")
        assert online == sorted(lab.nodes), node
        assert b"Quorate:" in files[f"{base}/pacemaker/quorum.txt"]
        assert b"<constraints" in files[f"{base}/pacemaker/constraints.xml"]
        # the apt history, as the host itself shows it
        history = lab.exec(node, "tail -n 500 /var/log/apt/history.log", check=True).stdout
        assert history.strip() and files[f"{base}/apt/history.log"].decode() == history
        assert files[f"{base}/boot_id.txt"].decode().strip() == lab.boot_id(node)
