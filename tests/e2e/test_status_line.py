"""On a terminal the helper keeps a status line at the bottom (ticket, who is connected, what
they have open, time left) and takes single keys: q ends the session, r then a number removes
one engineer. Without a terminal it prints one line per event."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from agent_client.activity import Activity
from tests.e2e.test_files import sftp
from tests.harness import BrokerHarness, helper_argv
from tests.ptydriver import PtyDriver


async def test_status_line_names_the_engineer_and_q_ends_within_a_second(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    customer, engineer = screens
    ticket = await harness.ticket()
    key = await harness.engineer()
    await customer.start(helper_argv(harness, await harness.code(ticket), "--yes"), rows=30)
    await customer.expect(rb"Press q \(or Ctrl-C\) at any time to end the session")
    # The status line sits on the bottom row (30), in reverse video, with the time left.
    status = await customer.expect(
        rb"\x1b\[30;1H\x1b\[2K\x1b\[7m assist T-1 \| ([^\x1b]*\d:\d\d:\d\d left[^\x1b]*)"
    )
    assert b"no engineer connected" in status.group(1)
    assert re.search(rb"[0-7]:[0-5]\d:[0-5]\d left", status.group(1))  # Severity 2: 8 h

    mark = len(customer.output)
    await engineer.start(harness.ssh_args(key, ticket, "-tt"))
    engineer.type(b"echo status-$((6*7))\n")
    await engineer.expect(rb"status-42")
    await customer.expect(rb"assist T-1 \| Alice Smith: shell \|", start=mark)

    customer.type(b"q")
    pressed = time.monotonic()
    await engineer.expect(rb"The customer ended the session\.")
    assert time.monotonic() - pressed < 1.0
    assert await engineer.wait() == 255
    assert await customer.wait() == 0
    await customer.expect(rb"You ended the session\.")
    await harness.wait_audit(ticket, "session.ended", reason="customer")


async def test_r_then_a_number_removes_one_engineer(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    customer, engineer = screens
    ticket = await harness.ticket()
    key = await harness.engineer()
    await customer.start(helper_argv(harness, await harness.code(ticket), "--yes"))
    await customer.expect(rb"Press q")
    await engineer.start(harness.ssh_args(key, ticket, "-tt"))
    engineer.type(b"echo ready-$((6*7))\n")
    await engineer.expect(rb"ready-42")  # the shell's answer, not the local echo

    customer.type(b"r")
    await customer.expect(rb"Remove whom\? 1 = Alice Smith \(any other key: nobody\)")
    customer.type(b"1")
    await engineer.expect(rb"The customer removed you from the session\.")
    assert await engineer.wait() == 255
    await harness.wait_audit(ticket, "session.engineer_removed", engineer="alice")
    live = harness.broker.manager.find(ticket)
    assert live is not None and live.end_reason is None  # the session goes on

    customer.type(b"\x03")
    assert await customer.wait() == 0


async def test_without_a_terminal_each_event_is_one_line(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.connected_helper(ticket, scope="shell,exec,sftp")
    (harness.tmp / "notes.txt").write_text("hello")
    result = await harness.ssh(key, ticket, "cat > /dev/null", stdin=b"x")
    assert result.status == 0
    await helper.wait_for("Alice Smith opened a command: cat > /dev/null")
    await helper.wait_for("Alice Smith's command ended.")
    notes = harness.tmp / "notes.txt"
    result = await sftp(harness, key, ticket, f"get {notes} {harness.tmp / 'copy.txt'}\n")
    assert result.status == 0, result.stderr
    await helper.wait_for("Alice Smith opened a file transfer")
    await helper.wait_for(f"Alice Smith is reading {notes}")
    await helper.wait_for("Alice Smith's file transfer ended.")
    assert "\x1b[" not in helper.text  # no terminal codes in a log


def test_activity_renders_what_is_open_now() -> None:
    now = [1000.0]
    activity = Activity(ticket="T-9", names={"alice": "Alice Smith"}, clock=lambda: now[0])
    activity.set_time_left(3725)
    activity.event("login", {"engineer": "alice"})
    assert activity.status() == (
        "assist T-9 | Alice Smith: connected | 1:02:05 left | q end, r remove one, w who"
    )
    activity.event("opened", {"engineer": "alice", "channel": 1, "kind": "shell"})
    activity.event("opened", {"engineer": "alice", "channel": 2, "kind": "sftp"})
    line = activity.event("file", {"engineer": "alice", "channel": 2, "path": "/srv/a.log"})
    assert line == "Alice Smith is reading /srv/a.log"
    activity.event("forward", {"engineer": "bob", "channel": 3, "host": "db", "port": 5432})
    now[0] += 5
    assert activity.status() == (
        "assist T-9 | Alice Smith: shell, files /srv/a.log | bob: port db:5432 | 1:02:00 left"
        " | q end, r remove one, w who"
    )
    activity.event("forward_closed", {"engineer": "bob", "channel": 3})
    activity.event("closed", {"engineer": "alice", "channel": 2})
    activity.event("parked", {"engineer": "alice", "channel": 1})
    activity.event("logout", {"engineer": "alice"})
    activity.reconnecting = True
    assert activity.status().startswith("assist T-9 | connection lost, reconnecting... |")


async def _consented_with_bob(harness: BrokerHarness, customer: PtyDriver) -> tuple[str, Path]:
    """A customer on a terminal who said yes to Alice; Bob (his key returned) may ask to join."""
    ticket = await harness.ticket()
    await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    await customer.start(helper_argv(harness, await harness.code(ticket)))
    await customer.expect(rb"Allow\? \[y/N\] ")
    customer.type(b"y\n")
    await customer.expect(rb"Press q")
    return ticket, bob


async def test_keys_typed_into_the_live_view_let_nobody_in(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    """A join question takes one key pressed after it was shown: y or a let in, any other key
    says no, so a command typed by habit (even one holding an "a" or a "y") answers no."""
    customer, _ = screens
    ticket, bob = await _consented_with_bob(harness, customer)

    first = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    mark = len(customer.output)
    await customer.expect(rb"Bob Jones from support wants to join", start=mark)
    customer.type(b"ls -la\n")
    result = await first
    assert result.status == 255
    assert result.stderr.decode() == (
        "Waiting for the customer to approve...\n"
        f"The customer did not let you join {ticket} (command: echo hi).\n"
    )
    await harness.wait_audit(ticket, "session.join_declined", engineer="bob")
    mark = len(customer.output)
    # the rest of the line typed by habit answers nothing more (and lets nobody in)
    assert [a for a, _ in await harness.audit(ticket) if a == "session.join_allowed"] == []

    apt = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await customer.expect(rb"Bob Jones from support wants to join", start=mark)
    customer.type(b"apt install x\n")  # "a" asks to confirm "always"; "p" is a no
    assert (await apt).status == 255
    await harness.wait_audit(ticket, "session.join_declined", engineer="bob", always=False)
    mark = len(customer.output)

    second = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await customer.expect(rb"Bob Jones from support wants to join", start=mark)
    # the terminal's reply to a query (here: device attributes) answers nothing
    customer.type(b"\x1b[?62;22c\x1b]11;rgb:0000/0000/0000\x07")
    customer.type(b"y")  # one key, no Enter
    allowed = await second
    assert allowed.stdout == b"hi\n"
    assert allowed.stderr == b"Waiting for the customer to approve...\n"
    await customer.expect(rb"Bob Jones may join\.", start=mark)
    customer.type(b"q")
    assert await customer.wait() == 0


async def test_the_joining_engineer_is_told_to_wait_at_once(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    """The engineer reads why nothing happens yet, before the customer answered; "a" lets them
    in for the rest of the session with one key."""
    customer, engineer = screens
    ticket, bob = await _consented_with_bob(harness, customer)

    mark = len(customer.output)
    await engineer.start(harness.ssh_args(bob, ticket, "-tt"))
    await engineer.expect(rb"Waiting for the customer to approve\.\.\.")
    await customer.expect(rb"Bob Jones from support wants to join: shell\. Allow\?", start=mark)
    assert not [a for a, _ in await harness.audit(ticket) if a.startswith("session.join")]
    customer.type(b"a")  # "always" is confirmed with a second key
    await customer.expect(rb"whenever they connect again in this session", start=mark)
    customer.type(b"y")
    await customer.expect(rb"Bob Jones may join\.", start=mark)
    engineer.type(b"echo joined-$((6*7))\n")
    await engineer.expect(rb"joined-42")
    await harness.wait_audit(ticket, "session.join_allowed", engineer="bob", always=True)
    customer.type(b"q")
    assert await customer.wait() == 0


def test_what_engineers_choose_cannot_paint_the_customers_screen() -> None:
    activity = Activity(ticket="T-1", names={"eve": "Eve"})
    activity.event("opened", {"engineer": "eve", "channel": 1, "kind": "sftp"})
    line = activity.event("file", {"engineer": "eve", "channel": 1, "path": "/x\x1b[2J\nnobody"})
    assert line == "Eve is reading /x\\x1b[2J\\nnobody"
    assert "\x1b" not in activity.status() and "\n" not in activity.status()
    activity.event("parked", {"engineer": "eve", "channel": 2})
    assert "Eve: files /x\\x1b[2J\\nnobody, shell (kept while away)" in activity.status()
