"""The ASGI app of `cau serve`: API, dashboard, static files, /metrics, and the run worker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import Depends, FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cau import __version__
from cau.journal.events import JournalEvent
from cau.service import Service
from cau.store.access import Principal
from cau.web import api, compliance_api, compliance_pages, errors, pages
from cau.web.auth import identify, unauthenticated, viewer
from cau.web.context import Settings, WebContext
from cau.web.device_cookie import DeviceCookies
from cau.web.errors import ApiError
from cau.web.metrics import Metrics
from cau.web.swagger import SWAGGER_UI_URL, swagger_ui_files
from cau.web.throttle import SignInThrottle
from cau.web.worker import RunWorker

# What anyone may call without signing in: the health check, signing in and out. Everything else
# under /api/v1 answers 401 to a stranger before anything else, the API's description included
# (it maps every route a caller could try).
_OPEN_API_ROUTES = frozenset(
    {
        ("GET", "/api/v1/health"),
        ("POST", "/api/v1/session"),
        ("DELETE", "/api/v1/session"),
    }
)
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    "Referrer-Policy": "same-origin",
}
# Scripts only from /static (no inline script or handler can run, so injected markup cannot act);
# style attributes stay allowed (progress bars, timeline colours). Every answer carries it, the
# OpenAPI explorer at /api/docs too (its files are served from /static/swagger-ui, its start-up
# script from /static/api-docs.js).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def build_context(svc: Service, settings: Settings | None = None) -> WebContext:
    metrics = Metrics()

    def on_event(event: JournalEvent) -> None:
        metrics.observe(event)

    return WebContext(
        svc=svc,
        access=svc.access,
        worker=RunWorker(svc, on_event),
        metrics=metrics,
        settings=settings or Settings(),
        throttle=SignInThrottle(svc.clock),
        devices=DeviceCookies(svc.access.server_key("device-cookies")),
    )


def create_app(svc: Service, settings: Settings | None = None) -> FastAPI:
    holder: dict[str, WebContext] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Shutdown: stop serving event streams, abandon runs in hand (resumable), free the store.
        ctx = holder["ctx"]
        ctx.shutting_down = True
        await ctx.worker.shutdown()

    app = FastAPI(
        title="cau",
        version=__version__,
        description="Cluster-Aware Updating for Linux clusters: REST API. Authenticate with "
        "`Authorization: Bearer <token>` (`cau token create --role viewer|operator|admin`).",
        openapi_url="/api/v1/openapi.json",
        # /api/docs is a dashboard page (pages.api_docs): signed in, under the dashboard's policy,
        # Swagger UI from this server; FastAPI's own page would load it from a CDN with an inline script.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    # The store's SQLite connection belongs to the event loop's thread: every route is async.
    ctx = build_context(svc, settings)
    holder["ctx"] = ctx
    app.state.ctx = ctx
    errors.install(app)

    # Middleware added last runs first: the security headers wrap every answer, a 401 too.
    @app.middleware("http")
    async def authenticated_first(request: Request, call_next):  # type: ignore[no-untyped-def]
        """Who is asking is settled before a body is read: a stranger gets 401 whatever the body
        holds (malformed JSON included), never a 422 that tells how the route parses input."""
        path = request.url.path
        if path.startswith("/api/v1/") and (request.method, path) not in _OPEN_API_ROUTES:
            try:
                who = identify(request)
            except ApiError as exc:
                return errors.response(exc)
            if who is None:
                return errors.response(unauthenticated())
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # type: ignore[no-untyped-def]
        response = await call_next(request)
        for key, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        # What the API and the pages answer is for the one who asked (a new token's secret,
        # runs, the audit trail): no cache, shared or the browser's, keeps it. Assets may be kept.
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        if ctx.settings.secure_cookies:  # served over https (--ssl-*, or behind a TLS proxy)
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        response.headers.setdefault("Content-Security-Policy", _CSP)
        return response

    # Pages answer errors with pages and a sign-in redirect; the API with JSON.
    page_paths = ("/api/", "/metrics", "/static/")

    @app.exception_handler(pages._SignInNeeded)
    async def _sign_in(request: Request, exc: pages._SignInNeeded) -> Response:
        return pages.page_error(request, exc)

    @app.exception_handler(ApiError)
    async def _api_or_page(request: Request, exc: ApiError) -> Response:
        if request.url.path.startswith(page_paths) or request.method != "GET":
            return errors.response(exc)
        return pages.page_error(request, exc)

    from cau.errors import CauError

    @app.exception_handler(CauError)
    async def _cau_or_page(request: Request, exc: CauError) -> Response:
        if request.url.path.startswith(page_paths) or request.method != "GET":
            return errors.response(errors.from_cau_error(exc))
        return pages.page_error(request, exc)

    app.include_router(api.router)
    app.include_router(compliance_api.router)  # /api/v1: compliance, baselines, exemptions
    app.include_router(pages.router)
    app.include_router(compliance_pages.router)  # /compliance, /baselines, /exemptions
    # Before /static: the more specific mount is matched first.
    app.mount(SWAGGER_UI_URL, swagger_ui_files(), name="swagger-ui")
    static = resources.files("cau.web") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics(_who: Principal = Depends(viewer)) -> Response:  # noqa: B008
        await ctx.metrics.refresh(ctx.svc)
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
