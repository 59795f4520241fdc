"""Refusals that asyncssh makes on its own, made visible: X11 and agent forwarding requests
(refused by the server options) are reported so that each refusal is audited.

asyncssh has no session hook for these requests, so the channel's request handlers are wrapped
on the instance; a test sends each request and expects its audit row, so a change in asyncssh
shows up as a failing test rather than as a silent gap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncssh

_WATCHED = {
    "_process_x11_req_request": "x11",
    "_process_auth_agent_req_at_openssh_dot_com_request": "agent",
}


def guard_channel(chan: asyncssh.SSHServerChannel[Any], refused: Callable[[str], object]) -> None:
    """Report X11 and agent-forwarding requests on ``chan`` (asyncssh refuses them)."""
    for attribute, what in _WATCHED.items():
        original = getattr(chan, attribute, None)
        if original is None:  # pragma: no cover - asyncssh renamed it; the tests will say
            continue

        def wrapped(packet: Any, _original: Any = original, _what: str = what) -> Any:
            refused(_what)
            return _original(packet)

        setattr(chan, attribute, wrapped)
