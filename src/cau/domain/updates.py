"""Updates as a plug-in reports them, and the result of installing one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


@dataclass(frozen=True)
class Update:
    id: str
    title: str
    plugin: str
    needs_restart: bool = False
    size_bytes: int = 0
    description: str = ""
    # What the plug-in knows about versions, e.g. {"from": "1.0-1", "to": "1.0-2"}.
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HeldUpdate:
    """An update the node does not take, on purpose: held by its admin (`apt-mark hold`), or kept
    back (its upgrade would need new packages or removals). Not installed, and not a failure."""

    id: str
    title: str
    plugin: str
    reason: str  # "held" | "kept back"
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScanResult:
    """What a plug-in found applicable on one node."""

    updates: tuple[Update, ...] = ()
    # The node already waits for a restart (e.g. a previous run used no_restart).
    restart_pending: bool = False
    held: tuple[HeldUpdate, ...] = ()


class UpdateOutcome(StrEnum):
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


@dataclass(frozen=True)
class UpdateResult:
    """The outcome of installing one update on one node.

    A per-update failure is a result, not an exception (the plug-in API's rule): an exception from a
    plug-in means its own infrastructure failed.
    """

    update_id: str
    title: str
    plugin: str
    outcome: UpdateOutcome
    restart_required: bool = False
    error_code: int | None = None
    message: str = ""
    started: datetime | None = None
    finished: datetime | None = None
    details: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StagingResult:
    update_id: str
    ok: bool
    message: str = ""
