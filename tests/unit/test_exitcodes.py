"""The installer exit-code contract."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cau.domain.updates import UpdateOutcome
from cau.plugins.exitcodes import ExitClass, ExitCodes


def test_classes_outcomes_and_restarts() -> None:
    codes = ExitCodes(
        success_restart_needed=[100], failed_restart_needed=[101], already_installed=[17], not_applicable=[18]
    )
    assert codes.classify(0) is ExitClass.SUCCESS
    assert codes.classify(100).restart_required and codes.classify(100).outcome is UpdateOutcome.SUCCEEDED
    assert codes.classify(101).restart_required and codes.classify(101).outcome is UpdateOutcome.FAILED
    assert codes.classify(17).outcome is UpdateOutcome.SUCCEEDED and not codes.classify(17).restart_required
    assert codes.classify(18).outcome is UpdateOutcome.SUCCEEDED
    other = codes.classify(5)  # any other code: failed, no restart
    assert other is ExitClass.FAILED and not other.restart_required


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"success_restart_needed": [3010]}, "cannot happen"), ({"not_applicable": [0]}, "both success and")],
)
def test_bad_contracts_are_refused(kwargs: dict[str, list[int]], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExitCodes(**kwargs)
