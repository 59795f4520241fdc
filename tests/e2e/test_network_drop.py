"""A dropped network between the customer and the broker: the helper reconnects with its resume
token, the customer's shell survives, and the engineer gets it back with the same ssh command."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_client import consent_ui as ui
from agent_client.dial import DialFailed, dial
from assist_protocol.constants import RESUME_PREFIX
from broker.evidence.signing import Signer
from broker.evidence.verify import verify_store
from broker.session.consent import MESSAGES
from broker.sinks.recorder import MARK_DROPPED, MARK_REATTACHED
from broker.store import queries as q
from tests.harness import BrokerHarness, HelperProc, start_helper
from tests.netcut import CuttableProxy
from tests.ptydriver import PtyDriver


@pytest.fixture
async def dropping(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[BrokerHarness, CuttableProxy]]:
    """A broker and a proxy in front of it that can cut the helper's connections; with
    ``@pytest.mark.parametrize("dropping", [...], indirect=True)`` the helper link kind."""
    link = getattr(request, "param", "reverse")
    harness = await BrokerHarness(tmp_path, session_grace=20.0, helper_link=link).start()
    proxy = await CuttableProxy(harness.port).start()
    yield harness, proxy
    await proxy.close()
    await harness.stop()


async def helper_through(harness: BrokerHarness, proxy: CuttableProxy, ticket: str) -> HelperProc:
    code = await harness.code(ticket)
    helper = await start_helper(code, proxy.port, harness.fingerprint)
    harness.helpers.append(helper)
    await helper.wait_for("Connected.")
    return helper


async def session_ids(harness: BrokerHarness, ticket: str) -> set[str]:
    async with harness.store.read() as db:
        t = await q.get_ticket(db, ticket)
        return {str(e.session_id) for e in await q.list_audit(db, t) if e.session_id}


def cast_events(path: Path) -> list[list[object]]:
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


@pytest.mark.parametrize("dropping", ["reverse", "nested"], indirect=True)
async def test_shell_survives_a_drop_and_the_engineer_gets_it_back(
    dropping: tuple[BrokerHarness, CuttableProxy],
) -> None:
    harness, proxy = dropping
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await helper_through(harness, proxy, ticket)

    before = PtyDriver()
    await before.start(harness.ssh_args(key, ticket, "-tt"))
    before.type(b"export MARK=kept-$((6*7)); echo set-$MARK pid-$$\n")
    match = await before.expect(rb"set-kept-42 pid-(\d+)")
    shell_pid = int(match.group(1))

    proxy.down()  # the customer's Wi-Fi goes away
    await before.expect(rb"The connection to the customer dropped")
    assert await before.wait() == 255
    before.close()
    await helper.wait_for("The connection to the support broker dropped. Reconnecting...")
    await harness.wait_audit(ticket, "session.disconnected", grace_seconds=20.0)
    os.kill(shell_pid, 0)  # the shell still runs on the customer's side

    proxy.up()
    await helper.wait_for("Reconnected after")
    resumed = await harness.wait_audit(ticket, "session.resumed")
    assert float(str(resumed["gap_seconds"])) > 0

    after = PtyDriver()
    await after.start(harness.ssh_args(key, ticket, "-tt"))  # the same ssh command
    await after.expect(rb"\[assist\] The connection dropped for \d+ s; your shell kept running")
    await after.expect(rb"set-kept-42")  # the last screen, re-sent
    after.type(b"echo again-$MARK pid-$$\n")
    await after.expect(rf"again-kept-42 pid-{shell_pid}".encode())  # the very same shell

    helper.interrupt()
    assert await helper.finish() == 0
    await after.wait()
    after.close()
    ended = await harness.wait_audit(ticket, "session.ended")
    assert ended["reason"] == "customer"
    assert len(await session_ids(harness, ticket)) == 1  # one session throughout

    actions = [name for name, _ in await harness.audit(ticket)]
    gap = actions.index("session.disconnected"), actions.index("session.resumed")
    assert gap[0] < gap[1] < actions.index("session.ended")
    casts = sorted((harness.tmp / "var" / "recordings").rglob("*.cast"), key=os.path.getmtime)
    assert len(casts) == 2
    first, second = cast_events(casts[0]), cast_events(casts[1])
    assert [e[2] for e in first if e[1] == "m"] == [MARK_DROPPED]
    assert [e[2] for e in second if e[1] == "m"] == [MARK_REATTACHED]
    assert second[0][1] == "m"
    report = await verify_store(
        harness.store, Signer.load(harness.settings.data_dir).public, harness.settings.data_dir
    )
    assert report.ok and report.recordings == 2, report.problems


async def test_no_return_within_the_grace_period_ends_the_session(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, session_grace=2.0).start()
    proxy = await CuttableProxy(harness.port).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await helper_through(harness, proxy, ticket)
        shell = PtyDriver()
        await shell.start(harness.ssh_args(key, ticket, "-tt"))
        shell.type(b"echo pid-$$\n")
        shell_pid = int((await shell.expect(rb"pid-(\d+)")).group(1))

        proxy.down()
        assert await shell.wait() == 255
        shell.close()
        await harness.wait_audit(ticket, "session.ended", reason="network", timeout=10)
        await helper.wait_for(ui.NOT_BACK.format(grace="2 seconds").splitlines()[0], timeout=10)
        assert await helper.finish() == 1
        with pytest.raises(ProcessLookupError):  # the parked shell was hung up
            for _ in range(100):
                os.kill(shell_pid, 0)
                await asyncio.sleep(0.05)
    finally:
        await proxy.close()
        await harness.stop()


async def test_a_wrong_resume_token_is_refused_in_plain_words(
    dropping: tuple[BrokerHarness, CuttableProxy],
) -> None:
    harness, _ = dropping
    ticket = await harness.ticket()
    await harness.engineer()
    await harness.connected_helper(ticket)
    session = next(iter(await session_ids(harness, ticket)))
    with pytest.raises(DialFailed) as refused:
        await dial(
            "127.0.0.1", harness.port, harness.fingerprint, f"{RESUME_PREFIX}{session}.forged"
        )
    assert refused.value.message == MESSAGES["resume_refused"]
    assert refused.value.final
    await harness.wait_audit(ticket, "session.resume_refused", source="127.0.0.1")


async def test_helper_notices_first_and_resumes_at_once(
    dropping: tuple[BrokerHarness, CuttableProxy],
) -> None:
    """A laptop changes networks: the helper's side breaks, the broker's old connection stays
    open and silent. The helper's resume replaces it at once; a wrong token changes nothing."""
    harness, proxy = dropping
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await helper_through(harness, proxy, ticket)
    shell = PtyDriver()
    await shell.start(harness.ssh_args(key, ticket, "-tt"))
    shell.type(b"export MARK=moved-$((6*7))\n")
    shell.type(b"echo pid-$$\n")
    pid = int((await shell.expect(rb"pid-(\d+)")).group(1))

    proxy.cut_client_side()
    await helper.wait_for("Reconnected after")
    resumed = await harness.wait_audit(ticket, "session.resumed")
    accepted = await harness.wait_audit(ticket, "session.resume_accepted", source="127.0.0.1")
    assert float(str(resumed["gap_seconds"])) < 5 and "token" not in str(accepted)
    await shell.expect(rb"The connection to the customer dropped")  # the old path was closed
    shell.close()

    again = PtyDriver()
    await again.start(harness.ssh_args(key, ticket, "-tt"))
    again.type(b"echo $MARK pid-$$\n")
    await again.expect(rf"moved-42 pid-{pid}".encode())
    again.close()

    (live,) = harness.broker.manager.live()
    spent = f"{RESUME_PREFIX}{live.id}.not-the-token"
    with pytest.raises(DialFailed):
        await dial("127.0.0.1", harness.port, harness.fingerprint, spent)
    refused = await harness.wait_audit(ticket, "session.resume_refused")
    assert refused["reason"] == "wrong_token"
    assert live.end_reason is None  # a wrong token changes nothing for the real helper
