"""Scripted nodes and clusters (cau.testing) that answer like real ones, from the golden fixtures:
the contract tests bring every registered adapter up on them, and the unit tests of the
providers and package plug-ins drive the real code with them, without root or a lab.

    FixtureHost       a node answering commands from tests/fixtures/<folder> by their recorded
                      command, exactly (a fixture whose recorded command drifted is not answered)
    DebianHost        the lab's Debian host for the apt plug-in, from tests/fixtures/apt: installs
                      upgrade its dpkg database, but for the package whose postinst fails
    RhelHost          a RHEL 9 node for the dnf plug-in: check-update, updateinfo and
                      needs-restarting from tests/fixtures/dnf, an rpm database that upgrades change
    SshHosts          hosts as the ssh provider sees them: boot ids, the maintenance marker, restarts
    PacemakerCluster  SshHosts that are a Pacemaker cluster: crm_mon, cibadmin, crm_attribute,
                      crm_resource, crm_simulate, corosync-quorumtool, from tests/fixtures/pacemaker
"""

from __future__ import annotations

import json
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cau.errors import NodeUnreachable
from cau.plugins.dnf_facts import parse_check_update, split_nevra
from cau.providers.libvirt_state import DOMAIN_HEAD, MARK_DIR, PATH_HEAD, STORAGE_HEAD, read_script
from cau.providers.libvirt_state import SPLIT as LIBVIRT_SPLIT
from cau.providers.ssh import MaintenanceHooks
from cau.readiness.facts import FACTS_PREFIX
from cau.testing import Answer, Reply, Result, Rules, ScriptedCluster, UnexpectedCommand

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


# --- a node that answers from golden fixtures -----------------------------------------------------


class FixtureHost:
    """A node whose commands are answered by golden fixtures (FOLDER/NAME.txt, the command it was
    recorded from in NAME.json), matched by that command exactly: the whole command, or each of its
    `; `-separated parts in turn (with `echo`, `echo $?`, `test -e PATH` and `true` understood), so a
    compound command is answered by the fixtures of its parts. `answer` adds what no fixture holds.
    `served` lists the fixtures used, in order."""

    def __init__(self, folder: str, *fixtures: str, files: Iterable[str] = ()) -> None:
        self.folder = FIXTURES / folder
        self.files = set(files)  # paths that exist on the node, for `test -e`
        self.served: list[str] = []
        self._answers: dict[str, tuple[str | None, Rules]] = {}
        for name in fixtures:
            self.serve(name)

    def spec(self, name: str) -> dict[str, Any]:
        spec: dict[str, Any] = json.loads((self.folder / f"{name}.json").read_text())
        return spec

    def text(self, name: str) -> str:
        return (self.folder / f"{name}.txt").read_text()

    def serve(self, name: str, *, stderr_lines: tuple[str, ...] = ()) -> str:
        """Answer the fixture's recorded command with its text (and exit status: `exit_status`, or
        the parser's `args.exit_code`); lines starting with one of `stderr_lines` go to stderr
        (a fixture recorded as stdout then stderr). Returns that command."""
        spec = self.spec(name)
        status = spec.get("exit_status", spec.get("args", {}).get("exit_code", 0))
        lines = self.text(name).splitlines(keepends=True)
        to_err = [bool(stderr_lines) and line.startswith(stderr_lines) for line in lines]
        err = [line for line, e in zip(lines, to_err, strict=True) if e]
        out = [line for line, e in zip(lines, to_err, strict=True) if not e]
        self._answers[spec["command"]] = (name, Rules({"": Reply("".join(out), status, "".join(err))}))
        return str(spec["command"])

    def answer(self, command: str, *answers: Answer) -> None:
        """Answer `command` (exactly, or as a part) with `answers`, one per call (see Rules)."""
        self._answers[command] = (None, Rules({"": list(answers)}))

    def _one(self, command: str) -> Result | None:
        if command not in self._answers:
            return None
        name, rules = self._answers[command]
        if name is not None:
            self.served.append(name)
        return rules(command)

    def __call__(self, command: str) -> Result:
        whole = self._one(command)
        if whole is not None:
            return whole
        out, status = [], 0
        for part in command.split("; "):
            result = self._one(part)
            if result is not None:
                reply = result if isinstance(result, Reply) else Reply(str(result))
                out.append(reply.stdout)
                status = reply.exit_status
            elif part == "echo $?":
                out.append(f"{status}\n")
                status = 0
            elif part.startswith("echo ") and "$" not in part:
                out.append(part[5:] + "\n")
                status = 0
            elif part.startswith("test -e "):
                status = 0 if part[8:] in self.files else 1
            elif part == "true":
                status = 0
            else:
                raise UnexpectedCommand(f"{self.folder.name}: nothing answers {part!r} (of {command!r})")
        return Reply("".join(out), status)


