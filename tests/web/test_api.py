"""The HTTP API with each role: what each may do (and the 401/403 for the rest), filters and
pages, the audit of every change, recordings with ranges, verify and the bundle."""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from broker.store import chain
from broker.store.models import AuditEvent, Channel
from tests.harness import BrokerHarness
from tests.web.openapi_check import checked_session


@dataclass
class Client:
    http: aiohttp.ClientSession
    base: str
    token: str | None

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.http.request(
            method, self.base + path, headers=headers, **kwargs
        ) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.read()


@pytest.fixture
async def clients(harness: BrokerHarness) -> AsyncIterator[dict[str, Client]]:
    await harness.engineer("alice", "Alice Smith")
    tokens = {
        "engineer": await harness.token("alice", "engineer"),
        "auditor": await harness.token("audrey", "auditor"),
        "admin": await harness.token("root-admin", "admin"),
        "nobody": None,
    }
    async with checked_session() as http:  # every answer checked against the document
        yield {role: Client(http, harness.base_url, t) for role, t in tokens.items()}


# (method, path, body, roles allowed, statuses an allowed role may see); anything else gets 403
# (401 without a token). {session}, {channel}, {code}, {token} are filled in by the test; a
# second allowed role may find the work done (the session ended, the code revoked).
ALL = {"engineer", "auditor", "admin"}
MATRIX: list[tuple[str, str, dict[str, Any] | None, set[str], set[int]]] = [
    ("GET", "/tickets", None, ALL, {200}),
    ("POST", "/tickets", {"title": "Disk full", "severity": 3}, {"engineer", "admin"}, {201}),
    ("GET", "/tickets/T-1", None, ALL, {200}),
    ("PATCH", "/tickets/T-1", {"status": "pending"}, {"engineer", "admin"}, {200}),
    ("POST", "/tickets/T-1/codes", {"scope": "exec"}, {"engineer"}, {201}),
    ("DELETE", "/codes/{code}", None, {"engineer", "admin"}, {200, 400}),
    ("GET", "/sessions", None, ALL, {200}),
    ("GET", "/sessions/{session}", None, ALL, {200}),
    ("GET", "/sessions/{session}/channels", None, ALL, {200}),
    ("POST", "/sessions/{session}/end", None, {"engineer", "admin"}, {200, 404}),
    ("POST", "/sessions/{session}/reviews", {"status": "flagged"}, {"auditor", "admin"}, {201}),
    ("GET", "/audit", None, ALL, {200}),
    ("GET", "/recordings/{channel}", None, ALL, {200}),
    ("GET", "/verify", None, {"auditor", "admin"}, {200}),
    ("GET", "/tickets/T-1/bundle", None, {"auditor", "admin"}, {200}),
    ("GET", "/accounts", None, {"admin"}, {200}),
    (
        "POST",
        "/accounts",
        {"role": "auditor", "password": "long enough password"},
        {"admin"},
        {201},
    ),
    ("PATCH", "/accounts/alice", {"display_name": "Alice S."}, {"admin"}, {200}),
    ("GET", "/me", None, ALL, {200}),
    ("GET", "/tokens", None, ALL, {200}),
    ("POST", "/tokens", {"name": "more"}, ALL, {201}),
    ("DELETE", "/tokens/{token}", None, ALL, {200}),
]


async def live_session_with_a_recording(harness: BrokerHarness) -> dict[str, Any]:
    ticket = await harness.ticket()
    await harness.connected_helper(ticket)
    assert (await harness.ssh(harness.tmp / "alice", ticket, "echo rec")).stdout == b"rec\n"
    await harness.wait_audit(ticket, "recording.closed")
    (live,) = harness.broker.manager.live()
    async with harness.store.read() as db:
        from broker.store import listing

        (channel,) = await listing.channels(db, live.id)
    _, row = await harness.broker.manager.codes.issue(ticket, "alice", "exec", 600)
    return {"session": live.id, "channel": channel.id, "code": row.id}


