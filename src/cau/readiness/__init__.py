"""Readiness (CAU's Test-CauSetup): one set of rules, each pass / warning / fail /
not-applicable with its impact and fix, run by `cau check` and by every run's preflight.

    model.py    RuleResult, ReadinessReport (what `cau check --output json` and the API give)
    facts.py    the read-only script run on each node and its pure parsers
    rules.py    the rules: pure functions of an Observation
    observe.py  gathers the Observation through the provider (nothing changes)
"""

from cau.readiness.model import Outcome, ReadinessReport, RuleResult
from cau.readiness.observe import observe
from cau.readiness.rules import RULES, Observation, evaluate

__all__ = ["RULES", "Observation", "Outcome", "ReadinessReport", "RuleResult", "evaluate", "observe"]
