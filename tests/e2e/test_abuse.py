"""A few connections must not stall everyone: wrong codes counted before they are evaluated,
connections not logged in capped per address, keys per connection capped, disabled engineers
cut off at once, every refusal audited, and one broker per data dir."""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import sys
from pathlib import Path

import asyncssh
import pytest
from sqlalchemy import select

from broker.errors import ConfigError
from broker.logsetup import FloodGate
from broker.resources import raise_fd_limit
from broker.store import queries as q
from broker.store.models import Session
from tests.e2e.test_codes import _redeem_in_process
from tests.e2e.test_handoff import cli
from tests.harness import BrokerHarness
from tests.web.openapi_check import checked_session


async def test_thirty_concurrent_wrong_codes_are_five_evaluations(tmp_path: Path) -> None:
    # (enough connection slots for the thirty: this is about the codes' own limit)
    harness = await BrokerHarness(tmp_path, ssh_unauth_per_address=50).start()
    try:
        await _thirty_wrong_codes(harness)
    finally:
        await harness.stop()


async def _thirty_wrong_codes(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    await harness.code(ticket)
    results = await asyncio.gather(
        *(_redeem_in_process(harness, f"{n:03d}-000-000") for n in range(30))
    )
    assert results.count(True) == 0
    rejected = [d for a, d in await harness.audit() if a == "consent.rejected"]
    assert len(rejected) == 5 and {d["reason"] for d in rejected} == {"unknown"}
    assert harness.broker.refusals is not None
    await harness.broker.refusals.report(flush=True)
    summary = await harness.wait_audit(None, "access.rate_limited")
    assert summary == {
        **summary,
        "where": "consent_code",
        "prefix": "127.0.0.1/32",
        "refused": 25,
    }


async def test_connections_not_logged_in_are_capped_per_address(tmp_path: Path) -> None:
    """Silent connections from one address take its slots; the next is closed at once, while
    an engineer from another address still logs in."""
    harness = await BrokerHarness(tmp_path, ssh_unauth_per_address=3).start()
    loop = asyncio.get_running_loop()
    silent = []
    try:
        ticket = await harness.ticket()
        key = await harness.engineer()
        await harness.connected_helper(ticket)
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", harness.port), None, ("127.0.0.7", 0))
            sock.setblocking(False)
            silent.append(sock)
        extra = socket.create_connection(("127.0.0.1", harness.port), None, ("127.0.0.7", 0))
        extra.setblocking(False)
        silent.append(extra)
        async with asyncio.timeout(10):  # closed without a word
            assert await loop.sock_recv(extra, 100) == b""
        metrics = harness.broker.metrics
        assert metrics is not None
        assert b'assist_connections_refused_total{reason="too_many_unauthenticated"} 1.0' in (
            metrics.exposition()
        )
        result = await harness.ssh(key, ticket, "echo still-served")
        assert result.stdout == b"still-served\n"
    finally:
        for sock in silent:
            sock.close()
        await harness.stop()


async def test_a_thousand_keys_are_ten_lookups(harness: BrokerHarness) -> None:
    ticket = await harness.ticket()
    await harness.engineer()
    keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(40)]
    with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)) as refused:
        await asyncssh.connect(
            "127.0.0.1",
            harness.port,
            username=ticket,
            client_keys=keys,
            known_hosts=None,
            agent_path=None,
            config=None,
            preferred_auth="publickey",
        )
    assert "Too many keys offered" in str(refused.value)
    failed = await harness.wait_audit(ticket, "engineer.auth_failed")
    assert len(failed["keys"]) == 10  # type: ignore[arg-type]


async def test_disabling_an_engineer_ends_their_ssh_at_once(harness: BrokerHarness) -> None:
    """Through the API: the open connection ends with a plain message, a new one is refused."""
    ticket = await harness.ticket()
    key = await harness.engineer()
    admin = await harness.token("root-admin", "admin")
    await harness.connected_helper(ticket)
    running = asyncio.ensure_future(harness.ssh(key, ticket, "echo started; sleep 60"))
    await harness.wait_audit(ticket, "channel.opened")

    async with checked_session(headers={"Authorization": f"Bearer {admin}"}) as http:
        url = f"{harness.base_url}/api/v1/accounts/alice"
        async with http.patch(url, json={"disabled": True}) as response:
            assert response.status == 200
    result = await asyncio.wait_for(running, 10)
    assert result.status == 255
    assert b"Your account was disabled by an administrator" in result.stderr
    again = await harness.ssh(key, ticket, "true")
    assert again.status == 255 and b"Permission denied" in again.stderr


