"""The lab behaves like real hosts: what a user (and cau) would check by hand."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
import time
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cau.config import load_config
from cau_lab import Lab, LabConfig, LabError
from cau_lab.cli import lab_app
from cau_lab.repo import failing_postinst
from tests.lab.conftest import lab_unavailable

pytestmark = [pytest.mark.lab, pytest.mark.slow]

STANDARD = ("labpkg", "labtool", "labrelease", "labextra")


# --- helpers -----------------------------------------------------------------------------------


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr or result.stdout}"
    return result.stdout


def versions(lab: Lab, node: str) -> dict[str, str]:
    out = ok(lab.exec(node, ["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *STANDARD]))
    return dict(line.split() for line in out.splitlines())


def upgradable(lab: Lab, node: str) -> dict[str, tuple[str, str]]:
    """What `apt-get upgrade` would do: {package: (installed, candidate)} (no lists update)."""
    out = ok(lab.exec(node, "apt-get -s upgrade"))
    # Inst labpkg [1.0] (1.1 ...)
    return {m[0]: (m[1], m[2]) for m in re.findall(r"^Inst (\S+) \[(\S+)\] \((\S+)", out, re.M)}


def sshd_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5) as sock:
            sock.settimeout(0.5)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_new_boot(lab: Lab, node: str, old: str, timeout: float = 30) -> float:
    """Seconds until ssh (strict host key checking) works again and shows a new boot id."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = lab.ssh(node, "cat /run/lab/boot_id", timeout=10)
        if result.returncode == 0 and result.stdout.strip() not in ("", old):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{node} not back with a new boot id after {timeout} s")


def boot_ids(lab: Lab) -> dict[str, str | None]:
    return {n: lab.boot_id(n) for n in lab.nodes}


# --- identity, access, isolation ---------------------------------------------------------------


def test_each_host_answers_ssh_with_its_own_hostname_and_host_key(lab: Lab) -> None:
    for node in lab.nodes:
        argv = [
            "ssh", "-o", f"UserKnownHostsFile={lab.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-i", str(lab.identity), f"root@{lab.addresses[node]}", "hostname",
        ]  # fmt: skip
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert ok(result).strip() == node

    lines = lab.known_hosts.read_text().splitlines()
    assert len(lines) == len(lab.nodes)
    entries = {addr: (ktype, key) for addr, ktype, key in (line.split() for line in lines)}
    assert set(entries) == set(lab.addresses.values())
    assert len({key for _, key in entries.values()}) == len(lab.nodes), "hosts share a host key"
    for node, address in lab.addresses.items():
        ktype, key = ok(lab.exec(node, "cat /etc/ssh/ssh_host_ed25519_key.pub")).split()[:2]
        assert entries[address] == (ktype, key)
    assert stat.S_IMODE(lab.identity.stat().st_mode) == 0o600


def test_clusters_toml_describes_the_lab_for_cau(lab: Lab) -> None:
    data = tomllib.loads(lab.config_path.read_text())
    cluster = data["clusters"][lab.cluster]
    assert cluster["provider"] == "ssh"
    assert cluster["plugins"] == ["apt"]
    assert cluster["options"] == {
        "user": "root",
        "identity": str(lab.identity),
        "known_hosts": str(lab.known_hosts),
        "boot_id_command": "cat /run/lab/boot_id",
        "reboot_command": "reboot",
        "min_online": 2,
        "nodes": [{"name": n, "host": a} for n, a in lab.addresses.items()],
    }
    assert Path(cluster["options"]["identity"]).is_absolute()
    assert "[[clusters.lab.options.nodes]]" in lab.config_path.read_text()
    # cau itself reads it
    assert load_config(lab.config_path).cluster(lab.cluster).provider == "ssh"


