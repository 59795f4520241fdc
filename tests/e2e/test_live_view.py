"""The customer's live view: on a terminal, the helper shows what the engineer's shell shows."""

from __future__ import annotations

from tests.harness import BrokerHarness, helper_argv
from tests.ptydriver import PtyDriver


async def test_customer_sees_the_engineers_shell(
    harness: BrokerHarness, screens: tuple[PtyDriver, PtyDriver]
) -> None:
    customer, engineer = screens
    ticket = await harness.ticket()
    key = await harness.engineer()
    code = await harness.code(ticket)
    await customer.start(helper_argv(harness, code, "--yes"), cols=100, rows=30)
    await customer.expect(rb"Connected\.")

    await engineer.start(harness.ssh_args(key, ticket, "-tt"))
    engineer.type(b"echo hello-$((6*7))-from-engineer\n")
    await engineer.expect(rb"hello-42-from-engineer")
    await customer.expect(rb"hello-42-from-engineer")  # the same screen, on the customer's side

    customer.type(b"\x03")  # Ctrl-C on the customer's keyboard ends everything
    assert await customer.wait() == 0
    await customer.expect(rb"You ended the session\.")
    assert await engineer.wait() == 255
