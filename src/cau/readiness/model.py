"""What a readiness check answers (CAU's Test-CauSetup): one result per rule and finding, each
with what it means for a run (impact) and what to do (fix), naming the node(s).

Outcomes: `pass`, `warning` (a run starts; the warning is journaled in it), `fail` (a run is
refused, nothing changed) and `not-applicable` (the rule does not concern this cluster: an apt
rule on a dnf cluster, a node rule on the simulated sandbox, the clustered role's rules when no
role is set). Not-applicable is an outcome of its own rather than a pass with a note, so that a
script reading the JSON never takes an unchecked rule for a checked one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field

READINESS_SCHEMA_VERSION = 1


class Outcome(StrEnum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"


class RuleResult(BaseModel):
    """One rule's finding: a problem on some node(s) (or on the cluster), or its pass."""

    rule: str = Field(description="The rule's stable id, e.g. no-automatic-updates")
    title: str = Field(description="What the rule asks for")
    outcome: Outcome
    nodes: list[str] = Field(default_factory=list, description="The node(s) concerned; empty: the cluster")
    impact: str = Field("", description="What happens to a run if this is left as it is")
    fix: str = Field("", description="What to do, where")
    detail: str = Field("", description="What was found")


class ReadinessReport(BaseModel):
    """`cau check CLUSTER`: every rule's results, in the rules' order."""

    schema_version: int = READINESS_SCHEMA_VERSION
    cluster: str
    checked_at: datetime
    results: list[RuleResult]

    def with_outcome(self, outcome: Outcome) -> list[RuleResult]:
        return [r for r in self.results if r.outcome is outcome]

    @property
    def failures(self) -> list[RuleResult]:
        return self.with_outcome(Outcome.FAIL)

    @property
    def warnings(self) -> list[RuleResult]:
        return self.with_outcome(Outcome.WARNING)

    @property
    def ready(self) -> bool:
        """No rule fails: a run may start."""
        return not self.failures
