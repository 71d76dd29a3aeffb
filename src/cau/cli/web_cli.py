"""`cau serve` (the dashboard and REST API) and access to it: `cau token ...`, `cau user password`."""

from __future__ import annotations

import getpass
import ipaddress
import json
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cau.cli.errors import reported
from cau.config import default_data_dir
from cau.service import Service
from cau.store.access import Role

token_app = typer.Typer(help="API tokens for the REST API and the dashboard.", no_args_is_help=True)
user_app = typer.Typer(help="Names with a password, for signing in to the dashboard.", no_args_is_help=True)


def _service(ctx: typer.Context) -> Service:
    state = ctx.obj
    return Service(getattr(state, "data_dir", None) or default_data_dir(), getattr(state, "config", None))


def _operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (cli)"


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
    svc = _service(ctx)
    with reported(output == "json"):
        access = svc.access
        info, secret = access.create_token(name or role.value, role, by=_operator())
        access.audit(_operator(), "token.create", info.token_id, {"name": info.name, "role": role.value})
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
    svc = _service(ctx)
    with reported(False):
        tokens = svc.access.list_tokens()
    console = Console()
    for t in tokens:
        state = f"revoked {t.revoked:%Y-%m-%d %H:%M}" if t.revoked else "active"
        used = f"last used {t.last_used:%Y-%m-%d %H:%M}" if t.last_used else "never used"
        console.print(f"{t.token_id}  {t.name:<20} {t.role.value:<9} {state}, {used}", highlight=False)


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token by id (`cau token list`)."""
    svc = _service(ctx)
    with reported(False):
        access = svc.access
        if not access.revoke_token(token_id):
            from cau.errors import NotFound

            raise NotFound(f"no active token '{token_id}'")
        access.audit(_operator(), "token.revoke", token_id, {})
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
    svc = _service(ctx)
    with reported(False):
        access = svc.access
        access.set_password(name, role, password)
        access.audit(_operator(), "user.password", name, {"role": role.value})
    Console().print(f"password set for {name} ({role.value})")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8470,
    ssl_certfile: Annotated[Path | None, typer.Option(help="Serve https with this certificate.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's private key.")] = None,
    secure_cookies: Annotated[
        bool, typer.Option("--secure-cookies", help="Mark cookies Secure (behind a TLS proxy).")
    ] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level")] = "info",
) -> None:
    """Serve the dashboard, the REST API (/api/v1) and the run worker, on the same store as the CLI.

    SIGTERM or Ctrl-C: stop accepting, abandon the runs in hand the way a second Ctrl-C of `cau run`
    does (the journal keeps them resumable: `cau run CLUSTER`), release the cluster locks."""
    import uvicorn

    from cau.web.app import create_app
    from cau.web.context import Settings

    tls = ssl_certfile is not None
    if not _is_loopback(host) and not (tls or secure_cookies):
        Console(stderr=True).print(
            f"[yellow]warning: serving plain http on {host}: tokens and session cookies cross the "
            "network in clear; use --ssl-certfile/--ssl-keyfile or a TLS proxy (--secure-cookies)[/]"
        )
    svc = _service(ctx)
    app = create_app(svc, Settings(secure_cookies=secure_cookies or tls))
    scheme = "https" if tls else "http"
    Console(stderr=True).print(
        f"cau dashboard on {scheme}://{host}:{port}/  (API: /api/v1, docs: /api/docs; "
        "sign in with a token from `cau token create --role admin`)"
    )
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
        timeout_graceful_shutdown=3,  # event streams are closed rather than waited for
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
    svc.close()
