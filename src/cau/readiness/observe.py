"""Gather what the readiness rules look at: the provider's own checks, the cluster snapshot, every
node's facts (one read-only script per node, all nodes at once, through the provider's own node
sessions: the SSH transport verifies host keys and refuses others with a typed error), and on
request the cluster manager's drain predictions and the clustered role's checks.

Nothing here changes anything, on the nodes or in the cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from cau.domain.profile import RunProfile
from cau.errors import CauError
from cau.ports import ClusterProvider, PredictsDrain, ReportsHealth
from cau.readiness.facts import facts_script, parse_facts
from cau.readiness.rules import NodeProbe, Observation, plugin_tools, script_targets
from cau.views import ReadinessCheck

FACTS_TIMEOUT = 60.0


async def read_node(provider: ClusterProvider, node: str, script: str) -> NodeProbe:
    try:
        session = await provider.session(node)
        result = await session.transport.run(script, timeout=FACTS_TIMEOUT)
    except CauError as exc:
        return NodeProbe(node, error=exc)
    facts = parse_facts(result.stdout)
    if not result.ok or not facts.complete:
        # e.g. `sudo -n` refused: nothing of the script ran (the privilege rule names it)
        return NodeProbe(node, facts=facts if facts.complete else None, failed=result)
    return NodeProbe(node, facts=facts)


def _configured_nodes(provider: ClusterProvider) -> list[str]:
    """The nodes a provider is configured with, for when the cluster cannot be observed."""
    options = getattr(provider, "options", None)
    return [str(n.name) for n in getattr(options, "nodes", [])]


async def _drain_problems(provider: PredictsDrain, obs: Observation) -> dict[str, list[str]]:
    assert obs.snapshot is not None
    found: dict[str, list[str]] = {}
    for node in obs.snapshot.nodes:
        if not node.is_up or node.in_maintenance:
            continue
        try:
            found[node.name] = await provider.drain_problems(node.name, obs.profile.move)
        except CauError as exc:
            found[node.name] = [
                f"the cluster manager could not say what draining {node.name} would do: {exc}"
            ]
    return found


async def observe(
    provider: ClusterProvider,
    *,
    cluster: str,
    provider_name: str,
    profile: RunProfile,
    profile_problems: list[str] | None = None,
    plugins: list[str] | None = None,
    plugin_problems: list[str] | None = None,
    store_members: list[str] | None = None,
    coordinator_node: str | None = None,
    predict_drains: bool = False,
    role_checks: Callable[[], Awaitable[list[ReadinessCheck]]] | None = None,
) -> Observation:
    """`predict_drains`: ask the cluster manager what draining each node would do (a simulation
    per node: `cau check` does, a run's preflight leaves it to the gate before each drain)."""
    options = getattr(provider, "options", None)
    obs = Observation(
        cluster=cluster,
        provider=provider_name,
        profile=profile,
        simulated=bool(getattr(provider, "simulated", False)),
        profile_problems=list(profile_problems or []),
        plugins=list(plugins or []),
        plugin_problems=list(plugin_problems or []),
        store_members=list(store_members or []),
        cluster_manager=isinstance(provider, ReportsHealth),
        user=str(getattr(options, "user", "root")),
    )
    own_checks = getattr(provider, "preflight", None)

    async def provider_checks() -> None:
        if own_checks is None:  # optional provider capability
            return
        try:
            # self-updating mode: the coordinator runs on `coordinator_node`, a member
            obs.provider_problems = await (
                own_checks(profile, coordinator_node=coordinator_node)
                if coordinator_node
                else own_checks(profile)
            )
        except CauError as exc:
            obs.provider_problems = [exc.message + (f" ({exc.hint})" if exc.hint else "")]

    async def snapshot() -> None:
        try:
            obs.snapshot = await provider.discover()
        except CauError as exc:
            obs.snapshot_exception = exc
            obs.snapshot_error = exc.message + (f" ({exc.hint})" if exc.hint else "")

    async def observe() -> None:
        if obs.simulated:
            await snapshot()
            return
        files, commands = script_targets(profile)
        script = facts_script(script_paths=files, commands=[*commands, *plugin_tools(obs.plugins)])
        names = _configured_nodes(provider)
        if names:
            # discover and the facts at once: each is one round trip per node
            _, probes = await asyncio.gather(
                snapshot(), asyncio.gather(*(read_node(provider, n, script) for n in names))
            )
        else:  # a provider that does not list its nodes in its options: the snapshot's
            await snapshot()
            names = list(obs.snapshot.node_names) if obs.snapshot is not None else []
            probes = list(await asyncio.gather(*(read_node(provider, n, script) for n in names)))
        obs.nodes = {p.node: p for p in probes}

    # The provider's own checks and the observation only read, and neither needs the other: asked
    # at once, a run's start waits for the slower of them, not for both in turn.
    await asyncio.gather(provider_checks(), observe())
    if predict_drains and obs.snapshot is not None and isinstance(provider, PredictsDrain):
        obs.drain_problems = await _drain_problems(provider, obs)
    if role_checks is not None:
        try:
            obs.role_checks = await role_checks()
        except CauError as exc:
            obs.role_checks = [
                ReadinessCheck(check="the role's checks could run", ok=False, detail=exc.message)
            ]
    return obs