APT_ENV = "LC_ALL=C DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none NEEDRESTART_MODE=l"
APT = f"{APT_ENV} apt-get -q -o DPkg::Lock::Timeout=300"
APT_SIMULATE = f"{APT_ENV} apt-get -s -o Debug::NoLocking=1 -o APT::Get::Show-Versions=1 upgrade"
DPKG_QUERY = "dpkg-query -W -f='${binary:Package}\\t${Version}\\t${db:Status-Abbrev}\\n'"
APT_NOTHING = (  # `apt-get -s upgrade` with nothing to upgrade
    "Reading package lists...\nBuilding dependency tree...\nReading state information...\n"
    "Calculating upgrade...\n0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n"
)


class DebianHost(FixtureHost):
    """The lab host of the apt fixtures: labpkg, labrelease, labtool 1.0 with 1.1 published,
    labbroken 1.1 half-configured. `apt-get install` upgrades the lab packages it names; labbroken's
    postinst fails again, in dpkg's words (install-lab-postinst-fails), and it stays half-configured."""

    def __init__(self) -> None:
        super().__init__(
            "apt",
            "sim-lab-half-configured",
            "dpkg-query-lab-half-configured",
            "apt-mark-showhold-none",
            "reboot-required-absent",
            "needrestart-all-current",
        )
        self.answer(f"{APT} update", "")
        self.dpkg = {
            name: (version, status)
            for name, version, status in (
                line.split("\t") for line in self.text("dpkg-query-lab-half-configured").splitlines()
            )
        }

    def _listing(self, names: Iterable[str] | None = None) -> str:
        wanted = set(self.dpkg if names is None else names)
        return "".join(f"{n}\t{v}\t{s}\n" for n, (v, s) in sorted(self.dpkg.items()) if n in wanted)

    def __call__(self, command: str) -> Result:
        if command.startswith(DPKG_QUERY + " ") and command.endswith(" 2>/dev/null; true"):
            return self._listing(shlex.split(command[len(DPKG_QUERY) : -len(" 2>/dev/null; true")]))
        if command.startswith(f"{APT} -y -d install "):
            return ""
        if command.startswith(f"{APT} -y -o Dpkg::Options::"):
            pins = [pin for pin in (arg.split("=", 1) for arg in shlex.split(command)) if pin[0] in self.dpkg]
            for name, version in pins:
                if name != "labbroken":
                    self.dpkg[name] = (version, "ii ")
            self.answer(DPKG_QUERY, self._listing())
            broken = self.dpkg["labbroken"][1] != "ii "
            self.answer(APT_SIMULATE, APT_NOTHING + ("1 not fully installed or removed.\n" if broken else ""))
            if any(name == "labbroken" for name, _ in pins):
                out = self.text("install-lab-postinst-fails").splitlines(keepends=True)
                return Reply("".join(line for line in out if not line.startswith("E: ")), 100, out[-1])
            return "".join(f"Setting up {name} ({version}) ...\n" for name, version in pins)
        return super().__call__(command)


