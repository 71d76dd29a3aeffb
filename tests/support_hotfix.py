"""Build hotfix root folders for tests: scripts that leave a trace, rules, a manifest."""

from __future__ import annotations

import hashlib
from pathlib import Path

CONFIG = """
installer_timeout = "5m"

[[rules]]
match = "*.sh"
command = "sh $update$"
success = [0]
success_restart_needed = [100]
already_installed = [17]

[[rules]]
folder = "firmware"
match = "*.cap"
command = "sh $update$"
always_restart = true
"""


def script(trace: str, code: int = 0) -> str:
    """A hotfix that appends `<its name> <node>` to the trace file, then exits with `code`."""
    # staged copies are named <digest>-<name>: the trace shows the name
    return f'#!/bin/sh\necho "$(basename "$0" | sed "s/^[0-9a-f]*-//") $(hostname)" >> {trace}\nexit {code}\n'


def write_manifest(root: Path) -> None:
    lines = []
    for path in sorted(
        p for p in root.rglob("*") if p.is_file() and p.name not in ("SHA256SUMS", "hotfix.toml")
    ):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines.append(f"{digest}  {path.relative_to(root).as_posix()}\n")
    (root / "SHA256SUMS").write_text("".join(lines))


def hotfix_root(root: Path, trace: str, *, node: str = "node1") -> Path:
    """_all/fix.sh (ok), _all/firmware/bios.cap (always restart), _all/readme.txt (no rule),
    <node>/only.sh (success, restart needed), other/other.sh (another node's)."""
    for folder in ("_all/firmware", node, "other"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "hotfix.toml").write_text(CONFIG)
    (root / "_all" / "fix.sh").write_text(script(trace))
    (root / "_all" / "firmware" / "bios.cap").write_text(script(trace))
    (root / "_all" / "readme.txt").write_text("not a hotfix\n")
    (root / node / "only.sh").write_text(script(trace, 100))
    (root / "other" / "other.sh").write_text(script(trace))
    write_manifest(root)
    root.chmod(0o755)
    return root