async def test_disabling_from_the_command_line_reaches_the_running_broker(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    running = asyncio.ensure_future(harness.ssh(key, ticket, "echo started; sleep 60"))
    await harness.wait_audit(ticket, "channel.opened")
    disabled = await cli(harness, "account", "disable", "alice")
    assert disabled.status == 0, disabled.stderr
    assert b"SSH logins ended: 1" in disabled.stdout
    result = await asyncio.wait_for(running, 10)
    assert result.status == 255 and b"Your account was disabled" in result.stderr
    enabled = await cli(harness, "account", "enable", "alice")
    assert enabled.status == 0
    assert (await harness.ssh(key, ticket, "echo back")).stdout == b"back\n"


async def test_automatic_ticket_keys_are_never_taken(harness: BrokerHarness) -> None:
    made = await cli(harness, "ticket", "create", "--title", "x", "--severity", "3", "--key", "T-9")
    assert made.status == 2 and b"T-<number> is given by the broker" in made.stderr
    assert await harness.ticket() == "T-1"
    async with harness.store.begin() as db:  # an older database may hold such a key already
        ticket = await q.create_ticket(db, title="older", severity=3, key="OLD")
        ticket.key = "T-3"  # the key the next ticket (number 3) would get
    keys = []
    for _ in range(3):
        async with harness.store.begin() as db:
            keys.append((await q.create_ticket(db, title="new", severity=3)).key)
    assert keys == ["T-4", "T-5", "T-6"]


async def test_unix_socket_forwards_and_watch_subsystems_are_audited(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="shell,exec,observe")
    remote = await harness.ssh(
        key,
        ticket,
        "true",
        options=("-o", "ExitOnForwardFailure=yes", "-R", f"{harness.tmp}/r.sock:127.0.0.1:9"),
    )
    assert remote.status == 255
    await harness.wait_audit(ticket, "channel.refused", kind="unix-remote-forward")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    local_port = port.getsockname()[1]
    port.close()
    forward = await asyncio.create_subprocess_exec(
        *harness.ssh_args(key, ticket, "-N", "-L", f"{local_port}:/run/some.sock"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(15):
            while True:  # the tunnel's port is up once ssh has logged in
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", local_port)
                    break
                except OSError:
                    await asyncio.sleep(0.05)
        writer.close()
        await harness.wait_audit(ticket, "channel.refused", kind="unix-forward")
    finally:
        forward.kill()
        await forward.wait()
    watch = await harness.ssh(key, f"{ticket}+watch", "sftp", options=("-s",))
    assert watch.status == 255
    assert watch.stderr.startswith(
        b"\r\nRefused: a watch connection only watches a shell (granted: shell,exec,observe).\r\n"
    )
    await harness.wait_audit(ticket, "channel.refused", kind="subsystem")


async def test_a_second_broker_on_the_same_data_dir_touches_nothing(
    harness: BrokerHarness,
) -> None:
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket)
    second = BrokerHarness(harness.tmp)  # the same data dir and database
    with pytest.raises(ConfigError, match=r"Another broker is already running with the data dir"):
        await second.start()
    await second.broker.stop()
    async with harness.store.read() as db:
        states = [s.state for s in (await db.execute(select(Session))).scalars()]
    assert states == ["active"]
    assert not [a for a, _ in await harness.audit() if a == "session.interrupted"]
    assert (await harness.ssh(key, ticket, "echo untouched")).stdout == b"untouched\n"


async def test_serve_says_another_broker_runs_with_its_pid(harness: BrokerHarness) -> None:
    import os

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "broker", "serve", "--data-dir", str(harness.settings.data_dir),
        "--ssh-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert f"(pid {os.getpid()})".encode() in err


@pytest.mark.postgres
async def test_a_second_node_under_the_same_name_on_postgres_is_refused(
    tmp_path: Path, pg_url: str
) -> None:
    """Two data dirs, one database: the node lease says who runs."""
    first = await BrokerHarness(tmp_path / "a", database_url=pg_url).start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "broker", "serve", "--data-dir", str(tmp_path / "b" / "var"),
            "--ssh-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
            env={**__import__("os").environ, "ASSIST_DATABASE_URL": pg_url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2, err
        assert b"Another broker is already running as node" in err
    finally:
        await first.stop()


def test_the_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
        raised = raise_fd_limit()
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert now == raised and (now == hard or hard == resource.RLIM_INFINITY)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_flood_of_one_error_is_twenty_lines_and_a_count() -> None:
    now = [0.0]
    gate = FloodGate(burst=20, window=10.0, clock=lambda: now[0])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, message, None, None)

    passed = [gate.filter(record("Error handling request")) for _ in range(10_000)]
    assert passed.count(True) == 20
    assert gate.filter(record("something else"))  # other kinds are not held back
    now[0] = 11.0
    later = record("Error handling request")
    assert gate.filter(later)
    assert later.getMessage() == "Error handling request [9980 similar lines left out]"


async def test_a_flood_of_unknown_keys_does_not_flood_the_audit(harness: BrokerHarness) -> None:
    """Each refused login is audited up to the network's limit; the rest are counted."""
    ticket = await harness.ticket()
    stranger = asyncssh.generate_private_key("ssh-ed25519")

    async def attempt() -> None:
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.DisconnectError)):
            await asyncssh.connect(
                "127.0.0.1",
                harness.port,
                username=ticket,
                client_keys=[stranger],
                known_hosts=None,
                agent_path=None,
                config=None,
                preferred_auth="publickey",
            )

    for _ in range(12):
        await attempt()
    async with asyncio.timeout(10):  # each refusal is audited as its connection closes
        while True:
            audited = [a for a, _ in await harness.audit() if a == "engineer.auth_failed"]
            assert harness.broker.refusals is not None
            summaries = harness.broker.ctx.auth_failures._refused if harness.broker.ctx else {}
            if len(audited) == 5 and sum(s.refused for s in summaries.values()) == 7:
                break
            await asyncio.sleep(0.05)
    await harness.broker.refusals.report(flush=True)
    summary = await harness.wait_audit(None, "access.rate_limited")
    assert summary["where"] == "ssh_auth_failed" and summary["refused"] == 7