def test_hosts_are_isolated_from_the_machine_and_from_each_other(clean_lab: Lab) -> None:
    lab = clean_lab  # another test may have left a repository or package behind
    node1, node2 = lab.nodes[:2]
    # no way out of the subnet: no default route, an outside address is unreachable
    assert "default" not in ok(lab.exec(node1, "ip route"))
    outside = lab.exec(node1, "ping -c1 -W1 192.0.2.1")
    assert outside.returncode != 0 and "unreachable" in outside.stderr.lower()
    ok(lab.exec(node1, f"ping -c1 -W2 {lab.addresses[node2]}"))  # but the hosts see each other
    ok(lab.exec(node1, f"ping -c1 -W2 {node2}"))  # by name, too (/etc/hosts)
    # own PID namespace with tini as PID 1, own hostname, only a handful of processes
    assert ok(lab.exec(node1, "cat /proc/1/comm")).strip() == "tini"
    assert ok(lab.exec(node1, "hostname")).strip() == node1
    assert len(ok(lab.exec(node1, "ps -e -o pid=")).split()) < 15
    # no disk devices; a private /dev/shm and /tmp
    assert sorted(ok(lab.exec(node1, "ls /dev")).split()) == sorted(
        ["fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty",
         "urandom", "zero"]
    )  # fmt: skip
    ok(lab.exec(node1, "touch /dev/shm/only-node1 /tmp/only-node1"))
    assert lab.exec(node2, "ls /dev/shm/only-node1 /tmp/only-node1").returncode != 0
    # the repository is read-only; the machine's kernel knobs too
    assert lab.exec(node1, "touch /srv/labrepo/x").returncode != 0
    assert lab.exec(node1, "echo 1 > /proc/sys/vm/drop_caches").returncode != 0
    # apt sees only the lab repositories
    sources = ok(lab.exec(node1, "cat /etc/apt/sources.list")).strip()
    assert sources == "deb [trusted=yes] file:/srv/labrepo ./"
    assert ok(lab.exec(node1, "ls /etc/apt/sources.list.d")).strip() == ""


def test_reboot_refuses_outside_a_lab_host(lab: Lab) -> None:
    # A nested PID namespace inside a host stands in for "not a lab host": lab-reboot must
    # refuse (and even if it did not, reboot(2) there could only end that namespace).
    node = lab.nodes[0]
    before = lab.boot_id(node)
    for cmd in ("unshare --pid --fork reboot", "unshare --pid --fork --mount-proc reboot"):
        result = lab.exec(node, cmd)
        assert result.returncode == 1 and "refusing" in result.stderr, (cmd, result)
    assert lab.boot_id(node) == before


# --- power -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["reboot", "shutdown -r now", "systemctl reboot"])
def test_reboot_inside_a_host_restarts_only_that_host(clean_lab: Lab, command: str) -> None:
    lab = clean_lab
    node = lab.nodes[1]
    before = boot_ids(lab)
    lab.ssh(node, command, timeout=30)  # the connection drops as the host goes down
    took = wait_new_boot(lab, node, before[node] or "")
    print(f"{command!r}: ssh back with a new boot id after {took:.2f} s")
    assert took < 15
    after = boot_ids(lab)
    assert after[node] != before[node]
    assert {n: i for n, i in after.items() if n != node} == {n: i for n, i in before.items() if n != node}
    # a fresh boot: uptime restarts (time namespace), services run again
    uptime = float(ok(lab.ssh(node, "cut -d' ' -f1 /proc/uptime")).strip())
    assert uptime < 30
    assert ok(lab.ssh(node, "systemctl is-active ssh")).strip() == "active"


