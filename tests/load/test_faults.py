"""Load and faults, bounded in time, loopback only: brute force, leaks across many sessions,
killed peers, silent peers, SIGTERM with sessions open."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import os
import signal
from pathlib import Path

import aiohttp
import asyncssh
import pytest

from bench.broker_path import broker_cli
from bench.tunnels import open_tunnel
from broker.errors import CodeRejected
from tests.harness import BrokerHarness, HelperProc, start_helper
from tests.load.served import Served
from tests.netcut import CuttableProxy

pytestmark = pytest.mark.timeout(300)


async def healthy(harness: BrokerHarness) -> bool:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{harness.base_url}/healthz", timeout=aiohttp.ClientTimeout(total=2)) as r,
    ):
        return r.status == 200


async def test_ten_thousand_wrong_codes_from_several_addresses(harness: BrokerHarness) -> None:
    """0 accepted, every address limited after 5 tries, and the customer's own code still
    works from its own address; the broker answers throughout."""
    ticket = await harness.ticket()
    await harness.engineer()
    real = await harness.code(ticket)
    codes = harness.broker.manager.codes
    outcomes: dict[str, int] = {}

    async def attacker(source: str, tries: int) -> None:
        for i in range(tries):
            try:
                await codes.redeem(f"{(i * 7919) % 10**9:09d}", source)
                outcomes["accepted"] = outcomes.get("accepted", 0) + 1
            except CodeRejected as exc:
                outcomes[exc.code] = outcomes.get(exc.code, 0) + 1

    sources = [f"198.51.{n}.1" for n in range(1, 11)]  # ten networks: each its own limit
    flood = asyncio.gather(*(attacker(source, 1000) for source in sources))
    while not flood.done():  # responsive during the flood
        assert await healthy(harness)
        await asyncio.sleep(0.2)
    await flood
    assert sum(outcomes.values()) == 10_000 and "accepted" not in outcomes
    assert outcomes["unknown"] == 5 * len(sources)  # then each address waits
    assert outcomes["rate_limited"] == 10_000 - 5 * len(sources)
    # Over SSH too: a wrong code from another address, then the customer's own code works.
    helper = await harness.helper(real)
    await helper.wait_for("Connected.")
    rejected = [d for a, d in await harness.audit() if a == "consent.rejected"]
    assert len(rejected) == 5 * len(sources)  # the tries evaluated, each its own event
    assert real.replace("-", "") not in json.dumps(rejected)
    assert harness.broker.refusals is not None
    await harness.broker.refusals.report(flush=True)
    summaries = [d for a, d in await harness.audit() if a == "access.rate_limited"]
    assert sorted(d["prefix"] for d in summaries) == sorted(f"{s}/32" for s in sources)
    assert {d["refused"] for d in summaries} == {995}  # one event per address, not 995


async def test_no_fd_or_task_leak_across_many_sessions(harness: BrokerHarness) -> None:
    """1,000 sessions opened (code, consent, forward) and ended by the customer."""
    ticket = await harness.ticket()
    await harness.engineer()
    host_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()

    async def cycle() -> None:
        conn = await open_tunnel(harness.port, await harness.code(ticket), host_key.strip())
        conn.control.write(json.dumps({"type": "end"}) + "\n")  # type: ignore[attr-defined]
        await conn.wait_closed()  # the broker hangs up after "ended"

    async def settled() -> tuple[int, int]:
        for _ in range(100):
            if not harness.broker.manager.live():
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        gc.collect()
        return len(os.listdir("/proc/self/fd")), len(asyncio.all_tasks())

    for _ in range(20):  # warm up: pools, caches, lazily created things
        await cycle()
    fds, tasks = await settled()
    for _ in range(1000):
        await cycle()
    fds_after, tasks_after = await settled()
    assert fds_after <= fds + 3, (fds, fds_after)
    assert tasks_after <= tasks + 3, (tasks, tasks_after)
    ended = [d["reason"] for a, d in await harness.audit(ticket) if a == "session.ended"]
    assert ended == ["customer"] * 1020


async def test_killed_helper_and_killed_engineer_mid_transfer(tmp_path: Path) -> None:
    harness = await BrokerHarness(tmp_path, session_grace=1.0).start()
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        helper = await harness.connected_helper(ticket)

        # The engineer's ssh is killed while sending: the session goes on.
        sender = await asyncio.create_subprocess_exec(
            *harness.ssh_args(key, ticket), "cat > /dev/null", stdin=asyncio.subprocess.PIPE
        )
        assert sender.stdin is not None
        sender.stdin.write(b"x" * (4 << 20))
        await harness.wait_audit(ticket, "channel.opened")
        sender.kill()
        await sender.wait()
        closed = await harness.wait_audit(ticket, "channel.closed", reason="engineer")
        assert int(str(closed["bytes_in"])) >= 0
        assert (await harness.ssh(key, ticket, "echo still-here")).stdout == b"still-here\n"

        # The helper is killed while the engineer sends: the engineer is told, the session
        # ends as network after the grace period, every recording is closed and hashed.
        sender = await asyncio.create_subprocess_exec(
            *harness.ssh_args(key, ticket),
            "cat > /dev/null",
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert sender.stdin is not None and sender.stderr is not None
        sender.stdin.write(b"y" * (4 << 20))
        await asyncio.sleep(0.3)
        helper.proc.kill()
        assert await asyncio.wait_for(sender.wait(), 10) == 255
        assert b"The connection to the customer dropped" in await sender.stderr.read()
        await harness.wait_audit(ticket, "session.ended", reason="network", timeout=10)
        opened = [d for a, d in await harness.audit(ticket) if a == "channel.opened"]
        hashed = [d for a, d in await harness.audit(ticket) if a == "recording.closed"]
        assert len(hashed) == len(opened) == 3 and all(d["sha256"] for d in hashed)
    finally:
        await harness.stop()


async def test_silent_peers_are_reclaimed(tmp_path: Path) -> None:
    """A helper whose network goes silent (no reset, nothing) is noticed by keepalives, and a
    TCP connection that never speaks SSH is dropped at the login timeout."""
    harness = await BrokerHarness(
        tmp_path, keepalive_interval=0.5, session_grace=0.5, login_timeout=1.0
    ).start()
    proxy = await CuttableProxy(harness.port).start()
    try:
        ticket = await harness.ticket()
        await harness.engineer()
        helper = await start_helper(await harness.code(ticket), proxy.port, harness.fingerprint)
        harness.helpers.append(helper)
        await helper.wait_for("Connected.")
        proxy.freeze()  # packets stop, both ends stay open
        await harness.wait_audit(ticket, "session.disconnected", timeout=10)
        await harness.wait_audit(ticket, "session.ended", reason="network", timeout=10)

        reader, writer = await asyncio.open_connection("127.0.0.1", harness.port)
        await reader.readline()  # the broker's SSH banner; we say nothing back
        assert await asyncio.wait_for(reader.read(), 10) == b""  # dropped
        writer.close()
    finally:
        await proxy.close()
        await harness.stop()


async def test_sigterm_with_twenty_sessions_open(tmp_path: Path) -> None:
    """`serve` in its own process gets SIGTERM with 20 sessions at work: each ends with reason
    shutdown, its engineer is told, its recording is closed and hashed, and verify passes."""
    served = await Served.start(tmp_path)
    key = tmp_path / "alice"
    key.write_bytes((await served.engineer()).export_private_key())
    key.chmod(0o600)
    ssh = BrokerHarness(tmp_path)  # only for its ssh command line
    ssh.port, ssh.known_hosts = served.port, tmp_path / "known_hosts"
    ssh.known_hosts.write_text("")
    helpers: list[HelperProc] = []
    engineers = []
    try:
        for ticket, code in await served.codes(20):
            helper = await start_helper(code, served.port, served.fingerprint)
            helpers.append(helper)
            await helper.wait_for("Connected.", timeout=60)  # 2 busy cores: be patient
            engineer = await asyncio.create_subprocess_exec(
                *ssh.ssh_args(key, ticket, "-o", "StrictHostKeyChecking=no"),
                "echo working; sleep 60",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert engineer.stdout is not None
            assert await asyncio.wait_for(engineer.stdout.readline(), 60) == b"working\n"
            engineers.append(engineer)
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 60) == 0
        for engineer in engineers:
            assert await asyncio.wait_for(engineer.wait(), 30) == 255
            assert engineer.stderr is not None
            assert b"The broker is shutting down" in await engineer.stderr.read()
        for helper in helpers:
            assert await helper.finish() == 1
        shown = await asyncio.to_thread(broker_cli, served.data_dir, "audit", "show", "--json")
        events = json.loads(shown)
        reasons = [e["details"]["reason"] for e in events if e["action"] == "session.ended"]
        assert reasons == ["shutdown"] * 20
        hashed = [e for e in events if e["action"] == "recording.closed"]
        assert len(hashed) == 20 and all(e["details"]["sha256"] for e in hashed)
        verified = await asyncio.to_thread(broker_cli, served.data_dir, "audit", "verify")
        assert verified.startswith("OK: "), verified  # broker_cli raises on a failure exit
    finally:
        await served.stop()
        for helper in helpers:
            await helper.stop()
        for engineer in engineers:
            if engineer.returncode is None:
                engineer.kill()


@pytest.mark.timeout(900)  # about 2-3 minutes on 2 cores: 4 GiB through three SSH legs
async def test_two_hundred_sessions_move_data_intact(tmp_path: Path) -> None:
    """200 customers at once, each engineer sending 10 MiB through `cat` and checking the
    SHA-256 of what comes back; a new customer still gets in during the load. The broker runs
    as `serve` in its own process; customers and engineers are generated here."""
    count, size = 200, 10 << 20
    served = await Served.start(tmp_path)
    tunnels: list[asyncssh.SSHClientConnection] = []
    try:
        key = await served.engineer()
        helper_key = asyncssh.generate_private_key("ssh-ed25519")
        public = helper_key.export_public_key().decode().strip()
        pairs = await served.codes(count + 1)
        for _, code in pairs[:count]:
            tunnels.append(await open_tunnel(served.port, code, public, serve=helper_key))
        payload = os.urandom(1 << 20)
        expected = hashlib.sha256(payload * (size // len(payload))).hexdigest()
        opened = 0
        all_open = asyncio.Event()

        async def engineer(ticket: str) -> str:
            async with asyncssh.connect(
                "127.0.0.1",
                served.port,
                username=ticket,
                client_keys=[key],
                known_hosts=None,
                agent_path=None,
                config=None,
            ) as conn:
                writer, reader, _ = await conn.open_session("cat", encoding=None)
                nonlocal opened
                opened += 1
                if opened == count:
                    all_open.set()

                async def send() -> None:
                    for _ in range(size // len(payload)):
                        writer.write(payload)
                        await writer.drain()
                    writer.write_eof()

                digest, received = hashlib.sha256(), 0
                sending = asyncio.ensure_future(send())
                while chunk := await reader.read(1 << 16):
                    digest.update(chunk)
                    received += len(chunk)
                await sending
                assert received == size
                return digest.hexdigest()

        load = asyncio.gather(*(engineer(ticket) for ticket, _ in pairs[:count]))
        # Every channel open (each through its own reverse link), and data moving; an engineer
        # that failed ends the wait too (and the test, below).
        opening = asyncio.ensure_future(all_open.wait())
        await asyncio.wait({opening, load}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
        assert all_open.is_set() or load.done(), "the 200 channels did not open in 5 minutes"
        if load.done():
            load.result()  # raises what went wrong
        async with aiohttp.ClientSession() as http:  # the event loop is not blocked
            url = f"http://127.0.0.1:{served.http_port}/healthz"
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                assert response.status == 200
        # A new customer gets in while the data moves: the customer's steps take the store's
        # writer before the queued channel audits (WriteTurns), so it is in within seconds.
        newcomer = await start_helper(pairs[count][1], served.port, served.fingerprint)
        try:
            await newcomer.wait_for("Connected.", timeout=400)
        finally:
            await newcomer.stop()
        assert await load == [expected] * count
    finally:
        for tunnel in tunnels:
            tunnel.close()
        await served.stop()
