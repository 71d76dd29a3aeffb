"""Compliance's service: baselines, cluster groups and exemptions kept in the store, compliance
scans of a cluster's nodes, the compliance view, and remediation plans. One place for the CLI and
the API (reached as `Service.compliance`)."""

from __future__ import annotations

import asyncio
import secrets as _secrets
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from cau.compliance.scanning import NodeScanner
from cau.compliance.view import ClusterCompliance, cluster_view
from cau.domain.compliance import (
    Baseline,
    BaselineRule,
    ClusterGroup,
    ComplianceStatus,
    Exemption,
    FindingState,
    NodeComplianceScan,
    PendingRestart,
    Scope,
    ScopeKind,
)
from cau.domain.profile import DrainPolicy, PluginSpec, RunProfile
from cau.errors import CauError, ConfigError, NameTaken, NotFound
from cau.ports import PluginContext
from cau.secrets import unseal

if TYPE_CHECKING:
    from cau.service import Service


class NothingToRemediate(ConfigError):
    """A remediation with nothing NonCompliant to install (VMM offers Remediate only when
    something is non-compliant)."""


class StandaloneHostHasRoles(ConfigError):
    """A host to remediate as a standalone host runs roles, and `force` was not given."""


class RemediationPlan(BaseModel):
    """What a remediation installs on each node: its NonCompliant updates (by update key) of the
    chosen baselines, minus exempted and unticked ones. Nodes with nothing are bypassed."""

    cluster: str
    baselines: list[str]
    nodes: dict[str, list[str]] = Field(
        description="node -> update keys to install (none: the node only waits for its restart)"
    )
    bypassed: dict[str, str] = Field(default_factory=dict, description="node -> why it is left alone")
    not_installable: dict[str, list[str]] = Field(
        default_factory=dict, description="node -> NonCompliant updates no source offers"
    )

    @property
    def empty(self) -> bool:
        return not self.nodes


