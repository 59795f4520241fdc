"""Browser logins without a browser: the cookie's flags, CSRF on changes, the Origin check,
redirects that stay on the site, and the rate limit on wrong passwords (audited)."""

from __future__ import annotations

import re

import aiohttp

from tests.harness import BrokerHarness
from tests.web.openapi_check import checked_session

PASSWORD = "correct horse battery staple"


async def test_login_cookie_and_csrf(harness: BrokerHarness) -> None:
    await harness.token("audrey", "auditor", password=PASSWORD)
    jar = aiohttp.CookieJar(unsafe=True)  # the broker is on an IP address
    async with checked_session(cookie_jar=jar) as http:
        form = {"name": "audrey", "password": PASSWORD, "next": "//evil.example/x"}
        async with http.post(
            f"{harness.base_url}/login", data=form, allow_redirects=False
        ) as response:
            assert response.status == 302
            assert response.headers["Location"] == "/tickets"  # never off the site
            cookie = response.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        async with http.get(f"{harness.base_url}/api/v1/me") as response:
            assert (await response.json())["via"] == "login"
        async with http.get(f"{harness.base_url}/tickets") as response:
            page = await response.text()
            assert response.headers["Cache-Control"] == "no-store"
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert csrf is not None
        url = f"{harness.base_url}/api/v1/tokens"
        async with http.post(url, json={"name": "x"}) as response:
            assert response.status == 403
            assert (await response.json())["error"].startswith("Missing or wrong CSRF token")
        async with http.post(url, json={"name": "x"}, headers={"X-CSRF-Token": "forged"}) as r:
            assert r.status == 403
        headers = {"X-CSRF-Token": csrf.group(1)}
        async with http.post(url, json={"name": "x"}, headers=headers) as response:
            assert response.status == 201
        async with http.post(
            f"{harness.base_url}/logout",
            data={"csrf_token": csrf.group(1)},
            allow_redirects=False,
        ) as response:
            assert response.status == 302
        async with http.get(f"{harness.base_url}/api/v1/me") as response:
            assert response.status == 401  # the login is gone on the server too
    actions = [a for a, _ in await harness.audit()]
    assert {"web.login", "token.created", "web.logout"} <= set(actions)


async def test_wrong_passwords_are_limited_per_address_and_audited(
    harness: BrokerHarness,
) -> None:
    await harness.token("audrey", "auditor", password=PASSWORD)
    statuses = []
    async with checked_session() as http:
        for _ in range(6):
            form = {"name": "audrey", "password": "not it at all"}
            async with http.post(f"{harness.base_url}/login", data=form) as response:
                statuses.append(response.status)
                text = await response.text()
        assert statuses == [401] * 5 + [429]
        assert re.search(r"Too many wrong passwords were tried\. Wait \d+ seconds", text)
        form = {"name": "audrey", "password": PASSWORD}
        async with http.post(f"{harness.base_url}/login", data=form) as response:
            assert response.status == 429  # even the right one, until the wait is over
        headers = {"Origin": "http://evil.example"}
        async with http.post(f"{harness.base_url}/login", data=form, headers=headers) as r:
            assert r.status == 403
    failed = [d for a, d in await harness.audit() if a == "web.login_failed"]
    assert failed == [{"name": "audrey"}] * 5
    assert PASSWORD not in str(await harness.audit())
