"""What the HTTP side needs from the rest of the broker, passed explicitly (no globals)."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from broker.config import Settings
from broker.evidence.checkpoints import Checkpointer
from broker.evidence.signing import Signer
from broker.metrics import Metrics
from broker.session.consent import ConsentCodes, RateLimiter
from broker.session.manager import SessionManager
from broker.store.db import Store
from broker.tunnels import TunnelRegistry
from broker.web.access import Principal


@dataclass(frozen=True)
class Deps:
    settings: Settings
    store: Store
    manager: SessionManager
    tunnels: TunnelRegistry
    codes: ConsentCodes
    signer: Signer
    checkpointer: Checkpointer
    metrics: Metrics
    #: wrong passwords per source address (the same sliding window as wrong codes)
    logins: RateLimiter
    helper_app: bytes
    #: the helper's address as customers use it (HOST:PORT) and the broker's fingerprint
    broker_address: str
    fingerprint: str


DEPS = web.AppKey("deps", Deps)
#: the authenticated account of a request, set by the auth middleware (absent: anonymous)
PRINCIPAL = web.RequestKey("principal", Principal)

__all__ = ["DEPS", "PRINCIPAL", "Deps", "Principal"]
