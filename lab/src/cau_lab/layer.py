"""The lab's own layer of the hosts' root filesystem, between the golden image (below) and each
host's writable upper dir (above): the init, the service runner, the reboot shims, the client
key in root's authorized_keys, /etc/hosts for this lab's names, and sources.list pointing only
at the lab repositories. It is small and rebuilt by every `up`, so the cached image never has
to change when these files do.

The files come from `cau_lab/assets/rootfs/` (package data).
"""

from __future__ import annotations

import os
import shutil
from importlib.resources import as_file, files
from pathlib import Path

from cau_lab.config import LabConfig
from cau_lab.proc import remove_tree

# Where a script is executable; everything else is a 0644 file.
_EXECUTABLE_DIRS = ("usr/sbin", "usr/local/sbin", "usr/local/bin", "usr/lib/ocf/resource.d")
# Commands an admin (or cau) may call by absolute path: /sbin/reboot and friends point at the
# shims unless the image itself has them.
_ALIASES = {
    "usr/sbin/reboot": "../local/sbin/reboot",
    "usr/sbin/shutdown": "../local/sbin/shutdown",
    "usr/sbin/poweroff": "../local/sbin/poweroff",
    "usr/sbin/halt": "../local/sbin/halt",
    "usr/bin/systemctl": "../local/bin/systemctl",
}


def assets_dir() -> Path:
    """The assets folder; an editable or regular install both have it on disk."""
    with as_file(files("cau_lab") / "assets") as path:
        return Path(path)


def build_layer(cfg: LabConfig, image: Path) -> Path:
    """(Re)write the lab layer. Only while no host runs (it is an overlay lower dir)."""
    layer = cfg.layer_dir
    remove_tree(layer)
    src = assets_dir() / "rootfs"
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        dest = layer / rel
        if path.is_dir():
            make_dirs(dest)
            continue
        make_dirs(dest.parent)
        shutil.copyfile(path, dest)
        executable = any(str(rel).startswith(d + "/") for d in _EXECUTABLE_DIRS)
        dest.chmod(0o755 if executable else 0o644)
    for rel_alias, target in _ALIASES.items():
        if not (image / rel_alias).exists() and not (image / rel_alias).is_symlink():
            make_dirs((layer / rel_alias).parent)
            (layer / rel_alias).symlink_to(target)
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{addr} {node}" for node, addr in cfg.addresses.items()]
    _write(layer / "etc/hosts", "\n".join(hosts) + "\n", 0o644)
    # The merged /root takes its mode from the topmost layer that has it: keep it private,
    # or sshd's StrictModes refuses the key.
    make_dirs(layer / "root", 0o700)
    make_dirs(layer / "root/.ssh", 0o700)
    pub = cfg.identity.with_name(cfg.identity.name + ".pub").read_text()
    _write(layer / "root/.ssh/authorized_keys", pub, 0o600)
    return layer


def make_dirs(path: Path, mode: int = 0o755) -> None:
    """mkdir -p with explicit modes: the merged view shows the topmost layer's directory mode."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir()
        os.chmod(d, 0o755)
    os.chmod(path, mode)


def _write(path: Path, text: str, mode: int) -> None:
    make_dirs(path.parent, 0o700 if path.parent.name in (".ssh", "root") else 0o755)
    path.write_text(text)
    path.chmod(mode)