def test_killed_host_stays_down_until_booted(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[-1]
    before = lab.boot_id(node)
    lab.kill(node)
    time.sleep(3 * lab.cfg.reboot_delay + 0.5)
    assert not sshd_answers(lab.addresses[node])
    assert lab.ssh(node, "true", timeout=10).returncode != 0
    assert lab.boot_id(node) is None
    assert [s.state for s in lab.status() if s.node == node] == ["down"]
    with pytest.raises(LabError, match="not up"):
        lab.exec(node, "true")
    lab.boot(node)
    assert ok(lab.ssh(node, "hostname")).strip() == node  # same host key: it is the same disk
    assert lab.boot_id(node) not in (None, before)


def test_host_that_never_returns_after_a_reboot(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[2]
    lab.hold(node)
    lab.ssh(node, "reboot", timeout=30)
    time.sleep(3 * lab.cfg.reboot_delay + 0.5)
    assert not sshd_answers(lab.addresses[node])
    assert [s.state for s in lab.status() if s.node == node] == ["down"]
    lab.boot(node)  # clears the hold
    assert ok(lab.ssh(node, "hostname")).strip() == node


def test_hard_reset_brings_the_host_back(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[0]
    before = lab.boot_id(node)
    started = time.monotonic()
    lab.reset(node)
    took = wait_new_boot(lab, node, before or "")
    print(f"hard reset: ssh back after {took:.2f} s")
    assert time.monotonic() - started >= lab.cfg.reboot_delay


def test_reboot_delay_is_per_host_and_adjustable(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[0]
    lab.set_reboot_delay(node, 3)
    before = lab.boot_id(node)
    lab.ssh(node, "reboot", timeout=30)
    took = wait_new_boot(lab, node, before or "")
    assert took >= 3


# --- packages ----------------------------------------------------------------------------------


def test_hosts_start_with_the_old_versions(clean_lab: Lab) -> None:
    for node in clean_lab.nodes:
        assert versions(clean_lab, node) == dict.fromkeys(STANDARD, "1.0")
        assert clean_lab.exec(node, "test -e /var/run/reboot-required").returncode != 0


def test_apt_sees_the_upgrades_then_the_second_order_one(clean_lab: Lab) -> None:
    lab = clean_lab
    node, other = lab.nodes[0], lab.nodes[1]
    ok(lab.exec(node, "apt-get update"))
    assert upgradable(lab, node) == {
        "labpkg": ("1.0", "1.1"),
        "labtool": ("1.0", "1.1"),
        "labrelease": ("1.0", "1.1"),
    }
    ok(lab.exec(node, "DEBIAN_FRONTEND=noninteractive apt-get -y upgrade"))
    assert versions(lab, node) == {"labpkg": "1.1", "labtool": "1.1", "labrelease": "1.1", "labextra": "1.0"}
    # labpkg's upgrade asks for a restart
    assert ok(lab.exec(node, "cat /var/run/reboot-required.pkgs")).split() == ["labpkg"]
    # labrelease 1.1 brought a repository; it shows only after a new `apt-get update`
    assert upgradable(lab, node) == {}
    ok(lab.exec(node, "apt-get update"))
    assert upgradable(lab, node) == {"labextra": ("1.0", "1.1")}
    ok(lab.exec(node, "DEBIAN_FRONTEND=noninteractive apt-get -y upgrade"))
    assert versions(lab, node) == dict.fromkeys(STANDARD, "1.1")
    ok(lab.exec(node, "apt-get update"))
    assert upgradable(lab, node) == {}
    # the other hosts were not touched
    assert versions(lab, other) == dict.fromkeys(STANDARD, "1.0")

    # a restart clears the request; the upgrade stays (it is on the host's disk)
    before = lab.boot_id(node)
    lab.ssh(node, "reboot", timeout=30)
    wait_new_boot(lab, node, before or "")
    assert lab.exec(node, "test -e /var/run/reboot-required").returncode != 0
    assert versions(lab, node) == dict.fromkeys(STANDARD, "1.1")

    # and the lab can put the host back
    lab.reset_packages([node])
    assert versions(lab, node) == dict.fromkeys(STANDARD, "1.0")
    assert lab.exec(node, "test -e /etc/apt/sources.list.d/lab-extra.list").returncode != 0


def test_plain_upgrade_asks_for_no_restart(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[1]
    ok(lab.exec(node, "apt-get update && apt-get install -y --only-upgrade labtool"))
    assert versions(lab, node)["labtool"] == "1.1"
    assert lab.exec(node, "test -e /var/run/reboot-required").returncode != 0


def test_publishing_only_the_old_versions_leaves_nothing_to_do(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[2]
    lab.publish_old()
    ok(lab.exec(node, "apt-get update"))
    assert upgradable(lab, node) == {}
    lab.publish_new()
    ok(lab.exec(node, "apt-get update"))
    assert set(upgradable(lab, node)) == {"labpkg", "labtool", "labrelease"}


def test_a_failure_mode_package_and_the_reset_that_removes_it(clean_lab: Lab) -> None:
    lab = clean_lab
    node = lab.nodes[3]
    lab.repos.main.add(failing_postinst("labbroken", "1.0"))
    try:
        ok(lab.exec(node, "apt-get update"))
        install = lab.exec(node, "DEBIAN_FRONTEND=noninteractive apt-get install -y labbroken")
        assert install.returncode != 0
        assert "postinst fails on purpose" in install.stdout + install.stderr
        status = ok(lab.exec(node, "dpkg-query -W -f '${db:Status-Abbrev}' labbroken"))
        assert status.strip() == "iF"  # half-configured, as on a real host
        lab.reset_packages([node])
        assert lab.exec(node, "dpkg-query -W -f '${db:Status-Abbrev}' labbroken").stdout.strip() in ("", "un")
        assert versions(lab, node) == dict.fromkeys(STANDARD, "1.0")
    finally:
        lab.repos.main.remove("labbroken")


# --- the command line --------------------------------------------------------------------------


def test_cli_status_exec_publish_and_up_when_up(lab: Lab) -> None:
    runner = CliRunner()
    sd = ["--state-dir", str(lab.state_dir)]
    result = runner.invoke(lab_app, ["status", *sd])
    assert result.exit_code == 0, result.output
    assert [line.split()[:3] for line in result.output.splitlines()] == [
        [n, a, "up"] for n, a in lab.addresses.items()
    ]
    # exec passes the command's exit code on
    assert runner.invoke(lab_app, ["exec", *sd, lab.nodes[0], "--", "sh", "-c", "exit 3"]).exit_code == 3
    result = runner.invoke(lab_app, ["publish", *sd, "--old-only"])
    assert result.exit_code == 0 and "1.1" not in result.output, result.output
    result = runner.invoke(lab_app, ["publish", *sd])
    assert result.exit_code == 0 and "labpkg 1.1" in result.output and "labextra 1.1" in result.output
    # a second `up` says so and changes nothing
    before = boot_ids(lab)
    up = ["up", *sd, "--name", lab.cfg.name, "--subnet", lab.cfg.subnet]
    result = runner.invoke(lab_app, up)
    assert result.exit_code == 0 and "already up" in result.output, result.output
    assert boot_ids(lab) == before


# --- bring-up and tear-down of a lab of its own -------------------------------------------------


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


def test_down_leaves_no_netns_bridge_process_or_mount(lab: Lab, tmp_path: Path) -> None:
    # A second, small lab beside the session's (other names, subnet, state dir): 10.77.203.0/24,
    # not the Pacemaker lab's 10.77.201.0/24 (two bridges on one subnet: sshd did not answer).
    assert lab_unavailable() is None
    cfg = LabConfig(state_dir=tmp_path / "lab2", nodes=2, name="caulabd", subnet="10.77.203.0/24")
    lab2 = Lab(cfg, detach=False)
    try:
        lab2.up(publish_new=False)
        assert ok(lab2.ssh("node2", "hostname")).strip() == "node2"
        with pytest.raises(LabError, match="already up"):
            lab2.up()
        # the two labs do not see each other
        assert lab2.exec("node1", f"ping -c1 -W1 {lab.addresses[lab.nodes[0]]}").returncode != 0
        procs = [p for n in lab2.nodes for p in lab2.pids(n)]
        supervisors = [int((cfg.host_dir(n) / "supervisor.pid").read_text().split()[0]) for n in lab2.nodes]
        assert procs and supervisors
    finally:
        lab2.down()

    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "caulabd-" not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert "caulabdbr0" not in links and "vcaulabd" not in links
    for pid in procs + supervisors:
        assert not _alive(pid), f"process {pid} of the lab still runs"
    assert str(cfg.state_dir) not in _mounts()
    assert "cau-lab-" not in _mounts()  # no host's overlay ever shows in the root namespace
    lab2.down()  # idempotent
    # the session's lab is untouched
    assert all(s.state == "up" for s in lab.status())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
