"""The readiness rules (CAU's Test-CauSetup, for Linux clusters): pure functions from what was
observed (cau.readiness.observe) to results. Each rule gives at least one result: its pass (or
not-applicable, saying why), or one result per problem naming the node(s), the impact and the fix.

The same rules serve `cau check` and every run's preflight: a `fail` refuses the run (nothing
changed), a `warning` is journaled in it.
"""

from __future__ import annotations

import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cau.domain.cluster import ClusterSnapshot
from cau.domain.disruption import count_budget, domain_limit, domain_of, unknown_domains, unknown_selectors
from cau.domain.placement import place_roles
from cau.domain.planning import unknown_nodes
from cau.domain.profile import MoveMethod, RunProfile
from cau.errors import AuthError, CauError, HostKeyError
from cau.ports import CommandResult
from cau.readiness.facts import CACHE_DIRS, NodeFacts
from cau.readiness.model import Outcome, RuleResult
from cau.redact import redact, tail
from cau.views import ReadinessCheck

# Free space for staged downloads, in the package cache's file system: below WARN_MB a run may
# fail to stage a large update set (a kernel and firmware are a few hundred MB); below FAIL_MB
# even a small one will not download, and a full /var can leave dpkg half-way.
WARN_MB = 500
FAIL_MB = 100

# What each package-manager plug-in needs on the nodes.
PACKAGE_MANAGERS = {"apt": "apt", "dnf": "dnf"}
PLUGIN_TOOLS = {"apt": ("apt-get", "dpkg"), "dnf": ("dnf", "rpm")}


@dataclass(frozen=True)
class NodeProbe:
    """What reading one node gave: its facts, or why there are none."""

    node: str
    facts: NodeFacts | None = None
    error: CauError | None = None  # the transport's (host key, login, unreachable)
    failed: CommandResult | None = None  # the facts script ran but failed (sudo refused...)


@dataclass
class Observation:
    """Everything the rules look at, gathered once (cau.readiness.observe)."""

    cluster: str
    provider: str
    profile: RunProfile
    simulated: bool = False  # the sandbox: node rules are not applicable
    snapshot: ClusterSnapshot | None = None
    snapshot_error: str | None = None
    snapshot_exception: CauError | None = None  # what discover raised (a run re-raises it)
    profile_problems: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    plugin_problems: list[str] = field(default_factory=list)
    nodes: dict[str, NodeProbe] = field(default_factory=dict)
    provider_problems: list[str] = field(default_factory=list)
    cluster_manager: bool = False  # the provider is a cluster manager (reports its health)
    in_maintenance_by_cau: set[str] = field(default_factory=set)
    store_members: list[str] = field(default_factory=list)
    drain_problems: dict[str, list[str]] | None = None  # None: not asked (preflight)
    role_checks: list[ReadinessCheck] | None = None  # None: no clustered role
    user: str = "root"  # the login user (for the privilege rule's fix)

    @property
    def package_managers(self) -> set[str]:
        return {PACKAGE_MANAGERS[p] for p in self.plugins if p in PACKAGE_MANAGERS}

    def readable(self) -> dict[str, NodeFacts]:
        """The nodes whose facts could be read, by name (in the cluster's order)."""
        return {n: p.facts for n, p in self.nodes.items() if p.facts is not None}


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    check: Callable[[Rule, Observation], list[RuleResult]]
    node_rule: bool = False  # reads the nodes themselves (not applicable on the sandbox)

    def result(
        self,
        outcome: Outcome,
        *,
        nodes: Iterable[str] = (),
        impact: str = "",
        fix: str = "",
        detail: str = "",
    ) -> RuleResult:
        # What the nodes said may quote a proxy URL with its password: mask it. (A fix is cau's
        # own words, which the pattern masking would mangle: `NOPASSWD: ALL`.)
        return RuleResult(
            rule=self.id,
            title=self.title,
            outcome=outcome,
            nodes=list(nodes),
            impact=impact,
            fix=fix,
            detail=redact(detail),
        )

    def passed(self, detail: str = "", nodes: Iterable[str] = ()) -> RuleResult:
        return self.result(Outcome.PASS, nodes=nodes, detail=detail)

    def not_applicable(self, why: str) -> RuleResult:
        return self.result(Outcome.NOT_APPLICABLE, detail=why)


