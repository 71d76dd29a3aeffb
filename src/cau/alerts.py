"""Alertmanager silences for nodes in maintenance (`[clusters.NAME.alertmanager]`, API v2).

A node admitted to maintenance gets a silence matching its labels (the configured matchers, with
`{node}` substituted); it is expired once the node is back and its after-return health gates are
green. Never a silence left behind:

* the intent is journaled before the silence is created, its id after; the silence's comment
  carries a marker, `[cau run RUN cluster CLUSTER node NODE]`, and `createdBy` is cau's;
* a coordinator that takes a run (new or resumed), pauses it or ends it looks at Alertmanager
  (`GET /api/v2/silences`), finds the run's silences by their marker, expires those of nodes not
  in maintenance, and silences a node in maintenance that has none (a crash between the intent and
  the creation);
* `cau cleanup CLUSTER` (and `cau node resume`) expire the cluster's leftovers the same way;
* every silence ends by itself (`endsAt`, AlertmanagerSpec.duration), the last net should cau
  never come back.

A failing Alertmanager never breaks a run: the failure is a warning in the journal and report.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from cau.domain.gates import AlertmanagerSpec, substitute
from cau.journal.events import EventPayload, JournalEvent, SilenceRecord, WarningEvent
from cau.ports import Clock
from cau.redact import redact

_MARKER = re.compile(r"\[cau run (\S+) cluster (\S+) node (\S+)\]")


def marker(run_id: str, cluster: str, node: str) -> str:
    return f"[cau run {run_id} cluster {cluster} node {node}]"


class AlertmanagerError(Exception):
    pass


@dataclass(frozen=True)
class Silence:
    id: str
    state: str  # active | pending | expired
    comment: str
    created_by: str
    run_id: str | None  # from cau's marker; None for a silence that is not cau's
    cluster: str | None
    node: str | None
    ends_at: datetime | None = None


class Alertmanager:
    """The few calls of Alertmanager's API v2 that cau makes."""

    def __init__(
        self,
        spec: AlertmanagerSpec,
        secrets: Mapping[str, str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.spec = spec
        headers = {}
        if spec.bearer_token_secret is not None:
            headers["Authorization"] = f"Bearer {secrets[spec.bearer_token_secret]}"
        self._client_args: dict[str, Any] = {
            "transport": transport,
            "verify": spec.tls_verify,
            "timeout": spec.request_timeout.total_seconds(),
            "headers": headers,
            "base_url": spec.url,
        }

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            async with httpx.AsyncClient(**self._client_args) as client:
                response = await client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise AlertmanagerError(
                redact(f"Alertmanager at {self.spec.url} did not answer: {type(exc).__name__}: {exc}")
            ) from exc
        return response

    @staticmethod
    def _fail(response: httpx.Response, what: str) -> AlertmanagerError:
        return AlertmanagerError(
            redact(f"{what}: HTTP {response.status_code}: {response.text.strip()[:200]}")
        )

    async def create(
        self, matchers: Mapping[str, str], starts: datetime, ends: datetime, comment: str
    ) -> str:
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()
            ],
            "startsAt": starts.isoformat(),
            "endsAt": ends.isoformat(),
            "createdBy": self.spec.created_by,
            "comment": comment,
        }
        response = await self._request("POST", "/api/v2/silences", json=body)
        if response.status_code != 200:
            raise self._fail(response, "creating a silence")
        silence_id = response.json().get("silenceID")
        if not isinstance(silence_id, str) or not silence_id:
            raise AlertmanagerError(f"creating a silence: no silenceID in {response.text[:200]!r}")
        return silence_id

    async def expire(self, silence_id: str) -> None:
        response = await self._request("DELETE", f"/api/v2/silence/{silence_id}")
        # 404: gone already (expired and garbage-collected); 500 "already expired" on some versions
        if response.status_code == 200 or response.status_code == 404:
            return
        if "already expired" in response.text:
            return
        raise self._fail(response, f"expiring silence {silence_id}")

    async def silences(self) -> list[Silence]:
        """cau's silences (its createdBy), whatever their state."""
        response = await self._request("GET", "/api/v2/silences")
        if response.status_code != 200:
            raise self._fail(response, "listing silences")
        found = []
        for item in response.json():
            comment = str(item.get("comment", ""))
            created_by = str(item.get("createdBy", ""))
            m = _MARKER.search(comment)
            if m is None or created_by != self.spec.created_by:
                continue
            found.append(
                Silence(
                    id=str(item.get("id")),
                    state=str((item.get("status") or {}).get("state", "")),
                    comment=comment,
                    created_by=created_by,
                    run_id=m.group(1),
                    cluster=m.group(2),
                    node=m.group(3),
                    ends_at=_timestamp(item.get("endsAt")),
                )
            )
        return found


Journal = Callable[[EventPayload, str | None], Awaitable[JournalEvent | None]]


