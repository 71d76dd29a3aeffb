"""The hotfix plug-in on a local node: rules, exit codes, integrity and ACL checks, the registry.

The "node" here is this machine through the local transport; every command the test makes it run
is a script of the test's own, writing under the test's temporary folder. One test puts the files
on a remote node instead: a scripted transport (cau.testing) that records what it is given.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import socket
from pathlib import Path
from typing import Any

import pytest

from cau.clock import SystemClock
from cau.domain.updates import UpdateOutcome
from cau.errors import HostKeyError, PluginError
from cau.plugins.hotfix import HotfixArgs, HotfixPlugin
from cau.ports import PluginContext
from cau.testing import Reply, Result, ScriptedTransport, Session, UnexpectedCommand
from cau.transport.local import LocalTransport
from cau.transport.ssh import SshTarget, changed_host_key
from tests.support_hotfix import hotfix_root, write_manifest

HOST = socket.gethostname()


def updater(tmp: Path, root: Path, **args: object):  # type: ignore[no-untyped-def]
    parsed = HotfixArgs(
        root=str(root), staging_dir=str(tmp / "staging"), registry=str(tmp / "installed"), **args
    )  # type: ignore[arg-type]
    ctx = PluginContext("run-1", "c", SystemClock(), tmp)
    return HotfixPlugin().create_updater(Session(HOST, LocalTransport()), parsed, ctx)


def test_rules_order_exit_codes_and_registry(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    root = hotfix_root(tmp_path / "share", str(trace), node=HOST)
    up = updater(tmp_path, root)

    async def main() -> None:
        found = await up.scan()
        # _all first, then the node's own folder, in path order within each; nothing else
        assert [u.id for u in found.updates] == ["_all/firmware/bios.cap", "_all/fix.sh", f"{HOST}/only.sh"]
        assert all(s.ok for s in await up.stage(found.updates))
        results = {r.update_id: r for r in await up.install(found.updates, lambda _m: None)}
        assert {k: r.outcome for k, r in results.items()} == dict.fromkeys(results, UpdateOutcome.SUCCEEDED)
        assert not results["_all/fix.sh"].restart_required
        assert results[f"{HOST}/only.sh"].restart_required  # exit 100 = success, restart needed
        assert results["_all/firmware/bios.cap"].restart_required  # always_restart
        assert trace.read_text().split("\n")[:3] == [f"{n} {HOST}" for n in ("bios.cap", "fix.sh", "only.sh")]
        assert (await up.scan()).updates == ()  # recorded as installed: not offered again

    asyncio.run(main())


def test_a_tampered_file_stops_everything(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    root = hotfix_root(tmp_path / "share", str(trace), node=HOST)
    (root / "_all" / "fix.sh").write_text("#!/bin/sh\nrm -rf /important\n")  # after the manifest was made
    with pytest.raises(PluginError, match=r"integrity check failed, nothing was installed: .*_all/fix.sh"):
        asyncio.run(updater(tmp_path, root).scan())
    assert not trace.exists()


def test_a_file_changed_on_the_node_after_staging_is_not_run(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    root = hotfix_root(tmp_path / "share", str(trace), node=HOST)
    up = updater(tmp_path, root)

    async def main() -> None:
        found = await up.scan()
        await up.stage(found.updates)
        for staged in (tmp_path / "staging").iterdir():
            staged.write_text("#!/bin/sh\necho evil\n")
        # install pushes again (the coordinator's copy is the checked one) and verifies before running
        results = await up.install(found.updates, lambda _m: None)
        assert all(r.outcome is UpdateOutcome.SUCCEEDED for r in results)
        assert "evil" not in trace.read_text()

    asyncio.run(main())


def test_failed_and_already_installed_codes(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    root = hotfix_root(tmp_path / "share", str(trace), node=HOST)
    (root / "_all" / "fix.sh").write_text("#!/bin/sh\necho 'disk full' >&2\nexit 5\n")
    (root / HOST / "only.sh").write_text("#!/bin/sh\nexit 17\n")
    write_manifest(root)
    up = updater(tmp_path, root)

    async def main() -> None:
        found = await up.scan()
        results = {r.update_id: r for r in await up.install(found.updates, lambda _m: None)}
        fix = results["_all/fix.sh"]
        assert fix.outcome is UpdateOutcome.FAILED and fix.error_code == 5 and "disk full" in fix.message
        already = results[f"{HOST}/only.sh"]
        assert already.outcome is UpdateOutcome.SUCCEEDED and "already-installed" in already.message
        # the failed one is offered again (a retry), the others are recorded
        assert [u.id for u in (await up.scan()).updates] == ["_all/fix.sh"]

    asyncio.run(main())


def test_a_root_others_can_write_to_is_refused_unless_allowed(tmp_path: Path) -> None:
    root = hotfix_root(tmp_path / "share", str(tmp_path / "trace"), node=HOST)
    root.chmod(0o777)
    with pytest.raises(PluginError, match=r"others can write to: .*share \(777\)"):
        asyncio.run(updater(tmp_path, root).scan())
    assert asyncio.run(updater(tmp_path, root, disable_acl_checks=True).scan()).updates


def test_bad_config_names_the_key_and_the_file(tmp_path: Path) -> None:
    root = hotfix_root(tmp_path / "share", str(tmp_path / "trace"), node=HOST)
    (root / "hotfix.toml").write_text('[[rules]]\nmatch = "*.sh"\ncomand = "sh $update$"\n')
    with pytest.raises(PluginError, match=r"hotfix.toml.*comand"):
        asyncio.run(updater(tmp_path, root).scan())


def test_on_a_remote_node_files_are_pushed_then_checked_there_before_they_run(tmp_path: Path) -> None:
    """A node reached over a transport (scripted here): the coordinator's checked files are put on
    the node (0700, named by digest), their digest is checked there, then the rule runs them."""
    root = hotfix_root(tmp_path / "share", "/var/tmp/trace", node="web1")
    registry: list[str] = []
    exits = {"bios.cap": 0, "fix.sh": 0, "only.sh": 100}

    def web1(command: str) -> Result:
        if command == "cat -- /var/lib/cau/hotfix-installed 2>/dev/null; true":
            return "".join(registry)
        if command.startswith("sha256sum -- "):
            path = shlex.split(command)[2]
            data = [p.data for p in node.puts if p.remote == path][-1]
            return f"{hashlib.sha256(data).hexdigest()}  {path}\n"
        if command.startswith("sh "):
            return Reply("", exits[shlex.split(command)[1].rsplit("/", 1)[1].split("-", 1)[1]])
        if command.startswith('mkdir -p -- "$(dirname /var/lib/cau/hotfix-installed)" && echo '):
            registry.append(shlex.split(command.split(" && echo ", 1)[1])[0] + "\n")
            return ""
        raise UnexpectedCommand(command)

    node = ScriptedTransport(web1, name="web1")
    ctx = PluginContext("run-1", "c", SystemClock(), tmp_path)
    up = HotfixPlugin().create_updater(Session("web1", node), HotfixArgs(root=str(root)), ctx)

    async def main() -> None:
        found = await up.scan()
        assert [u.id for u in found.updates] == ["_all/firmware/bios.cap", "_all/fix.sh", "web1/only.sh"]
        results = await up.install(found.updates, lambda _m: None)
        assert [(r.outcome, r.restart_required) for r in results] == [
            (UpdateOutcome.SUCCEEDED, True),  # always_restart
            (UpdateOutcome.SUCCEEDED, False),
            (UpdateOutcome.SUCCEEDED, True),  # exit 100: success, restart needed
        ]
        assert (await up.scan()).updates == ()  # recorded on the node

    asyncio.run(main())
    digests = {
        u: hashlib.sha256((root / u).read_bytes()).hexdigest() for u in ("_all/fix.sh", "web1/only.sh")
    }
    assert {(p.remote, p.mode) for p in node.puts} >= {
        (f"/var/tmp/cau-hotfix/{digests['_all/fix.sh'][:16]}-fix.sh", 0o700),
        (f"/var/tmp/cau-hotfix/{digests['web1/only.sh'][:16]}-only.sh", 0o700),
    }
    assert all(
        p.data == (root / "_all" / "fix.sh").read_bytes() for p in node.puts if p.remote.endswith("-fix.sh")
    )
    assert sorted(line.split()[1] for line in registry) == [
        "_all/firmware/bios.cap",
        "_all/fix.sh",
        "web1/only.sh",
    ]


class _RefusesInstallers(LocalTransport):
    """This machine, until an installer is to run: then the node presents another host key."""

    async def run(self, command: str, **kw: Any) -> Any:
        if command.startswith("sh "):
            raise changed_host_key(SshTarget(name=HOST, host="192.0.2.1", known_hosts=Path("/dev/null")))
        return await super().run(command, **kw)


def test_a_node_refusing_cau_at_install_is_a_refusal_not_a_failed_update(tmp_path: Path) -> None:
    """A failed update is retried and counted as the update's failure; a refused node is the
    node's (the engine fails it at once, naming the remedy)."""
    root = hotfix_root(tmp_path / "share", str(tmp_path / "trace"), node=HOST)
    parsed = HotfixArgs(root=str(root), staging_dir=str(tmp_path / "staging"), registry=str(tmp_path / "r"))
    ctx = PluginContext("run-1", "c", SystemClock(), tmp_path)
    up = HotfixPlugin().create_updater(Session(HOST, _RefusesInstallers()), parsed, ctx)

    async def main() -> None:
        found = await up.scan()
        await up.stage(found.updates)
        with pytest.raises(HostKeyError, match="CHANGED"):
            await up.install(found.updates, lambda _m: None)

    asyncio.run(main())


def test_installers_get_the_cluster_s_secrets_as_environment_variables(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    root = hotfix_root(tmp_path / "share", str(tmp_path / "trace"), node=HOST)
    (root / "_all" / "fix.sh").write_text(f'#!/bin/sh\nprintf %s "$DB_PW" > {seen}\n')
    write_manifest(root)
    parsed = HotfixArgs(root=str(root), staging_dir=str(tmp_path / "staging"), registry=str(tmp_path / "r"))
    ctx = PluginContext("run-1", "c", SystemClock(), tmp_path, {"DB_PW": "s3cret-value"})
    up = HotfixPlugin().create_updater(Session(HOST, LocalTransport()), parsed, ctx)

    async def main() -> None:
        found = await up.scan()
        results = await up.install([u for u in found.updates if u.id == "_all/fix.sh"], lambda _m: None)
        assert [r.outcome for r in results] == [UpdateOutcome.SUCCEEDED]

    asyncio.run(main())
    assert seen.read_text() == "s3cret-value"
