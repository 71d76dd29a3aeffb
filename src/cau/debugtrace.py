"""`cau debug-trace` (Save-CauDebugTrace): one zip an operator can send to support.

What goes in, each file listed in `manifest.json` with where it came from:

  run/          the run's record, journal (JSON lines), report (JSON, HTML, CSV)
  coordinator/  versions (cau, Python, OS, plug-ins, providers, stores), the tail of cau's log
  config/       the clusters config file, the cluster's settings and its default profile
  cluster/      what the provider sees now (nodes, roles), the cluster lock; a sandbox's state
  nodes/NODE/   from each node, over its provider's session: package manager logs and state,
                uptime, boot id (the provider's, as cau sees restarts), pending reboot, disk
                space, the cluster manager's status

Everything is masked on its way in by the rules cau masks with everywhere (cau.redact: the
secrets' values, then whatever looks like a password, token or key); a secrets file is never
read into it. A node that cannot be reached, or a command that fails, gives an error file for
that node, listed under `missing` in the manifest: the bundle is still made.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from cau import __version__
from cau.domain.cluster import ClusterSnapshot
from cau.domain.runs import LockInfo, ReportQuery, RunRecord
from cau.errors import AuthError, CauError, ConfigError, HostKeyError, NameTaken, NodeUnreachable
from cau.logfile import log_path, tail
from cau.ports import ClusterProvider, Transport
from cau.redact import mask_values, redact, redact_data

if TYPE_CHECKING:
    from cau.service import Service

SCHEMA_VERSION: Literal[1] = 1
COMMAND_TIMEOUT = 30.0  # seconds, each node command
LOG_LINES = 500  # the tail of each log file on a node
LOG_BYTES = 512 * 1024  # the tail of cau's own log

# Distributions whose versions matter when reading a trace (besides the plug-ins').
_DEPENDENCIES = ("pydantic", "asyncssh", "typer", "fastapi", "uvicorn", "httpx", "etcd3", "jinja2")


# --- the manifest ------------------------------------------------------------------------------------


class BundleFile(BaseModel):
    path: str = Field(description="Its path in the zip, under the bundle's folder.")
    source: str = Field(description="Where it came from: a store, a file, a node's command.")
    size: int
    exit_status: int | None = Field(None, description="A node command's exit status.")


class MissingPart(BaseModel):
    part: str = Field(description="What could not be collected, e.g. 'node n2' or 'node n1: dpkg.log'.")
    error: str
    file: str | None = Field(None, description="The error file in the zip, when there is one.")


class Manifest(BaseModel):
    """What a debug trace holds (its `manifest.json`)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    cau_version: str = __version__
    created: datetime
    created_by: str
    cluster: str
    provider: str | None = None
    run_id: str | None = None
    folder: str = Field(description="The folder in the zip that holds every file.")
    files: list[BundleFile] = []
    missing: list[MissingPart] = []
    notes: list[str] = []


