"""The CLI and the API are two faces of one service layer: the run options are RunProfile's own
fields in both, a view is one pydantic model serialised by both, and the CLI reaches neither
into the store nor into another package's private members."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import typer.main
from typer.testing import CliRunner

from cau.cli.app import app
from cau.domain.profile import PER_RUN_OPTIONS, SCRIPT_OPTIONS, RunProfile
from cau.views import ClusterScan, PluginView
from cau.web.models import RunOptions
from tests.support import node, spec, write_cluster

CLI = Path(__file__).resolve().parents[2] / "src" / "cau" / "cli"


def _run_command() -> Any:
    group: Any = typer.main.get_command(app)  # Typer's own click: no isinstance on click's classes
    return group.commands["run"]


def test_every_run_option_is_a_flag_of_cau_run_with_the_profile_s_help() -> None:
    flags = {o: p for p in _run_command().params for o in getattr(p, "opts", [])}
    for name in PER_RUN_OPTIONS:
        flag = "--" + name.replace("_", "-")
        assert flag in flags, f"{name} has no flag {flag}"
        assert flags[flag].help == RunProfile.model_fields[name].description
    assert "--plugin" in flags and "--plugin-arg" in flags  # the plug-ins' own flags


def test_the_api_run_options_are_the_profile_s_options_but_the_scripts() -> None:
    assert set(RunOptions.model_fields) == set(PER_RUN_OPTIONS) - SCRIPT_OPTIONS
    # the option the API lacked before: it comes with the field now
    assert RunOptions.model_validate({"allow_unhealthy_cluster": True}).model_dump(exclude_none=True) == {
        "allow_unhealthy_cluster": True
    }


def test_cli_flags_reach_the_profile(tmp_path: Path) -> None:
    # Through the generated flags: a list from commas, a number or "auto", a choice, a flag.
    runner = CliRunner()
    profile = tmp_path / "p.toml"
    profile.write_text('reboot_timeout = "20m"\n')
    env = {"CAU_HOME": str(tmp_path / "data"), "CAU_CONFIG": ""}
    out = runner.invoke(
        app,
        [
            "run",
            "sandbox",
            "--profile",
            str(profile),
            "--node-order",
            "node2,node1",
            "--max-parallel-nodes",
            "frobnicate",
            "--output",
            "json",
        ],
        env=env,
    )
    # refused before anything starts, naming the flag
    assert out.exit_code == 1 and "--max-parallel-nodes" in out.output, out.output
    flags = ["--node-order", "node2,node1", "--max-parallel-nodes", "auto", "--failback-mode", "none"]
    done = runner.invoke(
        app,
        [
            "run",
            "sandbox",
            "--speed",
            "1000",
            "--profile",
            str(profile),
            *flags,
            "--no-restart",
            "--output",
            "json",
        ],
        env=env,
    )
    report = json.loads(done.stdout)
    assert report["profile"]["node_order"] == ["node2", "node1"]
    assert report["profile"]["max_parallel_nodes"] == "auto"
    assert report["profile"]["failback_mode"] == "none" and report["profile"]["no_restart"] is True
    assert report["profile"]["reboot_timeout"] == "20m"  # the file's, under the flags


def test_scan_and_plugins_json_of_the_cli_are_the_service_views(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CAU_HOME": str(tmp_path / "data"), "CAU_CONFIG": ""}
    scan = runner.invoke(app, ["scan", "sandbox", "--output", "json"], env=env)
    assert scan.exit_code == 0, scan.output
    parsed = ClusterScan.model_validate_json(scan.stdout)
    assert parsed.cluster == "sandbox" and all(n.updates for n in parsed.nodes)
    plugins = runner.invoke(app, ["plugins", "--output", "json"], env=env)
    views = [PluginView.model_validate(p) for p in json.loads(plugins.stdout)]
    assert {v.name for v in views if v.kind == "provider"} >= {"sandbox", "ssh", "pacemaker"}


def test_the_cli_imports_no_store_and_touches_no_private_member() -> None:
    problems = []
    for path in sorted(CLI.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for item in ast.walk(tree):
            if isinstance(item, ast.ImportFrom) and (item.module or "").startswith("cau.store"):
                problems.append(f"{path.name}:{item.lineno} imports {item.module}")
            if isinstance(item, ast.Import):
                problems += [
                    f"{path.name}:{item.lineno} imports {a.name}"
                    for a in item.names
                    if a.name.startswith("cau.store")
                ]
            if (
                isinstance(item, ast.Attribute)
                and item.attr.startswith("_")
                and not item.attr.startswith("__")
                and not (isinstance(item.value, ast.Name) and item.value.id == "self")
            ):
                problems.append(f"{path.name}:{item.lineno} uses .{item.attr}")
    assert problems == []


def test_scan_says_in_its_exit_code_when_nodes_could_not_be_scanned(tmp_path: Path) -> None:
    runner = CliRunner()
    nodes = [node("n1"), node("n2", online=False), node("n3")]
    some = write_cluster(tmp_path, spec(nodes), name="some")
    none = write_cluster(tmp_path, spec([node(n, online=False) for n in ("n1", "n2")]), name="none")
    assert some == none  # one config file, both clusters
    env = {"CAU_HOME": str(tmp_path / "data"), "CAU_CONFIG": str(some), "COLUMNS": "200"}
    partly = runner.invoke(app, ["scan", "some"], env=env)
    assert partly.exit_code == 3 and "not scanned: n2" in partly.stdout, partly.output
    nothing = runner.invoke(app, ["scan", "none", "--output", "json"], env=env)
    assert nothing.exit_code == 4, nothing.output
    assert ClusterScan.model_validate_json(nothing.stdout).failed_nodes == ["n1", "n2"]
    fine = runner.invoke(app, ["scan", "sandbox"], env={**env, "CAU_CONFIG": ""})
    assert fine.exit_code == 0, fine.output


def test_report_of_an_unknown_run_names_the_cluster_and_how_to_list_runs(tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CAU_HOME": str(tmp_path / "data"), "CAU_CONFIG": "", "COLUMNS": "200"}
    out = runner.invoke(app, ["report", "sandbox", "--run", "20991231-nope"], env=env)
    assert out.exit_code == 1
    assert "no run '20991231-nope' on cluster 'sandbox'" in out.output
    assert "cau report sandbox" in out.output
