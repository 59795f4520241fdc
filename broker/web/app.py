"""The HTTP side: ``/healthz``, ``/metrics``, ``/helper``, the API under ``/api/v1`` (described
by ``/api/v1/openapi.json``) and the auditors' web UI. Every route is read-only or goes through
the same services as the command line; each change is audited."""

from __future__ import annotations

import hmac
from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from broker.web import api_accounts, api_evidence, api_sessions, api_tickets, ui
from broker.web.api import PREFIX, Api
from broker.web.auth import MAX_REQUEST, authenticate, body_in_time, security_headers
from broker.web.deps import DEPS, Deps
from broker.web.helper_download import FILE_NAME

APIS = (api_tickets.api, api_sessions.api, api_evidence.api, api_accounts.api)


def all_operations() -> Api:
    merged = Api()
    for part in APIS:
        merged.operations += part.operations
    return merged


def broker_version() -> str:
    try:
        return version("assist-broker")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0"


OPENAPI = web.AppKey("openapi", dict)


async def healthz(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    return web.json_response(
        {"status": "ok", "live_sessions": len(deps.manager.live()), "tunnels": len(deps.tunnels)}
    )


async def metrics(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    wanted = deps.settings.metrics_token
    if wanted:  # a scraper's token, compared in constant time
        offered = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(offered.encode(), wanted.encode()):
            return web.json_response(
                {"error": "/metrics needs Authorization: Bearer <metrics_token>", "status": 401},
                status=401,
            )
    body = deps.metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def helper(request: web.Request) -> web.Response:
    return web.Response(
        body=await request.app[DEPS].helper_app.body(),
        content_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{FILE_NAME}"'},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


def create_app(deps: Deps) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, body_in_time, authenticate], client_max_size=MAX_REQUEST
    )
    app[DEPS] = deps
    operations = all_operations()
    app[OPENAPI] = operations.document(broker_version())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/helper", helper)
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    operations.install(app)
    ui.install(app)
    return app
