"""Consent that cannot be forged: text from outside (ticket titles, names, commands, host names)
never drives the customer's or the admin's terminal, and control characters are refused where
people type them in."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from sqlalchemy import update

from broker.store import queries as q
from broker.store.models import Account, Session, Ticket
from broker.vocabulary import Action, declare
from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness, helper_argv, helper_env
from tests.ptydriver import PtyDriver
from tests.web.openapi_check import checked_session

#: clear the screen, go home, and paint a question the audit will not record
FORGED = "\x1b[2J\x1b[HBob asks only to look at one log file. Allow? [y/N] \x1b[8m"
ESC = "\x1b"


async def _hostile_ticket(harness: BrokerHarness) -> str:
    """A ticket whose title and engineer name hold escape sequences, as if written before the
    broker refused them (or straight into the database)."""
    ticket = await harness.ticket()
    async with harness.store.begin() as db:
        await db.execute(update(Ticket).where(Ticket.key == ticket).values(title=FORGED))
        await db.execute(
            update(Account).where(Account.name == "alice").values(display_name="Alice\x1b]0;x\x07")
        )
    return ticket


@pytest.mark.smoke
async def test_consent_question_shows_escapes_instead_of_obeying_them(
    harness: BrokerHarness,
) -> None:
    key = await harness.engineer()
    ticket = await _hostile_ticket(harness)
    helper = await harness.helper(await harness.code(ticket, scope="shell,exec"))
    await helper.wait_for("Connected.")
    question = await helper.wait_for("from support asks to")
    assert "\\x1b[2J\\x1b[HBob asks only to look at one log file." in question
    assert "Alice\\x1b]0;x\\x07 from support asks to open a shell and run commands" in question
    command = "printf 'done'; : \x1b[2J\x1b]2;evil\x07"
    result = await harness.ssh(key, ticket, command)
    assert result.stdout == b"done"
    await helper.wait_for("opened a command")
    helper.interrupt()
    assert await helper.finish() == 0
    assert ESC not in helper.text  # not one escape byte reached the customer's terminal
    assert "opened a command: printf 'done'; : \\x1b[2J\\x1b]2;evil\\x07" in helper.text
    receipt = "- Alice\\x1b]0;x\\x07: printf 'done'; : \\x1b[2J\\x1b]2;evil\\x07"
    assert receipt in helper.text  # the receipt, by the name shown, made visible too


async def test_join_question_and_notices_show_escapes(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    """On a terminal: a joining engineer's command is shown, not obeyed, in the join question."""
    customer, _ = screens
    ticket = await harness.ticket()
    await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    async with harness.store.begin() as db:
        await db.execute(
            update(Account).where(Account.name == "bob").values(display_name="Bob\x1b[2K\rX")
        )
    await customer.start(helper_argv(harness, await harness.code(ticket)))
    await customer.expect(rb"Allow\? \[y/N\] ")
    customer.type(b"y\n")
    await customer.expect(rb"Press q")
    mark = len(customer.output)
    joining = asyncio.ensure_future(harness.ssh(bob, ticket, "echo \x1b[31mred"))
    asked = await customer.expect(rb"wants to join: ([^\r\n]*)Allow\?", start=mark)
    assert b"Bob\\x1b[2K\\rX from support" in customer.output[mark:]
    assert asked.group(1).startswith(b"command: echo \\x1b[31mred")
    assert b"\x1b[31m" not in customer.output and b"\x1b[2K\rX" not in customer.output
    customer.type(b"n")
    customer.type(b"\n")
    await joining
    customer.type(b"q")
    assert await customer.wait() == 0


async def test_control_characters_are_refused_where_typed(harness: BrokerHarness) -> None:
    """The command line and the API name the field; nothing is stored."""
    bad_title = await cli(harness, "ticket", "create", "--title", FORGED, "--severity", "2")
    assert bad_title.status == 2
    assert b"the title must not contain control characters (found \\x1b)" in bad_title.stderr
    bad_mail = await cli(
        harness, "ticket", "create", "--title", "ok", "--severity", "2",
        "--customer-email", "a@b.c\x1b[2J",
    )  # fmt: skip
    assert bad_mail.status == 2 and b"customer e-mail must not contain control" in bad_mail.stderr
    (harness.tmp / "k.pub").write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x\n"
    )
    bad_name = await cli(
        harness, "account", "add", "mallory", "--role", "engineer",
        "--name", "Mallory\x07", "--ssh-key", str(harness.tmp / "k.pub"),
    )  # fmt: skip
    assert bad_name.status == 2 and b"the display name must not contain" in bad_name.stderr
    ticket = await harness.ticket()
    await harness.engineer()
    bad_host = await cli(
        harness, "code", "issue", ticket, "--engineer", "alice", "--scope", "port:db\x1b[2J:5432"
    )
    assert bad_host.status == 2 and b"the host in scope item" in bad_host.stderr
    async with harness.store.read() as db:
        titles = [t.title for t in (await db.execute(Ticket.__table__.select())).all()]
    assert titles == ["Mail queue stuck"]

    token = await harness.token("root-admin", "admin")
    async with checked_session(headers={"Authorization": f"Bearer {token}"}) as http:
        for path, body, field in (
            ("/api/v1/tickets", {"title": FORGED, "severity": 2}, "body.title"),
            (
                "/api/v1/tickets",
                {"title": "ok", "severity": 2, "customer_email": "x@y.z\n"},
                "body.customer_email",
            ),
            ("/api/v1/accounts", {"name": "m", "role": "auditor", "display_name": "M\x1b"}, ""),
            ("/api/v1/tokens", {"name": "ci\u202e"}, "body.name"),
        ):
            async with http.post(harness.base_url + path, json=body) as response:
                answer = await response.json()
            assert response.status == 400, (path, answer)
            assert "must not contain control characters" in answer["error"], answer
            assert field in answer["error"]


