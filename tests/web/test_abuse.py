"""A few requests must not stall everyone, nor lead anyone off the site: limits that hold under
concurrency and per network prefix, password hashing off the event loop, slow clients cut off,
security headers on every answer, and disabled accounts logged out at once."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from broker import credentials as access
from broker.store import queries as q
from tests.harness import BrokerHarness
from tests.web.openapi_check import checked_session

PASSWORD = "correct horse battery staple"


def _session(source: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A client whose connections come from ``source`` (any address of 127.0.0.0/8)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0), force_close=True)
    return checked_session(connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _login(http: aiohttp.ClientSession, base: str, name: str, password: str) -> int:
    form = {"name": name, "password": password}
    async with http.post(f"{base}/login", data=form, allow_redirects=False) as response:
        return response.status


@pytest.mark.smoke
async def test_forty_concurrent_wrong_passwords_are_five_checks(
    harness: BrokerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit holds under concurrency: each try is counted before anything is awaited, and
    each password is checked in a worker thread, never on the event loop."""
    await harness.token("audrey", "auditor", password=PASSWORD)
    checked_in: list[str] = []
    real = access.password_matches

    def recording(stored: str | None, password: str) -> bool:
        checked_in.append(threading.current_thread().name)
        return real(stored, password)

    monkeypatch.setattr(access, "password_matches", recording)
    async with _session() as http:
        statuses = await asyncio.gather(
            *(_login(http, harness.base_url, "audrey", f"wrong {n}") for n in range(40))
        )
    assert sorted(statuses) == [401] * 5 + [429] * 35
    assert len(checked_in) == 5
    assert threading.main_thread().name not in checked_in  # argon2 ran off the event loop
    failed = [a for a, _ in await harness.audit() if a == "web.login_failed"]
    assert len(failed) == 5  # the 35 refusals are one summary, not 35 rows
    assert harness.broker.refusals is not None
    await harness.broker.refusals.report(flush=True)
    summary = await harness.wait_audit(None, "access.rate_limited")
    assert summary["where"] == "web_login" and summary["refused"] == 35


async def test_a_neighbourhood_of_addresses_shares_one_limit(tmp_path: Path) -> None:
    """Addresses of one /24 count together: 20 wrong passwords from 20 addresses, then even a
    fresh address of that /24 waits, while another /24 does not."""
    harness = await BrokerHarness(tmp_path, code_fail_per_source=1, code_fail_per_prefix=3).start()
    try:
        await harness.token("audrey", "auditor", password=PASSWORD)
        statuses = []
        for host in (2, 3, 4, 5):
            async with _session(f"127.0.9.{host}") as http:
                statuses.append(await _login(http, harness.base_url, "audrey", "wrong one"))
        assert statuses == [401, 401, 401, 429]
        async with _session("127.0.10.2") as http:
            assert await _login(http, harness.base_url, "audrey", PASSWORD) == 302
    finally:
        await harness.stop()


async def test_every_answer_carries_the_security_headers(harness: BrokerHarness) -> None:
    async with _session() as http:
        for path, status in (("/no/such/page", 404), ("/", 302), ("/tickets", 302)):
            async with http.get(harness.base_url + path, allow_redirects=False) as response:
                assert response.status == status, path
                assert "default-src 'none'" in response.headers["Content-Security-Policy"]
                assert response.headers["X-Frame-Options"] == "DENY"
                assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "target",
    [
        "/%09/evil.example",
        "/\t/evil.example",
        "/%2F/evil.example",
        "/\\evil.example",
        "/%5Cevil.example",
        "https://evil.example/",
        "/ /evil.example",
        "/%0d%0aSet-Cookie:x=y",
    ],
)
async def test_after_login_the_redirect_stays_on_the_site(
    harness: BrokerHarness, target: str
) -> None:
    await harness.token("audrey", "auditor", password=PASSWORD)
    async with _session() as http:
        form = {"name": "audrey", "password": PASSWORD, "next": target}
        async with http.post(
            f"{harness.base_url}/login", data=form, allow_redirects=False
        ) as response:
            assert response.status == 302
            assert response.headers["Location"] == "/tickets"


async def test_metrics_can_require_a_token(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, metrics_token="scrape-me-please").start()
    try:
        async with _session() as http:
            async with http.get(f"{harness.base_url}/metrics") as response:
                assert response.status == 401
            headers = {"Authorization": "Bearer not-it"}
            async with http.get(f"{harness.base_url}/metrics", headers=headers) as response:
                assert response.status == 401
            headers = {"Authorization": "Bearer scrape-me-please"}
            async with http.get(f"{harness.base_url}/metrics", headers=headers) as response:
                assert response.status == 200
                assert "assist_live_sessions" in await response.text()
    finally:
        await harness.stop()


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[BrokerHarness]:
    harness = await BrokerHarness(tmp_path, http_header_timeout=1.0, http_body_timeout=1.0).start()
    yield harness
    await harness.stop()


