"""The `ssh` provider and the `command` plug-in: a whole Updating Run over real SSH.

Two "nodes" are two loopback addresses of one real sshd. A restart is simulated by a reboot
command that writes a new boot id (the lab tests restart real hosts); everything else is real:
host-key checks, SSH sessions, hooks, scripts and the installer exit-code contract.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from cau.clock import SystemClock
from cau.domain.profile import build_profile
from cau.errors import PreflightError
from cau.service import Service
from cau.transport.ssh import HostKeyError
from tests.ssh.conftest import Sshd

IP = "$(echo $SSH_CONNECTION | cut -d' ' -f3)"  # which loopback address (node) the session is on


def write_config(
    tmp: Path, sshd: Sshd, *, allow_member: bool = True, extra: str = "", maintenance: str | None = None
) -> Path:
    state = tmp / "nodes"
    state.mkdir(exist_ok=True)
    for ip in ("127.0.0.1", "127.0.0.2"):
        (state / f"boot-{ip}").write_text("boot-0\n")
        (state / f"pending-{ip}").write_text("kernel Linux kernel 6.1.158\nopenssl OpenSSL 3.0.17\n")
    default_hooks = (
        "[clusters.loop.options.maintenance]\n"
        f'enter = "echo in > {state}/maint-$CAU_NODE"\n'
        f'exit = "rm -f {state}/maint-$CAU_NODE"\n'
        f'status = "test -e {state}/maint-$CAU_NODE"\n'
    )
    config = tmp / "clusters.toml"
    config.write_text(f"""
[clusters.loop]
provider = "ssh"
plugins = ["command"]

[clusters.loop.options]
identity = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
allow_member_coordinator = {str(allow_member).lower()}
boot_id_command = "cat {state}/boot-{IP}"
reboot_command = "cat /proc/sys/kernel/random/uuid > {state}/boot-{IP}"
min_online = 1
{extra}

{maintenance or default_hooks}
[[clusters.loop.options.nodes]]
name = "n1"
host = "127.0.0.1"
port = {sshd.port}

