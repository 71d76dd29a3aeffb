"""How the rest of cau (and a person) reaches the lab: the client key, known_hosts with each
host's own host key, an ssh command line, and clusters.toml (the cluster config for cau).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from cau_lab import vmhosts
from cau_lab.config import LabConfig, LabError
from cau_lab.pacemaker import workloads
from cau_lab.proc import run


def ensure_client_key(cfg: LabConfig) -> Path:
    """The lab's client key (kept across `up`s), authorized for root on every host."""
    key = cfg.identity
    if not (key.exists() and key.with_name(key.name + ".pub").exists()):
        key.unlink(missing_ok=True)
        key.with_name(key.name + ".pub").unlink(missing_ok=True)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"cau-lab@{cfg.name}", "-f", key])
    key.chmod(0o600)
    return key


def host_key_line(public_key: str) -> tuple[str, str]:
    """(keytype, key) of an OpenSSH public key file's content (the comment dropped)."""
    parts = public_key.split()
    if len(parts) < 2 or not parts[0].startswith("ssh-"):
        raise LabError(f"not an OpenSSH public key: {public_key[:40]!r}")
    return parts[0], parts[1]


def write_known_hosts(cfg: LabConfig, keys: dict[str, tuple[str, str]]) -> Path:
    """One line per host: `<address> <keytype> <key>`."""
    lines = [f"{cfg.address(node)} {ktype} {key}" for node, (ktype, key) in keys.items()]
    _write(cfg.known_hosts, "\n".join(lines) + "\n", 0o644)
    return cfg.known_hosts


