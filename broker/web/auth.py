"""The middlewares every HTTP request passes: who is asking (token or login cookie), CSRF for
changes made from a browser, and the security headers (a strict Content-Security-Policy)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from broker import credentials as access
from broker.web.deps import DEPS, PRINCIPAL

COOKIE = "assist_login"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; "
    "img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: the largest request body the HTTP server reads (aiohttp's client_max_size)
MAX_REQUEST = 1024**2


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Find the principal (absent: anonymous; each route decides what that may do)."""
    deps = request.app[DEPS]
    if request.path == "/metrics":
        return await handler(request)  # its own token (metrics_token), not an account's
    header = request.headers.get("Authorization", "").strip()
    cookie = request.cookies.get(COOKIE)
    if header:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return _json_error(401, "Authorization must be: Bearer TOKEN")
        secret = secret.strip()
        async with deps.store.read() as db:
            principal = await access.token_principal(db, secret)
        if principal is None:
            deps.metrics.auth_failures.labels("api").inc()
            return _json_error(401, "This API token is not valid (unknown, expired or revoked).")
        request[PRINCIPAL] = principal
        if principal.stale:  # a write at most once a minute per token, not per request
            async with deps.store.begin() as db:
                await access.touch_token(db, secret)
    elif cookie:
        async with deps.store.read() as db:
            principal = await access.login_principal(db, cookie)
        if principal is not None:
            request[PRINCIPAL] = principal
            if request.method not in SAFE_METHODS and not await _csrf_ok(request):
                return _json_error(403, "Missing or wrong CSRF token; reload the page.")
    return await handler(request)


async def _csrf_ok(request: web.Request) -> bool:
    principal = request[PRINCIPAL]
    offered = request.headers.get(CSRF_HEADER)
    if offered is None and request.content_type == "application/x-www-form-urlencoded":
        offered = str((await request.post()).get("csrf_token", "")) or None
    return access.csrf_ok(principal, offered)


@web.middleware
async def body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request's body arrives within ``http_body_timeout`` or the request ends with 408: a
    client that announces a body and sends it a byte at a time holds nothing for long. (The
    headers are bounded by the server's keep-alive timer, see broker.app.)"""
    if request.body_exists:
        try:
            async with asyncio.timeout(request.app[DEPS].settings.http_body_timeout):
                await request.read()
        except TimeoutError:
            response = _json_error(408, "The request's body did not arrive in time.")
            response.force_close()
            return response
        except web.HTTPRequestEntityTooLarge:  # over client_max_size: said in JSON
            return _json_error(413, f"The request's body may be at most {MAX_REQUEST} bytes.")
    return await handler(request)


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response carries them: pages, API answers, and also redirects and errors raised
    as exceptions (404, 302 ...), which pass a middleware by raising."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _secure(request, exc)
        raise
    _secure(request, response)
    return response


def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if request.path.startswith(("/api/", "/login", "/tickets", "/sessions", "/account")):
        response.headers.setdefault("Cache-Control", "no-store")
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


def set_login_cookie(response: web.StreamResponse, value: str, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=int(access.LOGIN_LIFETIME.total_seconds()),
        httponly=True,
        secure=secure,
        samesite="Strict",
        path="/",
    )
