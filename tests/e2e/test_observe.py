"""Observers: a read-only live copy of an open PTY shell, only with `observe` in the consent."""

from __future__ import annotations

from pathlib import Path

from tests.harness import BrokerHarness
from tests.ptydriver import PtyDriver


async def test_observer_sees_the_drivers_output_and_cannot_type(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    driver, watcher = screens
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    await harness.connected_helper(ticket, scope="shell,observe")
    await driver.start(harness.ssh_args(alice, ticket, "-tt"))
    driver.type(b"echo driver-ready-$((6*7))\n")
    await driver.expect(rb"driver-ready-42")

    await watcher.start(harness.ssh_args(bob, f"{ticket}+watch", "-tt"))
    await watcher.expect(rb"Watching alice's shell on T-1, read-only\. Ctrl-D or Ctrl-C leaves\.")
    watcher.type(b"echo typed-by-observer-$((1+1))\n")
    driver.type(b"echo from-driver-$((3*3))\n")
    await watcher.expect(rb"from-driver-9")
    await driver.expect(rb"from-driver-9")
    assert b"typed-by-observer-2" not in driver.output  # observer input is discarded

    driver.type(b"exit\n")
    assert await driver.wait() == 0
    await watcher.expect(rb"The shell you were watching has ended\.")
    assert await watcher.wait() == 0
    closed = await harness.wait_audit(ticket, "channel.closed", kind="observe")
    assert closed["reason"] == "driver_ended" and closed["bytes_out"] > 0
    opened = await harness.wait_audit(ticket, "channel.opened", kind="observe")
    assert opened["driver"] == "alice"


async def test_watching_needs_observe_in_the_consent_and_an_open_shell(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    await harness.connected_helper(ticket, scope="shell")
    refused = await harness.ssh(alice, f"{ticket}+watch", options=("-tt",), stdin=b"")
    assert refused.status == 255
    assert b"watching is not in the consent (granted: shell)" in refused.stderr
    await harness.wait_audit(ticket, "channel.refused", kind="observe")

    other = await harness.ticket(title="other")
    await harness.connected_helper(other, scope="shell,observe")
    nothing = await harness.ssh(alice, f"{other}+watch", options=("-tt",), stdin=b"")
    assert nothing.status == 255 and b"No shell is open on T-2 to watch yet." in nothing.stderr

    odd = await harness.ssh(alice, f"{other}+root", "id")
    assert odd.status == 255 and b"Unknown mode '+root'" in odd.stderr


async def _watching(harness: BrokerHarness, driver: PtyDriver) -> tuple[str, Path]:
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    await harness.connected_helper(ticket, scope="shell,observe")
    await driver.start(harness.ssh_args(alice, ticket, "-tt"))
    return ticket, bob


async def test_a_watcher_first_sees_the_screen_as_it_is_and_ctrl_d_leaves(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    driver, watcher = screens
    ticket, bob = await _watching(harness, driver)
    driver.type(b"echo gone-$((1+1)); clear; echo shown-$((6*7))\n")
    mark = (await driver.expect(rb"shown-42")).end()
    await driver.expect(rb"[$#] ", start=mark)  # the prompt after it

    await watcher.start(harness.ssh_args(bob, f"{ticket}+watch", "-tt"))
    # at once, with no new output from the shell: its screen since the clear
    await watcher.expect(rb"shown-42(.|\n)*Ctrl-D or Ctrl-C leaves\.")
    assert b"gone-2" not in watcher.output  # cleared from the driver's screen before

    watcher.type(b"\x04")
    await watcher.expect(rb"You stopped watching\.")
    assert await watcher.wait() == 0
    closed = await harness.wait_audit(ticket, "channel.closed", kind="observe")
    assert closed["reason"] == "left"

    driver.type(b"echo driver-goes-on-$((2+3))\n")  # the watched shell is untouched
    await driver.expect(rb"driver-goes-on-5")
    driver.type(b"exit\n")
    assert await driver.wait() == 0


async def test_a_watcher_joining_a_full_screen_program_sees_it_and_the_shell_after(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    """The alternate screen (vim, less, htop): the watcher sees the program's screen, then
    the shell's lines again when it quits, as the driver's own terminal does."""
    driver, watcher = screens
    ticket, bob = await _watching(harness, driver)
    driver.type(b"echo main-$((3*3)); printf '\\033[?1049h\\033[H\\033[2Jfull-%s' $((5*5))\n")
    await driver.expect(rb"full-25")

    await watcher.start(harness.ssh_args(bob, f"{ticket}+watch", "-tt"))
    await watcher.expect(rb"main-9(.|\n)*\x1b\[\?1049h(.|\n)*full-25")
    driver.type(b"printf '\\033[?1049l'; echo back-$((4+4))\n")
    await watcher.expect(rb"\x1b\[\?1049l(.|\n)*back-8")

    watcher.type(b"\x03")  # Ctrl-C leaves too
    await watcher.expect(rb"You stopped watching\.")
    assert await watcher.wait() == 0
    driver.type(b"exit\n")
    assert await driver.wait() == 0


async def test_a_watcher_waiting_for_the_customer_can_leave_with_ctrl_d(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    """While the customer is still asked whether Bob may watch, Ctrl-D leaves; the question
    then lets nobody in."""
    driver, watcher = screens
    ticket = await harness.ticket()
    alice = await harness.engineer()
    bob = await harness.engineer("bob", "Bob Jones")
    helper = await harness.helper(await harness.code(ticket, scope="shell,observe"), yes=False)
    await helper.wait_for("Allow? [y/N]")
    await helper.type("y")
    await helper.wait_for("Connected.")
    await driver.start(harness.ssh_args(alice, ticket, "-tt"))
    await driver.expect(rb"[$#] ")

    await watcher.start(harness.ssh_args(bob, f"{ticket}+watch", "-tt"))
    await watcher.expect(rb"Waiting for the customer to approve\.\.\.")
    await helper.wait_for("Bob Jones from support wants to join")
    watcher.type(b"\x04")
    await watcher.expect(rb"You stopped watching\.")
    assert await watcher.wait() == 0
    await helper.type("y")  # too late: the watch is gone
    await harness.wait_audit(ticket, "session.join_allowed", engineer="bob")
    assert not [
        d
        for a, d in await harness.audit(ticket)
        if a == "channel.opened" and d.get("kind") == "observe"
    ]
    driver.type(b"exit\n")
    assert await driver.wait() == 0
