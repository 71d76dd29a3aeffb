"""Keep secrets out of logs, the journal and reports.

Two nets. The first masks **by value**: every secret cau was given (declared in a cluster's
`secrets`, see cau.secrets) is registered here, and wherever cau writes or shows text its value
— raw, URL-encoded or JSON-escaped — becomes `***`. The second masks by pattern: assignments to
names that look secret (`password=`, `token:`), bearer/basic credentials, a URL's password and
private keys, for secrets nobody declared.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

_ASSIGNMENT = re.compile(
    r"(?i)\b([\w.-]*(?:pass(?:word|wd|phrase)?|secret|token|api[_-]?key|credential|private[_-]?key)[\w.-]*)"
    r"(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
# A URL's password ends at the LAST `@` before the host: the password itself may hold `/`, `#`,
# `?` or `@` (unencoded, as people do write them), which a stricter pattern would print in full.
_URL_PASSWORD = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):(?!\d+(?:[/\s]|$))\S*@(?=[^\s@]*(?:[\s/]|$))"
)
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)

MASK = "***"

# Secrets shorter than this would mask ordinary words: cau.secrets refuses them.
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_values: set[str] = set()
_by_value: re.Pattern[str] | None = None


def _forms(value: str) -> set[str]:
    """The ways a value shows up in text cau writes: as is, URL-encoded, JSON-escaped."""
    return {
        value,
        quote(value, safe=""),
        quote(value),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
    }


def register_secrets(values: Iterable[str]) -> None:
    """Mask these values from now on, in this process, wherever redact() runs."""
    global _by_value
    with _lock:
        new = {v for v in values if len(v) >= MIN_SECRET_LENGTH} - _values
        if not new:
            return
        _values.update(new)
        forms = {f for v in _values for f in _forms(v)}
        # Longest first, so that a secret holding another one is masked whole.
        _by_value = re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
        _mask_log_records()


_log_masking = False


def _mask_log_records() -> None:
    """Every log record of this process (cau's, uvicorn's, a library's) with the secrets' values
    masked in its message, its arguments and its traceback, whatever handler writes it."""
    global _log_masking
    if _log_masking:
        return
    _log_masking = True
    make = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        if _by_value is None:
            return record
        if isinstance(record.msg, str):
            record.msg = mask_values(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_values(a) if isinstance(a, str) else _masked_arg(a) for a in record.args)
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = mask_values(logging.Formatter().formatException(record.exc_info))
        return record

    logging.setLogRecordFactory(factory)


def _masked_arg(value: Any) -> Any:
    # A non-string argument is formatted by %s/%r later: mask its text only if it holds a secret.
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    masked = mask_values(text)
    return masked if masked != text else value


def forget_secrets() -> None:
    """For tests: forget every registered value."""
    global _by_value
    with _lock:
        _values.clear()
        _by_value = None


def mask_values(text: str) -> str:
    """Only the first net: every registered secret's value masked (safe on JSON text)."""
    pattern = _by_value
    return text if pattern is None or not text else pattern.sub(MASK, text)


def redact(text: str) -> str:
    text = mask_values(text)
    text = _PEM.sub("-----PRIVATE KEY " + MASK + "-----", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def tail(text: str, limit: int = 2000) -> str:
    """The end of a command's output, redacted: the end is where the error usually is."""
    text = redact(text.strip())
    return text if len(text) <= limit else "…" + text[-limit:]


def mask_data(value: Any) -> Any:
    """Every string in a JSON-like value with the registered secrets' values masked."""
    if _by_value is None:
        return value
    if isinstance(value, str):
        return mask_values(value)
    if isinstance(value, dict):
        return {k: mask_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_data(v) for v in value]
    return value


def redact_data(value: Any) -> Any:
    """Redact every string in a JSON-like value (profiles and plug-in arguments in the journal)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value
