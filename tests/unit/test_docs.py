"""The repository's documents stand on their own: every link in the README and docs/ resolves to a
file of this repository, every source path the architecture names exists, and the license the
packages declare is the one shipped."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_relative_link_points_inside_the_repository() -> None:
    broken = []
    for doc in _documents():
        for target in LINK.findall(doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            path = (doc.parent / target).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []


def test_the_architecture_names_only_modules_that_exist() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:engine|journal|store|providers|plugins)/[a-z_]+\.py)`", text))
    assert named, "the architecture names modules"
    missing = [n for n in named if not (ROOT / "src" / "cau" / n).exists()]
    assert missing == []


def test_the_declared_license_is_the_one_shipped() -> None:
    for project in (ROOT / "pyproject.toml", ROOT / "lab" / "pyproject.toml"):
        declared = tomllib.loads(project.read_text())["project"]["license"]
        assert declared == "Apache-2.0", project
    assert (
        "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0" in (ROOT / "LICENSE").read_text()
    )
