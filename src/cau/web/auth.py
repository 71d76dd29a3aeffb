"""Who is asking, and may they: API tokens (Authorization: Bearer), browser sessions (a cookie
plus a CSRF token on every mutating request), and the three roles.

401 means "we do not know who you are" (no, bad or revoked credentials); 403 means "we do, and
you may not" (the role is too low, or a browser request came without its CSRF token).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from fastapi import Request

from cau.domain.access import Role
from cau.store.access import Principal
from cau.web.context import WebContext
from cau.web.errors import ApiError

SESSION_COOKIE = "cau_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def context(request: Request) -> WebContext:
    ctx = request.app.state.ctx
    assert isinstance(ctx, WebContext)
    return ctx


def unauthenticated() -> ApiError:
    return ApiError(401, "unauthenticated", "sign in, or send an API token: Authorization: Bearer cau_...")


def identify(request: Request) -> Principal | None:
    """The principal behind a request, or None. A bad bearer token is an error, not anonymity.
    Asked once per request (the app asks before any body is read, the routes' roles after)."""
    if hasattr(request.state, "who"):
        known: Principal | None = request.state.who
        return known
    who = _identify(request)
    request.state.who = who
    return who


def _identify(request: Request) -> Principal | None:
    access = context(request).access
    header = request.headers.get("authorization")
    if header:
        scheme, _, credential = header.partition(" ")
        who = access.check_token(credential.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise ApiError(401, "invalid_token", "the API token is unknown or revoked")
        return who
    cookie = request.cookies.get(SESSION_COOKIE)
    return access.check_session(cookie) if cookie else None


async def _check_csrf(request: Request, who: Principal) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not sent or who.csrf is None or not hmac.compare_digest(sent, who.csrf):
        raise ApiError(403, "csrf_failed", "missing or wrong CSRF token; reload the page and try again")


def require(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold at least `role` (and, from a browser, the CSRF token)."""

    async def dependency(request: Request) -> Principal:
        who = identify(request)
        if who is None:
            raise unauthenticated()
        if not who.role.allows(role):
            raise ApiError(
                403, "forbidden", f"this needs the {role.value} role; {who.name} is {who.role.value}"
            )
        if who.via == "session" and request.method not in _SAFE_METHODS:
            await _check_csrf(request, who)
        return who

    return dependency


viewer = require(Role.VIEWER)
operator = require(Role.OPERATOR)
admin = require(Role.ADMIN)
