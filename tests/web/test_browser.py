"""The auditors' web UI in a real browser (Debian's Chromium, driven by Playwright): log in,
open a ticket, open a session, play its recording and see what the engineer typed, mark the
session reviewed. The page runs under the strict Content-Security-Policy; any violation fails.
A screenshot is kept as a test artifact (ASSIST_ARTIFACTS, default ./test-artifacts)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="Chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
    pytest.mark.timeout(120),
]
PASSWORD = "correct horse battery staple"


async def recorded_session(harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]) -> str:
    ticket = await harness.ticket("Printer queue stuck", severity=1)
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket)
    engineer, _ = screens
    await engineer.start(harness.ssh_args(key, ticket, "-tt"))
    engineer.type(b"echo typed-in-session-$((6*7))\n")
    await engineer.expect(rb"typed-in-session-42")
    engineer.type(b"exit\n")
    assert await engineer.wait() == 0
    await harness.wait_audit(ticket, "recording.closed")
    helper.interrupt()
    await helper.finish()
    await harness.wait_audit(ticket, "session.ended")
    return ticket


async def test_auditor_reviews_a_session_in_the_browser(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    from playwright.async_api import async_playwright, expect

    ticket = await recorded_session(harness, screens)
    await harness.token("audrey", "auditor", password=PASSWORD, display="Audrey Auditor")
    problems: list[str] = []
    artifacts = Path(os.environ.get("ASSIST_ARTIFACTS", "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            await page.goto(f"{harness.base_url}/tickets")  # not logged in: to the login page
            await expect(page).to_have_url(re.compile(r"/login\?next=(/|%2F)tickets$"))
            await page.fill("input[name=name]", "audrey")
            await page.fill("input[name=password]", "wrong password!!")
            await page.click("button[type=submit]")
            await expect(page.locator(".error")).to_have_text("Wrong account name or password.")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button[type=submit]")

            await expect(page.locator("h1")).to_have_text("Tickets")
            await page.select_option("select[name=severity]", "1")
            await page.click(".filters button")
            await page.click(f"text={ticket}")
            await expect(page.locator("h1")).to_contain_text("Printer queue stuck")
            await page.click("#verify")
            await expect(page.locator("#verify-result")).to_contain_text("OK: ", timeout=15000)

            await page.click("table.list tbody a")  # the session
            await expect(page.locator("h1")).to_contain_text(f"on {ticket}")
            await page.click(".player .ap-player", timeout=10000)  # play
            terminal = page.locator(".player .ap-terminal").first
            await expect(terminal).to_contain_text("typed-in-session-42", timeout=15000)

            await page.fill("textarea[name=note]", "Checked the shell; nothing unexpected.")
            await page.click("button[value=reviewed]")
            await expect(page.locator(".review-line").first).to_contain_text(
                "reviewed by audrey", timeout=10000
            )
            await page.screenshot(path=str(artifacts / "auditor-session.png"), full_page=True)
        finally:
            await browser.close()

    assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
    actions = {(name, d.get("how")) for name, d in await harness.audit(ticket)}
    assert ("recording.viewed", "http") in actions
    reviewed = await harness.wait_audit(ticket, "session.reviewed")
    assert reviewed == {"status": "reviewed", "note": "Checked the shell; nothing unexpected."}
    assert (artifacts / "auditor-session.png").stat().st_size > 10000
