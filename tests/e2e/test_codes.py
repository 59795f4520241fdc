"""Consent codes as the customer meets them: every refusal has its own plain message."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncssh

from agent_client import consent_ui as ui
from broker.session.consent import MESSAGES
from tests.harness import BrokerHarness, helper_env


async def test_wrong_code_is_refused_in_plain_words(harness: BrokerHarness) -> None:
    """A code nobody issued: the customer reads the 'not valid' message; the audit says why."""
    await harness.ticket()
    helper = await harness.helper("111-222-333")
    assert await helper.finish() == 2
    assert MESSAGES["unknown"] in helper.lines
    events = [d for a, d in await harness.audit() if a == "consent.rejected"]
    assert events and events[-1]["reason"] == "unknown"
    assert "111" not in str(events)  # the code itself is never stored or logged


async def test_expired_code_is_refused(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket, ttl=0.001)
    helper = await harness.helper(code)
    assert await helper.finish() == 2
    assert MESSAGES["expired"] in helper.lines
    await harness.wait_audit(ticket, "consent.rejected", reason="expired")


async def test_used_code_is_refused_the_second_time(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    first = await harness.helper(code)
    await first.wait_for("Connected.")
    second = await harness.helper(code)
    assert await second.finish() == 2
    assert MESSAGES["used"] in second.lines
    await harness.wait_audit(ticket, "consent.rejected", reason="used")


async def test_malformed_code_is_explained_and_never_sent(harness: BrokerHarness) -> None:
    for typed in ("12345", "hello"):
        helper = await harness.helper(typed)
        assert await helper.finish() == 2
        assert MESSAGES["malformed"] in helper.lines
    assert not [a for a, _ in await harness.audit() if a.startswith("consent.")]


async def test_too_many_wrong_codes_tell_how_long_to_wait(tmp_path: Path) -> None:
    """After the per-source limit, even a right code waits; the message names the wait."""
    harness = await BrokerHarness(tmp_path, code_fail_per_source=2, code_fail_window=120.0).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        good = await harness.code(ticket)
        for wrong in ("111-111-111", "222-222-222"):
            assert await (await harness.helper(wrong)).finish() == 2
        limited = await harness.helper(good)
        assert await limited.finish() == 2
        line = await limited.wait_for("Too many wrong codes")
        assert line.startswith("Too many wrong codes were tried. Wait ")
        assert line.endswith(" seconds, then try again.")
        assert 100 <= int(line.split()[7]) <= 120
        reasons = [d["reason"] for a, d in await harness.audit() if a == "consent.rejected"]
        assert reasons == ["unknown", "unknown"]  # the refusal while limited: counted, below
        assert harness.broker.refusals is not None
        await harness.broker.refusals.report(flush=True)
        summary = await harness.wait_audit(None, "access.rate_limited")
        assert summary["where"] == "consent_code" and summary["refused"] == 1
        assert summary["prefix"] == "127.0.0.1/32"
    finally:
        await harness.stop()


async def test_old_and_malformed_codes_do_not_lock_the_customer_out(tmp_path: Path) -> None:
    """Only an unknown code can be a guess. Expired, used, withdrawn and malformed codes are
    refused and audited, but a fresh code still gets in after many of them."""
    # 3 wrong guesses; the 8 old codes below stay under the limit of their own (4 x 3)
    harness = await BrokerHarness(tmp_path, code_fail_per_source=3, code_fail_window=120.0).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        expired = await harness.code(ticket, ttl=0.001)
        revoked, row = await harness.broker.manager.codes.issue(ticket, "alice", "shell", 600)
        await harness.broker.manager.codes.revoke(row.id, "alice")
        used = await harness.code(await harness.ticket("Printer offline"))
        assert await _redeem_in_process(harness, used)
        for old in (expired, expired, used, used, revoked):
            assert not await _redeem_in_process(harness, old)
        for malformed in ("hello", "12345", "hello"):  # an older helper sends them
            assert not await _redeem_in_process(harness, malformed)
        reasons = [d["reason"] for a, d in await harness.audit() if a == "consent.rejected"]
        assert reasons == ["expired"] * 2 + ["used"] * 2 + ["revoked"] + ["malformed"] * 3
        fresh = await harness.helper(await harness.code(ticket))
        await fresh.wait_for("Connected.")
    finally:
        await harness.stop()


async def test_a_flood_of_old_codes_is_limited_and_not_written_row_by_row(tmp_path: Path) -> None:
    """Old codes are no guesses, but anyone holds one (a former customer) or can make a
    malformed one: past a limit of their own (4 x the guesses') they are refused as rate
    limited and counted for the summary, not each written into the audit chain."""
    harness = await BrokerHarness(tmp_path, code_fail_per_source=2, code_fail_window=120.0).start()
    try:
        await harness.engineer()
        used = await harness.code(await harness.ticket())
        assert await _redeem_in_process(harness, used)
        for _ in range(12):
            assert not await _redeem_in_process(harness, used)
        assert not await _redeem_in_process(harness, "hello")
        reasons = [d["reason"] for a, d in await harness.audit() if a == "consent.rejected"]
        assert reasons == ["used"] * 8
        assert harness.broker.refusals is not None
        await harness.broker.refusals.report(flush=True)
        (summary,) = [d for a, d in await harness.audit() if a == "access.rate_limited"]
        assert summary["refused"] == 5, summary
    finally:
        await harness.stop()


async def test_closing_a_ticket_withdraws_its_codes(harness: BrokerHarness) -> None:
    """A code still out when its ticket is closed opens nothing: it is withdrawn (audited)."""
    from broker import ops
    from broker.ops.base import Actor

    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    await ops.tickets.set_status(harness.store, Actor("root", "admin"), ticket, "closed")
    await harness.wait_audit(ticket, "consent.revoked")
    helper = await harness.helper(code)
    assert await helper.finish() == 2
    assert "This code was withdrawn by the support desk." in helper.text


async def test_missing_or_wrong_fingerprint_is_refused_before_the_code_is_sent(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)

    unpinned = await harness.helper(code, fingerprint="")
    assert await unpinned.finish() == 2
    assert ui.NEED_FINGERPRINT.splitlines()[0] in unpinned.lines

    wrong = "SHA256:" + "A" * 43
    mismatched = await harness.helper(code, fingerprint=wrong)
    assert await mismatched.finish() == 2
    expected = ui.MISMATCH.format(
        where=f"127.0.0.1:{harness.port}", got=harness.fingerprint, expected=wrong
    )
    assert expected in mismatched.text  # word for word, with what to do
    # The code was never sent, so it still works with the right fingerprint.
    assert not [a for a, _ in await harness.audit(ticket) if a.startswith("consent.re")]
    good = await harness.helper(code)
    await good.wait_for("Connected.")


async def test_broker_unreachable_is_explained(tmp_path: Path) -> None:
    harness = BrokerHarness(tmp_path)
    harness.port, harness.fingerprint = 1, "SHA256:" + "A" * 43
    helper = await harness.helper("123-456-789")
    assert await helper.finish() == 2
    expected = ui.UNREACHABLE.format(where="127.0.0.1:1", reason="nothing answered at that address")
    assert expected in helper.text, helper.text


async def _helper_alone(broker: str, fingerprint: str, *extra: str) -> tuple[int, str]:
    """The helper run as the customer would, with a code that cannot work: its exit status
    and all it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "agent_client", "connect", "123-456-789"),
        *("--broker", broker, "--fingerprint", fingerprint, *extra),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=helper_env(),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_broker_without_a_port_is_dialled_on_the_default_port(tmp_path: Path) -> None:
    """``--broker HOST`` means HOST:2222, the broker's documented SSH port (nothing is sent:
    whatever answers there, if anything, cannot have this fingerprint)."""
    status, out = await _helper_alone(
        "127.0.0.1", "SHA256:" + "A" * 43, *(["--allow-root"] if os.geteuid() == 0 else [])
    )
    assert status == 2
    assert "must look like" not in out
    assert "broker at 127.0.0.1:2222 " in out, out


