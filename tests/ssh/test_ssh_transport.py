"""The SSH transport against a real sshd on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cau.errors import CommandTimeout, NodeUnreachable
from cau.transport.ssh import HostKeyError, SshTarget, SshTransport, fetch_host_key, record_host_key
from tests.ssh.conftest import Sshd


def _target(sshd: Sshd, **kw: object) -> SshTarget:
    return SshTarget(
        name="node1",
        host="127.0.0.1",
        port=sshd.port,
        known_hosts=sshd.known_hosts,
        identity=sshd.client_key,
        cluster="lab",
        **kw,  # type: ignore[arg-type]
    )


async def _trust(sshd: Sshd, *, replace: bool = False) -> str:
    key = await fetch_host_key("127.0.0.1", sshd.port)
    return record_host_key(sshd.known_hosts, "127.0.0.1", sshd.port, key, replace=replace)


def test_unknown_host_key_is_refused_with_how_to_trust_it(sshd: Sshd) -> None:
    async def main() -> None:
        transport = SshTransport(_target(sshd))
        with pytest.raises(HostKeyError, match=r"not in .*known_hosts .*refusing to connect") as err:
            await transport.run("true")
        assert "cau hosts trust lab node1" in (err.value.hint or "")
        sshd.known_hosts.write_text(
            "127.0.0.2 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHLw0ifGxhT0F3vrbVhnBDNoJ6nNDQdGeR5dN7zhLSwd\n"
        )
        with pytest.raises(HostKeyError, match=r"is not in .*known_hosts: refusing to connect"):
            await transport.run("true")

    asyncio.run(main())


def test_trusted_host_runs_commands_on_one_reused_connection(sshd: Sshd, tmp_path: Path) -> None:
    async def main() -> None:
        assert await _trust(sshd) == "added"
        assert await _trust(sshd) == "unchanged"
        transport = SshTransport(_target(sshd))
        first = await transport.run("echo hello; echo oops >&2; exit 3")
        assert (first.exit_status, first.stdout, first.stderr) == (3, "hello\n", "oops\n")
        conn = transport._conn
        env = await transport.run(
            'printf "%s|%s" "$CAU_NODE" "$WITH_SPACES"', env={"CAU_NODE": "node1", "WITH_SPACES": "a b 'c'"}
        )
        assert env.stdout == "node1|a b 'c'"
        assert transport._conn is conn  # one connection per node, reused
        quoting = await transport.run("""echo "it's $((1+1))" | tr a-z A-Z""")
        assert quoting.stdout == "IT'S 2\n"
        src = tmp_path / "payload.sh"
        src.write_text("#!/bin/sh\necho from-file\n")
        await transport.put(src, str(tmp_path / "remote dir" / "p.sh"), mode=0o755)
        ran = await transport.run(f"'{tmp_path}/remote dir/p.sh'")
        assert ran.stdout == "from-file\n"
        await transport.close()

    asyncio.run(main())


def test_command_timeout(sshd: Sshd) -> None:
    async def main() -> None:
        await _trust(sshd)
        transport = SshTransport(_target(sshd))
        with pytest.raises(CommandTimeout, match=r"did not finish within 0\.5s"):
            await transport.run("sleep 5", timeout=0.5)
        assert (await transport.run("echo still usable")).ok
        await transport.close()

    asyncio.run(main())


def test_changed_host_key_is_refused_until_replaced_on_purpose(sshd: Sshd) -> None:
    async def main() -> None:
        await _trust(sshd)
        sshd.restart(new_key=True)  # "reinstalled" node, or an impostor
        transport = SshTransport(_target(sshd))
        with pytest.raises(HostKeyError, match="has CHANGED"):
            await transport.run("true")
        with pytest.raises(HostKeyError, match="already has a different key"):
            await _trust(sshd)
        assert await _trust(sshd, replace=True) == "replaced"
        assert (await transport.run("true")).ok
        await transport.close()

    asyncio.run(main())


def test_reconnects_after_the_node_restarts(sshd: Sshd) -> None:
    async def main() -> None:
        await _trust(sshd)
        transport = SshTransport(_target(sshd, connect_timeout=2))
        assert (await transport.run("true")).ok
        sshd.crash()
        with pytest.raises(NodeUnreachable):
            await transport.run("true")
        with pytest.raises(NodeUnreachable, match="cannot reach node1"):
            await transport.run("true")
        sshd.start()
        assert (await transport.run("echo back")).stdout == "back\n"
        await transport.close()

    asyncio.run(main())


def test_sudo_wrapping_for_non_root_users() -> None:
    t = SshTransport(SshTarget(name="n", host="h", known_hosts=Path("/dev/null"), user="ops"))
    assert t._wrap("apt-get -y upgrade", None) == "sudo -n -- sh -c 'apt-get -y upgrade'"
    with_env = t._wrap("apt-get -y upgrade", {"A": "1"})
    assert with_env.startswith("sudo -n -- sh -c ") and "A=1" not in with_env
    root = SshTransport(SshTarget(name="n", host="h", known_hosts=Path("/dev/null")))
    assert root._wrap("id", None) == "sh -c id"
    forced = SshTransport(
        SshTarget(name="n", host="h", known_hosts=Path("/dev/null"), sudo=False, user="ops")
    )
    assert forced._wrap("id", None) == "sh -c id"


def test_secrets_reach_the_command_through_stdin_never_its_command_line(sshd: Sshd) -> None:
    """A secret given as an environment variable is the command's, exactly (quotes, `$`, newlines),
    but no process on the node carries it in its arguments (what `ps` and sudo's log show), and
    the command still reads its own standard input."""
    secret = "pa$s w'o\"rd\n`x`-canary-7f3a"

    async def main() -> None:
        await _trust(sshd)
        transport = SshTransport(_target(sshd))
        # Every process of the command's ancestry, up to the session's shell: their argv.
        cmd = (
            'printf "%s" "$DB_PASSWORD" > /dev/stderr; p=$$; while [ "$p" -gt 1 ]; do '
            "tr '\\0' ' ' < /proc/$p/cmdline; echo; p=$(awk '/^PPid:/ {print $2}' /proc/$p/status); done"
        )
        env = {"DB_PASSWORD": secret, "CAU_NODE": "node1"}
        # The exec request itself (what sudo logs, and audit sees in execve) holds no secret.
        assert "canary" not in transport._wrap(cmd, env)
        ran = await transport.run(cmd, env=env)
        assert ran.ok, ran.stderr
        assert ran.stderr == secret
        # up to sshd's session process (its ancestors are the test's own)
        listing = ran.stdout.split("sshd:")[0]
        assert "sh -c" in listing  # the listing did see the command's processes
        assert "canary" not in listing and "pa$s" not in listing
        piped = await transport.run(
            "cat; printf '|%s' \"$CAU_NODE\"", env={"CAU_NODE": "n1"}, input="own input\n"
        )
        assert piped.stdout == "own input\n|n1"
        await transport.close()

    asyncio.run(main())
