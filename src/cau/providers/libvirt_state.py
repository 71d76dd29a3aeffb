"""What the `libvirt` provider reads on a hypervisor host, parsed: `virsh` outputs and cau's own
marks. Pure functions over text, tested against outputs recorded from real libvirt
(tests/fixtures/libvirt); no I/O here.

One SSH round trip per host reads everything (`read_script`): the host's memory and CPUs, the
marks cau left there (maintenance, domains it saved), the domains with a managed save image, and
each domain's state and XML.
"""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from cau.errors import ProviderError

# cau's metadata in a domain's XML: the hosts it prefers, best first (failback = policy):
#   <metadata><cau:placement xmlns:cau="urn:cau:libvirt:1" preferred="node1 node2"/></metadata>
METADATA_NS = "urn:cau:libvirt:1"
# Where cau marks, on each host's own disk (they outlive its restart), what it changed there:
# `maintenance` (the host takes no guests) and `saved-<domain>` (cau saved that domain's state
# with managedsave: it is restored when the host leaves maintenance).
MARK_DIR = "/var/lib/cau/libvirt"
MAINTENANCE_MARK = "maintenance"
SAVED_PREFIX = "saved-"

SPLIT = "@@cau-libvirt@@"
DOMAIN_HEAD = "@@cau-domain@@"
# Domain names go into command lines: libvirt allows almost anything, cau only these.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+:-]*")


def domain_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ProviderError(
            f"domain name {value!r}: cau drives only domains named with letters, digits and . _ + : -"
        )
    return value


def read_script(uri: str) -> str:
    """The shell command that prints everything `parse_host` reads, in one round trip."""
    v = f"virsh -q -c {shlex.quote(uri)}"
    return (
        f"{v} nodeinfo && echo {SPLIT} && (ls -1 {MARK_DIR} 2>/dev/null; true) && echo {SPLIT} && "
        f"{v} list --all --with-managed-save --name && echo {SPLIT} && "
        # a domain gone between the list and its reads (migrated away meanwhile) is skipped
        f"for d in $({v} list --all --name); do "
        f's=$({v} domstate "$d" --reason 2>/dev/null) && x=$({v} dumpxml "$d" 2>/dev/null) && '
        f'printf "%s %s\\n%s\\n%s\\n" "{DOMAIN_HEAD}" "$d" "$s" "$x"; done; true'
    )


@dataclass(frozen=True)
class DomainInfo:
    name: str
    state: str  # "running", "paused", "shut off", ... as `virsh domstate` says
    reason: str  # its reason: "booted", "migrating", "saved"...
    memory_mib: int
    vcpus: int
    preferred: tuple[str, ...] = ()
    # why it cannot live-migrate (a host device, a local disk without copy_storage), or ""
    pinned_by: str = ""
    local_disks: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        """Running on its host now (a paused domain too: it holds its memory there)."""
        return self.state in ("running", "paused", "in shutdown", "pmsuspended", "blocked", "idle")


@dataclass(frozen=True)
class HostState:
    cpus: int
    memory_mib: int  # the host's RAM, as libvirt sees it
    marks: frozenset[str]
    managed_saves: frozenset[str]
    domains: tuple[DomainInfo, ...] = field(default_factory=tuple)

    @property
    def in_maintenance(self) -> bool:
        return MAINTENANCE_MARK in self.marks

    @property
    def saved_by_cau(self) -> tuple[str, ...]:
        return tuple(sorted(m.removeprefix(SAVED_PREFIX) for m in self.marks if m.startswith(SAVED_PREFIX)))

    def domain(self, name: str) -> DomainInfo | None:
        return next((d for d in self.domains if d.name == name), None)

    @property
    def active(self) -> tuple[DomainInfo, ...]:
        return tuple(d for d in self.domains if d.active)

    def used_mib(self) -> int:
        return sum(d.memory_mib for d in self.active)

    def used_vcpus(self) -> int:
        return sum(d.vcpus for d in self.active)


def parse_nodeinfo(text: str) -> tuple[int, int]:
    """(CPUs, memory in MiB) from `virsh nodeinfo`."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()
    try:
        cpus = int(fields["cpu(s)"])
        amount, unit = fields["memory size"].split()
    except (KeyError, ValueError) as exc:
        raise ProviderError(f"unexpected `virsh nodeinfo` output: {text.strip()[:200]!r}") from exc
    return cpus, _to_mib(float(amount), unit)


_UNITS = {
    "b": 1,
    "bytes": 1,
    "kib": 1024,
    "k": 1024,
    "mib": 1024**2,
    "m": 1024**2,
    "gib": 1024**3,
    "g": 1024**3,
}


def _bytes(amount: float, unit: str) -> int:
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ProviderError(f"unknown size unit {unit!r} from libvirt")
    return int(amount * factor)


def _to_mib(amount: float, unit: str) -> int:
    return _bytes(amount, unit) // 1024**2


def parse_domstate(text: str) -> tuple[str, str]:
    """("running", "booted") from `virsh domstate --reason`'s "running (booted)"."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    m = re.fullmatch(r"(.+?)(?: \((.*)\))?", line)
    if not line or m is None:
        raise ProviderError(f"unexpected `virsh domstate` output: {text.strip()[:100]!r}")
    return m.group(1), m.group(2) or ""


