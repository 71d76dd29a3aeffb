"""What every command module of the CLI shares: output formats, the common arguments, the
service, the console, JSON output and who the operator is."""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from cau.config import default_data_dir
from cau.errors import ConfigError
from cau.service import Service


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


@dataclass
class State:
    data_dir: Path
    config: Path | None

    def service(self) -> Service:
        return Service(self.data_dir, self.config)


OutputOpt = Annotated[OutputFormat, typer.Option("--output", help="text, or json for scripts.")]
ClusterArg = Annotated[str, typer.Argument(help="The cluster (`sandbox` is built in).")]


def service(ctx: typer.Context) -> Service:
    """The service for this invocation (the global --data-dir and --config)."""
    state = ctx.obj
    if isinstance(state, State):
        return state.service()
    return Service(default_data_dir(), None)


def console(*, stderr: bool = False) -> Console:
    """A console; when output goes to a file or pipe, wide enough that tables are not squeezed."""
    out = Console(stderr=stderr, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, highlight=False, width=140)
    return out


def print_json(data: BaseModel | list[Any] | dict[str, Any]) -> None:
    """A view as JSON: the same document the API gives for it."""

    def plain(value: Any) -> Any:
        return value.model_dump(mode="json") if isinstance(value, BaseModel) else value

    doc = [plain(d) for d in data] if isinstance(data, list) else plain(data)
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def operator() -> str:
    """Who runs this command, as recorded in journals and the audit trail: `user@host (cli)`
    (tokens are `token:NAME`, dashboard users their name: no principal can pass for another)."""
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


def parse_value(text: str) -> Any:
    """A flag value as TOML would read it (numbers, booleans, lists), else the plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def plugin_overrides(plugins: list[str] | None, plugin_args: list[str] | None) -> list[dict[str, Any]] | None:
    """--plugin NAME (repeated, in order) and --plugin-arg PLUGIN.KEY=VALUE, as a profile's plug-ins."""
    if not plugins and not plugin_args:
        return None
    specs: dict[str, dict[str, Any]] = {name: {} for name in plugins or []}
    for item in plugin_args or []:
        target, sep, value = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not key:
            raise ConfigError(
                f"--plugin-arg '{item}': expected PLUGIN.KEY=VALUE, e.g. apt.exclude=[\"linux-*\"]"
            )
        specs.setdefault(name, {})[key] = parse_value(value)
    return [{"name": name, "args": args} for name, args in specs.items()]


PluginOpt = Annotated[list[str] | None, typer.Option("--plugin", help="Plug-in to use (repeat, in order).")]
PluginArgOpt = Annotated[list[str] | None, typer.Option("--plugin-arg", help="PLUGIN.KEY=VALUE")]
ProfileOpt = Annotated[Path | None, typer.Option("--profile", help="An Updating Run Profile (TOML).")]