class TraceBundle:
    """The bundle being collected, in memory: every file masked as it is added."""

    def __init__(self, cluster: str, created: datetime, created_by: str) -> None:
        self.manifest = Manifest(
            created=created,
            created_by=created_by,
            cluster=cluster,
            folder=f"cau-debug-trace-{cluster}-{created:%Y%m%d-%H%M%S}",
        )
        self._files: dict[str, bytes] = {}

    def _put(self, path: str, text: str, source: str, exit_status: int | None = None) -> None:
        data = text.encode("utf-8")
        self._files[path] = data
        self.manifest.files = [f for f in self.manifest.files if f.path != path]
        self.manifest.files.append(
            BundleFile(path=path, source=redact(source), size=len(data), exit_status=exit_status)
        )

    def add_text(self, path: str, text: str, source: str, *, exit_status: int | None = None) -> None:
        self._put(path, redact(text), source, exit_status)

    def add_json(self, path: str, data: Any, source: str) -> None:
        plain = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        self._put(path, mask_values(json.dumps(redact_data(plain), indent=2, default=str)) + "\n", source)

    def add_lines(self, path: str, items: list[BaseModel], source: str) -> None:
        """JSON lines: one model per line (the journal)."""
        lines = (mask_values(json.dumps(redact_data(i.model_dump(mode="json")))) for i in items)
        self._put(path, "".join(line + "\n" for line in lines), source)

    def miss(self, part: str, error: str, *, path: str | None = None, source: str = "") -> None:
        """A part that could not be collected; with `path`, an error file saying why."""
        error = redact(error)
        if path is not None:
            self._put(path, f"{part}: not collected\n{error}\n", source or part)
        self.manifest.missing.append(MissingPart(part=redact(part), error=error, file=path))

    def note(self, text: str) -> None:
        self.manifest.notes.append(redact(text))

    @property
    def paths(self) -> list[str]:
        return list(self._files)

    def zip_bytes(self) -> bytes:
        """The zip: `manifest.json` first, then every file, all under the bundle's folder."""
        out = io.BytesIO()
        stamp = self.manifest.created.timetuple()[:6]
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            manifest = self.manifest.model_dump_json(indent=2) + "\n"
            for name, data in [("manifest.json", mask_values(manifest).encode()), *self._files.items()]:
                info = zipfile.ZipInfo(f"{self.manifest.folder}/{name}", date_time=stamp)
                info.external_attr = 0o600 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data)
        return out.getvalue()


def write_bundle(data: bytes, path: Path, *, force: bool) -> None:
    """Write the zip to `path` at once or not at all (a temporary file in the same folder,
    mode 0600, then renamed); an existing file is replaced only with `force`."""
    folder = path.parent
    if not folder.is_dir():
        raise ConfigError(f"cannot write {path}: {folder} is not a directory", hint="create it, or choose -o")
    if path.exists() and not force:
        raise _exists(path)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if force:
            tmp.replace(path)
            return
        try:
            os.link(tmp, path)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            raise _exists(path) from None
        except OSError:  # a file system without hard links
            if path.exists():
                raise _exists(path) from None
            tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _exists(path: Path) -> NameTaken:
    return NameTaken(f"{path} exists; nothing was written", hint="--force replaces it, or choose another -o")


# --- what each node gives --------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeCommand:
    file: str  # under nodes/NODE/
    command: str
    needs: str | None = None  # a program the node must have; skipped (a note) when it has none


def _log_tail(path: str) -> str:
    return f"if [ -e {path} ]; then tail -n {LOG_LINES} {path}; else echo '({path} does not exist)'; fi"


NODE_COMMANDS: tuple[NodeCommand, ...] = (
    NodeCommand("uptime.txt", "uptime"),
    NodeCommand(
        "reboot-required.txt",
        "if [ -e /run/reboot-required ]; then echo 'a reboot is required'; "
        "cat /run/reboot-required.pkgs 2>/dev/null; else echo 'no /run/reboot-required'; fi",
    ),
    NodeCommand("disk.txt", "df -hP"),
    NodeCommand("os-release.txt", "cat /etc/os-release"),
    # apt / dpkg
    NodeCommand("apt/history.log", _log_tail("/var/log/apt/history.log"), needs="dpkg"),
    NodeCommand("apt/term.log", _log_tail("/var/log/apt/term.log"), needs="dpkg"),
    NodeCommand("apt/dpkg.log", _log_tail("/var/log/dpkg.log"), needs="dpkg"),
    NodeCommand("apt/dpkg-audit.txt", "dpkg --audit", needs="dpkg"),
    NodeCommand("apt/holds.txt", "apt-mark showhold", needs="apt-mark"),
    NodeCommand("apt/proxy.txt", "apt-config dump | grep -i proxy || true", needs="apt-config"),
    # dnf
    NodeCommand("dnf/dnf.log", _log_tail("/var/log/dnf.log"), needs="dnf"),
    NodeCommand("dnf/history.txt", "dnf history list | head -n 40", needs="dnf"),
    # the cluster manager
    NodeCommand("pacemaker/crm_mon.xml", "crm_mon -1 --output-as=xml", needs="crm_mon"),
    NodeCommand("pacemaker/quorum.txt", "corosync-quorumtool -s", needs="corosync-quorumtool"),
    NodeCommand("pacemaker/constraints.xml", "cibadmin --query --scope constraints", needs="cibadmin"),
)

