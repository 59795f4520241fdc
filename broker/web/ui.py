"""The auditors' web UI: server-rendered pages (Jinja2, autoescaped) plus a little JavaScript
for the player, the verify button and the review box, which call the same API.

Pages need a browser login (``/login``: argon2 password, HttpOnly SameSite=Strict cookie);
changes made from a page carry the login's CSRF token. Wrong passwords are rate limited per
source address and audited."""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from assist_protocol.safetext import visible
from broker import credentials as access
from broker.errors import BrokerError
from broker.session.consent import rate_limited_message
from broker.session.ratelimit import Attempt, Limited
from broker.store import listing
from broker.store import queries as q
from broker.store.models import Account, Session, Ticket
from broker.web.auth import COOKIE, set_login_cookie
from broker.web.deps import DEPS, PRINCIPAL
from broker.web.schemas import TICKET_STATUSES

HERE = Path(__file__).parent
SEVERITY_TEXT = {
    1: "system is down, all users are affected",
    2: "critical loss of functionality or performance; many users unable to work",
    3: "moderate loss of functionality or performance; multiple users impacted",
    4: "minor loss of functionality, feature requests, how-to questions",
}

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return str(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"))


def _compact(details: Any) -> str:
    text = json.dumps(details, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= 300 else text[:297] + "..."


def _finalize(value: Any) -> Any:
    """Every value a page shows: HTML is escaped by Jinja; control and format characters
    (bidirectional overrides that reorder a command or a file name) are shown as escapes."""
    return visible(value, keep_newlines=True) if isinstance(value, str) else value


TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.ChainableUndefined,  # optional details (command, port ...) read as empty
    finalize=_finalize,
)
TEMPLATES.filters["when"] = _when
TEMPLATES.filters["compact"] = _compact


def render(request: web.Request, template: str, code: int = 200, **values: Any) -> web.Response:
    principal = request.get(PRINCIPAL)
    body = TEMPLATES.get_template(template).render(
        me=principal, csrf=principal.csrf if principal else None, **values
    )
    return web.Response(text=body, status=code, content_type="text/html")


def logged_in(page: Page) -> Page:
    """Pages need a browser login; without one, go to /login and come back."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        if request.get(PRINCIPAL) is None:
            back = urllib.parse.quote(request.path_qs, safe="")
            raise web.HTTPFound(f"/login?next={back}")
        try:
            return await page(request)
        except BrokerError as exc:
            status = {"not_found": 404, "denied": 403}.get(exc.code, 400)
            return render(request, "error.html", status, message=exc.message)

    return guarded


def _safe_next(target: str) -> str:
    """Only a plain path on this site. Browsers drop tabs and newlines from a Location and
    read a backslash as a slash, so ``/\\t/evil.example`` would leave the site as
    ``//evil.example``: no control characters or spaces, no backslash, no scheme or host,
    checked again after percent-decoding."""
    decoded = urllib.parse.unquote(target)
    for text in (target, decoded):
        if not text.startswith("/") or text.startswith("//") or "\\" in text:
            return "/tickets"
        if any(ch.isspace() or not ch.isprintable() for ch in text):
            return "/tickets"
    parts = urllib.parse.urlsplit(decoded)
    if parts.scheme or parts.netloc:
        return "/tickets"
    return target


# --- login ---------------------------------------------------------------------------------


async def login_page(request: web.Request) -> web.Response:
    nxt = _safe_next(request.query.get("next", "/tickets"))
    return render(request, "login.html", next=nxt, error=None, name="")


async def login(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return render(request, "login.html", 403, next="/tickets", name="", error="Wrong origin.")
    source = request.remote or "?"
    # The try is counted before anything is awaited: concurrent wrong passwords from one
    # prefix cannot all be evaluated, and a refused one costs no database and no hashing.
    try:
        attempt = await deps.logins.reserve(source, "web_login")
    except Limited as exc:
        deps.metrics.auth_failures.labels("web").inc()
        text = rate_limited_message(exc.wait).replace("wrong codes", "wrong passwords")
        return render(request, "login.html", 429, next="/tickets", name="", error=text)
    try:
        return await _check_login(request, attempt, source)
    finally:
        attempt.settle()  # a failure, unless it succeeded


async def _check_login(request: web.Request, attempt: Attempt, source: str) -> web.StreamResponse:
    deps = request.app[DEPS]
    form = await request.post()
    name, password = str(form.get("name", ""))[:64], str(form.get("password", ""))[:200]
    nxt = _safe_next(str(form.get("next", "/tickets")))
    account = await deps.passwords.check(deps.store.read, name, password)
    if account is not None:
        attempt.succeeded()
    async with deps.store.begin() as db:
        if account is None:
            deps.metrics.auth_failures.labels("web").inc()
            await q.append_audit(
                db, action="web.login_failed", actor=f"unknown@{source}", details={"name": name}
            )
        else:
            cookie, _ = await access.start_login(db, await db.get_one(Account, account.id))
            await q.append_audit(
                db, action="web.login", actor=account.name, details={"source": source}
            )
    if account is None:
        error = "Wrong account name or password."
        return render(request, "login.html", 401, next=nxt, name=name, error=error)
    response = web.HTTPFound(nxt)
    set_login_cookie(response, cookie, secure=request.secure)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    cookie = request.cookies.get(COOKIE)
    principal = request.get(PRINCIPAL)
    if cookie and principal is not None:  # the auth middleware has checked the CSRF token
        async with deps.store.begin() as db:
            await access.end_login(db, cookie)
            await q.append_audit(db, action="web.logout", actor=principal.name, details={})
    response = web.HTTPFound("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


# --- pages ---------------------------------------------------------------------------------


def _viewer(request: web.Request) -> listing.Viewer:
    principal = request[PRINCIPAL]
    return listing.Viewer(principal.account_id, principal.role)


@logged_in
async def tickets_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    severity_text = request.query.get("severity", "")
    severity = int(severity_text) if severity_text in ("1", "2", "3", "4") else None
    status = request.query.get("status") or None
    status = status if status in TICKET_STATUSES else None
    after = request.query.get("cursor", "")
    async with deps.store.read() as db:
        rows, more = await listing.tickets(
            db,
            _viewer(request),
            severity=severity,
            status=status,
            limit=50,
            after=int(after) if after.isdigit() else None,
        )
    query = {k: v for k, v in (("severity", severity), ("status", status)) if v is not None}
    more_query = urllib.parse.urlencode({**query, "cursor": more}) if more else ""
    return render(
        request,
        "tickets.html",
        tickets=rows,
        severity=severity,
        status=status,
        statuses=TICKET_STATUSES,
        next_cursor=more,
        more_query=more_query,
    )


async def _visible_ticket(request: web.Request, db: Any, key: str) -> Ticket:
    ticket = await q.get_ticket(db, key)
    if not await listing.may_see_ticket(db, _viewer(request), ticket.id):
        raise BrokerError(f"{ticket.key} is assigned to other engineers.", code="denied")
    return ticket


@logged_in
async def ticket_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    async with deps.store.read() as db:
        ticket = await _visible_ticket(request, db, request.match_info["key"])
        rows, _ = await listing.sessions(
            db, _viewer(request), ticket_id=ticket.id, state=None, limit=500, offset=0
        )
        names = await q.names_by_id(db)
        latest = await listing.latest_reviews(db, [session.id for session, _ in rows])
    sessions = [
        {
            **session.__dict__,
            "engineer": names.get(session.engineer_id, "?"),
            "review": latest.get(session.id),
        }
        for session, _ in rows
    ]
    return render(
        request,
        "ticket.html",
        ticket=ticket,
        sessions=sessions,
        severity_text=SEVERITY_TEXT.get(ticket.severity, ""),
        can_verify=request[PRINCIPAL].role in ("auditor", "admin"),
    )


@logged_in
async def session_page(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    async with deps.store.read() as db:
        session = await db.get(Session, request.match_info["id"][:36])
        if session is None:
            raise BrokerError(
                f"There is no session {request.match_info['id'][:36]}.", code="not_found"
            )
        ticket = await db.get_one(Ticket, session.ticket_id)
        await _visible_ticket(request, db, ticket.key)
        names = await q.names_by_id(db)
        channels = [
            {**c.__dict__, "engineer": names.get(c.engineer_id, "?"), "detail": c.detail or {}}
            for c in await listing.channels(db, session.id)
        ]
        events, _ = await listing.audit(db, _viewer(request), session_id=session.id, limit=5000)
        reviews = await listing.reviews(db, session.id)
    host = session.customer_host or {}
    began, ended = session.started_at, session.ended_at
    duration = f"{round((ended - began).total_seconds())} s" if began and ended else "-"
    return render(
        request,
        "session.html",
        session=session,
        ticket=ticket,
        engineer=names.get(session.engineer_id, "?"),
        host=f"{host.get('user', '?')}@{host.get('hostname', '?')} ({host.get('os', '?')})",
        duration=duration,
        channels=channels,
        recordings=[c for c in channels if c["recording_path"]],
        files=[e for e in events if e.action.startswith("sftp.") and e.action != "sftp.list"],
        events=events,
        reviews=reviews,
        can_review=request[PRINCIPAL].role in ("auditor", "admin"),
    )


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/tickets")


def install(app: web.Application) -> None:
    app.router.add_get("/", home)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/tickets", tickets_page)
    app.router.add_get("/tickets/{key}", ticket_page)
    app.router.add_get("/sessions/{id}", session_page)
    app.router.add_static("/static", HERE / "static", follow_symlinks=False)