class RhelHost(FixtureHost):
    """A RHEL 9 node: check-update offers check-update-rhel9 (every package installed at an older
    version); `dnf upgrade` installs the NEVRAs it names (but those of `broken`), after which
    check-update offers nothing and needs-restarting says a reboot is required."""

    RPM = "rpm -q --qf '%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{ARCH}\\n' "
    UPGRADE = "LC_ALL=C dnf -y -q upgrade "

    def __init__(self, *, broken: Iterable[str] = ()) -> None:
        super().__init__(
            "dnf", "check-update-rhel9", "updateinfo-security-rhel9", "needs-restarting-not-required"
        )
        self.broken = set(broken)
        self.installed = {
            (c.name, c.arch): "0.1-1.el9" for c in parse_check_update(self.text("check-update-rhel9"))
        }

    def __call__(self, command: str) -> Result:
        if command.startswith(self.RPM):
            lines = []
            for name in shlex.split(command[len(self.RPM) :]):
                found = [(arch, evr) for (n, arch), evr in self.installed.items() if n == name]
                lines += [
                    f"{name}\t{evr if ':' in evr else '(none):' + evr}\t{arch}\n" for arch, evr in found
                ]
                lines += [] if found else [f"package {name} is not installed\n"]
            return "".join(lines)
        if command.startswith(self.UPGRADE + "--downloadonly "):
            return ""
        if command.startswith(self.UPGRADE):
            failed = []
            for nevra in shlex.split(command[len(self.UPGRADE) :]):
                name, evr, arch = split_nevra(nevra)
                if name in self.broken:
                    failed.append(nevra)
                else:
                    self.installed[(name, arch)] = evr
            self.serve("check-update-none")
            self.serve("needs-restarting-required")
            if failed:
                return Reply("", 1, f"Error: Transaction test error: {', '.join(failed)} conflicts\n")
            return ""
        return super().__call__(command)


# --- the readiness facts (cau.readiness.facts) ------------------------------------------------------

# What a healthy Debian node of the lab answers to the readiness facts script, by section.
DEBIAN_FACTS: dict[str, str] = {
    "uid": "0",
    "tools": "apt-get\ndpkg\nsystemctl\nsha256sum\nfuser\ndf",
    "apt-periodic": 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "0";',
    "uu-package": "",
    "timers": "apt-daily-upgrade.timer active\ndnf-automatic.timer inactive\n"
    "dnf-automatic-install.timer inactive\ndnf5-automatic.timer inactive",
    "dnf-automatic": "",
    "offline-update": "",
    "apt-sources": "@@file /etc/apt/sources.list.d/lab.list\ndeb [trusted=yes] file:/srv/labrepo ./",
    "dnf-repos": "",
    "proxy": "",
    "dpkg-updates": "",
    "dpkg-audit": "",
    "locks": "",
    "disk": "/var/cache/apt/archives /dev/vda1 20511312 5110000 14336000 27% /",
}


def facts_output(
    command: str, sections: dict[str, str] | None = None, *, digests: dict[str, str] | None = None
) -> str:
    """A node's answer to the facts script `command`: DEBIAN_FACTS with `sections` instead, every
    script file of the command present (with `digests[path]`, or a fixed digest; a digest of
    None: missing) and every command found (unless `sections` answers `scripts`/`commands`)."""
    import re

    answers = {**DEBIAN_FACTS, **(sections or {})}
    if "scripts" not in answers:
        paths = re.search(r"m scripts; for p in (.*?); do", command)
        lines = []
        for path in shlex.split(paths.group(1)) if paths else []:
            digest = (digests or {}).get(path, "5" * 64)
            lines.append(f"missing {path}" if digest is None else f"{digest}  {path}")
        answers["scripts"] = "\n".join(lines)
    if "commands" not in answers:
        cmds = re.search(r"m commands; for c in (.*?); do", command)
        answers["commands"] = "\n".join(f"found {c}" for c in (shlex.split(cmds.group(1)) if cmds else []))
    return "".join(f"\n@@cau:{name}@@\n{text}\n" for name, text in answers.items()) + "\n@@cau:end@@\n"


# --- hosts over SSH ---------------------------------------------------------------------------------

BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
REBOOT = "systemctl reboot"
HOOKS = MaintenanceHooks()


