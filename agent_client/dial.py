"""Dialling the broker: pin its host key by fingerprint, answer the one login prompt (the
consent code, or the resume token after a drop), and turn every failure into plain words."""

from __future__ import annotations

import hmac
import socket
from typing import Any

import asyncssh

from agent_client import consent_ui as ui
from agent_client.compat import TIMEOUTS
from assist_protocol.constants import AGENT_USER, CIPHERS
from assist_protocol.safetext import visible

#: how a connection to the broker that went away shows itself in asyncssh, depending on the
#: step it was at: lost (``asyncssh.Error``), a write to a closed channel (``OSError``), a
#: forward it could no longer set up (``ChannelListenError``, which is no ``asyncssh.Error``)
CONNECTION_GONE = (OSError, asyncssh.Error, asyncssh.ChannelListenError)


class DialFailed(Exception):
    """The broker could not be reached or did not let us in; ``message`` is for the customer.
    ``final`` is set when trying again cannot help (a refusal, a wrong fingerprint)."""

    def __init__(self, message: str, *, final: bool) -> None:
        super().__init__(message)
        self.message = message
        self.final = final


def normal_fingerprint(text: str) -> str:
    """The fingerprint as OpenSSH prints it: ``SHA256:`` and the base64. The prefix may be left
    out or written in small letters; the base64 is compared as typed (its case matters)."""
    text = text.strip()
    if text[:7].upper() == "SHA256:":
        text = text[7:]
    return "SHA256:" + text


class HelperClient(asyncssh.SSHClient):
    """Pins the broker's host key by fingerprint and answers the code prompt."""

    def __init__(self, answer: str, fingerprint: str) -> None:
        self._answer = answer
        self.expected = normal_fingerprint(fingerprint)
        self.seen: str | None = None
        self.banner = ""
        self._answered = False

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        self.seen = str(key.get_fingerprint("sha256"))
        return hmac.compare_digest(self.seen.encode(), self.expected.encode())

    def auth_banner_received(self, msg: str, lang: str) -> None:
        self.banner += msg

    def kbdint_auth_requested(self) -> str | None:
        if self._answered:
            return None  # one try per connection: a refused code is final
        return ""  # no submethods: the broker asks for the code

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Any
    ) -> list[str]:
        if len(prompts) != 1:
            return []
        self._answered = True
        return [self._answer]

    def refusal(self) -> str:
        """The broker's reason, sent as ``reason: message`` in a banner (shown with its control
        characters made visible: the helper did not write it)."""
        text = self.banner.strip()
        _, _, message = text.partition(": ")
        return visible(message, 500) or "The broker did not accept the code."

    def refusal_reason(self) -> str:
        return self.banner.strip().partition(": ")[0]


async def dial(
    host: str, port: int, fingerprint: str, answer: str, *, timeout: float = 60
) -> asyncssh.SSHClientConnection:
    """A logged-in connection to the broker, or :class:`DialFailed`."""
    where = f"{host}:{port}"
    client = HelperClient(answer, fingerprint)
    try:
        return await asyncssh.connect(
            host,
            port,
            username=AGENT_USER,
            client_factory=lambda: client,
            known_hosts=([], [], []),
            server_host_key_algs=["ssh-ed25519"],
            client_keys=None,
            agent_path=None,
            config=None,
            password=None,
            preferred_auth="keyboard-interactive",
            encryption_algs=list(CIPHERS),
            compression_algs=None,
            keepalive_interval=15,
            keepalive_count_max=2,
            connect_timeout=timeout,
        )
    except (asyncssh.HostKeyNotVerifiable, asyncssh.KeyExchangeFailed) as exc:
        if client.seen is not None and client.seen != client.expected:
            text = ui.MISMATCH.format(where=where, got=client.seen, expected=client.expected)
            raise DialFailed(text, final=True) from None
        text = ui.UNREACHABLE.format(where=where, reason=visible(exc.reason, 200))
        raise DialFailed(text, final=False) from None
    except asyncssh.PermissionDenied:
        retry = client.refusal_reason() == "rate_limited"
        raise DialFailed(client.refusal(), final=not retry) from None
    except (OSError, asyncssh.Error, *TIMEOUTS) as exc:
        text = ui.UNREACHABLE.format(where=where, reason=visible(plain_reason(exc), 200))
        raise DialFailed(text, final=False) from None


def plain_reason(exc: BaseException) -> str:
    """Why a connection failed, in words a customer can repeat to the engineer."""
    if isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        return "nothing answered at that address"
    if isinstance(exc, socket.gaierror):
        return "that name was not found"
    if isinstance(exc, TIMEOUTS):
        return "no answer in time"
    if isinstance(exc, asyncssh.Error):
        return exc.reason or "the connection failed"
    return (getattr(exc, "strerror", None) or str(exc) or "the connection failed").lower()
