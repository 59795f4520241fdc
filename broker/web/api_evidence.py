"""API: the evidence. Audit events, recordings (with HTTP ranges), the chain's verification and
the offline bundle. Reading a recording and exporting a bundle are themselves audited."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from aiohttp import web

from broker.errors import Denied
from broker.evidence.bundle import export_bundle
from broker.evidence.recordings import recording_file, recording_of
from broker.evidence.verify import verify_store
from broker.ops import shapes
from broker.store import listing
from broker.store import queries as q
from broker.web.api import MAX_INT, Api, ApiError, Call, Param
from broker.web.api_tickets import CURSOR, KEY, cursor_int, viewer, visible_ticket
from broker.web.schemas import EVENT, READERS, ROLES_ALL, page_of

api = Api()


@api.op(
    "GET",
    "/audit",
    summary="Audit events in chain order, filtered",
    roles=ROLES_ALL,
    tag="evidence",
    params=(
        Param("ticket", schema={"type": "string", "maxLength": 32}),
        Param("session", schema={"type": "string", "maxLength": 36}),
        Param("actor", schema={"type": "string", "maxLength": 100}),
        Param(
            "action",
            schema={"type": "string", "maxLength": 60},
            description="exact, or a prefix ending in * (session.*)",
        ),
        Param("since", schema={"type": "string", "format": "date-time"}),
        Param("until", schema={"type": "string", "format": "date-time"}),
        Param("limit", schema={"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        CURSOR,
    ),
    response=page_of(EVENT),
)
async def list_audit(call: Call) -> web.Response:
    p = call.params
    async with call.deps.store.read() as db:
        ticket_id = (await q.get_ticket(db, p["ticket"])).id if p["ticket"] else None
        rows, more = await listing.audit(
            db,
            viewer(call),
            ticket_id=ticket_id,
            session_id=p["session"],
            actor=p["actor"],
            action=p["action"],
            since=p["since"],
            until=p["until"],
            limit=p["limit"],
            after=cursor_int(call),
        )
        keys = await q.ticket_keys(db, {e.ticket_id for e in rows if e.ticket_id})
    items = [shapes.event(e, keys.get(e.ticket_id) if e.ticket_id else None) for e in rows]
    return web.json_response({"items": items, "next_cursor": str(more) if more else None})


@api.op(
    "GET",
    "/recordings/{channel}",
    summary="A channel's recording (asciicast v2); supports Range; every read is audited",
    roles=ROLES_ALL,
    tag="evidence",
    params=(Param("channel", "path", {"type": "integer", "minimum": 1, "maximum": MAX_INT}),),
    response={"type": "string"},
    produces="application/x-asciicast",
)
async def get_recording(call: Call) -> web.StreamResponse:
    deps = call.deps
    async with deps.store.read() as db:
        ref = await recording_of(db, call.params["channel"])
        if not await listing.may_see_ticket(db, viewer(call), ref.ticket_id or 0):
            raise Denied("This recording belongs to a ticket assigned to other engineers.")
    # Where the chain says, and only inside the recordings folder (never the broker's keys).
    path = recording_file(deps.settings.data_dir, deps.settings.recordings, ref)
    details: dict[str, object] = {"channel_id": ref.channel_id, "how": "http"}
    ranges = call.request.headers.get("Range")
    if ranges is not None:
        details["range"] = ranges[:100]
        _satisfiable(call.request, path.stat().st_size)
    async with deps.store.begin() as db:
        await call.audit(
            db, "recording.viewed", details, ticket_id=ref.ticket_id, session_id=ref.session_id
        )
    return web.FileResponse(
        path,
        headers={
            "Content-Type": "application/x-asciicast",
            "Content-Disposition": f'inline; filename="channel-{ref.channel_id}.cast"',
            "Cache-Control": "no-store",
        },
    )


def _satisfiable(request: web.Request, size: int) -> None:
    """A 416 as the document declares it (JSON, and nothing read or audited), where
    aiohttp's file answer would send one of its own, typed as a recording but empty."""
    try:
        start = request.http_range.start
    except ValueError:
        raise ApiError(416, "The Range header is not valid (bytes=FIRST-LAST).") from None
    if start is not None and start >= size:
        raise ApiError(416, f"The range starts past the recording's end ({size} bytes).")


VERIFY = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "summary": {"type": "string"},
        "problems": {"type": "array", "items": {"type": "string"}},
        "events": {"type": "integer"},
        "checkpoints": {"type": "integer"},
        "recordings": {"type": "integer"},
        "head": {"type": "string"},
    },
}


@api.op(
    "GET",
    "/verify",
    summary="Verify the audit chain, its signatures and the recordings (optionally one ticket's)",
    roles=READERS,
    tag="evidence",
    params=(Param("ticket", schema={"type": "string", "maxLength": 32}),),
    response=VERIFY,
)
async def verify(call: Call) -> web.Response:
    deps = call.deps
    ticket_id = None
    if call.params["ticket"]:
        ticket_id = (await visible_ticket(call, call.params["ticket"])).id
    report = await verify_store(
        deps.store,
        deps.signer.public,
        deps.settings.data_dir,
        ticket_id,
        window=deps.settings.checkpoint_window,
        recordings=deps.settings.recordings,
    )
    return web.json_response(
        {
            "ok": report.ok,
            "summary": report.summary(),
            "problems": report.problems,
            "events": report.events,
            "checkpoints": report.checkpoints,
            "recordings": report.recordings,
            "head": report.head,
        }
    )


@api.op(
    "GET",
    "/tickets/{key}/bundle",
    summary="Export a ticket's evidence bundle (tar) for offline verification",
    roles=READERS,
    tag="evidence",
    params=(KEY,),
    response={"type": "string", "format": "binary"},
    produces="application/x-tar",
)
async def export(call: Call) -> web.StreamResponse:
    deps = call.deps
    ticket = await visible_ticket(call, call.params["key"])
    async with deps.store.begin() as db:
        await call.audit(db, "bundle.exported", {"via": "http"}, ticket_id=ticket.id)
    with tempfile.TemporaryDirectory(prefix="assist-bundle-") as folder:
        out = Path(folder) / f"{ticket.key}.tar"
        await export_bundle(
            deps.store,
            deps.signer,
            deps.settings.data_dir,
            ticket.key,
            out,
            recordings=deps.settings.recordings,
            checkpointer=deps.checkpointer,
        )
        data = await asyncio.to_thread(out.read_bytes)
    return web.Response(
        body=data,
        content_type="application/x-tar",
        headers={"Content-Disposition": f'attachment; filename="{ticket.key}-evidence.tar"'},
    )