_PROGRAMS = sorted({c.needs for c in NODE_COMMANDS if c.needs})
_WHICH = f'for p in {" ".join(_PROGRAMS)}; do command -v "$p" >/dev/null 2>&1 && echo "$p"; done; true'

# Errors after which the node's other commands are not tried (they would fail the same way).
_NODE_LOST = (NodeUnreachable, HostKeyError, AuthError)


def _output(stdout: str, stderr: str, exit_status: int) -> str:
    if not stdout and not stderr.strip() and exit_status == 0:
        return "(no output)\n"
    text = stdout
    if stderr.strip():
        text += ("" if not text or text.endswith("\n") else "\n") + "--- stderr ---\n" + stderr
    if exit_status != 0:
        text += ("" if not text or text.endswith("\n") else "\n") + f"--- exit status {exit_status} ---\n"
    return text


def _error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    hint = getattr(exc, "hint", None)
    return f"{text} ({hint})" if hint else text


async def _collect_node(bundle: TraceBundle, provider: ClusterProvider, node: str, timeout: float) -> None:
    base = f"nodes/{node}"
    try:
        session = await provider.session(node)
    except Exception as exc:  # whatever it is, it is this node's part that is missing
        bundle.miss(f"node {node}", _error(exc), path=f"{base}/ERROR.txt")
        return
    if getattr(session, "simulated", False):
        bundle.add_text(
            f"{base}/simulated.txt",
            f"{node} is a simulated node (sandbox provider): there is no host to collect from.\n"
            "Its simulated state is in cluster/sandbox.json and cluster/snapshot.json.\n",
            f"provider session of {node}",
        )
        return
    transport: Transport = session.transport
    try:
        found = await transport.run(_WHICH, timeout=timeout)
        if not found.ok:
            raise CauError(f"`{_WHICH}` exited {found.exit_status}: {found.stderr.strip()[-500:]}")
    except Exception as exc:
        bundle.miss(f"node {node}", f"not reached: {_error(exc)}", path=f"{base}/ERROR.txt")
        return
    present = set(found.stdout.split())
    try:  # the boot id as cau sees restarts: the provider's (its boot_id_command)
        boot = await provider.boot_id(node)
        bundle.add_text(
            f"{base}/boot_id.txt", f"{boot or '(no boot id: down)'}\n", f"provider: boot id of {node}"
        )
    except Exception as exc:  # said, and the other parts are still collected
        bundle.miss(f"node {node}: boot_id.txt", _error(exc), path=f"{base}/boot_id.txt.error.txt")
    for cmd in NODE_COMMANDS:
        path = f"{base}/{cmd.file}"
        if cmd.needs is not None and cmd.needs not in present:
            continue
        source = f"node {node}: `{cmd.command}`"
        try:
            result = await transport.run(cmd.command, timeout=timeout)
        except _NODE_LOST as exc:
            bundle.miss(f"node {node}", f"lost at {cmd.file}: {_error(exc)}", path=f"{base}/ERROR.txt")
            return
        except Exception as exc:  # a timeout, a failed transport: this file only
            bundle.miss(f"node {node}: {cmd.file}", _error(exc), path=f"{path}.error.txt", source=source)
            continue
        bundle.add_text(
            path,
            _output(result.stdout, result.stderr, result.exit_status),
            source,
            exit_status=result.exit_status,
        )
        if not result.ok:
            last = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            bundle.miss(f"node {node}: {cmd.file}", f"`{cmd.command}` exited {result.exit_status}: {last[0]}")
    skipped = [p for p in _PROGRAMS if p not in present]
    if skipped:
        bundle.note(f"node {node} has no {', '.join(skipped)}: their parts are not applicable there")


