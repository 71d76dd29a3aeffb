"""Run commands on a node over SSH (asyncssh).

One connection per node, opened on first use and reused; re-opened after the node restarts.
Host keys are always verified against a known_hosts file: an unknown or changed key is refused
with the command that records it on purpose (`cau hosts trust`). Commands run as the login user,
through `sudo -n` when that user is not root, with a timeout each.

Errors (cau.errors): HostKeyError and AuthError (not worth retrying), NodeUnreachable (cannot
connect, connection lost) and CommandTimeout (both retryable).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from cau.errors import AuthError, CommandTimeout, HostKeyError, NodeUnreachable, TransportError
from cau.ports import CommandResult
from cau.redact import redact

__all__ = ["AuthError", "HostKeyError", "SshTarget", "SshTransport", "changed_host_key", "refused_login"]


@dataclass(frozen=True)
class SshTarget:
    """How to reach one node."""

    name: str  # the node's name in the cluster (for messages)
    host: str
    known_hosts: Path
    port: int = 22
    user: str = "root"
    identity: Path | None = None
    connect_timeout: float = 10.0
    # None: use sudo exactly when the login user is not root.
    sudo: bool | None = None
    cluster: str = ""

    @property
    def uses_sudo(self) -> bool:
        return self.sudo if self.sudo is not None else self.user != "root"

    @property
    def address(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def known_host_status(target: SshTarget) -> str:
    """'known', 'unknown' or 'mismatch'-candidate: whether known_hosts lists this host at all."""
    if not target.known_hosts.exists():
        return "unknown"
    try:
        entries = asyncssh.read_known_hosts(str(target.known_hosts))
    except (OSError, ValueError):
        return "unknown"
    keys = entries.match(target.host, target.host, target.port if target.port != 22 else None)[0]
    return "known" if keys else "unknown"


def _trust_hint(target: SshTarget, *, replace: bool = False) -> str:
    cluster = target.cluster or "CLUSTER"
    flag = " --replace" if replace else ""
    return (
        f"check the key out of band, then `cau hosts trust {cluster} {target.name}{flag}` "
        f"records it in {target.known_hosts}"
    )


def changed_host_key(target: SshTarget) -> HostKeyError:
    """What connecting to a host that presents another key than the one recorded raises (a node
    reinstalled, or someone impersonating it): the hint is the command that records the new key."""
    return HostKeyError(
        f"the host key of {target.name} ({target.address}) has CHANGED since it was recorded in "
        f"{target.known_hosts}: refusing to connect (someone may be impersonating it, or the "
        "node was reinstalled)",
        hint=_trust_hint(target, replace=True),
    )


def refused_login(target: SshTarget) -> AuthError:
    """What connecting raises when the host refuses cau's key for the login user."""
    return AuthError(
        f"{target.name} ({target.address}) refused the key for {target.user}"
        + (f" ({target.identity})" if target.identity else ""),
        hint="check the user, the identity file and the node's authorized_keys",
    )


