"""What the customer reads about the scope: what the engineer asked for and, when ``--scope``
narrows it, what they are about to allow; a ``--scope`` wider than the request says so."""

from __future__ import annotations

from tests.harness import BrokerHarness, HelperProc

ASKED = (
    "Alice Smith from support asks to open a shell, run commands and copy, change and delete "
    "files on this computer for ticket T-1 (Severity 2: Mail queue stuck)."
)


async def _connected(harness: BrokerHarness, scope: str, *extra: str) -> tuple[str, HelperProc]:
    ticket = await harness.ticket()
    await harness.engineer()
    helper = await harness.helper(await harness.code(ticket, scope=scope), *extra)
    await helper.wait_for("Connected.")
    return ticket, helper


async def test_a_narrower_scope_shows_what_was_asked_and_what_is_allowed(
    harness: BrokerHarness,
) -> None:
    ticket, helper = await _connected(harness, "shell,exec,sftp", "--scope", "exec")
    assert ASKED in helper.text
    assert "With --scope you allow only: run commands. Allow? [y/N] yes (--yes)" in helper.text
    assert "Alice Smith can now run commands on this computer" in helper.text
    consented = await harness.wait_audit(ticket, "session.consented")
    assert consented["granted_scope"] == "exec"


async def test_a_scope_wider_than_the_request_says_so(harness: BrokerHarness) -> None:
    ticket, helper = await _connected(harness, "shell,exec", "--scope", "exec,sftp-read,port:5432")
    line = await helper.wait_for("--scope names more than")
    assert line == (
        "--scope names more than the engineer asked for: read and copy files (no changes) and "
        "connect to port 5432 (sftp-read,port:5432). That is not allowed; only what was asked "
        "for can be."
    )
    assert "With --scope you allow only: run commands." in helper.text
    consented = await harness.wait_audit(ticket, "session.consented")
    assert consented["granted_scope"] == "exec"


async def test_read_only_files_read_well(harness: BrokerHarness) -> None:
    _, helper = await _connected(harness, "sftp-read")
    assert "asks to read and copy files (no changes) on this computer for ticket T-1" in helper.text
