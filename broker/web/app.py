"""The HTTP side (read-only for now): ``/healthz``. The auditors' API and UI grow here."""

from __future__ import annotations

from aiohttp import web

from broker.session.manager import SessionManager
from broker.tunnels import TunnelRegistry

MANAGER = web.AppKey("manager", SessionManager)
TUNNELS = web.AppKey("tunnels", TunnelRegistry)
HELPER = web.AppKey("helper", bytes)


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    return web.json_response(
        {"status": "ok", "live_sessions": len(manager.live()), "tunnels": len(request.app[TUNNELS])}
    )


async def helper(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[HELPER],
        content_type="application/octet-stream",
        headers={"Content-Disposition": 'attachment; filename="helper"'},
    )


def create_app(
    manager: SessionManager, tunnels: TunnelRegistry, helper_app: bytes
) -> web.Application:
    app = web.Application()
    app[MANAGER] = manager
    app[TUNNELS] = tunnels
    app[HELPER] = helper_app
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/helper", helper)
    return app