def test_the_matrix_covers_every_operation() -> None:
    import re

    from broker.web.app import all_operations

    def pattern(path: str) -> re.Pattern[str]:
        return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(path)) + "$")

    declared = [(op.method, pattern(op.path)) for op in all_operations().operations]
    for method, path, *_ in MATRIX:
        assert [m for m, rx in declared if m == method and rx.match(path)], (method, path)
    for method, rx in declared:
        assert [p for m, p, *_ in MATRIX if m == method and rx.match(p)], (method, rx.pattern)


@pytest.mark.parametrize(("method", "path", "body", "allowed", "ok"), MATRIX)
async def test_each_endpoint_with_each_role(
    harness: BrokerHarness,
    clients: dict[str, Client],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    allowed: set[str],
    ok: set[int],
) -> None:
    ids = await live_session_with_a_recording(harness)
    for role, client in clients.items():
        if path == "/tokens/{token}" and client.token is not None:
            _, made = await client.call("POST", "/api/v1/tokens", json={"name": "doomed"})
            ids["token"] = made["id"]
        if path == "/accounts":
            body = {**(body or {}), "name": f"newbie-{role}"}
        status, answer = await client.call(method, "/api/v1" + path.format(**ids), json=body)
        if role == "nobody":
            assert status == 401 and "token" in answer["error"], (role, answer)
        elif role in allowed:
            assert status in ok, (role, method, path, status, answer)
        else:
            assert status == 403, (role, method, path, status, answer)
            assert answer["status"] == 403 and f"({role})" in answer["error"]