async def _closed_by_server(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Read until the server closes the connection; what it said before."""
    loop = asyncio.get_running_loop()
    said = b""
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 4096):
            said += chunk
    return said


async def test_a_slow_client_is_cut_off(impatient: BrokerHarness) -> None:
    """Headers a byte at a time, or a body that never comes: the connection ends; a normal
    request still gets through meanwhile."""
    loop = asyncio.get_running_loop()
    slow = socket.create_connection(("127.0.0.1", impatient.http_port))
    slow.setblocking(False)
    await loop.sock_sendall(slow, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")

    async def dribble() -> None:
        try:
            while True:
                await loop.sock_sendall(slow, b"X")
                await asyncio.sleep(0.2)
        except OSError:
            pass

    dribbling = asyncio.ensure_future(dribble())
    try:
        async with _session() as http:
            async with http.get(f"{impatient.base_url}/healthz") as response:
                assert response.status == 200
        assert b"200" not in await _closed_by_server(slow)
    finally:
        dribbling.cancel()
        slow.close()

    body = socket.create_connection(("127.0.0.1", impatient.http_port))
    body.setblocking(False)
    await loop.sock_sendall(
        body,
        b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nContent-Length: 100\r\n\r\nname=a",
    )
    try:
        said = await _closed_by_server(body)
    finally:
        body.close()
    assert said.startswith(b"HTTP/1.1 408")


async def test_disabling_an_account_ends_its_browser_logins(harness: BrokerHarness) -> None:
    admin = await harness.token("root-admin", "admin")
    await harness.token("audrey", "auditor", password=PASSWORD)
    auth = {"Authorization": f"Bearer {admin}"}
    async with _session() as browser, _session() as second, _session() as tools:
        assert await _login(browser, harness.base_url, "audrey", PASSWORD) == 302
        assert await _login(second, harness.base_url, "audrey", PASSWORD) == 302
        async with browser.get(f"{harness.base_url}/api/v1/me") as response:
            assert response.status == 200
        url = f"{harness.base_url}/api/v1/accounts/audrey"
        new = {"password": "another long password"}
        async with tools.patch(url, json=new, headers=auth) as response:
            assert response.status == 200
        for http in (browser, second):  # a new password ends the other logins
            async with http.get(f"{harness.base_url}/api/v1/me") as response:
                assert response.status == 401
        assert await _login(browser, harness.base_url, "audrey", new["password"]) == 302
        async with tools.patch(url, json={"disabled": True}, headers=auth) as response:
            assert response.status == 200
        async with browser.get(f"{harness.base_url}/api/v1/me") as response:
            assert response.status == 401
        page = await browser.get(f"{harness.base_url}/tickets", allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/login")
    updated = [d for a, d in await harness.audit() if a == "account.updated"]
    assert updated[0]["other_web_logins_ended"] == 2
    assert updated[1]["disabled"] is True and updated[1]["web_logins_ended"] == 1


async def test_idle_http_connections_are_capped_per_address(tmp_path: Path) -> None:
    """Open connections that say nothing cannot take every descriptor: past the cap from one
    address they are closed at once, and others are still served."""
    harness = await BrokerHarness(tmp_path, http_connections_per_address=5).start()
    loop = asyncio.get_running_loop()
    idle = []
    try:
        for _ in range(5):
            sock = socket.create_connection(
                ("127.0.0.1", harness.http_port), None, ("127.0.0.8", 0)
            )
            idle.append(sock)
        extra = socket.create_connection(("127.0.0.1", harness.http_port), None, ("127.0.0.8", 0))
        extra.setblocking(False)
        idle.append(extra)
        async with asyncio.timeout(10):
            assert await loop.sock_recv(extra, 100) == b""  # closed without a word
        async with _session() as http:
            async with http.get(f"{harness.base_url}/healthz") as response:
                assert response.status == 200
    finally:
        for sock in idle:
            sock.close()
        await harness.stop()


async def test_a_new_password_revokes_the_tokens_a_browser_login_made(
    harness: BrokerHarness,
) -> None:
    """Someone who had the old password could have made a token from a browser login: a new
    password revokes those; tokens made on the command line stay."""
    admin = await harness.token("root-admin", "admin")
    await harness.token("audrey", "auditor", password=PASSWORD)
    async with harness.store.begin() as db:
        account = await q.get_account(db, "audrey")
        from_login, _ = await access.create_token(db, account, "stolen", None, via="login")
        from_cli, _ = await access.create_token(db, account, "ci", None, via="cli")
    async with _session() as http:
        url = f"{harness.base_url}/api/v1/accounts/audrey"
        headers = {"Authorization": f"Bearer {admin}"}
        async with http.patch(url, json={"password": "a brand new password"}, headers=headers) as r:
            assert r.status == 200
        for token, status in ((from_login, 401), (from_cli, 200)):
            me = {"Authorization": f"Bearer {token}"}
            async with http.get(f"{harness.base_url}/api/v1/me", headers=me) as response:
                assert response.status == status
    updated = [d for a, d in await harness.audit() if a == "account.updated"]
    assert updated[-1]["login_tokens_revoked"] == 1


async def test_pages_show_format_characters_made_visible(harness: BrokerHarness) -> None:
    """A right-to-left override in a command would reorder what an auditor reads: the page
    shows it as an escape."""
    await harness.token("audrey", "auditor", password=PASSWORD)
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    assert (await harness.ssh(key, ticket, "echo fine # \u202etxt.exe")).status == 0
    await harness.wait_audit(ticket, "channel.closed")
    async with harness.store.read() as db:
        (session,) = await q.list_sessions(db)
    async with _session() as browser:
        assert await _login(browser, harness.base_url, "audrey", PASSWORD) == 302
        async with browser.get(f"{harness.base_url}/sessions/{session.id}") as response:
            page = await response.text()
    assert "\u202e" not in page and "\\u202etxt.exe" in page
