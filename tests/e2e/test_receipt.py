"""The customer's receipt: how the session ended (whichever way it did), who was there by the
name the customer knows, times in the customer's own zone, every file read or written with its
SHA-256 and every file changed, a shell that came back after a drop listed once."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.e2e.test_files import scp, sftp
from tests.harness import BrokerHarness, HelperProc, helper_argv, start_helper
from tests.netcut import CuttableProxy
from tests.ptydriver import PtyDriver

#: a zone of the customer's that no test machine has by default: UTC+3, called "XYZ"
ZONE = "XYZ-3"


@pytest.fixture(autouse=True)
def customer_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", ZONE)  # the helpers started below inherit it


async def _worked(harness: BrokerHarness, ticket: str, *extra: str) -> HelperProc:
    key = harness.tmp / "alice"
    helper = await harness.helper(await harness.code(ticket), *extra)
    await helper.wait_for("Connected.")
    assert (await harness.ssh(key, ticket, "echo done")).status == 0
    await harness.wait_audit(ticket, "channel.closed")
    return helper


def _check_times(text: str, receipt: dict[str, object]) -> None:
    started = dt.datetime.fromisoformat(str(receipt["started"]))
    local = started.astimezone(dt.timezone(dt.timedelta(hours=3)))
    assert f"When: {local:%Y-%m-%d %H:%M:%S} XYZ to " in text, text
    assert not re.search(r"\d\d:\d\d:\d\d\+00:00", text)  # no raw ISO times


async def test_the_receipt_says_how_it_ended_whichever_way(harness: BrokerHarness) -> None:
    await harness.engineer()
    ways: dict[str, tuple[str, str]] = {}

    ticket = await harness.ticket("By Ctrl-C")
    helper = await _worked(harness, ticket, "--receipt", str(harness.tmp / "ctrl-c.json"))
    helper.interrupt()
    assert await helper.finish() == 0
    ways["ctrl-c"] = ("customer", helper.text)

    ticket = await harness.ticket("By end")
    helper = await _worked(harness, ticket, "--receipt", str(harness.tmp / "end.json"))
    await helper.type("end")
    assert await helper.finish() == 0
    ways["end"] = ("customer", helper.text)

    ticket = await harness.ticket("By an admin")
    helper = await _worked(harness, ticket, "--receipt", str(harness.tmp / "admin.json"))
    live = harness.broker.manager.find(ticket)
    assert live is not None
    await harness.broker.manager.end(live, "admin")
    assert await helper.finish() == 1
    ways["admin"] = ("admin", helper.text)

    ticket = await harness.ticket("By q")
    customer = PtyDriver()
    try:
        argv = helper_argv(harness, await harness.code(ticket), "--yes")
        await customer.start([*argv, "--receipt", str(harness.tmp / "q.json")])
        await customer.expect(rb"Press q")
        assert (await harness.ssh(harness.tmp / "alice", ticket, "echo done")).status == 0
        await harness.wait_audit(ticket, "channel.closed")
        customer.type(b"q")
        assert await customer.wait() == 0
        await customer.expect(rb"The full record is kept")
        ways["q"] = ("customer", customer.output.decode(errors="replace").replace("\r\n", "\n"))
    finally:
        customer.close()

    for way, (reason, text) in ways.items():
        receipt = json.loads((harness.tmp / f"{way}.json").read_text())
        assert receipt["end_reason"] == reason, way
        words = {"customer": "The customer ended the session.", "admin": "An administrator"}
        assert f"Ended: {words[reason]}" in text, (way, text)
        assert "ended: None" not in text
        assert "Engineers: Alice Smith (alice)" in text, (way, text)
        assert "- Alice Smith: echo done" in text, (way, text)
        _check_times(text, receipt)


async def test_files_copied_and_changed_are_all_on_the_receipt(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    folder = harness.tmp / "customer"
    folder.mkdir()
    report = folder / "report.txt"
    report.write_bytes(b"the customer's report\n" * 1000)
    (folder / "old.log").write_text("old")
    (folder / "a.txt").write_text("a")
    helper = await harness.helper(await harness.code(ticket, scope="shell,exec,sftp"))
    await helper.wait_for("Connected.")

    down = await scp(harness, key, "-O", f"{ticket}@127.0.0.1:{report}", str(harness.tmp / "r"))
    assert down.status == 0, down.stderr
    batch = (
        f"rm {folder}/old.log\nrename {folder}/a.txt {folder}/b.txt\nmkdir {folder}/new\n"
        f"chmod 600 {folder}/b.txt\nrmdir {folder}/new\n"
    )
    changed = await sftp(harness, key, ticket, batch)
    assert changed.status == 0, changed.stderr
    await harness.wait_audit(ticket, "sftp.rmdir")
    helper.interrupt()
    assert await helper.finish() == 0

    digest = hashlib.sha256(report.read_bytes()).hexdigest()
    size = report.stat().st_size
    text = helper.text
    assert (
        f"- Alice Smith copied from this computer: {report} ({size} bytes, SHA-256 {digest})"
    ) in text, text
    assert "partial" not in text
    assert f"- Alice Smith deleted {folder}/old.log" in text, text
    assert f"- Alice Smith renamed {folder}/a.txt to {folder}/b.txt" in text, text
    assert f"- Alice Smith made the folder {folder}/new" in text, text
    assert f"- Alice Smith changed the permissions of {folder}/b.txt" in text, text
    assert f"- Alice Smith deleted the folder {folder}/new" in text, text


async def _shell_says(driver: PtyDriver, argv: list[str], word: bytes) -> None:
    """The engineer's interactive ssh runs, and its shell answers."""
    await driver.start(argv)
    driver.type(b"echo " + word + b"-$((6*7))\n")
    await driver.expect(word + rb"-42")


async def test_a_shell_back_after_a_drop_is_listed_once(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, session_grace=20.0).start()
    proxy = await CuttableProxy(harness.port).start()
    before, after = PtyDriver(), PtyDriver()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await start_helper(await harness.code(ticket), proxy.port, harness.fingerprint)
        harness.helpers.append(helper)
        await helper.wait_for("Connected.")
        await _shell_says(before, harness.ssh_args(key, ticket, "-tt"), b"first")
        proxy.down()
        assert await before.wait() == 255
        await helper.wait_for("Reconnecting...")
        proxy.up()
        await helper.wait_for("Reconnected after")
        await _shell_says(after, harness.ssh_args(key, ticket, "-tt"), b"again")
        helper.interrupt()
        assert await helper.finish() == 0
        await after.wait()
        assert helper.text.count("- Alice Smith: shell") == 1, helper.text
        assert "- Alice Smith: shell (back after a reconnect)" in helper.text
    finally:
        before.close()
        after.close()
        await proxy.close()
        await harness.stop()
