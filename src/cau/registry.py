"""Plug-ins, providers and stores, found through the `cau.plugins`, `cau.providers` and
`cau.stores` entry points.

Built-in ones register the same way a third-party package does. One that fails to load is reported
by name with its error, and the others still work.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

from cau.errors import NotFound

PLUGIN_GROUP = "cau.plugins"
PROVIDER_GROUP = "cau.providers"
STORE_GROUP = "cau.stores"

_REQUIRED = {
    PLUGIN_GROUP: ("name", "Args", "create_updater"),
    PROVIDER_GROUP: ("name", "Options", "create"),
    STORE_GROUP: ("name", "Options", "open"),  # cau.ports.StoreFactory
}


@dataclass(frozen=True)
class Entry:
    group: str
    name: str
    target: str  # "module:attr" as declared
    obj: Any = None
    error: str | None = None
    distribution: str | None = None
    version: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def summary(self) -> str:
        doc = (getattr(self.obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""


def _load(ep: metadata.EntryPoint, group: str) -> Entry:
    dist = getattr(ep, "dist", None)
    base = Entry(
        group=group,
        name=ep.name,
        target=ep.value,
        distribution=dist.name if dist else None,
        version=dist.version if dist else None,
    )
    try:
        obj = ep.load()
    except Exception as exc:  # a broken third-party package must not break cau
        return replace(base, error=f"{type(exc).__name__}: {exc}")
    missing = [attr for attr in _REQUIRED[group] if not hasattr(obj, attr)]
    if missing:
        return replace(base, obj=obj, error=f"does not implement the protocol (missing {', '.join(missing)})")
    return replace(base, obj=obj)


@dataclass
class Registry:
    plugins: dict[str, Entry] = field(default_factory=dict)
    providers: dict[str, Entry] = field(default_factory=dict)
    stores: dict[str, Entry] = field(default_factory=dict)

    @classmethod
    def discover(cls) -> Registry:
        reg = cls()
        groups = ((PLUGIN_GROUP, reg.plugins), (PROVIDER_GROUP, reg.providers), (STORE_GROUP, reg.stores))
        for group, table in groups:
            for ep in metadata.entry_points(group=group):
                if ep.name not in table:  # the first distribution to claim a name wins
                    table[ep.name] = _load(ep, group)
        return reg

    def _get(self, table: dict[str, Entry], kind: str, name: str) -> Any:
        entry = table.get(name)
        if entry is None:
            known = ", ".join(sorted(n for n, e in table.items() if e.ok)) or "none"
            raise NotFound(
                f"no {kind} named '{name}' is installed (installed: {known})",
                hint="`cau plugins` lists what is installed and what failed to load",
            )
        if entry.error is not None:
            raise NotFound(f"the {kind} '{name}' failed to load: {entry.error}")
        return entry.obj

    def plugin(self, name: str) -> Any:
        return self._get(self.plugins, "plug-in", name)

    def provider(self, name: str) -> Any:
        return self._get(self.providers, "provider", name)

    def store(self, name: str) -> Any:
        """A `cau.ports.StoreFactory`: `.open(Options(...), StoreContext(data_dir))` gives a Store."""
        return self._get(self.stores, "store", name)
