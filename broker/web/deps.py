"""What the HTTP side needs from the rest of the broker, passed explicitly (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from broker.config import Settings
from broker.credentials import PasswordChecker, Principal
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.signing import Signer
from broker.metrics import Metrics
from broker.ops.control import LiveControl
from broker.session.consent import ConsentCodes
from broker.session.manager import SessionManager
from broker.session.ratelimit import RateLimiter
from broker.store.db import Store
from broker.transport.agent_ssh import AgentEdge
from broker.tunnels import EngineerLogins, TunnelRegistry
from broker.web.helper_download import HelperDownload


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    manager: SessionManager
    tunnels: TunnelRegistry[AgentEdge]
    #: engineers' SSH logins on this node (disabling an account ends them)
    engineers: EngineerLogins
    #: live sessions and logins, acted on in this process
    control: LiveControl
    codes: ConsentCodes
    signer: Signer
    checkpointer: Checkpointer
    metrics: Metrics
    #: wrong passwords per source address (the same sliding window as wrong codes)
    logins: RateLimiter
    #: argon2 checks in worker threads, a few at a time
    passwords: PasswordChecker
    #: the one-file helper served at /helper
    helper_app: HelperDownload
    #: the helper's address as customers use it (HOST:PORT) and the broker's fingerprint
    broker_address: str
    fingerprint: str


DEPS = web.AppKey("deps", Deps)
#: the authenticated account of a request, set by the auth middleware (absent: anonymous)
PRINCIPAL = web.RequestKey("principal", Principal)

__all__ = ["DEPS", "PRINCIPAL", "Deps", "Principal"]