class SshTransport:
    def __init__(self, target: SshTarget) -> None:
        self.target = target
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SshTransport({self.target.user}@{self.target.address})"

    async def _connection(self, connect_timeout: float | None = None) -> asyncssh.SSHClientConnection:
        async with self._lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            self._conn = await self.connect(connect_timeout)
            return self._conn

    async def connect(self, connect_timeout: float | None = None) -> asyncssh.SSHClientConnection:
        """Open a new verified connection (not cached)."""
        t = self.target
        if not t.known_hosts.exists():
            raise HostKeyError(
                f"the host key of {t.name} ({t.address}) is not in {t.known_hosts} (the file does not exist):"
                " refusing to connect",
                hint=_trust_hint(t),
            )
        keys = [str(t.identity)] if t.identity is not None else ()
        try:
            return await asyncssh.connect(
                t.host,
                t.port,
                username=t.user,
                known_hosts=str(t.known_hosts),
                client_keys=keys or None,
                agent_path=None if keys else (),
                config=[],  # no ~/.ssh/config surprises: the cluster config is the truth
                connect_timeout=connect_timeout or t.connect_timeout,
                keepalive_interval=15,
                keepalive_count_max=4,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            status = known_host_status(t)
            if status == "known":
                raise changed_host_key(t) from exc
            raise HostKeyError(
                f"the host key of {t.name} ({t.address}) is not in {t.known_hosts}: refusing to connect",
                hint=_trust_hint(t),
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise refused_login(t) from exc
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise NodeUnreachable(
                f"cannot reach {t.name} ({t.address}): {redact(str(exc)) or type(exc).__name__}"
            ) from exc

    # The environment travels on the command's standard input, ahead of any input of its own:
    # one `NAME=base64(value)` line per variable, then an empty line. The shell reads exactly
    # those lines (`read` takes a pipe byte by byte), exports them and runs the command with the
    # rest of stdin. On the command line (`env NAME=value`), a secret would show in every process
    # listing on the node and in sudo's log; SSH's own env passing needs AcceptEnv on the node.
    _ENV_PRELUDE = (
        'while IFS= read -r __cau_kv && [ -n "$__cau_kv" ]; do '
        'export "${__cau_kv%%=*}=$(printf %s "${__cau_kv#*=}" | base64 -d)" || exit 125; done; '
        "unset __cau_kv; "
    )

    def _wrap(self, command: str, env: Mapping[str, str] | None) -> str:
        inner = f"sh -c {shlex.quote(command)}"
        if env:
            inner = f"sh -c {shlex.quote(self._ENV_PRELUDE + 'exec ' + inner)}"
        return f"sudo -n -- {inner}" if self.target.uses_sudo else inner

    @staticmethod
    def _env_input(env: Mapping[str, str] | None, input: str | None) -> str | None:
        if not env:
            return input
        for name in env:
            if not name.isidentifier() or not name.isascii():
                raise TransportError(f"{name!r} is not an environment variable name")
        lines = "".join(f"{k}={base64.b64encode(v.encode()).decode()}\n" for k, v in env.items())
        return lines + "\n" + (input or "")

    async def run(
        self,
        command: str,
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> CommandResult:
        conn = await self._connection()
        try:
            result = await conn.run(
                self._wrap(command, env), check=False, timeout=timeout, input=self._env_input(env, input)
            )
        except asyncssh.TimeoutError as exc:
            raise CommandTimeout(
                f"'{redact(command)}' on {self.target.name} did not finish within {timeout:g}s"
            ) from exc
        except (asyncssh.DisconnectError, asyncssh.ChannelOpenError, OSError, BrokenPipeError) as exc:
            await self.drop()
            raise NodeUnreachable(f"lost the connection to {self.target.name}: {redact(str(exc))}") from exc
        status = result.exit_status
        if status is None or status < 0:
            status = -1  # killed by a signal, or the connection closed under it (e.g. a reboot)
        stdout = (
            result.stdout
            if isinstance(result.stdout, str)
            else (result.stdout or b"").decode(errors="replace")
        )
        stderr = (
            result.stderr
            if isinstance(result.stderr, str)
            else (result.stderr or b"").decode(errors="replace")
        )
        return CommandResult(command=command, exit_status=status, stdout=stdout, stderr=stderr)

    async def put(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        """Copy a file to the node through a command (works where SFTP is disabled, and with sudo)."""
        data = await asyncio.to_thread(local.read_bytes)
        conn = await self._connection()
        target = shlex.quote(remote)
        script = f'mkdir -p "$(dirname {target})" && cat > {target}'
        if mode is not None:
            script += f" && chmod {mode:o} {target}"
        wrapped = (
            f"sudo -n -- sh -c {shlex.quote(script)}"
            if self.target.uses_sudo
            else f"sh -c {shlex.quote(script)}"
        )
        try:
            result = await conn.run(wrapped, input=data, encoding=None, check=False, timeout=600)
        except (asyncssh.Error, OSError) as exc:
            await self.drop()
            raise NodeUnreachable(f"could not copy {local.name} to {self.target.name}: {exc}") from exc
        if result.exit_status != 0:
            err = (
                result.stderr.decode(errors="replace")
                if isinstance(result.stderr, bytes)
                else str(result.stderr)
            )
            raise TransportError(f"could not write {remote} on {self.target.name}: {err.strip()}")

    async def drop(self) -> None:
        """Forget the connection (after a restart the next command reconnects)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)

    async def close(self) -> None:
        await self.drop()


async def fetch_host_key(host: str, port: int = 22, timeout: float = 10.0) -> asyncssh.SSHKey:
    """The host key a server presents now (for `cau hosts trust`: recording it is a decision)."""
    try:
        key = await asyncio.wait_for(asyncssh.get_server_host_key(host, port, config=[]), timeout)
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise NodeUnreachable(f"cannot reach {host}:{port}: {exc or type(exc).__name__}") from exc
    if key is None:
        raise TransportError(f"{host}:{port} presented no host key")
    return key


def known_hosts_line(host: str, port: int, key: asyncssh.SSHKey) -> str:
    pattern = host if port == 22 else f"[{host}]:{port}"
    return f"{pattern} {key.export_public_key('openssh').decode().strip()}\n"


def record_host_key(known_hosts: Path, host: str, port: int, key: asyncssh.SSHKey, *, replace: bool) -> str:
    """Add (or with `replace`, swap) a host's key in known_hosts. Returns 'added', 'replaced' or
    'unchanged'. Refuses to replace a different key unless asked: a changed key is a warning sign."""
    pattern = host if port == 22 else f"[{host}]:{port}"
    line = known_hosts_line(host, port, key)
    key_type = line.split()[1]
    lines = known_hosts.read_text().splitlines(keepends=True) if known_hosts.exists() else []
    # Entries for this host with the same key type: a host may also list keys of other types.
    mine = [ln for ln in lines if ln.split()[:2] == [pattern, key_type]]
    if any(ln.split()[:3] == line.split()[:3] for ln in mine):
        return "unchanged"
    if mine and not replace:
        raise HostKeyError(
            f"{known_hosts} already has a different key for {pattern}",
            hint="if the node was reinstalled and you verified the new key, use --replace",
        )
    kept = [ln for ln in lines if ln not in mine]
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.write_text("".join(kept) + line)
    return "replaced" if mine else "added"
