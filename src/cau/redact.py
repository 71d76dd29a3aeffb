"""Keep secrets out of logs, the journal and reports."""

from __future__ import annotations

import re
from typing import Any

_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|credential|private[_-]?key)[\w.-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)

MASK = "***"


def redact(text: str) -> str:
    text = _PEM.sub("-----PRIVATE KEY " + MASK + "-----", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def tail(text: str, limit: int = 2000) -> str:
    """The end of a command's output, redacted: the end is where the error usually is."""
    text = redact(text.strip())
    return text if len(text) <= limit else "…" + text[-limit:]


def redact_data(value: Any) -> Any:
    """Redact every string in a JSON-like value (profiles and plug-in arguments in the journal)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value
