"""How a `cau lab` command tells a failure: the way `cau` does (one line, what to do next, exit
code 1), without reaching into cau's CLI, which is not an API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from cau.errors import CauError


@contextmanager
def reported() -> Iterator[None]:
    """Turn cau's errors (LabError is one) into `error: ...` and `hint: ...` on stderr and exit 1."""
    try:
        yield
    except CauError as exc:
        # click drops the colours when stderr is not a terminal
        typer.echo(f"{typer.style('error:', fg='red', bold=True)} {exc.message}", err=True)
        if exc.hint:
            typer.echo(typer.style(f"hint: {exc.hint}", dim=True), err=True)
        raise typer.Exit(1) from None