# --- the whole bundle ------------------------------------------------------------------------------


async def collect(
    svc: Service, cluster: str, run_id: str | None, *, by: str, timeout: float = COMMAND_TIMEOUT
) -> TraceBundle:
    """Collect the debug trace of `cluster` (and of run `run_id`, else its newest run). An
    unknown cluster or run raises (NotFound) before anything is collected."""
    cfg = svc.config.cluster(cluster)
    record = await svc.find_run(run_id, cluster) if run_id else await _newest(svc, cluster)
    # Every configured cluster's secrets are masked from now on (the config file names them all);
    # one that cannot be loaded is said, and the patterns still mask what looks secret.
    problems = svc.load_all_secrets()
    bundle = TraceBundle(cluster, svc.clock.now(), by)
    bundle.manifest.provider = cfg.provider
    for name, problem in problems.items():
        bundle.miss(f"secrets of {name}", f"not loaded, so not masked by value: {problem}")
    if record is None:
        bundle.note(f"cluster {cluster} has no Updating Run yet: no journal or report")
    else:
        bundle.manifest.run_id = record.run_id
        await _run_parts(bundle, svc, record)
    _coordinator_parts(bundle, svc)
    _config_parts(bundle, svc, cluster)
    await _cluster_parts(bundle, svc, cluster, record, timeout)
    return bundle


async def _newest(svc: Service, cluster: str) -> RunRecord | None:
    runs = await svc.runs(ReportQuery(cluster=cluster, last=1))
    return runs[0] if runs else None


async def _run_parts(bundle: TraceBundle, svc: Service, record: RunRecord) -> None:
    where = f"the store ({svc.config.config.store.kind}), run {record.run_id}"
    bundle.add_json("run/run.json", TypeAdapter(RunRecord).dump_python(record, mode="json"), where)
    try:
        events = await svc.events(record.run_id)
        bundle.add_lines("run/journal.jsonl", list(events), f"{where}: journal, {len(events)} events")
    except (CauError, OSError) as exc:
        bundle.miss("journal", _error(exc), path="run/journal.error.txt")
    try:
        report = await svc.run_report(record)
    except (CauError, OSError, ValueError) as exc:
        bundle.miss("report", _error(exc), path="run/report.error.txt")
        return
    from cau.reports.render_csv import render_csv
    from cau.reports.render_html import render_html

    bundle.add_json("run/report.json", report, f"{where}: report")
    bundle.add_text("run/report.html", render_html([report]), f"{where}: report (cau report --format html)")
    bundle.add_text(
        "run/report.csv", render_csv([report], detailed=True), f"{where}: report (cau report --format csv)"
    )


def _os_release() -> dict[str, str]:
    with contextlib.suppress(OSError):
        return platform.freedesktop_os_release()
    return {}