class Compliance:
    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def _now(self) -> datetime:
        return self.svc.clock.now()

    # --- baselines ---------------------------------------------------------------------------------

    async def baseline(self, name: str) -> Baseline:
        found = await self.svc.store.get_document(Baseline, name)
        if found is None:
            known = ", ".join(b.name for b in await self.baselines()) or "none yet"
            raise NotFound(f"no baseline '{name}' (baselines: {known})", hint="cau baseline create NAME")
        return found

    async def baselines(self) -> list[Baseline]:
        return await self.svc.store.list_documents(Baseline)

    async def create_baseline(
        self, name: str, *, description: str, rules: Sequence[BaselineRule], by: str
    ) -> Baseline:
        if await self.svc.store.get_document(Baseline, name) is not None:
            raise NameTaken(f"a baseline '{name}' exists", hint=f"cau baseline add {name} ... adds to it")
        now = self._now()
        base = Baseline(
            name=name,
            description=description,
            rules=tuple(_unique(rules)),
            created=now,
            updated=now,
            updated_by=by,
        )
        await self.svc.store.put_document(base)
        self.svc.audit(by, "baseline.create", name, {"rules": [r.key for r in base.rules]})
        return base

    async def add_rules(self, name: str, rules: Sequence[BaselineRule], *, by: str) -> Baseline:
        base = await self.baseline(name)
        merged = tuple(_unique([*base.rules, *rules]))
        return await self._changed(base, by, "baseline.add", rules=merged, revision=base.revision + 1)

    async def remove_rules(self, name: str, keys: Sequence[str], *, by: str) -> Baseline:
        base = await self.baseline(name)
        unknown = [k for k in keys if k not in {r.key for r in base.rules}]
        if unknown:
            have = ", ".join(r.key for r in base.rules) or "none"
            raise NotFound(f"baseline '{name}' has no rule {', '.join(unknown)} (its rules: {have})")
        kept = tuple(r for r in base.rules if r.key not in set(keys))
        return await self._changed(base, by, "baseline.remove", rules=kept, revision=base.revision + 1)

    async def assign(self, name: str, scope: Scope, *, by: str) -> Baseline:
        base = await self.baseline(name)
        await self._check_scope(scope)
        if scope in base.scopes:
            return base
        return await self._changed(base, by, "baseline.assign", scopes=(*base.scopes, scope))

    async def unassign(self, name: str, scope: Scope, *, by: str) -> Baseline:
        base = await self.baseline(name)
        if scope not in base.scopes:
            where = ", ".join(str(s) for s in base.scopes) or "nowhere"
            raise NotFound(f"baseline '{name}' is not assigned to {scope} (it is assigned to {where})")
        return await self._changed(
            base, by, "baseline.unassign", scopes=tuple(s for s in base.scopes if s != scope)
        )

    async def delete_baseline(self, name: str, *, by: str) -> None:
        await self.baseline(name)
        await self.svc.store.delete_document(Baseline, name)
        self.svc.audit(by, "baseline.delete", name, {})

    async def _changed(self, base: Baseline, by: str, action: str, **change: object) -> Baseline:
        new = base.model_copy(update={**change, "updated": self._now(), "updated_by": by})
        new = Baseline.model_validate(new.model_dump())  # validated again, as stored
        await self.svc.store.put_document(new)
        self.svc.audit(
            by, action, base.name, {"revision": new.revision, "scopes": [str(s) for s in new.scopes]}
        )
        return new

    async def _check_scope(self, scope: Scope) -> None:
        if scope.kind is ScopeKind.CLUSTER:
            self.svc.config.cluster(scope.name)  # names the known clusters when unknown
        elif (
            scope.kind is ScopeKind.GROUP
            and await self.svc.store.get_document(ClusterGroup, scope.name) is None
        ):
            raise NotFound(
                f"no cluster group '{scope.name}'", hint=f"cau baseline group set {scope.name} CLUSTER..."
            )

    # --- groups of clusters ------------------------------------------------------------------------

    async def groups(self) -> list[ClusterGroup]:
        return await self.svc.store.list_documents(ClusterGroup)

    async def set_group(self, name: str, clusters: Sequence[str], *, by: str) -> ClusterGroup:
        for c in clusters:
            self.svc.config.cluster(c)
        group = ClusterGroup(
            name=name, clusters=tuple(dict.fromkeys(clusters)), updated=self._now(), updated_by=by
        )
        await self.svc.store.put_document(group)
        self.svc.audit(by, "group.set", name, {"clusters": list(group.clusters)})
        return group

    async def delete_group(self, name: str, *, by: str) -> None:
        users = [b.name for b in await self.baselines() if Scope(kind=ScopeKind.GROUP, name=name) in b.scopes]
        if users:
            raise ConfigError(
                f"cluster group '{name}' is assigned baselines {', '.join(users)}",
                hint=f"cau baseline unassign BASELINE --group {name} first",
            )
        if not await self.svc.store.delete_document(ClusterGroup, name):
            raise NotFound(f"no cluster group '{name}'")
        self.svc.audit(by, "group.delete", name, {})

    # --- exemptions --------------------------------------------------------------------------------

    async def exemptions(self, *, removed: bool = False) -> list[Exemption]:
        """The exemptions (with `removed`, also those removed: kept, ended, for the statuses)."""
        found = await self.svc.store.list_documents(Exemption)
        return found if removed else [e for e in found if e.removed is None]

    async def exempt(
        self,
        update: str,
        scope: Scope,
        *,
        reason: str,
        by: str,
        baseline: str | None = None,
        until: datetime | None = None,
    ) -> Exemption:
        if baseline is not None:
            await self.baseline(baseline)
        await self._check_scope(scope)
        now = self._now()
        if until is not None and until <= now:
            raise ConfigError(f"an exemption until {until.isoformat()} would have expired already")
        e = Exemption(
            id=_secrets.token_hex(4), update=update, scope=scope, baseline=baseline, by=by, reason=reason,
            created=now, until=until,
        )  # fmt: skip
        await self.svc.store.put_document(e)
        self.svc.audit(by, "exemption.add", update, {"id": e.id, "scope": str(scope), "reason": reason})
        return e

    async def remove_exemption(self, exemption_id: str, *, by: str) -> Exemption:
        e = await self.svc.store.get_document(Exemption, exemption_id)
        if e is None or e.removed is not None:
            raise NotFound(f"no exemption '{exemption_id}'", hint="cau exemption list")
        # kept, ended: its update is Unknown until the node's next scan
        e = e.model_copy(update={"removed": self._now(), "removed_by": by})
        await self.svc.store.put_document(e)
        self.svc.audit(by, "exemption.remove", e.update, {"id": e.id, "scope": str(e.scope)})
        return e

    # --- scans and the view ------------------------------------------------------------------------

    async def has_baselines(self, cluster: str) -> bool:
        """Some baseline is assigned to the cluster, one of its groups, or (any) node."""
        groups = {g.name for g in await self.groups() if cluster in g.clusters}
        for b in await self.baselines():
            for s in b.scopes:
                if (
                    (s.kind is ScopeKind.CLUSTER and s.name == cluster)
                    or (s.kind is ScopeKind.GROUP and s.name in groups)
                    or s.kind is ScopeKind.NODE
                ):
                    return True
        return False

    async def view(self, cluster: str, nodes: Sequence[str] | None = None) -> ClusterCompliance:
        """The cluster's compliance from its last scans (nothing is scanned). `nodes`: the
        cluster's nodes; None: asked of the cluster, or those scanned when it cannot be reached."""
        self.svc.config.cluster(cluster)
        store = self.svc.store
        scans = {s.node: s for s in await store.list_documents(NodeComplianceScan) if s.cluster == cluster}
        pending = {p.node: p for p in await store.list_documents(PendingRestart) if p.cluster == cluster}
        if nodes is None:
            nodes = await self._nodes(cluster, scans)
        baselines, groups = await self.baselines(), await self.groups()
        exemptions = await self.exemptions(removed=True)
        return cluster_view(cluster, nodes, baselines, groups, exemptions, scans, pending, self._now())

    async def _nodes(self, cluster: str, scans: dict[str, NodeComplianceScan]) -> list[str]:
        provider = self.svc.open_provider(cluster)
        try:
            return list((await provider.discover()).node_names)
        except CauError:
            return sorted(scans)
        finally:
            await provider.close()

    async def scan(self, cluster: str, profile: RunProfile) -> ClusterCompliance:
        """Scan every node of the cluster against its baselines and keep what was found (a node
        that cannot be scanned keeps a scan saying why: its statuses are Error)."""
        baselines, groups = await self.baselines(), await self.groups()
        exemptions = await self.exemptions(removed=True)
        provider = self.svc.open_provider(cluster)
        secrets = self.svc.secrets(cluster)
        profile = unseal(profile, secrets, cluster)
        try:
            snapshot = await provider.discover()
            scanner = NodeScanner(
                cluster=cluster,
                provider=provider,
                snapshot=snapshot,
                configured={s.name: s for s in self.svc.plugin_specs(cluster, profile, provider)},
                bind=self.svc.bind_plugins,
                plugin_ctx=PluginContext(None, cluster, self.svc.clock, self.svc.data_dir, secrets),
                baselines=baselines,
                groups=groups,
                exemptions=exemptions,
                now=self._now,
            )
            done = await asyncio.gather(*(scanner.scan(n) for n in snapshot.node_names))
            for scan in done:
                await self.svc.store.put_document(scan)
                await self._forget_restarted(scan)
            return await self.view(cluster, nodes=snapshot.node_names)
        finally:
            await provider.close()

    async def _forget_restarted(self, scan: NodeComplianceScan) -> None:
        """PendingReboot lasts until the node restarted (another boot id) and was scanned again."""
        pending = await self.svc.store.get_document(PendingRestart, scan.key)
        if pending is not None and scan.boot_id is not None and scan.boot_id != pending.boot_id:
            await self.svc.store.delete_document(PendingRestart, scan.key)

    async def note_installed_without_restart(
        self, cluster: str, installed: dict[str, list[str]], *, run_id: str | None
    ) -> None:
        """Updates (by node) cau installed without restarting: PendingReboot until the node's boot
        id changes. The boot id is the node's now (it has not restarted: that is the point)."""
        installed = {n: ks for n, ks in installed.items() if ks}
        if not installed:
            return
        provider = self.svc.open_provider(cluster)
        try:
            for node, keys in installed.items():
                boot = await provider.boot_id(node)
                old = await self.svc.store.get_document(PendingRestart, f"{cluster}/{node}")
                merged = set(keys) | (set(old.updates) if old is not None and old.boot_id == boot else set())
                await self.svc.store.put_document(
                    PendingRestart(
                        cluster=cluster,
                        node=node,
                        boot_id=boot,
                        updates=tuple(sorted(merged)),
                        run_id=run_id,
                        recorded=self._now(),
                    )
                )
        finally:
            await provider.close()

    # --- remediation -------------------------------------------------------------------------------

    def plan(
        self,
        view: ClusterCompliance,
        *,
        baselines: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        nodes: Sequence[str] | None = None,
    ) -> RemediationPlan:
        """From a compliance view: each node's NonCompliant updates of the chosen baselines (all
        by default) that some source offers, minus the unticked ones; exempted updates are never
        NonCompliant, so never installed."""
        chosen = set(baselines) if baselines is not None else set(view.baselines)
        unknown = sorted(chosen - set(view.baselines))
        if unknown:
            raise NotFound(
                f"baseline(s) {', '.join(unknown)} do not apply to cluster {view.cluster} "
                f"(those that do: {', '.join(view.baselines) or 'none'})"
            )
        if nodes is not None:
            known = {n.node for n in view.nodes}
            strangers = [n for n in nodes if n not in known]
            if strangers:
                raise NotFound(f"node(s) {', '.join(strangers)} are not in cluster {view.cluster}")
        plan = RemediationPlan(cluster=view.cluster, baselines=sorted(chosen), nodes={})
        for n in view.nodes:
            if nodes is not None and n.node not in nodes:
                continue
            todo: list[str] = []
            stuck: list[str] = []
            for b in n.baselines:
                if b.baseline not in chosen:
                    continue
                for u in b.updates:
                    if (
                        u.status is not ComplianceStatus.NON_COMPLIANT
                        or u.update in exclude
                        or u.rule in exclude
                    ):
                        continue
                    (todo if u.available or u.update != u.rule else stuck).append(u.update)
            waiting = any(
                u.status is ComplianceStatus.PENDING_REBOOT
                for b in n.baselines
                if b.baseline in chosen
                for u in b.updates
            )
            if todo or waiting:
                # a node waiting only for its restart is in the plan too, with nothing to install
                plan.nodes[n.node] = sorted(set(todo))
            else:
                plan.bypassed[n.node] = f"nothing NonCompliant to install ({n.status.value})"
            if stuck:
                plan.not_installable[n.node] = sorted(set(stuck))
        return plan

    async def remediation_profile(
        self,
        cluster: str,
        base: RunProfile,
        plan: RemediationPlan,
        *,
        standalone: Sequence[str] | None = None,
        force: bool = False,
    ) -> tuple[RunProfile, list[str]]:
        """The run that remediates, and warnings for the operator: `base`'s options, only the
        plan's updates on the plan's nodes, with the plug-ins they come from (their configured
        arguments; apt and dnf narrowed to the plan's packages, so neither upgrades anything
        else). `standalone`: these hosts are remediated as standalone hosts (VMM's "remediate
        hosts"): no maintenance, no drain, their roles are not moved, refused for a host with
        roles unless `force`."""
        if base.no_restart:  # nodes waiting only for a restart have nothing to do without one
            plan = plan.model_copy(update={"nodes": {n: k for n, k in plan.nodes.items() if k}})
        if plan.empty:
            raise NothingToRemediate(
                f"nothing to remediate on '{cluster}': no node has a NonCompliant update to install"
                + ("" if base.no_restart else " or waits for a restart"),
                hint=f"cau compliance {cluster} --scan shows what each node has",
            )
        warnings: list[str] = []
        provider = self.svc.open_provider(cluster)
        try:
            configured = {s.name: s for s in self.svc.plugin_specs(cluster, base, provider)}
            if standalone is not None:
                snapshot = await provider.discover()
                hosting = {
                    n: [r.name for r in snapshot.roles_on(n)] for n in standalone if snapshot.roles_on(n)
                }
                for node, roles in hosting.items():
                    line = (
                        f"{node} is remediated as a standalone host: its roles {', '.join(roles)} are not "
                        "moved and go down if it restarts"
                    )
                    if not force:
                        raise StandaloneHostHasRoles(
                            line,
                            hint="remediate the cluster (without --nodes) to move them first, or --force",
                        )
                    warnings.append(line)
        finally:
            await provider.close()
        if standalone is not None:
            plan = plan.model_copy(update={"nodes": {n: k for n, k in plan.nodes.items() if n in standalone}})
            if plan.empty:
                raise NothingToRemediate(
                    f"nothing to remediate on {', '.join(standalone)}: nothing NonCompliant there"
                )
            base = base.model_copy(update={"drain": DrainPolicy.NEVER})
        keys = {k for ks in plan.nodes.values() for k in ks}
        specs = []
        for plugin in sorted({k.split(":", 1)[0] for k in keys}):
            spec = configured.get(plugin) or PluginSpec(name=plugin)
            if plugin in ("apt", "dnf"):
                names = sorted({k.split(":", 1)[1] for k in keys if k.startswith(plugin + ":")})
                if plugin == "dnf":  # ids are name.arch; include matches names
                    names = sorted({n.rsplit(".", 1)[0] if "." in n else n for n in names} | set(names))
                spec = PluginSpec(name=plugin, args={**spec.args, "include": names})
            specs.append(spec)
        data = base.model_dump(mode="json")
        data.update({"plugins": [s.model_dump(mode="json") for s in specs], "update_selection": plan.nodes})
        return RunProfile.model_validate(data), warnings


def _unique(rules: Iterable[BaselineRule]) -> list[BaselineRule]:
    """One rule per key, the last one given winning (a package's new minimum replaces the old)."""
    by_key: dict[str, BaselineRule] = {}
    for r in rules:
        by_key.pop(r.key, None)
        by_key[r.key] = r
    return list(by_key.values())


__all__ = ["Compliance", "FindingState", "NothingToRemediate", "RemediationPlan", "StandaloneHostHasRoles"]
