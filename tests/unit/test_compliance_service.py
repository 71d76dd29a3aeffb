"""Compliance through the service on a simulated cluster, in virtual time: baselines kept in the
store with their rules and scopes, scans and statuses, exemptions, and remediation runs (cluster
and standalone hosts). The real apt hosts' version of this is tests/lab/test_compliance_lab.py."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from cau.clock import run_virtual
from cau.domain.compliance import (
    AllUpdatesRule,
    ComplianceStatus,
    PackageRule,
    Scope,
    ScopeKind,
)
from cau.domain.profile import build_profile
from cau.errors import ConfigError, NameTaken, NotFound
from cau.service import Service
from tests.support import node, service, spec, write_cluster

S = ComplianceStatus
ALL = AllUpdatesRule(plugin="sandbox")
C1 = Scope(kind=ScopeKind.CLUSTER, name="c1")


def cluster(tmp: Path) -> Path:
    return write_cluster(
        tmp,
        spec(
            [node("n1"), node("n2"), node("n3")],
            roles=[{"name": "web", "kind": "failover", "owner": "n3", "preferred_owners": ["n3"]}],
            updates=[
                {"id": "kernel", "title": "Linux kernel", "restart": True, "install_seconds": 60},
                {"id": "openssl", "title": "OpenSSL", "install_seconds": 20},
                {"id": "nginx", "title": "nginx", "nodes": ["n1"], "install_seconds": 20},
            ],
        ),
    )


def statuses(view_nodes: list[object]) -> dict[str, dict[str, ComplianceStatus]]:
    return {
        n.node: {u.update: u.status for b in n.baselines for u in b.updates}  # type: ignore[attr-defined]
        for n in view_nodes
    }


def test_baselines_are_named_kept_changed_with_a_revision_and_refused_with_a_reason(tmp_path: Path) -> None:
    config = cluster(tmp_path)

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        c = svc.compliance
        b = await c.create_baseline("security", description="monthly", rules=[ALL], by="ops")
        assert b.revision == 1 and b.scopes == ()
        with pytest.raises(NameTaken, match="a baseline 'security' exists"):
            await c.create_baseline("security", description="", rules=[], by="ops")
        with pytest.raises(NotFound, match=r"no baseline 'secure' \(baselines: security\)"):
            await c.baseline("secure")
        with pytest.raises(NotFound, match="unknown cluster 'nope'"):
            await c.assign("security", Scope(kind=ScopeKind.CLUSTER, name="nope"), by="ops")
        b = await c.add_rules("security", [PackageRule(name="openssl", min_version="3.0.15-1")], by="ops")
        assert b.revision == 2 and [r.key for r in b.rules] == ["sandbox:*", "apt:openssl"]
        # a package's new minimum replaces its old one
        b = await c.add_rules("security", [PackageRule(name="openssl", min_version="3.0.16-1")], by="ops")
        assert [r.describe() for r in b.rules][1] == "apt:openssl >= 3.0.16-1" and len(b.rules) == 2
        with pytest.raises(NotFound, match="has no rule apt:nope"):
            await c.remove_rules("security", ["apt:nope"], by="ops")
        await c.set_group("branches", ["c1"], by="ops")
        await c.assign("security", Scope(kind=ScopeKind.GROUP, name="branches"), by="ops")
        with pytest.raises(ConfigError, match="assigned baselines security"):
            await c.delete_group("branches", by="ops")
        actions = [e.action for e in svc.access.audit_entries()]
        assert {"baseline.create", "baseline.add", "baseline.assign", "group.set"} <= set(actions)
        # what another process sees: the store's record
        other = Service(tmp_path / "home", config)
        assert (await other.compliance.baseline("security")).revision == 3
        svc.close()
        other.close()

    run_virtual(main())


def test_scan_exempt_and_remediate_a_cluster_without_restart_then_restart(tmp_path: Path) -> None:
    config = cluster(tmp_path)

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        c = svc.compliance
        await c.create_baseline("all", description="", rules=[ALL], by="ops")
        await c.assign("all", C1, by="ops")
        before = await c.view("c1")
        assert before.status is S.UNKNOWN and before.oldest_scan is None
        view = await c.scan("c1", svc.profile("c1", None))
        found = statuses(view.nodes)
        assert found["n1"] == {"sandbox:kernel": S.NON_COMPLIANT, "sandbox:openssl": S.NON_COMPLIANT,
                               "sandbox:nginx": S.NON_COMPLIANT}  # fmt: skip
        assert view.status is S.NON_COMPLIANT and view.remediable
        # nginx is exempt on n1; openssl unticked on n2 by the operator
        e = await c.exempt(
            "sandbox:nginx", Scope(kind=ScopeKind.NODE, name="n1"), reason="app team", by="ops"
        )
        view = await c.view("c1")
        assert statuses(view.nodes)["n1"]["sandbox:nginx"] is S.EXEMPT
        plan = c.plan(view, exclude=["sandbox:openssl"])
        assert plan.nodes == {"n1": ["sandbox:kernel"], "n2": ["sandbox:kernel"], "n3": ["sandbox:kernel"]}
        base = build_profile(None, {"no_restart": True})
        profile, warnings = await c.remediation_profile("c1", base, plan)
        assert warnings == [] and profile.update_selection == plan.nodes
        outcome = await svc.run("c1", profile)
        assert outcome.report is not None
        installed = {n.name: sorted(u.id for u in n.updates) for n in outcome.report.nodes}
        assert installed == {"n1": ["kernel"], "n2": ["kernel"], "n3": ["kernel"]}
        # the run's end rescanned: the kernel waits for a restart, the rest is as it was
        after = statuses((await c.view("c1")).nodes)
        assert after["n1"] == {"sandbox:kernel": S.PENDING_REBOOT, "sandbox:openssl": S.NON_COMPLIANT,
                               "sandbox:nginx": S.EXEMPT}  # fmt: skip
        assert after["n2"]["sandbox:kernel"] is S.PENDING_REBOOT
        # removing the exemption: Unknown until scanned again
        await c.remove_exemption(e.id, by="ops")
        assert statuses((await c.view("c1")).nodes)["n1"]["sandbox:nginx"] is S.UNKNOWN
        # a second remediation restarts the nodes: the kernel is done, the rest installed
        plan = c.plan(await c.scan("c1", svc.profile("c1", None)))
        profile, _ = await c.remediation_profile("c1", build_profile(None, {}), plan)
        await svc.run("c1", profile)
        final = await c.view("c1")
        assert final.status is S.COMPLIANT, statuses(final.nodes)
        assert not final.remediable
        with pytest.raises(ConfigError, match="nothing to remediate on 'c1'"):
            await c.remediation_profile("c1", build_profile(None, {}), c.plan(final))
        svc.close()

    run_virtual(main())


def test_a_baseline_change_makes_its_nodes_unknown_and_a_package_rule_on_the_sandbox_is_an_error(
    tmp_path: Path,
) -> None:
    config = cluster(tmp_path)

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        c = svc.compliance
        await c.create_baseline("all", description="", rules=[ALL], by="ops")
        await c.assign("all", C1, by="ops")
        await c.scan("c1", svc.profile("c1", None))
        await c.add_rules(
            "all", [PackageRule(plugin="apt", name="openssl", min_version="3.0.15-1")], by="ops"
        )
        view = await c.view("c1")
        assert {n.status for n in view.nodes} == {S.UNKNOWN}
        view = await c.scan("c1", svc.profile("c1", None))
        row = next(u for u in view.nodes[0].baselines[0].updates if u.update == "apt:openssl")
        # the sandbox has no apt: the rule cannot be told there, and says why
        assert row.status is S.ERROR and "apt" in row.detail
        svc.close()

    run_virtual(main())


def test_standalone_hosts_are_refused_while_they_run_roles_and_are_never_drained(tmp_path: Path) -> None:
    config = cluster(tmp_path)

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        c = svc.compliance
        await c.create_baseline("all", description="", rules=[ALL], by="ops")
        await c.assign("all", C1, by="ops")
        view = await c.scan("c1", svc.profile("c1", None))
        with pytest.raises(
            ConfigError, match="n3 is remediated as a standalone host: its roles web are not moved"
        ):
            await c.remediation_profile(
                "c1", build_profile(None, {}), c.plan(view, nodes=["n3"]), standalone=["n3"]
            )
        with pytest.raises(NotFound, match=r"node\(s\) n9 are not in cluster c1"):
            c.plan(view, nodes=["n9"])
        profile, warnings = await c.remediation_profile(
            "c1",
            build_profile(None, {}),
            c.plan(view, nodes=["n1", "n3"]),
            standalone=["n1", "n3"],
            force=True,
        )
        assert len(warnings) == 1 and "web" in warnings[0]
        outcome = await svc.run("c1", profile)
        assert outcome.report is not None
        by_node = {n.name: n for n in outcome.report.nodes}
        # updated and restarted in service: never in maintenance; n2 bypassed
        assert by_node["n1"].restarts == 1 and by_node["n1"].maintenance_seconds == 0
        assert by_node["n3"].restarts == 1 and by_node["n3"].maintenance_seconds == 0
        assert by_node["n2"].updates == [] and by_node["n2"].restarts == 0
        svc.close()

    run_virtual(main())


def test_exemptions_expire_and_an_expired_one_is_refused(tmp_path: Path) -> None:
    config = cluster(tmp_path)

    async def main() -> None:
        svc = service(tmp_path / "home", config)
        c = svc.compliance
        await c.create_baseline("all", description="", rules=[ALL], by="ops")
        await c.assign("all", C1, by="ops")
        now = svc.clock.now()
        with pytest.raises(ConfigError, match="would have expired already"):
            await c.exempt("sandbox:nginx", C1, reason="x", by="ops", until=now - timedelta(hours=1))
        await c.exempt(
            "sandbox:nginx", C1, reason="until the vendor fix", by="ops", until=now + timedelta(hours=1)
        )
        await c.scan("c1", svc.profile("c1", None))
        assert statuses((await c.view("c1")).nodes)["n1"]["sandbox:nginx"] is S.EXEMPT
        await svc.clock.sleep(2 * 3600)
        assert statuses((await c.view("c1")).nodes)["n1"]["sandbox:nginx"] is S.UNKNOWN
        assert (
            statuses((await c.scan("c1", svc.profile("c1", None))).nodes)["n1"]["sandbox:nginx"]
            is S.NON_COMPLIANT
        )
        svc.close()

    run_virtual(main())
