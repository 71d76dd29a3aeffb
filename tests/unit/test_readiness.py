"""The readiness rules (`cau check`, every run's preflight): each one made to fail (or warn) on
purpose on scripted hosts that answer the facts script as real ones do (tests/contract/scripted.py),
through the real ssh and pacemaker providers, facts parser and rules; and the run's preflight
refusing on a failing rule, naming its fix, or journaling a warning that its report shows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from cau.clock import run_virtual
from cau.domain.cluster import Capacity, ClusterSnapshot, Node, NodeState, Role, RoleKind
from cau.domain.profile import RunProfile, build_profile
from cau.domain.runs import ReportQuery
from cau.errors import PreflightError
from cau.journal.events import EventKind
from cau.providers.pacemaker import PacemakerProvider
from cau.providers.ssh import SshOptions, SshProvider
from cau.readiness import Observation, Outcome, RuleResult, evaluate, observe
from cau.readiness.facts import parse_apt_sources, parse_dnf_repos
from cau.testing import Reply, Result
from cau.transport.ssh import SshTarget, changed_host_key, refused_login
from cau.views import ReadinessCheck
from tests.contract.scripted import FACTS_PREFIX, PacemakerCluster, SshHosts
from tests.support import node, spec, write_cluster

NAMES = ["n1", "n2", "n3"]
UU_ON = 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";'
UU_INSTALLED = "install ok installed"


class Hosts(SshHosts):
    """Scripted hosts; those in `sudo_refused` answer the facts script as `sudo -n` does."""

    def __init__(self) -> None:
        super().__init__(NAMES)
        self.sudo_refused: set[str] = set()

    def answer(self, node: str, command: str) -> Result:
        if node in self.sudo_refused and command.startswith(FACTS_PREFIX):
            return Reply("", 1, "sudo: a password is required\n")
        return super().answer(node, command)


def ssh(hosts: SshHosts, **options: Any) -> SshProvider:
    opts = SshOptions.model_validate(
        {
            "nodes": [{"name": n, "host": f"192.0.2.{i}"} for i, n in enumerate(hosts.names, 1)],
            "known_hosts": "/nonexistent/known_hosts",
            "allow_member_coordinator": True,
            **options,
        }
    )
    return SshProvider("web", opts, transports=hosts.transports)


def check(provider: Any, profile: RunProfile | None = None, **kw: Any) -> list[RuleResult]:
    kw.setdefault("plugins", ["apt"])
    obs = run_virtual(
        observe(provider, cluster="web", provider_name="ssh", profile=profile or RunProfile(), **kw)
    )
    return evaluate(obs)


def findings(results: list[RuleResult]) -> dict[tuple[str, tuple[str, ...]], str]:
    """(rule, nodes) -> outcome of every result that is not a pass or not-applicable."""
    return {
        (r.rule, tuple(r.nodes)): r.outcome.value
        for r in results
        if r.outcome in (Outcome.WARNING, Outcome.FAIL)
    }


def one(results: list[RuleResult], rule: str) -> RuleResult:
    (found,) = [r for r in results if r.rule == rule and r.outcome is not Outcome.PASS]
    return found


def test_a_healthy_debian_cluster_passes_every_rule_that_applies() -> None:
    results = check(ssh(Hosts()))
    assert findings(results) == {}
    by_rule = {r.rule: r.outcome for r in results}
    assert by_rule["nodes-reachable"] is Outcome.PASS and by_rule["no-automatic-updates"] is Outcome.PASS
    assert by_rule["same-update-sources"] is Outcome.PASS and by_rule["disk-space"] is Outcome.PASS
    # what does not concern a list of hosts without a cluster manager, role or scripts
    assert {r for r, o in by_rule.items() if o is Outcome.NOT_APPLICABLE} == {
        "cluster-manager",
        "scripts-identical",
        "disruption-limits",
        "store-members",
        "coordinator-role",
    }


def test_the_provider_s_own_checks_fail_as_a_rule() -> None:
    hosts = Hosts()
    provider = ssh(hosts, allow_member_coordinator=False)
    provider.options.nodes[0].host = "127.0.0.1"  # this machine: remote-updating mode refuses it
    results = check(provider)
    assert findings(results) == {("provider-checks", ()): "fail"}
    assert "this machine is itself node n1" in one(results, "provider-checks").detail


class _AskedAtOnce(SshProvider):
    """Its own checks go on only once the cluster is being observed: they finish only if both
    are asked at once."""

    discovering: asyncio.Event

    async def discover(self) -> ClusterSnapshot:
        self.discovering.set()
        return await super().discover()

    async def preflight(
        self, profile: RunProfile | None = None, *, coordinator_node: str | None = None
    ) -> list[str]:
        async with asyncio.timeout(2):
            await self.discovering.wait()
        return await super().preflight(profile, coordinator_node=coordinator_node)


def test_the_provider_s_own_checks_and_the_observation_are_asked_at_once() -> None:
    # Both only read (libvirt and Pacemaker each read every host): a run's start waits for the
    # slower of them, not for both in turn.
    hosts = Hosts()
    base = ssh(hosts)
    provider = _AskedAtOnce("web", base.options, transports=hosts.transports)
    provider.discovering = asyncio.Event()
    assert findings(check(provider)) == {}


def target(node: str) -> SshTarget:
    return SshTarget(name=node, host="192.0.2.2", known_hosts=Path("/etc/cau/known_hosts"), cluster="web")


def test_a_changed_host_key_fails_reachability_naming_the_trust_command() -> None:
    hosts = Hosts()
    hosts.refusing["n2"] = changed_host_key(target("n2"))
    results = check(ssh(hosts))
    found = one(results, "nodes-reachable")
    assert (found.outcome, found.nodes) == (Outcome.FAIL, ["n2"])
    assert "CHANGED" in found.detail and "`cau hosts trust web n2 --replace`" in found.fix
    # the provider does not observe a cluster with a node of doubtful identity either
    assert one(results, "cluster-observable").outcome is Outcome.FAIL


def test_a_refused_login_fails_and_a_node_that_is_down_warns_unless_all_must_be_online() -> None:
    hosts = Hosts()
    hosts.refusing["n1"] = refused_login(target("n1"))
    hosts.held.add("n3")  # down: connection refused
    found = findings(check(ssh(hosts)))
    assert found[("nodes-reachable", ("n1",))] == "fail"
    assert found[("nodes-reachable", ("n3",))] == "warning"
    strict = findings(check(ssh(hosts), RunProfile(require_all_nodes_online=True)))
    assert strict[("nodes-reachable", ("n3",))] == "fail"


def test_privilege_fails_where_sudo_asks_for_a_password_or_commands_do_not_run_as_root() -> None:
    hosts = Hosts()
    hosts.sudo_refused.add("n2")
    hosts.facts["n3"] = {"uid": "1000"}
    results = check(ssh(hosts, user="deploy"))
    assert findings(results) == {("privilege", ("n2",)): "fail", ("privilege", ("n3",)): "fail"}
    n2 = next(r for r in results if r.rule == "privilege" and r.nodes == ["n2"])
    assert "sudo: a password is required" in n2.detail
    assert "deploy ALL=(root) NOPASSWD: ALL" in n2.fix and "n2" in n2.fix


@pytest.mark.parametrize(
    ("sections", "outcome", "said", "fix"),
    [
        (
            {"apt-periodic": UU_ON, "uu-package": UU_INSTALLED},
            "fail",
            'APT::Periodic::Unattended-Upgrade "1" with unattended-upgrades installed',
            'APT::Periodic::Unattended-Upgrade "0"',
        ),
        (  # its timer is off: nothing installs until it is turned on again
            {
                "apt-periodic": UU_ON,
                "uu-package": UU_INSTALLED,
                "timers": "apt-daily-upgrade.timer inactive",
            },
            "warning",
            "apt-daily-upgrade.timer inactive",
            "20auto-upgrades",
        ),
        (
            {"timers": "dnf-automatic-install.timer active"},
            "fail",
            "dnf-automatic-install.timer is active",
            "systemctl disable --now dnf-automatic-install.timer",
        ),
        (
            {"timers": "dnf-automatic.timer active", "dnf-automatic": "apply_updates = yes"},
            "fail",
            "apply_updates = yes",
            "apply_updates = no",
        ),
        ({"offline-update": "/system-update"}, "fail", "PackageKit offline update", "pkcon offline-cancel"),
    ],
    ids=["unattended-upgrades", "timer-off", "dnf-automatic-install", "dnf-automatic-apply", "packagekit"],
)
def test_an_automatic_updater_on_one_node_is_named_with_its_fix(
    sections: dict[str, str], outcome: str, said: str, fix: str
) -> None:
    hosts = Hosts()
    hosts.facts["n2"] = sections
    results = check(ssh(hosts))
    assert findings(results) == {("no-automatic-updates", ("n2",)): outcome}
    found = one(results, "no-automatic-updates")
    assert said in found.detail and fix in found.fix and found.fix.startswith("on n2: ")


def test_unattended_upgrades_configured_without_the_package_installs_nothing() -> None:
    hosts = Hosts()
    hosts.facts["n2"] = {"apt-periodic": UU_ON}  # the setting alone: apt.systemd.daily does nothing
    hosts.facts["n3"] = {"timers": "dnf-automatic.timer active", "dnf-automatic": "apply_updates = no"}
    assert findings(check(ssh(hosts))) == {}


def test_a_node_with_another_apt_source_is_named_with_what_differs() -> None:
    hosts = Hosts()
    hosts.facts["n3"] = {
        "apt-sources": "@@file /etc/apt/sources.list.d/lab.list\ndeb [trusted=yes] file:/srv/labrepo ./\n"
        "@@file /etc/apt/sources.list.d/other.list\ndeb http://example.org/debian bookworm main"
    }
    # the same source written in deb822 form on n2 is the same source
    hosts.facts["n2"] = {
        "apt-sources": "@@file /etc/apt/sources.list.d/lab.sources\n"
        "Types: deb\nURIs: file:/srv/labrepo/\nSuites: ./\nTrusted: yes\n"
    }
    results = check(ssh(hosts))
    assert findings(results) == {("same-update-sources", ("n3",)): "warning"}
    assert (
        "has apt source 'deb http://example.org/debian bookworm main'"
        in one(results, "same-update-sources").detail
    )


def test_sources_and_repositories_are_compared_normalised() -> None:
    one_line = (
        "@@file /etc/apt/sources.list\n# comment\n"
        "deb  [arch=amd64 signed-by=/k.gpg]  http://d.org/debian/  bookworm main contrib\n"
    )
    deb822 = (
        "@@file /etc/apt/sources.list.d/d.sources\nTypes: deb\nURIs: http://d.org/debian\nSuites: bookworm\n"
        "Components: main contrib\nSigned-By: /k.gpg\nArch: amd64\n\nTypes: deb\nURIs: http://x.org\n"
        "Suites: a\nComponents: main\nEnabled: no\n"
    )
    assert parse_apt_sources(one_line) == parse_apt_sources(deb822) != frozenset()
    repos = (
        "@@file /etc/yum.repos.d/r.repo\n[baseos]\nname=BaseOS\nbaseurl=http://m/baseos\nenabled=1\n"
        "[debug]\nbaseurl=http://m/debug\nenabled=0\n"
    )
    assert parse_dnf_repos(repos) == frozenset({"baseos http://m/baseos"})


def test_a_different_proxy_warns_without_showing_its_password() -> None:
    hosts = Hosts()
    hosts.facts["n1"] = {"proxy": 'Acquire::http::Proxy "http://cau:s3cr3t-pw@proxy.example:3128";'}
    results = check(ssh(hosts))
    assert findings(results) == {("same-proxy", ("n1",)): "warning"}
    text = one(results, "same-proxy").model_dump_json()
    assert "proxy.example:3128" in text and "s3cr3t-pw" not in text


def test_an_interrupted_dpkg_fails_a_half_configured_package_and_a_held_lock_warn() -> None:
    hosts = Hosts()
    hosts.facts["n1"] = {"dpkg-updates": "0001"}
    hosts.facts["n2"] = {"dpkg-audit": "The following packages are only half configured:\n labbroken"}
    hosts.facts["n3"] = {"locks": "/var/lib/dpkg/lock-frontend 4242 apt-get"}
    results = check(ssh(hosts))
    assert findings(results) == {
        ("package-manager-healthy", ("n1",)): "fail",
        # half-configured: apt still works and a run tries to finish it (tests/lab/test_apt_faults.py)
        ("package-manager-healthy", ("n2",)): "warning",
        ("package-manager-healthy", ("n3",)): "warning",
    }
    by_node = {r.nodes[0]: r for r in results if r.rule == "package-manager-healthy"}
    assert "dpkg was interrupted" in by_node["n1"].detail and "dpkg --configure -a" in by_node["n1"].fix
    assert "labbroken" in by_node["n2"].detail
    assert "apt-get (pid 4242)" in by_node["n3"].fix


def test_disk_space_warns_below_500_mb_and_fails_below_100_mb() -> None:
    hosts = Hosts()
    hosts.facts["n1"] = {"disk": "/var/cache/apt/archives /dev/vda1 2000000 1700000 307200 85% /"}  # 300 MB
    hosts.facts["n2"] = {"disk": "/var/cache/apt/archives /dev/vda1 2000000 1900000 51200 97% /"}  # 50 MB
    results = check(ssh(hosts))
    assert findings(results) == {("disk-space", ("n1",)): "warning", ("disk-space", ("n2",)): "fail"}
    assert "50 MB free in /var/cache/apt/archives" in next(r for r in results if r.nodes == ["n2"]).detail


def test_package_manager_rules_do_not_apply_without_a_package_manager_plug_in() -> None:
    hosts = Hosts()
    hosts.facts["n1"] = {"dpkg-updates": "0001"}
    results = check(ssh(hosts), plugins=["command"])
    by_rule = {r.rule: r.outcome for r in results}
    assert by_rule["package-manager-healthy"] is Outcome.NOT_APPLICABLE
    assert by_rule["same-update-sources"] is Outcome.NOT_APPLICABLE


def test_a_plug_in_whose_tools_are_missing_on_a_node_or_that_does_not_load_fails() -> None:
    hosts = Hosts()
    hosts.facts["n2"] = {"commands": "missing apt-get\nfound dpkg"}
    results = check(ssh(hosts), plugin_problems=["nosuch: no plug-in 'nosuch'"])
    assert findings(results) == {("plugins-ready", ("n2",)): "fail", ("plugins-ready", ()): "fail"}
    assert "install apt-get on n2" in next(r for r in results if r.nodes == ["n2"]).fix


def test_a_script_missing_on_a_node_fails_and_one_that_differs_warns() -> None:
    hosts = Hosts()
    profile = RunProfile(pre_update_script="/usr/local/sbin/pre.sh --drain", post_update_script="notify-done")
    hosts.facts["n3"] = {"scripts": "missing /usr/local/sbin/pre.sh", "commands": "found notify-done"}
    hosts.facts["n2"] = {"scripts": f"{'a' * 64}  /usr/local/sbin/pre.sh", "commands": "found notify-done"}
    hosts.facts["n1"] = {"scripts": f"{'b' * 64}  /usr/local/sbin/pre.sh", "commands": "missing notify-done"}
    results = check(ssh(hosts), profile, plugins=["command"])
    # n1 and n2 differ, no majority: the first node's copy is the reference
    assert findings(results) == {
        ("scripts-identical", ("n3",)): "fail",
        ("scripts-identical", ("n2",)): "warning",
        ("scripts-identical", ("n1",)): "fail",
    }
    fixes = {(r.nodes[0], r.outcome): r.fix for r in results if r.rule == "scripts-identical"}
    assert (
        fixes[("n3", Outcome.FAIL)]
        == "copy /usr/local/sbin/pre.sh to n3 (the same file as on the other nodes), executable"
    )
    assert "install notify-done on n1" in fixes[("n1", Outcome.FAIL)]


def test_the_profile_s_scripts_are_sent_to_the_nodes_quoted() -> None:
    hosts = Hosts()
    check(ssh(hosts), RunProfile(pre_update_script="'/opt/my scripts/pre.sh' x"))
    (script,) = [c for c in hosts.transports.commands("n1") if c.startswith(FACTS_PREFIX)]
    assert "for p in '/opt/my scripts/pre.sh'; do" in script


# --- the cluster rules, on observed snapshots ---------------------------------------------------------


def snapshot(*nodes: Node, roles: tuple[Role, ...] = (), min_online: int | None = None) -> ClusterSnapshot:
    return ClusterSnapshot("c", tuple(nodes), roles, min_online=min_online)


def up(name: str, **kw: Any) -> Node:
    return Node(name=name, state=NodeState.UP, capacity=Capacity(cpu=4, memory_gb=8), **kw)


def sim(snap: ClusterSnapshot | None, profile: RunProfile | None = None, **kw: Any) -> list[RuleResult]:
    return evaluate(
        Observation(
            cluster="c",
            provider="sandbox",
            profile=profile or RunProfile(),
            simulated=True,
            snapshot=snap,
            plugins=["sandbox"],
            **kw,
        )
    )


def test_cluster_rules_fail_on_purpose() -> None:
    down = Node(name="c", state=NodeState.DOWN)
    assert findings(sim(snapshot(up("a"), up("b"), down))) == {("nodes-online", ("c",)): "warning"}
    assert findings(sim(snapshot(up("a"), up("b"), down), RunProfile(require_all_nodes_online=True))) == {
        ("nodes-online", ("c",)): "fail"
    }
    lost = findings(sim(snapshot(up("a"), Node(name="b", state=NodeState.DOWN), down)))
    assert lost[("quorum", ("b", "c"))] == "fail"
    maint = snapshot(up("a"), up("b"), up("c", in_maintenance=True))
    assert findings(sim(maint)) == {("nodes-in-maintenance", ("c",)): "fail"}
    assert findings(sim(maint, RunProfile(allow_nodes_in_maintenance=True))) == {
        ("nodes-in-maintenance", ("c",)): "warning"
    }
    three = snapshot(up("a"), up("b"), up("c"))
    budget = sim(three, RunProfile(max_failed_nodes=3))
    assert findings(budget) == {("failure-budget", ()): "fail"}
    assert "max_failed_nodes = 3 is out of range 0..2 for 3 nodes" in one(budget, "failure-budget").detail
    order = sim(three, RunProfile(node_order=["a", "zz"]))
    assert "node_order names unknown node(s) zz" in one(order, "profile-valid").detail
    invalid = sim(three, profile_problems=["p.toml: (profile): warn_after must be shorter than stop_after"])
    assert one(invalid, "profile-valid").outcome is Outcome.FAIL
    members = sim(three, store_members=["a", "etcd9"])
    assert "store_members names unknown node(s) etcd9" in one(members, "store-members").detail
    unobserved = sim(None, snapshot_error="no node answers")
    assert findings(unobserved) == {("cluster-observable", ()): "fail"}


def test_roles_with_nowhere_to_go_warn_by_capacity_or_by_the_cluster_manager_s_word() -> None:
    big = Role("db", RoleKind.FAILOVER, owner="a", needs=Capacity(cpu=3, memory_gb=6))
    filler = Role("other", RoleKind.FAILOVER, owner="b", needs=Capacity(cpu=3, memory_gb=6))
    snap = snapshot(up("a"), up("b"), roles=(big, filler))
    results = sim(snap)
    assert findings(results) == {("capacity", ("a",)): "warning", ("capacity", ("b",)): "warning"}
    assert "no node has room for db" in next(r for r in results if r.nodes == ["a"]).detail
    assert findings(sim(snap, RunProfile(move="save"))) == {}
    roomy = snapshot(up("a"), up("b"))
    predicted = sim(roomy, drain_problems={"a": ["web would stop (cli-ban-web-on-b)"], "b": []})
    assert findings(predicted) == {("capacity", ("a",)): "warning"}


def test_the_clustered_role_s_checks_fail_the_role_rule() -> None:
    checks = [
        ReadinessCheck(
            check="the coordinator role can move: two nodes or more can own it", ok=False, detail="a"
        ),
        ReadinessCheck(check="the role's profile is valid", ok=True),
    ]
    results = sim(snapshot(up("a"), up("b")), role_checks=checks)
    assert findings(results) == {("coordinator-role", ()): "fail"}
    assert "two nodes or more can own it: a" in one(results, "coordinator-role").detail


# --- pacemaker ------------------------------------------------------------------------------------


def pacemaker(pcmk: PacemakerCluster) -> PacemakerProvider:
    from tests.unit.test_pacemaker_provider import provider

    return provider(pcmk, allow_member_coordinator=True)


def test_a_node_that_answers_but_whose_cluster_manager_is_not_running_fails() -> None:
    results = check(pacemaker(PacemakerCluster("node1-offline")))
    found = findings(results)
    assert found[("cluster-manager", ("node1",))] == "fail"
    assert "systemctl start corosync pacemaker" in one(results, "cluster-manager").fix
    healthy = check(pacemaker(PacemakerCluster()))
    assert findings(healthy) == {}
    assert {r.rule: r.outcome for r in healthy}["cluster-manager"] is Outcome.PASS


# --- the run's preflight ----------------------------------------------------------------------------


def _run(tmp_path: Path, nodes: list[dict[str, Any]], **profile: Any) -> Any:
    from tests.support import service

    config = write_cluster(tmp_path, spec(nodes))
    svc = service(tmp_path / "data", config)
    try:
        return run_virtual(svc.run("c1", build_profile(None, profile))), svc
    except PreflightError:
        svc.close()
        raise


def test_a_failing_rule_refuses_the_run_with_its_fix_and_changes_nothing(tmp_path: Path) -> None:
    nodes = [node("n1"), node("n2", in_maintenance=True), node("n3")]
    with pytest.raises(PreflightError) as refused:
        _run(tmp_path, nodes)
    message = refused.value.message
    assert "n2 already in maintenance" in message
    assert "(fix: take n2 out of maintenance" in message and "--allow-nodes-in-maintenance" in message
    assert refused.value.hint is not None and "`cau check c1`" in refused.value.hint
    from tests.support import service

    svc = service(tmp_path / "data", tmp_path / "clusters.toml")
    try:
        assert run_virtual(svc.runs(ReportQuery(cluster="c1"))) == []
    finally:
        svc.close()


def test_a_warning_is_journaled_in_the_run_and_shown_in_its_report(tmp_path: Path) -> None:
    from rich.console import Console

    from cau.cli.render_text import run_summary

    nodes = [node("n1"), node("n2", online=False), node("n3"), node("n4")]
    outcome, svc = _run(tmp_path, nodes)
    try:
        events = run_virtual(svc.events(outcome.run_id))
        warned = [e.payload for e in events if e.kind is EventKind.READINESS]
        assert [(w.rule, w.nodes) for w in warned] == [("nodes-online", ["n2"])]
        assert events[0].kind is EventKind.RUN_CREATED and events[1].kind is EventKind.READINESS
        report = outcome.report
        assert [(r.rule, r.nodes, r.fix) for r in report.readiness] == [
            ("nodes-online", ["n2"], "bring n2 back online")
        ]
        console = Console(width=200, record=True)
        console.print(run_summary(report))
        text = console.export_text()
        assert "readiness warning [nodes-online] (n2): node(s) n2 are not online" in text
        assert "fix: bring n2 back online" in text
    finally:
        svc.close()
