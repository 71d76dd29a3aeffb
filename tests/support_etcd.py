"""A real 3-member etcd cluster for the tests, from Debian's `etcd-server`, on loopback.

Each member has its own data directory under the test's tmp dir and its own free ports; members
are started and ended by their PID (never by name: another test, or a real etcd, may be running).
Heartbeat and election timeouts are short so that losing a member, or quorum, shows in well under
a second rather than the defaults' several seconds.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ETCD = "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class EtcdCluster:
    root: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        if not Path(ETCD).exists():
            raise RuntimeError(
                f"{ETCD} is missing: install Debian's etcd-server (`./dev test` does, as root)"
            )
        for i in range(self.size):
            name = f"m{i}"
            self.members.append(
                Member(name, free_port(), free_port(), self.root / name, self.root / f"{name}.log")
            )
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = f"cau-test-{uuid.uuid4().hex[:8]}"  # members of another test cluster never join this one
        for m in self.members:
            m.data_dir.mkdir(parents=True, mode=0o700)
            args = [
                ETCD,
                f"--name={m.name}",
                f"--data-dir={m.data_dir}",
                f"--listen-client-urls={m.endpoint}",
                f"--advertise-client-urls={m.endpoint}",
                f"--listen-peer-urls={m.peer_url}",
                f"--initial-advertise-peer-urls={m.peer_url}",
                f"--initial-cluster={initial}",
                f"--initial-cluster-token={token}",
                "--initial-cluster-state=new",
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--logger=zap",
                "--log-outputs=stderr",
            ]
            with m.log.open("ab") as log:
                m.process = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        """Until every running member answers and the cluster has a leader."""
        deadline = time.monotonic() + timeout
        while True:
            problems = []
            for m in self.members:
                if not m.alive:
                    if m.process is not None and m.process.returncode is not None:
                        raise RuntimeError(f"etcd member {m.name} exited: {m.log.read_text()[-2000:]}")
                    continue
                try:
                    health = httpx.get(f"{m.endpoint}/health", timeout=1.0).json()
                    if health.get("health") != "true":
                        problems.append(f"{m.name}: {health}")
                except httpx.HTTPError as exc:
                    problems.append(f"{m.name}: {exc}")
            if not problems:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test etcd cluster did not become healthy: {problems}")
            time.sleep(0.1)

    def leader(self) -> Member:
        """The member raft elected (each member's status names its own id and the leader's)."""
        ids: dict[str, Member] = {}
        leader = None
        for m in self.members:
            if m.alive:
                status = httpx.post(f"{m.endpoint}/v3/maintenance/status", json={}, timeout=2.0).json()
                ids[status["header"]["member_id"]] = m
                leader = status["leader"]
        assert leader in ids, "no leader among the running members"
        return ids[leader]

    def kill(self, member: Member) -> None:
        """SIGKILL by PID: a member that dies without a word (power cut, OOM killer)."""
        assert member.process is not None
        os.kill(member.process.pid, signal.SIGKILL)
        member.process.wait()

    def stop(self) -> None:
        """Every member, by PID. SIGKILL: their data is thrown away with the tmp dir, and a
        graceful stop of all at once waits seconds on leadership transfers that cannot happen."""
        for m in self.members:
            if m.alive:
                self.kill(m)
