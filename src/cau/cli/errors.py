"""Exit codes and how a failure is told: one line, what to do next, and a non-zero code."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

import typer
from rich.console import Console
from rich.markup import escape

from cau.domain.results import Status
from cau.errors import CauError, ConfigError, LockHeld, NotFound, PreflightError, ProfileError
from cau.redact import redact


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # bad input, unknown cluster, refused preflight, provider failure
    USAGE = 2  # wrong command-line usage (click's own code)
    PARTIALLY_FAILED = 3
    FAILED = 4
    CANCELED = 5
    LOCKED = 6  # another coordinator holds the cluster
    PAUSED = 7  # the run paused on an unexpected error; `cau run` resumes it
    INTERRUPTED = 130


STATUS_EXIT = {
    Status.SUCCEEDED: Exit.OK,
    Status.PARTIALLY_FAILED: Exit.PARTIALLY_FAILED,
    Status.FAILED: Exit.FAILED,
    Status.CANCELED: Exit.CANCELED,
}

_CODES = {
    ProfileError: "invalid_profile",
    ConfigError: "invalid_config",
    NotFound: "not_found",
    PreflightError: "preflight_refused",
    LockHeld: "cluster_locked",
}


def error_code(exc: Exception) -> str:
    for cls, code in _CODES.items():
        if isinstance(exc, cls):
            return code
    return "error"


def fail(
    message: str,
    *,
    hint: str | None = None,
    code: str = "error",
    exit_code: int = Exit.ERROR,
    json_output: bool = False,
) -> typer.Exit:
    # Error texts often quote what went wrong (a command, a URL): mask any secret they hold.
    message, hint = redact(message), (redact(hint) if hint else hint)
    if json_output:
        payload = {"error": {"code": code, "message": message, "hint": hint}}
        sys.stdout.write(json.dumps(payload) + "\n")
    else:
        err = Console(stderr=True, highlight=False, soft_wrap=True)
        err.print(f"[bold red]error:[/] {escape(message)}", markup=True, emoji=False)
        if hint:
            err.print(f"[dim]hint: {escape(hint)}[/]", markup=True, emoji=False)
    return typer.Exit(exit_code)


@contextmanager
def reported(json_output: bool = False) -> Iterator[None]:
    """Turn cau's errors into one line (or a JSON error object) and an exit code."""
    try:
        yield
    except ProfileError as exc:
        lines = "\n  ".join(exc.problems)
        raise fail(
            f"{exc.source}: invalid profile:\n  {lines}" if len(exc.problems) > 1 else str(exc),
            hint="nothing was started",
            code="invalid_profile",
            json_output=json_output,
        ) from None
    except LockHeld as exc:
        raise fail(
            exc.message, hint=exc.hint, code="cluster_locked", exit_code=Exit.LOCKED, json_output=json_output
        ) from None
    except CauError as exc:
        raise fail(exc.message, hint=exc.hint, code=error_code(exc), json_output=json_output) from None
