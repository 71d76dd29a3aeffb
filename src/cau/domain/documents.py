"""Documents: the store's typed records that are neither runs nor journals (compliance's baselines,
cluster groups, exemptions, node compliance scans...).

Each kind is a pydantic model with its `kind` (where the store files it), a `key` that is unique
within the kind, and a schema version. Every store keeps them the same way (cau.ports.Store's
document methods, the contract suite in tests/contract/test_store.py): the model's JSON, masked,
validated back into the model when read, so nothing travels as loose dicts."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict


class Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ClassVar[str]
    schema_version: int = 1

    @property
    def key(self) -> str:
        raise NotImplementedError


D = TypeVar("D", bound=Document)
