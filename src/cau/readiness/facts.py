"""What the node rules read on a node: one read-only shell script per node (one SSH round trip
whatever the number of rules), its output in marked sections, and pure parsers of them.

The script changes nothing on the node. Each section starts with a line `@@cau:NAME@@`; a
section a node cannot answer (no dpkg on a dnf host, no systemd in a container) is left empty,
and the rules read an empty section as "not there" or "unknown", each saying which.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

_MARK = re.compile(r"^@@cau:([a-z-]+)@@$")
FILE_MARK = "@@file "

# Timers that install updates by themselves (apt's runs unattended-upgrade when it is enabled;
# dnf-automatic-install always installs; dnf-automatic does when automatic.conf says so).
TIMERS = (
    "apt-daily-upgrade.timer",
    "dnf-automatic.timer",
    "dnf-automatic-install.timer",
    "dnf5-automatic.timer",
)
# PackageKit's offline update: a prepared update installs at the next boot (systemd's
# system-update.target starts when /system-update exists).
OFFLINE_UPDATE_FILES = ("/system-update", "/var/lib/PackageKit/prepared-update")
LOCK_FILES = ("/var/lib/dpkg/lock-frontend", "/var/lib/dpkg/lock", "/var/lib/rpm/.rpm.lock")
CACHE_DIRS = {"apt": "/var/cache/apt/archives", "dnf": "/var/cache/dnf"}
TOOLS = ("apt-get", "dpkg", "dnf", "rpm", "systemctl", "sha256sum", "fuser", "df")


# The script's first line: how a scripted node (tests) tells the facts script from other commands.
FACTS_PREFIX = "m() { printf '\\n@@cau:%s@@\\n' \"$1\"; }"


def facts_script(*, script_paths: Sequence[str] = (), commands: Sequence[str] = ()) -> str:
    """The node's facts, as one POSIX shell script (read-only). `script_paths`: the profile's
    pre/post-update scripts given as files (their sha256 is compared between nodes);
    `commands`: commands that must be on the PATH (a script given as a command, a plug-in's tool)."""
    q = shlex.quote
    paths = " ".join(q(p) for p in script_paths)
    cmds = " ".join(q(c) for c in commands)
    lines = [
        FACTS_PREFIX,
        "m uid; id -u",
        f'm tools; for t in {" ".join(TOOLS)}; do command -v "$t" >/dev/null 2>&1 && echo "$t"; done',
        "m apt-periodic; apt-config dump 2>/dev/null | grep -iE '^APT::Periodic::'",
        "m uu-package; dpkg-query -W -f='${Status}\\n' unattended-upgrades 2>/dev/null",
        # `systemctl is-active` prints a state; without systemd as PID 1 it prints nothing
        f"m timers; for u in {' '.join(TIMERS)}; do "
        'printf \'%s %s\\n\' "$u" "$(systemctl is-active "$u" 2>/dev/null | head -n 1)"; done',
        "m dnf-automatic; grep -hE '^[[:space:]]*apply_updates' /etc/dnf/automatic.conf 2>/dev/null",
        f'm offline-update; for f in {" ".join(OFFLINE_UPDATE_FILES)}; do [ -e "$f" ] && echo "$f"; done',
        "m apt-sources; for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list "
        "/etc/apt/sources.list.d/*.sources; do "
        f'[ -f "$f" ] && {{ echo "{FILE_MARK}$f"; cat "$f"; echo; }}; done',
        "m dnf-repos; for f in /etc/yum.repos.d/*.repo; do "
        f'[ -f "$f" ] && {{ echo "{FILE_MARK}$f"; cat "$f"; echo; }}; done',
        "m proxy; apt-config dump 2>/dev/null | grep -iE '::proxy'; "
        "grep -hiE '^[[:space:]]*(export[[:space:]]+)?(https?|ftp)_proxy=' /etc/environment 2>/dev/null; "
        "grep -hiE '^[[:space:]]*proxy[[:space:]]*=' /etc/dnf/dnf.conf 2>/dev/null",
        "m dpkg-updates; ls -A /var/lib/dpkg/updates 2>/dev/null",
        "m dpkg-audit; command -v dpkg >/dev/null 2>&1 && dpkg --audit 2>&1",
        # who holds the package manager's lock: apt and dpkg keep the lock file open while locked
        f'm locks; for f in {" ".join(LOCK_FILES)}; do [ -e "$f" ] || continue; '
        'for p in $(fuser "$f" 2>/dev/null); do '
        'echo "$f $p $(cat /proc/$p/comm 2>/dev/null)"; done; done',
        f"m disk; for d in {' '.join(CACHE_DIRS.values())}; do "
        '[ -d "$d" ] && echo "$d $(df -Pk "$d" 2>/dev/null | tail -n 1)"; done',
        f'm scripts; for p in {paths}; do if [ -f "$p" ]; then sha256sum "$p"; '
        'else echo "missing $p"; fi; done'
        if paths
        else "m scripts",
        f'm commands; for c in {cmds}; do if command -v "$c" >/dev/null 2>&1; then echo "found $c"; '
        'else echo "missing $c"; fi; done'
        if cmds
        else "m commands",
        "m end",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Lock:
    file: str
    pid: int
    command: str


@dataclass(frozen=True)
class NodeFacts:
    uid: int | None
    tools: frozenset[str]
    apt_periodic: dict[str, str]  # APT::Periodic::X -> value, as apt-config dump says
    uu_installed: bool
    timers: dict[str, str]  # unit -> `systemctl is-active` ("" when unknown)
    dnf_apply_updates: bool | None
    offline_update: list[str]
    apt_sources: frozenset[str]
    dnf_repos: frozenset[str]
    proxies: frozenset[str]
    dpkg_updates: list[str]
    dpkg_audit: str
    locks: list[Lock]
    free_kb: dict[str, int]  # package cache dir -> free KiB on its file system
    scripts: dict[str, str | None]  # path -> sha256, None: missing
    commands: dict[str, bool]  # command -> found
    complete: bool = True  # the script ran to its end
    sections: dict[str, str] = field(default_factory=dict, repr=False)


def sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        mark = _MARK.match(line.strip())
        if mark:
            current = found.setdefault(mark.group(1), [])
            continue
        if current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip("\n") for name, lines in found.items()}


def _files(text: str) -> list[tuple[str, list[str]]]:
    files: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(FILE_MARK):
            files.append((line[len(FILE_MARK) :].strip(), []))
        elif files:
            files[-1][1].append(line)
    return files


def _one_line_source(line: str) -> str | None:
    """`deb [opts] uri suite comps...` normalised: whitespace, a trailing slash of the URI, the
    order of options; None for comments and blank lines."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    options = ""
    match = re.match(r"^(deb(?:-src)?)\s+\[([^\]]*)\]\s+(.*)$", text)
    if match:
        kind, opts, rest = match.groups()
        options = "[" + " ".join(sorted(opts.split())) + "] "
    else:
        kind, _, rest = text.partition(" ")
    parts = rest.split()
    if not parts:
        return None
    uri = parts[0].rstrip("/") or parts[0]
    return " ".join([kind.strip(), options + uri, *parts[1:]]).replace("  ", " ")


def _deb822_sources(lines: list[str]) -> list[str]:
    """deb822 `.sources` stanzas as one-line entries (one per type, URI and suite)."""
    entries: list[str] = []
    stanzas: list[dict[str, str]] = [{}]
    key = None
    for raw in lines:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            stanzas.append({})
            key = None
            continue
        if raw[0].isspace() and key is not None:
            stanzas[-1][key] += " " + raw.strip()
            continue
        name, _, value = raw.partition(":")
        key = name.strip().lower()
        stanzas[-1][key] = value.strip()
    for stanza in stanzas:
        if not stanza or stanza.get("enabled", "yes").lower() == "no":
            continue
        comps = stanza.get("components", "").split()
        options = sorted(
            f"{k}={v}"
            for k, v in stanza.items()
            if k not in ("types", "uris", "suites", "components", "enabled")
        )
        opt = "[" + " ".join(options) + "] " if options else ""
        for kind in stanza.get("types", "").split():
            for uri in stanza.get("uris", "").split():
                for suite in stanza.get("suites", "").split():
                    entries.append(" ".join([kind, opt + (uri.rstrip("/") or uri), suite, *comps]))
    return entries


def parse_apt_sources(text: str) -> frozenset[str]:
    """Every apt source a node's sources files enable, normalised (what matters is where the
    packages come from, not which file says so)."""
    out: set[str] = set()
    for path, lines in _files(text):
        if path.endswith(".sources"):
            out.update(_deb822_sources(lines))
        else:
            out.update(e for e in (_one_line_source(line) for line in lines) if e)
    return frozenset(out)


def parse_dnf_repos(text: str) -> frozenset[str]:
    """Enabled dnf/yum repositories: `id url` (baseurl, metalink or mirrorlist)."""
    out: set[str] = set()
    for _, lines in _files(text):
        repo: dict[str, str] = {}
        repos: list[dict[str, str]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                repo = {"id": line[1:-1].strip()}
                repos.append(repo)
            elif "=" in line and repo:
                k, _, v = line.partition("=")
                repo[k.strip().lower()] = v.strip()
        for r in repos:
            if r.get("enabled", "1").strip().lower() in ("0", "false", "no"):
                continue
            url = r.get("baseurl") or r.get("metalink") or r.get("mirrorlist") or ""
            out.add(f"{r['id']} {url}".strip())
    return frozenset(out)


def _periodic(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        match = re.match(r'^APT::Periodic::([\w-]+)\s+"([^"]*)";', line.strip(), re.I)
        if match:
            out[match.group(1).lower()] = match.group(2)
    return out


def _disk(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()  # dir, then df's columns: fs, blocks, used, available, capacity, mount
        if len(parts) >= 5 and parts[4].isdigit():
            out[parts[0]] = int(parts[4])
    return out


def parse_facts(stdout: str) -> NodeFacts:
    s = sections(stdout)
    uid_text = s.get("uid", "").strip()
    apply = s.get("dnf-automatic", "")
    apply_match = re.search(r"apply_updates\s*=\s*(\S+)", apply)
    scripts: dict[str, str | None] = {}
    for line in s.get("scripts", "").splitlines():
        if line.startswith("missing "):
            scripts[line[len("missing ") :]] = None
        elif line.strip():
            digest, _, path = line.partition(" ")
            scripts[path.strip().lstrip("*")] = digest
    commands = {}
    for line in s.get("commands", "").splitlines():
        state, _, name = line.partition(" ")
        if name:
            commands[name] = state == "found"
    locks = []
    for line in s.get("locks", "").splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[1].isdigit():
            locks.append(Lock(parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "?"))
    timers = {}
    for line in s.get("timers", "").splitlines():
        unit, _, state = line.partition(" ")
        if unit:
            timers[unit] = state.strip()
    return NodeFacts(
        uid=int(uid_text) if uid_text.isdigit() else None,
        tools=frozenset(s.get("tools", "").split()),
        apt_periodic=_periodic(s.get("apt-periodic", "")),
        uu_installed="install ok installed" in s.get("uu-package", ""),
        timers=timers,
        dnf_apply_updates=(apply_match.group(1).lower() in ("yes", "true", "1", "on"))
        if apply_match
        else None,
        offline_update=[line for line in s.get("offline-update", "").splitlines() if line.strip()],
        apt_sources=parse_apt_sources(s.get("apt-sources", "")),
        dnf_repos=parse_dnf_repos(s.get("dnf-repos", "")),
        proxies=frozenset(" ".join(line.split()) for line in s.get("proxy", "").splitlines() if line.strip()),
        dpkg_updates=[line for line in s.get("dpkg-updates", "").splitlines() if line.strip()],
        dpkg_audit=s.get("dpkg-audit", "").strip(),
        locks=locks,
        free_kb=_disk(s.get("disk", "")),
        scripts=scripts,
        commands=commands,
        complete="end" in s,
        sections=s,
    )
