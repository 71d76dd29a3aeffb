"""etcd on the hosts of a self-updating lab (`cau lab up --pacemaker --self-updating`): one
member of a 3.4 cluster (Debian's etcd-server, in the golden image) on every host, the store
that keeps cau's runs, journals and locks on the cluster's own nodes.

Each host gets /etc/default/etcd (its member's name and addresses, every member of the
cluster, the lab's name as the cluster token) and the lab-service `etcd` (run as user etcd),
enabled: lab-init starts it at every boot. The data dir, /var/lib/etcd/default, is on the host's
disk (its overlay upper dir), so a member comes back after a reboot or a hard power-off with
its data. Clients reach a member at http://ADDRESS:2379 (the root namespace too, through the
bridge) and at http://127.0.0.1:2379 inside its host.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import httpx

from cau_lab import hosts
from cau_lab.config import LabConfig, LabError

CLIENT_PORT = 2379
PEER_PORT = 2380
DATA_DIR = "/var/lib/etcd/default"
ENV_FILE = "/etc/default/etcd"
HEARTBEAT_MS = 100
ELECTION_MS = 1000
T = TypeVar("T")


def env_file(cfg: LabConfig, node: str) -> str:
    """/etc/default/etcd of one host (as in the lab recipe, README §5)."""
    addr = cfg.address(node)
    cluster = ",".join(f"{n}=http://{a}:{PEER_PORT}" for n, a in cfg.addresses.items())
    return f"""# etcd member of the self-updating lab '{cfg.name}', written by `cau lab up`
ETCD_NAME={node}
ETCD_DATA_DIR={DATA_DIR}
ETCD_LISTEN_PEER_URLS=http://{addr}:{PEER_PORT}
ETCD_LISTEN_CLIENT_URLS=http://{addr}:{CLIENT_PORT},http://127.0.0.1:{CLIENT_PORT}
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{addr}:{PEER_PORT}
ETCD_ADVERTISE_CLIENT_URLS=http://{addr}:{CLIENT_PORT}
ETCD_INITIAL_CLUSTER={cluster}
# harmless on later starts: a member whose data dir exists rejoins with its data
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN={cfg.name}
ETCD_HEARTBEAT_INTERVAL={HEARTBEAT_MS}
ETCD_ELECTION_TIMEOUT={ELECTION_MS}
"""


def endpoint(cfg: LabConfig, node: str) -> str:
    return f"http://{cfg.address(node)}:{CLIENT_PORT}"


def setup(cfg: LabConfig) -> None:
    """Configure, enable and start the member on every host (without waiting for health)."""

    def one(node: str) -> None:
        hosts.exec_in(
            cfg,
            node,
            f"umask 022 && cat > {ENV_FILE}.tmp && mv {ENV_FILE}.tmp {ENV_FILE}"
            " && systemctl enable etcd && systemctl start etcd",
            input=env_file(cfg, node),
            check=True,
            timeout=60,
        )

    _parallel(one, cfg.node_names)


def start(cfg: LabConfig) -> None:
    """Start the member on every host where it is not running (a test may have stopped one)."""
    _parallel(lambda n: hosts.exec_in(cfg, n, "systemctl start etcd", check=True), cfg.node_names)


def health(cfg: LabConfig, node: str, timeout: float = 2.0) -> str | None:
    """None when the member answers healthy (GET /health, from the root namespace); else why not."""
    url = f"{endpoint(cfg, node)}/health"
    try:
        resp = httpx.get(url, timeout=timeout, trust_env=False)  # no proxy: the lab's own bridge
    except httpx.HTTPError as exc:
        return f"{url}: {exc.__class__.__name__}: {exc}".rstrip(": ")
    try:
        healthy = resp.status_code == 200 and resp.json().get("health") == "true"
    except ValueError:
        healthy = False
    return None if healthy else f"{url}: HTTP {resp.status_code} {resp.text.strip()[:120]}"


def wait_healthy(cfg: LabConfig, timeout: float = 60, nodes: list[str] | None = None) -> None:
    """Until every member (of nodes, default all) answers healthy; LabError naming the others."""
    targets = list(nodes or cfg.node_names)
    deadline = time.monotonic() + timeout
    while True:
        problems = dict(zip(targets, _parallel(lambda n: health(cfg, n), targets), strict=True))
        sick = {n: why for n, why in problems.items() if why is not None}
        if not sick:
            return
        if time.monotonic() > deadline:
            node = next(iter(sick))
            raise LabError(
                f"etcd member{'s' if len(sick) > 1 else ''} {', '.join(sick)} not healthy after "
                f"{timeout:g} s: " + "; ".join(f"{n}: {why}" for n, why in sick.items()),
                hint=f"see the member's log: `cau lab exec {node} -- tail /var/log/lab/etcd.log`",
            )
        time.sleep(0.1)


def clear(cfg: LabConfig, node: str | None = None) -> None:
    """Delete every key (the store as `up` left it: empty)."""
    target = node or next(n for n in cfg.node_names if hosts.booted(cfg, n))
    hosts.exec_in(cfg, target, "etcdctl del '' --from-key=true >/dev/null", check=True, timeout=30)


def _parallel(fn: Callable[[str], T], nodes: list[str]) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        return list(pool.map(fn, nodes))
