"""`cau serve`: the dashboard, the REST API and the run worker, on the same store as the CLI."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer

from cau.cli import common
from cau.logfile import start_log_file


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
    allow_local_scripts: Annotated[
        bool,
        typer.Option(
            "--allow-local-scripts",
            help="Let runs on simulated (sandbox) clusters run their pre/post-update scripts on this "
            "host, as this server's user.",
        ),
    ] = False,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            metavar="ADDRESS|NETWORK",
            help="A reverse proxy (address or network, repeatable) whose X-Forwarded-For names the "
            "client; without it the header is ignored and every client is the connection's peer.",
        ),
    ] = None,
) -> None:
    """Serve the dashboard, the REST API (/api/v1) and the run worker, on the same store as the CLI.

    SIGTERM or Ctrl-C: stop accepting, abandon the runs in hand the way a second Ctrl-C of `cau run`
    does (the journal keeps them resumable: `cau run CLUSTER`), release the cluster locks."""
    import uvicorn

    from cau.web.app import create_app
    from cau.web.client_address import parse_trusted_proxies
    from cau.web.context import Settings

    try:
        proxies = parse_trusted_proxies(trusted_proxy or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--trusted-proxy") from None

    tls = ssl_certfile is not None
    if not _is_loopback(host) and not (tls or secure_cookies):
        common.console(stderr=True).print(
            f"[yellow]warning: serving plain http on {host}: tokens and session cookies cross the "
            "network in clear; use --ssl-certfile/--ssl-keyfile or a TLS proxy (--secure-cookies)[/]"
        )
    svc = common.service(ctx)
    start_log_file(svc.data_dir, f"cau serve on {host}:{port}")
    # Every cluster's secrets are masked from the start, in everything this server shows or logs.
    for cluster, problem in svc.load_all_secrets().items():
        common.console(stderr=True).print(f"[yellow]warning: cluster {cluster}: {problem}[/]")
    settings = Settings(
        secure_cookies=secure_cookies or tls,
        allow_local_scripts=allow_local_scripts,
        trusted_proxies=proxies,
    )
    app = create_app(svc, settings)
    scheme = "https" if tls else "http"
    common.console(stderr=True).print(
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
