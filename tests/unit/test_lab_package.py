"""The lab is its own distribution (cau-lab, lab/): it adds `cau lab` through the `cau.commands`
entry point group and uses only cau's public modules, never cau's CLI internals."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata


def test_cau_lab_registers_the_lab_commands() -> None:
    (lab,) = [ep for ep in metadata.entry_points(group="cau.commands") if ep.name == "lab"]
    assert lab.value == "cau_lab.cli:lab_app"
    assert lab.dist is not None and lab.dist.name == "cau-lab"


def test_the_lab_does_not_import_cau_cli() -> None:
    probe = "import sys, cau_lab.cli; print(sorted(m for m in sys.modules if m.startswith('cau.cli')))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "[]"
