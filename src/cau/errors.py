"""Exceptions of cau. Callers choose retry vs stop by class.

    CauError
    ├── ConfigError            bad input: cluster config, sandbox spec, plug-in arguments
    ├── NotFound               an unknown cluster, run, node, plug-in or provider
    ├── PreflightError         a run refuses to start (nothing was changed)
    ├── LockHeld               another coordinator is updating the cluster
    ├── ProviderError          the cluster provider's infrastructure failed
    │   ├── MaintenanceError   a node could not enter or leave maintenance (names what blocked)
    │   └── NodeUnreachable    a node does not answer
    ├── PluginError            a plug-in's infrastructure failed (not a per-update failure)
    └── TransportError         running a command on a node failed
        └── CommandTimeout

`ProfileError` (bad run profile) lives in `cau.domain.profile`, next to the model it validates.
"""

from __future__ import annotations


class CauError(Exception):
    """Base class. `hint` tells an operator what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CauError):
    pass


class NotFound(CauError):
    pass


class PreflightError(CauError):
    pass


class LockHeld(CauError):
    def __init__(self, message: str, *, owner: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.owner = owner


class ProviderError(CauError):
    pass


class MaintenanceError(ProviderError):
    pass


class NodeUnreachable(ProviderError):
    pass


class PluginError(CauError):
    pass


class TransportError(CauError):
    pass


class CommandTimeout(TransportError):
    pass
