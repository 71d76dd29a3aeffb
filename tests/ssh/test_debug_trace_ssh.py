"""`cau debug-trace` over real SSH: a node reached through a real sshd (this machine, a Debian
host with dpkg) gives its package-manager and host state; a node that cannot be reached gives
an error file, and the bundle is still written."""

from __future__ import annotations

import asyncio
import json
import socket
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from cau.cli.app import app
from cau.service import Service
from tests.ssh.conftest import Sshd


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.3", 0))
        return int(s.getsockname()[1])  # nothing listens on it once the socket is closed


def test_node_parts_over_real_ssh_and_an_unreachable_node(sshd: Sshd, tmp_path: Path) -> None:
    config = tmp_path / "clusters.toml"
    config.write_text(f"""
[clusters.loop]
provider = "ssh"
plugins = ["apt"]
[clusters.loop.options]
identity = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
connect_timeout = 5
[[clusters.loop.options.nodes]]
name = "n1"
host = "127.0.0.1"
port = {sshd.port}
[[clusters.loop.options.nodes]]
name = "n2"
host = "127.0.0.3"
port = {_closed_port()}
""")
    home = tmp_path / "home"

    async def trust() -> None:
        svc = Service(home, config)
        try:
            await svc.trust_hosts("loop", ["n1"], replace=False)
        finally:
            svc.close()

    asyncio.run(trust())
    out = tmp_path / "trace.zip"
    got = CliRunner().invoke(
        app, ["--data-dir", str(home), "--config", str(config), "debug-trace", "loop", "-o", str(out)]
    )
    assert got.exit_code == 3, got.output  # written, with a part missing
    assert f"wrote {out}" in got.output and "missing: node n2" in got.output

    with zipfile.ZipFile(out) as zf:
        files = {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(files["manifest.json"])
    # n1, over SSH: this host's own state
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text()
    assert files["nodes/n1/boot_id.txt"].decode() == boot_id
    assert b"load average" in files["nodes/n1/uptime.txt"]
    assert b"Filesystem" in files["nodes/n1/disk.txt"]
    assert "nodes/n1/apt/dpkg.log" in files and "nodes/n1/apt/holds.txt" in files
    sources = {f["path"]: f["source"] for f in manifest["files"]}
    assert sources["nodes/n1/apt/dpkg-audit.txt"] == "node n1: `dpkg --audit`"
    # n2: refused; its error file, named in the manifest; nothing else of it
    missing = {m["part"]: m for m in manifest["missing"]}
    assert set(missing) == {"node n2"}, missing
    assert missing["node n2"]["file"] == "nodes/n2/ERROR.txt"
    assert b"n2" in files["nodes/n2/ERROR.txt"] and b"not collected" in files["nodes/n2/ERROR.txt"]
    assert [p for p in files if p.startswith("nodes/n2/")] == ["nodes/n2/ERROR.txt"]
    # the provider's view says n2 is down
    snapshot = json.loads(files["cluster/snapshot.json"])
    assert {n["name"]: n["state"] for n in snapshot["nodes"]} == {"n1": "up", "n2": "down"}
