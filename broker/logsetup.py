"""structlog, configured once: JSON unless stderr is a TTY, context variables merged first,
and the standard-library loggers (asyncssh, aiohttp, sqlalchemy) rendered the same way."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from broker.safetext import visible


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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # asyncssh logs every packet-level step at INFO; keep it to warnings unless debugging.
    noisy_level = logging.DEBUG if level.lower() == "debug" else logging.WARNING
    for name in ("asyncssh", "aiosqlite", "sqlalchemy.engine", "alembic"):
        logging.getLogger(name).setLevel(noisy_level)