async def test_filters_pages_and_audited_changes(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    engineer, auditor = clients["engineer"], clients["auditor"]
    for severity in (1, 2, 3, 3, 4):
        status, _ = await engineer.call(
            "POST", "/api/v1/tickets", json={"title": f"sev {severity}", "severity": severity}
        )
        assert status == 201
    status, page = await auditor.call("GET", "/api/v1/tickets?severity=3&limit=1")
    assert status == 200 and len(page["items"]) == 1 and page["next_cursor"]
    status, rest = await auditor.call(
        "GET", f"/api/v1/tickets?severity=3&limit=1&cursor={page['next_cursor']}"
    )
    assert [t["severity"] for t in page["items"] + rest["items"]] == [3, 3]
    assert rest["next_cursor"] is None
    first = page["items"][0]["key"]
    status, changed = await engineer.call(
        "PATCH", f"/api/v1/tickets/{first}", json={"status": "closed"}
    )
    assert status == 200 and changed["status"] == "closed"
    status, closed = await auditor.call("GET", "/api/v1/tickets?status=closed")
    assert [t["key"] for t in closed["items"]] == [first]
    status, events = await auditor.call(
        "GET", f"/api/v1/audit?ticket={first}&action=ticket.*&actor=alice"
    )
    assert [e["action"] for e in events["items"]] == ["ticket.created", "ticket.updated"]
    assert events["items"][1]["details"]["status"] == {"from": "open", "to": "closed"}
    # Bad input: a clear 400, nothing written.
    status, error = await engineer.call("POST", "/api/v1/tickets", json={"title": "x"})
    assert status == 400 and error["error"] == "body.severity is required"
    status, error = await engineer.call(
        "POST", "/api/v1/tickets", json={"title": "x", "severity": 9}
    )
    assert status == 400 and error["error"] == "body.severity must be at most 4"
    status, error = await auditor.call("GET", "/api/v1/tickets?severity=high")
    assert status == 400 and error["error"] == "severity must be a whole number"
    status, error = await auditor.call("GET", "/api/v1/tickets/T-999")
    assert status == 404 and "T-999" in error["error"]


async def test_engineers_see_only_tickets_open_to_them(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    from broker.store import queries as q

    mine, theirs = await harness.ticket("mine"), await harness.ticket("theirs")
    await harness.engineer("bob", "Bob Jones")
    async with harness.store.begin() as db:
        await q.set_assignees(db, await q.get_ticket(db, theirs), ["bob"])
    engineer = clients["engineer"]
    status, page = await engineer.call("GET", "/api/v1/tickets")
    assert [t["key"] for t in page["items"]] == [mine]
    status, error = await engineer.call("GET", f"/api/v1/tickets/{theirs}")
    assert status == 403 and "assigned to other engineers" in error["error"]
    status, page = await clients["auditor"].call("GET", "/api/v1/tickets")
    assert {t["key"] for t in page["items"]} == {mine, theirs}


async def test_codes_issue_and_revoke_and_tokens_lifecycle(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    ticket = await harness.ticket()
    engineer = clients["engineer"]
    status, code = await engineer.call(
        "POST", f"/api/v1/tickets/{ticket}/codes", json={"scope": "shell,sftp", "ttl_seconds": 300}
    )
    assert status == 201 and len(code["code"]) == 11 and code["scope"] == "shell,sftp"
    # the code is read out to the customer, never put on a command line (argv is public)
    assert code["helper_command"] == (
        f"curl -fsSLo assist-helper.pyz {harness.base_url}/helper && python3 assist-helper.pyz"
    )
    assert code["helper_command_installed"] == (
        f"assist-helper connect --broker 127.0.0.1:{harness.port} "
        f"--fingerprint {harness.fingerprint}"
    )
    status, error = await engineer.call(
        "POST", f"/api/v1/tickets/{ticket}/codes", json={"scope": "telnet"}
    )
    assert status == 400 and error["error"].startswith("scope: ")
    status, revoked = await engineer.call("DELETE", f"/api/v1/codes/{code['id']}")
    assert status == 200 and revoked["state"] == "revoked"
    status, error = await engineer.call("DELETE", f"/api/v1/codes/{code['id']}")
    assert status == 400 and "only unused codes" in error["error"]
    helper = await harness.helper(code["code"])
    assert await helper.finish() == 2
    assert "This code was withdrawn by the support desk." in helper.text
    actions = [a for a, _ in await harness.audit(ticket)]
    assert "consent.issued" in actions and "consent.revoked" in actions
    assert code["code"] not in str(await harness.audit(ticket))  # never the code itself

    auditor = clients["auditor"]
    status, made = await auditor.call("POST", "/api/v1/tokens", json={"name": "ci"})
    assert status == 201 and made["token"].startswith("abt_")
    fresh = Client(auditor.http, auditor.base, made["token"])
    status, me = await fresh.call("GET", "/api/v1/me")
    assert status == 200 and me["name"] == "audrey" and me["via"] == "token"
    status, _ = await fresh.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 200
    status, error = await fresh.call("GET", "/api/v1/me")
    assert status == 401 and "revoked" in error["error"]
    status, error = await engineer.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert status == 404  # not theirs


async def test_recording_range_verify_and_bundle_are_audited(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    ticket = await harness.ticket()
    key = harness.tmp / "alice"
    await harness.connected_helper(ticket)
    result = await harness.ssh(key, ticket, "echo evidence-$((6*7))")
    assert result.stdout == b"evidence-42\n"
    closed = await harness.wait_audit(ticket, "recording.closed")
    auditor = clients["auditor"]
    status, sessions = await auditor.call("GET", f"/api/v1/sessions?ticket={ticket}")
    (session,) = sessions["items"]
    status, channels = await auditor.call("GET", f"/api/v1/sessions/{session['id']}/channels")
    (channel,) = channels["items"]
    assert channel["recording_sha256"] == closed["sha256"]

    status, whole = await auditor.call("GET", f"/api/v1/recordings/{channel['id']}")
    assert status == 200 and b"evidence-42" in whole
    status, part = await auditor.call(
        "GET", f"/api/v1/recordings/{channel['id']}", headers={"Range": "bytes=10-19"}
    )
    assert status == 206 and part == whole[10:20]
    status, tail = await auditor.call(
        "GET", f"/api/v1/recordings/{channel['id']}", headers={"Range": "bytes=1-"}
    )
    assert status == 206 and tail == whole[1:]
    status, _ = await auditor.call(
        "GET", f"/api/v1/recordings/{channel['id']}", headers={"Range": "bytes=99999999-"}
    )
    assert status == 416  # (checked against the document like every answer)
    viewed = [d for a, d in await harness.audit(ticket) if a == "recording.viewed"]
    assert viewed == [  # every read that returns recording bytes, ranges included
        {"channel_id": channel["id"], "how": "http"},
        {"channel_id": channel["id"], "how": "http", "range": "bytes=10-19"},
        {"channel_id": channel["id"], "how": "http", "range": "bytes=1-"},
    ]

    status, report = await auditor.call("GET", f"/api/v1/verify?ticket={ticket}")
    assert status == 200 and report["ok"] and report["recordings"] == 1, report
    status, tar = await auditor.call("GET", f"/api/v1/tickets/{ticket}/bundle")
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(tar)) as bundle:
        names = bundle.getnames()
    assert any(n.endswith(".cast") for n in names)
    exported = [(a, d) for a, d in await harness.audit(ticket) if a == "bundle.exported"]
    assert exported == [("bundle.exported", {"via": "http"})]


async def test_recording_is_read_only_where_the_chain_says(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    """Someone who can write the database points a channel's (unchained) recording_path at the
    broker's private key: the API still serves the recording the chain names; and a chained
    path outside the recordings folder is refused, never read."""
    ticket = await harness.ticket()
    key = harness.tmp / "alice"
    await harness.connected_helper(ticket)
    assert (await harness.ssh(key, ticket, "echo evidence")).status == 0
    closed = await harness.wait_audit(ticket, "recording.closed")
    secret = (harness.settings.data_dir / "ssh_host_ed25519_key").read_bytes()
    async with harness.store.begin() as db:
        channel = (await db.execute(select(Channel))).scalar_one()
        channel.recording_path = "ssh_host_ed25519_key"
    auditor = clients["auditor"]
    status, body = await auditor.call("GET", f"/api/v1/recordings/{channel.id}")
    assert status == 200 and b"evidence" in body and secret not in body
    assert len(body) == closed["size"], (len(body), closed)
    assert hashlib.sha256(body).hexdigest() == closed["sha256"]

    for forged in ("ssh_host_ed25519_key", "../var/ssh_host_ed25519_key", "recordings/../x.cast"):
        async with harness.store.begin() as db:
            event = (
                await db.execute(select(AuditEvent).where(AuditEvent.action == "recording.closed"))
            ).scalar_one()
            event.details = {**event.details, "path": forged}
        status, body = await auditor.call("GET", f"/api/v1/recordings/{channel.id}")
        assert status == 404 and "was changed; run audit verify" in body["error"], forged
        async with harness.store.begin() as db:  # the forger fixes the event's own hash too
            event = await db.get_one(AuditEvent, event.seq)
            event.hash = chain.link(event.prev_hash, event.ticket_id, chain.row_digest(event))
        status, body = await auditor.call("GET", f"/api/v1/recordings/{channel.id}")
        assert status == 404 and "outside the recordings folder" in body["error"], body
    assert (await harness.ssh(key, ticket, "true")).status == 0  # the session goes on


async def test_answers_the_api_gives_on_its_own_are_declared_too(
    harness: BrokerHarness, clients: dict[str, Client]
) -> None:
    """Errors that come from the frame rather than a handler (each checked against the
    document by the clients' session): a body too large, a range past the end."""
    engineer = clients["engineer"]
    big = io.BytesIO(b"{" * (2 * 1024**2))
    status, error = await engineer.call("POST", "/api/v1/tickets", data=big)
    assert status in (400, 413), error
