"""An optional copy of every checkpoint outside the broker's machine (``checkpoint_post_url``).

Whoever holds both the database and the data dir could rewrite history and the checkpoint log
together; a copy held elsewhere (a log collector, a WORM bucket behind an HTTP endpoint, another
team's service) still has what was signed. Each line of the checkpoint log is POSTed as JSON, in
order, at least once; how far the copy got is kept in ``audit_checkpoints.posted`` in the data
dir, so a broker restart or an unreachable endpoint only delays copies, it loses none. The
command line's checkpoints (same data dir, same log) are copied by the broker too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import aiohttp
import structlog

from broker.evidence.ckptlog import CheckpointLog
from broker.keys import write_private

log = structlog.get_logger(__name__)

STATE_FILE = "audit_checkpoints.posted"
TIMEOUT = 10.0


class CheckpointPoster:
    def __init__(
        self,
        url: str,
        checkpoint_log: CheckpointLog,
        data_dir: Path,
        *,
        counted: Callable[[str], None] = lambda _outcome: None,
    ) -> None:
        self.url = url
        self.log = checkpoint_log
        self.state = data_dir / STATE_FILE
        #: told "posted" or "failed" (the broker's metrics)
        self.counted = counted
        self._failing = False

    def _done(self) -> int:
        """How far into the log (in bytes) the endpoint has got everything."""
        try:
            return int(self.state.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    async def post_pending(self, session: aiohttp.ClientSession) -> int:
        """POST what the endpoint has not got yet; return how many went. Only the lines
        after what was sent are read, not the whole log."""
        done = self._done()
        sent = 0
        for point, end in self.log.entries(done):
            if point is None:  # not a checkpoint: nothing to copy, step over it
                done = end
                continue
            try:
                async with session.post(self.url, json=dataclasses.asdict(point)) as response:
                    if response.status >= 300:
                        raise aiohttp.ClientResponseError(
                            response.request_info, (), status=response.status
                        )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                self.counted("failed")
                if not self._failing:  # one line per outage, not one per try
                    log.warning("checkpoint_post_failed", url=self.url, error=str(exc)[:200])
                self._failing = True
                break
            self.counted("posted")
            sent += 1
            done = end
            write_private(self.state, str(done).encode())
        else:
            if self._failing:
                log.info("checkpoint_post_recovered", url=self.url)
            self._failing = False
        return sent

    async def run(self, interval: float) -> None:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                await self.post_pending(session)
                await asyncio.sleep(interval)
