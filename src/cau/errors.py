"""Exceptions of cau: one closed tree. Callers decide by class: `retryable` says whether trying
the same thing again can help (a timeout, a lost connection: yes; a changed host key, a refused
login, output cau cannot read: no, and the engine fails the node at once instead of retrying).

    CauError                       retryable = False unless said
    ├── ConfigError                bad input: cluster config, sandbox spec, plug-in arguments
    │   └── ProfileError           a run profile (file plus overrides) that cannot be used
    ├── NotFound                   an unknown cluster, run, node, plug-in or provider
    ├── PreflightError             a run refuses to start (nothing was changed)
    ├── LockHeld                   another coordinator is updating the cluster
    ├── LockLost                   this coordinator's lease was taken over: it stops acting
    ├── StoreUnavailable           the store cannot be reached or has no quorum     retryable
    ├── ProviderError              the cluster provider's infrastructure failed      retryable
    │   ├── MaintenanceError       a node could not enter or leave maintenance      retryable
    │   └── NodeUnreachable        a node does not answer                           retryable
    ├── PluginError                a plug-in's infrastructure failed                retryable
    │   └── PluginOutputError      a command's output the plug-in cannot read (names the command
    │                              and the node): an unknown version or a bug, not bad luck
    ├── OutputError                output that has not the documented shape (pure parsers:
    │                              AptParseError, DnfParseError; callers say where it came from)
    └── TransportError             running a command on a node failed               retryable
        ├── CommandTimeout                                                          retryable
        ├── HostKeyError           unknown or changed host key: refused, says how to trust it
        └── AuthError              the node refused the login
"""

from __future__ import annotations

from typing import ClassVar


class CauError(Exception):
    """Base class. `hint` tells an operator what to do about it."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(CauError):
    pass


class ProfileError(ConfigError):
    """A profile (file plus overrides) that cannot be used. `problems` are 'key: message' lines."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class NotFound(CauError):
    pass


class NameTaken(CauError):
    """A name that must be unique is in use (an active API token's, ...)."""


class PreflightError(CauError):
    pass


class LockHeld(CauError):
    def __init__(self, message: str, *, owner: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.owner = owner


class LockLost(CauError):
    pass


class StoreUnavailable(CauError):
    """The store (a replicated one, over the network) cannot answer now: none of its endpoints
    is reachable, or too few of its members are up to agree. The message names the endpoints."""

    retryable = True


class ProviderError(CauError):
    retryable = True


class MaintenanceError(ProviderError):
    pass


class NodeUnreachable(ProviderError):
    pass


class PluginError(CauError):
    retryable = True


class PluginOutputError(PluginError):
    retryable = False


class OutputError(CauError):
    pass


class TransportError(CauError):
    retryable = True


class CommandTimeout(TransportError):
    pass


class HostKeyError(TransportError):
    retryable = False


class AuthError(TransportError):
    retryable = False


def is_retryable(exc: BaseException) -> bool:
    """Whether trying again can help: cau's own errors say; anything else is a bug (no)."""
    return isinstance(exc, CauError) and exc.retryable