async def test_customer_who_says_no_gives_no_access(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    helper = await harness.helper(await harness.code(ticket), yes=False)
    assert helper.proc.stdin is not None
    helper.proc.stdin.write(b"n\n")
    await helper.proc.stdin.drain()
    assert await helper.finish() == 2
    assert ui.DECLINED in helper.lines
    assert (
        "Alice Smith from support asks to open a shell and run commands on this computer "
        "for ticket T-1 (Severity 2: Mail queue stuck). Allow? [y/N] "
    ) in helper.text
    await harness.wait_audit(ticket, "session.declined")
    await harness.wait_audit(ticket, "session.ended", reason="declined")
    result = await harness.ssh(key, ticket, "true")
    assert result.status == 255 and b"No customer is connected for T-1" in result.stderr


async def _redeem_in_process(harness: BrokerHarness, code: str, source: str = "127.0.0.1") -> bool:
    """An SSH login as the helper would do it, from ``source`` (any loopback address); True if
    the broker accepted the code."""

    class Client(asyncssh.SSHClient):
        answered = False

        def kbdint_auth_requested(self) -> str | None:
            return None if self.answered else ""

        def kbdint_challenge_received(self, *args: object) -> list[str]:
            self.answered = True
            return [code]

    try:
        conn = await asyncssh.connect(
            "127.0.0.1",
            harness.port,
            username="agent",
            client_factory=Client,
            known_hosts=None,
            client_keys=None,
            agent_path=None,
            config=None,
            preferred_auth="keyboard-interactive",
            local_addr=(source, 0),
        )
    except asyncssh.PermissionDenied:
        return False
    conn.close()
    return True


async def test_twenty_helpers_racing_with_one_code_open_one_session(
    harness: BrokerHarness,
) -> None:
    """20 concurrent SSH logins with the same code, from 20 networks (so that no limit holds
    any back): exactly one wins, the rest hear 'used'."""
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)

    results = await asyncio.gather(
        *(_redeem_in_process(harness, code, f"127.0.{n}.1") for n in range(1, 21))
    )

    assert results.count(True) == 1
    actions = [a for a, _ in await harness.audit(ticket)]
    assert actions.count("consent.redeemed") == 1
    assert actions.count("consent.rejected") == 19


