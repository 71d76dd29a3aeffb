"""cau on the hosts of a self-updating lab: the cau of this machine, installed in the lab layer,
with /etc/cau/cau.toml naming the etcd store and the cluster (the coordinator of self-updating
mode runs on a cluster node and reaches every node, itself included, over SSH).

    /opt/cau/site/          cau and its runtime dependencies (pip install --target)
    /usr/local/bin/cau      #!/bin/sh + PYTHONPATH=/opt/cau/site exec /usr/bin/python3 -m cau "$@"
    /etc/cau/cau.toml       [store] (etcd on the hosts) and [clusters.<cluster>], 0600
    /etc/cau/id_ed25519     the lab's client key, 0600
    /etc/cau/known_hosts    every host's key (written once the hosts made theirs, at first boot)

The wheels are built with this machine's Python (the hosts run bookworm's python3 3.11, which
must be the same minor version) from cau's source tree: the `cau` package imported here must
come from a checkout (src/cau with pyproject.toml two levels up, as `./dev` installs it). cau's
own wheel is built at every `up` (the source changes); its dependencies, pinned to the versions
installed here, are kept as wheels in CACHE/wheels and, installed, in CACHE/cau-deps-KEY/
(KEY: a hash of cau's requirements, the pins, the Python version and platform), which every
`up` hard-links into the layer before installing cau's wheel on top.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import cau
from cau_lab import access, hosts
from cau_lab.config import LabConfig, LabError
from cau_lab.layer import make_dirs
from cau_lab.proc import Log, cache_lock, quiet, remove_tree, run

SITE = "/opt/cau/site"
WRAPPER = "/usr/local/bin/cau"
WRAPPER_TEXT = '#!/bin/sh\nPYTHONPATH=/opt/cau/site exec /usr/bin/python3 -m cau "$@"\n'
PLUGINS_COMMAND = "cau plugins --output json"
# Distributions of this environment never pinned for the hosts: cau itself (built from source)
# and the lab, which the hosts do not get.
_NOT_PINNED = {"cau", "cau-lab"}
# Unused dependency sites are removed after this long.
_DEPS_KEEP_SECONDS = 14 * 24 * 3600


# --- where cau comes from ------------------------------------------------------------------------


def project_root() -> Path:
    """cau's source tree: src/cau (the imported package) with cau's pyproject.toml two levels up."""
    package = Path(cau.__file__).resolve().parent
    root = package.parent.parent
    pyproject = root / "pyproject.toml"
    name = None
    if package.parent.name == "src" and pyproject.is_file():
        try:
            name = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name")
        except (OSError, tomllib.TOMLDecodeError):
            name = None
    if name != "cau":
        raise LabError(
            f"a self-updating lab installs this machine's cau on its hosts, built from cau's source "
            f"tree; but cau here ({package}) is not in one (no pyproject.toml of cau at {pyproject})",
            hint="run `cau lab` from an editable install of a cau checkout (`./dev` makes one in "
            ".venv: `pip install -e .` in the checkout)",
        )
    return root


def check_python(image: Path) -> None:
    """The hosts' python3 (the golden image's) has this Python's minor version: the wheels built
    here (cp311 extensions) must load there."""
    try:
        theirs = os.readlink(image / "usr/bin/python3")
    except OSError as exc:
        raise LabError(f"the lab image has no /usr/bin/python3 ({exc})") from exc
    mine = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if Path(theirs).name != mine:
        raise LabError(
            f"the lab's hosts run {Path(theirs).name}, this cau runs on {mine}: the wheels built "
            "here would not load there",
            hint=f"run `cau lab` with a cau installed for {Path(theirs).name}",
        )


# --- wheels -------------------------------------------------------------------------------------


def _pip(*args: str | Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    env.pop("PYTHONPATH", None)  # pip builds and installs for the hosts, not for this process
    return subprocess.run(
        [sys.executable, "-m", "pip", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _pip_failed(what: str, result: subprocess.CompletedProcess[str]) -> LabError:
    lines = [x for x in (result.stderr + result.stdout).splitlines() if x.strip()]
    shown = [x for x in lines if "ERROR" in x or "error" in x][-4:] or lines[-4:]
    return LabError(f"{what} failed (pip, exit {result.returncode}): " + " | ".join(shown))


def build_env(cfg: LabConfig, root: Path, log: Log = quiet) -> Path:
    """The Python of a cached virtual environment with cau's build requirements ([build-system]
    of its pyproject.toml), so building cau's wheel needs no isolated environment each time."""
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    requires = sorted(data.get("build-system", {}).get("requires", ["setuptools", "wheel"]))
    recipe = json.dumps({"python": list(sys.version_info[:2]), "requires": requires})
    env = cfg.cache_dir / f"cau-build-env-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"
    python = env / "bin" / "python"
    done = env / ".complete"
    with cache_lock(cfg.cache_dir, ".wheels.lock"):
        if done.exists():
            return python
        log(f"making the environment that builds cau's wheel ({', '.join(requires)})")
        remove_tree(env)  # a venv names its own path: made in place, marked complete at the end
        run([sys.executable, "-m", "venv", "--without-pip", env], timeout=120)
        result = _pip("--python", python, "install", "--quiet", *requires)
        if result.returncode != 0:
            raise _pip_failed(f"installing cau's build requirements ({', '.join(requires)})", result)
        done.touch()
    return python


