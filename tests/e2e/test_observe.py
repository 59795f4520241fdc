"""Observers: a read-only live copy of an open PTY shell, only with `observe` in the consent."""

from __future__ import annotations

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
    await watcher.expect(rb"Watching alice's shell on T-1\. Your keys are ignored\.")
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