def _coordinator_parts(bundle: TraceBundle, svc: Service) -> None:
    deps: dict[str, str | None] = {}
    for name in _DEPENDENCIES:
        try:
            deps[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            deps[name] = None
    stores = [
        {
            "name": e.name,
            "target": e.target,
            "distribution": e.distribution,
            "version": e.version,
            "error": e.error,
        }
        for e in svc.registry.stores.values()
    ]
    os_release = _os_release()
    versions = {
        "cau": __version__,
        "python": sys.version,
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "os": os_release.get("PRETTY_NAME"),
        "host": platform.node(),
        "dependencies": deps,
        "plugins_and_providers": [p.model_dump(mode="json") for p in svc.plugins()],
        "stores": stores,
        "store_in_use": svc.config.config.store.kind,
        "data_dir": str(svc.data_dir),
        "config_file": str(svc.config.path) if svc.config.path else None,
    }
    bundle.add_json("coordinator/versions.json", versions, "this coordinator (cau, Python, OS, registry)")
    path = log_path(svc.data_dir)
    if path is None:
        bundle.note("cau's log file is turned off (CAU_LOG_FILE=off)")
    elif not path.exists():
        bundle.note(f"no cau log file at {path} (cau run, cau daemon and cau serve write it)")
    else:
        try:
            bundle.add_text(
                "coordinator/cau.log", tail(path, LOG_BYTES), f"{path} (its last {LOG_BYTES} bytes)"
            )
        except OSError as exc:
            bundle.miss("cau's log", f"{path}: {exc.strerror or exc}", path="coordinator/cau.log.error.txt")


def _config_parts(bundle: TraceBundle, svc: Service, cluster: str) -> None:
    loaded = svc.config
    if loaded.path is None:
        bundle.note("no clusters config file: the built-in sandbox only")
    else:
        try:
            bundle.add_text("config/clusters.toml", loaded.path.read_text(encoding="utf-8"), str(loaded.path))
        except OSError as exc:
            bundle.miss(
                "config file", f"{loaded.path}: {exc.strerror or exc}", path="config/clusters.error.txt"
            )
    cfg = loaded.cluster(cluster)
    bundle.add_json(
        "config/cluster.json",
        {
            "cluster": cluster,
            "settings": cfg.model_dump(mode="json"),
            "store": loaded.config.store.model_dump(mode="json"),
        },
        f"[clusters.{cluster}] and [store] as cau reads them (secrets files are named, never read)",
    )
    if cfg.profile is not None:
        base = loaded.base_dir
        file = cfg.profile if cfg.profile.is_absolute() or base is None else base / cfg.profile
        try:
            bundle.add_text(
                "config/profile.toml", file.read_text(encoding="utf-8"), f"{file} (the cluster's profile)"
            )
        except OSError as exc:
            bundle.miss("profile", f"{file}: {exc.strerror or exc}", path="config/profile.error.txt")


async def _cluster_parts(
    bundle: TraceBundle, svc: Service, cluster: str, record: RunRecord | None, timeout: float
) -> None:
    try:
        lock = await svc.store.get_lock(cluster)
        bundle.add_json(
            "cluster/lock.json",
            TypeAdapter(LockInfo | None).dump_python(lock, mode="json"),
            "the store: the cluster's lock (the coordinator holding it)",
        )
    except (CauError, OSError) as exc:
        bundle.miss("cluster lock", _error(exc))
    try:
        provider = svc.open_provider(cluster)
    except Exception as exc:  # the provider's part is what is missing
        bundle.miss("nodes", f"the provider could not be opened: {_error(exc)}", path="nodes/ERROR.txt")
        return
    try:
        nodes: list[str] = []
        try:
            snapshot = await asyncio.wait_for(provider.discover(), timeout * 2)
            nodes = list(snapshot.node_names)
            bundle.add_json(
                "cluster/snapshot.json",
                TypeAdapter(ClusterSnapshot).dump_python(snapshot, mode="json"),
                f"the {bundle.manifest.provider} provider's view of the cluster now",
            )
        except Exception as exc:
            bundle.miss("cluster view", _error(exc), path="cluster/snapshot.error.txt")
            if record is not None:
                with contextlib.suppress(CauError, OSError, ValueError):
                    nodes = [n.name for n in (await svc.run_report(record)).nodes]
        if bundle.manifest.provider == "sandbox":
            with contextlib.suppress(CauError, OSError):
                bundle.add_json(
                    "cluster/sandbox.json", await svc.sandbox_view(cluster), "the sandbox's state"
                )
        if not nodes:
            bundle.miss("nodes", "the cluster's nodes are not known (see cluster/snapshot.error.txt)")
            return
        await asyncio.gather(*(_collect_node(bundle, provider, n, timeout) for n in nodes))
    finally:
        with contextlib.suppress(Exception):
            await provider.close()