class SshHosts:
    """Hosts as the ssh provider reaches them: a boot id that changes at every restart, the
    maintenance marker file of the default hooks, `hostname`. A restarting host refuses
    connections for `restart_probes` commands, then answers with its new boot id; a host in
    `held` never comes back. `overrides` (Rules) answer first, on every host.
    `transports` is the factory for ProviderContext.transports."""

    def __init__(self, names: Iterable[str], *, restart_probes: int = 2) -> None:
        self.names = list(names)
        self.boots = dict.fromkeys(self.names, 1)
        self.marker: set[str] = set()
        self.down: dict[str, int] = {}  # commands a restarting host still refuses
        self.held: set[str] = set()
        self.refusing: dict[str, Exception] = {}  # hosts that refuse cau (a changed key...)
        self.restart_probes = restart_probes
        self.overrides = Rules()
        # the readiness facts each host answers (cau.readiness.facts): a healthy Debian host's,
        # with these sections instead (by node)
        self.facts: dict[str, dict[str, str]] = {}
        self.transports = ScriptedCluster(self.answer)

    def boot_id(self, node: str) -> str:
        return f"{node}-boot-{self.boots[node]}"

    def answer(self, node: str, command: str) -> Result:
        if node in self.refusing:
            raise self.refusing[node]
        if node in self.held or self.down.get(node, 0) > 0:
            if node not in self.held:
                self.down[node] -= 1
            raise NodeUnreachable(f"cannot reach {node}: [Errno 111] Connect call failed")
        try:
            return self.overrides(command)
        except UnexpectedCommand:
            pass
        if command == BOOT_ID:
            return self.boot_id(node) + "\n"
        if command.startswith(FACTS_PREFIX):
            return facts_output(command, self.facts.get(node))
        if command == "hostname":
            return node + "\n"
        if command == REBOOT:
            self.boots[node] += 1
            self.down[node] = self.restart_probes
            raise NodeUnreachable(f"lost the connection to {node}: Connection lost")
        if command == HOOKS.status:
            return Reply("", 0 if node in self.marker else 1)
        if command == HOOKS.enter:
            self.marker.add(node)
            return ""
        if command == HOOKS.exit:
            self.marker.discard(node)
            return ""
        return self.other(node, command)

    def other(self, node: str, command: str) -> Result:
        raise UnexpectedCommand(f"{node}: no answer to {command!r}")


# --- a Pacemaker cluster ----------------------------------------------------------------------------

PCMK = FIXTURES / "pacemaker"
CRM_MON = "crm_mon --output-as=xml --inactive"
CIB = "cibadmin --query --scope configuration"
QUORUM = "corosync-quorumtool -s"
SPLIT = "@@cau-split@@"
SIMULATE = 'f=$(mktemp /tmp/cau-simulate.XXXXXX) && cibadmin --query > "$f"'
# what a cluster CLI answers on a node whose Pacemaker does not run
NOT_CONNECTED = Reply(
    '<pacemaker-result api-version="2.25"><status code="102" message="Not connected"/></pacemaker-result>\n',
    102,
    "crm_mon: Error: cluster is not available on this node\n",
)


def crm_mon(state: str) -> str:
    return (PCMK / f"{state}.crm_mon.xml").read_text()


