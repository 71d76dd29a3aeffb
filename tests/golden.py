"""Golden-file tests of parsers: FOLDER/NAME.txt is raw output, NAME.json says which parser reads
it, where the output came from, and what the parser must return:

    {"parser": "...", "command": "...", "provenance": "real: ..." | "crafted: ...",
     "args": {...}, "expected": ...}

`CAU_UPDATE_GOLDEN=1` rewrites every "expected" from the current parsers (read the diff before
committing it).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from typing import Any

Parser = Callable[[str, dict[str, Any]], Any]


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(jsonable(v) for v in value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def dump(data: Any, indent: int = 0) -> str:
    """JSON with short values on one line (one change per line keeps the diffs readable)."""
    flat = json.dumps(data, ensure_ascii=False)
    if len(flat) + indent <= 230 or not isinstance(data, dict | list) or not data:
        return flat
    pad = " " * (indent + 2)
    if isinstance(data, dict):
        items = [f"{pad}{json.dumps(k)}: {dump(v, indent + 2)}" for k, v in data.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + dump(v, indent + 2) for v in data]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


class GoldenFiles:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self, name: str) -> tuple[str, dict[str, Any]]:
        text = (self.folder / f"{name}.txt").read_text(encoding="utf-8")
        spec = json.loads((self.folder / f"{name}.json").read_text(encoding="utf-8"))
        return text, spec

    def names(self, parser: str | None = None) -> list[str]:
        found = sorted(p.stem for p in self.folder.glob("*.txt"))
        if parser is None:
            return found
        return [n for n in found if self.load(n)[1]["parser"] == parser]

    def unpaired(self) -> list[str]:
        txt = {p.stem for p in self.folder.glob("*.txt")}
        js = {p.stem for p in self.folder.glob("*.json")}
        return sorted(txt ^ js)

    def check(self, name: str, parsers: Mapping[str, Parser]) -> None:
        """The parser named by NAME.json, on NAME.txt, returns what NAME.json expects."""
        text, spec = self.load(name)
        assert spec["parser"] in parsers, f"{name}.json: unknown parser {spec['parser']!r}"
        assert spec.get("provenance", "").startswith(("real:", "crafted:")), (
            f"{name}.json: say where it came from"
        )
        actual = parsers[spec["parser"]](text, spec.get("args", {}))
        if os.environ.get("CAU_UPDATE_GOLDEN"):
            spec["expected"] = actual
            (self.folder / f"{name}.json").write_text(dump(spec) + "\n", encoding="utf-8")
        assert actual == spec["expected"]
