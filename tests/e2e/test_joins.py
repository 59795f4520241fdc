"""Several engineers: each new engineer connection asks the customer (yes / no / always); the
customer can list who is connected and remove one engineer without ending the session."""

from __future__ import annotations

import asyncio

from tests.harness import BrokerHarness, HelperProc

QUESTION = "Bob Jones from support wants to join: command: echo hi. Allow?"


async def _interactive_helper(harness: BrokerHarness, ticket: str) -> HelperProc:
    helper = await harness.helper(await harness.code(ticket), yes=False)
    await helper.wait_for("Allow? [y/N]")
    await helper.type("y")
    await helper.wait_for("Connected.")
    return helper


async def test_second_engineer_needs_the_customers_yes_each_time_unless_always(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    helper = await _interactive_helper(harness, ticket)

    # The engineer who issued the code was let in by the consent itself.
    assert (await harness.ssh(alice, ticket, "echo hi")).stdout == b"hi\n"
    assert helper.count("wants to join") == 0

    first = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await helper.wait_for(QUESTION)
    await helper.type("y")
    assert (await first).stdout == b"hi\n"

    second = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await helper.wait_for(QUESTION, count=2)
    await helper.type("n")
    refused = await second
    assert refused.status == 255 and refused.stdout == b""
    assert refused.stderr.decode() == (
        "Waiting for the customer to approve...\n"
        f"The customer did not let you join {ticket} (command: echo hi).\n"
    )

    third = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await helper.wait_for(QUESTION, count=3)
    await helper.type("a")
    assert (await third).stdout == b"hi\n"
    assert (await harness.ssh(bob, ticket, "echo hi")).stdout == b"hi\n"  # not asked again
    assert helper.count(QUESTION) == 3

    answers = [
        (a, d["always"]) for a, d in await harness.audit(ticket) if a.startswith("session.join")
    ]
    assert answers == [
        ("session.join_allowed", False),
        ("session.join_declined", False),
        ("session.join_allowed", True),
    ]


async def test_customer_lists_and_removes_one_engineer(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    helper = await _interactive_helper(harness, ticket)
    bob_ssh = await asyncio.create_subprocess_exec(
        *harness.ssh_args(bob, ticket),
        "echo started; sleep 60",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await helper.wait_for("Bob Jones from support wants to join")
    await helper.type("y")
    assert bob_ssh.stdout is not None and bob_ssh.stderr is not None
    assert await asyncio.wait_for(bob_ssh.stdout.readline(), 10) == b"started\n"

    await helper.type("who")
    line = await helper.wait_for("Connected: ")
    assert "Bob Jones (bob)" in line

    await helper.type("remove Bob Jones")  # the name the customer reads (the login works too)
    assert await asyncio.wait_for(bob_ssh.wait(), 5) == 255
    assert b"The customer removed you from the session." in await bob_ssh.stderr.read()
    await helper.wait_for("Removed Bob Jones.")
    await harness.wait_audit(ticket, "session.engineer_removed", engineer="bob")

    # The session goes on for Alice; Bob must be let in again.
    assert (await harness.ssh(alice, ticket, "echo still-here")).stdout == b"still-here\n"
    again = asyncio.ensure_future(harness.ssh(bob, ticket, "echo hi"))
    await helper.wait_for(QUESTION)
    await helper.type("n")
    assert (await again).status == 255


async def test_helper_with_yes_allows_joins_and_says_so(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    helper = await harness.connected_helper(ticket)
    assert (await harness.ssh(bob, ticket, "echo hi")).stdout == b"hi\n"
    await helper.wait_for("Bob Jones joined: command: echo hi (allowed by --yes).")
