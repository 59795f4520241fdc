"""File transfer with the stock sftp and scp (both modes, both directions, recursive): checksums
match, exit codes are 0, and the audit holds each file's SHA-256."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from tests.harness import BrokerHarness, Result

SFTP = "/usr/bin/sftp"
SCP = "/usr/bin/scp"


def _common(harness: BrokerHarness, key: Path) -> list[str]:
    return [
        "-F",
        "/dev/null",
        "-P",
        str(harness.port),
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={harness.known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]


async def _run(*argv: str, stdin: bytes | None = None, timeout: float = 120) -> Result:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    assert proc.returncode is not None
    return Result(proc.returncode, out, err)


async def sftp(harness: BrokerHarness, key: Path, ticket: str, batch: str) -> Result:
    return await _run(
        SFTP, *_common(harness, key), "-b", "-", f"{ticket}@127.0.0.1", stdin=batch.encode()
    )


async def scp(harness: BrokerHarness, key: Path, *args: str) -> Result:
    return await _run(SCP, *_common(harness, key), *args)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tree(root: Path) -> dict[str, str]:
    """A small tree: a few directories of small random files; returns relative path -> hash."""
    hashes = {}
    for i in range(3):
        for j in range(4):
            path = root / f"d{i}" / f"sub{j % 2}" / f"f{j}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(100 + 1000 * j))
            hashes[str(path.relative_to(root))] = sha(path)
    return hashes


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """The engineer's local directory and the customer's directory (same machine here)."""
    local, remote = tmp_path / "engineer", tmp_path / "customer"
    local.mkdir()
    remote.mkdir()
    return local, remote


async def test_sftp_put_and_get_20_mb_with_hashes_in_the_audit(
    harness: BrokerHarness, places: tuple[Path, Path]
) -> None:
    local, remote = places
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="sftp")
    source = local / "big.bin"
    source.write_bytes(os.urandom(20 * 1024 * 1024))
    digest = sha(source)

    put = await sftp(harness, key, ticket, f"put {source} {remote}/big.bin\n")
    assert put.status == 0, put.stderr
    assert sha(remote / "big.bin") == digest
    got = await sftp(harness, key, ticket, f"get {remote}/big.bin {local}/back.bin\n")
    assert got.status == 0, got.stderr
    assert sha(local / "back.bin") == digest

    closes = [d for a, d in await harness.audit(ticket) if a == "sftp.close"]
    written = [d for d in closes if d["bytes_written"]]
    read = [d for d in closes if d["bytes_read"]]
    assert written[-1]["sha256"] == digest and written[-1]["size"] == 20 * 1024 * 1024
    assert read[-1]["sha256"] == digest and read[-1]["path"] == f"{remote}/big.bin"
    opened = [d for a, d in await harness.audit(ticket) if a == "sftp.open"]
    assert any("write" in d["flags"] and d["path"] == f"{remote}/big.bin" for d in opened)
    channels = [d for a, d in await harness.audit(ticket) if a == "channel.closed"]
    assert {c["kind"] for c in channels} == {"sftp"}
    assert max(c["bytes_in"] for c in channels) == 20 * 1024 * 1024


async def test_sftp_tree_of_small_files_and_changes_are_audited(
    harness: BrokerHarness, places: tuple[Path, Path]
) -> None:
    local, remote = places
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="sftp")
    expected = make_tree(local / "tree")

    up = await sftp(harness, key, ticket, f"put -r {local}/tree {remote}/tree\n")
    assert up.status == 0, up.stderr
    assert tree_hashes(remote / "tree") == expected
    down = await sftp(harness, key, ticket, f"get -r {remote}/tree {local}/copy\n")
    assert down.status == 0, down.stderr
    assert tree_hashes(local / "copy") == expected
    changes = await sftp(
        harness,
        key,
        ticket,
        (
            f"rename {remote}/tree/d0/sub0/f0.bin {remote}/tree/d0/renamed.bin\n"
            f"chmod 600 {remote}/tree/d0/renamed.bin\n"
            f"rm {remote}/tree/d0/renamed.bin\n"
            f"mkdir {remote}/made\n"
            f"rmdir {remote}/made\n"
        ),
    )
    assert changes.status == 0, changes.stderr

    actions = [a for a, _ in await harness.audit(ticket)]
    for action in ("sftp.mkdir", "sftp.rename", "sftp.setstat", "sftp.remove", "sftp.rmdir"):
        assert action in actions
    hashes = {d["sha256"] for a, d in await harness.audit(ticket) if a == "sftp.close"}
    assert set(expected.values()) <= hashes


@pytest.mark.parametrize("legacy", [False, True], ids=["scp-sftp-mode", "scp-O"])
async def test_scp_both_directions_and_recursive(
    harness: BrokerHarness, places: tuple[Path, Path], legacy: bool
) -> None:
    local, remote = places
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="sftp")
    mode = ["-O"] if legacy else []
    source = local / "one.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    expected_tree = make_tree(local / "tree")

    up = await scp(harness, key, *mode, str(source), f"{ticket}@127.0.0.1:{remote}/")
    assert up.status == 0, up.stderr
    assert sha(remote / "one.bin") == sha(source)
    down = await scp(
        harness, key, *mode, f"{ticket}@127.0.0.1:{remote}/one.bin", str(local / "back.bin")
    )
    assert down.status == 0, down.stderr
    assert sha(local / "back.bin") == sha(source)
    tree_up = await scp(
        harness, key, *mode, "-r", str(local / "tree"), f"{ticket}@127.0.0.1:{remote}/tree"
    )
    assert tree_up.status == 0, tree_up.stderr
    assert tree_hashes(remote / "tree") == expected_tree
    tree_down = await scp(
        harness, key, *mode, "-r", f"{ticket}@127.0.0.1:{remote}/tree", str(local / "copy")
    )
    assert tree_down.status == 0, tree_down.stderr
    assert tree_hashes(local / "copy") == expected_tree

    hashes = {d.get("sha256") for a, d in await harness.audit(ticket) if a == "sftp.close"}
    assert sha(source) in hashes and set(expected_tree.values()) <= hashes
    kinds = {d["kind"] for a, d in await harness.audit(ticket) if a == "channel.opened"}
    assert kinds == ({"scp"} if legacy else {"sftp"})


async def test_sftp_read_allows_downloads_and_refuses_every_change(
    harness: BrokerHarness, places: tuple[Path, Path]
) -> None:
    local, remote = places
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="sftp-read")
    (remote / "log.txt").write_text("customer log\n")
    (local / "new.txt").write_text("engineer file\n")

    got = await sftp(harness, key, ticket, f"get {remote}/log.txt {local}/log.txt\n")
    assert got.status == 0 and (local / "log.txt").read_text() == "customer log\n"

    put = await sftp(harness, key, ticket, f"put {local}/new.txt {remote}/new.txt\n")
    assert put.status != 0
    assert b"Permission denied" in put.stderr  # OpenSSH's sftp shows its own words for it
    assert not (remote / "new.txt").exists()
    rm = await sftp(harness, key, ticket, f"rm {remote}/log.txt\n")
    assert rm.status != 0 and (remote / "log.txt").exists()

    legacy_up = await scp(
        harness, key, "-O", str(local / "new.txt"), f"{ticket}@127.0.0.1:{remote}/"
    )
    assert legacy_up.status != 0 and not (remote / "new.txt").exists()
    assert b"uploads are not in the consent (granted: sftp-read)" in legacy_up.stderr
    legacy_down = await scp(
        harness, key, "-O", f"{ticket}@127.0.0.1:{remote}/log.txt", str(local / "again.txt")
    )
    assert legacy_down.status == 0 and (local / "again.txt").read_text() == "customer log\n"

    denied = [d for a, d in await harness.audit(ticket) if a == "sftp.denied"]
    assert {d["op"] for d in denied} == {"open", "remove"}
    assert {d["reason"] for d in denied} == {"changes are not in the consent (granted: sftp-read)"}
    await harness.wait_audit(ticket, "channel.refused", kind="scp")


async def test_file_transfer_needs_it_in_the_scope(
    harness: BrokerHarness, places: tuple[Path, Path]
) -> None:
    _, remote = places
    ticket = await harness.ticket()
    key = await harness.engineer()
    await harness.connected_helper(ticket, scope="shell,exec")
    result = await sftp(harness, key, ticket, f"ls {remote}\n")
    assert result.status != 0
    assert b"file transfer is not in the consent (granted: shell,exec)" in result.stderr
    await harness.wait_audit(ticket, "channel.refused", kind="sftp")


def test_every_file_system_method_of_the_base_server_is_overridden() -> None:
    """asyncssh's SFTPServer acts on local files: the proxy must override all of it."""
    import inspect

    import asyncssh

    from broker.relay.sftp_proxy import SFTPProxy

    harmless = {"format_user", "format_group", "format_longname", "convert_attrs", "_to_sftpname"}
    for name, _ in inspect.getmembers(asyncssh.SFTPServer, inspect.isfunction):
        if name.startswith("__") or name in harmless:
            continue
        assert getattr(SFTPProxy, name) is not getattr(asyncssh.SFTPServer, name), name


async def test_helper_enforces_file_scope_when_the_broker_does_not(
    harness: BrokerHarness, places: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the broker's checks switched off, the helper itself refuses what is not granted."""
    from assist_protocol.scope import Decision
    from broker.relay import sftp_proxy
    from broker.session.core import door

    async def no_check(self: object, op: str, path: bytes) -> None:
        return None

    monkeypatch.setattr(door, "decide", lambda scope, request: Decision(True, "bypassed"))
    monkeypatch.setattr(sftp_proxy.SFTPProxy, "_deny_if_read_only", no_check)
    local, remote = places
    (local / "new.txt").write_text("engineer file\n")
    read_only = await harness.ticket(title="read only")
    shell_only = await harness.ticket(title="shell only")
    key = await harness.engineer()
    await harness.connected_helper(read_only, scope="sftp-read")
    await harness.connected_helper(shell_only, scope="shell")

    put = await sftp(harness, key, read_only, f"put {local}/new.txt {remote}/new.txt\n")
    assert put.status != 0 and not (remote / "new.txt").exists()
    listing = await sftp(harness, key, shell_only, f"ls {remote}\n")
    assert listing.status != 0
    assert b"The customer's helper refused file transfer" in listing.stderr
