"""The lab's apt repositories and their test packages.

Two flat repositories, mounted read-only into every host at /srv/labrepo:
    <state>/repo         `deb [trusted=yes] file:/srv/labrepo ./`        (the image's only source)
    <state>/repo/extra   `deb [trusted=yes] file:/srv/labrepo/extra ./`  (enabled by labrelease 1.1)

The standard packages, published at an OLD (1.0) and a NEW (1.1) version:
    labpkg      1.0 -> 1.1   its postinst asks for a restart on upgrade (/var/run/reboot-required)
    labtool     1.0 -> 1.1   a plain upgrade
    labrelease  1.0 -> 1.1   1.1's postinst adds /etc/apt/sources.list.d/lab-extra.list
    labextra    1.0 -> 1.1   1.1 is only in the extra repository: a second-order upgrade that
                             appears after the first upgrade and a new `apt-get update`
Hosts start with every OLD version installed. Tests add their own packages (a failing
postinst, a dependency, ...) with `Repo.add(PackageSpec(...))`; the helpers at the end build
the common failure modes.

The repository directory is bind-mounted into running hosts, so it is always changed in place
(never replaced), and each index file is written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cau_lab.config import LabConfig, LabError
from cau_lab.proc import run

MAINTAINER = "CAU lab <lab@cau-lab.invalid>"  # marks every package the lab built
OLD, NEW = "1.0", "1.1"
STANDARD = ("labpkg", "labtool", "labrelease", "labextra")
EXTRA_LIST = "/etc/apt/sources.list.d/lab-extra.list"
EXTRA_SOURCE = "deb [trusted=yes] file:/srv/labrepo/extra ./"
# Fixed timestamps keep a rebuilt .deb byte-identical: a host holding an older index must
# never see a different file under the same name and version ("Hash Sum mismatch").
_EPOCH = 1_700_000_000


@dataclass(frozen=True)
class PackageSpec:
    """A test package. Scripts are shell bodies (`#!/bin/sh` and `set -e` are added)."""

    name: str
    version: str
    description: str = "cau lab test package"
    depends: str | None = None
    preinst: str | None = None
    postinst: str | None = None
    prerm: str | None = None
    postrm: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)  # absolute path -> content
    architecture: str = "all"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", self.name):
            raise LabError(f"package name '{self.name}' is not a valid Debian package name")
        if not re.fullmatch(r"[0-9][A-Za-z0-9.+~:-]*", self.version):
            raise LabError(f"version '{self.version}' is not a valid Debian version")

    @property
    def filename(self) -> str:
        version = self.version.split(":", 1)[-1]  # an epoch is not part of the file name
        return f"{self.name}_{version}_{self.architecture}.deb"


def build_deb(spec: PackageSpec, out_dir: Path) -> Path:
    """Build spec with dpkg-deb into out_dir (kept when it exists: same name, same bytes)."""
    target = out_dir / spec.filename
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="labpkg-") as tmp:
        root = Path(tmp) / "pkg"
        debian = root / "DEBIAN"
        debian.mkdir(parents=True)
        files = {f"/usr/share/{spec.name}/VERSION": spec.version + "\n", **spec.files}
        for path, content in files.items():
            dest = root / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content)
        control = [
            f"Package: {spec.name}",
            f"Version: {spec.version}",
            f"Architecture: {spec.architecture}",
            f"Maintainer: {MAINTAINER}",
            "Priority: optional",
            "Section: misc",
        ]
        if spec.depends:
            control.append(f"Depends: {spec.depends}")
        control.append(f"Description: {spec.description}\n Built by cau's lab (cau_lab.repo).")
        (debian / "control").write_text("\n".join(control) + "\n")
        for script in ("preinst", "postinst", "prerm", "postrm"):
            body = getattr(spec, script)
            if body is not None:
                script_file = debian / script
                script_file.write_text(f"#!/bin/sh\nset -e\n{body.strip()}\nexit 0\n")
                script_file.chmod(0o755)
        for entry in root.rglob("*"):
            os.utime(entry, (_EPOCH, _EPOCH), follow_symlinks=False)
        tmp_target = out_dir / (spec.filename + ".tmp")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(_EPOCH)}
        run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", root, tmp_target], env=env)
        tmp_target.replace(target)
    return target


class Repo:
    """A flat apt repository: debs in pool/, indexes (Packages, Packages.gz, Release) at the top."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def pool(self) -> Path:
        return self.path / "pool"

    def add(self, *specs: PackageSpec, index: bool = True) -> list[Path]:
        debs = [build_deb(spec, self.pool) for spec in specs]
        if index:
            self.index()
        return debs

    def remove(self, name: str, version: str | None = None, *, index: bool = True) -> None:
        for deb in self.pool.glob(f"{name}_*.deb"):
            fields = self._fields(deb)
            if fields["Package"] == name and (version is None or fields["Version"] == version):
                deb.unlink()
        if index:
            self.index()

    def clear(self) -> None:
        """Empty the repository in place (it may be mounted in running hosts)."""
        self.pool.mkdir(parents=True, exist_ok=True)
        for deb in self.pool.glob("*.deb"):
            deb.unlink()
        self.index()

    def packages(self) -> list[tuple[str, str]]:
        """(name, version) of every package in the pool."""
        return sorted((f["Package"], f["Version"]) for f in map(self._fields, self._debs()))

    def _debs(self) -> list[Path]:
        return sorted(self.pool.glob("*.deb")) if self.pool.is_dir() else []

    @staticmethod
    def _fields(deb: Path) -> dict[str, str]:
        out = run(["dpkg-deb", "--field", deb, "Package", "Version"]).stdout
        return dict(line.split(": ", 1) for line in out.strip().splitlines())

    def index(self) -> None:
        """Write Packages, Packages.gz and Release (what dpkg-scanpackages + apt-ftparchive do)."""
        self.pool.mkdir(parents=True, exist_ok=True)
        stanzas = []
        for deb in self._debs():
            control = run(["dpkg-deb", "--field", deb]).stdout.rstrip("\n")
            data = deb.read_bytes()
            stanzas.append(
                f"{control}\n"
                f"Filename: pool/{deb.name}\n"
                f"Size: {len(data)}\n"
                f"MD5sum: {hashlib.md5(data).hexdigest()}\n"
                f"SHA256: {hashlib.sha256(data).hexdigest()}\n"
            )
        packages = "\n".join(stanzas).encode()
        packages_gz = gzip.compress(packages, compresslevel=9, mtime=0)
        date = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S UTC")
        md5 = [f" {hashlib.md5(b).hexdigest()} {len(b)} {n}" for n, b in _files(packages, packages_gz)]
        sha = [f" {hashlib.sha256(b).hexdigest()} {len(b)} {n}" for n, b in _files(packages, packages_gz)]
        release = (
            "Origin: cau-lab\nLabel: cau-lab\n"
            f"Date: {date}\nMD5Sum:\n" + "\n".join(md5) + "\nSHA256:\n" + "\n".join(sha) + "\n"
        )
        _write_atomic(self.path / "Packages", packages)
        _write_atomic(self.path / "Packages.gz", packages_gz)
        _write_atomic(self.path / "Release", release.encode())  # last: it names the others' hashes


