"""What the customer reads about the scope: what the engineer asked for and, when ``--scope``
narrows it, what they are about to allow; a ``--scope`` wider than the request says so."""

from __future__ import annotations

from tests.harness import BrokerHarness

ASKED = (
    "Alice Smith from support asks to open a shell, run commands and copy, change and delete "
    "files on this computer for ticket T-1 (Severity 2: Mail queue stuck)."
)


async def test_a_narrower_scope_shows_what_was_asked_and_what_is_allowed(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket, scope="shell,exec,sftp")
    helper = await harness.helper(code, "--scope", "exec")
    await helper.wait_for("Connected.")
    assert ASKED in helper.text
    assert "With --scope you allow only: run commands. Allow? [y/N] yes (--yes)" in helper.text
    assert "Alice Smith can now run commands on this computer" in helper.text
    consented = await harness.wait_audit(ticket, "session.consented")
    assert consented["granted_scope"] == "exec"


async def test_a_scope_wider_than_the_request_says_so(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket, scope="shell,exec")
    helper = await harness.helper(code, "--scope", "exec,sftp-read,port:5432")
    await helper.wait_for("Connected.")
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
    ticket = await harness.ticket()
    await harness.engineer()
    helper = await harness.helper(await harness.code(ticket, scope="sftp-read"))
    await helper.wait_for("Connected.")
    assert "asks to read and copy files (no changes) on this computer for ticket T-1" in helper.text
