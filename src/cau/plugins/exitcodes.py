"""The installer exit-code contract shared by the `command` and `hotfix` plug-ins (CAU's hotfix
plug-in classes). An exit code not listed in any class is a failure that needs no restart."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, model_validator

from cau.domain.updates import UpdateOutcome


class ExitClass(StrEnum):
    SUCCESS = "success"
    SUCCESS_RESTART_NEEDED = "success-restart-needed"
    FAILED_RESTART_NEEDED = "failed-restart-needed"
    ALREADY_INSTALLED = "already-installed"
    NOT_APPLICABLE = "not-applicable"
    FAILED = "failed"

    @property
    def outcome(self) -> UpdateOutcome:
        failed = self in (ExitClass.FAILED, ExitClass.FAILED_RESTART_NEEDED)
        return UpdateOutcome.FAILED if failed else UpdateOutcome.SUCCEEDED

    @property
    def restart_required(self) -> bool:
        return self in (ExitClass.SUCCESS_RESTART_NEEDED, ExitClass.FAILED_RESTART_NEEDED)


class ExitCodes(BaseModel):
    """Which exit codes mean what. Only 0 is success unless configured: CAU's Windows codes
    (3010 = success, restart needed) cannot occur here, where an exit status is 0..255."""

    model_config = ConfigDict(extra="forbid")

    success: list[int] = [0]
    success_restart_needed: list[int] = []
    failed_restart_needed: list[int] = []
    already_installed: list[int] = []
    not_applicable: list[int] = []

    @model_validator(mode="after")
    def _disjoint(self) -> ExitCodes:
        seen: dict[int, str] = {}
        for name in (
            "success",
            "success_restart_needed",
            "failed_restart_needed",
            "already_installed",
            "not_applicable",
        ):
            for code in getattr(self, name):
                if not 0 <= code <= 255:
                    raise ValueError(f"{name}: exit code {code} cannot happen (an exit status is 0..255)")
                if code in seen:
                    raise ValueError(f"exit code {code} is in both {seen[code]} and {name}")
                seen[code] = name
        return self

    def classify(self, code: int) -> ExitClass:
        for cls, codes in (
            (ExitClass.SUCCESS, self.success),
            (ExitClass.SUCCESS_RESTART_NEEDED, self.success_restart_needed),
            (ExitClass.FAILED_RESTART_NEEDED, self.failed_restart_needed),
            (ExitClass.ALREADY_INSTALLED, self.already_installed),
            (ExitClass.NOT_APPLICABLE, self.not_applicable),
        ):
            if code in codes:
                return cls
        return ExitClass.FAILED