async def test_helper_refuses_to_run_as_root_unless_told(harness: BrokerHarness) -> None:
    """Running as root would hand the engineer the whole computer: refused, with the way out."""
    import os

    import pytest

    from agent_client.cli import ROOT_REFUSED, ROOT_WARNING

    if os.geteuid() != 0:
        pytest.skip("needs root: this machine runs the tests as a normal user")
    status, out = await _helper_alone(f"127.0.0.1:{harness.port}", harness.fingerprint)
    assert status == 2 and out == ROOT_REFUSED + "\n"
    assert not [a for a, _ in await harness.audit() if a.startswith("consent.")]

    ticket = await harness.ticket()
    await harness.engineer()
    allowed = await harness.helper(await harness.code(ticket))  # with --allow-root
    await allowed.wait_for("Connected.")
    assert ROOT_WARNING in allowed.text


async def test_fingerprint_typed_without_its_prefix_is_accepted_when_it_matches(
    harness: BrokerHarness,
) -> None:
    """``SHA256:`` left out (or written in small letters) is the same fingerprint; a wrong one
    is still refused before the code is sent."""
    ticket = await harness.ticket()
    await harness.engineer()
    code = await harness.code(ticket)
    bare = harness.fingerprint.removeprefix("SHA256:")

    wrong = await harness.helper(code, fingerprint="A" * 43)
    assert await wrong.finish() == 2
    assert ui.MISMATCH.splitlines()[0].format(where=f"127.0.0.1:{harness.port}") in wrong.text
    assert not [a for a, _ in await harness.audit(ticket) if a.startswith("consent.re")]

    helper = await harness.helper(code, fingerprint=f" sha256:{bare} ")
    await helper.wait_for("Connected.")
    await harness.wait_audit(ticket, "consent.redeemed")
    other = await harness.ticket("Printer offline")  # one session per ticket
    second = await harness.helper(await harness.code(other), fingerprint=bare)
    await second.wait_for("Connected.")
