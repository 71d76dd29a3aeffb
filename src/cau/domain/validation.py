"""One way to tell what is wrong with validated input: 'key.path: what is wrong (got value)'."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from cau.redact import redact


def describe_errors(
    error: ValidationError,
    *,
    unknown: str = "unknown key",
    origin: Mapping[str, str] | None = None,
    whole: str = "",
) -> list[str]:
    """Each problem as a line naming its key. `origin` maps a top-level key to where its value came
    from (a file, a flag); `whole` names the object for errors that concern no single key."""
    problems = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        key = ".".join(loc) or whole
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = unknown
        elif item["type"] != "missing" and not isinstance(item.get("input"), dict | list):
            # The value is shown to help, but it may be (or hold) a secret: a URL's password...
            msg = f"{msg} (got {redact(repr(item['input']))})"
        where = (origin or {}).get(loc[0]) if loc else None
        line = f"{key}: {msg}" if key else msg
        problems.append(line + (f" [from {where}]" if where else ""))
    return problems
