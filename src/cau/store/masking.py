"""What every store does to what it is given before keeping it: the secrets' values masked.

The last net for secrets (cau.redact's first one, by value): whatever reaches a store — a run's
profile and message, a stop reason, a report, a journal event — is masked, whatever backend keeps
it. Every backend calls these, so they mask the same things the same way.
"""

from __future__ import annotations

from pydantic import BaseModel, JsonValue

from cau.journal.events import EventPayload, load_payload, payload_data
from cau.redact import mask_data, mask_values


def masked_text(text: str | None) -> str | None:
    return None if text is None else mask_values(text)


def masked_json(model: BaseModel) -> str:
    """A model as JSON text, every registered secret's value masked."""
    return mask_values(model.model_dump_json())


def masked_event(payload: EventPayload) -> tuple[EventPayload, dict[str, JsonValue]]:
    """An event's payload as the journal keeps it, and its stored data (`payload_data`): what
    the caller gets back from `append` is what the journal holds, masked values included."""
    plain = payload_data(payload)
    masked: dict[str, JsonValue] = mask_data(plain)
    if masked != plain:
        payload = load_payload(
            payload.kind.value, getattr(payload, "step", None), getattr(payload, "key", None), masked
        )
    return payload, masked