class SilenceKeeper:
    """The silences of one run's nodes: created, expired and reconciled, each act journaled
    before and after; failures are warnings."""

    def __init__(
        self,
        client: Alertmanager,
        *,
        run_id: str,
        cluster: str,
        clock: Clock,
        lasts: timedelta,
        journal: Journal,
    ) -> None:
        self.client = client
        self.spec = client.spec
        self.run_id = run_id
        self.cluster = cluster
        self.clock = clock
        self.lasts = lasts
        self._journal = journal
        self._lock = asyncio.Lock()  # one change at a time: a reconcile never races a create

    async def _warn(
        self, node: str | None, mark: str, action: str, exc: Exception, sid: str | None = None
    ) -> None:
        text = redact(str(exc))
        await self._journal(
            SilenceRecord(action="failed", marker=mark, silence_id=sid, message=f"{action}: {text}"), node
        )
        await self._journal(
            WarningEvent(
                message=f"Alertmanager silence{f' of {node}' if node else ''}: {action} failed: {text}"
            ),
            node,
        )

    async def create(self, node: str) -> None:
        async with self._lock:
            await self._create(node)

    async def _create(self, node: str) -> None:
        mark = marker(self.run_id, self.cluster, node)
        matchers = {k: substitute(v, node) for k, v in self.spec.matchers.items()}
        now = self.clock.now()
        ends = now + self.lasts
        await self._journal(
            SilenceRecord(action="create", marker=mark, matchers=matchers, ends_at=ends), node
        )
        try:
            sid = await self.client.create(matchers, now, ends, f"{self.spec.comment} {mark}")
        except AlertmanagerError as exc:
            await self._warn(node, mark, "create", exc)
            return
        await self._journal(
            SilenceRecord(action="created", marker=mark, silence_id=sid, matchers=matchers, ends_at=ends),
            node,
        )

    async def _expire(self, silence: Silence) -> bool:
        mark = marker(silence.run_id or self.run_id, silence.cluster or self.cluster, silence.node or "?")
        node = silence.node if silence.run_id == self.run_id else None
        await self._journal(SilenceRecord(action="expire", marker=mark, silence_id=silence.id), node)
        try:
            await self.client.expire(silence.id)
        except AlertmanagerError as exc:
            await self._warn(node, mark, f"expire {silence.id}", exc, silence.id)
            return False
        await self._journal(SilenceRecord(action="expired", marker=mark, silence_id=silence.id), node)
        return True

    async def _active(self) -> list[Silence] | None:
        try:
            return [s for s in await self.client.silences() if s.state in ("active", "pending")]
        except AlertmanagerError as exc:
            await self._warn(None, marker(self.run_id, self.cluster, "*"), "list silences", exc)
            return None

    async def expire(self, node: str) -> None:
        """The node is back and healthy: its silences end now."""
        async with self._lock:
            found = await self._active()
            for s in found or []:
                if s.run_id == self.run_id and s.cluster == self.cluster and s.node == node:
                    await self._expire(s)

    async def renew(self, in_maintenance: Collection[str]) -> None:
        """A node still in maintenance whose silence ends within half its length gets a new one,
        made before the old one is expired, so its alerts stay silent however long it takes."""
        async with self._lock:
            found = await self._active()
            soon = self.clock.now() + self.lasts / 2
            for s in found or []:
                mine = s.run_id == self.run_id and s.cluster == self.cluster
                due = s.ends_at is not None and s.ends_at <= soon
                if mine and due and s.node is not None and s.node in in_maintenance:
                    await self._create(s.node)
                    await self._expire(s)

    async def reconcile(self, in_maintenance: Collection[str], *, create: bool) -> None:
        """Expire this run's silences of nodes not in maintenance; with `create`, silence a node
        in maintenance that has none."""
        async with self._lock:
            found = await self._active()
            if found is None:
                return
            mine = [s for s in found if s.run_id == self.run_id and s.cluster == self.cluster]
            for s in mine:
                if s.node not in in_maintenance:
                    await self._expire(s)
            if create:
                silenced = {s.node for s in mine}
                for node in sorted(set(in_maintenance) - silenced):
                    await self._create(node)


def _timestamp(value: object) -> datetime | None:
    """Alertmanager's RFC 3339 time ("2026-12-03T15:00:00.000Z"), or None."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


async def expire_leftovers(
    client: Alertmanager, cluster: str, keep: Collection[str], *, only: str | None = None
) -> tuple[list[str], list[str]]:
    """`cau cleanup` (`cau node resume`: `only` that node): expire cau's active silences of
    `cluster`, except those of the nodes in `keep` (still in maintenance). (done, problems)."""
    done: list[str] = []
    try:
        found = await client.silences()
    except AlertmanagerError as exc:
        return [], [str(exc)]
    problems: list[str] = []
    for s in found:
        if s.cluster != cluster or s.state not in ("active", "pending"):
            continue
        if only is not None and s.node != only:
            continue
        if s.node in keep:
            problems.append(f"silence {s.id} of {s.node} stays: {s.node} is still in maintenance")
            continue
        try:
            await client.expire(s.id)
        except AlertmanagerError as exc:
            problems.append(str(exc))
            continue
        done.append(f"expired Alertmanager silence {s.id} of {s.node} (run {s.run_id})")
    return done, problems