async def test_admin_terminal_shows_escapes_in_every_listing(harness: BrokerHarness) -> None:
    """A failed web login's user name, a helper's host name, a title written before the checks:
    audit show, ticket list/show and session list print them made visible."""
    key = await harness.engineer()
    ticket = await _hostile_ticket(harness)
    helper = await harness.helper(await harness.code(ticket))
    await helper.wait_for("Connected.")
    assert (await harness.ssh(key, ticket, "true")).status == 0
    async with harness.store.begin() as db:
        await db.execute(
            update(Session).values(customer_host={"hostname": "pc\x1b[2J", "user": "u", "os": "x"})
        )
    async with checked_session() as http:
        async with http.post(
            harness.base_url + "/login",
            data={"name": "root\x1b]0;owned\x07", "password": "wrong password!"},
        ) as response:
            assert response.status == 401
    for command in (
        ("audit", "show"),
        ("ticket", "list"),
        ("ticket", "show", ticket),
        ("session", "list"),
        ("account", "list"),
    ):
        shown = await cli(harness, *command)
        assert shown.status == 0, (command, shown.stderr)
        assert b"\x1b" not in shown.stdout and b"\x07" not in shown.stdout, command
    audit = (await cli(harness, "audit", "show")).stdout.decode()
    assert "root\\x1b]0;owned\\x07" in audit
    assert "\\x1b[2J\\x1b[HBob asks only" in (await cli(harness, "ticket", "list")).stdout.decode()
    sessions = (await cli(harness, "session", "list", "--json")).stdout
    assert json.loads(sessions)[0]["customer_host"]["hostname"] == "pc\x1b[2J"  # exact in JSON


async def test_the_code_can_be_typed_instead_of_passed_in_argv(harness: BrokerHarness) -> None:
    """The helper asks for the code; it never appears in the process's arguments."""
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    argv = [a for a in helper_argv(harness, code) if a != code] + ["--yes"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=helper_env(),
    )
    assert proc.stdin is not None and proc.stdout is not None
    cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    assert code.encode() not in cmdline and argv[0].encode() in cmdline
    proc.stdin.write(code.encode() + b"\n")
    await proc.stdin.drain()
    seen = b""
    async with asyncio.timeout(20):
        while b"Connected." not in seen:
            chunk = await proc.stdout.read(4096)
            assert chunk, seen
            seen += chunk
    proc.stdin.write(b"end\n")
    await proc.stdin.drain()
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_the_code_prompt_on_a_terminal(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    customer, _ = screens
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    await customer.start([a for a in helper_argv(harness, code) if a != code])
    await customer.expect(rb"Consent code \(the engineer gave it to you, like 123-456-789\): ")
    customer.type(code.encode() + b"\n")
    await customer.expect(rb"Allow\? \[y/N\] ")
    customer.type(b"n\n")
    await customer.expect(rb"You said no")
    assert await customer.wait() == 2


async def test_no_code_at_all_is_a_plain_refusal() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent_client", "connect", "--broker", "127.0.0.1:1",
        "--fingerprint", "SHA256:x", "--allow-root",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"No consent code was given" in err


async def test_detail_keys_are_shown_made_visible_too(harness: BrokerHarness) -> None:
    """Even an event's detail *keys* (or a detail named like a multi-line field) cannot drive
    the admin's terminal."""
    hostile = ("\x1b[2J\x1b[HFORGED", "settings", "public_key")
    declare(Action("test.keys", "tester", hostile, "A test's own event."))
    async with harness.store.begin() as db:
        await q.append_audit(
            db,
            action="test.keys",
            actor="tester",
            ticket_id=None,
            details={"\x1b[2J\x1b[HFORGED": "x", "settings": "a\nb\x1b[31m", "public_key": "c\n"},
        )
    shown = await cli(harness, "audit", "show")
    assert shown.status == 0 and b"\x1b" not in shown.stdout
    assert b"\\x1b[2J\\x1b[HFORGED=x" in shown.stdout
    line = next(x for x in shown.stdout.splitlines() if b"test.keys" in x)
    assert b"settings=a\\nb\\x1b[31m" in line  # the event's line stays one line