def build_own_wheel(root: Path, out: Path, python: Path) -> Path:
    """cau's wheel, built from a copy of its source tree (a build in the tree itself would leave
    build/ and src/cau.egg-info there, and ship files of earlier builds from build/lib), with
    the build environment's python (see build_env)."""
    remove_tree(out)
    src = out / "src"
    src.mkdir(parents=True)
    for entry in root.iterdir():  # pyproject.toml, README, LICENSE (setuptools reads them)
        if entry.is_file():
            shutil.copy2(entry, src / entry.name)
    shutil.copytree(
        root / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    )
    dist = out / "dist"
    result = _pip(
        "--python", python, "wheel", "--no-deps", "--no-build-isolation", "--quiet", "--wheel-dir", dist, src
    )
    if result.returncode != 0:
        raise _pip_failed(f"building cau's wheel from {root}", result)
    wheels = sorted(dist.glob("cau-*.whl"))
    if len(wheels) != 1:
        raise LabError(f"building cau's wheel from {root} gave {len(wheels)} wheels in {dist}")
    remove_tree(src)
    return wheels[0]


def _wheel_metadata(wheel: Path) -> tuple[list[str], list[str]]:
    """(Requires-Dist lines, top-level names) of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = zf.read(meta_name).decode()
    requires = [
        line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")
    ]
    return requires, sorted({n.split("/", 1)[0] for n in names})


def environment_pins() -> list[str]:
    """name==version of every distribution of this environment (but cau and the lab): the hosts
    get cau's dependencies at exactly the versions installed here."""
    pins: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if not name:
            continue
        norm = name.lower().replace("_", "-").replace(".", "-")
        if norm not in _NOT_PINNED:
            pins.setdefault(norm, f"{norm}=={dist.version}")
    return sorted(pins.values())