[[clusters.loop.options.nodes]]
name = "n2"
host = "127.0.0.2"
port = {sshd.port}
""")
    return config


def command_plugin(state: Path) -> dict[str, Any]:
    pending = f"{state}/pending-{IP}"
    return {
        "name": "command",
        "args": {
            "scan": f"cat {pending}",
            # remove the update from the pending list, record it, and ask for a restart for the kernel
            "install": f'grep -v "^$update$ " {pending} > {pending}.new; mv {pending}.new {pending}; '
            f"echo $update$ >> {state}/installed-{IP}; [ $update$ != kernel ] || exit 100",
            "success_restart_needed": [100],
        },
    }


def run(config: Path, home: Path, **overrides: Any) -> Any:
    async def main() -> Any:
        svc = Service(home, config, clock=SystemClock())
        try:
            return await svc.run("loop", build_profile(None, overrides))
        finally:
            svc.close()

    return asyncio.run(main())


def trust(config: Path, home: Path) -> list[tuple[str, str, str]]:
    async def main() -> list[tuple[str, str, str]]:
        svc = Service(home, config)
        try:
            return await svc.trust_hosts("loop", [], replace=False)
        finally:
            svc.close()

    return asyncio.run(main())


def test_unknown_host_keys_stop_the_run_before_anything_changes(sshd: Sshd, tmp_path: Path) -> None:
    config = write_config(tmp_path, sshd)
    with pytest.raises(HostKeyError, match=r"n1 .* is not in"):
        run(config, tmp_path / "home", plugins=[command_plugin(tmp_path / "nodes")])
    assert not list((tmp_path / "nodes").glob("maint-*"))
    rows = trust(config, tmp_path / "home")
    assert [(r.node, r.result) for r in rows] == [("n1", "added"), ("n2", "added")]
    assert all(r.fingerprint.startswith("SHA256:") for r in rows)


def test_remote_updating_mode_refuses_to_run_on_a_member(sshd: Sshd, tmp_path: Path) -> None:
    config = write_config(tmp_path, sshd, allow_member=False)
    trust(config, tmp_path / "home")
    with pytest.raises(PreflightError, match="this machine is itself node n1, n2"):
        run(config, tmp_path / "home", plugins=[command_plugin(tmp_path / "nodes")])


def test_updating_run_over_ssh(sshd: Sshd, tmp_path: Path) -> None:
    config = write_config(tmp_path, sshd)
    state = tmp_path / "nodes"
    trust(config, tmp_path / "home")
    log = state / "scripts.log"
    out = run(
        config,
        tmp_path / "home",
        plugins=[command_plugin(state)],
        pre_update_script=f"echo pre $CAU_NODE >> {log}",
        post_update_script=f"echo post $CAU_NODE >> {log}",
    )
    report = out.report
    assert report.status == "Succeeded", report.message
    for name, ip in (("n1", "127.0.0.1"), ("n2", "127.0.0.2")):
        node = next(n for n in report.nodes if n.name == name)
        assert {u.id: u.status for u in node.updates} == {"kernel": "Succeeded", "openssl": "Succeeded"}
        assert next(u for u in node.updates if u.id == "kernel").restart_required
        assert node.restarts == 1 and node.boot_ids[0] != "boot-0"
        assert (state / f"boot-{ip}").read_text().strip() == node.boot_ids[0]
        assert (state / f"installed-{ip}").read_text().split() == ["kernel", "openssl"]
        assert not (state / f"maint-{name}").exists()  # left maintenance
    assert log.read_text().split("\n")[:4] == ["pre n1", "post n1", "pre n2", "post n2"]
    # a second run finds nothing to do
    again = run(config, tmp_path / "home", plugins=[command_plugin(state)])
    assert again.report.status == "Succeeded" and all(n.updates == [] for n in again.report.nodes)


def test_failing_pre_script_leaves_its_node_untouched(sshd: Sshd, tmp_path: Path) -> None:
    config = write_config(tmp_path, sshd)
    state = tmp_path / "nodes"
    trust(config, tmp_path / "home")
    out = run(
        config,
        tmp_path / "home",
        plugins=[command_plugin(state)],
        pre_update_script='test "$CAU_NODE" != n2 || { echo "storage not healthy" >&2; exit 1; }',
        max_retries_per_node=0,
    )
    n2 = next(n for n in out.report.nodes if n.name == "n2")
    assert n2.status == "Failed" and n2.error_id == "PreUpdateScriptFailed"
    assert "storage not healthy" in n2.message
    assert (state / "boot-127.0.0.2").read_text() == "boot-0\n"  # not restarted
    assert not (state / "installed-127.0.0.2").exists()
    assert next(n for n in out.report.nodes if n.name == "n1").status == "Succeeded"


def test_installer_exit_codes_are_classified(sshd: Sshd, tmp_path: Path) -> None:
    config = write_config(tmp_path, sshd)
    trust(config, tmp_path / "home")
    plugin = {
        "name": "command",
        "args": {
            "scan": "printf 'ok\\nbroken\\nolder\\n'",
            "install": "case $update$ in ok) exit 0;; older) exit 17;; "
            "*) echo 'disk full' >&2; exit 5;; esac",
            "already_installed": [17],
        },
    }
    out = run(config, tmp_path / "home", plugins=[plugin], max_retries_per_node=0, node_order=["n1"])
    n1 = next(n for n in out.report.nodes if n.name == "n1")
    got = {u.id: (u.status, u.error_code) for u in n1.updates}
    assert got == {"ok": ("Succeeded", None), "older": ("Succeeded", None), "broken": ("Failed", 5)}
    assert "disk full" in next(u.message for u in n1.updates if u.id == "broken")
    assert n1.status == "PartiallyFailed" and n1.restarts == 0
    detail = json.loads(json.dumps(n1.model_dump(mode="json")))
    broken = next(u for u in detail["updates"] if u["id"] == "broken")
    assert broken["message"].startswith("exit 5: failed") and broken["error_code"] == 5


def test_maintenance_hooks_on_another_host(sshd: Sshd, tmp_path: Path) -> None:
    """A load balancer drains each node: the hooks run on the `lb` host, told which node it is."""
    lb = tmp_path / "lb"
    hooks = f"""[clusters.loop.options.maintenance]
run_on = "lb"
enter = "echo \\"drain $CAU_NODE $CAU_HOST\\" >> {lb}.log && touch {lb}-$CAU_NODE"
exit = "echo \\"enable $CAU_NODE\\" >> {lb}.log && rm {lb}-$CAU_NODE"
status = "test -e {lb}-$CAU_NODE"

[clusters.loop.options.hook_hosts.lb]
host = "127.0.0.1"
port = {sshd.port}
"""
    config = write_config(tmp_path, sshd, maintenance=hooks)
    trust(config, tmp_path / "home")
    out = run(config, tmp_path / "home", plugins=[command_plugin(tmp_path / "nodes")])
    assert out.report.status == "Succeeded"
    assert (lb.parent / "lb.log").read_text().splitlines() == [
        "drain n1 127.0.0.1",
        "enable n1",
        "drain n2 127.0.0.2",
        "enable n2",
    ]