def ssh_argv(cfg: LabConfig, node: str, command: str, *, connect_timeout: float = 3) -> list[str]:
    """ssh to a host as root, checking its host key strictly against the lab's known_hosts."""
    return [
        "ssh",
        "-F", "/dev/null",  # neither the user's nor the machine's ssh config
        "-i", str(cfg.identity),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={cfg.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", f"ConnectTimeout={connect_timeout:g}",
        "-o", "LogLevel=ERROR",
        f"root@{cfg.address(node)}",
        command,
    ]  # fmt: skip


# Where a self-updating lab's hosts keep cau's config, the client key and known_hosts.
HOST_CONFIG = "/etc/cau/cau.toml"
HOST_IDENTITY = "/etc/cau/id_ed25519"
HOST_KNOWN_HOSTS = "/etc/cau/known_hosts"
STORE_PREFIX = "/cau/"
STORE_LEASE = 20


def store_config(cfg: LabConfig) -> dict[str, Any] | None:
    """The [store] of a self-updating lab: the etcd cluster on its hosts (None: cau's default)."""
    if not cfg.self_updating:
        return None
    return {
        "kind": "etcd",
        "options": {"endpoints": cfg.etcd_endpoints, "prefix": STORE_PREFIX},
        # a coordinator lost with its host is taken over from after 20 s, not cau's 5 minutes
        "lease": STORE_LEASE,
    }


def libvirt_options() -> dict[str, Any]:
    """The libvirt provider's own keys for the lab's hypervisors: what each host offers guests,
    how to migrate (the lab's own migrations, vmhosts.migrate, use them too)."""
    return {
        "guest_memory_mib": vmhosts.HOST_GUEST_MEMORY_MIB,
        "migrate_uri": vmhosts.MIGRATE_URI,
        "migrate_data_uri": vmhosts.MIGRATE_DATA_URI,
        # Measured on the lab (2 cores, TCG guests under 20 probes a second): QEMU's default
        # 300 ms downtime limit paused a guest 120-190 ms at the switch-over, and each probe
        # connecting meanwhile lost its SYN (3-4 failed 50 ms probes a migration); with these,
        # 10-60 ms and 0-1 failed probes, rarely 2-3. (10 ms was no better: 9-137 ms, and one
        # of 16 migrations left the guest's kernel with a general protection fault.)
        "max_downtime_ms": vmhosts.MAX_DOWNTIME_MS,
        "migrate_options": list(vmhosts.MIGRATE_OPTIONS),
    }


def cluster_config(cfg: LabConfig, *, on_host: bool = False) -> dict[str, Any]:
    """The config cau reads: the lab's cluster (and, self-updating, its etcd store). on_host:
    as cau on the lab's own hosts reads it (key and known_hosts under /etc/cau)."""
    cluster: dict[str, Any] = {
        "provider": "pacemaker" if cfg.pacemaker else "libvirt" if cfg.vm_hosts else "ssh",
        "plugins": ["apt"],
        "options": {
            "user": "root",
            "identity": HOST_IDENTITY if on_host else str(cfg.identity.absolute()),
            "known_hosts": HOST_KNOWN_HOSTS if on_host else str(cfg.known_hosts.absolute()),
            "boot_id_command": "cat /run/lab/boot_id",
            "reboot_command": "reboot",
            "nodes": [{"name": n, "host": cfg.address(n)} for n in cfg.node_names],
        },
    }
    # A Pacemaker cluster counts quorum votes itself; min_online is for a plain pool of hosts
    # (given on purpose, it is an extra floor for either).
    if not cfg.pacemaker or cfg.min_online is not None:
        cluster["options"]["min_online"] = cfg.effective_min_online
    if cfg.vm_hosts and not cfg.pacemaker:  # (with pacemaker: Pacemaker moves vm1, not cau)
        cluster["options"].update(libvirt_options())
        # one availability probe per guest; the role is the guest's (domain's) name
        cluster["probes"] = [
            {"role": g, "targets": [vmhosts.guest_url(cfg, g)], "interval": "50ms"} for g in cfg.guest_names
        ]
    if cfg.pacemaker:
        # availability probes, one per workload; the role is the Pacemaker resource id
        cluster["probes"] = [
            {"role": w.id, "targets": list(w.urls), "interval": "50ms"} for w in workloads(cfg)
        ]
    if cfg.self_updating:
        # every host runs an etcd member: the maintenance gate keeps a majority of them up
        cluster["store_members"] = list(cfg.node_names)
    data: dict[str, Any] = {"clusters": {cfg.cluster: cluster}}
    store = store_config(cfg)
    if store is not None:
        data["store"] = store
    return data


def clusters_toml_text(cfg: LabConfig, *, on_host: bool = False) -> str:
    """The config as the documented layout: one [[...nodes]] table per host. on_host: the
    /etc/cau/cau.toml of a self-updating lab's hosts (see cluster_config).

    (tomli_w would inline the node tables; the text is checked against the data instead.)"""
    data = cluster_config(cfg, on_host=on_host)
    cluster = data["clusters"][cfg.cluster]
    opts = cluster["options"]
    key = f"clusters.{cfg.cluster}"
    if on_host:
        lines = [
            f"# cau on the hosts of the self-updating lab '{cfg.name}' ({cfg.subnet}),"
            " written by `cau lab up`.",
            f"# Use (on a host): cau --config {HOST_CONFIG} status {cfg.cluster}",
        ]
    else:
        lines = [
            f"# cau lab '{cfg.name}' ({cfg.subnet}), written by `cau lab up`.",
            f"# Use: cau --config {cfg.clusters_toml.absolute()} scan {cfg.cluster}",
        ]
    if "store" in data:
        store = data["store"]
        lines += [
            "",
            "# runs, journals and locks: in the etcd cluster on the lab's hosts",
            "[store]",
            f"kind = {_value(store['kind'])}",
            f"options = {_value(store['options'])}",
            f"lease = {_value(store['lease'])}",
        ]
    lines += [
        "",
        f"[{key}]",
        f"provider = {_value(cluster['provider'])}",
        'plugins = ["apt"]',
    ]
    if "store_members" in cluster:
        lines.append(f"store_members = {_value(cluster['store_members'])}")
    lines += [
        "",
        f"[{key}.options]",
        *(f"{k} = {_value(v)}" for k, v in opts.items() if k != "nodes"),
    ]
    for node in opts["nodes"]:
        lines += ["", f"[[{key}.options.nodes]]", *(f"{k} = {_value(v)}" for k, v in node.items())]
    for probe in cluster.get("probes", []):
        lines += ["", f"[[{key}.probes]]", *(f"{k} = {_value(v)}" for k, v in probe.items())]
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != data:
        raise LabError("internal error: clusters.toml does not read back as written")
    return text


def _value(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def write_clusters_toml(cfg: LabConfig) -> Path:
    _write(cfg.clusters_toml, clusters_toml_text(cfg), 0o644)
    return cfg.clusters_toml


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
