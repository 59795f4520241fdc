"""The helper's reverse links on their own: a dial that fails is reported with its nonce."""

from __future__ import annotations

import asyncio
import socket

import asyncssh

from agent_client.links import ReverseLinks


async def test_a_failed_dial_is_reported_with_its_nonce() -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    failed: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()
    links = ReverseLinks(
        ("127.0.0.1", port),
        asyncssh.SSHServerConnectionOptions(
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")]
        ),
        lambda nonce, reason: failed.set_result((nonce, reason)),
    )
    links.dial("the-nonce")
    nonce, reason = await asyncio.wait_for(failed, 10)
    assert nonce == "the-nonce"
    assert "refused" in reason.lower() or "connect" in reason.lower()
    assert len(links) == 0


async def test_after_a_drop_no_link_is_dialled() -> None:
    """Once the helper lost the broker, requests for links that were still in flight are not
    dialled (and not reported as failures either: the broker is gone)."""
    calls: list[str] = []
    links = ReverseLinks(
        ("127.0.0.1", 9),
        asyncssh.SSHServerConnectionOptions(
            server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")]
        ),
        lambda nonce, _reason: calls.append(nonce),
    )
    links.close(dropped=True)
    links.dial("late")
    assert asyncio.all_tasks() == {asyncio.current_task()}  # nothing set off to dial
    assert links.dropped and calls == [] and len(links) == 0
