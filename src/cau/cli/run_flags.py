"""The flags of `cau run`, made from the run options themselves (`RunProfile`'s fields, with their
descriptions as help): a new option is a flag of `cau run` and an option of the API at once."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from datetime import timedelta
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import typer

from cau.cli.common import parse_value
from cau.domain.profile import PER_RUN_OPTIONS, RunProfile


def _members(annotation: Any) -> list[Any]:
    """The types an annotation allows (None aside, Annotated unwrapped)."""
    if get_origin(annotation) in (Union, UnionType):
        return [m for a in get_args(annotation) if a is not type(None) for m in _members(a)]
    if get_origin(annotation) is Annotated:
        return _members(get_args(annotation)[0])
    return [annotation]


def _flag(name: str) -> tuple[Any, Callable[[Any], Any]]:
    """A flag's type on the command line, and how its value becomes the option's value."""
    members = _members(RunProfile.model_fields[name].annotation)
    if members == [bool]:
        return bool, lambda v: v
    if members == [int]:
        return int, lambda v: v
    if len(members) == 1 and get_origin(members[0]) is list:  # e.g. node_order: "n1,n2"
        return str, lambda v: [item.strip() for item in v.split(",") if item.strip()]
    if members == [timedelta] or all(
        m is str or (isinstance(m, type) and issubclass(m, str)) for m in members
    ):
        return str, lambda v: v  # durations, names and choices: the profile checks them
    return str, parse_value  # e.g. max_parallel_nodes: a number or "auto"


def _parameter(name: str) -> inspect.Parameter:
    kind, _ = _flag(name)
    flag = "--" + name.replace("_", "-")
    info = typer.Option(flag, help=RunProfile.model_fields[name].description)
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, info]
    )


def with_run_option_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one flag per run option; it receives them as `options` (name -> value, only
    the flags given), ready for `build_profile`'s overrides."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "options"]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        options: dict[str, Any] = {}
        for name in PER_RUN_OPTIONS:
            value = kwargs.pop(name, None)
            if value is not None:
                options[name] = _flag(name)[1](value)
        return command(*args, options=options, **kwargs)

    wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=own + [_parameter(n) for n in PER_RUN_OPTIONS]
    )
    return wrapper