def _names(nodes: Iterable[str]) -> str:
    return ", ".join(nodes)


def _node_rule_na(obs: Observation) -> str | None:
    if obs.simulated:
        return f"the {obs.provider} cluster's nodes are simulated; there is no host to look at"
    if not obs.nodes:
        return "no node was read"
    return None


def _pass_or(
    rule: Rule, results: list[RuleResult], detail: str, nodes: Iterable[str] = ()
) -> list[RuleResult]:
    return results or [rule.passed(detail, nodes)]


# --- the nodes themselves -------------------------------------------------------------------------


def _reachable(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    results = []
    for name, probe in obs.nodes.items():
        err = probe.error
        if err is None:
            continue
        if isinstance(err, HostKeyError):
            impact = (
                "cau refuses to connect to a host whose identity it cannot verify: the node is not updated"
            )
        elif isinstance(err, AuthError):
            impact = "cau cannot log in: the node is not updated"
        else:
            # A node that is down is what nodes-online is about: refused only when all must be up.
            impact = "cau cannot reach the node: it is not updated, and counts against the failure budget"
        down = not isinstance(err, HostKeyError | AuthError)
        results.append(
            rule.result(
                Outcome.WARNING if down and not obs.profile.require_all_nodes_online else Outcome.FAIL,
                nodes=[name],
                impact=impact,
                fix=err.hint or f"check that {name} is up and its sshd reachable from this machine",
                detail=err.message,
            )
        )
    return _pass_or(rule, results, "host keys verified", obs.nodes)


def _privilege(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    results = []
    for name, probe in obs.nodes.items():
        if probe.error is not None:
            continue  # named by nodes-reachable
        facts = probe.facts
        if facts is not None and facts.uid == 0:
            continue
        said = tail((probe.failed.stderr or probe.failed.stdout) if probe.failed else "", 200)
        got = f"commands run as uid {facts.uid}" if facts is not None and facts.uid is not None else said
        results.append(
            rule.result(
                Outcome.FAIL,
                nodes=[name],
                impact="installing updates, maintenance and restarts need root: nothing can be done there",
                fix=f"log in as root, or let {obs.user} run commands without a password on {name} "
                f"(/etc/sudoers.d/cau: `{obs.user} ALL=(root) NOPASSWD: ALL`); `sudo -n true` must succeed",
                detail=got or "the node's answer was not read",
            )
        )
    return _pass_or(rule, results, "commands run as root", [n for n in obs.nodes if obs.nodes[n].facts])


def _auto_updates(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    impact = (
        "updates install on their own, outside a run: a node can restart or change while it hosts "
        "roles, and nodes drift apart"
    )
    results = []
    for name, f in obs.readable().items():
        found: list[str] = []
        fixes: list[str] = []
        warn_only = True
        uu = f.apt_periodic.get("unattended-upgrade", "0")
        if uu not in ("", "0") and f.uu_installed:
            timer = f.timers.get("apt-daily-upgrade.timer", "")
            found.append(
                f'APT::Periodic::Unattended-Upgrade "{uu}" with unattended-upgrades installed'
                + (f" (apt-daily-upgrade.timer {timer})" if timer else "")
            )
            fixes.append(
                'set APT::Periodic::Unattended-Upgrade "0" (e.g. in /etc/apt/apt.conf.d/20auto-upgrades; '
                "`apt-config dump | grep Periodic` shows the result), or remove unattended-upgrades"
            )
            # a timer known to be off installs nothing until it is turned on again
            warn_only = warn_only and timer in ("inactive", "failed")
        if f.timers.get("dnf-automatic-install.timer") == "active":
            found.append("dnf-automatic-install.timer is active")
            fixes.append("`systemctl disable --now dnf-automatic-install.timer`")
            warn_only = False
        for unit in ("dnf-automatic.timer", "dnf5-automatic.timer"):
            if f.timers.get(unit) == "active" and f.dnf_apply_updates:
                found.append(f"{unit} is active and /etc/dnf/automatic.conf has apply_updates = yes")
                fixes.append("set apply_updates = no in /etc/dnf/automatic.conf (download only), "
                             f"or `systemctl disable --now {unit}`")  # fmt: skip
                warn_only = False
        if f.offline_update:
            found.append(
                f"a PackageKit offline update is prepared ({_names(f.offline_update)}): "
                "it installs at the next boot"
            )
            fixes.append(
                "`pkcon offline-cancel` (and turn off automatic updates in the desktop's software settings)"
            )
            warn_only = False
        if found:
            results.append(
                rule.result(
                    Outcome.WARNING if warn_only else Outcome.FAIL,
                    nodes=[name],
                    impact=impact,
                    fix=f"on {name}: " + "; ".join(fixes),
                    detail="; ".join(found),
                )
            )
    return _pass_or(rule, results, "no automatic installer", obs.readable())


def _majority(values: dict[str, frozenset[str]]) -> frozenset[str]:
    counts = Counter(values.values())
    best = max(counts.values())
    # ties: the first node's set (the configuration's order) is the reference
    return next(v for v in values.values() if counts[v] == best)


def _same_everywhere(
    rule: Rule,
    values: dict[str, frozenset[str]],
    *,
    what: str,
    impact: str,
    fix: Callable[[str], str],
) -> list[RuleResult]:
    if len(values) < 2:
        return [rule.passed(f"{len(values)} node(s) read", values)]
    reference = _majority(values)
    results = []
    for name, mine in values.items():
        if mine == reference:
            continue
        extra, lacking = sorted(mine - reference), sorted(reference - mine)
        said = ([f"has {what} {e!r}" for e in extra]) + ([f"lacks {what} {e!r}" for e in lacking])
        results.append(
            rule.result(Outcome.WARNING, nodes=[name], impact=impact, fix=fix(name), detail="; ".join(said))
        )
    return _pass_or(rule, results, f"{len(reference)} {what}(s), the same on every node", values)


def _sources(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    managers = obs.package_managers
    if not managers:
        return [
            rule.not_applicable(f"no package-manager plug-in (plug-ins: {_names(obs.plugins) or 'none'})")
        ]
    readable = obs.readable()
    results: list[RuleResult] = []
    impact = "nodes get different updates (or none): they end the run unlike each other"
    if "apt" in managers:
        results += _same_everywhere(
            rule,
            {n: f.apt_sources for n, f in readable.items()},
            what="apt source",
            impact=impact,
            fix=lambda n: (
                f"make {n}'s /etc/apt/sources.list and /etc/apt/sources.list.d/ list the "
                "sources the other nodes use"
            ),
        )
    if "dnf" in managers:
        results += _same_everywhere(
            rule,
            {n: f.dnf_repos for n, f in readable.items()},
            what="dnf repository",
            impact=impact,
            fix=lambda n: f"make {n}'s enabled repositories (/etc/yum.repos.d/) those of the other nodes",
        )
    problems = [r for r in results if r.outcome is not Outcome.PASS]
    return problems or results[:1]


def _proxy(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    if not obs.package_managers:
        return [rule.not_applicable("no package-manager plug-in")]
    return _same_everywhere(
        rule,
        {n: f.proxies for n, f in obs.readable().items()},
        what="proxy setting",
        impact="a node whose proxy differs may not reach the update sources (its staging fails "
        "during the run) or reach them another way",
        fix=lambda n: (
            f"set the same proxy on {n} as on the other nodes (`apt-config dump | grep -i proxy`, "
            "/etc/environment, /etc/dnf/dnf.conf)"
        ),
    )


def _package_manager(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    if not obs.package_managers:
        return [rule.not_applicable("no package-manager plug-in")]
    results = []
    for name, f in obs.readable().items():
        if "apt" in obs.package_managers and f.dpkg_updates:
            results.append(
                rule.result(
                    Outcome.FAIL,
                    nodes=[name],
                    impact="apt refuses to install anything until dpkg's interrupted work is finished",
                    fix=f"on {name}: `dpkg --configure -a`, "
                    "then `apt-get -f install` if packages remain broken",
                    detail="dpkg was interrupted "
                    f"(/var/lib/dpkg/updates/ holds {_names(f.dpkg_updates[:5])})",
                )
            )
        elif "apt" in obs.package_managers and f.dpkg_audit:
            # Packages left half-installed or half-configured (a failed maintainer script): apt
            # still works, and the apt plug-in offers to finish them (a "repair" update); a run
            # fails the node if it cannot. Not a reason to refuse the whole cluster's run.
            results.append(
                rule.result(
                    Outcome.WARNING,
                    nodes=[name],
                    impact="a run tries to finish configuring them on this node, and fails the node "
                    "if their maintainer scripts fail again",
                    fix=f"on {name}: find why they failed (`dpkg --configure -a` shows it) and fix it",
                    detail="dpkg --audit: " + tail(" ".join(f.dpkg_audit.split()), 300),
                )
            )
        if f.locks:
            holders = sorted({f"{lock.command} (pid {lock.pid})" for lock in f.locks})
            results.append(
                rule.result(
                    Outcome.WARNING,
                    nodes=[name],
                    impact="the package manager is busy: a run waits for it (the plug-in's lock_timeout), "
                    "then fails the node",
                    fix=f"let {_names(holders)} finish on {name} "
                    "(an automatic updater? see no-automatic-updates)",
                    detail="lock held: " + _names(sorted({lock.file for lock in f.locks})),
                )
            )
    return _pass_or(rule, results, "not interrupted, not locked", obs.readable())


def _disk(rule: Rule, obs: Observation) -> list[RuleResult]:
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    if not obs.package_managers:
        return [rule.not_applicable("no package-manager plug-in")]
    results = []
    for name, f in obs.readable().items():
        for manager in sorted(obs.package_managers):
            where = CACHE_DIRS[manager]
            free = f.free_kb.get(where)
            if free is None:
                continue  # no such cache: the tools rule names a missing package manager
            mb = free // 1024
            if mb >= WARN_MB:
                continue
            results.append(
                rule.result(
                    Outcome.FAIL if mb < FAIL_MB else Outcome.WARNING,
                    nodes=[name],
                    impact="updates are downloaded there before the node is drained: staging fails, "
                    "or dpkg runs out of room half-way",
                    fix=f"free space on {name} (`apt-get clean` / `dnf clean packages`, old kernels, logs): "
                    f"at least {WARN_MB} MB in {where}",
                    detail=f"{mb} MB free in {where} (warning below {WARN_MB} MB, fail below {FAIL_MB} MB)",
                )
            )
    return _pass_or(rule, results, f"at least {WARN_MB} MB free for downloads", obs.readable())


# --- plug-ins and scripts -------------------------------------------------------------------------


_SCRIPT_FAILS = "the script fails there: the node is not updated (pre) or ends PartiallyFailed (post)"


def script_targets(profile: RunProfile) -> tuple[list[str], list[str]]:
    """(files, commands) the profile's pre/post-update scripts start with: a script given as a
    path is a file whose copies are compared; a command is looked up on the PATH."""
    files: list[str] = []
    commands: list[str] = []
    for script in (profile.pre_update_script, profile.post_update_script):
        if not script:
            continue
        try:
            words = shlex.split(script)
        except ValueError:
            words = script.split()
        # `VAR=x cmd`, `sudo cmd`: the program is the first word that is neither
        program = next(
            (w for w in words if "=" not in w.split("/")[0] and w not in ("sudo", "env", "exec")), ""
        )
        if not program:
            continue
        kind = files if "/" in program else commands
        if program not in kind:
            kind.append(program)
    return files, commands


def plugin_tools(plugins: Sequence[str]) -> list[str]:
    return [t for p in plugins for t in PLUGIN_TOOLS.get(p, ())]


def _plugins(rule: Rule, obs: Observation) -> list[RuleResult]:
    results = [
        rule.result(
            Outcome.FAIL,
            impact="the run cannot start",
            fix="install the plug-in (`cau plugins` lists what is installed) or fix its arguments",
            detail=problem,
        )
        for problem in obs.plugin_problems
    ]
    tools = plugin_tools(obs.plugins)
    if tools and not obs.simulated:
        for name, f in obs.readable().items():
            # each tool is looked up on the PATH by the facts script (`command -v`)
            missing = [t for t in tools if not f.commands.get(t, t in f.tools)]
            if missing:
                results.append(
                    rule.result(
                        Outcome.FAIL,
                        nodes=[name],
                        impact="the plug-in cannot scan or install there: the node fails",
                        fix=f"install {_names(missing)} on {name}, or use the plug-in of its package manager",
                        detail=f"not on the PATH: {_names(missing)} (plug-ins: {_names(obs.plugins)})",
                    )
                )
    return _pass_or(rule, results, f"plug-ins: {_names(obs.plugins) or 'none'}")


def _scripts(rule: Rule, obs: Observation) -> list[RuleResult]:
    files, commands = script_targets(obs.profile)
    if not files and not commands:
        return [rule.not_applicable("the profile has no pre/post-update script")]
    na = _node_rule_na(obs)
    if na:
        return [rule.not_applicable(na)]
    results: list[RuleResult] = []
    readable = obs.readable()
    for path in files:
        digests = {n: f.scripts.get(path) for n, f in readable.items()}
        missing = [n for n, d in digests.items() if d is None]
        for n in missing:
            results.append(
                rule.result(
                    Outcome.FAIL,
                    nodes=[n],
                    impact=_SCRIPT_FAILS,
                    fix=f"copy {path} to {n} (the same file as on the other nodes), executable",
                    detail=f"{path} does not exist",
                )
            )
        present = {n: frozenset([d]) for n, d in digests.items() if d is not None}
        if len(set(present.values())) > 1:
            reference = _majority(present)
            for n, d in present.items():
                if d != reference:
                    results.append(
                        rule.result(
                            Outcome.WARNING,
                            nodes=[n],
                            impact="the nodes run different scripts: failures, or another behaviour per node",
                            fix=f"copy the same {path} to every node",
                            detail=f"sha256 {next(iter(d))[:16]}... differs from the other nodes' "
                            f"{next(iter(reference))[:16]}...",
                        )
                    )
    for command in commands:
        for n, f in readable.items():
            if f.commands.get(command) is False:
                results.append(
                    rule.result(
                        Outcome.FAIL,
                        nodes=[n],
                        impact=_SCRIPT_FAILS,
                        fix=f"install {command} on {n}, or give the script as a full path",
                        detail=f"{command} is not on the PATH",
                    )
                )
    return _pass_or(rule, results, f"present and identical: {_names(files + commands)}", readable)


# --- the cluster ----------------------------------------------------------------------------------


def _observed(rule: Rule, obs: Observation) -> list[RuleResult] | None:
    if obs.snapshot is None:
        return [rule.not_applicable(f"the cluster could not be observed: {obs.snapshot_error or 'unknown'}")]
    return None


def _cluster_observable(rule: Rule, obs: Observation) -> list[RuleResult]:
    if obs.snapshot is None:
        return [
            rule.result(
                Outcome.FAIL,
                impact="cau cannot see the cluster: no run can start",
                fix="see the other rules' results (reachability, the cluster manager), then check again",
                detail=obs.snapshot_error or "",
            )
        ]
    return [rule.passed(f"{len(obs.snapshot.nodes)} node(s), {len(obs.snapshot.roles)} role(s)")]


def _provider(rule: Rule, obs: Observation) -> list[RuleResult]:
    results = [
        rule.result(
            Outcome.FAIL,
            impact="the run is refused",
            detail=problem,  # the provider's findings say what to do themselves
        )
        for problem in obs.provider_problems
    ]
    return _pass_or(rule, results, f"the {obs.provider} provider's own checks")


def _cluster_manager(rule: Rule, obs: Observation) -> list[RuleResult]:
    if not obs.cluster_manager:
        return [rule.not_applicable(f"the {obs.provider} provider has no cluster manager")]
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    assert obs.snapshot is not None
    results = []
    for node in obs.snapshot.nodes:
        probe = obs.nodes.get(node.name)
        if node.is_up or probe is None or probe.facts is None:
            continue  # up, or not reachable at all (nodes-reachable says so)
        results.append(
            rule.result(
                Outcome.FAIL,
                nodes=[node.name],
                impact="the node answers over SSH but is not an online member: its roles cannot move, "
                "and it cannot be updated the cluster's way",
                fix=f"start the cluster stack on {node.name} (e.g. `systemctl start corosync pacemaker`, "
                "or `pcs cluster start`), then check `crm_mon -1`",
                detail=f"{node.name} is reachable but not online in the cluster",
            )
        )
    return _pass_or(rule, results, "every node is an online member", obs.snapshot.node_names)


def _quorum(rule: Rule, obs: Observation) -> list[RuleResult]:
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    snap = obs.snapshot
    assert snap is not None
    if snap.has_quorum:
        return [rule.passed(f"{snap.describe_votes(snap.online_votes)} online")]
    if snap.min_online is not None:
        detail = f"only {snap.online_count} node(s) online, fewer than min_online = {snap.min_online}"
    else:
        detail = f"the cluster has no quorum ({snap.describe_votes(snap.online_votes)} online)"
    down = [n.name for n in snap.nodes if not n.is_up]
    return [
        rule.result(
            Outcome.FAIL,
            nodes=down,
            impact="no node may be taken down: the run is refused",
            fix=f"bring {_names(down) or 'the nodes'} back online",
            detail=detail,
        )
    ]


def _online(rule: Rule, obs: Observation) -> list[RuleResult]:
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    assert obs.snapshot is not None
    down = [n.name for n in obs.snapshot.nodes if not n.is_up]
    if not down:
        return [rule.passed("every node is online", obs.snapshot.node_names)]
    required = obs.profile.require_all_nodes_online
    return [
        rule.result(
            Outcome.FAIL if required else Outcome.WARNING,
            nodes=down,
            impact="the run is refused (require_all_nodes_online)"
            if required
            else "the node(s) are not updated; each counts against the failure budget",
            fix=f"bring {_names(down)} back online",
            detail=f"require_all_nodes_online: node(s) {_names(down)} are not online"
            if required
            else f"node(s) {_names(down)} are not online",
        )
    ]


# How an operator takes a node out of a maintenance cau did not start, by provider.
_LEAVE_MAINTENANCE = {
    "pacemaker": "e.g. `crm node online NODE`",
    "ssh": "the maintenance hooks' exit command, run by hand",
    # its mark is a file cau writes on the host: one left there is a lost run's
    "libvirt": "a maintenance mark a lost cau run left: `cau cleanup {cluster}`",
}


def _leave_maintenance_hint(obs: Observation) -> str:
    return _LEAVE_MAINTENANCE.get(obs.provider, "with your cluster's own tools").format(cluster=obs.cluster)


def _maintenance(rule: Rule, obs: Observation) -> list[RuleResult]:
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    assert obs.snapshot is not None
    already = [
        n.name for n in obs.snapshot.nodes if n.in_maintenance and n.name not in obs.in_maintenance_by_cau
    ]
    if not already:
        return [rule.passed("no node is in maintenance")]
    allowed = obs.profile.allow_nodes_in_maintenance
    return [
        rule.result(
            Outcome.WARNING if allowed else Outcome.FAIL,
            nodes=already,
            impact="they are updated and left in maintenance (allow_nodes_in_maintenance)"
            if allowed
            else "the run is refused: cau does not take nodes out of a maintenance it did not start",
            fix=f"take {_names(already)} out of maintenance ({_leave_maintenance_hint(obs)}), or "
            "allow_nodes_in_maintenance (--allow-nodes-in-maintenance) updates them and leaves them so",
            detail=f"node(s) {_names(already)} already in maintenance (not put there by cau)",
        )
    ]


def _options(rule: Rule, obs: Observation) -> list[RuleResult]:
    results = [
        rule.result(
            Outcome.FAIL,
            impact="no run starts with this profile",
            fix="correct the option in the profile (`cau profile validate FILE` shows the effective options)",
            detail=problem,
        )
        for problem in obs.profile_problems
    ]
    if obs.snapshot is not None and obs.profile.node_order:
        unknown = unknown_nodes(obs.snapshot, obs.profile.node_order)
        if unknown:
            results.append(
                rule.result(
                    Outcome.FAIL,
                    impact="the run is refused",
                    fix=f"name only nodes of {obs.cluster} in node_order",
                    detail=f"node_order names unknown node(s) {_names(unknown)} "
                    f"(cluster {obs.snapshot.name} has {_names(obs.snapshot.node_names)})",
                )
            )
    return _pass_or(rule, results, "the profile's options are valid")


def _budget(rule: Rule, obs: Observation) -> list[RuleResult]:
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    assert obs.snapshot is not None
    n = len(obs.snapshot.nodes)
    wanted = obs.profile.max_failed_nodes
    if wanted is not None and wanted > max(n - 1, 0):
        return [
            rule.result(
                Outcome.FAIL,
                impact="the run is refused",
                fix=f"set max_failed_nodes between 0 and {max(n - 1, 0)} (or leave it out: about a third)",
                detail=f"max_failed_nodes = {wanted} is out of range 0..{max(n - 1, 0)} for {n} nodes",
            )
        ]
    return [rule.passed(f"max_failed_nodes = {obs.profile.effective_max_failed(n)} of {n} nodes")]


def _capacity(rule: Rule, obs: Observation) -> list[RuleResult]:
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    snap = obs.snapshot
    assert snap is not None
    if obs.profile.move is MoveMethod.SAVE:
        return [rule.not_applicable("move = save: roles stop in place and start again after the restart")]
    results = []
    for node in snap.nodes:
        if not node.is_up or node.in_maintenance:
            continue
        problems: list[str] = []
        placement = place_roles(snap, [node.name])
        if not placement.feasible:
            problems.append(placement.explain())
        problems += (obs.drain_problems or {}).get(node.name, [])
        if problems:
            results.append(
                rule.result(
                    Outcome.WARNING,
                    nodes=[node.name],
                    impact="its roles have nowhere to go: the node is not drained and fails "
                    "(InsufficientCapacity / DrainWouldStopRoles) instead of stopping them",
                    fix=f"make room on the other nodes for {node.name}'s roles, "
                    "or relax the constraints that hold "
                    "them (preferred owners, bans, colocations)",
                    detail="; ".join(problems),
                )
            )
    checked = "capacity" + (" and the cluster manager's placement" if obs.drain_problems is not None else "")
    return _pass_or(rule, results, f"every node's roles can move elsewhere ({checked})")


def _store_members(rule: Rule, obs: Observation) -> list[RuleResult]:
    if not obs.store_members:
        return [rule.not_applicable("the cluster names no store_members")]
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    assert obs.snapshot is not None
    strangers = unknown_nodes(obs.snapshot, obs.store_members)
    if strangers:
        return [
            rule.result(
                Outcome.FAIL,
                impact="the run is refused: the store's quorum cannot be kept",
                fix="list only nodes of the cluster in store_members (cluster configuration)",
                detail=f"store_members names unknown node(s) {_names(strangers)} "
                f"(cluster {obs.cluster} has {_names(obs.snapshot.node_names)})",
            )
        ]
    return [rule.passed(f"store members: {_names(obs.store_members)}")]


def _disruption(rule: Rule, obs: Observation) -> list[RuleResult]:
    """Failure domains and disruption budgets (cau.domain.disruption) name what the cluster has.
    Warnings, not failures: a profile serves a whole class of clusters, and a limit that finds
    nothing to hold makes no run less safe than it was without it."""
    profile = obs.profile
    asked = profile.disruption_budgets or profile.domain_order or profile.max_nodes_per_domain
    labelled = obs.snapshot is not None and any(
        domain_of(n, profile.domain_label) for n in obs.snapshot.nodes
    )
    if not asked and not labelled:
        return [rule.not_applicable("no failure domain and no disruption budget")]
    blocked = _observed(rule, obs)
    if blocked:
        return blocked
    snap = obs.snapshot
    assert snap is not None
    label = profile.domain_label
    results = []

    def warn(impact: str, fix: str, detail: str, nodes: Iterable[str] = ()) -> None:
        results.append(rule.result(Outcome.WARNING, nodes=nodes, impact=impact, fix=fix, detail=detail))

    without = [n.name for n in snap.nodes if domain_of(n, label) is None]
    domains = sorted({d for n in snap.nodes if (d := domain_of(n, label)) is not None})
    if not domains and (profile.max_nodes_per_domain or profile.domain_order):
        warn(
            "no failure-domain limit or order applies",
            f"give the nodes a {label} label (configuration, or a Pacemaker node attribute), or "
            "name the label they have in domain_label",
            f"no node has the label {label} (domain_label)",
        )
    elif domains and without:
        warn(
            "these nodes are not limited by max_nodes_per_domain",
            f"give them a {label} label",
            f"node(s) {_names(without)} have no {label} label (the others are in {_names(domains)})",
            without,
        )
    strangers = unknown_domains(snap, label, profile.domain_order or [])
    if domains and strangers:
        warn(
            "the run orders the domains it knows and ignores these",
            f"name only domains of {obs.cluster} in domain_order ({_names(domains)})",
            f"domain_order names {label} value(s) no node has: {_names(strangers)}",
        )
    for selector in unknown_selectors(snap, profile.disruption_budgets):
        warn(
            "this selector holds nothing",
            f"name roles of {obs.cluster} (exact, or a glob such as web-*) in disruption_budgets",
            f"disruption budget selector {selector} matches no role of {obs.cluster}",
        )
    for budget in profile.disruption_budgets:
        count = count_budget(snap, budget, (), profile.move is MoveMethod.LIVE)
        if count.instances and count.running <= count.required:
            warn(
                "no node hosting one of its instances can enter maintenance: those nodes fail",
                "lower min_available, or start the stopped instances first",
                f"{budget}: {count.running} of {count.instances} instance(s) running, "
                f"{count.required} needed: none may stop",
            )
    limit = domain_limit(snap, profile.disruption_limits)
    summary = (
        f"{len(domains)} {label} domain(s), at most {limit} out of service each" if limit else "no domains"
    )
    return _pass_or(rule, results, f"{summary}; {len(profile.disruption_budgets)} disruption budget(s)")


def _role(rule: Rule, obs: Observation) -> list[RuleResult]:
    if obs.role_checks is None:
        return [rule.not_applicable("no clustered role (self-updating mode is not set up)")]
    results = [
        rule.result(
            Outcome.FAIL,
            impact="the role's runs will not start or not hand over",
            fix=f"fix what the finding names, then `cau role show {obs.cluster}`",
            detail=f"{c.check}: {c.detail}",
        )
        for c in obs.role_checks
        if not c.ok
    ]
    return _pass_or(rule, results, "; ".join(c.check for c in obs.role_checks))


# In the order they are reported: can cau reach and act, then what would install on its own,
# then the package manager, the run's own pieces, then the cluster.
RULES: tuple[Rule, ...] = (
    Rule("nodes-reachable", "Every node is reachable over SSH with a verified host key", _reachable, True),
    Rule("privilege", "Commands run as root on every node (root login, or sudo -n)", _privilege, True),
    Rule("cluster-observable", "cau can observe the cluster", _cluster_observable),
    Rule("provider-checks", "The cluster provider's own checks pass", _provider),
    Rule("cluster-manager", "The cluster manager runs on every node", _cluster_manager),
    Rule("quorum", "The cluster has quorum", _quorum),
    Rule("nodes-online", "Every node is online", _online),
    Rule("nodes-in-maintenance", "No node is in maintenance already", _maintenance),
    Rule("no-automatic-updates", "No automatic updater installs updates on its own", _auto_updates, True),
    Rule("same-update-sources", "Every node uses the same update sources", _sources, True),
    Rule("same-proxy", "Every node reaches the update sources through the same proxy", _proxy, True),
    Rule("package-manager-healthy", "The package manager is healthy and not busy", _package_manager, True),
    Rule("disk-space", "Enough free disk for staged downloads", _disk, True),
    Rule("plugins-ready", "The plug-ins load and their tools are on every node", _plugins),
    Rule("scripts-identical", "The pre/post-update scripts exist and are identical on every node", _scripts),
    Rule("profile-valid", "The Updating Run options are valid", _options),
    Rule("failure-budget", "The failure budget can be met", _budget),
    Rule("capacity", "Every node's roles have somewhere to go", _capacity),
    Rule(
        "disruption-limits", "Failure domains and disruption budgets name what the cluster has", _disruption
    ),
    Rule("store-members", "The run store's members are nodes of the cluster", _store_members),
    Rule("coordinator-role", "The clustered role (self-updating mode) is ready", _role),
)


def evaluate(obs: Observation) -> list[RuleResult]:
    return [result for rule in RULES for result in rule.check(rule, obs)]
