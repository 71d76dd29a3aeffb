"""One evaluation of one health gate (cau.domain.gates): green or red, and the answer that says why.

A check never raises for what it finds: a command that fails, a server that does not answer,
Prometheus saying "error" are all red answers. Answers are redacted (the cluster's secrets are
masked by value) and bounded, since they reach the journal and the pause message.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from cau.domain.gates import (
    ClusterHealthGate,
    CommandGate,
    GateSpec,
    HttpGate,
    ProbeGate,
    PrometheusGate,
    substitute,
)
from cau.errors import CauError
from cau.ports import ClusterProvider, ReportsHealth
from cau.probes.check import Checker
from cau.probes.spec import ProbeSpec
from cau.redact import redact
from cau.transport.local import LocalTransport

ANSWER_LIMIT = 300


@dataclass(frozen=True)
class Answer:
    green: bool
    text: str


def _bounded(text: str) -> str:
    text = redact(" ".join(text.split()))
    return text if len(text) <= ANSWER_LIMIT else text[: ANSWER_LIMIT - 1] + "…"


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def prometheus_answer(body: Any, expect: str) -> Answer:
    """Prometheus's /api/v1/query answer, judged: `empty` is green when no series came back;
    `nonzero` when at least one sample did and every sample is a number other than 0 and NaN."""
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return Answer(False, f"Prometheus answered an error: {error or body!r}")
    data = body.get("data") or {}
    kind = data.get("resultType")
    result = data.get("result")
    samples: list[tuple[str, float | None]] = []
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        samples = [("scalar", _number(result[1]))]
    elif kind in ("vector", "matrix") and isinstance(result, list):
        for series in result:
            labels = dict(series.get("metric", {})) if isinstance(series, dict) else {}
            metric = str(labels.pop("__name__", ""))
            name = metric + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
            values = [series.get("value")] if kind == "vector" else series.get("values", [])
            for value in values or []:
                samples.append(
                    (name, _number(value[1]) if isinstance(value, list) and len(value) == 2 else None)
                )
    else:
        return Answer(False, f"Prometheus answered a {kind or 'missing'} result, not a vector or scalar")
    shown = ", ".join(f"{name} = {'?' if v is None else f'{v:g}'}" for name, v in samples[:5])
    more = f" (and {len(samples) - 5} more)" if len(samples) > 5 else ""
    if expect == "empty":
        if not samples:
            return Answer(True, "no series")
        return Answer(False, f"{len(samples)} series: {shown}{more}")
    if not samples:
        return Answer(False, "no data (the query returned nothing)")
    bad = [s for s in samples if s[1] is None or s[1] == 0 or math.isnan(s[1])]
    if bad:
        return Answer(False, f"{len(bad)} of {len(samples)} sample(s) zero or not a number: {shown}{more}")
    return Answer(True, f"{len(samples)} sample(s), all non-zero: {shown}{more}")


class GateChecks:
    """Evaluates gates for one run: commands through the provider's node sessions (or on this
    machine), HTTP and Prometheus with httpx, cluster health through the provider."""

    def __init__(
        self,
        *,
        provider: ClusterProvider,
        run_id: str,
        secrets: Mapping[str, str],
        http_transport: httpx.AsyncBaseTransport | None = None,
        probes: Sequence[ProbeSpec] = (),
    ) -> None:
        self._probes = {p.role: p for p in probes}
        self._provider = provider
        self._run_id = run_id
        self._secrets = dict(secrets)
        self._transport = http_transport

    async def evaluate(self, gate: GateSpec, node: str | None) -> Answer:
        try:
            match gate:
                case CommandGate():
                    return await self._command(gate, node)
                case HttpGate():
                    return await self._http(gate, node)
                case PrometheusGate():
                    return await self._prometheus(gate, node)
                case ClusterHealthGate():
                    return await self._health()
                case ProbeGate():
                    return await self._probe(gate)
        except asyncio.CancelledError:
            raise
        except httpx.TimeoutException:
            return Answer(False, "no answer within the request timeout")
        except httpx.HTTPError as exc:
            return Answer(False, _bounded(f"{type(exc).__name__}: {exc}"))
        except CauError as exc:
            return Answer(False, _bounded(str(exc)))
        except Exception as exc:  # a check must never break the run: an unexpected error is red
            return Answer(False, _bounded(f"{type(exc).__name__}: {exc}"))
        raise AssertionError(f"unknown gate kind: {gate!r}")

    def _headers(self, gate: HttpGate | PrometheusGate) -> dict[str, str]:
        if gate.bearer_token_secret is None:
            return {}
        return {"Authorization": f"Bearer {self._secrets[gate.bearer_token_secret]}"}

    def _client(self, gate: HttpGate | PrometheusGate) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            verify=gate.tls_verify,
            timeout=gate.request_timeout.total_seconds(),
            headers=self._headers(gate),
            follow_redirects=False,
        )

    async def _command(self, gate: CommandGate, node: str | None) -> Answer:
        command = substitute(gate.command, node)
        env = {**self._secrets, "CAU_RUN_ID": self._run_id, "CAU_PHASE": "health_gate", "CAU_GATE": gate.name}
        if node is not None:
            env["CAU_NODE"] = node
        timeout = gate.command_timeout.total_seconds()
        if gate.on == "node":
            assert node is not None  # a command on the node is a per-node gate
            transport = (await self._provider.session(node)).transport
        else:
            transport = LocalTransport()
        result = await transport.run(command, timeout=timeout, env=env)
        lines = (result.stdout.strip() or result.stderr.strip()).splitlines()
        last = lines[-1] if lines else ""
        text = f"exit status {result.exit_status}" + (f": {last}" if last else "")
        return Answer(result.ok, _bounded(text))

    async def _http(self, gate: HttpGate, node: str | None) -> Answer:
        url = substitute(gate.url, node)
        async with self._client(gate) as client:
            response = await client.get(url)
        text = f"HTTP {response.status_code}"
        if response.status_code not in gate.status:
            return Answer(False, text)
        if gate.body_regex is not None:
            pattern = substitute(gate.body_regex, node)
            if re.search(pattern, response.text) is None:
                return Answer(False, f"{text}, the body does not match {pattern!r}")
            return Answer(True, f"{text}, the body matches")
        return Answer(True, text)

    async def _prometheus(self, gate: PrometheusGate, node: str | None) -> Answer:
        query = substitute(gate.query, node)
        async with self._client(gate) as client:
            response = await client.post(f"{gate.url}/api/v1/query", data={"query": query})
        try:
            body = response.json()
        except ValueError:
            return Answer(False, f"HTTP {response.status_code} from Prometheus, not JSON")
        if response.status_code != 200 and not isinstance(body, dict):
            return Answer(False, f"HTTP {response.status_code} from Prometheus")
        answer = prometheus_answer(body, gate.expect)
        return Answer(answer.green, _bounded(answer.text))

    async def _probe(self, gate: ProbeGate) -> Answer:
        spec = self._probes.get(gate.probe)
        if spec is None:
            return Answer(False, f"the cluster has no probe of role {gate.probe}")
        checker = Checker(spec)  # the probe's own check (targets, timeout, TLS), once
        try:
            result = await checker.check()
        finally:
            await checker.close()
        if result.ok:
            return Answer(True, f"{gate.probe} answers ({result.seconds * 1000:.0f} ms)")
        return Answer(False, _bounded(f"{gate.probe} does not answer: {result.error}"))

    async def _health(self) -> Answer:
        if not isinstance(self._provider, ReportsHealth):
            return Answer(False, "the provider does not report the cluster's health")
        problems = await self._provider.health_problems()
        if problems:
            return Answer(False, _bounded("; ".join(problems)))
        return Answer(True, "healthy")
