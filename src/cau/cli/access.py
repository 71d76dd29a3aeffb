"""`cau token`, `cau user` and `cau session`: who may use the REST API and the dashboard, and who
is signed in to it. Every change goes through the service (cau.administration), which audits it."""

from __future__ import annotations

import getpass
import json
import sys
from typing import Annotated

import typer
from rich.console import Console

from cau.cli import common
from cau.cli.common import OutputFormat, OutputOpt
from cau.cli.errors import reported
from cau.domain.access import Role

token_app = typer.Typer(help="API tokens for the REST API and the dashboard.", no_args_is_help=True)
user_app = typer.Typer(help="Names with a password, for signing in to the dashboard.", no_args_is_help=True)
session_app = typer.Typer(help="Browser sessions signed in to the dashboard.", no_args_is_help=True)


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option("--role", help="viewer, operator or admin")],
    name: Annotated[
        str | None, typer.Option("--name", help="Who or what uses it (default: the role)")
    ] = None,
    output: Annotated[str, typer.Option("--output", help="text or json")] = "text",
) -> None:
    """Create an API token. Its secret is printed this once; only a hash of it is kept."""
    svc = common.service(ctx)
    with reported(output == "json"):
        info, secret = svc.admin.create_token(name or role.value, role, by=common.operator())
    if output == "json":
        sys.stdout.write(
            json.dumps({"token_id": info.token_id, "name": info.name, "role": role.value, "token": secret})
            + "\n"
        )
        return
    Console(stderr=True).print(
        f"[dim]token {info.token_id} ({info.name}, {role.value}); shown once, keep it safe:[/]"
    )
    sys.stdout.write(secret + "\n")


@token_app.command("list")
def token_list(ctx: typer.Context) -> None:
    """The tokens (never their secrets)."""
    svc = common.service(ctx)
    with reported(False):
        tokens = svc.admin.list_tokens()
    console = Console()
    for t in tokens:
        state = f"revoked {t.revoked:%Y-%m-%d %H:%M}" if t.revoked else "active"
        used = f"last used {t.last_used:%Y-%m-%d %H:%M}" if t.last_used else "never used"
        console.print(f"{t.token_id}  {t.name:<20} {t.role.value:<9} {state}, {used}", highlight=False)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token by id (`cau token list`)."""
    svc = common.service(ctx)
    with reported(False):
        svc.admin.revoke_token(token_id, by=common.operator())
    Console().print(f"token {token_id} revoked")


@user_app.command("password")
def user_password(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument()],
    role: Annotated[Role, typer.Option("--role")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Set a name's password (and role) for browser sign-in. Asks for it, or reads stdin."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise typer.BadParameter("the passwords differ")
    if len(password) < 12:
        raise typer.BadParameter("a password needs at least 12 characters")
    svc = common.service(ctx)
    with reported(False):
        svc.admin.set_password(name, role, password, by=common.operator())
    Console().print(f"password set for {name} ({role.value})")


@session_app.command("list")
def session_list(ctx: typer.Context, output: OutputOpt = OutputFormat.TEXT) -> None:
    """The browser sessions in force: who, role, how and when signed in, from where (never a secret)."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        sessions = svc.admin.list_sessions()
    if json_out:
        common.print_json(sessions)
        return
    console = common.console()
    if not sessions:
        console.print("No one is signed in to the dashboard.")
    for s in sessions:
        via = f"token {s.token_id}" if s.token_id else s.via
        console.print(
            f"{s.handle}  {s.name:<20} {s.role.value:<9} via {via}, signed in {s.signed_in:%Y-%m-%d %H:%M}"
            f" from {s.client or 'an unrecorded address'}, expires {s.expires:%Y-%m-%d %H:%M} UTC"
        )


@session_app.command("end")
def session_end(
    ctx: typer.Context,
    handle: Annotated[str, typer.Argument(help="The session's handle (`cau session list`).")],
    output: OutputOpt = OutputFormat.TEXT,
) -> None:
    """End anyone's browser session: its next request is refused (401) and must sign in again."""
    json_out = output is OutputFormat.JSON
    svc = common.service(ctx)
    with reported(json_out):
        ended = svc.admin.end_session(handle, by=common.operator())
    if json_out:
        common.print_json(ended)
        return
    common.console().print(f"session {ended.handle} of {ended.name} ({ended.role.value}) ended")
