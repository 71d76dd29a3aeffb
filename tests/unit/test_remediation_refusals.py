"""The compliance service's two refusals of a remediation are their own classes (still
ConfigErrors, so the CLI's exit code is unchanged), for the API to answer each with its code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cau.compliance.service import NothingToRemediate, StandaloneHostHasRoles
from cau.domain.compliance import AllUpdatesRule, Scope, ScopeKind
from cau.errors import ConfigError
from cau.service import Service
from tests.support import spec, write_cluster

ROLES = [{"name": "web", "kind": "live", "owner": "n1", "cpu": 2, "memory_gb": 4}]


def test_nothing_non_compliant_and_a_standalone_host_with_roles_are_refused_by_class(
    tmp_path: Path,
) -> None:
    config = write_cluster(tmp_path, spec(3, roles=ROLES, speed=2000), name="c1")
    svc = Service(tmp_path / "data", config)

    async def main() -> None:
        c = svc.compliance
        await c.create_baseline("all", description="", rules=[AllUpdatesRule(plugin="sandbox")], by="t")
        # not assigned yet: nothing applies, nothing to remediate
        view = await c.view("c1")
        with pytest.raises(NothingToRemediate, match="nothing to remediate on 'c1'") as empty:
            await c.remediation_profile("c1", svc.profile("c1", None), c.plan(view))
        assert isinstance(empty.value, ConfigError)

        await c.assign("all", Scope(kind=ScopeKind.CLUSTER, name="c1"), by="t")
        view = await c.scan("c1", svc.profile("c1", None))
        assert view.remediable
        plan = c.plan(view, nodes=["n1"])
        base = svc.profile("c1", None)
        with pytest.raises(StandaloneHostHasRoles, match=r"n1 .*roles web are not moved") as roles:
            await c.remediation_profile("c1", base, plan, standalone=["n1"])
        assert isinstance(roles.value, ConfigError) and roles.value.hint
        profile, warnings = await c.remediation_profile("c1", base, plan, standalone=["n1"], force=True)
        assert profile.update_selection is not None and set(profile.update_selection) == {"n1"}
        assert warnings and "web" in warnings[0]
        # n2 has no roles: no refusal, no warning
        _, none = await c.remediation_profile("c1", base, c.plan(view, nodes=["n2"]), standalone=["n2"])
        assert none == []

    try:
        asyncio.run(main())
    finally:
        svc.close()