class PacemakerCluster(SshHosts):
    """The lab's three Pacemaker nodes as their CLIs answer (tests/fixtures/pacemaker). crm_mon
    says the states of `mon` in turn (one per call, the last repeating; `then(command, *states)`
    changes them when a command runs), cibadmin the CIB of the starting state as the commands run
    since edited it, corosync-quorumtool the `quorum` fixture, crm_simulate `simulate`.
    `edits` lists the commands that changed the cluster, in order."""

    def __init__(
        self,
        state: str = "all-online",
        *,
        quorum: str = "three-nodes",
        simulate: str | Reply | None = None,
        restart_probes: int = 2,
    ) -> None:
        super().__init__(["node1", "node2", "node3"], restart_probes=restart_probes)
        self.mon = [state]
        self.cib = ET.fromstring((PCMK / f"{state}.cib.xml").read_text())
        self.quorum = (FIXTURES / "corosync" / f"{quorum}.quorumtool.txt").read_text()
        self.simulate = simulate
        self.after: dict[str, list[str]] = {}
        self.not_members: set[str] = set()
        self.edits: list[str] = []
        self.simulations: list[str] = []

    def then(self, command: str, *states: str) -> PacemakerCluster:
        """From the time `command` runs, crm_mon says `states` in turn."""
        self.after[command] = list(states)
        return self

    # what the cluster says

    def _crm_mon(self) -> str:
        state = self.mon.pop(0) if len(self.mon) > 1 else self.mon[0]
        return crm_mon(state)

    def _config(self) -> str:
        config = self.cib.find("configuration")
        assert config is not None
        return ET.tostring(config, encoding="unicode") + "\n"

    def other(self, node: str, command: str) -> Result:
        if node in self.not_members and command.split()[0] in ("crm_mon", "cibadmin", "crm_attribute"):
            return NOT_CONNECTED
        if command == CRM_MON:
            return self._crm_mon()
        if command == CIB:
            return self._config()
        if command == f"{CRM_MON}; echo {SPLIT}; {CIB}":
            return f"{self._crm_mon()}\n{SPLIT}\n{self._config()}"
        if command == QUORUM:
            return Reply(self.quorum, 0 if "Quorate:          Yes" in self.quorum else 2)
        if command.startswith(SIMULATE):
            self.simulations.append(command)
            if self.simulate is None:
                raise UnexpectedCommand("crm_simulate was not expected")
            if isinstance(self.simulate, Reply):
                return self.simulate
            return (PCMK / f"{self.simulate}.simulate.xml").read_text()
        self.apply(command)
        return ""

    # what changes it

    def apply(self, command: str) -> None:
        """Carry out a CIB change as Pacemaker's CLI would (the state crm_mon shows follows `then`)."""
        args = shlex.split(command)

        def opt(flag: str) -> str | None:
            return args[args.index(flag) + 1] if flag in args else None

        if args[0] == "crm_attribute" and opt("--name") == "standby":
            node = self._node(str(opt("--node")))
            self._set(node, "instance_attributes", f"nodes-{node.get('id')}", "standby", opt("--update"))
        elif args[0] == "crm_resource" and "--meta" in args:
            rid = str(opt("--resource"))
            el = self.cib.find(f".//resources//*[@id='{rid}']")
            if el is None:
                raise UnexpectedCommand(f"no resource {rid}: {command}")
            name = str(opt("--set-parameter") or opt("--delete-parameter"))
            self._set(el, "meta_attributes", f"{rid}-meta_attributes", name, opt("--parameter-value"))
        elif args[:2] == ["cibadmin", "--modify"]:
            self._constraints(ET.fromstring(args[-1]), add=True)
        elif args[:2] == ["cibadmin", "--delete"]:
            self._constraints(ET.fromstring(args[-1]), add=False)
        else:
            raise UnexpectedCommand(f"not a Pacemaker command this cluster knows: {command!r}")
        self.edits.append(command)
        for prefix, states in self.after.items():
            if command.startswith(prefix):
                self.mon = list(states)

    def _node(self, name: str) -> ET.Element:
        node = self.cib.find(f"configuration/nodes/node[@uname='{name}']")
        assert node is not None, name
        return node

    @staticmethod
    def _set(el: ET.Element, section: str, set_id: str, name: str, value: str | None) -> None:
        attrs = el.find(section)
        if attrs is None:
            attrs = ET.SubElement(el, section, id=set_id)
        for nv in attrs.findall("nvpair"):
            if nv.get("name") == name:
                attrs.remove(nv)
        if value is not None:
            ET.SubElement(attrs, "nvpair", id=f"{set_id}-{name}", name=name, value=value)

    def _constraints(self, el: ET.Element, *, add: bool) -> None:
        constraints = self.cib.find("configuration/constraints")
        assert constraints is not None
        for old in constraints.findall(el.tag):
            if old.get("id") == el.get("id"):
                constraints.remove(old)
        if add:
            constraints.append(el)

    # what tests look at

    def node_attribute(self, node: str, name: str) -> str | None:
        for nv in self._node(node).iter("nvpair"):
            if nv.get("name") == name:
                return nv.get("value")
        return None

    def meta(self, rid: str) -> dict[str, str]:
        el = self.cib.find(f".//resources//*[@id='{rid}']/meta_attributes")
        return {nv.get("name", ""): nv.get("value", "") for nv in (el if el is not None else [])}

    def constraint_ids(self) -> list[str]:
        constraints = self.cib.find("configuration/constraints")
        return [c.get("id", "") for c in (constraints if constraints is not None else [])]

    def cluster_commands(self) -> list[str]:
        """The cluster CLI commands run, on whichever node (boot ids and restarts left out)."""
        return [c for _, c in self.transports.log if c not in (BOOT_ID, REBOOT, "hostname")]