def _memory_mib(elem: ET.Element | None) -> int:
    if elem is None or not (elem.text or "").strip():
        return 0
    return _to_mib(float((elem.text or "0").strip()), elem.get("unit", "KiB"))


def parse_domain_xml(
    xml: str, state: str, reason: str, *, shared_storage: tuple[str, ...] = ()
) -> DomainInfo:
    """A domain from `virsh dumpxml`: its memory (the maximum it may use), vCPUs, cau's
    placement metadata, and what keeps it from migrating live."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ProviderError(f"unreadable domain XML from libvirt: {exc}") from exc
    name = (root.findtext("name") or "").strip()
    if not name:
        raise ProviderError("a domain XML from libvirt has no <name>")
    vcpu_text = (root.findtext("vcpu") or "1").strip()
    placement = root.find(f"metadata/{{{METADATA_NS}}}placement")
    preferred = tuple((placement.get("preferred") or "").split()) if placement is not None else ()
    reasons: list[str] = []
    if root.find("devices/hostdev") is not None:
        reasons.append("a host device (<hostdev>)")
    local: list[str] = []
    for disk in root.findall("devices/disk"):
        if disk.get("device") in ("cdrom", "floppy") or disk.get("type") == "network":
            continue
        source = disk.find("source")
        if source is None:
            continue
        path = source.get("file") or source.get("dev") or source.get("dir") or ""
        if path and not any(path == s or path.startswith(s.rstrip("/") + "/") for s in shared_storage):
            local.append(path)
    return DomainInfo(
        name=name,
        state=state,
        reason=reason,
        memory_mib=_memory_mib(root.find("memory")),
        vcpus=int(vcpu_text) if vcpu_text.isdigit() else 1,
        preferred=preferred,
        pinned_by="; ".join(reasons),
        local_disks=tuple(local),
    )


def parse_host(text: str, *, shared_storage: tuple[str, ...] = ()) -> HostState:
    """Everything `read_script` printed."""
    parts = text.split(SPLIT)
    if len(parts) != 4:
        raise ProviderError(f"unexpected output reading a libvirt host: {text.strip()[:300]!r}")
    cpus, memory = parse_nodeinfo(parts[0])
    marks = frozenset(line.strip() for line in parts[1].splitlines() if line.strip())
    saves = frozenset(line.strip() for line in parts[2].splitlines() if line.strip())
    domains = []
    for chunk in parts[3].split(DOMAIN_HEAD)[1:]:
        head, _, rest = chunk.partition("\n")
        name = head.strip()
        state_line, _, xml = rest.partition("\n")
        state, reason = parse_domstate(state_line)
        info = parse_domain_xml(xml.strip(), state, reason, shared_storage=shared_storage)
        if info.name != name:
            raise ProviderError(f"virsh printed the XML of {info.name!r} for domain {name!r}")
        domains.append(info)
    return HostState(cpus, memory, marks, saves, tuple(domains))


@dataclass(frozen=True)
class MigrationFigures:
    """libvirt's own figures for a finished migration job (`virsh domjobinfo --completed`)."""

    seconds: float | None = None
    downtime_ms: float | None = None
    data_bytes: int | None = None


def parse_jobinfo(text: str) -> MigrationFigures:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip()

    def number(key: str) -> float | None:
        m = re.match(r"([0-9.]+)\s*ms", fields.get(key, ""))
        return float(m.group(1)) if m else None

    data: int | None = None
    m = re.match(r"([0-9.]+)\s*([A-Za-z]+)", fields.get("data processed", ""))
    if m:
        data = _bytes(float(m.group(1)), m.group(2))
    elapsed = number("time elapsed")
    return MigrationFigures(
        seconds=elapsed / 1000 if elapsed is not None else None,
        downtime_ms=number("total downtime"),
        data_bytes=data,
    )


# --- migration paths: can a source host's libvirt reach each target's as a migration would ---------

PATH_HEAD = "@@cau-path@@"
PATH_TIMEOUT_SECONDS = 20  # a connection that hangs (a firewall dropping it) counts as none
_PATH_CHECK = "_cau_path"


