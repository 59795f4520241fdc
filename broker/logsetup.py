"""structlog, configured once: JSON unless stderr is a TTY, context variables merged first,
and the standard-library loggers (asyncssh, aiohttp, sqlalchemy) rendered the same way."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

from assist_protocol.safetext import visible


class FloodGate(logging.Filter):
    """At most ``burst`` lines of one kind (logger, level and event) per ``window`` seconds.

    A failure that repeats for every packet or request (one HTTP failure mode once wrote
    686,923 tracebacks in 90 s) must not fill the disk or drown everything else. Lines beyond
    the burst are counted; the first line of that kind in the next window says how many were
    left out."""

    def __init__(
        self, burst: int = 20, window: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        #: kind -> [window start, lines in it, lines left out]
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    @staticmethod
    def _kind(record: logging.LogRecord) -> tuple[str, int, str]:
        event = record.msg.get("event", "") if isinstance(record.msg, dict) else record.msg
        return record.name, record.levelno, str(event)[:200]

    def filter(self, record: logging.LogRecord) -> bool:
        now = self.clock()
        kind = self._kind(record)
        seen = self._seen.get(kind)
        if seen is None or now - seen[0] >= self.window:
            left_out = int(seen[2]) if seen else 0
            if len(self._seen) >= 10_000:  # bounded: forget the oldest kinds
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:5_000]:
                    del self._seen[old]
            self._seen[kind] = [now, 1, 0]
            if left_out:
                self._annotate(record, left_out)
            return True
        seen[1] += 1
        if seen[1] <= self.burst:
            return True
        seen[2] += 1
        return False

    @staticmethod
    def _annotate(record: logging.LogRecord, left_out: int) -> None:
        if isinstance(record.msg, dict):
            record.msg["similar_lines_left_out"] = left_out
        else:
            record.msg = f"{record.getMessage()} [{left_out} similar lines left out]"
            record.args = None


def _visible_values(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Console lines: strings from outside (peers' user names, paths) cannot drive the terminal
    that shows the log. (JSON lines escape control characters by themselves.)"""
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = visible(value, keep_newlines=key == "exception")
    return event


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    json_output = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json_output
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                *([] if json_output else [_visible_values]),
                renderer,
            ],
        )
    )
    handler.addFilter(FloodGate())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncssh logs every packet-level step at INFO; keep it to warnings unless debugging.
    noisy_level = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("asyncssh", "aiosqlite", "sqlalchemy.engine", "alembic"):
        logging.getLogger(name).setLevel(noisy_level)
