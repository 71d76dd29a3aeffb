"""How the rest of cau (and a person) reaches the lab: the client key, known_hosts with each
host's own host key, an ssh command line, and clusters.toml (the cluster config for cau).
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

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


def cluster_config(cfg: LabConfig) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "provider": "pacemaker" if cfg.pacemaker else "ssh",
        "plugins": ["apt"],
        "options": {
            "user": "root",
            "identity": str(cfg.identity.absolute()),
            "known_hosts": str(cfg.known_hosts.absolute()),
            "boot_id_command": "cat /run/lab/boot_id",
            "reboot_command": "reboot",
            "nodes": [{"name": n, "host": cfg.address(n)} for n in cfg.node_names],
        },
    }
    # A Pacemaker cluster counts quorum votes itself; min_online is for a plain pool of hosts
    # (given on purpose, it is an extra floor for either).
    if not cfg.pacemaker or cfg.min_online is not None:
        cluster["options"]["min_online"] = cfg.effective_min_online
    if cfg.pacemaker:
        # availability probes, one per workload; the role is the Pacemaker resource id
        cluster["probes"] = [
            {"role": w.id, "targets": list(w.urls), "interval": "50ms"} for w in workloads(cfg)
        ]
    return {"clusters": {cfg.cluster: cluster}}


def clusters_toml_text(cfg: LabConfig) -> str:
    """The config as the documented layout: one [[...nodes]] table per host.

    (tomli_w would inline the node tables; the text is checked against the data instead.)"""
    data = cluster_config(cfg)
    cluster = data["clusters"][cfg.cluster]
    opts = cluster["options"]
    key = f"clusters.{cfg.cluster}"
    lines = [
        f"# cau lab '{cfg.name}' ({cfg.subnet}), written by `cau lab up`.",
        f"# Use: cau --config {cfg.clusters_toml.absolute()} scan {cfg.cluster}",
        "",
        f"[{key}]",
        f"provider = {_value(cluster['provider'])}",
        'plugins = ["apt"]',
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
