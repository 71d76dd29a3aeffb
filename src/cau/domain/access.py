"""Who may do what through the REST API and the dashboard: the three roles, ranked."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"  # sees everything but the audit trail and tokens
    OPERATOR = "operator"  # also previews, runs and stops
    ADMIN = "admin"  # also manages profiles, tokens, passwords; reads the audit trail

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}
