"""The configuration of one availability probe (`[[clusters.NAME.probes]]`)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.domain.durations import Duration

MIN_INTERVAL = timedelta(milliseconds=10)
DEFAULT_INTERVAL = timedelta(seconds=1)
SCHEMES = ("http", "https", "tcp")


def _check_target(target: str) -> str:
    text = target.strip()
    parts = urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"'{redact_target(text)}': a target is http://, https:// or tcp://host:port")
    try:
        port = parts.port
    except ValueError as exc:  # a port that is not a number, or out of range
        raise ValueError(f"'{redact_target(text)}': {exc}") from None
    if not parts.hostname:
        raise ValueError(f"'{redact_target(text)}': no host")
    if parts.scheme == "tcp" and (port is None or parts.path not in ("", "/")):
        raise ValueError(f"'{redact_target(text)}': a TCP target is tcp://host:port")
    return text


def redact_target(target: str) -> str:
    """The target without its user info (a password or a token in a URL never reaches a report)."""
    try:
        parts = urlsplit(target)
    except ValueError:
        return "<unparsable target>"
    if "@" not in parts.netloc:
        return target
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class ProbeSpec(BaseModel):
    """One probe: `role` is up while ANY of `targets` answers within `timeout`, checked every
    `interval`. http(s): a 2xx or 3xx status is an answer; tcp: an accepted connection is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: str = Field(min_length=1)
    targets: list[str] = Field(min_length=1)
    interval: Duration = DEFAULT_INTERVAL
    timeout: Duration | None = None  # default: max(1s, interval)
    tls_verify: bool = True  # https: verify the server's certificate

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        return [_check_target(t) for t in value]

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if value < MIN_INTERVAL:
            raise ValueError("the interval is at least 10ms")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < MIN_INTERVAL:
            raise ValueError("the timeout is at least 10ms")
        return value

    @model_validator(mode="after")
    def _not_blank(self) -> ProbeSpec:
        if not self.role.strip():
            raise ValueError("role: a probe names the role it measures")
        return self

    @property
    def interval_seconds(self) -> float:
        return self.interval.total_seconds()

    @property
    def timeout_seconds(self) -> float:
        if self.timeout is not None:
            return self.timeout.total_seconds()
        return max(1.0, self.interval_seconds)

    @property
    def shown_targets(self) -> list[str]:
        return [redact_target(t) for t in self.targets]


def probe_ids(specs: list[ProbeSpec]) -> list[str]:
    """A stable name per probe: its role, numbered when a role has several probes."""
    seen: dict[str, int] = {}
    ids = []
    for spec in specs:
        n = seen[spec.role] = seen.get(spec.role, 0) + 1
        ids.append(spec.role if n == 1 else f"{spec.role}#{n}")
    return ids