def _files(packages: bytes, packages_gz: bytes) -> list[tuple[str, bytes]]:
    return [("Packages", packages), ("Packages.gz", packages_gz)]


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


# --- the standard packages ---------------------------------------------------------------------


def labpkg(version: str) -> PackageSpec:
    # An *upgrade* asks for a restart ($2 is the version configured before; a first install
    # or a downgrade -- the lab's package reset -- does not).
    return PackageSpec(
        "labpkg",
        version,
        description="cau lab package whose upgrade asks for a restart",
        postinst=f"""
if [ "$1" = configure ] && [ -n "$2" ] && dpkg --compare-versions "$2" lt "{version}"; then
    touch /var/run/reboot-required
    echo labpkg >> /var/run/reboot-required.pkgs
fi""",
    )


def labtool(version: str) -> PackageSpec:
    return PackageSpec("labtool", version, description="cau lab package with a plain upgrade")


def labrelease(version: str) -> PackageSpec:
    if version == OLD:
        return PackageSpec("labrelease", version, description="cau lab release package")
    # Like a distribution's release package that brings a new repository: what it enables
    # becomes visible only after it is installed and apt's lists are updated again.
    return PackageSpec(
        "labrelease",
        version,
        description="cau lab release package that enables the extra repository",
        postinst=f"""
if [ "$1" = configure ]; then
    echo '{EXTRA_SOURCE}' > {EXTRA_LIST}
fi""",
        postrm=f"""
if [ "$1" = remove ] || [ "$1" = purge ]; then rm -f {EXTRA_LIST}; fi""",
    )


def labextra(version: str) -> PackageSpec:
    return PackageSpec("labextra", version, description="cau lab package from the extra repository")


def old_packages() -> list[PackageSpec]:
    return [labpkg(OLD), labtool(OLD), labrelease(OLD), labextra(OLD)]


# --- failure modes for tests -------------------------------------------------------------------


def failing_postinst(name: str = "labbroken", version: str = NEW, exit_code: int = 1) -> PackageSpec:
    """A package whose configuration fails (dpkg leaves it half-configured, apt exits non-zero)."""
    return PackageSpec(
        name,
        version,
        description="cau lab package whose postinst fails",
        postinst=f'echo "{name}: postinst fails on purpose" >&2\nexit {exit_code}',
    )


def failing_preinst(name: str = "labbroken", version: str = NEW, exit_code: int = 1) -> PackageSpec:
    """A package that refuses to unpack (the old version stays installed)."""
    return PackageSpec(
        name,
        version,
        description="cau lab package whose preinst fails",
        preinst=f'echo "{name}: preinst fails on purpose" >&2\nexit {exit_code}',
    )


def restart_package(name: str, version: str) -> PackageSpec:
    """Like labpkg, under another name: its upgrade asks for a restart."""
    spec = labpkg(version)
    return PackageSpec(
        name,
        version,
        description=spec.description,
        postinst=(spec.postinst or "").replace("echo labpkg", f"echo {name}"),
    )


# --- the lab's repositories --------------------------------------------------------------------


class LabRepos:
    """The main and the extra repository of one lab."""

    def __init__(self, cfg: LabConfig) -> None:
        self.main = Repo(cfg.repo_dir)
        self.extra = Repo(cfg.repo_dir / "extra")

    def reset(self) -> None:
        """Only the OLD versions: what `up --old-only` publishes."""
        self.extra.clear()
        self.main.clear()
        self.publish_old()

    def publish_old(self) -> None:
        """Withdraw the NEW versions (the OLD ones stay: hosts are reset from them)."""
        self.main.add(*old_packages(), index=False)
        for name in ("labpkg", "labtool", "labrelease"):
            self.main.remove(name, NEW, index=False)
        self.main.index()
        self.extra.remove("labextra", NEW)

    def publish_new(self) -> None:
        self.main.add(*old_packages(), labpkg(NEW), labtool(NEW), labrelease(NEW))
        self.extra.add(labextra(NEW))

    def old_debs(self) -> list[str]:
        """Paths, as a host sees them, of the OLD standard packages."""
        return [f"/srv/labrepo/pool/{spec.filename}" for spec in old_packages()]

    def published(self) -> dict[str, list[tuple[str, str]]]:
        return {"main": self.main.packages(), "extra": self.extra.packages()}
