"""Signing in, for both the API (`POST /api/v1/session`) and the sign-in form (`POST /login`):
check a token or a name and password under the throttle's rule (`cau.web.throttle`), set the
session cookie, and for a password sign-in the browser's device cookie for that account."""

from __future__ import annotations

import math

from fastapi import Request, Response

from cau.store.access import Principal
from cau.web.auth import SESSION_COOKIE, context
from cau.web.client_address import client_address
from cau.web.device_cookie import LIFETIME
from cau.web.errors import ApiError
from cau.web.models import SignIn
from cau.web.throttle import Attempt, Limit, Refusal


def _refused(refusal: Refusal, attempt: Attempt) -> ApiError:
    minutes = max(1, math.ceil(refusal.retry_after / 60))
    wait = f"try again in {minutes} minute{'s' if minutes > 1 else ''}"
    elsewhere = f"or from a browser that has signed in as '{attempt.account}' before, or with an API token"
    message = {
        Limit.DEVICE: f"too many failed sign-ins as '{attempt.account}' from this browser; {wait}",
        Limit.PAIR: f"too many failed sign-ins as '{attempt.account}' from here; {wait}, {elsewhere}",
        Limit.ACCOUNT: f"too many failed sign-ins as '{attempt.account}' from browsers it has not "
        f"signed in from before; {wait}, {elsewhere}",
        Limit.ADDRESS: f"too many failed sign-ins from your address ({attempt.address}); {wait}, {elsewhere}",
    }[refusal.limit]
    return ApiError(
        429, "too_many_attempts", message, headers={"Retry-After": str(math.ceil(refusal.retry_after))}
    )


def sign_in(request: Request, response: Response, body: SignIn) -> Principal:
    """The principal the credential proves, with a new session cookie set on `response`.

    Nothing here awaits: a throttle check, the password check and the count of its failure happen
    with no other request in between."""
    ctx = context(request)
    address = client_address(request, ctx.settings.trusted_proxies)
    secure = ctx.settings.secure_cookies or request.url.scheme == "https"
    attempt: Attempt | None = None
    if body.token:
        who = ctx.access.check_token(body.token.strip())
        if who is None:
            if ctx.throttle.token_failed(address):
                ctx.access.audit("token", "signin.failed", "dashboard", {"client": address})
            raise ApiError(401, "bad_credentials", "unknown token, or a revoked one")
    elif body.name and body.password:
        cookie = request.cookies.get(ctx.devices.name(body.name))
        device = ctx.devices.verify(body.name, cookie, ctx.throttle.clock.now())
        attempt = Attempt(body.name, address, device)
        refusal = ctx.throttle.refusal(attempt)
        if refusal is not None:  # before the password is checked: a throttled guess learns nothing
            raise _refused(refusal, attempt)
        who = ctx.access.check_password(body.name, body.password)
        if who is None:
            for limit in ctx.throttle.failed(attempt):
                detail = {"client": address, "limit": limit.value}
                ctx.access.audit(body.name, "signin.throttled", "dashboard", detail)
            ctx.access.audit(body.name, "signin.failed", "dashboard", {"client": address})
            raise ApiError(401, "bad_credentials", "wrong name or password")
    else:
        raise ApiError(
            422,
            "invalid_input",
            "give a token, or a name and a password",
            fields=[{"field": "token", "message": "required (or name and password)"}],
        )
    cookie_value, session = ctx.access.create_session(who, hours=ctx.settings.session_hours, client=address)
    response.set_cookie(
        SESSION_COOKIE,
        cookie_value,
        max_age=int(ctx.settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=secure,
        path="/",
    )
    if attempt is not None:  # this browser has now proven it knows the account's password
        response.set_cookie(
            ctx.devices.name(attempt.account),
            ctx.devices.issue(attempt.account, ctx.throttle.clock.now(), attempt.device),
            max_age=int(LIFETIME.total_seconds()),
            httponly=True,
            samesite="strict",
            secure=secure,
            path="/",
        )
    ctx.access.audit(
        who.name, "signin", "dashboard", {"via": "token" if body.token else "password", "client": address}
    )
    return session