def deps_key(requires: list[str], pins: list[str]) -> str:
    recipe: dict[str, Any] = {
        "python": list(sys.version_info[:2]),
        "platform": sysconfig.get_platform(),
        "requires": sorted(requires),
        "pins": pins,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def deps_site(cfg: LabConfig, own_wheel: Path, log: Log = quiet) -> Path:
    """cau's dependencies installed (for --target use), cached per deps_key: from the cached
    wheelhouse, which is filled from the package index when it lacks one."""
    requires, own_top = _wheel_metadata(own_wheel)
    pins = environment_pins()
    site = cfg.cache_dir / f"cau-deps-{deps_key(requires, pins)}"
    with cache_lock(cfg.cache_dir, ".wheels.lock"):
        if site.is_dir():
            os.utime(site)  # in use: not pruned
            return site
        house = cfg.cache_dir / "wheels"
        house.mkdir(parents=True, exist_ok=True)
        constraints = site.with_name(site.name + ".constraints.txt")
        constraints.write_text("\n".join(pins) + "\n")
        tmp = site.with_name(site.name + ".tmp")

        def install() -> subprocess.CompletedProcess[str]:
            remove_tree(tmp)
            return _pip(
                "install", "--quiet", "--no-index", "--find-links", house,
                "--constraint", constraints, "--target", tmp, own_wheel,
            )  # fmt: skip

        result = install()
        if result.returncode != 0:  # a dependency (version) the wheelhouse lacks: fetch it
            log(f"fetching cau's dependencies into {house} (pip wheel)")
            fetched = _pip("wheel", "--quiet", "--constraint", constraints, "--wheel-dir", house, own_wheel)
            for stale in house.glob(own_wheel.name.split("-", 1)[0] + "-*.whl"):
                stale.unlink()  # cau's own wheel is never taken from the wheelhouse
            if fetched.returncode != 0:
                raise _pip_failed("downloading cau's dependencies", fetched)
            result = install()
            if result.returncode != 0:
                raise _pip_failed(f"installing cau's dependencies from {house}", result)
        for name in [*own_top, "bin"]:  # cau itself is installed at every up, scripts are unused
            path = tmp / name
            if path.is_dir():
                remove_tree(path)
            else:
                path.unlink(missing_ok=True)
        tmp.rename(site)
        constraints.unlink(missing_ok=True)
        _prune(cfg.cache_dir, keep=site)
    return site


def _prune(cache_dir: Path, keep: Path) -> None:
    now = time.time()
    for old in cache_dir.glob("cau-deps-*"):
        if old != keep and old.is_dir() and now - old.stat().st_mtime > _DEPS_KEEP_SECONDS:
            remove_tree(old)


def _link_tree(src: Path, dest: Path) -> None:
    """A copy of src made of hard links (a plain copy across file systems)."""

    def link(a: str, b: str) -> object:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
        return b

    shutil.copytree(src, dest, symlinks=True, copy_function=link)


# --- the layer and the hosts ---------------------------------------------------------------------


def install(cfg: LabConfig, layer: Path, image: Path, log: Log = quiet) -> dict[str, float]:
    """cau, its dependencies, the wrapper and /etc/cau (all but known_hosts) in the lab layer.
    Returns how long each part took."""
    timings: dict[str, float] = {}
    t = time.monotonic()
    root = project_root()
    check_python(image)
    work = cfg.state_dir / "cau-build"
    own = build_own_wheel(root, work, build_env(cfg, root, log))
    timings["cau wheel"] = time.monotonic() - t
    t = time.monotonic()
    deps = deps_site(cfg, own, log)
    timings["dependencies"] = time.monotonic() - t
    t = time.monotonic()
    site = layer / SITE.lstrip("/")
    make_dirs(site.parent)
    _link_tree(deps, site)
    result = _pip("install", "--quiet", "--no-index", "--no-deps", "--target", site, own)
    if result.returncode != 0:
        raise _pip_failed(f"installing {own.name} into the lab layer", result)
    remove_tree(work)
    _write(layer / WRAPPER.lstrip("/"), WRAPPER_TEXT, 0o755)
    etc = layer / "etc/cau"
    make_dirs(etc, 0o700)
    _write(etc / "cau.toml", access.clusters_toml_text(cfg, on_host=True), 0o600)
    _write(etc / "id_ed25519", cfg.identity.read_text(), 0o600)
    timings["install"] = time.monotonic() - t
    return timings


def write_known_hosts(cfg: LabConfig, text: str) -> None:
    """/etc/cau/known_hosts on every host: the hosts' keys, as the lab's known_hosts has them."""
    for node in cfg.node_names:
        hosts.exec_in(
            cfg,
            node,
            f"umask 022 && cat > {access.HOST_KNOWN_HOSTS}.tmp"
            f" && mv {access.HOST_KNOWN_HOSTS}.tmp {access.HOST_KNOWN_HOSTS}",
            input=text,
            check=True,
        )


def plugins_here() -> list[dict[str, Any]]:
    """`cau plugins --output json` of this machine's cau."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAU_")}
    out = run([sys.executable, "-m", "cau", "plugins", "--output", "json"], env=env, timeout=120)
    data: list[dict[str, Any]] = json.loads(out.stdout)
    return data


def plugins_on(cfg: LabConfig, node: str) -> list[dict[str, Any]]:
    """`cau plugins --output json` on a host."""
    out = hosts.exec_in(cfg, node, PLUGINS_COMMAND, check=True, timeout=120)
    try:
        data: list[dict[str, Any]] = json.loads(out.stdout)
    except ValueError as exc:
        raise LabError(f"{node}: `{PLUGINS_COMMAND}` printed no JSON: {out.stdout[:200]!r}") from exc
    return data


def installed(views: list[dict[str, Any]]) -> set[tuple[str, str, str | None, str | None]]:
    """What the readiness check of self-updating mode compares: (kind, name, distribution,
    version) of each plug-in and provider that loads."""
    return {(v["kind"], v["name"], v.get("distribution"), v.get("version")) for v in views if v.get("ok")}


def check_same_cau(cfg: LabConfig, nodes: list[str]) -> None:
    """Every host's cau lists the same plug-ins and providers (distribution, version) as this
    machine's; LabError naming the hosts that differ and how."""
    with ThreadPoolExecutor(max_workers=len(nodes) + 1) as pool:  # about a second each
        here = pool.submit(plugins_here)
        there = list(pool.map(lambda n: plugins_on(cfg, n), nodes))
        mine = installed(here.result())
    differ = []
    for node, views in zip(nodes, there, strict=True):
        theirs = installed(views)
        said = [f"lacks {k} {n} ({d} {v})" for k, n, d, v in sorted(mine - theirs)]
        said += [f"has {k} {n} ({d} {v})" for k, n, d, v in sorted(theirs - mine)]
        if said:
            differ.append(f"{node}: " + ", ".join(said))
    if differ:
        raise LabError(
            "cau on the lab's hosts is not this machine's: " + "; ".join(differ),
            hint="plug-ins and providers of other distributions than cau are not installed on the hosts",
        )


def _write(path: Path, text: str, mode: int) -> None:
    if not path.parent.exists():
        make_dirs(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
