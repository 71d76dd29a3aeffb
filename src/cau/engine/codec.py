"""Journal payloads for domain values (updates and their results)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from cau.domain.updates import HeldUpdate, Update, UpdateResult

_updates = TypeAdapter(list[Update])
_results = TypeAdapter(list[UpdateResult])
_held = TypeAdapter(list[HeldUpdate])


def dump_updates(updates: list[Update] | tuple[Update, ...]) -> list[dict[str, Any]]:
    return list(_updates.dump_python(list(updates), mode="json"))


def load_updates(data: Any) -> list[Update]:
    return _updates.validate_python(data or [])


def dump_results(results: list[UpdateResult]) -> list[dict[str, Any]]:
    return list(_results.dump_python(results, mode="json"))


def load_results(data: Any) -> list[UpdateResult]:
    return _results.validate_python(data or [])


def dump_held(held: list[HeldUpdate] | tuple[HeldUpdate, ...]) -> list[dict[str, Any]]:
    return list(_held.dump_python(list(held), mode="json"))


def load_held(data: Any) -> list[HeldUpdate]:
    return _held.validate_python(data or [])
