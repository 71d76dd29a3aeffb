"""One node's compliance scan: its baselines' plug-ins scan it, the package plug-ins read the
versions the baselines name, and the findings are kept with whether each was exempt then."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from cau.compliance.evaluate import NodeFacts, findings
from cau.domain.cluster import ClusterSnapshot
from cau.domain.compliance import (
    AdvisoryRule,
    Baseline,
    ClusterGroup,
    Exemption,
    Finding,
    NodeComplianceScan,
    PackageRule,
    applies,
    exemption_for,
)
from cau.domain.profile import PluginSpec
from cau.engine.node import PluginBinding
from cau.engine.scan import scan_plugins
from cau.errors import CauError
from cau.ports import (
    ChecksPackageLevels,
    ClusterProvider,
    NodeSession,
    NodeUpdater,
    PackageLevel,
    PluginContext,
)
from cau.redact import redact


@dataclass(frozen=True)
class NodeScanner:
    cluster: str
    provider: ClusterProvider
    snapshot: ClusterSnapshot
    configured: Mapping[str, PluginSpec]  # the cluster's plug-ins with their arguments
    bind: Callable[[list[PluginSpec]], list[PluginBinding]]
    plugin_ctx: PluginContext
    baselines: Sequence[Baseline]
    groups: Sequence[ClusterGroup]
    exemptions: Sequence[Exemption]
    now: Callable[[], datetime]

    async def scan(self, node: str) -> NodeComplianceScan:
        now = self.now()
        mine = [b for b in self.baselines if applies(b, self.cluster, node, self.groups)]
        kept = NodeComplianceScan(
            cluster=self.cluster, node=node, scanned_at=now, baselines={b.name: b.revision for b in mine}
        )
        if not self.snapshot.node(node).is_up:
            return kept.model_copy(update={"error": f"{node} is down or unreachable"})
        try:
            facts, restart_pending = await self._facts(node, mine)
            boot = self.snapshot.node(node).boot_id or await self.provider.boot_id(node)
        except CauError as exc:  # a node refusing cau (its host key...): its statuses are Error
            hint = f" (hint: {exc.hint})" if exc.hint else ""
            return kept.model_copy(update={"error": redact(str(exc) + hint)})

        def exempt(f: Finding) -> bool:
            return (
                exemption_for(
                    self.exemptions, self.groups, cluster=self.cluster, node=node, baseline=f.baseline,
                    update=f.update, rule=f.rule, now=now,
                )
                is not None
            )  # fmt: skip

        items = tuple(f.model_copy(update={"exempt_at_scan": exempt(f)}) for f in findings(mine, facts))
        return kept.model_copy(
            update={"boot_id": boot, "findings": items, "restart_pending": restart_pending}
        )

    def _specs(self, mine: Sequence[Baseline]) -> list[PluginSpec]:
        plugins = sorted({p for b in mine for p in b.plugins()})
        specs = [self.configured.get(p) or PluginSpec(name=p) for p in plugins]
        if any(isinstance(r, AdvisoryRule) for b in mine for r in b.rules):
            # advisory rules read each dnf update's advisories
            specs = [
                PluginSpec(name=s.name, args={**s.args, "advisories": True}) if s.name == "dnf" else s
                for s in specs
            ]
        return specs

    async def _facts(self, node: str, mine: Sequence[Baseline]) -> tuple[NodeFacts, bool]:
        bindings = {b.name: b for b in self.bind(self._specs(mine))}
        session: NodeSession = await self.provider.session(node)

        async def updater(name: str) -> NodeUpdater:
            b = bindings[name]
            return b.plugin.create_updater(session, b.args, self.plugin_ctx)

        found = await scan_plugins(list(bindings), updater, serially=False, stop_on_failure=False)
        levels: dict[str, Mapping[str, PackageLevel]] = {}
        level_errors: dict[str, str] = {}
        for plugin in bindings:
            minimums = {
                r.name: r.min_version
                for b in mine
                for r in b.rules
                if isinstance(r, PackageRule) and r.plugin == plugin
            }
            if not minimums:
                continue
            try:
                u = await updater(plugin)
                if not isinstance(u, ChecksPackageLevels):
                    level_errors[plugin] = f"the {plugin} plug-in cannot tell package versions"
                    continue
                levels[plugin] = await u.package_levels(minimums)
            except CauError as exc:
                level_errors[plugin] = redact(str(exc))
        return NodeFacts(found.updates, found.errors, levels, level_errors), found.restart_pending
