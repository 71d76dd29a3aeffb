"""apt's bad days on real hosts: a package whose maintainer script fails everywhere, the
half-configured package it leaves, and updates held on purpose. cau must stop at the failure
budget, say what dpkg said, never call a half-configured package compliant, and report held
updates as held."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cau_lab import Lab
from cau_lab.repo import PackageSpec, failing_postinst
from tests.lab.support import NEW, OLD, cau, versions

pytestmark = [pytest.mark.lab, pytest.mark.slow]

SCRIPT_FAILED = "installed labbroken package post-installation script subprocess returned error exit status 1"


@pytest.fixture
def broken_everywhere(fresh: Lab) -> Iterator[Lab]:
    """labbroken 1.0 installed on every host, and 1.1 published: its postinst fails everywhere."""
    lab = fresh
    lab.repos.main.add(PackageSpec("labbroken", "1.0", description="cau lab package (ok at 1.0)"))
    try:
        for node in lab.nodes:
            done = lab.exec(
                node, "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq labbroken"
            )
            assert done.returncode == 0, done.stderr
        lab.repos.main.add(failing_postinst("labbroken", "1.1"))
        yield lab
    finally:
        lab.repos.main.remove("labbroken")
        lab.reset_packages()


def run(lab: Lab, home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = cau(lab, home, "run", "lab", "--output", "json", *args)
    return result.returncode, json.loads(result.stdout)


def test_a_failing_maintainer_script_stops_at_the_budget_and_is_named_with_its_state(
    broken_everywhere: Lab, tmp_path: Path
) -> None:
    lab = broken_everywhere
    code, report = run(
        lab, tmp_path, "--node-order", "node1", "--max-failed-nodes", "0", "--max-retries-per-node", "1"
    )
    nodes = {n["name"]: n for n in report["nodes"]}
    # updating failed on node1 (its other updates went in): with a budget of 0 the run stops there
    assert code == 4 and report["error_id"] == "MaxFailedNodesExceeded", report["message"]
    assert nodes["node1"]["status"] == "PartiallyFailed"
    assert [nodes[n]["status"] for n in ("node2", "node3", "node4")] == ["Canceled"] * 3
    for node in ("node2", "node3", "node4"):  # the bad update did not roll on
        assert versions(lab, node) == {**OLD, "labbroken": "1.0"}, node
    broken = {u["id"]: u for u in nodes["node1"]["updates"]}["labbroken"]
    assert broken["status"] == "Failed"
    # dpkg's own words: the package, the maintainer script, its exit status; and the state left
    assert SCRIPT_FAILED in broken["message"] and "dpkg --configure labbroken" in broken["message"]
    assert "left half-configured" in broken["message"]
    assert broken["details"]["after"] == "1.1 (half-configured)"
    assert broken["attempts"] == 2  # retried on the second pass, like every other failed update
    assert {u["id"]: u["status"] for u in nodes["node1"]["updates"]} == {
        "labbroken": "Failed",
        **dict.fromkeys(NEW, "Succeeded"),
    }

    # the next scan does not call node1 compliant: the package is half-configured
    scan = json.loads(cau(lab, tmp_path, "scan", "lab", "--output", "json").stdout)
    node1 = {n["node"]: n for n in scan["nodes"]}["node1"]
    assert [(u["id"], u["details"]["action"], u["details"]["state"]) for u in node1["updates"]] == [
        ("labbroken", "repair", "half-configured")
    ]
    # and a run does not report it Succeeded
    code, again = run(
        lab, tmp_path, "--node-order", "node1", "--max-failed-nodes", "0", "--max-retries-per-node", "0"
    )
    first = {n["name"]: n for n in again["nodes"]}["node1"]
    assert first["status"] == "Failed" and code == 4, first["message"]


def test_held_updates_are_reported_as_held_in_the_scan_and_every_report_format(
    fresh: Lab, tmp_path: Path
) -> None:
    lab = fresh
    assert lab.exec("node2", "apt-mark hold labpkg").returncode == 0
    scan = json.loads(cau(lab, tmp_path, "scan", "lab", "--output", "json").stdout)
    node2 = {n["node"]: n for n in scan["nodes"]}["node2"]
    assert "labpkg" not in {u["id"] for u in node2["updates"]}
    assert [(h["id"], h["reason"], h["details"]) for h in node2["held"]] == [
        ("labpkg", "held", {"from": "1.0", "to": "1.1"})
    ]
    assert {n["node"]: n["held"] for n in scan["nodes"]}["node1"] == []

    code, report = run(lab, tmp_path)
    assert code == 0 and report["status"] == "Succeeded"  # held on purpose: not a failure
    assert versions(lab, "node2")["labpkg"] == "1.0"  # and nothing was forced
    nodes = {n["name"]: n for n in report["nodes"]}
    assert [(h["id"], h["reason"]) for h in nodes["node2"]["held_updates"]] == [("labpkg", "held")]
    assert nodes["node1"]["held_updates"] == []

    text = cau(lab, tmp_path, "report", "lab", "--last", "--detailed").stdout
    assert "not installed, held: labpkg 1.0 -> 1.1: held (apt-mark hold)" in " ".join(text.split())
    rows = list(
        csv.DictReader(
            io.StringIO(cau(lab, tmp_path, "report", "lab", "--last", "--format", "csv", "--detailed").stdout)
        )
    )
    held_rows = [r for r in rows if r["update_status"] == "Held"]
    assert [(r["node"], r["update_id"]) for r in held_rows] == [("node2", "labpkg")]
    html = cau(lab, tmp_path, "report", "lab", "--last", "--format", "html").stdout
    assert "Not installed on purpose" in html and "labpkg 1.0 -&gt; 1.1: held (apt-mark hold)" in html
