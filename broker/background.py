"""The broker's periodic work (checkpoints, admin requests, rate-limit reports, the node lease):
one loop, so that each job says only what it does each time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from broker.store.db import Store

log = structlog.get_logger(__name__)


async def every(
    interval: float,
    step: Callable[[], Coroutine[Any, Any, object]],
    *,
    store: Store,
    failure: str,
) -> None:
    """Run ``step`` every ``interval`` seconds until cancelled. Each run goes to its end even
    when the broker stops meanwhile (:meth:`Store.finish`); a failure is logged as ``failure``
    (at most a few lines: the flood gate) and the loop goes on."""
    while True:
        try:
            await store.finish(step())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception(failure)
        await asyncio.sleep(interval)
