"""Swagger UI for /api/docs, from a package on this server: no CDN (the server may have no way
out, and a page that runs a CDN's script trusts the CDN with the session).

The files are those the `fastapi-offline` package ships (a current swagger-ui-dist build), served
as they are; the page that starts them is ours (templates/api_docs.html.j2, static/api-docs.js),
so it runs under the dashboard's Content-Security-Policy with no inline script.
"""

from __future__ import annotations

from importlib import resources

from fastapi.staticfiles import StaticFiles

SWAGGER_UI_URL = "/static/swagger-ui"
SWAGGER_UI_JS = f"{SWAGGER_UI_URL}/swagger-ui-bundle.js"
SWAGGER_UI_CSS = f"{SWAGGER_UI_URL}/swagger-ui.css"


def swagger_ui_files() -> StaticFiles:
    """The directory of swagger-ui-bundle.js and swagger-ui.css, as an app to mount."""
    shipped = resources.files("fastapi_offline") / "static"
    return StaticFiles(directory=str(shipped))
