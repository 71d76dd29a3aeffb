"""Helpers for tests: sandbox clusters from dicts, runs in virtual time, journal queries."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from cau.clock import VirtualClock, run_virtual
from cau.domain.profile import build_profile
from cau.engine.coordinator import Coordinator, RunOutcome
from cau.journal.events import EventKind, JournalEvent
from cau.registry import Registry
from cau.service import Service


def node(name: str, **kw: Any) -> dict[str, Any]:
    return {"name": name, "cpu": 16, "memory_gb": 64, "restart_seconds": 60, **kw}


def spec(
    nodes: int | list[dict[str, Any]] = 4,
    *,
    roles: list[dict[str, Any]] | None = None,
    updates: list[dict[str, Any]] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    node_list = [node(f"n{i}") for i in range(1, nodes + 1)] if isinstance(nodes, int) else nodes
    return {
        "speed": 1,
        "scan_seconds": 5,
        "nodes": node_list,
        "roles": roles if roles is not None else [],
        "updates": updates
        if updates is not None
        else [
            {"id": "kernel", "title": "Linux kernel", "restart": True, "install_seconds": 60},
            {"id": "openssl", "title": "OpenSSL", "install_seconds": 20},
        ],
        **kw,
    }


def write_cluster(tmp: Path, spec_data: dict[str, Any], name: str = "c1") -> Path:
    """Write a sandbox spec and a config declaring it; returns the config path."""
    (tmp / f"{name}.toml").write_text(tomli_w.dumps(spec_data))
    config = tmp / "clusters.toml"
    existing = config.read_text() if config.exists() else ""
    config.write_text(
        existing + f'\n[clusters.{name}]\nprovider = "sandbox"\n[clusters.{name}.options]\n'
        f'spec = "{name}.toml"\n'
    )
    return config


@dataclass
class Done:
    outcome: RunOutcome
    events: list[JournalEvent]
    state: dict[str, Any]  # the sandbox state file after the run

    @property
    def report(self) -> Any:
        assert self.outcome.report is not None
        return self.outcome.report

    def node(self, name: str) -> Any:
        return next(n for n in self.report.nodes if n.name == name)

    def steps(self, node: str, step: str) -> list[JournalEvent]:
        return [e for e in self.events if e.kind is EventKind.INTENT and e.node == node and e.step == step]


def service(home: Path, config: Path | None = None, registry: Registry | None = None) -> Service:
    return Service(
        home, config, clock=VirtualClock(datetime(2026, 11, 1, 2, 0, tzinfo=UTC)), registry=registry
    )


def run_journaled(
    home: Path,
    config: Path | None,
    cluster: str = "c1",
    *,
    registry: Registry | None = None,
    on_event: Callable[[JournalEvent], None] | None = None,
    on_coordinator: Callable[[Coordinator], Awaitable[None]] | None = None,
    **profile: Any,
) -> tuple[RunOutcome, list[JournalEvent]]:
    """One Updating Run in virtual time, of any provider: its outcome and its journal."""

    async def main() -> RunOutcome:
        svc = service(home, config, registry)
        try:
            return await svc.run(
                cluster, build_profile(None, profile), on_event=on_event, on_coordinator=on_coordinator
            )
        finally:
            svc.close()

    outcome = run_virtual(main())
    return outcome, journal_of(home, outcome)


def run_cluster(home: Path, config: Path | None, cluster: str = "c1", **options: Any) -> Done:
    """One Updating Run of a sandbox cluster in virtual time (options: run_journaled's)."""
    outcome, _ = run_journaled(home, config, cluster, **options)
    return finished(home, cluster, outcome)


def journal_of(home: Path, outcome: RunOutcome) -> list[JournalEvent]:
    svc = Service(home)
    try:
        return asyncio.run(svc.store.events(outcome.run_id))
    finally:
        svc.close()


def finished(home: Path, cluster: str, outcome: RunOutcome) -> Done:
    """A finished sandbox run: its outcome, journal and the sandbox's state file."""
    state = json.loads((home / "sandbox" / f"{cluster}.json").read_text())
    return Done(outcome, journal_of(home, outcome), state)


def max_concurrent_maintenance(events: list[JournalEvent]) -> int:
    """The most nodes cau held in maintenance at once, from the journal (first enter intent to
    successful exit outcome)."""
    inside: set[str] = set()
    peak = 0
    for e in events:
        if e.kind is EventKind.INTENT and e.step == "enter_maintenance" and e.node:
            inside.add(e.node)
            peak = max(peak, len(inside))
        if e.kind is EventKind.OUTCOME and e.step == "exit_maintenance" and e.data.get("ok") and e.node:
            inside.discard(e.node)
        if e.kind is EventKind.NODE_FINISHED and e.node and not e.data.get("left_in_maintenance"):
            inside.discard(e.node)
    return peak


def installs(events: list[JournalEvent]) -> list[tuple[str, str]]:
    """(node, update id) of every successful install in the journal."""
    out = []
    for e in events:
        if e.kind is EventKind.OUTCOME and e.step == "install" and e.node:
            for r in e.data.get("results", []):
                if r["outcome"] == "Succeeded" and "observed after" not in r.get("message", ""):
                    out.append((e.node, r["update_id"]))
    return out


def journal_rows(db: Path) -> list[dict[str, Any]]:
    """Every journal row in a store file so far, read as another process would (read-only, its
    `data` decoded): none before the coordinator has created the file and its tables."""
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        rows = [dict(r) for r in conn.execute("SELECT * FROM journal ORDER BY run_id, seq")]
    except sqlite3.OperationalError:  # created but its tables are not there yet
        return []
    finally:
        conn.close()
    for r in rows:
        r["data"] = json.loads(r["data"])
    return rows
