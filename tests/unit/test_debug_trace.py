"""`cau debug-trace`: the zip an operator sends to support, read the way support reads it, and
searched for a secret planted in the cluster's secrets, its config, a profile and a script's
command line. Sandbox runs in virtual time; nodes over SSH through scripted transports here
(tests/ssh collects from a real sshd)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import stat
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import tomli_w
from typer.testing import CliRunner

from cau import __version__
from cau.cli.app import app
from cau.clock import VirtualClock, run_virtual
from cau.debugtrace import NODE_COMMANDS, TraceBundle, _collect_node
from cau.errors import NodeUnreachable
from cau.logfile import start_log_file, stop_log_file
from cau.ports import ProviderContext
from cau.providers.ssh import SshOptions, SshProvider
from cau.redact import forget_secrets, register_secrets
from cau.service import Service
from cau.testing import Reply, Rules, ScriptedCluster
from tests.support import node, run_cluster, spec

CANARY = "dbg-canary-9Z#q/p?w@rd"  # URL-unsafe characters on purpose
UNDECLARED = "undeclared-pw-4711"  # never declared: masked because it looks like a password
FORMS = (CANARY, quote(CANARY, safe=""), quote(CANARY), json.dumps(CANARY)[1:-1], UNDECLARED)


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    yield
    stop_log_file()
    forget_secrets()


def _setup(home: Path) -> Path:
    updates = [{"id": "kernel", "title": "Linux kernel", "restart": True, "install_seconds": 60}]
    (home / "c1.toml").write_text(tomli_w.dumps(spec([node("n1"), node("n2"), node("n3")], updates=updates)))
    secrets = home / "c1.secrets"
    secrets.write_text(f"DB_PW='{CANARY}'\n")
    secrets.chmod(0o600)
    # The cluster's default profile holds the secret's value (as careless admins write it) and
    # an undeclared password on a script's command line.
    (home / "p.toml").write_text(f"pre_update_script = \"test -n '{CANARY}' # --password={UNDECLARED}\"\n")
    config = home / "clusters.toml"
    config.write_text(
        '[clusters.c1]\nprovider = "sandbox"\nprofile = "p.toml"\n'
        '[clusters.c1.options]\nspec = "c1.toml"\n'
        '[clusters.c1.secrets]\nfile = "c1.secrets"\n'
        f"# the database: mysql://app:{quote(CANARY, safe='')}@db.example:3306/app\n"
    )
    return config


def _trace(home: Path, config: Path, *args: str) -> Any:
    return CliRunner().invoke(
        app, ["--data-dir", str(home / "data"), "--config", str(config), "debug-trace", *args]
    )


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        folder = names[0].split("/", 1)[0]
        assert all(n.startswith(folder + "/") for n in names), names
        return {n.split("/", 1)[1]: zf.read(n) for n in names}


def _run(home: Path, config: Path, **profile: Any) -> str:
    done = run_cluster(home / "data", config, "c1", **profile)
    return done.outcome.run_id


def _events(home: Path, config: Path, run_id: str) -> int:
    svc = Service(home / "data", config)
    try:
        return len(asyncio.run(svc.events(run_id)))
    finally:
        svc.close()


def test_the_bundle_holds_the_run_its_journal_report_and_versions_and_no_secret(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    script = f"test -n '{CANARY}' && echo 'password={UNDECLARED}' && echo {CANARY} >&2"
    run_id = _run(tmp_path, config, pre_update_script=script)
    # cau's log file, as `cau run` writes it, with a line holding the secret
    start_log_file(tmp_path / "data", "cau run c1")
    logging.getLogger("cau.test").warning("connecting with %s", CANARY)

    out = tmp_path / "trace.zip"
    got = _trace(tmp_path, config, "c1", "-o", str(out))
    assert got.exit_code == 0, got.output
    assert f"wrote {out}" in got.output and run_id in got.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    files = _members(out)

    manifest = json.loads(files["manifest.json"])
    assert manifest["schema_version"] == 1 and manifest["cau_version"] == __version__
    assert manifest["cluster"] == "c1" and manifest["run_id"] == run_id and manifest["missing"] == []
    # every file is listed with its size and where it came from, and nothing else is in the zip
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(files) - {"manifest.json"}
    for path, entry in listed.items():
        assert entry["size"] == len(files[path]) and entry["source"], path

    journal = [json.loads(line) for line in files["run/journal.jsonl"].decode().splitlines()]
    assert len(journal) == _events(tmp_path, config, run_id) > 10
    assert [e["seq"] for e in journal] == list(range(1, len(journal) + 1))
    assert {e["run_id"] for e in journal} == {run_id}
    report = json.loads(files["run/report.json"])
    assert report["run_id"] == run_id and report["status"] == "Succeeded"
    assert {n["name"] for n in report["nodes"]} == {"n1", "n2", "n3"}
    assert b"<html" in files["run/report.html"] and run_id.encode() in files["run/report.csv"]
    assert json.loads(files["run/run.json"])["run_id"] == run_id

    versions = json.loads(files["coordinator/versions.json"])
    assert versions["cau"] == __version__ and versions["python"].split()[0] in versions["python"]
    names = {(p["kind"], p["name"]) for p in versions["plugins_and_providers"]}
    assert {("plug-in", "apt"), ("plug-in", "sandbox"), ("provider", "sandbox")} <= names
    assert {s["name"] for s in versions["stores"]} >= {"sqlite", "etcd"}
    log_text = files["coordinator/cau.log"].decode()
    assert "cau run c1 started" in log_text and "connecting with ***" in log_text

    assert (
        b"[clusters.c1]" in files["config/clusters.toml"] and b"c1.secrets" in files["config/clusters.toml"]
    )
    assert b"pre_update_script" in files["config/profile.toml"]
    assert {"n1", "n2", "n3"} == {p.split("/")[1] for p in files if p.startswith("nodes/")}
    assert b"simulated" in files["nodes/n1/simulated.txt"]
    assert json.loads(files["cluster/snapshot.json"])["name"] == "c1"

    # the secret, in any form, and the undeclared password are in no file of the zip
    for path, data in files.items():
        for form in FORMS:
            assert form.encode() not in data, f"{path} shows {form!r}"
    # ... and its masking shows where it was
    assert b"***" in files["config/profile.toml"] and b"***" in files["config/clusters.toml"]


def test_the_newest_run_by_default_and_any_run_by_its_id(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    first = _run(tmp_path, config)
    second = _run(tmp_path, config)
    assert first != second
    got = _trace(tmp_path, config, "c1", "-o", str(tmp_path / "newest.zip"))
    assert got.exit_code == 0, got.output
    assert json.loads(_members(tmp_path / "newest.zip")["manifest.json"])["run_id"] == second
    got = _trace(tmp_path, config, "c1", "--run", first, "-o", str(tmp_path / "first.zip"))
    assert got.exit_code == 0, got.output
    files = _members(tmp_path / "first.zip")
    assert json.loads(files["manifest.json"])["run_id"] == first
    assert len(files["run/journal.jsonl"].splitlines()) == _events(tmp_path, config, first)


def test_an_unknown_run_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    _run(tmp_path, config)
    out = tmp_path / "out" / "trace.zip"
    out.parent.mkdir()
    got = _trace(tmp_path, config, "c1", "--run", "20990101-nosuch", "-o", str(out))
    assert got.exit_code == 1
    assert "no run '20990101-nosuch' on cluster 'c1'" in got.output
    assert list(out.parent.iterdir()) == []  # no zip, no temporary file
    got = _trace(tmp_path, config, "nosuch", "-o", str(out))
    assert got.exit_code == 1 and "unknown cluster 'nosuch'" in got.output
    assert list(out.parent.iterdir()) == []


def test_an_existing_file_is_refused_without_force_and_replaced_with_it(tmp_path: Path) -> None:
    config = _setup(tmp_path)
    out = tmp_path / "trace.zip"
    out.write_bytes(b"the operator's own file")
    got = _trace(tmp_path, config, "c1", "-o", str(out))
    assert got.exit_code == 1
    assert f"{out} exists; nothing was written" in got.output and "--force" in got.output
    assert out.read_bytes() == b"the operator's own file"
    got = _trace(tmp_path, config, "c1", "-o", str(out), "--force")
    assert got.exit_code == 0, got.output
    files = _members(out)
    assert json.loads(files["manifest.json"])["run_id"] is None  # no run yet: said, not failed
    assert "has no Updating Run yet" in got.output
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- nodes over SSH, scripted -----------------------------------------------------------------------

APT_PROXY = f'Acquire::http::Proxy "http://proxy:{CANARY}@10.0.0.9:3128";\n'


def _answers(node_name: str, command: str) -> Any:
    if node_name == "n3":
        raise NodeUnreachable("n3 (10.0.0.13): connection refused")
    if command.startswith("for p in"):
        tools = ["dpkg", "apt-mark", "apt-config", "crm_mon", "corosync-quorumtool", "cibadmin"]
        return "\n".join(tools) + "\n" if node_name == "n1" else "dpkg\n"
    rules = Rules(
        {
            "uptime": " 10:00:00 up 3 days,  1 user,  load average: 0.00, 0.01, 0.05\n",
            "cat /proc/sys/kernel/random/boot_id": f"{node_name}-boot\n",
            re.compile(
                "apt/history.log"
            ): f"Start-Date: 2026-11-01\nCommandline: apt-get install x --password={UNDECLARED}\n",
            "dpkg --audit": Reply("", 1, f"dpkg: error: {CANARY} broke it\n"),
            "apt-config dump": APT_PROXY,
            "crm_mon -1": '<pacemaker-result api-version="2.3"><nodes/></pacemaker-result>\n',
            "corosync-quorumtool": Reply("Quorate: Yes\n", 0, "", delay=100),
        },
        otherwise=lambda _c: "ok\n",
    )
    return rules(command)


def test_node_parts_over_ssh_are_masked_and_a_lost_node_gets_an_error_file(tmp_path: Path) -> None:
    register_secrets([CANARY])
    cluster = ScriptedCluster(_answers)
    opts = SshOptions.model_validate(
        {
            "nodes": [{"name": n, "host": f"10.0.0.1{i}"} for i, n in enumerate(("n1", "n2", "n3"), 1)],
            "known_hosts": "/nonexistent/known_hosts",
        }
    )
    provider = SshProvider.create(opts, ProviderContext("web", VirtualClock(), tmp_path, transports=cluster))
    bundle = TraceBundle("web", datetime(2026, 11, 1, tzinfo=UTC), "tester")

    async def main() -> None:
        await asyncio.gather(*(_collect_node(bundle, provider, n, 30.0) for n in ("n1", "n2", "n3")))

    run_virtual(main())
    out = tmp_path / "b.zip"
    out.write_bytes(bundle.zip_bytes())
    files = _members(out)
    missing = {m["part"]: m for m in json.loads(files["manifest.json"])["missing"]}

    # n1 has apt and Pacemaker: all of it, each command once, with a timeout
    assert b"load average" in files["nodes/n1/uptime.txt"]
    assert files["nodes/n1/boot_id.txt"] == b"n1-boot\n"
    assert b"Start-Date" in files["nodes/n1/apt/history.log"]
    assert b"pacemaker-result" in files["nodes/n1/pacemaker/crm_mon.xml"]
    assert b"http://proxy:***@10.0.0.9:3128" in files["nodes/n1/apt/proxy.txt"]
    # a failing command: its output and exit status, and it is named as missing
    assert b"--- exit status 1 ---" in files["nodes/n1/apt/dpkg-audit.txt"]
    assert "exited 1" in missing["node n1: apt/dpkg-audit.txt"]["error"]
    # a command that takes too long: an error file, the node's other parts are still there
    assert "did not finish within 30s" in missing["node n1: pacemaker/quorum.txt"]["error"]
    assert b"not collected" in files["nodes/n1/pacemaker/quorum.txt.error.txt"]
    assert "nodes/n1/pacemaker/constraints.xml" in files
    for call in cluster.transports["n1"].calls:
        assert call.timeout == 30.0, call
    # n2 has dpkg only: no apt-mark holds, no Pacemaker parts, said in a note
    assert "nodes/n2/apt/dpkg.log" in files and "nodes/n2/apt/holds.txt" not in files
    assert not any(p.startswith("nodes/n2/pacemaker") for p in files)
    assert any("node n2 has no" in n and "crm_mon" in n for n in json.loads(files["manifest.json"])["notes"])
    # n3 cannot be reached: one error file saying so, nothing else tried
    assert b"connection refused" in files["nodes/n3/ERROR.txt"]
    assert missing["node n3"]["file"] == "nodes/n3/ERROR.txt"
    assert len(cluster.commands("n3")) == 1
    assert not any(p.startswith("nodes/n3/") and p != "nodes/n3/ERROR.txt" for p in files)

    for path, data in files.items():
        for form in FORMS:
            assert form.encode() not in data, f"{path} shows {form!r}"
    assert len(NODE_COMMANDS) == len({c.file for c in NODE_COMMANDS})
