"""Health gates and alert silences: what a cluster's configuration or a run profile declares.

A **health gate** is a check that must be green before a node is drained (its admission), after
a node returns (after its restart, maintenance exit and failback, before the run moves on), and
that is watched while the run goes on: a red gate holds the next admission. Each gate has

    name        unique among the run's gates; named in the journal, the report and a pause
    timeout     how long a wait for this gate may last; past it the run pauses
                (HealthGateTimeout, with the gate's name and its last answer; `cau run` resumes)
    interval    how often it is evaluated while someone waits for it, or while the run watches it
    stable_for  how long it must have been seen green, without a red in between, before the run
                moves on (a storage rebuild, a replica catching up). A wait after a node's return
                counts it from the return at the earliest: an answer cau saw before is not enough.

and one of these kinds:

    command     a shell command, on the node (`on = "node"`, through the provider's session, as
                the pre/post-update scripts) or on the coordinator (`on = "coordinator"`, a local
                subprocess); green when it exits 0. It runs like a script: over the API it comes
                only from stored profiles, which only admins write.
    http        GET `url`; green when the status is one of `status` and, with `body_regex`, the
                body matches it (re.search).
    prometheus  a PromQL `query` evaluated with Prometheus's HTTP API (`url` + /api/v1/query).
                expect = "empty"   (default) green when the result has no series: write the query
                                   as the condition that is wrong, e.g. `node_ok{node="{node}"} == 0`
                expect = "nonzero" green when the result has at least one sample and every sample
                                   is a number other than 0 (NaN is not), e.g. `up{job="db"}`
                A scalar result counts as one sample; an error or no answer is red.
    cluster-health  the provider's own health report (Pacemaker: failed resources, unclean nodes,
                no quorum...; cau.ports.ReportsHealth), as a gate that holds and pauses instead of
                failing the next node (the built-in check before each drain stays as it is).

`{node}` in a command, URL, body regex or query makes a gate **per node**: at a node's admission
and return it is evaluated for that node (a command on the node is always per node); after a node
returned, its per-node gates are watched like the cluster-wide ones for the rest of the run.
Secrets: `bearer_token_secret` names one of the cluster's secrets (cau.secrets), sent as
`Authorization: Bearer ...`; a command gets the cluster's secrets as environment variables, as
the scripts do. No value is ever written into a gate.

An **Alertmanager silence** per node while it is in maintenance (`[clusters.NAME.alertmanager]`,
AlertmanagerSpec): created when the node is admitted to maintenance, expired once it is back and
its after-return gates are green; bounded by `endsAt` in any case.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cau.domain.durations import Duration

NODE = "{node}"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _http_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"'{value}': {what} is an http:// or https:// URL")
    if "@" in parts.netloc:
        raise ValueError(
            f"{what}: no user or password in the URL (name a cluster secret in bearer_token_secret)"
        )
    return value


class _Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Unique among the run's gates: named in the journal and a pause.")
    timeout: Duration = Field(
        timedelta(minutes=30), description="How long a wait for the gate may last before the run pauses."
    )
    interval: Duration = Field(timedelta(seconds=15), description="How often it is evaluated.")
    stable_for: Duration = Field(
        timedelta(0), description="How long it must be seen green before the run moves on."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"'{value}': a gate's name is letters, digits and _.:- (at most 64)")
        return value

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: timedelta) -> timedelta:
        if value < timedelta(milliseconds=100):
            raise ValueError("the interval is at least 100ms")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("the timeout must be longer than 0")
        return value

    @model_validator(mode="after")
    def _stable_within_timeout(self) -> _Gate:
        if self.stable_for >= self.timeout:
            raise ValueError(
                f"gate {self.name}: stable_for ({self.stable_for}) must be shorter than its timeout "
                f"({self.timeout}), or no wait could ever pass"
            )
        return self

    def texts(self) -> list[str]:
        """The texts `{node}` is substituted in."""
        return []

    @property
    def per_node(self) -> bool:
        return any(NODE in t for t in self.texts())

    @property
    def runs_commands(self) -> bool:
        return False


class CommandGate(_Gate):
    kind: Literal["command"] = "command"
    command: str = Field(min_length=1, description="Shell command; green when it exits 0.")
    on: Literal["node", "coordinator"] = Field("node", description="Where the command runs.")
    command_timeout: Duration = Field(
        timedelta(seconds=60), description="How long one evaluation may take (then it is red)."
    )

    def texts(self) -> list[str]:
        return [self.command]

    @property
    def per_node(self) -> bool:
        return self.on == "node" or super().per_node

    @property
    def runs_commands(self) -> bool:
        return True


class _HttpLike(_Gate):
    url: str
    bearer_token_secret: str | None = Field(
        None, description="The name of a cluster secret sent as a bearer token."
    )
    tls_verify: bool = True
    request_timeout: Duration = Field(timedelta(seconds=10), description="Per request.")

    @field_validator("bearer_token_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_NAME.match(value):
            raise ValueError(f"'{value}' is not a secret's name (the name, never the value)")
        return value


class HttpGate(_HttpLike):
    kind: Literal["http"] = "http"
    status: list[int] = Field([200], min_length=1, description="Status codes that are green.")
    body_regex: str | None = Field(None, description="The body must match it (re.search).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url")

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value.replace(NODE, "node"))
            except re.error as exc:
                raise ValueError(f"body_regex: {exc}") from None
        return value

    def texts(self) -> list[str]:
        return [self.url, self.body_regex or ""]


class PrometheusGate(_HttpLike):
    kind: Literal["prometheus"] = "prometheus"
    query: str = Field(min_length=1, description="PromQL, evaluated at the time of each check.")
    expect: Literal["empty", "nonzero"] = Field(
        "empty", description="empty: green when no series; nonzero: every sample non-zero."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url (Prometheus's base URL)").rstrip("/")

    def texts(self) -> list[str]:
        return [self.query]


class ClusterHealthGate(_Gate):
    kind: Literal["cluster-health"] = "cluster-health"


class ProbeGate(_Gate):
    """A role's availability probe (the cluster's `[[probes]]` of that role), checked as a gate:
    green while the role's service answers. After a node's return it holds the run until the
    roles failed back really serve again, not only until the cluster manager says they started."""

    kind: Literal["probe"] = "probe"
    probe: str = Field(min_length=1, description="The role of one of the cluster's [[probes]].")


GateSpec = Annotated[
    CommandGate | HttpGate | PrometheusGate | ClusterHealthGate | ProbeGate, Field(discriminator="kind")
]


def check_unique(gates: list[GateSpec]) -> list[GateSpec]:
    names = [g.name for g in gates]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"gate named twice: {', '.join(dupes)}")
    return gates


def substitute(text: str, node: str | None) -> str:
    return text.replace(NODE, node) if node is not None else text


class AlertmanagerSpec(BaseModel):
    """`[clusters.NAME.alertmanager]`: a silence per node while cau holds it in maintenance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(description="Alertmanager's base URL, e.g. http://alertmanager:9093")
    # label = value, exact match; `{node}` is the node's name: e.g. { instance = "{node}:9100" }
    matchers: dict[str, str] = Field(min_length=1)
    # The silence's end, as a last net should cau never expire it (a coordinator lost for good).
    # Default: twice the run's reboot_timeout, at least 30 minutes.
    duration: Duration | None = None
    comment: str = "maintenance by cau"
    created_by: str = "cau"
    bearer_token_secret: str | None = None
    tls_verify: bool = True
    request_timeout: Duration = timedelta(seconds=10)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value, "url").rstrip("/")

    @field_validator("matchers")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for label, text in value.items():
            if not _LABEL.match(label):
                raise ValueError(f"'{label}' is not a Prometheus label name")
            if not text:
                raise ValueError(f"matcher {label}: an empty value would match alerts without the label")
        return value

    @field_validator("bearer_token_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not _SECRET_NAME.match(value):
            raise ValueError(f"'{value}' is not a secret's name (the name, never the value)")
        return value

    def ends_after(self, reboot_timeout: timedelta) -> timedelta:
        if self.duration is not None:
            return self.duration
        return max(reboot_timeout * 2, timedelta(minutes=30))