def paths_script(targets: list[tuple[str, str]]) -> str:
    """The shell command a source host runs to connect to each target's libvirt at the URI its
    live migrations use (`virsh -c URI uri`: the same transport, keys and ports as `virsh
    migrate`), all at once. One line per target: `PATH_HEAD node ok`, `... timeout`, or `... no
    ERROR` (virsh's error lines joined by tabs)."""
    q = shlex.quote
    define = (
        f'{_PATH_CHECK}() {{ out=$(timeout {PATH_TIMEOUT_SECONDS} virsh -q -c "$2" uri 2>&1 </dev/null); '
        f'rc=$?; if [ $rc -eq 0 ]; then echo "{PATH_HEAD} $1 ok"; '
        f'elif [ $rc -eq 124 ]; then echo "{PATH_HEAD} $1 timeout"; '
        f"else printf '%s %s no %s\\n' {PATH_HEAD} \"$1\" "
        f"\"$(printf '%s' \"$out\" | tr '\\n' '\\t')\"; fi; }}"
    )
    calls = "".join(f"{_PATH_CHECK} {q(node)} {q(uri)} &\n" for node, uri in targets)
    return f"{define}\n{calls}wait"


def parse_paths(text: str) -> dict[str, str | None]:
    """target -> None when its libvirt answered, else why not (virsh's own words, without its
    generic "failed to connect to the hypervisor")."""
    found: dict[str, str | None] = {}
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if head != PATH_HEAD:
            continue
        node, _, rest = rest.partition(" ")
        verdict, _, detail = rest.partition(" ")
        if verdict == "ok":
            found[node] = None
        elif verdict == "timeout":
            found[node] = f"no answer within {PATH_TIMEOUT_SECONDS} s"
        else:
            errors = [e.strip().removeprefix("error: ").strip() for e in detail.split("\t")]
            errors = [e for e in errors if e and e != "failed to connect to the hypervisor"]
            found[node] = "; ".join(errors) or "virsh failed without saying why"
    return found


# --- where copied disks can land -----------------------------------------------------------------

STORAGE_HEAD = "@@cau-storage@@"


@dataclass(frozen=True)
class StoragePool:
    """An active storage pool of a host, as the copy-storage check sees it."""

    name: str
    path: str  # its target directory
    autostart: bool  # started again when its host starts (else inactive after a restart)


@dataclass(frozen=True)
class StorageView:
    """What a host offers a disk copied there by `--copy-storage-all`: libvirt creates the copy
    only in an active storage pool whose target is the disk's directory, or over a file already
    at the disk's path (seen on libvirt 9.0: "Storage pool not found: no storage pool with
    matching target path '...'" otherwise, also for a defined pool that is not started)."""

    pools: tuple[StoragePool, ...] = ()  # the active storage pools
    files: frozenset[str] = frozenset()  # the asked paths that exist there

    def pool_for(self, path: str) -> StoragePool | None:
        """The active pool a copy of the disk at `path` would be created in (its directory's)."""
        directory = disk_directory(path)
        return next((p for p in self.pools if p.path == directory), None)

    def takes(self, path: str, *, after_restart: bool = False) -> bool:
        """Would a copy of the disk at `path` land here; `after_restart`: also once the host has
        restarted (a file stays; only an autostarted pool is active again)."""
        if path in self.files:
            return True
        pool = self.pool_for(path)
        return pool is not None and (pool.autostart or not after_restart)


def disk_directory(path: str) -> str:
    """The directory of a disk's path: where a storage pool must be for libvirt to copy it."""
    head, _, _ = path.rstrip("/").rpartition("/")
    return head or "/"


def storage_script(uri: str, paths: list[str]) -> str:
    """The shell command a host runs to say where a copied disk could land: each active storage
    pool (name and target path), those that are autostarted, and which of `paths` exist. Lines,
    tab-separated: `STORAGE_HEAD pool NAME PATH`, `STORAGE_HEAD autostart NAME`,
    `STORAGE_HEAD file PATH`."""
    q = shlex.quote
    virsh = f"virsh -q -c {q(uri)}"
    pools = (
        f'{virsh} pool-list --name | while read -r p; do [ -n "$p" ] && '
        f'printf \'{STORAGE_HEAD}\\tpool\\t%s\\t%s\\n\' "$p" "$({virsh} pool-dumpxml "$p" --xpath '
        "'/pool/target/path/text()')\"; done"
    )
    autostart = (
        f'; {virsh} pool-list --name --autostart | while read -r p; do [ -n "$p" ] && '
        f"printf '{STORAGE_HEAD}\\tautostart\\t%s\\n' \"$p\"; done"
    )
    files = "".join(f"; [ -e {q(p)} ] && printf '{STORAGE_HEAD}\\tfile\\t%s\\n' {q(p)}" for p in paths)
    return f"{pools}{autostart}{files}; true"


def parse_storage(text: str) -> StorageView:
    pools: dict[str, str] = {}  # name -> target path
    autostart: set[str] = set()
    files: set[str] = set()
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] != STORAGE_HEAD or len(fields) < 3:
            continue
        kind = fields[1]
        if kind == "pool" and len(fields) >= 4 and fields[3].strip():
            pools[fields[2]] = fields[3].strip().rstrip("/") or "/"
        elif kind == "autostart":
            autostart.add(fields[2])
        elif kind == "file" and fields[2]:
            files.add(fields[2])
    found = tuple(StoragePool(name, path, name in autostart) for name, path in sorted(pools.items()))
    return StorageView(found, frozenset(files))
