"""What the helper needs from asyncio that Python 3.9 and 3.10 spell differently.

The helper runs on the customer's own ``python3`` (macOS ships 3.9), the broker on 3.11+. Before
3.11 ``asyncio.wait_for`` raises ``asyncio.TimeoutError``, which is not the built-in
``TimeoutError``, and ``asyncio.timeout`` does not exist. Catch :data:`TIMEOUTS` wherever a wait
can run out, and use :func:`timeout` for a block with a deadline (it raises ``TimeoutError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

#: what a wait that ran out raises, on every Python the helper runs on
TIMEOUTS = (TimeoutError, asyncio.TimeoutError)

if sys.version_info >= (3, 11):
    from asyncio import timeout  # novm: 3.11+ only, under the version check
else:

    @contextlib.asynccontextmanager
    async def timeout(seconds: float) -> AsyncIterator[None]:
        """``asyncio.timeout`` for 3.9 and 3.10: cancel the block after ``seconds`` and raise
        ``TimeoutError`` in its place (a cancellation from outside stays a cancellation)."""
        task = asyncio.current_task()
        assert task is not None
        fired = False

        def fire() -> None:
            nonlocal fired
            fired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, fire)
        try:
            yield
        except asyncio.CancelledError:
            if fired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


__all__ = ["TIMEOUTS", "timeout"]