# --- a pool of libvirt hypervisor hosts ---------------------------------------------------------------


@dataclass
class Guest:
    """A libvirt domain of LibvirtPool: where it is defined, its state, what it needs."""

    name: str
    host: str
    memory_mib: int = 128
    vcpus: int = 1
    state: str = "running"
    reason: str = "booted"
    managed_save: bool = False
    preferred: tuple[str, ...] = ()
    hostdev: bool = False
    local_disk: str | None = None  # a disk file on its host's own storage
    boots: int = 1  # a restart (not a restore) of its state makes a new boot


def pool_name(path: str) -> str:
    """A scripted host's name for its storage pool at `path`."""
    return "pool-" + (path.rstrip("/").rpartition("/")[2] or "root")


class LibvirtPool(SshHosts):
    """SshHosts that are libvirt hypervisors, answering the `virsh` commands of the libvirt
    provider in the formats real libvirt prints them (tests/fixtures/libvirt): the read script,
    migrate, domjobinfo, managedsave, start, resume, and cau's marks on each host's disk. A host's
    restart kills its running guests (a managed save survives it). `fail_migration` makes the
    next migration of a guest fail as libvirt does, leaving it paused on its source when asked."""

    URI = "qemu:///system"

    def __init__(
        self,
        names: Iterable[str],
        guests: Iterable[Guest],
        *,
        memory_mib: int = 24_000,
        restart_probes: int = 2,
    ) -> None:
        super().__init__(names, restart_probes=restart_probes)
        self.guests = {g.name: g for g in guests}
        self.marks: dict[str, set[str]] = {n: set() for n in self.names}
        self.memory_mib = memory_mib
        self.addresses = {n: f"10.0.0.1{i}" for i, n in enumerate(self.names, 1)}
        self.fail_migration: dict[str, str] = {}  # guest -> the error virsh prints
        self.pause_on_failure = False
        self.migrations: list[tuple[str, str, str]] = []  # (guest, from, to)
        self.migrate_commands: list[list[str]] = []  # the arguments of each `virsh migrate`
        self.max_downtime: dict[str, int] = {}  # migrate-setmaxdowntime, by guest
        # (source, target) -> virsh's error: the source cannot reach the target's libvirt (its
        # migrations there fail, and so does the provider's migration-path check)
        self.no_path: dict[tuple[str, str], str] = {}
        self.path_checks: list[str] = []  # the hosts that ran the migration-path check
        # where a disk copied by --copy-storage-all can land: active storage pools' target
        # paths (autostarted ones, and those not: inactive after a restart), and the files on
        # each host (a guest's local disk is on its host)
        self.storage_pools: dict[str, set[str]] = {n: set() for n in self.names}
        self.manual_pools: dict[str, set[str]] = {n: set() for n in self.names}
        self.files: dict[str, set[str]] = {n: set() for n in self.names}
        self.storage_checks: list[str] = []  # the hosts that ran the copy-storage check

    def answer(self, node: str, command: str) -> Result:
        if command == REBOOT and node not in self.held and self.down.get(node, 0) == 0:
            for g in self.guests.values():
                if g.host == node and g.state in ("running", "paused"):
                    g.state, g.reason = "shut off", "destroyed"
        return super().answer(node, command)

    def guest_url(self, name: str) -> str:
        return f"{self.guests[name].host}:{self.guests[name].boots}"

    def _xml(self, g: Guest) -> str:
        dom_id = " id='3'" if g.state in ("running", "paused") else ""
        meta = (
            f'\n  <metadata>\n    <cau:placement xmlns:cau="urn:cau:libvirt:1" '
            f'preferred="{" ".join(g.preferred)}"/>\n  </metadata>'
            if g.preferred
            else ""
        )
        disk = (
            f"\n    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
            f"      <source file='{g.local_disk}'/>\n      <target dev='vdb' bus='virtio'/>\n    </disk>"
            if g.local_disk
            else ""
        )
        hostdev = (
            "\n    <hostdev mode='subsystem' type='pci' managed='yes'>\n      <source>\n"
            "        <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>\n"
            "      </source>\n    </hostdev>"
            if g.hostdev
            else ""
        )
        kib = g.memory_mib * 1024
        return (
            f"<domain type='qemu'{dom_id}>\n  <name>{g.name}</name>\n"
            f"  <uuid>6f0c{abs(hash(g.name)) % 10**8:08d}-0000-4000-8000-000000000000</uuid>{meta}\n"
            f"  <memory unit='KiB'>{kib}</memory>\n  <currentMemory unit='KiB'>{kib}</currentMemory>\n"
            f"  <vcpu placement='static'>{g.vcpus}</vcpu>\n"
            "  <os>\n    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n"
            "    <kernel>/var/lib/cau-vms/vmlinux</kernel>\n  </os>\n"
            "  <devices>\n    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n"
            "    <interface type='bridge'>\n      <source bridge='vmbr0'/>\n"
            f"      <model type='virtio'/>\n    </interface>{disk}{hostdev}\n  </devices>\n</domain>"
        )

    def _read(self, node: str) -> str:
        mine = sorted((g for g in self.guests.values() if g.host == node), key=lambda g: g.name)
        out = [
            "CPU model:           x86_64\nCPU(s):              2\nCPU frequency:       2294 MHz\n"
            "CPU socket(s):       1\nCore(s) per socket:  2\nThread(s) per core:  1\n"
            f"NUMA cell(s):        1\nMemory size:         {self.memory_mib * 1024} KiB\n",
            LIBVIRT_SPLIT + "\n",
            "".join(m + "\n" for m in sorted(self.marks[node])),
            LIBVIRT_SPLIT + "\n",
            "".join(g.name + "\n" for g in mine if g.managed_save),
            LIBVIRT_SPLIT + "\n",
        ]
        for g in mine:
            out.append(f"{DOMAIN_HEAD} {g.name}\n{g.state} ({g.reason})\n{self._xml(g)}\n")
        return "".join(out)

    def other(self, node: str, command: str) -> Result:
        if command == read_script(self.URI):
            return self._read(node)
        if command.startswith("_cau_path() {"):
            return self._paths(node, command)
        if command.startswith(f"virsh -q -c {self.URI} pool-list --name | while read -r p;"):
            return self._storage(node, command)
        mark = re.fullmatch(rf"mkdir -p {MARK_DIR} && touch {MARK_DIR}/(\S+)", command)
        if mark:
            self.marks[node].add(mark.group(1))
            return ""
        mark = re.fullmatch(rf"rm -f {MARK_DIR}/(\S+)", command)
        if mark:
            self.marks[node].discard(mark.group(1))
            return ""
        prefix = f"virsh -q -c {self.URI} "
        if not command.startswith(prefix):
            return super().other(node, command)
        if " && " in command:  # virsh commands chained: each in turn, up to the first failing
            answer: Result = ""
            for part in command.split(" && "):
                answer = self.other(node, part)
                if isinstance(answer, Reply) and answer.exit_status != 0:
                    break
            return answer
        args = shlex.split(command.removeprefix(prefix))
        verb = args[0]
        if verb == "migrate":
            self.migrate_commands.append(args)
            if "--migrateuri" in args:  # an option with a value: not a positional argument
                at = args.index("--migrateuri")
                args = args[:at] + args[at + 2 :]
        args = [a for a in args if not a.startswith("--")]  # VERB NAME [DEST or VALUE]
        g = self.guests.get(args[1])
        if g is None or g.host != node:
            return Reply("", 1, f"error: failed to get domain '{args[1]}'\n")
        if verb == "migrate":
            return self._migrate(node, g, args)
        if verb == "domjobinfo":
            return (
                "Job type:         Completed\nOperation:        Incoming migration\n"
                "Time elapsed:     612          ms\nData processed:   63.921 MiB\n"
                "Data remaining:   0.000 B\nData total:       144.883 MiB\n"
                "Total downtime:   41           ms\n"
            )
        if verb == "managedsave":
            g.state, g.reason, g.managed_save = "shut off", "saved", True
            return f"\nDomain '{g.name}' state saved by libvirt\n"
        if verb == "start":
            if not g.managed_save:
                g.boots += 1
            g.state, g.reason = "running", "restored" if g.managed_save else "booted"
            g.managed_save = False
            return f"Domain '{g.name}' started\n"
        if verb == "resume":
            g.state, g.reason = "running", "unpaused"
            return f"Domain '{g.name}' resumed\n"
        if verb == "migrate-setmaxdowntime":
            self.max_downtime[g.name] = int(args[2])
            return ""
        if verb == "domjobabort":
            return ""
        return super().other(node, command)

    def _paths(self, node: str, command: str) -> str:
        """The migration-path check (paths_script), as real virsh answers it
        (tests/fixtures/libvirt/migration-paths.txt)."""
        self.path_checks.append(node)
        out = []
        for target, uri in re.findall(r"^_cau_path (\S+) (\S+) &$", command, re.MULTILINE):
            address = shlex.split(uri)[0].removeprefix("qemu+ssh://").removesuffix("/system")
            error = self.no_path.get((node, target))
            if error is None and (target in self.held or self.down.get(target, 0) > 0):
                error = f"unable to connect to server at '{address}:22': Connection refused"
            if error is None:
                out.append(f"{PATH_HEAD} {target} ok")
            else:
                out.append(
                    f"{PATH_HEAD} {target} no error: failed to connect to the hypervisor\terror: {error}"
                )
        return "".join(line + "\n" for line in out)

    def _storage(self, node: str, command: str) -> str:
        """The copy-storage check (storage_script), as real virsh and sh answer it
        (tests/fixtures/libvirt/storage-pools-and-files.txt)."""
        self.storage_checks.append(node)
        active = sorted(self.storage_pools[node] | self.manual_pools[node])
        out = [f"{STORAGE_HEAD}\tpool\t{pool_name(path)}\t{path}" for path in active]
        out += [f"{STORAGE_HEAD}\tautostart\t{pool_name(path)}" for path in sorted(self.storage_pools[node])]
        for quoted in re.findall(r"\[ -e (\S+) \]", command):
            path = shlex.split(quoted)[0]
            local = {g.local_disk for g in self.guests.values() if g.host == node}
            if path in self.files[node] or path in local:
                out.append(f"{STORAGE_HEAD}\tfile\t{path}")
        return "".join(line + "\n" for line in out)

    def _migrate(self, node: str, g: Guest, args: list[str]) -> Result:
        address = args[2].removeprefix("qemu+ssh://").removesuffix("/system")
        target = next((n for n, a in self.addresses.items() if a == address), None)
        if target is None or target in self.held or self.down.get(target, 0) > 0:
            return Reply("", 1, f"error: unable to connect to server at '{address}:22': Connection refused\n")
        if (node, target) in self.no_path:
            return Reply(
                "", 1, f"error: failed to connect to the hypervisor\nerror: {self.no_path[node, target]}\n"
            )
        error = self.fail_migration.pop(g.name, None)
        if error is not None:
            if self.pause_on_failure:
                g.state, g.reason = "paused", "migrating"
            return Reply("", 1, error)
        g.host, g.reason = target, "migrated"
        self.migrations.append((g.name, node, target))
        return ""
